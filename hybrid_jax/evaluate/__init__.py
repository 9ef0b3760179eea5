"""Evaluating checkpoints: perplexity and bits-per-byte (ppl.py), the synthetic long-context
suite (long_context.py), and the lm-eval-harness model (lm_eval_model.py, the [eval] extra)."""
