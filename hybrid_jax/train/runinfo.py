"""What a run records about itself: git SHA, package versions, devices, implementations."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import jax

from hybrid_jax.config import ModelConfig

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "hybrid-jax")


def git_state() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"sha": None, "error": str(e)}
    if sha.returncode:
        return {"sha": None, "error": sha.stderr.strip()[:200]}
    return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def devices() -> dict:
    devs = jax.devices()
    return {"backend": jax.default_backend(), "device_kind": devs[0].device_kind,
            "n_devices": len(devs), "n_local_devices": jax.local_device_count(),
            "process_count": jax.process_count()}


def implementations(cfg: ModelConfig) -> dict:
    """The kernels that will actually run; raises now if an explicit choice cannot run."""
    out = {}
    types = set(cfg.layer_types)
    if "G" in types:
        from kernels.gated_delta_rule.api import resolve_implementation, resolve_precision

        out["gdn"] = resolve_implementation(cfg.gdn_implementation, cfg.gdn_precision,
                                            (cfg.gdn_k_dim, cfg.gdn_v_dim), cfg.gdn_chunk_size)
        out["gdn_precision"] = resolve_precision(cfg.gdn_precision)
        from kernels.gated_rmsnorm import resolve_norm_implementation

        out["gdn_norm"] = resolve_norm_implementation()
        from kernels.causal_conv import resolve_conv_implementation

        out["gdn_conv"] = resolve_conv_implementation()
    if types & {"A", "S"}:
        from kernels.attention import resolve_attention_implementation

        out["attention"] = resolve_attention_implementation(cfg.attention_implementation,
                                                            dtype=cfg.compute_dtype,
                                                            head_dim=cfg.attn_head_dim)
    return out
