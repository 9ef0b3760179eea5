"""The loop on the data configs beyond one built store: a data.mix of a built store and OLMo
token files, with per-component epochs recorded and validation sets named COMPONENT/SET."""

import json

import numpy as np

from hybrid_jax.data import load_tokenizer, open_store
from hybrid_jax.train import train

from tests.helpers.training import build_tiny_store, tiny_config


def test_a_mixture_of_a_store_and_olmo_files_trains(tmp_path):
    store = build_tiny_store(tmp_path / "store")
    built = open_store(store)
    # the store's own training stream as an OLMo-core file: raw uint32, EOS after each document
    files = tmp_path / "olmo"
    files.mkdir()
    built.train.read(1, built.n_train_tokens - 1).astype("<u4").tofile(files / "part-0.npy")
    olmo = f"olmo:{files}/part-*.npy?tokenizer=byte&val=none"
    assert load_tokenizer("byte").hash == built.tokenizer_hash
    cfg = tiny_config(store, tmp_path / "run", **{
        "data.store": '""', "data.mix": "{built: 0.25, olmo: 0.75}",
        "data.stores": json.dumps({"built": str(store), "olmo": olmo})})
    summary = train(cfg, verbose=False)
    assert summary["status"] == "completed"
    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    epochs = meta["data"]["epochs"]
    rows = cfg.total_tokens // cfg.train.seq_len
    assert epochs["built"] == np.float64(rows // 4 * 32 / built.n_train_tokens)
    assert epochs["olmo"] > epochs["built"] and meta["data"]["kind"] == "mixture"
    (point,) = summary["scaling_points"]
    assert set(point["eval"]) == {"built/val"} and point["eval"]["built/val"]["bpb"] > 0
