"""Input pipeline tokens/s: a token store read locally (memory-mapped) against the same store on
gs:// (ranged requests), with fake-gcs-server on localhost standing in for GCS.

    python benchmarks/store_gs_throughput.py --store data_cache/pycode-byte [--batch 64]

Uploads the store to the emulator (`upload_store`, as `data build --out gs://` does), checks
that one batch is the same both ways, then times get_batch (global batch x seq_len, random
steps) on each and prints one JSON line: median and p90 ms per batch and tokens/s. The local
store reads from the page cache once warm; each gs:// window is one HTTP request to a server on
this host, so the gs:// number is the client's and the emulator's cost per request, not GCS's
latency (tens of ms per request; a batch issues 16 at a time, and the training loop does
not prefetch batches, so on GCS a small model can wait on its input).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hybrid_jax.data import get_batch, open_store  # noqa: E402
from hybrid_jax.data.upload import upload_store  # noqa: E402
from tests.helpers.gcs import BUCKET, PROJECT, start_server  # noqa: E402


def time_batches(store, args, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    times = []
    for step in rng.integers(0, 10**6, args.steps):
        t0 = time.perf_counter()
        get_batch(store, seed=0, step=int(step), global_batch=args.batch, seq_len=args.seq_len)
        times.append(time.perf_counter() - t0)
    return times


def summary(times: list[float], args) -> dict:
    ms = sorted(1e3 * t for t in times)
    return {"median_ms": round(statistics.median(ms), 3),
            "p90_ms": round(ms[int(0.9 * len(ms))], 3),
            "tokens_per_s": round(args.batch * args.seq_len / statistics.median(ms) * 1e3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="a built local token store")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp) / "server.log")
        try:
            os.environ.update(STORAGE_EMULATOR_HOST=url, GOOGLE_CLOUD_PROJECT=PROJECT)
            storage.Client(project=PROJECT, credentials=AnonymousCredentials()) \
                .create_bucket(BUCKET)
            remote_url = f"gs://{BUCKET}/stores/bench"
            t0 = time.perf_counter()
            upload_store(args.store, remote_url)
            upload_s = time.perf_counter() - t0
            local, remote = open_store(args.store, verify=False), open_store(remote_url,
                                                                              verify=False)
            a = get_batch(local, seed=0, step=1, global_batch=args.batch, seq_len=args.seq_len)
            b = get_batch(remote, seed=0, step=1, global_batch=args.batch, seq_len=args.seq_len)
            assert np.array_equal(a["inputs"], b["inputs"])
            time_batches(local, args, 1)  # warm the page cache
            result = {"store": str(args.store), "batch": args.batch, "seq_len": args.seq_len,
                      "steps": args.steps, "upload_s": round(upload_s, 2),
                      "local": summary(time_batches(local, args, 2), args),
                      "gs_emulator": summary(time_batches(remote, args, 2), args)}
            print(json.dumps(result))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
