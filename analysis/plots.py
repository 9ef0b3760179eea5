"""Figures for the scaling report: frontier, IsoFLOP, residuals, savings, bootstrap pairs.

Why this way: figures are built as `matplotlib.figure.Figure` objects, never through
pyplot, so no backend is chosen or changed: saving renders PNG with Agg (and PDF with
the pdf backend) on headless CI, and a notebook displays the returned Figure inline. Every family keeps one colour across all figures (Okabe-Ito palette,
readable by colour-blind readers and in greyscale print). Each figure is written as PNG
(200 dpi, for the report and notebooks) and PDF (vector, for papers).
"""

from __future__ import annotations

from pathlib import Path

import functools

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (FixedLocator, FuncFormatter, MaxNLocator, NullFormatter,
                               NullLocator)

from analysis.fit import predict
from analysis.frontier import frontier_loss, isoflop_parabolas, lower_envelope

FAMILY_COLOURS = {"transformer": "#0072B2", "hybrid": "#D55E00", "gdn": "#009E73"}
_SPARE_COLOURS = ("#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25, "grid.linewidth": 0.6,
    "lines.linewidth": 1.8, "savefig.bbox": "tight", "pdf.fonttype": 42,
}
EXTRAPOLATE = 30.0  # draw frontiers this factor past the largest observed compute
FIGURES = ("loss_vs_flops", "isoflop", "residuals", "savings", "bootstrap_pairs")


def _styled(make):
    """Build the figure under STYLE, so it looks the same saved or shown in a notebook."""
    @functools.wraps(make)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return make(*args, **kwargs)
    return wrapper


def family_colour(family: str, families: list[str]) -> str:
    if family in FAMILY_COLOURS:
        return FAMILY_COLOURS[family]
    others = [f for f in families if f not in FAMILY_COLOURS]
    return _SPARE_COLOURS[others.index(family) % len(_SPARE_COLOURS)]


def _loss_axis(ax):
    """Log-scaled loss axis with evenly spaced plain labels (2.5, 3, 3.5) instead of 10^0.5.

    Loss spans well under a decade, where log ticks would label only one or two values.
    """
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _count_axis(axis, values, unit=""):
    """Log axis with 1-2-5 ticks labelled 20M / 1B (or 10 / 20 for ratios), no minor labels."""
    lo, hi = float(np.min(values)), float(np.max(values))
    ticks = [m * 10.0 ** k for k in range(int(np.floor(np.log10(lo))) - 1,
                                          int(np.ceil(np.log10(hi))) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo / 1.3 <= t <= hi * 1.3]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _human(v) + unit))
    axis.set_minor_formatter(NullFormatter())


def _human(v: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


@_styled
def loss_vs_flops(an) -> Figure:
    """Every point, each family's fitted frontier, its 95% bootstrap band and extrapolation."""
    pts, summ = an.points, an.summary
    families = pts.families
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    c_lo, c_hi = pts.flops.min(), pts.flops.max()
    for fam in families:
        colour = family_colour(fam, families)
        p = pts.family_points(fam)
        env = lower_envelope(p.flops, p.loss)
        ax.scatter(p.flops, p.loss, s=14, color=colour, alpha=0.35, linewidths=0)
        ax.scatter(p.flops[env], p.loss[env], s=22, facecolor="none", edgecolor=colour,
                   linewidths=1.0)
        fr = summ["families"][fam]["frontier"]
        if fr is None:
            continue
        grid_in = np.geomspace(c_lo, c_hi, 100)
        grid_out = np.geomspace(c_hi, c_hi * EXTRAPOLATE, 40)
        label = f"{fam}: $\\gamma$ = {fr['gamma']:.3f}"
        ax.plot(grid_in, frontier_loss(fr, grid_in), color=colour, label=label)
        ax.plot(grid_out, frontier_loss(fr, grid_out), color=colour, linestyle="--")
        boots = [b for b in an.boot_frontiers.get(fam, []) if b]
        if boots:
            grid = np.concatenate([grid_in, grid_out])
            curves = np.array([frontier_loss(b, grid) for b in boots])
            lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
            ax.fill_between(grid, lo, hi, color=colour, alpha=0.15, linewidth=0)
    ax.axvline(c_hi, color="0.5", linestyle=":", linewidth=1.0)
    ax.set_xscale("log")
    _loss_axis(ax)
    ax.text(c_hi, 0.02, " extrapolation \u2192", transform=ax.get_xaxis_transform(),
            va="bottom", ha="left", fontsize=8, color="0.4")
    ax.set_xlabel("Training compute C (FLOPs)")
    ax.set_ylabel(f"Validation loss, {summ['inputs']['val_set']} (nats/token)")
    ax.set_title("Loss vs compute: frontier $L(C) = E + A\\,C^{-\\gamma}$, 95% bootstrap band")
    ax.plot([], [], color="0.3", linestyle="--", label="extrapolated")
    ax.scatter([], [], s=22, facecolor="none", edgecolor="0.3", label="frontier (envelope) points")
    ax.legend(loc="lower left", frameon=False)
    return fig


@_styled
def isoflop(an) -> Figure:
    """Loss vs N in each compute bucket, with the fitted parabola and its vertex."""
    pts = an.points
    families = pts.families
    fig = Figure(figsize=(3.4 * len(families) + 0.8, 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(families), sharey=True))
    all_c = np.log10(pts.flops)
    norm = Normalize(vmin=all_c.min(), vmax=all_c.max())
    cmap = matplotlib.colormaps["viridis"]
    for ax, fam in zip(axes, families):
        p = pts.family_points(fam)
        ax.scatter(p.n_params, p.loss, s=10, color="0.8", zorder=1)
        buckets = isoflop_parabolas(p.flops, p.n_params, p.loss)
        for b in buckets:
            colour = cmap(norm(np.log10(b.flops)))
            m = b.members
            ax.scatter(p.n_params[m], p.loss[m], s=18, color=colour, zorder=2)
            x = np.linspace(np.log(p.n_params[m].min()), np.log(p.n_params[m].max()), 50)
            ax.plot(np.exp(x), np.polyval(b.coeffs, x), color=colour, linewidth=1.2)
            if b.interior:
                ax.scatter([b.n_opt], [b.loss_opt], marker="*", s=90, color=colour,
                           edgecolor="black", linewidths=0.5, zorder=3)
        if not buckets:
            ax.text(0.5, 0.5, "no compute bucket\nwith 3+ sizes", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
        ax.set_xscale("log")
        _count_axis(ax.xaxis, pts.n_params)
        ax.set_title(fam, color=family_colour(fam, families))
        ax.set_xlabel("Non-embedding parameters N")
    _loss_axis(axes[0])
    axes[0].set_ylabel("Validation loss (nats/token)")
    sm = ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=list(axes), label="log$_{10}$ training FLOPs", pad=0.02)
    fig.suptitle("IsoFLOP profiles (stars: compute-optimal N per budget)", y=1.02)
    return fig


@_styled
def residuals(an) -> Figure:
    """Relative residuals of the parametric fit against N, D/N and C."""
    pts, summ = an.points, an.summary
    families = pts.families
    fig = Figure(figsize=(9.6, 3.3))
    axes = fig.subplots(1, 3, sharey=True)
    for fam in families:
        p = pts.family_points(fam)
        law = summ["families"][fam]["law"]
        rel = 100.0 * (predict(law, p.n_params, p.tokens) - p.loss) / p.loss
        xs = (p.n_params, p.tokens / p.n_params, p.flops)
        for ax, x in zip(axes, xs):
            ax.scatter(x, rel, s=14, color=family_colour(fam, families), alpha=0.7,
                       linewidths=0, label=fam)
    for ax, label in zip(axes, ("Non-embedding parameters N", "Tokens per parameter D/N",
                                "Training compute C (FLOPs)")):
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
    _count_axis(axes[0].xaxis, pts.n_params)
    _count_axis(axes[1].xaxis, pts.tokens / pts.n_params)
    axes[0].set_ylabel("Fit − observed (% of loss)")
    axes[0].legend(frameon=False)
    fig.suptitle("Residuals of $L(N, D) = E + A/N^{\\alpha} + B/D^{\\beta}$", y=1.02)
    return fig


@_styled
def savings(an) -> Figure:
    """Savings factor D_baseline / D_challenger vs target loss, with the 95% band."""
    families = an.points.families
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    if not an.savings_curves:
        ax.text(0.5, 0.5, "one family only: nothing to compare", transform=ax.transAxes,
                ha="center", va="center", color="0.4")
    shown, any_band = [1.0], False
    for curve, comp in zip(an.savings_curves, an.summary["comparisons"]):
        colour = family_colour(curve["challenger"], families)
        ok = np.isfinite(curve["value"]) & (curve["value"] > 0)
        label = (f"{curve['challenger']} vs {curve['baseline']} "
                 f"(N = {_human(curve['n_params'])})")
        ax.plot(curve["targets"][ok], curve["value"][ok], color=colour, label=label)
        shown += curve["value"][ok].tolist()
        band = np.isfinite(curve["lo"]) & np.isfinite(curve["hi"]) & (curve["lo"] > 0)
        ax.fill_between(curve["targets"][band], curve["lo"][band], curve["hi"][band],
                        color=colour, alpha=0.18, linewidth=0)
        any_band = any_band or bool(band.any())
        shown += curve["lo"][band].tolist() + curve["hi"][band].tolist()
        sf = comp["savings_factor"]
        if np.isfinite(sf["value"]) and sf["value"] > 0:
            ax.scatter([sf["target_loss"]], [sf["value"]], color=colour, edgecolor="black",
                       zorder=3, s=30)
            ax.annotate(f"{sf['value']:.2f} at the default target",
                        (sf["target_loss"], sf["value"]), xytext=(6, -14),
                        textcoords="offset points", fontsize=8, color="0.25")
    ax.axhline(1.0, color="0.3", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    lo, hi = min(shown), max(shown)
    ticks = [t for t in (0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 20, 50, 100)
             if lo / 1.2 <= t <= hi * 1.2]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("Target validation loss (nats/token)")
    ax.set_ylabel("Savings factor $D_{baseline} / D_{challenger}$")
    ax.set_title("Token savings at equal N (above 1: challenger needs fewer tokens)")
    handles, _ = ax.get_legend_handles_labels()
    if any_band:
        handles.append(Patch(facecolor="0.55", alpha=0.3, label="95% bootstrap band"))
    ax.legend(handles=handles, frameon=False)
    return fig


@_styled
def bootstrap_pairs(an) -> Figure:
    """Pairwise scatter of bootstrap fits (E, log10 A, log10 B, alpha, beta) per family."""
    families = an.points.families
    names = ("E", "log$_{10}$ A", "log$_{10}$ B", "$\\alpha$", "$\\beta$")
    k = len(names)
    fig = Figure(figsize=(8.0, 8.0))
    axes = fig.subplots(k, k)
    # A fit that drives A or B to 0 has log10 = -inf; such replicates cannot be drawn on these
    # axes, so they are left out and counted in a note rather than crashing the histogram.
    samples_of = {}
    for f in families:
        if an.boot_laws.get(f):
            samples = np.array([_law_vector(b) for b in an.boot_laws[f]])
            samples_of[f] = samples[np.all(np.isfinite(samples), axis=1)]
    dropped = {f: len(an.boot_laws[f]) - len(s) for f, s in samples_of.items()}
    samples_of = {f: s for f, s in samples_of.items() if len(s)}
    pooled = list(samples_of.values())
    if not pooled:
        for ax in axes.ravel():
            ax.set_visible(False)
        msg = ("no bootstrap replicates (--bootstrap 0)" if not dropped else
               "every bootstrap replicate has A or B = 0 (log10 = -inf); nothing to draw")
        fig.text(0.5, 0.5, msg, ha="center", va="center", color="0.4")
        return fig
    bins = [np.histogram_bin_edges(np.concatenate(pooled)[:, i], bins=24) for i in range(k)]
    for fam in families:
        if fam not in samples_of:
            continue
        colour = family_colour(fam, families)
        samples = samples_of[fam]
        point = _law_vector(an.summary["families"][fam]["law"])
        for i in range(k):
            for j in range(k):
                ax = axes[i, j]
                if i == j:
                    ax.hist(samples[:, i], bins=bins[i], color=colour, alpha=0.45)
                    if np.isfinite(point[i]):
                        ax.axvline(point[i], color=colour, linewidth=1.2)
                elif i > j:
                    ax.scatter(samples[:, j], samples[:, i], s=5, color=colour, alpha=0.45,
                               linewidths=0)
                    ax.scatter([point[j]], [point[i]], marker="x", s=30, color=colour)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if i < j:
                ax.set_visible(False)
                continue
            ax.tick_params(labelsize=7)
            ax.grid(False)
            ax.set_xlabel(names[j] if i == k - 1 else "")
            ax.set_ylabel(names[i] if j == 0 and i > 0 else "")
            if i != k - 1:
                ax.set_xticklabels([])
            if j != 0 or i == 0:
                ax.set_yticklabels([])
    handles = [Line2D([], [], marker="o", linestyle="", color=family_colour(f, families),
                      label=f) for f in families if an.boot_laws.get(f)]
    fig.legend(handles=handles, loc="upper right", frameon=False, bbox_to_anchor=(0.9, 0.8),
               fontsize=11, title="family")
    n_boot = an.summary["settings"]["n_bootstrap"]
    fig.suptitle(f"Bootstrap fits over runs ({n_boot} replicates; x: full-data fit)", y=0.93)
    notes = [f"{f}: {n} with A or B = 0 not shown" for f, n in dropped.items() if n]
    if notes:
        fig.text(0.5, 0.02, "; ".join(notes), ha="center", fontsize=8, color="0.4")
    return fig


def _law_vector(law) -> list[float]:
    with np.errstate(divide="ignore"):  # A or B = 0 gives -inf, filtered by the caller
        return [law["E"], np.log10(law["A"]), np.log10(law["B"]), law["alpha"], law["beta"]]


def save_all(an, out_dir) -> list[str]:
    """Write every figure as PNG and PDF into out_dir; returns the file names."""
    out_dir = Path(out_dir)
    written = []
    makers = {"loss_vs_flops": loss_vs_flops, "isoflop": isoflop, "residuals": residuals,
              "savings": savings, "bootstrap_pairs": bootstrap_pairs}
    with matplotlib.rc_context(STYLE):
        for name in FIGURES:
            fig = makers[name](an)
            for ext, dpi in (("png", 200), ("pdf", None)):
                fig.savefig(out_dir / f"{name}.{ext}", dpi=dpi)
                written.append(f"{name}.{ext}")
    return written
