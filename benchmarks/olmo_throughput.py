"""Input pipeline tokens/s: a built store vs the same tokens as OLMo-core token files.

    python benchmarks/olmo_throughput.py --docs 1000000 --work-dir /tmp/olmo-bench

Builds a store of the synthetic corpus of build_scale.py (byte tokenizer, uint16 tokens), writes
its training stream as OLMo-core files (raw uint32, each document followed by EOS, cut at
document ends into --files files), checks that both give the same batch, then times get_batch
(global batch x seq_len, random steps) on each and prints one JSON line: median and p90 ms per
batch and tokens/s. Both read from the page cache once warm (the first pass is not timed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from build_scale import SyntheticSource  # noqa: E402

from hybrid_jax.data import build_store, get_batch, open_store  # noqa: E402
from hybrid_jax.data.vocab import load_tokenizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    work = Path(args.work_dir)
    store_dir = work / "store"
    if not (store_dir / "manifest.json").is_file():
        build_store(SyntheticSource(args.docs), load_tokenizer("byte"), store_dir,
                    val_fraction=0.01)
    store = open_store(store_dir)
    olmo_dir = work / "olmo"
    olmo_dir.mkdir(exist_ok=True)
    offsets = store.train.doc_offsets
    cuts = np.linspace(0, len(offsets) - 1, args.files + 1).astype(int)
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        start, end = int(offsets[a]), int(offsets[b])  # documents a..b-1, each with its EOS
        store.train.read(start, end - start).astype("<u4").tofile(olmo_dir / f"part-{i:03d}.npy")
    olmo = open_store(f"olmo:{olmo_dir}/part-*.npy?tokenizer=byte&val=none")
    kw = dict(seed=0, global_batch=args.batch, seq_len=args.seq_len)
    for key in ("inputs", "targets"):
        assert np.array_equal(get_batch(store, step=3, **kw)[key], get_batch(olmo, step=3, **kw)[key])
    steps = np.random.default_rng(1).integers(0, 10**6, args.steps).tolist()
    result = {"docs": args.docs, "train_tokens": store.n_train_tokens, "files": args.files,
              "batch": [args.batch, args.seq_len]}
    for name, s in (("store", store), ("olmo", olmo)):
        for step in steps:  # warm the page cache
            get_batch(s, step=step, **kw)
        times = []
        for step in steps:
            t0 = time.perf_counter()
            get_batch(s, step=step, **kw)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        result[name] = {"median_ms": round(med * 1e3, 2),
                        "p90_ms": round(float(np.percentile(times, 90)) * 1e3, 2),
                        "tokens_per_s": round(args.batch * args.seq_len / med)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
