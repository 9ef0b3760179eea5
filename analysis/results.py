"""Load and validate scaling-point result rows (JSONL), the only input the analysis reads.

Each line is one post-decay checkpoint of one run:

    {"run_id": str, "family": str, "n_params": int, "n_params_total": int, "tokens": int,
     "flops": float, "val": {"<set>": {"loss": float, "bpb": float}, ...},
     "git_sha": str, "versions": {...}, "device_kind": str, "size": str (optional),
     ...extra keys allowed}

n_params is the non-embedding N used in the fits, tokens is D and flops is the exact
training compute C from the training code's FLOP counter (not 6ND). A run (run_id)
contributes several points: same N, one per WSD-S decay. The optional "size" is the
ladder's size label (e.g. "d352"); runs of different families that share it are the
same rung of the ladder (their N differ, since the mixers differ), which is how
`analysis.paper` matches families point by point. Rows without it load with size "".

Why so strict: a silently skipped or mistyped row moves a fitted exponent without any
sign of it, so every problem is an error that names the line and the field.

Validation-set choice (`val_set`): the name of a set present in every row; None, which
works only when the rows share exactly one set; or "mean", the arithmetic mean of the
per-set losses over the sets common to every row (a cheap multi-domain average; each
set counts equally however many tokens it has).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

MEAN_OVER_SETS = "mean"
_REQUIRED = {
    "run_id": str, "family": str, "n_params": int, "n_params_total": int, "tokens": int,
    "flops": float, "val": dict, "git_sha": str, "versions": dict, "device_kind": str,
}


class ResultsError(ValueError):
    """Bad or unusable result rows; the message names the line and field."""


@dataclass(frozen=True)
class Points:
    """Scaling points as parallel arrays (one entry per row).

    size holds the ladder size labels ("" for an unlabelled row), or is None for points
    built without them (tests, the Chinchilla reference data).
    """

    run_id: np.ndarray
    family: np.ndarray
    n_params: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    size: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    def take(self, idx) -> "Points":
        fields = {k: getattr(self, k) for k in _POINT_FIELDS}
        return Points(**{k: None if v is None else v[idx] for k, v in fields.items()})

    def family_points(self, family: str) -> "Points":
        return self.take(np.flatnonzero(self.family == family))

    @property
    def families(self) -> list[str]:
        return sorted(set(self.family.tolist()))

    @property
    def runs(self) -> list[str]:
        return sorted(set(self.run_id.tolist()))


_POINT_FIELDS = ("run_id", "family", "n_params", "tokens", "flops", "loss", "size")


@dataclass(frozen=True)
class ResultSet:
    """Validated points plus the provenance the report records."""

    points: Points
    val_set: str
    path: str
    git_shas: list[str]
    device_kinds: list[str]
    versions: list[dict]


def load_results(path, val_set: str | None = None) -> ResultSet:
    """Read a JSONL results file (local or gs://); raise ResultsError naming the first
    problem."""
    from hybrid_jax.storage.paths import as_path

    try:
        path = as_path(path)
    except (TypeError, ValueError) as err:
        raise ResultsError(f"results path: {err}") from None
    if not path.is_file():
        raise ResultsError(f"results file not found: {path}")
    rows = []
    with path.open() as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ResultsError(f"{path}: line {line_no}: not valid JSON ({err.msg})") from None
            rows.append((line_no, row))
    if not rows:
        raise ResultsError(f"{path}: no result rows (the file is empty)")
    return rows_to_result_set(rows, val_set=val_set, source=str(path))


def rows_to_result_set(rows, *, val_set: str | None = None, source: str = "<rows>") -> ResultSet:
    """Validate (line_no, row) pairs (or plain rows, numbered from 1) into a ResultSet."""
    numbered = [r if isinstance(r, tuple) else (i, r) for i, r in enumerate(rows, start=1)]
    if not numbered:
        raise ResultsError(f"{source}: no result rows")
    for line_no, row in numbered:
        _check_row(row, line_no, source)
    _check_consistency(numbered, source)
    chosen = _choose_val_set(numbered, val_set, source)
    common = sorted(set.intersection(*(set(r["val"]) for _, r in numbered)))
    losses = [_row_loss(row, chosen, common) for _, row in numbered]
    points = Points(
        run_id=np.array([r["run_id"] for _, r in numbered]),
        family=np.array([r["family"] for _, r in numbered]),
        n_params=np.array([r["n_params"] for _, r in numbered], dtype=np.float64),
        tokens=np.array([r["tokens"] for _, r in numbered], dtype=np.float64),
        flops=np.array([r["flops"] for _, r in numbered], dtype=np.float64),
        loss=np.array(losses, dtype=np.float64),
        size=np.array([r.get("size", "") for _, r in numbered], dtype=str),
    )
    return ResultSet(
        points=points, val_set=chosen, path=source,
        git_shas=sorted({r["git_sha"] for _, r in numbered}),
        device_kinds=sorted({r["device_kind"] for _, r in numbered}),
        versions=_unique_dicts(r["versions"] for _, r in numbered),
    )


def _check_row(row, line_no, source):
    where = f"{source}: line {line_no}"
    if not isinstance(row, dict):
        raise ResultsError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key, kind in _REQUIRED.items():
        if key not in row:
            raise ResultsError(f"{where}: missing field {key!r}")
        value = row[key]
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise ResultsError(f"{where}: field {key!r} must be {kind.__name__}, "
                               f"got {type(value).__name__} ({value!r:.60})")
    for key in ("run_id", "family"):
        if not row[key].strip():
            raise ResultsError(f"{where}: field {key!r} is empty")
    if "size" in row and not (isinstance(row["size"], str) and row["size"].strip()):
        raise ResultsError(f"{where}: optional field 'size' must be a non-empty string, "
                           f"got {row['size']!r:.60}")
    for key in ("n_params", "n_params_total", "tokens", "flops"):
        if not (math.isfinite(row[key]) and row[key] > 0):
            raise ResultsError(f"{where}: field {key!r} must be positive, got {row[key]!r}")
    if row["n_params_total"] < row["n_params"]:
        raise ResultsError(f"{where}: n_params_total ({row['n_params_total']}) is smaller than "
                           f"the non-embedding n_params ({row['n_params']})")
    if not row["val"]:
        raise ResultsError(f"{where}: field 'val' has no validation sets")
    for name, metrics in row["val"].items():
        if not isinstance(metrics, dict):
            raise ResultsError(f"{where}: val[{name!r}] must be an object with 'loss' and 'bpb'")
        for metric in ("loss", "bpb"):
            v = metrics.get(metric)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) and v > 0):
                raise ResultsError(f"{where}: val[{name!r}][{metric!r}] must be a positive "
                                   f"finite number, got {v!r}")


def _check_consistency(numbered, source):
    per_run = {}
    sizes = {}
    seen = {}
    for line_no, row in numbered:
        key = (row["family"], row["n_params"])
        first = per_run.setdefault(row["run_id"], (line_no, key))
        if first[1] != key:
            raise ResultsError(
                f"{source}: line {line_no}: run {row['run_id']!r} has family/n_params {key}, "
                f"but line {first[0]} gave {first[1]}; one run is one model")
        size = sizes.setdefault(row["run_id"], (line_no, row.get("size")))
        if size[1] != row.get("size"):
            raise ResultsError(
                f"{source}: line {line_no}: run {row['run_id']!r} has size label "
                f"{row.get('size')!r}, but line {size[0]} gave {size[1]!r}; one run is one model")
        point = (row["run_id"], row["tokens"])
        if point in seen:
            raise ResultsError(f"{source}: line {line_no}: duplicate point (run {row['run_id']!r}, "
                               f"tokens {row['tokens']}) already on line {seen[point]}")
        seen[point] = line_no


def _choose_val_set(numbered, val_set, source):
    common = set.intersection(*(set(r["val"]) for _, r in numbered))
    if val_set == MEAN_OVER_SETS:
        if not common:
            raise ResultsError(f"{source}: no validation set is present in every row, so "
                               "there is nothing to average")
        return MEAN_OVER_SETS
    if val_set is None:
        if len(common) == 1:
            return next(iter(common))
        if not common:
            raise ResultsError(f"{source}: no validation set is present in every row")
        raise ResultsError(f"{source}: rows share several validation sets {sorted(common)}; "
                           f"choose one with --val-set NAME, or --val-set {MEAN_OVER_SETS} "
                           "to average them")
    for line_no, row in numbered:
        if val_set not in row["val"]:
            raise ResultsError(f"{source}: line {line_no}: validation set {val_set!r} missing "
                               f"(this row has {sorted(row['val'])})")
    return val_set


def _row_loss(row, chosen, common):
    if chosen == MEAN_OVER_SETS:
        return float(np.mean([row["val"][name]["loss"] for name in common]))
    return float(row["val"][chosen]["loss"])


def _unique_dicts(dicts):
    out = []
    for d in dicts:
        if d not in out:
            out.append(d)
    return out
