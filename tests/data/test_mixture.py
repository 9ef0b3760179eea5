"""Mixtures (`data.mix`): weights met over many steps, windows once per component epoch, ranks
union to the batch, the same batch in another process, per-component epoch limits, errors."""

import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from hybrid_jax.config import ConfigError
from hybrid_jax.data import EpochLimitError, build_store, open_store
from hybrid_jax.data.mixture import Allocation, Mixture, MixtureError, mixture_rows
from hybrid_jax.data.sources import TextSource
from hybrid_jax.data.vocab import load_tokenizer
from hybrid_jax.train.config import load_config
from hybrid_jax.train.source import make_source

from tests.helpers.data import write_text_corpus

SEQ, BATCH = 16, 12


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    corpus = write_text_corpus(root / "corpus")
    paths = {}
    for name, files in (("code", "[a-j]*.txt"), ("prose", "[k-z]*.txt")):
        paths[name] = str(root / name)
        build_store(TextSource([str(corpus / files)]), load_tokenizer("byte"), paths[name],
                    val_fraction=0.3, shard_tokens=20_000)
    return paths


def _mixture(stores, weights=None) -> Mixture:
    return Mixture({n: open_store(p) for n, p in stores.items()},
                   weights or {"code": 0.3, "prose": 0.7}, BATCH)


def test_weights_are_met_and_each_component_epoch_visits_each_window_once():
    alloc = Allocation.from_weights({"a": 0.13, "b": 0.3, "c": 0.57}, BATCH)
    n_seq = [7, 50, 9]
    comps, windows = zip(*(mixture_rows(alloc, n_seq, seed=1, step=s, global_batch=BATCH)
                           for s in range(400)))
    comp, window = np.concatenate(comps), np.concatenate(windows)
    for c, w in enumerate((0.13, 0.3, 0.57)):
        share = float(np.mean(comp == c))
        assert abs(share - w) < 2 * math.sqrt(w * (1 - w) / comp.size), (c, share)
        # full epochs visit every window once, the partial one distinct windows
        visits = np.bincount(window[comp == c], minlength=n_seq[c])
        full = int(np.sum(comp == c)) // n_seq[c]
        assert full >= 5 and set(visits.tolist()) <= {full, full + 1}
    steps = np.array([np.bincount(c, minlength=3) for c in comps])
    assert (steps.sum(1) == BATCH).all() and len({tuple(r) for r in steps}) > 1


def test_ranks_union_to_the_global_batch_and_components_are_read(stores):
    mix = _mixture(stores)
    full = mix.get_batch(seed=2, step=5, seq_len=SEQ)
    parts = [mix.get_batch(seed=2, step=5, seq_len=SEQ, dp_rank=r, dp_size=3) for r in range(3)]
    for key in full:
        np.testing.assert_array_equal(full[key], np.concatenate([p[key] for p in parts]))
    comp, window = mixture_rows(mix.alloc, [(s.n_train_tokens - 1) // SEQ for s in mix.stores],
                                seed=2, step=5, global_batch=BATCH)
    store = mix.stores[int(comp[0])]
    np.testing.assert_array_equal(full["inputs"][0],
                                  store.train.read(int(window[0]) * SEQ, SEQ))


_DIGEST = """
import hashlib, json, sys
from hybrid_jax.data import open_store
from hybrid_jax.data.mixture import Mixture
stores = json.loads(sys.argv[1])
mix = Mixture({n: open_store(p) for n, p in stores.items()}, {"code": 0.3, "prose": 0.7}, 12)
h = hashlib.sha256()
for step in (0, 7, 1000):
    for k, v in sorted(mix.get_batch(seed=9, step=step, seq_len=16, dp_rank=1, dp_size=2).items()):
        h.update(k.encode() + v.tobytes())
print(h.hexdigest())
"""


def test_the_same_batches_in_another_process(stores):
    mix = _mixture(stores)
    h = hashlib.sha256()
    for step in (0, 7, 1000):
        for k, v in sorted(mix.get_batch(seed=9, step=step, seq_len=SEQ, dp_rank=1,
                                         dp_size=2).items()):
            h.update(k.encode() + v.tobytes())
    out = subprocess.run([sys.executable, "-c", _DIGEST, json.dumps(stores)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == h.hexdigest()


def test_epochs_are_counted_and_limited_per_component(stores):
    mix = _mixture(stores)
    tokens = 2 * mix.stores[0].n_train_tokens  # code (0.3) reads 0.6 epochs of its store
    epochs = mix.check_epochs(tokens, SEQ)
    assert epochs["code"] == pytest.approx(0.6 * tokens / tokens, rel=0.01)
    assert epochs["prose"] == pytest.approx(0.7 * tokens / mix.stores[1].n_train_tokens, rel=0.01)
    assert epochs["prose"] > 1 > epochs["code"]
    with pytest.raises(EpochLimitError, match=r"component 'prose' .* over the limit of 1 epochs; "
                       r"per component: code 0.60, prose"):
        mix.check_epochs(tokens, SEQ, max_epochs=1)


def test_mixture_from_config_overrides(stores):
    cfg = load_config("hybrid_tiny", ["train.tokens=4096", f"train.global_batch={BATCH}",
                                      f"train.seq_len={SEQ}", "data.mix={code: 0.3, prose: 0.7}",
                                      f"data.stores={{code: {stores['code']}, "
                                      f"prose: {stores['prose']}}}"])
    source = make_source(cfg.data, global_batch=BATCH, seq_len=SEQ)
    assert source.validation_set_names == ("code/val", "prose/val")
    assert source.batch(3, 0, 1)["inputs"].shape == (BATCH, SEQ)
    assert next(iter(source.validation_batches("prose/val", batch_size=2, max_tokens=64)))
    with pytest.raises(ConfigError, match="data.mix: mixture weights sum to 0.9"):
        make_source(cfg.replace(data=cfg.data.__class__(mix={"code": 0.2, "prose": 0.7},
                                                        stores=cfg.data.stores)).data,
                    global_batch=BATCH, seq_len=SEQ)
    with pytest.raises(ConfigError, match="give one store per mixture component"):
        load_config("hybrid_tiny", ["train.tokens=4096", "data.mix={code: 1.0}"])


def test_bad_mixtures_are_refused(stores, tmp_path):
    with pytest.raises(MixtureError, match="weight of 'code' must be positive"):
        Allocation.from_weights({"code": 0.0, "prose": 1.0}, BATCH)
    with pytest.raises(MixtureError, match="global_batch 1 is too small for 3 components"):
        Allocation.from_weights({"a": 0.3, "b": 0.3, "c": 0.4}, 1)
    other = tmp_path / "other"
    with pytest.warns(UserWarning, match="no held-out documents"):
        build_store(TextSource([stores["code"] + "/manifest.json"]),
                    load_tokenizer("hf:" + _word_tokenizer(tmp_path)), other, val_fraction=0.0)
    with pytest.raises(MixtureError, match="different tokenizers"):
        _mixture({"code": stores["code"], "prose": str(other)})


def _word_tokenizer(tmp_path) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["</s>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    return str(tmp_path / "tokenizer.json")


def test_data_info_reports_each_component_of_a_ladder(stores, tmp_path, capsys):
    from hybrid_jax.data.cli import main

    ladder = tmp_path / "mixed.yaml"
    ladder.write_text(f"""
name: mixed
families: [transformer]
sizes: {{d16: {{d_model: 16, n_layers: 2, n_heads: 2, mlp_hidden: 32}}}}
decay_ratios: [2, 100]
seq_len: {SEQ}
model: {{vocab_size: 264}}
recipe: {{batch_tokens: {BATCH * SEQ}}}
run:
  data: {{mix: {{code: 0.3, prose: 0.7}}, stores: {{code: {stores['code']}, prose: {stores['prose']}}}}}
""")
    assert main(["info", "--ladder", str(ladder)]) == 1  # 100 tokens per parameter: prose past 4 epochs
    out = capsys.readouterr().out
    code, prose = open_store(stores["code"]), open_store(stores["prose"])
    assert f"code            0.3{code.n_train_tokens:>16,}{code.n_train_documents:>12,}" in out
    assert f"prose           0.7{prose.n_train_tokens:>16,}" in out
    row = next(line for line in out.splitlines() if "transformer/d16" in line).split()
    tokens, e_code, e_prose = int(row[1].replace(",", "")), float(row[2]), row[3]
    assert e_code == pytest.approx(0.3 * tokens / code.n_train_tokens, abs=0.01)
    assert e_prose.endswith("!") and "sweep run` refuses these runs" in out
    # the sweep's plan reads the same numbers, and refuses the run the runner would refuse
    from hybrid_jax.sweep import cli as sweep_cli

    assert sweep_cli.main(["plan", str(ladder), "--root", str(tmp_path / "root"), "--json",
                           "--device-kind", "NVIDIA H100 80GB HBM3"]) == 0
    (plan_row,) = json.loads(capsys.readouterr().out)["runs"]
    assert plan_row["epochs"] == pytest.approx(float(e_prose.rstrip("!")), abs=0.01)
    assert "mixture component 'prose'" in plan_row["refused"]
