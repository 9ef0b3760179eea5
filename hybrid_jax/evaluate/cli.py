"""`hybrid-jax eval ppl|long-context CHECKPOINT ...`: evaluate a checkpoint.

    hybrid-jax eval ppl RUN_DIR --data STORE_DIR [--sets NAME,...] [--seq-len 1024]
    hybrid-jax eval ppl MODEL_DIR --data notes.txt --tokenizer hf:tok/
    hybrid-jax eval long-context RUN_DIR --lengths 1k,2k,4k [--samples 20] [--out results.json]
    hybrid-jax eval long-context RUN_DIR --lengths 8k,16k --out results.json --resume
    hybrid-jax eval long-context-data --out train.jsonl --docs 50000 --chars 128-2048
    hybrid-jax eval harness --model hybrid-jax --model_args checkpoint=RUN_DIR --tasks TASKS

ppl prints loss (nats/token), perplexity and bits-per-byte per validation set (a text file is
one set, "text"). long-context prints accuracy per task x length. --out writes the results as
JSON (for long-context rewritten after every cell; --resume keeps the cells already there and
runs the missing ones). long-context-data writes the same tasks, with their answers, as
training documents (JSON lines, key "text", for `hybrid-jax data build --source jsonl`).
harness runs lm-eval-harness (the [eval] extra) with the `hybrid-jax` model registered,
passing every argument on to `lm-eval run`. Exit codes: 0 done, 2 refused (bad input: nothing
evaluated).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hybrid_jax.storage.paths import as_path, write_text_atomic

from hybrid_jax.generate.cli import parse_mesh


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run dir, RUN/checkpoints/STEP or model dir (local or "
                   "gs://)")
    p.add_argument("--tokenizer", help="byte | hf:PATH | MODEL_FILE (default: the run's own)")
    p.add_argument("--mesh", help="DATA,FSDP,TENSOR sizes over the local devices (one may be "
                   "-1); default: one device")
    p.add_argument("--out", help="write the results here as JSON (local or gs://)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-jax eval", description="Evaluate a checkpoint.")
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("harness", help="lm-eval-harness with the hybrid-jax model (the [eval] "
                   "extra); every further argument goes to `lm-eval run`")
    ppl = sub.add_parser("ppl", help="loss and bits-per-byte on a token store or a text file")
    _common(ppl)
    ppl.add_argument("--data", required=True,
                     help="token store dir (local or gs://), olmo: spec, or text file")
    ppl.add_argument("--sets", help="comma-separated validation sets (default: all)")
    ppl.add_argument("--seq-len", type=int, default=1024)
    ppl.add_argument("--batch-size", type=int, default=8)
    ppl.add_argument("--max-tokens", type=int, help="score at most this many tokens per set")
    lc = sub.add_parser("long-context", help="synthetic needle / tracking / extraction tasks")
    _common(lc)
    lc.add_argument("--lengths", default="1k,2k,4k",
                    help="comma-separated context lengths in tokens; k = 1024")
    lc.add_argument("--tasks", help="comma-separated tasks (default: all)")
    lc.add_argument("--samples", type=int, default=20, help="examples per task and length")
    lc.add_argument("--seed", type=int, default=0)
    lc.add_argument("--haystack", default="noise", choices=("noise", "pycode"),
                    help="filler: RULER's noise sentences or Python source of the built-in corpus")
    lc.add_argument("--batch-size", type=int, default=4)
    lc.add_argument("--resume", action="store_true",
                    help="keep the cells of an existing --out (same checkpoint and settings; "
                         "more lengths may be asked) and run only the missing ones")
    lc.add_argument("--teacher-forced", action="store_true",
                    help="also score the answers with the full forward: log-probability per "
                         "answer token and exact argmax match (no decoding)")
    data = sub.add_parser("long-context-data", help="the long-context tasks as training "
                          "documents (JSON lines), from seeds the evaluation never uses")
    data.add_argument("--out", required=True, help="the .jsonl file to write (local or gs://)")
    data.add_argument("--docs", type=int, required=True, help="number of documents")
    data.add_argument("--chars", default="128-2048", help="MIN-MAX characters per document")
    data.add_argument("--tasks", help="comma-separated tasks (default: all)")
    data.add_argument("--haystack", default="noise,pycode", help="comma-separated filler kinds, "
                      "used in turn")
    data.add_argument("--seed", type=int, default=0)
    plot = sub.add_parser("long-context-plot", help="heatmap of long-context results, one "
                          "panel per model (e.g. transformer against hybrid)")
    plot.add_argument("results", nargs="+", metavar="[LABEL=]RESULTS.json",
                      help="files written by `eval long-context --out`; files with one label "
                           "(one checkpoint at other lengths) make one panel")
    plot.add_argument("--out", type=Path, required=True, help="the figure (.png, .pdf, ...)")
    return p


def _ppl(args, model, tokenizer, mesh, source) -> dict:
    from hybrid_jax.evaluate.ppl import open_data, perplexity

    if tokenizer is None and not (args.data.startswith("olmo:")
                                  or as_path(args.data).is_dir()):
        raise ValueError("a text file is tokenized with the checkpoint's tokenizer, and none "
                         "was found; pass --tokenizer")
    if tokenizer is None:
        print("note: the checkpoint's tokenizer is unknown; the store's ids are taken as the "
              "model's", file=sys.stderr)
    data = open_data(args.data, tokenizer, None if tokenizer is None else tokenizer.hash)
    vocab = getattr(data, "vocab_size", None)  # a store's; a text file's ids are the tokenizer's
    if vocab is not None and vocab > model.cfg.vocab_size:
        raise ValueError(f"{args.data}: vocabulary of {vocab} ids, the model has "
                         f"{model.cfg.vocab_size}")
    sets = tuple(args.sets.split(",")) if args.sets else None
    results = perplexity(model, data, seq_len=args.seq_len, batch_size=args.batch_size,
                         sets=sets, max_tokens=args.max_tokens, mesh=mesh)
    for name, r in results.items():
        print(f"{name}: loss {r['loss']:.4f}  ppl {r['ppl']:.2f}  bpb {r['bpb']:.4f}  "
              f"({r['tokens']} tokens, {r['bytes']} bytes)")
    return {"data": str(args.data), "seq_len": args.seq_len, "sets": results}


def _long_context(args, model, tokenizer, mesh, source) -> dict:
    from hybrid_jax.evaluate.long_context import TASKS, parse_lengths, run_suite

    tasks = tuple(args.tasks.split(",")) if args.tasks else tuple(TASKS)
    done = _resumed(args, source) if args.resume else None
    # --out is rewritten after every cell, so a run stopped at a long length keeps the rest.
    save = None if args.out is None else (
        lambda partial: write_text_atomic(args.out, json.dumps(
            {"checkpoint": source, "complete": False, **partial}, indent=1)))
    results = run_suite(model, tokenizer, lengths=parse_lengths(args.lengths), tasks=tasks,
                        samples=args.samples, seed=args.seed, batch_size=args.batch_size,
                        haystack=args.haystack, mesh=mesh, on_cell=save,
                        teacher_forced=args.teacher_forced, done=done)
    lengths = sorted({r["length"] for r in results["accuracy"]})
    columns = [("accuracy", "accuracy", "{:8.2f}")]
    if args.teacher_forced:
        columns += [("teacher-forced exact", "teacher_forced_exact", "{:8.2f}"),
                    ("answer log-probability per token", "answer_logprob", "{:8.2f}")]
    for title, key, fmt in columns:
        print(f"{title}:\n" + "task".ljust(18) + "".join(f"{n:>8}" for n in lengths))
        for task in tasks:
            cell = {r["length"]: r[key] for r in results["accuracy"] if r["task"] == task}
            print(task.ljust(18) + "".join(fmt.format(cell[n]) for n in lengths))
    return results


def _resumed(args, source) -> dict | None:
    """The earlier results in --out to resume from (None: no file yet, a fresh start)."""
    if args.out is None:
        raise ValueError("--resume needs --out, the results file to resume")
    from hybrid_jax.evaluate.long_context_results import read_result

    if not as_path(args.out).exists():
        print(f"note: {args.out} does not exist yet; nothing to resume, starting afresh",
              file=sys.stderr)
        return None
    doc = read_result(args.out)
    if not isinstance(doc.get("settings"), dict):
        raise ValueError(f"--resume: {args.out} records no settings to resume with")
    if doc.get("checkpoint") != json.loads(json.dumps(source)):  # as the file records it
        raise ValueError(f"--resume: {args.out} holds results of {doc.get('checkpoint')}, not "
                         f"of {source}")
    return doc


def harness(argv: list[str]) -> int:
    try:
        import hybrid_jax.evaluate.lm_eval_model  # noqa: F401 - registers the model
    except ImportError as e:
        print(f"hybrid-jax eval harness: {e}", file=sys.stderr)
        return 2
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", "run", *argv]
    cli_evaluate()
    return 0


def _plot(args) -> int:
    from hybrid_jax.evaluate.long_context_plot import heatmap, read_models

    try:
        models = read_models(args.results)
    except ValueError as e:
        print(f"hybrid-jax eval long-context-plot: refused: {e}", file=sys.stderr)
        return 2
    heatmap(models, args.out)
    print(f"wrote {args.out}")
    return 0


def _training_data(args) -> int:
    from hybrid_jax.evaluate import ruler

    try:
        lo, _, hi = args.chars.partition("-")
        if not (lo.isdigit() and hi.isdigit()):
            raise ValueError(f"--chars {args.chars!r} is not MIN-MAX, like 128-2048")
        if args.docs < 1:
            raise ValueError(f"--docs must be >= 1, got {args.docs}")
        tasks = tuple(args.tasks.split(",")) if args.tasks else tuple(ruler.TASKS)
        lines = [json.dumps({"text": text}) + "\n" for text in ruler.training_documents(
            args.docs, min_chars=int(lo), max_chars=int(hi), seed=args.seed, tasks=tasks,
            haystacks=tuple(args.haystack.split(",")))]
    except ValueError as e:
        print(f"hybrid-jax eval long-context-data: refused: {e}", file=sys.stderr)
        return 2
    write_text_atomic(args.out, "".join(lines))  # nothing is written unless every doc was made
    print(f"wrote {len(lines)} documents to {args.out}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["harness"]:
        return harness(argv[1:])
    args = parser().parse_args(argv)
    if args.what == "long-context-plot":
        return _plot(args)
    if args.what == "long-context-data":
        return _training_data(args)
    from hybrid_jax.generate.loading import LoadError, load_checkpoint

    try:
        mesh = parse_mesh(args.mesh)
        model, tokenizer, source = load_checkpoint(args.checkpoint, args.tokenizer, mesh=mesh,
                                                   need_tokenizer=args.what != "ppl")
        run = _ppl if args.what == "ppl" else _long_context
        results = run(args, model, tokenizer, mesh, source)
    except (LoadError, ValueError) as e:
        print(f"hybrid-jax eval {args.what}: refused: {e}", file=sys.stderr)
        return 2
    if args.out is not None:
        write_text_atomic(args.out, json.dumps({"checkpoint": source, "complete": True,
                                                **results}, indent=1))
        print(f"wrote {args.out}")
    return 0
