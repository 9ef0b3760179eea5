"""Run the synthetic long-context suite (ruler.py) on a model: accuracy per task x length.

Each example's prompt is encoded as generation encodes one ([eos] + tokens) and completed
greedily with the cached decoder; its score is the fraction of its answers found in the
completion, and a cell's accuracy the mean over its examples. Lengths count the prompt's
tokens, the leading EOS included.
"""

from __future__ import annotations

import re

from hybrid_jax.evaluate import ruler
from hybrid_jax.generate.api import Decoder, encode_prompt

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
              mesh=None) -> dict:
    """{"accuracy": [{task, length, accuracy, n}], "settings": {...}, "examples": first
    example's prompt tail, answers and completion per cell}."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {list(TASKS)}")
    if samples < 1 or batch_size < 1:
        raise ValueError(f"samples and batch_size must be >= 1, got {samples}, {batch_size}")
    hay = ruler.Haystack(haystack)
    decoder = Decoder(model, mesh=mesh)
    count = lambda text: len(encode_prompt(tokenizer, text))  # noqa: E731
    rows, examples = [], []
    for task in tasks:
        for length in lengths:
            exs = [ruler.make_example(task, length, i, seed=seed, count_tokens=count,
                                      haystack=hay) for i in range(samples)]
            scores, first = [], None
            for b0 in range(0, samples, batch_size):
                batch = exs[b0:b0 + batch_size]
                prompts = [encode_prompt(tokenizer, e.prompt) for e in batch]
                # A short last batch is filled up, so every batch has one shape (one compile).
                prompts += prompts[:1] * (batch_size - len(prompts))
                done = decoder.decode(prompts,
                                      max_new_tokens=ruler.MAX_NEW_TOKENS[task],
                                      eos_id=tokenizer.eos_id)
                texts = [tokenizer.decode(toks) for toks, _ in done[:len(batch)]]
                scores += [ruler.score(t, e.answers) for t, e in zip(texts, batch)]
                first = first or texts[0]
            rows.append({"task": task, "length": length, "n": samples,
                         "accuracy": sum(scores) / len(scores)})
            examples.append({"task": task, "length": length, "answers": list(exs[0].answers),
                             "prompt_tail": exs[0].prompt[-300:], "completion": first})
    settings = {"lengths": list(lengths), "tasks": list(tasks), "samples": samples,
                "seed": seed, "haystack": haystack, "decoding": "greedy"}
    return {"accuracy": rows, "settings": settings, "examples": examples}
