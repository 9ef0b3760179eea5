"""Suite outputs: results.json (config, environment, every cell and control), results.md and
heatmap.png.

Reads cell results only and trains nothing; the constant-guess baseline regenerates the (fixed)
test sets with the task generators. A task whose positive control did not pass (or did not run)
is "pipeline unverified": results.md and the heatmap show that label instead of its numbers,
which stay in results.json as data.
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


UNVERIFIED = "pipeline unverified"


def unverified_tasks(suite, controls: list[dict]) -> set[str]:
    passed = {c["task"] for c in controls if c["passed"]}
    return {t.name for t in suite.tasks} - passed


def controls_markdown(controls: list[dict]) -> list[str]:
    lines = ["## Positive controls", "",
             "Per task, a model and setting that theory says can solve it, trained by this "
             "pipeline; it passes when its best seed reaches the threshold (sequence accuracy at "
             "its L, chosen lr). A task whose control fails is *" + UNVERIFIED + "* below.", "",
             "| task | control | L | best seed | mean | threshold | verdict | why it must work |",
             "|---|---|---|---|---|---|---|---|"]
    for c in controls:
        shape = c["cell"]["cell"]["model_config"]
        what = (f"{c['model']} ({shape['n_layers']} layers, d_model {shape['d_model']})"
                + ("" if c["control_task"] == c["task"] else f" on {c['control_task']}"))
        lines.append(f"| {c['task']} | {what} | {c['train_length']} | {c['best_seed_acc']:.2f} | "
                     f"{c['mean_acc']:.2f} | {c['threshold']:.2f} | "
                     f"{'verified' if c['passed'] else UNVERIFIED} | {c['reason']} |")
    return lines + [""]


def token_accuracy(cell: dict, length: int) -> float:
    runs = [r for r in cell["runs"] if r["lr"] == cell["chosen_lr"]]
    return float(np.mean([r["test"][str(length)]["token_acc"] for r in runs]))


def markdown(suite, results: list[dict], wall_seconds: float | None = None,
             baselines: dict | None = None, controls: list[dict] | None = None) -> str:
    controls = controls or []
    bad = unverified_tasks(suite, controls)
    mult = suite.eval_multipliers
    head = ["task", "model", "params", "lr"] + [f"{m}L" for m in mult]
    lines = [f"# Expressivity suite `{suite.name}`", "",
             "Sequence accuracy on held-out test sets (every scored position right), mean ± std "
             f"over {suite.n_seeds} seeds at the learning rate chosen by in-distribution "
             "validation accuracy; [min–max] over seeds. L is the longest training size "
             "(bits, permutations, pairs, items or statements).", ""]
    lines += controls_markdown(controls)
    missing = [t.name for t in suite.tasks if t.name not in {c["task"] for c in controls}]
    if missing:
        lines += [f"No control ran for: {', '.join(missing)} (*{UNVERIFIED}*).", ""]
    lines += ["## Results", "",
                                            "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    baselines = baselines or {}
    for i, r in enumerate(results):
        c = r["cell"]
        row = [f"{c['task']} (L={c['train_length']})", c["model"], f"{r['params']:,}",
               f"{r['chosen_lr']:g}"]
        for L in c["eval_lengths"]:
            s = r["summary"][str(L)]
            row.append(f"*{UNVERIFIED}*" if c["task"] in bad else
                       f"{s['mean']:.2f} ± {s['std']:.2f} [{s['min']:.2f}–{s['max']:.2f}]")
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
            row.append(f"*{UNVERIFIED}*" if c["task"] in bad else f"{token_accuracy(r, L):.3f}")
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


def heatmap(suite, results: list[dict], path: Path, controls: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _cells_by(results)
    bad = unverified_tasks(suite, controls or [])
    tasks = [t.name for t in suite.tasks]
    models = list(suite.models)
    mult = suite.eval_multipliers
    height = 1.4 + 0.6 * len(tasks)
    fig, axes = plt.subplots(1, len(mult), figsize=(2.2 + 1.1 * len(models) * len(mult), height),
                             squeeze=False, layout="constrained")
    lengths = {t.name: t.train_length for t in suite.tasks}
    labels = [f"{t} (L={lengths[t]})" + ("\n" + UNVERIFIED if t in bad else "") for t in tasks]
    for ax, m in zip(axes[0], mult):
        grid = np.full((len(tasks), len(models)), np.nan)
        for i, t in enumerate(tasks):
            for j, mo in enumerate(models):
                r = cells.get((t, mo))
                if r is None:
                    continue
                if t in bad:  # grey, no number: not a result
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.8", zorder=2))
                    ax.text(j, i, "unverified", ha="center", va="center", fontsize=7,
                            color="0.3", zorder=3)
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
                 f"{suite.n_seeds} seeds; " + (f"grey: positive control failed ({UNVERIFIED})"
                                               if bad else "every task's positive control passed"),
                 fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_outputs(suite, results: list[dict], out: Path, *, controls: list[dict],
                  wall_seconds: float | None = None, extra: dict | None = None) -> dict:
    from hybrid_jax.expressivity.suite import constant_guess

    out = Path(out)
    done = {r["cell"]["task"] for r in results}
    baselines = {t.name: constant_guess(suite, t) for t in suite.tasks if t.name in done}
    doc = {"suite": suite.to_dict(), "environment": environment(suite), "wall_seconds": wall_seconds,
           "positional_note": RUNINFO_NOTE, "baselines": baselines,
           "unverified_tasks": sorted(unverified_tasks(suite, controls)), "controls": controls,
           "cells": results, **(extra or {})}
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    (out / "results.md").write_text(markdown(suite, results, wall_seconds, baselines, controls))
    heatmap(suite, results, out / "heatmap.png", controls)
    return doc
