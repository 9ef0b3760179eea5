"""Helpers shared by test files (no tests here); import them as `from tests.helpers.X import ...`.

training       a tiny real token store, tiny run configs, training in child processes
sweeps         micro ladders and the sweep command line in child processes
data           a text corpus from stdlib sources, awkward and random text, fake
               distribution metadata
gdr            the gated delta rule's float64 oracle, inputs and the relative error
gdr_gpu_prep   the Triton prep kernels' keyword arguments in interpret mode
gdr_gpu_state  the GPU state pass's operands and plain-jnp references
attention      attention inputs
tfevents       TensorBoard event files read back, with TensorBoard's purge on resume
gcs            a GCS emulator (fake-gcs-server) as session fixtures: gcs_emulator, gcs_bucket
threads        `race`: one function in several threads released together
"""

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def xla_flags(devices: int | None) -> str:
    """XLA_FLAGS for a child process with `devices` fake CPU devices (None: no device count),
    keeping the session's other flags (conftest.py's fast CPU compile)."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   os.environ.get("XLA_FLAGS", "")).split()
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)
