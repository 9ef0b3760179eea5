"""Expressivity suite: synthetic formal-language tasks that separate transformers, linear RNNs
(Gated DeltaNet with beta in (0, 1) or (0, 2)) and GDN/attention hybrids.

    tasks/       numpy generators: (inputs, targets, loss mask) from (seed, length)
    models.py    the four small models, built with the ladder's ModelConfig/build_model, params
                 matched, token embeddings at std 1
    train.py     a jitted AdamW loop over generated batches, masked cross-entropy, sequence accuracy
    controls.py  a positive control per task: a model theory says can solve it, same pipeline
    suite.py     suite definitions (ci, full) and the resumable cell and control runner
    report.py    aggregation: results JSON, Markdown table, heatmap; "pipeline unverified" marks
    cli.py       `hybrid-jax expressivity run SUITE --out DIR` / `list`

Every task is a *transduction*: the model reads input token x_t and is scored on predicting
target y_t at the positions where mask_t is set (the answer is not fed back as input).
"""
