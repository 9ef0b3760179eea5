"""The lm-eval-harness model `hybrid-jax`: a locally defined multiple-choice task scored through
lm-eval's own pipeline gives the log-likelihoods of a direct computation; rolling
log-likelihood and generate_until agree with the model and the generation API."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("lm_eval", reason="needs the [eval] extra: pip install -e '.[eval]'")

from lm_eval.api.instance import Instance  # noqa: E402

from hybrid_jax.data import load_tokenizer  # noqa: E402
from hybrid_jax.evaluate.lm_eval_model import HybridJaxLM  # noqa: E402
from hybrid_jax.generate.api import generate  # noqa: E402
from tests.generate.tiny import save_tiny_model  # noqa: E402

DOCS = [("1 + 1 =", [" 2", " 3"], 0), ("The sky is ", ["blue", "green", "loud"], 1),
        ("def f(x): return", [" x", " )"], 0)]


_FORWARD = {}


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    model, path = save_tiny_model(tmp_path_factory.mktemp("lm_eval") / "model", "hybrid")
    return model, path, HybridJaxLM(checkpoint=str(path), tokenizer="byte", batch_size=2)


def _logprob(model, ids, n):
    """Direct: sum of log p over the last n tokens of ids, from one forward (padded on the
    right to 64 tokens, which causality leaves invisible, so one compile serves all)."""
    if id(model) not in _FORWARD:
        graphdef, state = nnx.split(model)
        fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
        _FORWARD[id(model)] = lambda x: fn(state, x)
    x = np.zeros((1, 64), np.int32)
    x[0, :len(ids) - 1] = ids[:-1]
    logits = _FORWARD[id(model)](jnp.asarray(x))[0, :len(ids) - 1]
    logp = jax.nn.log_softmax(logits, -1)[jnp.arange(len(ids) - 1), jnp.asarray(ids[1:])]
    return float(jnp.sum(logp[-n:]))


def _task(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                            for q, c, a in DOCS))
    (tmp_path / "tiny_choice.yaml").write_text(f"""\
task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {tmp_path / "hf_cache"}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")


def test_a_local_task_scores_direct_log_likelihoods(lm, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    model, _, adapter = lm
    _task(tmp_path)
    out = lm_eval.simple_evaluate(
        model=adapter, tasks=["tiny_choice"], log_samples=True,
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    byte = load_tokenizer("byte")
    right = []
    for sample in sorted(out["samples"]["tiny_choice"], key=lambda s: s["doc_id"]):
        question, choices, answer = DOCS[sample["doc_id"]]
        got = [r[0] for r in sample["filtered_resps"]]
        # lm-eval's target delimiter " " joins question and choice; the context's trailing
        # space moves into the continuation.
        want = []
        for c in choices:
            ctx, cont = (question + " ").rstrip(), (question + " ")[len(question.rstrip()):] + c
            ctx_ids = [byte.eos_id] + byte.encode(ctx)
            want.append(_logprob(model, ctx_ids + byte.encode(cont), len(byte.encode(cont))))
        np.testing.assert_allclose(got, want, rtol=1e-5)
        right.append(int(np.argmax(want)) == answer)
    assert out["results"]["tiny_choice"]["acc,none"] == pytest.approx(np.mean(right))


def test_rolling_log_likelihood_and_generate_until(lm):
    model, _, adapter = lm
    byte = load_tokenizer("byte")
    text = "for i in range(3):\n    print(i)\n"
    rolling = adapter.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (text,), 0)])
    ids = [byte.eos_id] + byte.encode(text)
    np.testing.assert_allclose(rolling, [_logprob(model, ids, len(ids) - 1)], rtol=1e-5)

    prompts = ["x = ", "print("]
    reqs = [Instance("generate_until", {}, (p, {"until": ["\n", "a"], "max_gen_toks": 7}), i)
            for i, p in enumerate(prompts)]
    got = adapter.generate_until(reqs)
    # The adapter's own Decoder: the same compiled program, called through the API.
    want = [c.text for c in generate(adapter._decoder, byte, prompts, max_new_tokens=7)]
    for g, w in zip(got, want):
        cut = min([w.find(s) for s in ("\n", "a") if s in w], default=len(w))
        assert g == w[:cut]


def test_unknown_model_and_generation_args_are_refused(lm):
    _, path, adapter = lm
    with pytest.raises(ValueError, match="unknown"):
        HybridJaxLM(checkpoint=str(path), tokenizer="byte", beams=4)
    with pytest.raises(ValueError, match="num_beams"):
        adapter.generate_until([Instance("generate_until", {}, ("x", {"num_beams": 2}), 0)])
