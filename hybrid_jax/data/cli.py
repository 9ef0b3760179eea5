"""`hybrid-jax data {build,tokenizer,info}` (also `python -m hybrid_jax.data.cli`).

    hybrid-jax data tokenizer --source pycode --vocab-size 8192 --out data_cache/pycode-8k.model
    hybrid-jax data build --source pycode --tokenizer data_cache/pycode-8k.model --out data_cache/pycode
    hybrid-jax data tokenizer --kind hf-bpe --source pycode --vocab-size 8192 \\
        --out data_cache/pycode-bpe8k/tokenizer.json
    hybrid-jax data build --source pycode --tokenizer hf:data_cache/pycode-bpe8k --out D
    hybrid-jax data build --source text --input 'c/*.txt' --tokenizer hf:llama3/tokenizer.json \\
        --out D
    hybrid-jax data build --source text --input 'notes/**/*.txt' --doc-separator blank-lines \\
        --tokenizer byte --out data_cache/notes
    hybrid-jax data build --source jsonl --input 'dolma/*.json.gz' --tokenizer hf:tok --out D \\
        --processes 8
    hybrid-jax data build --source parquet --input 'fineweb/*.parquet' --text-key text ...
    hybrid-jax data build --source hf-disk:saved/wiki --split train --tokenizer hf:tok --out D
    hybrid-jax data build --source tfds:my_text/plain --data-dir ~/tfds --tokenizer M --out D
    hybrid-jax data build --source seqio:my_task --input 'corpus/*.txt' --tokenizer M --out D
    hybrid-jax data info data_cache/pycode --tokens 2e9
    hybrid-jax data info 'olmo:dolma/*.npy?tokenizer=hf:tok&val=c4-val/*.npy'
    hybrid-jax data info --ladder paper

Exit status: 0 success; 2 a missing or damaged store (StoreError) or bad arguments; 1 any
other error (a token budget past --max-epochs, an unknown source, ...), on one line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from hybrid_jax.data.build import DEFAULT_SHARD_TOKENS, build_store, is_validation, split_threshold
from hybrid_jax.data.hf_tokenizer import train_hf_bpe
from hybrid_jax.data.tokenizer import DEFAULT_SAMPLE_BYTES, train_sentencepiece
from hybrid_jax.data.vocab import load_tokenizer


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True,
                   help="pycode | text | jsonl | parquet | hf-disk:PATH | tfds:NAME[/CONFIG] | "
                        "seqio:TASK")
    p.add_argument("--input", nargs="+", metavar="FILE_OR_GLOB",
                   help="text, jsonl (.gz, .zst), parquet (and seqio text-task) inputs; globs "
                        "may use **")
    p.add_argument("--doc-separator", default=None,
                   help="text source: 'file' (one document per file, default), 'blank-lines', "
                        "or a regular expression (e.g. '\\n' for one document per line)")
    p.add_argument("--distributions", type=lambda s: [x for x in s.split(",") if x],
                   help="pycode: comma-separated installed distributions (default: the built-in "
                        "list), or 'all-permissive': every installed distribution with a "
                        "permissive license (excluded ones are listed on stderr)")
    p.add_argument("--text-key", default=None,
                   help="jsonl field, parquet or hf-disk column, tfds feature (default text); "
                        "seqio: feature (default targets)")
    p.add_argument("--split", default=None, help="tfds/seqio split to read (default train); hf-disk: "
                   "the split of a saved DatasetDict")
    p.add_argument("--data-dir", default=None, help="tfds: prepared local data_dir")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="tfds/seqio: import MODULE first (registers builders or tasks)")
    p.add_argument("--val-fraction", type=float, default=0.01,
                   help="share of documents held out, chosen by sha256 of the text (default 0.01)")
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8))


def _make_source(args, tokenizer_path: str | None = None):
    from hybrid_jax.data.sources import make_source

    if args.doc_separator is not None and not args.source.startswith("text"):
        raise ValueError("--doc-separator applies to the text source only")
    source = make_source(args.source, inputs=args.input, doc_separator=args.doc_separator or "file",
                         distributions=args.distributions, text_key=args.text_key,
                         split=args.split, data_dir=args.data_dir, tokenizer_path=tokenizer_path,
                         imports=args.imports)
    if getattr(source, "excluded", None) is not None:
        from hybrid_jax.data.pycode import exclusion_summary

        print(exclusion_summary(len(source.distributions), source.excluded), file=sys.stderr)
    return source


def _load_reference(path: str) -> dict:
    path = Path(path)
    return json.loads((path / "manifest.json" if path.is_dir() else path).read_text())


def cmd_build(args) -> int:
    from hybrid_jax.data.pycode import warn_version_drift
    from hybrid_jax.data.store import read_manifest
    from hybrid_jax.data.upload import staging_dir, upload_store

    source = _make_source(args, args.tokenizer)
    tokenizer = getattr(source, "tokenizer", None)
    if tokenizer is None:
        if not args.tokenizer:
            raise ValueError("--tokenizer FILE|hf:PATH|byte is required for this source")
        tokenizer = load_tokenizer(args.tokenizer)
    remote = args.out.startswith("gs://")
    out = staging_dir(args.out) if remote else Path(args.out)
    references = []
    if args.reference_manifest:
        references.append((_load_reference(args.reference_manifest), args.reference_manifest))
    if (out / "manifest.json").is_file():
        references.append((read_manifest(out), f"the existing store {out}"))
    for reference, what in references:
        warn_version_drift(source.describe(), reference["source"], what)
    t0 = time.perf_counter()
    manifest = build_store(source, tokenizer, out, val_fraction=args.val_fraction,
                           shard_tokens=args.shard_tokens, num_threads=args.threads,
                           processes=args.processes, progress_line=True)
    train = manifest["train"]
    print(f"built {out}: {train['tokens']:,} train tokens, {train['documents']:,} documents, "
          f"{train['bytes'] / train['tokens']:.3f} bytes/token, validation sets "
          f"{sorted(manifest['validation'])}, {time.perf_counter() - t0:.1f} s")
    if remote:
        upload_store(out, args.out)
    return 0


def cmd_tokenizer(args) -> int:
    if args.source.startswith("seqio:"):
        raise ValueError("a seqio task needs a vocabulary already; train the tokenizer on its "
                         "text with --source text")
    source = _make_source(args)
    threshold = split_threshold(args.val_fraction)
    docs = (d.text for d in source.documents()
            if not is_validation(hashlib.sha256(d.text.encode("utf-8")).digest(), threshold))
    source_record = {"spec": args.source, "val_fraction": args.val_fraction}
    if args.kind == "hf-bpe":  # --threads: `tokenizers` sizes its own thread pool
        result = train_hf_bpe(docs, args.out, vocab_size=args.vocab_size,
                              sample_bytes=args.sample_bytes, source=source_record)
    else:
        result = train_sentencepiece(docs, args.out, vocab_size=args.vocab_size,
                                     sample_bytes=args.sample_bytes, num_threads=args.threads,
                                     source=source_record)
    print(f"wrote {result.path} ({result.hash}): vocab {args.vocab_size}, trained on "
          f"{result.sample_documents:,} documents / {result.sample_bytes / 1e6:.1f} MB in "
          f"{result.seconds:.1f} s")
    return 0


def cmd_info(args) -> int:
    from hybrid_jax.data.batches import validation_bytes
    from hybrid_jax.data.store import open_store

    from hybrid_jax.data import info

    if (args.dir is None) == (args.ladder is None):
        raise ValueError("give a store (a directory or an olmo: spec) or --ladder NAME")
    if args.ladder is not None:
        lines, fits = info.ladder_lines(args.ladder, count_documents=args.count_documents)
        print("\n".join(lines))
        return 0 if fits else 1
    t0 = time.perf_counter()
    store = open_store(args.dir, verify=not args.no_verify)
    verify_s = time.perf_counter() - t0
    if args.dir.startswith("olmo:"):
        print("\n".join(info.olmo_lines(store, args.count_documents)))
        return _budget(store, args)
    m = store.manifest
    src = m["source"]
    print(f"store        {store.path}  ({'verified' if not args.no_verify else 'not verified'}"
          f" in {verify_s:.2f} s)")
    print(f"source       {src['kind']}" + (f": {len(src['distributions'])} distributions"
                                          if src["kind"] == "pycode" else ""))
    tok = m["tokenizer"]
    names = (f" {tok['eos_token']!r}, pad {store.pad_id} {tok['pad_token']!r}"
             if "eos_token" in tok else "")  # hf stores record the tokens' text
    print(f"tokenizer    {tok['kind']} vocab {store.vocab_size}, eos {store.eos_id}{names}, "
          f"{store.tokenizer_hash}")
    print(f"train        {store.n_train_tokens:,} tokens, {store.n_train_documents:,} documents, "
          f"{store.train.n_bytes:,} bytes, {store.train.n_bytes / store.n_train_tokens:.3f} "
          "bytes/token")
    docs = m["documents"]
    print(f"dropped      {docs['duplicates_dropped']:,} duplicate, {docs['empty_dropped']:,} empty "
          "documents")
    print("validation   name          documents       tokens        bytes  bytes/token")
    for name in store.validation_set_names:
        v = store.validation(name)
        print(f"             {name:<12}{v.n_documents:>10,}{len(v) - 1:>13,}"
              f"{validation_bytes(store, name):>13,}{v.n_bytes / max(1, len(v) - 1):>13.3f}")
    if m["split"]["empty_validation_sets"]:
        print(f"             (no held-out documents: {m['split']['empty_validation_sets']})")
    return _budget(store, args)


def _budget(store, args) -> int:
    from hybrid_jax.data.batches import check_epochs

    if args.tokens is not None:
        tokens = int(float(args.tokens))
        print(f"budget       {tokens:,} tokens = {tokens / store.n_train_tokens:.2f} epochs")
        check_epochs(store, tokens, args.max_epochs)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-jax data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="tokenize a source into a token store")
    _add_source_args(b)
    b.add_argument("--out", required=True,
                   help="store directory (replaced atomically), or gs://BUCKET/PATH: built in "
                        "~/.cache/hybrid-jax/builds/, then uploaded, the manifest last")
    b.add_argument("--tokenizer", help="SentencePiece .model file; hf:PATH, a Hugging Face "
                   "tokenizer.json or a directory holding one (and its tokenizer_config.json); "
                   "or 'byte'")
    b.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    b.add_argument("--processes", type=int, default=1,
                   help="tokenize in this many worker processes (same store; byte, "
                        "SentencePiece and hf tokenizers)")
    b.add_argument("--reference-manifest", help="warn where distribution versions differ from "
                   "this manifest.json (or store directory)")
    b.set_defaults(func=cmd_build)

    t = sub.add_parser("tokenizer", help="train a SentencePiece BPE model (byte fallback) or a "
                       "Hugging Face byte-level BPE")
    _add_source_args(t)
    t.add_argument("--kind", choices=["sentencepiece", "hf-bpe"], default="sentencepiece",
                   help="sentencepiece: OUT.model (plus OUT.model.json); hf-bpe: "
                        "DIR/tokenizer.json, plus tokenizer_config.json and "
                        "tokenizer_training.json beside it (load with hf:DIR)")
    t.add_argument("--vocab-size", type=int, default=8192)
    t.add_argument("--out", required=True, help="file to write: the .model file, or "
                   "DIR/tokenizer.json for --kind hf-bpe")
    t.add_argument("--sample-bytes", type=int, default=DEFAULT_SAMPLE_BYTES,
                   help="train on at most this much text, chosen by document hash")
    t.set_defaults(func=cmd_tokenizer)

    i = sub.add_parser("info", help="summarize a token store, OLMo token files (olmo:...), or "
                       "a ladder's data (--ladder): tokens, documents, epochs per component")
    i.add_argument("dir", nargs="?", help="a store directory or an olmo: spec (docs/data.md)")
    i.add_argument("--ladder", help="a ladder name or file: every component's tokens and "
                   "documents, and every run's epochs of each (exit 1 if one is past "
                   "data.max_epochs)")
    i.add_argument("--count-documents", action="store_true",
                   help="count the documents of OLMo train files (reads every file once)")
    i.add_argument("--tokens", help="a token budget: report epochs (e.g. 2e9)")
    i.add_argument("--max-epochs", type=float, default=4)
    i.add_argument("--no-verify", action="store_true", help="skip sha256 verification")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    from hybrid_jax.data.batches import EpochLimitError
    from hybrid_jax.data.store import StoreError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except StoreError as e:  # a missing or damaged store: bad input, like a bad argument
        print(f"hybrid-jax data {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (EpochLimitError, ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"hybrid-jax data {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
