"""Data pipeline throughput on the built-in pycode corpus (default distribution list).

    python benchmarks/data_throughput.py [--work-dir data_cache/bench] [--vocab-size 8192]

Measures: corpus size (bytes, documents, tokens), SentencePiece training time, tokenization
MB/s, store build time, store verification (sha256) time, batch assembly time for 256x2048, and
the largest model the corpus supports at 20 tokens/param within 4 epochs. Prints a table and
writes benchmarks/results/data_throughput.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from hybrid_jax.data import build_store, get_batch, load_tokenizer, open_store
from hybrid_jax.data.build import is_validation, split_threshold
from hybrid_jax.data.pycode import DEFAULT_DISTRIBUTIONS, PycodeSource
from hybrid_jax.data.tokenizer import train_sentencepiece

RESULTS = Path(__file__).parent / "results" / "data_throughput.json"


CPU: dict[str, float] = {}  # CPU seconds (all threads) per measured phase


def _timed(fn, name: str | None = None):
    """(result, wall seconds); CPU seconds go to CPU[name]. On a shared machine wall time
    includes waiting for cores, so the JSON keeps both."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if name:
        CPU[name] = round(time.process_time() - c0, 2)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", default="data_cache/bench")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--val-fraction", type=float, default=0.01)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    r: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "processor": platform.processor(), "python": platform.python_version()},
               "settings": vars(args)}

    # corpus: read every document once (file reads + sha256 + UTF-8 decode)
    source = PycodeSource(DEFAULT_DISTRIBUTIONS)
    docs, read_s = _timed(lambda: [d.text for d in source.documents()], "read")
    described = source.describe()
    n_bytes = sum(len(t.encode("utf-8")) for t in docs)
    r["corpus"] = {"distributions": len(described["distributions"]),
                   "files": sum(len(d["files"]) for d in described["distributions"]),
                   "skipped_files": len(described["skipped_files"]),
                   "bytes": n_bytes, "read_seconds": round(read_s, 2)}

    # tokenizer: trained on training documents only
    threshold = split_threshold(args.val_fraction)
    train_docs = [t for t in docs if not is_validation(hashlib.sha256(t.encode()).digest(), threshold)]
    model = work / f"pycode-{args.vocab_size}.model"
    result, _ = _timed(lambda: train_sentencepiece(train_docs, model, vocab_size=args.vocab_size,
                                                   num_threads=args.threads), "tokenizer_train")
    r["tokenizer"] = {"vocab_size": args.vocab_size, "train_seconds": round(result.seconds, 2),
                      "sample_bytes": result.sample_bytes, "hash": result.hash}

    tok = load_tokenizer(model)
    for threads in sorted({1, args.threads}):
        _, enc_s = _timed(lambda: tok.encode_batch(docs, num_threads=threads), f"encode_{threads}")
        r["tokenizer"][f"encode_MB_per_s_{threads}_threads"] = round(n_bytes / 1e6 / enc_s, 2)
    r["tokenizer"]["encode_MB_per_cpu_s"] = round(n_bytes / 1e6 / CPU["encode_1"], 2)

    # store build (tokenize + order + split + shard + hash + rename)
    out = work / "pycode-store"
    manifest, build_s = _timed(lambda: build_store(PycodeSource(DEFAULT_DISTRIBUTIONS), tok, out,
                                                   val_fraction=args.val_fraction,
                                                   num_threads=args.threads), "build")
    store_bytes = sum(e["bytes"] for e in manifest["files"].values())
    store, verify_s = _timed(lambda: open_store(out, verify=True))
    buf = np.random.default_rng(0).integers(0, 255, 256 << 20, np.uint8).tobytes()
    _, sha_s = _timed(lambda: hashlib.sha256(buf).hexdigest())
    train, val = manifest["train"], manifest["validation"]
    r["store"] = {
        "build_seconds": round(build_s, 2), "store_bytes": store_bytes,
        "train_tokens": train["tokens"], "train_documents": train["documents"],
        "train_bytes": train["bytes"], "bytes_per_token": round(train["bytes"] / train["tokens"], 3),
        "documents": manifest["documents"],
        "validation": {k: {"documents": v["documents"], "tokens": v["tokens"], "bytes": v["bytes"]}
                       for k, v in val.items()},
        "verify_seconds": round(verify_s, 3),
        "sha256_MB_per_s": round(256 * 1.048576 / sha_s, 1),
    }

    # batch assembly: first call (cold pages) and steady state over random steps
    kw = dict(seed=0, global_batch=args.batch, seq_len=args.seq_len)
    _, first_s = _timed(lambda: get_batch(store, step=0, **kw))
    steps = np.random.default_rng(1).integers(1, 10**6, args.steps)
    times = [_timed(lambda s=int(s): get_batch(store, step=s, **kw))[1] for s in steps]
    r["batch"] = {"shape": [args.batch, args.seq_len], "first_ms": round(first_s * 1e3, 2),
                  "median_ms": round(statistics.median(times) * 1e3, 2),
                  "p90_ms": round(float(np.percentile(times, 90)) * 1e3, 2)}

    max_tokens = 4 * train["tokens"]
    r["cpu_seconds"] = CPU
    r["load_average_1_5_15"] = list(os.getloadavg())
    r["budget"] = {"tokens_at_4_epochs": max_tokens, "max_params_at_20_tokens_per_param":
                   max_tokens // 20}

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(r, indent=1) + "\n")
    rows = [
        ("distributions / files", f"{r['corpus']['distributions']} / {r['corpus']['files']:,}"),
        ("corpus bytes (UTF-8 text)", f"{n_bytes:,}"),
        ("documents kept (dup, empty dropped)", f"{manifest['documents']['kept']:,} "
         f"({manifest['documents']['duplicates_dropped']}, {manifest['documents']['empty_dropped']})"),
        (f"train tokens (vocab {args.vocab_size})", f"{train['tokens']:,}"),
        ("bytes / token", f"{r['store']['bytes_per_token']}"),
        ("validation sets (tokens)", ", ".join(f"{k} {v['tokens']:,}" for k, v in val.items())),
        ("tokenizer training (wall / CPU)", f"{result.seconds:.1f} / {CPU['tokenizer_train']} s"),
        *[(f"tokenization, {k.split('_')[-2]} thread(s)", f"{v} MB/s")
          for k, v in r["tokenizer"].items() if k.endswith("threads")],
        ("tokenization per CPU-second", f"{r['tokenizer']['encode_MB_per_cpu_s']} MB/s"),
        ("store build (wall / CPU)", f"{build_s:.1f} / {CPU['build']} s"),
        ("store verify (sha256 of all files)", f"{verify_s:.2f} s for {store_bytes / 1e6:.0f} MB"),
        ("sha256 throughput", f"{r['store']['sha256_MB_per_s']} MB/s"),
        (f"get_batch {args.batch}x{args.seq_len} first / median / p90",
         f"{r['batch']['first_ms']} / {r['batch']['median_ms']} / {r['batch']['p90_ms']} ms"),
        ("largest model, 20 tok/param, <= 4 epochs", f"{max_tokens // 20 / 1e6:.1f} M params"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"load average (1/5/15 min) at the end: {r['load_average_1_5_15']} on {os.cpu_count()} CPUs")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
