"""Run the synthetic long-context suite (ruler.py) on a model: accuracy per task x length.

Each example's prompt is encoded as generation encodes one ([eos] + tokens) and completed
greedily with the cached decoder; its score is the fraction of its answers found in the
completion, and a cell's accuracy the mean over its examples. Lengths count the prompt's
tokens, the leading EOS included.

With teacher_forced, each cell also scores the answers as a continuation of the prompt with the
full training forward (scoring.Scorer, no cache): `answer_logprob`, the mean log-probability
per answer token, and `teacher_forced_exact`, the fraction of examples whose every answer token
is the argmax. The answers are in the order the generator lists them (ruler.answer_text). This
is graded where exact retrieval is still zero (small models), and it separates a model that
cannot retrieve from a decoding path that loses what it knows.
"""

from __future__ import annotations

import re
from typing import Callable

from hybrid_jax.evaluate import ruler
from hybrid_jax.evaluate.scoring import Scorer
from hybrid_jax.generate.api import PROMPT_BUCKET, Decoder, encode_prompt

TASKS = tuple(ruler.TASKS)


def parse_lengths(text: str) -> list[int]:
    """"1k,2k,500" -> [1024, 2048, 500]."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*([kK]?)\s*", part)
        if not m or int(m.group(1)) == 0:
            raise ValueError(f"--lengths {text!r}: {part!r} is not a positive length like 4k "
                             f"or 4096")
        out.append(int(m.group(1)) * (1024 if m.group(2) else 1))
    return out


def run_suite(model, tokenizer, *, lengths: list[int], tasks: tuple[str, ...] = TASKS,
              samples: int = 20, seed: int = 0, batch_size: int = 4, haystack: str = "noise",
              mesh=None, on_cell: Callable[[dict], None] | None = None,
              teacher_forced: bool = False, done: dict | None = None) -> dict:
    """{"accuracy": [{task, length, accuracy, n}], "settings": {...}, "examples": first
    example's prompt tail, answers and completion per cell}. Cells run shortest length first,
    every task at a length before the next length; `on_cell` gets the results so far after
    each cell (so a run stopped at a long length keeps the shorter ones). done: an earlier
    result of this suite with the same settings (`resumable`); its cells are kept, not run
    again."""
    ruler.check_tasks(tasks)
    if samples < 1 or batch_size < 1:
        raise ValueError(f"samples and batch_size must be >= 1, got {samples}, {batch_size}")
    hay = ruler.Haystack(haystack)
    decoder = Decoder(model, mesh=mesh)
    scorer = (Scorer(model, batch_size=batch_size, max_length=max(lengths) + 2 * PROMPT_BUCKET)
              if teacher_forced else None)
    count = lambda text: len(encode_prompt(tokenizer, text))  # noqa: E731
    settings = {"lengths": list(lengths), "tasks": list(tasks), "samples": samples,
                "seed": seed, "haystack": haystack, "decoding": "greedy",
                "teacher_forced": teacher_forced}
    done = done or {}
    if done:
        resumable(done, settings)
    rows, examples = list(done.get("accuracy", [])), list(done.get("examples", []))
    have = {(r["task"], r["length"]) for r in rows}
    settings["lengths"] = sorted(set(lengths) | {length for _, length in have})
    for length in settings["lengths"]:
        cache_len = length + PROMPT_BUCKET + max(ruler.MAX_NEW_TOKENS.values())
        for task in tasks:
            if (task, length) in have:
                continue
            exs = [ruler.make_example(task, length, i, seed=seed, count_tokens=count,
                                      haystack=hay) for i in range(samples)]
            scores, first = [], None
            for b0 in range(0, samples, batch_size):
                batch = exs[b0:b0 + batch_size]
                prompts = [encode_prompt(tokenizer, e.prompt) for e in batch]
                # A short last batch is filled up, so every batch has one shape (one compile).
                prompts += prompts[:1] * (batch_size - len(prompts))
                # One prompt length and one cache length per length: every task and batch of
                # a length shares one compile.
                done = decoder.decode(prompts, max_new_tokens=ruler.MAX_NEW_TOKENS[task],
                                      eos_id=tokenizer.eos_id, prompt_len=length,
                                      max_len=cache_len)
                texts = [tokenizer.decode(toks) for toks, _ in done[:len(batch)]]
                scores += [ruler.score(t, e.answers) for t, e in zip(texts, batch)]
                first = first or texts[0]
            rows.append({"task": task, "length": length, "n": samples,
                         "accuracy": sum(scores) / len(scores)})
            if scorer is not None:
                rows[-1].update(_teacher_forced(scorer, tokenizer, exs))
            examples.append({"task": task, "length": length, "answers": list(exs[0].answers),
                             "prompt_tail": exs[0].prompt[-300:], "completion": first})
            if on_cell is not None:
                on_cell({"accuracy": rows, "settings": settings, "examples": examples})
    return {"accuracy": rows, "settings": settings, "examples": examples}


def resumable(done: dict, settings: dict) -> None:
    """Raises ValueError unless `done` (an earlier result) was made with these settings (all
    but the lengths, which a resumed run adds to)."""
    old = {k: v for k, v in (done.get("settings") or {}).items() if k != "lengths"}
    new = {k: v for k, v in settings.items() if k != "lengths"}
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise ValueError(f"cannot resume: its settings differ in {diff} "
                         f"({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in diff)})")


def _teacher_forced(scorer: Scorer, tokenizer, exs: list) -> dict:
    pairs = [(encode_prompt(tokenizer, e.prompt), list(tokenizer.encode(ruler.answer_text(
        e.answers)))) for e in exs]
    scored = scorer.score(pairs)
    return {"answer_logprob": sum(lp / len(cont) for (lp, _), (_, cont) in zip(scored, pairs))
            / len(pairs),
            "teacher_forced_exact": sum(exact for _, exact in scored) / len(scored)}
