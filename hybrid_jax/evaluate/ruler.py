"""Synthetic long-context tasks in the style of RULER (Hsieh et al. 2024, "RULER: What's the
Real Context Size of Your Long-Context Language Models?"), generated locally.

Each task builds an `Example`: a prompt of about `length` tokens (never more) and the strings
the completion must contain. Everything is a function of (seed, task, length, index): keys,
values and words are pseudo-words and digits from a seeded `random.Random`, so an example is the
same on every machine, and its answers hold by construction (tests re-derive them from the
prompt alone).

    niah_single      one needle "One of the special magic numbers for KEY is: VALUE." in a
                     haystack; asked for KEY's number.
    niah_multikey    four needles with different keys; asked for one of them.
    niah_multivalue  four needles with the same key and different values; asked for all four.
    variable_tracking  a chain "VAR A = 12345", "VAR B = VAR A", ... (four names) spread through
                     the haystack, and a second chain as a distractor; asked for every name
                     holding the first chain's value.
    common_words     a numbered list of words: ten appear f times each (about a third of the
                     list, 4 <= f <= 30), the rest (as many as fit) twice each; asked for the
                     ten most common.

`training_documents` writes the same tasks as training text, each prompt followed by its
answers, from a seed namespace ("train/SEED") that the evaluation's integer seeds never reach:
a model can learn the formats at short lengths and be scored at long ones on unseen examples.

Haystacks: "noise" repeats RULER's filler ("The grass is green. The sky is blue. ..."); "pycode"
is Python source from the built-in corpus (`data.pycode`, the installed `optax`'s files in
sorted order, from a seeded offset).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable

NOISE = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
         "again. ")
HAYSTACKS = ("noise", "pycode")
_SYLLABLES = ("ka", "lo", "mi", "ru", "te", "sa", "vo", "ni", "be", "du", "fa", "go", "pi",
              "ze", "hu", "ro", "ta", "we", "xi", "yo", "mo", "le", "ki", "su")


@dataclasses.dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    answers: tuple[str, ...]


def pseudo_word(rng: random.Random, syllables: int = 3) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables))


def distinct_words(rng: random.Random, n: int, syllables: int = 3) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        w = pseudo_word(rng, syllables)
        if w not in words:
            words.append(w)
    return words


def number(rng: random.Random) -> str:
    return str(rng.randrange(1_000_000, 10_000_000))


class Haystack:
    """Filler text of a given size in characters, from noise or the pycode corpus."""

    def __init__(self, kind: str):
        if kind not in HAYSTACKS:
            raise ValueError(f"haystack {kind!r}; expected one of {HAYSTACKS}")
        self.kind = kind
        self._code: str | None = None

    def text(self, rng: random.Random, n_chars: int) -> str:
        if self.kind == "noise":
            return (NOISE * (n_chars // len(NOISE) + 1))[:n_chars]
        if self._code is None:
            from hybrid_jax.data.pycode import PycodeSource
            self._code = "\n".join(d.text for d in PycodeSource(("optax",)).documents())
        start = rng.randrange(max(1, len(self._code) - n_chars))
        return (self._code * (n_chars // len(self._code) + 2))[start:start + n_chars]


def _insert(hay: str, pieces: list[str], rng: random.Random) -> str:
    """`pieces` placed at random line or sentence boundaries of `hay`, in order."""
    cuts = [i + 1 for i, c in enumerate(hay) if c in ".\n"] or [len(hay)]
    at = sorted(rng.choice(cuts) for _ in pieces)
    out, prev = [], 0
    for cut, piece in zip(at, pieces):
        out += [hay[prev:cut], f" {piece}\n"]
        prev = cut
    return "".join(out + [hay[prev:]])


def _needle(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is: {value}."


def niah(n_keys: int, n_values: int) -> Callable:
    """The needle tasks: n_keys keys (one asked), n_values values for the asked key."""

    def make(rng: random.Random, hay: str) -> tuple[str, tuple[str, ...]]:
        keys = distinct_words(rng, n_keys)
        values = [number(rng) for _ in range(n_keys - 1 + n_values)]
        while len(set(values)) < len(values):
            values = [number(rng) for _ in values]
        asked = keys[0]
        needles = [_needle(asked, v) for v in values[:n_values]]
        needles += [_needle(k, v) for k, v in zip(keys[1:], values[n_values:])]
        rng.shuffle(needles)
        which = "numbers" if n_values > 1 else "number"
        body = _insert(hay, needles, rng)
        prompt = (f"Some special magic numbers are hidden within the following text. Make sure "
                  f"to memorize them. I will quiz you about the numbers afterwards.\n{body}\n"
                  f"What {'are all the' if n_values > 1 else 'is the'} special magic {which} "
                  f"for {asked} mentioned in the provided text? The special magic {which} for "
                  f"{asked} mentioned in the provided text {'are' if n_values > 1 else 'is'}:")
        return prompt, tuple(values[:n_values])

    return make


def variable_tracking(rng: random.Random, hay: str) -> tuple[str, tuple[str, ...]]:
    names = [w.upper() for w in distinct_words(rng, 8, 2)]
    value, other = number(rng), number(rng)
    while other == value:
        other = number(rng)
    chains = []
    for chain, v in ((names[:4], value), (names[4:], other)):
        chains.append([f"VAR {chain[0]} = {v}."]
                      + [f"VAR {b} = VAR {a}." for a, b in zip(chain, chain[1:])])
    # Each chain keeps its order (an assignment after the one it reads), interleaved at random.
    merged, a, b = [], list(chains[0]), list(chains[1])
    while a or b:
        merged.append((a if a and (not b or rng.random() < 0.5) else b).pop(0))
    body = _insert(hay, merged, rng)
    prompt = (f"Memorize and track the chain(s) of variable assignment hidden in the following "
              f"text.\n{body}\nQuestion: Find all variables that are assigned the value {value} "
              f"in the text above. Answer: According to the chain(s) of variable assignment in "
              f"the text above, 4 variables are assigned the value {value}, they are:")
    return prompt, tuple(names[:4])


def common_words(rng: random.Random, budget_chars: int) -> tuple[str, tuple[str, ...]]:
    """Ten words f times each; as many other words twice each as fit in budget_chars."""
    common = distinct_words(rng, 10, 3)
    per_entry = 12  # "123. kalomi\n": a list entry's characters, about
    f = min(30, max(4, budget_chars // (3 * 10 * per_entry)))
    words = [w for w in common for _ in range(f)]
    used, size = set(common), len(words) * per_entry
    while size < budget_chars:
        w = pseudo_word(rng, 4)
        if w not in used:
            used.add(w)
            words += [w] * 2
            size += 2 * (per_entry + 2)
    rng.shuffle(words)
    listing = "\n".join(f"{i + 1}. {w}" for i, w in enumerate(words))
    prompt = (f"Below is a numbered list of words. In these words, some appear more often than "
              f"others. Memorize the ones that appear most often.\n{listing}\nQuestion: What "
              f"are the 10 most common words in the above list? Answer: The top 10 words that "
              f"appear most often in the list are:")
    return prompt, tuple(common)


TASKS: dict[str, Callable] = {
    "niah_single": niah(1, 1),
    "niah_multikey": niah(4, 1),
    "niah_multivalue": niah(1, 4),
    "variable_tracking": variable_tracking,
    "common_words": common_words,
}
# New tokens to generate per task: enough for every answer with some separators.
MAX_NEW_TOKENS = {"niah_single": 24, "niah_multikey": 24, "niah_multivalue": 64,
                  "variable_tracking": 48, "common_words": 96}


def make_example(task: str, length: int, index: int, *, seed: int | str,
                 count_tokens: Callable, haystack: Haystack) -> Example:
    """Example `index` of `task` whose prompt has at most `length` tokens (count_tokens), as
    close below it as a few resizes of the haystack get."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    make = TASKS[task]
    chars, seen = 4 * length, []
    for _ in range(8):
        # The same seed for every resize: a resize changes the haystack's size, not the needles.
        rng = random.Random(f"{seed}/{task}/{length}/{index}")
        if task == "common_words":
            prompt, answers = make(rng, chars)
        else:
            prompt, answers = make(rng, haystack.text(rng, chars))
        n = count_tokens(prompt)
        if 0.9 * length <= n <= length or (chars == 0 and n > length):
            break
        # Tokens grow about linearly in the filler's characters above the fixed text: aim at
        # 95% of the length along the line through the last two sizes (proportional at first).
        seen.append((chars, n))
        (c0, n0), (c1, n1) = ((0, 0), seen[0]) if len(seen) == 1 else seen[-2:]
        slope = (n1 - n0) / (c1 - c0) if c1 != c0 and n1 != n0 else max(n1, 1) / max(c1, 1)
        chars = max(0, int(c1 + (0.95 * length - n1) / slope))
    if n > length:
        raise ValueError(f"{task}: could not fit a prompt in {length} tokens (got {n}); the "
                         f"task's fixed text may be longer than the length")
    return Example(task, prompt, answers)


def check_tasks(tasks) -> None:
    """Raises ValueError naming any of `tasks` that is not one of TASKS."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")


def answer_text(answers: tuple[str, ...]) -> str:
    """The completion a training document gives: the answers, comma-separated, then a period."""
    return " " + ", ".join(answers) + "."


def training_documents(n: int, *, min_chars: int, max_chars: int, seed: int,
                       tasks: tuple[str, ...] = tuple(TASKS),
                       haystacks: tuple[str, ...] = HAYSTACKS):
    """`n` documents "PROMPT ANSWERS." of min_chars..max_chars characters (uniform), each of a
    task and haystack drawn in turn from `tasks` x `haystacks`. Deterministic per seed."""
    check_tasks(tasks)
    if not 0 < min_chars <= max_chars:
        raise ValueError(f"need 0 < min_chars <= max_chars, got {min_chars}, {max_chars}")
    hays = {kind: Haystack(kind) for kind in haystacks}
    rng = random.Random(f"train/{seed}/sizes")
    made = index = 0
    while made < n:
        task = tasks[index % len(tasks)]
        hay = hays[haystacks[(index // len(tasks)) % len(haystacks)]]
        chars = rng.randint(min_chars, max_chars)
        index += 1
        try:
            ex = make_example(task, chars, index, seed=f"train/{seed}", count_tokens=len,
                              haystack=hay)
        except ValueError:  # the task's fixed text alone is longer than `chars`: draw again
            if index > 100 * (made + 1):
                raise ValueError(f"{max_chars} characters are too few for {tasks}") from None
            continue
        made += 1
        yield ex.prompt + answer_text(ex.answers)


def score(completion: str, answers: tuple[str, ...]) -> float:
    """RULER's string_match_all: the fraction of answers found in the completion."""
    return sum(a.lower() in completion.lower() for a in answers) / len(answers)
