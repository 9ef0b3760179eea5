"""Store build at scale: throughput and peak memory of the streaming builder, or of the builder
it replaced, on a synthetic corpus of many short documents.

    python benchmarks/build_scale.py --builder new --docs 10000000 --out /tmp/scale-new
    python benchmarks/build_scale.py --builder old --docs 10000000 --out /tmp/scale-old \\
        --old-commit d1d7c15

The corpus is synthetic: document i is `"{i} "` followed by 20-179 bytes cut at a seeded random
place from 16 MB of seeded random lowercase words, so documents are distinct and the text is
generated at about 1 us a document. Short documents stress what scales with the number of
documents (per-document memory, sorting, per-document work), not tokenizer speed; the byte
tokenizer is used. The old builder is loaded from git (`git show COMMIT:hybrid_jax/data/
build.py`), not kept in the tree. Run each builder in its own process: peak RSS is
ru_maxrss of this process (with --processes, the workers' own memory is not included; a
child's ru_maxrss counts the parent's pages it had between fork and exec, so it says nothing).

Prints one JSON line: documents, text MB, seconds, MB/s, peak and baseline RSS (MiB), bytes of
RSS growth per document, and a digest of the manifest's file list (equal digests: the two
builders wrote the same files).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hybrid_jax.data.document import DEFAULT_GROUP, Document
from hybrid_jax.data.vocab import load_tokenizer

_BASE_BYTES = 16 << 20
_CHUNK = 100_000


class SyntheticSource:
    kind = "synthetic"
    groups = [DEFAULT_GROUP]

    def __init__(self, n_docs: int, seed: int = 0):
        self.n_docs, self.seed, self.done = n_docs, seed, 0
        rng = np.random.default_rng(seed)
        letters = rng.integers(0, 27, _BASE_BYTES, np.uint8)
        self.base = np.where(letters == 26, ord(" "), letters + ord("a")).astype(np.uint8) \
            .tobytes().decode("ascii")

    def input_progress(self) -> tuple[int, int]:
        return self.done, self.n_docs

    def documents(self):
        rng = np.random.default_rng(self.seed + 1)
        self.done = 0
        for start in range(0, self.n_docs, _CHUNK):
            k = min(_CHUNK, self.n_docs - start)
            offs = rng.integers(0, _BASE_BYTES - 200, k).tolist()
            lens = rng.integers(20, 180, k).tolist()
            base = self.base
            for i, (o, n) in enumerate(zip(offs, lens), start):
                self.done = i + 1
                yield Document(f"{i} {base[o:o + n]}")

    def describe(self) -> dict:
        return {"kind": self.kind, "documents": self.n_docs, "seed": self.seed}


def _old_build_store(commit: str):
    text = subprocess.run(["git", "show", f"{commit}:hybrid_jax/data/build.py"], check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_build.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_store


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--builder", choices=["new", "old"], required=True)
    p.add_argument("--docs", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--old-commit", default="d1d7c15")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--progress", action="store_true", help="new builder: the progress line")
    args = p.parse_args()

    source = SyntheticSource(args.docs)
    tokenizer = load_tokenizer("byte")
    if args.builder == "old":
        build = _old_build_store(args.old_commit)
        kwargs = {}
    else:
        from hybrid_jax.data.build import build_store as build

        kwargs = {"processes": args.processes, "progress_line": args.progress}
    baseline = _rss_mib()
    t0 = time.perf_counter()
    manifest = build(source, tokenizer, args.out, val_fraction=0.01, **kwargs)
    seconds = time.perf_counter() - t0
    peak = _rss_mib()
    text_mb = (manifest["train"]["bytes"]
               + sum(v["bytes"] for v in manifest["validation"].values())) / 1e6
    files = json.dumps({k: v["sha256"] for k, v in manifest["files"].items()}, sort_keys=True)
    print(json.dumps({
        "builder": args.builder, "documents": args.docs, "processes": args.processes,
        "text_MB": round(text_mb, 1), "seconds": round(seconds, 1),
        "MB_per_s": round(text_mb / seconds, 2), "peak_rss_MiB": round(peak, 1),
        "baseline_rss_MiB": round(baseline, 1),
        "rss_growth_bytes_per_doc": round((peak - baseline) * 2**20 / args.docs, 1),
        "train_tokens": manifest["train"]["tokens"],
        "files_digest": hashlib.sha256(files.encode()).hexdigest()[:16]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
