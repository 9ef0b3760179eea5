"""A model's weights on disk: read from a training run, write and read a model directory.

Three kinds of path hold a model:
  * a run directory (`config.json` + `checkpoints/STEP/`): its newest checkpoint that passes
    its checksums;
  * one of its checkpoints, `RUN/checkpoints/STEP`;
  * a model directory (`model.json` + `state/`, an orbax checkpoint of {"params": ...} with a
    sha256 manifest), as `hybrid-jax import` writes it.
Only the parameters are read (orbax's partial restore): never the optimizer state, which is
twice their size. Parameters are fp32, as training keeps them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from hybrid_jax.config import ModelConfig
from hybrid_jax.models.lm import LM, build_model
from hybrid_jax.sharding import param_plan
from hybrid_jax.storage.paths import absolute, as_path
from hybrid_jax.train.checksums import verify_checksums, write_checksums

MODEL_JSON = "model.json"
FORMAT = "hybrid-jax-model"


class ModelCheckpointError(ValueError):
    """A path holds no readable model; the message names the path and what is wrong."""


def abstract_params(cfg: ModelConfig, sharding: Any = None) -> dict:
    """ShapeDtypeStructs of `cfg`'s parameters (a pure dict), each placed as `sharding` says: a
    jax Mesh (each parameter split by the default logical rules, as training places it), a jax
    Sharding for all, a function of the logical axes (tuple of names) to a Sharding, or None
    for the first local device."""
    state = nnx.state(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)
    shapes = nnx.to_pure_dict(state)
    if isinstance(sharding, jax.sharding.Mesh):
        shardings = param_plan(state, sharding).shardings
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            shapes, shardings)
    axes = nnx.to_pure_dict(jax.tree.map(lambda v: v.get_metadata().get("out_sharding"), state,
                                         is_leaf=lambda x: isinstance(x, nnx.Variable)))
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def place(x, ax):
        s = sharding(tuple(ax)) if callable(sharding) else sharding
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)

    return jax.tree.map(place, shapes, axes, is_leaf=lambda x: isinstance(x, tuple))


def locate(path: str | os.PathLike) -> tuple[ModelConfig, epath.Path, dict]:
    """(config, orbax directory holding {"params"}, provenance) of the model at `path` (a
    local path or gs://)."""
    path = as_path(path)
    if (path / MODEL_JSON).is_file():
        doc = json.loads((path / MODEL_JSON).read_text())
        if doc.get("format") != FORMAT:
            raise ModelCheckpointError(f"{path / MODEL_JSON}: format {doc.get('format')!r}, "
                                       f"expected {FORMAT!r}")
        return ModelConfig(**doc["model"]), path, {"model_dir": str(path), **doc.get("source", {})}
    if path.parent.name == "checkpoints" and path.name.isdigit():
        run_dir, steps = path.parent.parent, [int(path.name)]
    elif (path / "config.json").is_file():
        run_dir = path
        ckpts = path / "checkpoints"
        steps = sorted((int(p.name) for p in ckpts.iterdir() if p.name.isdigit()),
                       reverse=True) if ckpts.is_dir() else []
        if not steps:
            raise ModelCheckpointError(f"{path}: a run directory with no checkpoint")
    else:
        raise ModelCheckpointError(f"{path}: neither a run directory (config.json), one of its "
                                   f"checkpoints (RUN/checkpoints/STEP) nor a model directory "
                                   f"({MODEL_JSON})")
    try:
        cfg = ModelConfig(**_with_late_fields(
            json.loads((run_dir / "config.json").read_text())["config"]["model"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelCheckpointError(f"{run_dir / 'config.json'}: unreadable run config "
                                   f"({type(e).__name__}: {e})") from None
    problems = []
    for step in steps:
        step_dir = run_dir / "checkpoints" / str(step)
        problem = verify_checksums(step_dir)
        if problem is None:
            return cfg, step_dir, {"run_dir": str(run_dir), "step": step}
        problems.append(f"step {step}: {problem}")
    raise ModelCheckpointError(f"{run_dir}: no checkpoint passes its checksums "
                               f"({'; '.join(problems)})")


def _with_late_fields(model: dict) -> dict:
    """A run's model config as its run ran it: a field added since the run was written takes
    the value that reproduces the code before the field existed (train.config.LATE_FIELDS)."""
    from hybrid_jax.train.config import LATE_FIELDS

    late = {k.split(".", 1)[1]: v for k, v in LATE_FIELDS.items() if k.startswith("model.")}
    return {**late, **model}


def check_architecture(path: Path, found: ModelConfig | None, expect: ModelConfig) -> None:
    """Refuse (ModelCheckpointError) unless the model at `path` (of config `found`, located if
    None) has `expect`'s architecture (ModelConfig.architecture)."""
    found = locate(path)[0] if found is None else found
    mine, theirs = expect.architecture(), found.architecture()
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ModelCheckpointError(
            f"{path}: weights of another architecture; differs in " + ", ".join(
                f"{k} ({theirs.get(k)!r} there, {mine.get(k)!r} here)" for k in diff[:4]))


def load_params(path: Path, sharding: Any = None, *, target: dict | None = None,
                expect: ModelConfig | None = None) -> tuple[ModelConfig, dict, dict]:
    """(config, parameters as a pure dict of jax arrays, provenance) of the model at `path`,
    placed as `sharding` says (see abstract_params) or as the ShapeDtypeStructs of `target`.
    With `expect`, weights of another architecture (ModelConfig.architecture) are refused."""
    cfg, directory, source = locate(path)
    if expect is not None:
        check_architecture(path, cfg, expect)
    if (directory / MODEL_JSON).is_file():
        problem = verify_checksums(directory / "state")
        if problem:
            raise ModelCheckpointError(f"{directory}: {problem}")
    target = {"params": target if target is not None else abstract_params(cfg, sharding)}
    try:
        restored = ocp.PyTreeCheckpointer().restore(
            absolute(directory / "state"),
            args=ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                        restore_args=ocp.checkpoint_utils.construct_restore_args(
                                            target)))
    except Exception as e:  # noqa: BLE001 - one line naming the path, the cause chained
        raise ModelCheckpointError(f"{directory}: the parameters do not restore for this "
                                   f"model config ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''})") from e
    return cfg, restored["params"], source


def load_model(path: Path) -> tuple[LM, dict]:
    """(the model with its weights, provenance) at `path`, on the first local device."""
    cfg, params, source = load_params(path)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(cfg)))
    return nnx.merge(graphdef, params), source


def save_model_dir(out: Path, cfg: ModelConfig, params: dict, source: dict) -> None:
    """Write model directory `out` (refused if it exists and is not empty): model.json, then
    state/ with its manifest. It is complete only when model.json exists, written last."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ModelCheckpointError(f"{out}: exists and is not empty; nothing was written")
    out.mkdir(parents=True, exist_ok=True)
    state = (out / "state").absolute()
    try:
        ocp.PyTreeCheckpointer().save(state, args=ocp.args.PyTreeSave({"params": params}))
        write_checksums(state)
        tmp = out / f".{MODEL_JSON}.tmp"
        tmp.write_text(json.dumps({"format": FORMAT, "model": cfg.to_dict(), "source": source},
                                  indent=1))
        tmp.replace(out / MODEL_JSON)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a half-written directory is no model
        raise
