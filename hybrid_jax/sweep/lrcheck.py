"""Learning-rate check before a ladder: one size, a few multiples of the recipe's lr, per family.

    hybrid-jax sweep lr-check gpu-small --size d224 --multipliers 0.5 1 2 --ratio 5 \
        --write-ladder sweeps/gpu-small-lr/gpu-small.yaml
    hybrid-jax sweep run sweeps/gpu-small-lr/gpu-small.yaml --root sweeps/gpu-small

Why: the recipe's lr formula was tuned by OLMo at 100M+ parameters with a 100k vocabulary; a
ladder of 3-15M models on another corpus should not trust it blindly. The check trains the
ladder's `size` for every family at lr x m for each multiplier m, with one WSD-S decay at D/N =
`ratio`, and reads the mean validation loss at its bottom. Everything else (batch, warmup,
data, seed rule) is the ladder's, so the check measures the lr alone.

The chosen multiplier per family is the one with the lowest loss. `--write-ladder` writes the
ladder YAML with each family's recipe scaled by its multiplier (lr_ref, or lr where the ladder
sets it outright); a multiplier of 1 leaves the family untouched, so its run ids are those of
the original ladder. The check's table (lr_check.json, lr_check.md) lives in its root.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os

import yaml

from hybrid_jax.storage.paths import write_text_atomic
from hybrid_jax.storage.results import read_rows
from hybrid_jax.sweep.ladder import Ladder, LadderError
from hybrid_jax.sweep.recipe import Recipe
from hybrid_jax.sweep.state import write_json


def _mult_name(size: str, m: float) -> str:
    return f"{size}-lrx{m:g}"


def _scaled_recipe(recipe: dict, m: float) -> dict:
    """recipe with its lr scaled by m: the explicit lr if set, else lr_ref (lr is linear in it)."""
    out = dict(recipe)
    if out.get("lr") is not None:
        out["lr"] = float(out["lr"]) * m
    else:
        out["lr_ref"] = float(out.get("lr_ref", Recipe.lr_ref)) * m
    return out


def check_ladder(ladder: Ladder, size: str, multipliers: list[float], ratio: float) -> Ladder:
    """The ladder restricted to `size`, one copy per multiplier, one decay at D/N = ratio.

    The scaled lr sits in each copy's size-level recipe, which wins over the ladder's and the
    family's; so the check refuses ladders whose families or that size set an lr themselves
    (it would then train a different lr than the ladder does)."""
    if size not in ladder.sizes:
        raise LadderError(f"--size {size!r} is not a size of ladder {ladder.name!r} "
                          f"(sizes: {', '.join(ladder.sizes)})")
    if not multipliers or any(not (m > 0 and math.isfinite(m)) for m in multipliers):
        raise LadderError(f"--multipliers must be positive numbers, got {multipliers}")
    if len(set(multipliers)) != len(multipliers):
        raise LadderError(f"--multipliers has duplicates: {multipliers}")
    if not (ratio > 0 and math.isfinite(ratio)):
        raise LadderError(f"--ratio must be a positive number, got {ratio}")
    owners = [f"sizes.{size}"] if _sets_lr(ladder.sizes[size].get("recipe")) else []
    owners += [f"families.{f}" for f, e in ladder.families.items() if _sets_lr(e.get("recipe"))]
    if owners:
        raise LadderError(f"{', '.join(owners)} set the lr in their recipe; the check scales "
                          "the ladder-level recipe's lr only")
    scaled = {}
    for m in multipliers:
        entry = copy.deepcopy(ladder.sizes[size])
        lr_keys = {k: v for k, v in _scaled_recipe(ladder.recipe, m).items()
                   if k in ("lr", "lr_ref")}
        entry["recipe"] = {**(entry.get("recipe") or {}), **lr_keys}
        scaled[_mult_name(size, m)] = entry
    return dataclasses.replace(ladder, name=f"{ladder.name}-lr", sizes=scaled,
                               decay_ratios=(float(ratio),))


def _sets_lr(recipe: dict | None) -> bool:
    return any((recipe or {}).get(k) is not None for k in ("lr", "lr_ref"))


@dataclasses.dataclass(frozen=True)
class Choice:
    family: str
    losses: dict[float, float | None]   # multiplier -> mean val loss (None: no result)
    lrs: dict[float, float]             # multiplier -> the lr trained
    best: float | None

    def to_json(self) -> dict:
        return {"family": self.family, "best_multiplier": self.best,
                "points": [{"multiplier": m, "lr": self.lrs.get(m), "val_loss": self.losses[m]}
                           for m in self.losses]}


def choose(rows: list[dict], size: str, multipliers: list[float],
           families: list[str]) -> list[Choice]:
    """Per family, the loss at each multiplier (last row of each run) and the lowest one."""
    by_run = {}
    for row in rows:
        key = (row["family"], row["size"])
        if key not in by_run or row["tokens"] > by_run[key]["tokens"]:
            by_run[key] = row
    out = []
    for fam in families:
        losses, lrs = {}, {}
        for m in multipliers:
            row = by_run.get((fam, _mult_name(size, m)))
            if row is None:
                losses[m] = None
                continue
            vals = [v["loss"] for v in row["val"].values()]
            losses[m] = float(sum(vals) / len(vals))
            lrs[m] = float(row["lr"])
        done = {m: v for m, v in losses.items() if v is not None and math.isfinite(v)}
        best = min(done, key=done.get) if len(done) == len(multipliers) else None
        out.append(Choice(fam, losses, lrs, best))
    return out


def format_table(choices: list[Choice], size: str, ratio: float) -> str:
    ms = list(choices[0].losses) if choices else []
    head = ["family"] + [f"lr x{m:g}" for m in ms] + ["best"]
    lines = [f"Learning-rate check at size {size}, mean validation loss at D/N = {ratio:g} "
             "(lower is better; the chosen multiplier in bold).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in choices:
        cells = []
        for m in ms:
            if c.losses[m] is None:
                cells.append("not run")
                continue
            text = f"{c.losses[m]:.4f} (lr {c.lrs[m]:.3g})"
            cells.append(f"**{text}**" if m == c.best else text)
        best = "incomplete" if c.best is None else f"x{c.best:g}"
        if c.best is not None and c.best in (min(ms), max(ms)) and len(ms) > 1:
            best += " (edge of the range)"
        lines.append(f"| {c.family} | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(lines) + "\n"


def tuned_ladder_yaml(ladder: Ladder, choices: list[Choice]) -> str:
    """The ladder's YAML with each family's lr scaled by its chosen multiplier."""
    data = yaml.safe_load(ladder.path.read_text())
    fams = data["families"]
    if isinstance(fams, list):
        fams = {f: {} for f in fams}
    for c in choices:
        if c.best is None:
            raise LadderError(f"family {c.family}: the lr check is incomplete "
                              f"({c.losses}); finish it before writing the tuned ladder")
        if c.best == 1:
            continue
        entry = dict(fams.get(c.family) or {})
        merged = {**(data.get("recipe") or {}), **(entry.get("recipe") or {})}
        scaled = _scaled_recipe(merged, c.best)
        entry["recipe"] = {**(entry.get("recipe") or {}),
                           **{k: v for k, v in scaled.items() if k in ("lr", "lr_ref")}}
        fams[c.family] = entry
    data["families"] = {f: (e or None) for f, e in fams.items()} \
        if any(fams.values()) else list(fams)
    note = ", ".join(f"{c.family} x{c.best:g}" for c in choices)
    data["description"] = f"{data.get('description', '')} [lr from the check: {note}]".strip()
    header = (f"# Generated by `hybrid-jax sweep lr-check` from {ladder.path.name}: each family's lr\n"
              f"# scaled by the multiplier the check chose ({note}); see lr_check.md.\n")
    return header + yaml.safe_dump(data, sort_keys=False)


def summarize(root: os.PathLike, ladder: Ladder, families: list[str], size: str,
              multipliers: list[float], ratio: float) -> list[Choice]:
    rows = read_rows(root)
    choices = choose(rows, size, multipliers, families)
    write_json(root / "lr_check.json",
               {"ladder": ladder.name, "size": size, "ratio": ratio, "multipliers": multipliers,
                "families": [c.to_json() for c in choices]})
    write_text_atomic(root / "lr_check.md", format_table(choices, size, ratio))
    return choices
