"""A token store on gs:// (the emulator): `data build --out gs://...` builds locally and
uploads, the manifest last; training reads it with ranged requests and gets the local store's
batches; verification reads every object back; an interrupted upload is finished by running the
build again; another store at the same place is refused in one line."""

import numpy as np
import pytest

from hybrid_jax.data import StoreError, get_batch, open_store, validation_batches
from hybrid_jax.data.cli import main
from hybrid_jax.data.upload import staging_dir, upload_store
from hybrid_jax.storage import gcs, objects

from tests.helpers.data import write_text_corpus
from tests.helpers.gcs import gcs_bucket, gcs_emulator, gs_prefix  # noqa: F401 (fixtures)

SEQ = 29


def build(corpus, out, *extra):
    return main(["build", "--source", "text", "--input", str(corpus / "*.txt"), "--doc-separator",
                 "blank-lines", "--tokenizer", "byte", "--val-fraction", "0.2", "--shard-tokens",
                 "5000", "--out", out, *extra])


def test_a_store_built_to_gs_reads_as_the_local_one(tmp_path, gcs_bucket, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the staging directory's place
    corpus = write_text_corpus(tmp_path / "corpus")
    url = gs_prefix(gcs_bucket, "store")
    assert build(corpus, url) == 0
    assert f"and the manifest to {url}" in capsys.readouterr().out
    local = open_store(staging_dir(url))
    remote = open_store(url)  # verified: every object read back against its sha256
    assert len(remote.train.shards) > 1 and remote.train.shards[0].name.startswith("gs://")
    ranges = []
    read_range = gcs.read_range
    monkeypatch.setattr(gcs, "read_range", lambda *a: ranges.append(a[2] - a[1]) or read_range(*a))
    for step in range(3):
        a = get_batch(local, seed=3, step=step, global_batch=4, seq_len=SEQ)
        b = get_batch(remote, seed=3, step=step, global_batch=4, seq_len=SEQ)
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert ranges and max(ranges) <= (SEQ + 1) * local.dtype.itemsize  # windows, not shards
    for name in local.validation_set_names:
        for x, y in zip(validation_batches(local, name, batch_size=2, seq_len=SEQ),
                        validation_batches(remote, name, batch_size=2, seq_len=SEQ)):
            np.testing.assert_array_equal(x["targets"], y["targets"])

    # an upload cut before its last shard and the manifest: the same command finishes it
    last = sorted(local.manifest["files"])[-1]
    objects.delete(f"{url}/manifest.json")
    objects.delete(f"{url}/{last}")
    with pytest.raises(StoreError, match="not a complete token store"):
        open_store(url)
    assert upload_store(staging_dir(url), url, say=lambda _: None) == 1
    open_store(url)
    # a corrupted object fails verification; another store at the same URL is refused
    objects.write_atomic(f"{url}/{last}", b"\0" * local.manifest["files"][last]["bytes"])
    with pytest.raises(StoreError, match="does not match the manifest"):
        open_store(url)
    other = tmp_path / "other"
    assert build(corpus, str(other), "--val-fraction", "0.5") == 0
    with pytest.raises(StoreError, match="already holds another token store"):
        upload_store(other, url)
