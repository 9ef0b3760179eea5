"""Suite outputs: results.json (config, environment, every cell), results.md and heatmap.png.

Reads cell results only and trains nothing; the constant-guess baseline regenerates the (fixed)
test sets with the task generators.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

RUNINFO_NOTE = ("Attention models use RoPE; a failure at 2L/4L can be positional (unseen "
                "positions) rather than a failure to represent the task.")


def environment(suite) -> dict:
    from hybrid_jax.expressivity.models import model_config
    from hybrid_jax.train.runinfo import devices, git_state, implementations, versions

    return {"git": git_state(), "versions": versions(), "devices": devices(),
            "implementations": {m: implementations(model_config(m, suite.shape))
                                for m in suite.models},
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _cells_by(results):
    return {(r["cell"]["task"], r["cell"]["model"]): r for r in results}


def token_accuracy(cell: dict, length: int) -> float:
    runs = [r for r in cell["runs"] if r["lr"] == cell["chosen_lr"]]
    return float(np.mean([r["test"][str(length)]["token_acc"] for r in runs]))


def markdown(suite, results: list[dict], wall_seconds: float | None = None,
             baselines: dict | None = None) -> str:
    mult = suite.eval_multipliers
    head = ["task", "model", "params", "lr"] + [f"{m}L" for m in mult]
    lines = [f"# Expressivity suite `{suite.name}`", "",
             "Sequence accuracy on held-out test sets (every scored position right), mean ± std "
             f"over {suite.n_seeds} seeds at the learning rate chosen by in-distribution "
             "validation accuracy; [min–max] over seeds. L is the longest training size "
             "(bits, permutations, pairs, items or statements).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    baselines = baselines or {}
    for i, r in enumerate(results):
        c = r["cell"]
        row = [f"{c['task']} (L={c['train_length']})", c["model"], f"{r['params']:,}",
               f"{r['chosen_lr']:g}"]
        for L in c["eval_lengths"]:
            s = r["summary"][str(L)]
            row.append(f"{s['mean']:.2f} ± {s['std']:.2f} [{s['min']:.2f}–{s['max']:.2f}]")
        lines.append("| " + " | ".join(row) + " |")
        last_of_task = i + 1 == len(results) or results[i + 1]["cell"]["task"] != c["task"]
        if last_of_task and c["task"] in baselines:
            b = baselines[c["task"]]
            lines.append("| " + " | ".join([row[0], "*constant guess*", "", ""]
                                           + [f"{b[str(L)]['seq_acc']:.2f}" for L in c["eval_lengths"]]) + " |")
    lines += ["", "Token accuracy (fraction of scored positions right), mean over seeds at the "
              "chosen learning rate; it shows partial learning that sequence accuracy hides.", "",
              "| " + " | ".join(head[:2] + head[4:]) + " |", "|" + "---|" * (len(head) - 2)]
    for i, r in enumerate(results):
        c = r["cell"]
        row = [f"{c['task']} (L={c['train_length']})", c["model"]]
        for L in c["eval_lengths"]:
            row.append(f"{token_accuracy(r, L):.3f}")
        lines.append("| " + " | ".join(row) + " |")
        last_of_task = i + 1 == len(results) or results[i + 1]["cell"]["task"] != c["task"]
        if last_of_task and c["task"] in baselines:
            b = baselines[c["task"]]
            lines.append("| " + " | ".join([row[0], "*constant guess*"]
                                           + [f"{b[str(L)]['token_acc']:.3f}" for L in c["eval_lengths"]]) + " |")
    lines += ["", RUNINFO_NOTE, "",
              f"Training + evaluation time summed over cells: "
              f"{sum(r['train_seconds'] + r['eval_seconds'] for r in results):.0f} s"
              + ("" if wall_seconds is None else
                 f"; wall time of the invocation that wrote this file: {wall_seconds:.0f} s") + "."]
    return "\n".join(lines) + "\n"


def heatmap(suite, results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _cells_by(results)
    tasks = [t.name for t in suite.tasks]
    models = list(suite.models)
    mult = suite.eval_multipliers
    height = 1.4 + 0.6 * len(tasks)
    fig, axes = plt.subplots(1, len(mult), figsize=(2.2 + 1.1 * len(models) * len(mult), height),
                             squeeze=False, layout="constrained")
    lengths = {t.name: t.train_length for t in suite.tasks}
    labels = [f"{t} (L={lengths[t]})" for t in tasks]
    for ax, m in zip(axes[0], mult):
        grid = np.full((len(tasks), len(models)), np.nan)
        for i, t in enumerate(tasks):
            for j, mo in enumerate(models):
                r = cells.get((t, mo))
                if r is None:
                    continue
                s = r["summary"][str(m * r["cell"]["train_length"])]
                grid[i, j] = s["mean"]
                ax.text(j, i, f"{s['mean']:.2f}\n±{s['std']:.2f}", ha="center", va="center",
                        fontsize=8, color="white" if s["mean"] < 0.55 else "black")
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(tasks)), labels if m == mult[0] else [""] * len(tasks), fontsize=8)
        ax.set_title(f"eval at {m}L", fontsize=10)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="sequence accuracy")
    fig.suptitle(f"expressivity suite '{suite.name}': sequence accuracy, mean ± std over "
                 f"{suite.n_seeds} seeds", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_outputs(suite, results: list[dict], out: Path, *, wall_seconds: float | None = None,
                  extra: dict | None = None) -> dict:
    from hybrid_jax.expressivity.suite import constant_guess

    out = Path(out)
    done = {r["cell"]["task"] for r in results}
    baselines = {t.name: constant_guess(suite, t) for t in suite.tasks if t.name in done}
    doc = {"suite": suite.to_dict(), "environment": environment(suite), "wall_seconds": wall_seconds,
           "positional_note": RUNINFO_NOTE, "baselines": baselines, "cells": results,
           **(extra or {})}
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    (out / "results.md").write_text(markdown(suite, results, wall_seconds, baselines))
    heatmap(suite, results, out / "heatmap.png")
    return doc
