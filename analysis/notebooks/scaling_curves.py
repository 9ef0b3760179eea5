# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Scaling curves: which family scales better?
#
# Loads sweep result rows (JSONL, one row per post-decay checkpoint), fits
# L(N, D) = E + A/N^alpha + B/D^beta and the compute frontier per family, and plots them.
# The numbers and figures are the same as `hybrid-jax fit RESULTS` writes; this notebook
# only loads, fits and plots.
#
# Inputs, from the environment:
# - `HYBRID_JAX_RESULTS`: the results file (default `results/scaling_points.jsonl`,
#   relative to the directory the notebook runs in);
# - `HYBRID_JAX_BOOTSTRAP`: bootstrap replicates (default 100);
# - `HYBRID_JAX_VAL_SET`: validation set to fit (default: the only one in the file).

# %%
# %matplotlib inline
import os
from pathlib import Path

from IPython.display import Markdown, display

from analysis import plots
from analysis.pipeline import analyse
from analysis.report import render_markdown
from analysis.results import load_results

RESULTS = Path(os.environ.get("HYBRID_JAX_RESULTS", "results/scaling_points.jsonl"))
N_BOOTSTRAP = int(os.environ.get("HYBRID_JAX_BOOTSTRAP", "100"))
VAL_SET = os.environ.get("HYBRID_JAX_VAL_SET") or None

results = load_results(RESULTS, val_set=VAL_SET)
print(f"{len(results.points)} points from {RESULTS}; families {results.points.families}")

# %%
an = analyse(results, n_bootstrap=N_BOOTSTRAP, seed=0)
display(Markdown(render_markdown(an.summary, figures=False)))

# %%
plots.loss_vs_flops(an)

# %%
plots.savings(an)

# %%
plots.isoflop(an)

# %%
plots.residuals(an)

# %%
plots.bootstrap_pairs(an)
