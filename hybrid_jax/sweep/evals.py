"""Evaluations at every scaling point of a ladder's runs, added to their result rows.

A ladder's `evals` key names them:

    evals:
      ppl:                        # loss and bits per byte on other data, per named dataset
        code: {data: data_cache/other-store, sets: [val], max_tokens: 200000}
        notes: {data: notes.txt}  # a text file, tokenized with the run's tokenizer
      long_context: {lengths: [1k, 2k], tasks: [niah_single], samples: 20,
                     teacher_forced: true}

When a run completes, its worker loads the checkpoint of each scaling point (kept for good by
the checkpoint policy) and adds to that point's row:
- for each ppl dataset NAME and each of its sets SET, `val["NAME/SET"]` = {loss, bpb, tokens,
  bytes}: the same fields as the run's own validation sets, so `hybrid-jax fit --val-set
  NAME/SET` fits a law to it;
- `evals.long_context` = {"accuracy": [{task, length, accuracy, n}], "mean": the mean of the
  cells}: the synthetic long-context suite (hybrid_jax/evaluate), greedy, on that checkpoint;
  with teacher_forced each cell also has answer_logprob and teacher_forced_exact, and
  "answer_logprob_mean" is their mean: a graded metric where small models retrieve nothing.

Evaluations change no training, so they are not part of a run's identity: adding them to a
ladder trains nothing again, but rows are written once, so a run already done keeps its rows
as they were. A worker killed while evaluating is retried; the retry finds training complete
and evaluates again.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from hybrid_jax.overrides import OverrideError, from_dict

EVAL_KINDS = ("ppl", "long_context")


class EvalsError(ValueError):
    """A ladder's `evals` is malformed; the message names the key."""


@dataclasses.dataclass(frozen=True)
class PplEval:
    data: str                          # a token store (local, gs://, olmo:...) or a text file
    sets: tuple[str, ...] | None = None  # a store's validation sets (None: all; a text: "text")
    seq_len: int | None = None         # None: the run's
    max_tokens: int | None = None      # per set; None: all of it
    batch_size: int = 8


@dataclasses.dataclass(frozen=True)
class LongContextEval:
    lengths: tuple[str, ...]           # "1k", "2048", ...
    tasks: tuple[str, ...] | None = None  # None: every task of the suite
    samples: int = 20
    seed: int = 0
    haystack: str = "noise"
    batch_size: int = 4
    teacher_forced: bool = False


def parse_evals(data: Any) -> dict:
    """The ladder's `evals` checked and in canonical form (plain JSON for spec.json); {} if
    there are none. Raises EvalsError naming the key."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EvalsError(f"evals: expected a mapping of {list(EVAL_KINDS)}, got {data!r}")
    unknown = sorted(set(data) - set(EVAL_KINDS))
    if unknown:
        raise EvalsError(f"evals: unknown kind(s) {unknown}; known: {list(EVAL_KINDS)}")
    out = {}
    try:
        if data.get("ppl") is not None:
            if not isinstance(data["ppl"], dict) or not data["ppl"]:
                raise EvalsError("evals.ppl: expected a mapping of dataset names to "
                                 "{data: PATH, ...}")
            out["ppl"] = {str(name): dataclasses.asdict(from_dict(PplEval, spec,
                                                                  f"evals.ppl.{name}."))
                          for name, spec in data["ppl"].items()}
        if data.get("long_context") is not None:
            lc = from_dict(LongContextEval, {**data["long_context"], "lengths": [
                str(n) for n in data["long_context"].get("lengths", [])]}, "evals.long_context.")
            _check_long_context(lc)
            out["long_context"] = dataclasses.asdict(lc)
    except OverrideError as e:
        raise EvalsError(str(e)) from None
    return out


def _check_long_context(lc: LongContextEval) -> None:
    from hybrid_jax.evaluate.long_context import TASKS, parse_lengths

    try:
        parse_lengths(",".join(lc.lengths))
    except ValueError as e:
        raise EvalsError(f"evals.long_context.lengths: {e}") from None
    if not lc.lengths:
        raise EvalsError("evals.long_context.lengths: give at least one length")
    bad = sorted(set(lc.tasks or ()) - set(TASKS))
    if bad:
        raise EvalsError(f"evals.long_context.tasks: unknown {bad}; known: {list(TASKS)}")
    if lc.samples < 1 or lc.batch_size < 1:
        raise EvalsError("evals.long_context: samples and batch_size must be >= 1")


def add_evals(evals: dict, rows: list[dict], run_dir: os.PathLike, seq_len: int,
              say=print) -> list[dict]:
    """`rows` with each scaling point's evaluations added (new dicts; see the module doc)."""
    if not evals:
        return rows
    from hybrid_jax.generate.loading import load_checkpoint

    out = []
    for row in rows:
        ckpt = f"{os.fspath(run_dir).rstrip('/')}/checkpoints/{row['step']}"
        model, tokenizer, _ = load_checkpoint(ckpt)
        row = {**row, "val": dict(row["val"]), "evals": dict(row.get("evals") or {})}
        for name, spec in evals.get("ppl", {}).items():
            for set_name, r in _ppl(model, tokenizer, spec, seq_len).items():
                row["val"][f"{name}/{set_name}"] = {k: r[k] for k in
                                                    ("loss", "bpb", "tokens", "bytes")}
        if "long_context" in evals:
            row["evals"]["long_context"] = _long_context(model, tokenizer, evals["long_context"])
        say(f"[sweep] evaluated step {row['step']}: " + ", ".join(
            [f"{k} loss {v['loss']:.4f}" for k, v in row["val"].items() if "/" in k]
            + ([f"long context {row['evals']['long_context']['mean']:.2f}"]
               if "long_context" in row["evals"] else [])))
        out.append(row)
    return out


def _ppl(model, tokenizer, spec: dict, seq_len: int) -> dict:
    from hybrid_jax.evaluate.ppl import open_data, perplexity

    data = open_data(spec["data"], tokenizer, tokenizer.hash)
    return perplexity(model, data, seq_len=spec["seq_len"] or seq_len,
                      batch_size=spec["batch_size"], sets=spec["sets"],
                      max_tokens=spec["max_tokens"])


def _long_context(model, tokenizer, spec: dict) -> dict:
    from hybrid_jax.evaluate.long_context import TASKS, parse_lengths, run_suite

    result = run_suite(model, tokenizer, lengths=parse_lengths(",".join(spec["lengths"])),
                       tasks=tuple(spec["tasks"] or TASKS), samples=spec["samples"],
                       seed=spec["seed"], batch_size=spec["batch_size"],
                       haystack=spec["haystack"],
                       # .get: a spec.json written before the field existed lacks it
                       teacher_forced=spec.get("teacher_forced", False))
    cells = result["accuracy"]
    out = {"accuracy": cells, "mean": sum(c["accuracy"] for c in cells) / len(cells)}
    if spec.get("teacher_forced"):
        out["answer_logprob_mean"] = sum(c["answer_logprob"] for c in cells) / len(cells)
    return out
