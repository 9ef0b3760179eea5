"""Ladders: families x sizes x D/N decay points, read from YAML and expanded into RunConfigs.

A ladder file (experiments/ladders/*.yaml) has these top-level keys:

    name: cpu-demo                  # default: the file name
    description: ...
    families: [transformer, hybrid] # or {family: {model: {...}, recipe: {...}, overrides: ...}}
    sizes:                          # name -> ModelConfig fields, plus optional keys
      s1: {d_model: 32, n_layers: 4, n_heads: 2, mlp_hidden: 96}
      60m: {preset: "{family}_60m", recipe: {lr: 1e-3}, overrides: [optim.clip_norm=0.5]}
    decay_ratios: [2.5, 5, 10, 20]  # D/N at the bottom of each WSD-S decay
    seq_len: 128
    model: {vocab_size: 264, ...}   # ModelConfig fields shared by every run
    recipe: {...}                   # hybrid_jax.sweep.recipe.Recipe fields
    run: {data: {...}, eval: {...}, checkpoint: {...}, log: {...}}   # RunConfig sections
    overrides: [key.sub=value, ...] # applied last to every run (a list, or a mapping)
    plan_mfu: {transformer: 0.2}    # measured MFU per family, for `sweep plan` estimates only
    evals: {ppl: {...}, long_context: {...}}   # at every scaling point, into the rows
                                    # (hybrid_jax/sweep/evals.py); not part of run identity

A run's model is: the size's preset (if any) <- ladder `model` <- family `model` <- the size's
fields <- `model.*` overrides, with `family` set. N is counted on that model, the recipe turns N
into batch, lr, beta2, warmup and decay points, and the other overrides apply last (they win
over the recipe). `run` may not set what the recipe owns (batch, seq_len, optimizer, schedule).

Identity: RunConfig.config_hash() of the resolved config; the run lives in
{root}/runs/{family}-{size}-{hash8} (RunConfig.run_dir with train.runs_root = {root}/runs), so
reordering the ladder's lists changes nothing and any change to what a run computes changes its
id. Unless the ladder sets train.seed, the init seed is derived from the hash of the config with
seed 0; data.seed (the batch order) stays the ladder's, so all runs see the same batches.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.resources
import json
import os
import re
from pathlib import Path
from typing import Any

from etils import epath

from hybrid_jax.config import FAMILIES, ConfigError, ModelConfig
from hybrid_jax.flops import param_count
from hybrid_jax.overrides import (OverrideError, from_dict, load_yaml_mapping, parse_override,
                                  unknown_key_error)
from hybrid_jax.storage.paths import as_path
from hybrid_jax.sweep.evals import EvalsError, parse_evals
from hybrid_jax.sweep.recipe import Hyper, Recipe, resolve

# The shipped ladders are package data of `experiments` (setup.cfg), which holds no code: they
# are the lab's, found here so that `hybrid-jax sweep run cpu-demo` works from any directory.
LADDER_DIR = Path(str(importlib.resources.files("experiments") / "ladders"))
LADDER_KEYS = ("name", "description", "families", "sizes", "decay_ratios", "seq_len", "model",
               "recipe", "run", "overrides", "plan_mfu", "evals")
RECIPE_OWNED = ("train.global_batch", "train.seq_len", "optim.lr", "optim.b1", "optim.b2",
                "optim.weight_decay", "schedule")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class LadderError(ValueError):
    """A ladder file is malformed; the message names the key."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    run_id: str
    ladder: str
    family: str
    size: str
    config: Any                     # hybrid_jax.train.config.RunConfig
    hyper: Hyper
    n_params: int                   # non-embedding N
    n_params_total: int
    evals: dict = dataclasses.field(default_factory=dict)  # sweep/evals.py, canonical

    @property
    def run_dir(self) -> epath.Path:
        return self.config.run_dir

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "ladder": self.ladder, "family": self.family,
                "size": self.size, "n_params": self.n_params,
                "n_params_total": self.n_params_total, "ratios": list(self.hyper.ratios),
                "config_hash": self.config.config_hash(), "config": self.config.to_dict(),
                **({"evals": self.evals} if self.evals else {})}


@dataclasses.dataclass(frozen=True)
class InvalidRun:
    """A (family, size) whose config cannot be built; reported, never trained."""

    family: str
    size: str
    error: str


@dataclasses.dataclass(frozen=True)
class Ladder:
    name: str
    path: Path
    description: str
    families: dict[str, dict]
    sizes: dict[str, dict]
    decay_ratios: tuple[float, ...]
    seq_len: int
    model: dict
    recipe: dict
    run: dict
    overrides: tuple[str, ...]
    plan_mfu: dict = dataclasses.field(default_factory=dict)  # family -> measured MFU (plan only)
    evals: dict = dataclasses.field(default_factory=dict)     # sweep/evals.py, canonical

    @property
    def store(self) -> str:
        return str(self.run.get("data", {}).get("store", ""))

    def expand(self, root: str | os.PathLike, only: list[str] | None = None
               ) -> tuple[list[RunSpec], list[InvalidRun]]:
        """Every (family, size) run, in ladder order, filtered by `only` patterns
        ("family/size", "family", "*/size"; shell wildcards)."""
        from fnmatch import fnmatchcase

        runs, invalid = [], []
        for family in self.families:
            for size in self.sizes:
                if only and not any(_matches(p, family, size, fnmatchcase) for p in only):
                    continue
                try:
                    runs.append(self.build(family, size, root))
                except (ConfigError, OverrideError, KeyError, TypeError, ValueError) as e:
                    invalid.append(InvalidRun(family, size, _message(e)))
        return runs, invalid

    def build(self, family: str, size: str, root: str | os.PathLike) -> RunSpec:
        from hybrid_jax.train.config import load_config

        fam, sz = self.families[family], dict(self.sizes[size])
        preset = sz.pop("preset", None)
        size_recipe, size_overrides = sz.pop("recipe", {}) or {}, sz.pop("overrides", ()) or ()
        overrides = [*self.overrides, *_override_list(fam.get("overrides"), f"families.{family}"),
                     *_override_list(size_overrides, f"sizes.{size}")]
        parsed = [parse_override(o) for o in overrides]
        model_over = {k[len("model."):]: v for k, v in parsed if k.startswith("model.")}
        if "family" in model_over:
            raise LadderError("overrides: model.family is set by the ladder's families")
        model = {**_preset_fields(preset, family), **self.model, **(fam.get("model") or {}),
                 **sz, **model_over, "family": family}
        model_cfg = from_dict(ModelConfig, model, prefix="model.")
        counts = param_count(model_cfg)
        recipe = from_dict(Recipe, {**self.recipe, **(fam.get("recipe") or {}), **size_recipe},
                           prefix="recipe.")
        hyper = resolve(recipe, counts.non_embedding, self.seq_len, self.decay_ratios)
        data = _deep_merge(copy.deepcopy(self.run), hyper.run_sections())
        data["model"] = model_cfg
        data["train"] = {**data["train"], "name": f"{family}-{size}",
                         "runs_root": str(as_path(root) / "runs")}
        rest = [o for o, (k, _) in zip(overrides, parsed) if not k.startswith("model.")]
        seeded = "seed" in self.run.get("train", {}) or any(k == "train.seed" for k, _ in parsed)
        if not seeded:
            data["train"]["seed"] = 0
            data["train"]["seed"] = derived_seed(load_config(copy.deepcopy(data), rest))
        cfg = load_config(data, rest)
        return RunSpec(run_id=cfg.run_dir.name, ladder=self.name, family=family, size=size,
                       config=cfg, hyper=hyper, n_params=counts.non_embedding,
                       n_params_total=counts.total, evals=self.evals)


def derived_seed(cfg) -> int:
    """A seed from the config's hash (computed with seed 0): never from a list position."""
    return int(hashlib.sha256(cfg.config_hash().encode()).hexdigest()[:8], 16) % (2**31 - 1)


def _matches(pattern: str, family: str, size: str, fnmatchcase) -> bool:
    fam_pat, _, size_pat = pattern.partition("/")
    return fnmatchcase(family, fam_pat or "*") and fnmatchcase(size, size_pat or "*")


def _preset_fields(preset: str | None, family: str) -> dict:
    if not preset:
        return {}
    from hybrid_jax.presets import get_preset

    return get_preset(preset.format(family=family)).to_dict()


def _deep_merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _override_list(value: Any, where: str) -> list[str]:
    if not value:
        return []
    if isinstance(value, dict):
        return [f"{k}={json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise LadderError(f"{where}.overrides: expected a list of key=value strings or a mapping, "
                      f"got {value!r}")


def _message(e: BaseException) -> str:
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)


# ---- loading --------------------------------------------------------------------------------
def shipped_ladders() -> list[str]:
    return sorted(p.stem for p in LADDER_DIR.glob("*.yaml"))


def ladder_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if path.is_dir():
            raise LadderError(f"{path} is a directory, not a ladder file")
        if not path.is_file():
            raise FileNotFoundError(f"ladder file {path} does not exist")
        return path
    shipped = LADDER_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    import difflib

    close = difflib.get_close_matches(str(name_or_path), shipped_ladders(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise FileNotFoundError(f"no ladder {str(name_or_path)!r}{hint} (shipped: "
                            f"{', '.join(shipped_ladders())}; or pass a YAML path)")


def load_ladder(name_or_path: str | Path) -> Ladder:
    path = ladder_path(name_or_path)
    data = load_yaml_mapping(path, LadderError)
    for key in data:
        if key not in LADDER_KEYS:
            raise unknown_key_error(key, LADDER_KEYS, "ladder")
    for key in ("families", "sizes", "decay_ratios", "seq_len"):
        if key not in data:
            raise LadderError(f"{path}: missing required key {key!r}")
    families = data["families"]
    if isinstance(families, list):
        families = {f: {} for f in families}
    if not isinstance(families, dict) or not families:
        raise LadderError("families: expected a non-empty list or mapping")
    for fam, entry in families.items():
        if fam not in FAMILIES:
            raise LadderError(f"families: unknown family {fam!r}; expected one of {FAMILIES}")
        entry = families[fam] = entry or {}
        bad = set(entry) - {"model", "recipe", "overrides"}
        if bad:
            raise LadderError(f"families.{fam}: unknown keys {sorted(bad)} "
                              "(allowed: model, recipe, overrides)")
    sizes = data["sizes"]
    if not isinstance(sizes, dict) or not sizes:
        raise LadderError("sizes: expected a non-empty mapping of size name -> model fields")
    for size, entry in sizes.items():
        if not _NAME.match(str(size)):
            raise LadderError(f"sizes: {size!r} is not a safe name ([A-Za-z0-9_.-])")
        if not isinstance(entry, dict):
            raise LadderError(f"sizes.{size}: expected a mapping, got {entry!r}")
    run = data.get("run") or {}
    for key in RECIPE_OWNED:
        section, _, field = key.partition(".")
        if section in run and (not field or field in (run[section] or {})):
            raise LadderError(f"run.{key}: set by the recipe; use `recipe:`, `seq_len:` or "
                              "`overrides:` instead")
    plan_mfu = data.get("plan_mfu") or {}
    if not isinstance(plan_mfu, dict) or any(
            f not in families or not isinstance(v, (int, float)) or not 0 < v <= 1
            for f, v in plan_mfu.items()):
        raise LadderError(f"plan_mfu: expected a mapping of this ladder's families to an MFU in "
                          f"(0, 1], got {plan_mfu!r}")
    try:
        evals = parse_evals(data.get("evals"))
    except EvalsError as e:
        raise LadderError(str(e)) from None
    ratios = data["decay_ratios"]
    if not isinstance(ratios, list) or not ratios:
        raise LadderError("decay_ratios: expected a non-empty list of D/N values")
    return Ladder(name=str(data.get("name", path.stem)), path=path,
                  description=str(data.get("description", "")).strip(), families=families,
                  sizes={str(k): v for k, v in sizes.items()},
                  decay_ratios=tuple(float(r) for r in ratios), seq_len=int(data["seq_len"]),
                  model=dict(data.get("model") or {}), recipe=dict(data.get("recipe") or {}),
                  run=run, overrides=tuple(_override_list(data.get("overrides"), "ladder")),
                  plan_mfu={str(k): float(v) for k, v in plan_mfu.items()}, evals=evals)
