"""The long-context suite's heatmap: accuracy per task x length, one panel per model, so a
transformer and a hybrid (or any checkpoints) are compared at a glance.

    hybrid-jax eval long-context-plot transformer=lc_t.json hybrid=lc_h.json --out lc.png

Each JSON is what `hybrid-jax eval long-context ... --out FILE` writes. A cell is the mean
score of its examples (printed with n); a task or length one model lacks is left blank. Files
given the same label are one panel: runs of one checkpoint at different lengths (say 1k-4k,
then 8k-32k) are drawn together; they must name the same checkpoint and share no cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybrid_jax.evaluate.long_context_results import read_result


def read_models(specs: list[str]) -> list[tuple[str, list[dict]]]:
    """["LABEL=PATH" or PATH, ...] -> [(label, accuracy cells)], one entry per label in the
    order first given; files sharing a label are merged (same checkpoint, disjoint cells)."""
    panels: dict[str, tuple[object, list[dict], bool]] = {}
    for spec in specs:
        label, cells, checkpoint, complete = _read(spec)
        if label not in panels:
            panels[label] = (checkpoint, cells, complete)
            continue
        first, merged, all_complete = panels[label]
        if checkpoint != first:
            raise ValueError(f"{spec}: label {label!r} is given to two checkpoints, {first} and "
                             f"{checkpoint}")
        seen = {(c["task"], c["length"]) for c in merged}
        twice = sorted(f"{c['task']}@{c['length']}" for c in cells
                       if (c["task"], c["length"]) in seen)
        if twice:
            raise ValueError(f"{spec}: label {label!r} has cell(s) {twice} in two files")
        panels[label] = (first, merged + cells, all_complete and complete)
    # A run stopped part-way: its missing cells stay blank.
    return [(label + ("" if complete else " (partial)"), cells)
            for label, (_, cells, complete) in panels.items()]


def _read(spec: str) -> tuple[str, list[dict], object, bool]:
    """"LABEL=PATH" (or PATH, labelled by its file name) -> (label, accuracy cells, checkpoint,
    complete)."""
    label, eq, path = spec.partition("=")
    if not eq:
        label, path = Path(spec).stem, spec
    doc = read_result(path)
    return label, doc["accuracy"], doc.get("checkpoint"), doc.get("complete") is not False


def heatmap(models: list[tuple[str, list[dict]]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({c["task"] for _, cells in models for c in cells})
    lengths = sorted({c["length"] for _, cells in models for c in cells})
    fig, axes = plt.subplots(1, len(models), squeeze=False, layout="constrained",
                             figsize=(1.6 + 0.9 * len(lengths) * len(models),
                                      1.4 + 0.5 * len(tasks)))
    for ax, (label, cells) in zip(axes[0], models):
        grid = np.full((len(tasks), len(lengths)), np.nan)
        for c in cells:
            i, j = tasks.index(c["task"]), lengths.index(c["length"])
            grid[i, j] = c["accuracy"]
            ax.text(j, i, f"{c['accuracy']:.2f}\nn={c['n']}", ha="center", va="center",
                    fontsize=7, color="white" if c["accuracy"] < 0.55 else "black")
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(lengths)), [_length(n) for n in lengths], fontsize=8)
        ax.set_yticks(range(len(tasks)), tasks if ax is axes[0][0] else [""] * len(tasks),
                      fontsize=8)
        ax.set_xlabel("context length (tokens)", fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    fig.suptitle("long-context suite: accuracy per task and length", fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _length(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)
