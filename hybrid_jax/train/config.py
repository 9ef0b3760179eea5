"""Run configuration: one frozen dataclass per concern, validated at construction.

A run config is a YAML file whose top-level keys are the sections below (any may be left out),
or a model preset name (`hybrid_tiny`): then the run is `RunConfig(model=get_preset(name))` with
every other section at its defaults, and at least `data.store` and `train.tokens` must be given
as overrides. Points of the schedule are in tokens; `tokens_per_step` converts them to steps.

A run's identity is a hash of its resolved config without the operational sections (mesh,
checkpoint, log, distributed) and fields (run_dir, runs_root, micro_batches) that do not change
what is computed, so a run resumed on another mesh or device count lands in the same directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from etils import epath

from hybrid_jax.config import ConfigError, ModelConfig
from hybrid_jax.distributed import DistributedConfig
from hybrid_jax.overrides import from_dict, load_yaml_mapping, to_dict
from hybrid_jax.storage.paths import as_path

SCHEDULES = ("cosine", "wsd", "wsds", "constant")
MESH_AXES = ("data", "fsdp", "tensor")


def _fail(section: str, field: str, msg: str) -> None:
    raise ConfigError(f"{section}.{field}: {msg}")


def _positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                or not math.isfinite(value):
            _fail(section, name, f"must be a positive finite number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    name: str = "run"
    seed: int = 0                     # parameter init
    tokens: int | None = None         # total training tokens; None: the last schedule.decay_tokens
    global_batch: int = 8             # sequences per optimizer step
    seq_len: int = 64
    micro_batches: int = 1            # gradient accumulation: global_batch is split into this many
    z_loss: float = 1e-5
    runs_root: str = "runs"
    run_dir: str | None = None        # None: {runs_root}/{name}-{hash8}
    # Start from these weights (a model directory, run directory or RUN/checkpoints/STEP;
    # train/weights.py) with a fresh optimizer, instead of a random init. Part of the run's
    # identity: the path names the weights.
    init_from: str | None = None

    def __post_init__(self):
        _positive("train", self, "global_batch", "seq_len", "micro_batches")
        if self.tokens is not None:
            _positive("train", self, "tokens")
        if self.z_loss < 0:
            _fail("train", "z_loss", f"must be >= 0, got {self.z_loss}")
        if self.global_batch % self.micro_batches:
            _fail("train", "micro_batches", f"{self.micro_batches} micro-batches do not divide "
                  f"global_batch={self.global_batch}")
        if not self.name or "/" in self.name:
            _fail("train", "name", f"must be a non-empty name without '/', got {self.name!r}")

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-4
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1         # none on embeddings, norms and per-head scalars
    clip_norm: float = 1.0            # global-norm clipping; 0 disables it

    def __post_init__(self):
        _positive("optim", self, "lr", "eps")
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                _fail("optim", name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.clip_norm < 0:
            bad = "weight_decay" if self.weight_decay < 0 else "clip_norm"
            _fail("optim", bad, f"must be >= 0, got {getattr(self, bad)}")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """cosine: warmup, then cosine to the floor at the end of the run.
    wsd: warmup, stable, then a linear decay over the last `decay_fraction` of the run.
    wsds: warmup, then stable phases each ending in a linear decay that bottoms out at one of
    `decay_tokens` (its length `decay_fraction` of the phase since the previous point); the lr
    then jumps back to the peak. The last decay ends the run.
    constant: warmup, then the peak.
    The floor is `final_lr_ratio` x the peak lr."""

    kind: str = "cosine"
    warmup_tokens: int = 0
    decay_fraction: float = 0.1
    decay_tokens: tuple[int, ...] = ()
    final_lr_ratio: float = 0.0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            _fail("schedule", "kind", f"{self.kind!r} not in {SCHEDULES}")
        if self.warmup_tokens < 0:
            _fail("schedule", "warmup_tokens", f"must be >= 0, got {self.warmup_tokens}")
        if not 0 < self.decay_fraction <= 1:
            _fail("schedule", "decay_fraction", f"must be in (0, 1], got {self.decay_fraction}")
        if not 0 <= self.final_lr_ratio <= 1:
            _fail("schedule", "final_lr_ratio", f"must be in [0, 1], got {self.final_lr_ratio}")
        if self.kind == "wsds":
            if not self.decay_tokens:
                _fail("schedule", "decay_tokens", "wsds needs at least one decay point")
            if any(b <= a for a, b in zip((0,) + self.decay_tokens, self.decay_tokens)):
                _fail("schedule", "decay_tokens",
                      f"must be positive and strictly increasing, got {list(self.decay_tokens)}")
        elif self.decay_tokens:
            _fail("schedule", "decay_tokens", f"only used by kind 'wsds', not {self.kind!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    store: str = ""                   # a token store directory (`hybrid-jax data build`) or olmo:
    seed: int = 0                     # batch order
    max_epochs: float = 4.0           # per component in a mixture
    verify: bool = True               # check the store's sha256 checksums when opening it
    # A mixture instead of `store`: component -> weight (summing to 1), component -> store.
    mix: dict[str, float] = dataclasses.field(default_factory=dict)
    stores: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _positive("data", self, "max_epochs")
        if self.mix and self.store:
            _fail("data", "store", "give data.store or data.mix (with data.stores), not both")
        if set(self.mix) != set(self.stores):
            _fail("data", "stores", f"names {sorted(self.stores)} but data.mix names "
                  f"{sorted(self.mix)}; give one store per mixture component")

    @property
    def store_paths(self) -> tuple[str, ...]:
        """Every store the run reads: data.store, or each mixture component's."""
        return tuple(self.stores[n] for n in sorted(self.stores)) if self.mix else (self.store,)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes; one axis may be -1, "the rest of the devices"."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        sizes = self.shape
        if sizes.count(-1) > 1:
            _fail("mesh", MESH_AXES[sizes.index(-1)], f"only one axis may be -1, got {sizes}")
        for name, size in zip(MESH_AXES, sizes):
            if size != -1 and (not isinstance(size, int) or size < 1):
                _fail("mesh", name, f"must be a positive integer or -1, got {size!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.data, self.fsdp, self.tensor)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    interval_steps: int = 1000
    max_to_keep: int = 3              # latest N; scaling-point checkpoints are kept as well
    async_save: bool = True
    # Resume from this step instead of the newest checkpoint, e.g. when the newest one leads to
    # NaN; checkpoints after it are moved to superseded_checkpoints/. A one-off: drop it after.
    resume_step: int | None = None

    def __post_init__(self):
        _positive("checkpoint", self, "interval_steps", "max_to_keep")
        if self.resume_step is not None:
            _positive("checkpoint", self, "resume_step")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    interval_tokens: int = 0          # 0: only at scaling points (the end of every decay)
    sets: tuple[str, ...] = ()        # validation set names; empty: all of the store's sets
    max_tokens: int | None = None     # per set; None: the whole set
    batch_size: int | None = None     # None: global_batch // micro_batches

    def __post_init__(self):
        if self.interval_tokens < 0:
            _fail("eval", "interval_tokens", f"must be >= 0, got {self.interval_tokens}")
        if self.max_tokens is not None:
            _positive("eval", self, "max_tokens")
        if self.batch_size is not None:
            _positive("eval", self, "batch_size")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = True
    progress: str = "auto"            # auto: a progress bar on a terminal, log lines otherwise
    log_every_steps: int = 10         # plain log lines (every step always goes to metrics.jsonl)

    def __post_init__(self):
        if self.progress not in ("auto", "bar", "lines"):
            _fail("log", "progress", f"{self.progress!r} not in ('auto', 'bar', 'lines')")
        _positive("log", self, "log_every_steps")


OPERATIONAL_SECTIONS = ("mesh", "checkpoint", "log", "distributed")
OPERATIONAL_FIELDS = ("train.run_dir", "train.runs_root", "train.micro_batches")
# Fields added after results were published, with the default that reproduces what runs did
# before the field existed. At that default they are left out of a run's identity, so existing
# run ids (and the committed results keyed by them) stay valid; any other value changes the id.
LATE_FIELDS = {"model.gdn_precision": "highest", "model.unembed_grad_dtype": "float32",
               "model.gdn_norm_eps": 1e-6, "model.rope_layers": "AS", "model.layers": "",
               "train.init_from": None, "data.mix": {}, "data.stores": {}}
# Fields removed after results were published, with the one value every published run had. The
# identity puts them back at that value, so removing a field orphans no run id. train.debug_nan_step
# was a NaN-injection hook for tests; tests now inject NaN through the batch source.
REMOVED_FIELDS = {"train.debug_nan_step": None}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)

    def __post_init__(self):
        s, t = self.schedule, self.train
        if t.tokens is None and s.kind != "wsds":
            _fail("train", "tokens", f"is required for schedule.kind={s.kind!r} "
                  "(only wsds derives it, from its last decay point)")
        if s.kind == "wsds" and t.tokens is not None and t.tokens != s.decay_tokens[-1]:
            _fail("train", "tokens", f"{t.tokens} differs from the last schedule.decay_tokens "
                  f"{s.decay_tokens[-1]}, where a wsds run ends; leave train.tokens unset")
        if self.total_steps < 1:
            _fail("train", "tokens", f"{self.total_tokens} tokens are less than one step of "
                  f"{t.tokens_per_step} tokens")

    # ---- derived values -------------------------------------------------------------------
    @property
    def total_tokens(self) -> int:
        return self.train.tokens if self.train.tokens is not None else self.schedule.decay_tokens[-1]

    @property
    def total_steps(self) -> int:
        return round(self.total_tokens / self.train.tokens_per_step)

    @property
    def eval_batch_size(self) -> int:
        return self.eval.batch_size or self.train.global_batch // self.train.micro_batches

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def identity(self) -> dict[str, Any]:
        d = self.to_dict()
        for section in OPERATIONAL_SECTIONS:
            d.pop(section)
        for key in OPERATIONAL_FIELDS:
            section, name = key.split(".")
            d[section].pop(name)
        for key, default in LATE_FIELDS.items():
            section, name = key.split(".")
            if d[section].get(name) == default:
                d[section].pop(name)
        if d["model"]["compute_dtype"] == "float32":  # it changes nothing there (models/lm.py)
            d["model"].pop("unembed_grad_dtype", None)
        if "G" not in self.model.layer_types:  # nor does a GDN field in a model without GDN
            d["model"].pop("gdn_norm_eps", None)
            d["model"].pop("gdn_precision", None)
        for key, value in REMOVED_FIELDS.items():
            section, name = key.split(".")
            d[section][name] = value
        return d

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def run_dir(self) -> epath.Path:
        """A local path or gs://bucket/... (storage.paths.as_path)."""
        if self.train.run_dir:
            return as_path(self.train.run_dir)
        return as_path(self.train.runs_root) / f"{self.train.name}-{self.config_hash()[:8]}"

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def load_config(config: str | os.PathLike | dict | None, overrides: list[str] | None = None
                ) -> RunConfig:
    """A RunConfig from a YAML path, a dict, or a model preset name, then overrides applied."""
    from hybrid_jax.presets import PRESETS, get_preset

    if isinstance(config, dict):
        data = config
    elif config is None:
        data = {}
    elif str(config) in PRESETS:
        data = {"model": get_preset(str(config))}
    elif str(config).endswith((".yaml", ".yml", ".json")) or os.path.exists(config):
        path = Path(config)
        if path.is_dir():
            raise ConfigError(f"{path} is a directory, not a config file")
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        data = load_yaml_mapping(path, ConfigError)
    else:
        get_preset(str(config))  # raises KeyError with the nearest preset names
        raise AssertionError("unreachable")
    if isinstance(data.get("model"), str):  # `model: hybrid_100m` in YAML names a preset
        data = {**data, "model": get_preset(data["model"])}
    elif isinstance(data.get("model"), dict) and "preset" in data["model"]:
        fields = dict(data["model"])
        data = {**data, "model": get_preset(fields.pop("preset"), **fields)}
    # Overrides apply to the parsed tree before any validation, so that an override can
    # complete a config that is invalid without it (a preset needs train.tokens).
    return _build(data, list(overrides or []))


def _build(data: dict, overrides: list[str]) -> RunConfig:
    from hybrid_jax.overrides import OverrideError, leaf_keys, parse_override, unknown_key_error

    merged = {k: (to_dict(v) if dataclasses.is_dataclass(v) else v) for k, v in data.items()}
    valid = set(leaf_keys(RunConfig))
    for text in overrides:
        key, value = parse_override(text)
        if key not in valid:
            raise unknown_key_error(key, leaf_keys(RunConfig), "override")
        section, _, rest = key.partition(".")
        node = merged.setdefault(section, {})
        if not isinstance(node, dict):
            raise OverrideError(f"{key}: section {section!r} is not a mapping in the config")
        parts = rest.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return from_dict(RunConfig, merged)
