"""The Chinchilla reference points (Epoch AI's extraction) and Epoch's fit of them.

Why: reproducing Epoch's replication (Besiroglu et al. 2024, "Chinchilla Scaling: A
replication attempt") is the acceptance test of our fitter, and a reference anyone can
rerun. The CSV holds 245 (N, training FLOP, loss) points read off the Chinchilla paper's
figure; D = FLOP / (6 N). Like Epoch we drop the 5 highest-loss points, leaving 240.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

# Epoch AI's fit with a summed Huber (delta = 1e-3) objective and the 4,500-start grid,
# with their bootstrap 95% intervals (docs/scaling-recipe.md).
EPOCH_FIT = {"A": 477.8, "B": 2143.0, "E": 1.8172, "alpha": 0.3473, "beta": 0.3672}
EPOCH_CI = {"E": (1.77, 1.87), "alpha": (0.32, 0.37), "beta": (0.33, 0.42)}
N_DROPPED = 5
CSV_NAME = "chinchilla_svg_extracted.csv"


def default_csv_path() -> Path:
    """$HYBRID_JAX_CHINCHILLA_CSV, else the copy shipped in analysis/data/ (Epoch AI's
    extraction, also in the project's shared/data; shipped so a bare clone can test the fit)."""
    if os.environ.get("HYBRID_JAX_CHINCHILLA_CSV"):
        return Path(os.environ["HYBRID_JAX_CHINCHILLA_CSV"])
    return Path(__file__).resolve().parent / "data" / CSV_NAME


def load_chinchilla(path=None, drop_highest: int = N_DROPPED):
    """(N, D, loss) arrays, minus the `drop_highest` highest-loss points."""
    path = Path(path) if path is not None else default_csv_path()
    if not path.is_file():
        raise FileNotFoundError(f"Chinchilla CSV not found: {path}; set "
                                "HYBRID_JAX_CHINCHILLA_CSV")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = np.sort(np.argsort(loss, kind="stable")[: len(loss) - drop_highest])
    return n[keep], c[keep] / (6.0 * n[keep]), loss[keep]
