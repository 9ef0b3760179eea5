"""`import_hf(..., mesh=...)` places each weight split over the mesh as training places it, and
the sharded model computes the logits of the single-device import. Four fake CPU devices, so a
fresh process.

The sharded forward is jitted, as training and decoding run it. Run eagerly, each op is its own
four-device program with its own all-reduce, dispatched asynchronously; XLA's CPU client then
deadlocked about one run in twenty on a loaded host (gdb: two devices waiting in an all-reduce
for peers whose launches were blocked on the per-device in-flight limit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, xla_flags

FIXTURE = Path(__file__).parent / "fixtures" / "olmo_hybrid_rope_gva"

CHILD = """
import sys
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from hybrid_jax import sharding
from hybrid_jax.hf import import_hf

fixture = sys.argv[1]
mesh = sharding.make_mesh((1, 2, 2))
_, plain = import_hf(fixture)
cfg, split = import_hf(fixture, mesh=mesh)
params = nnx.to_pure_dict(nnx.state(split, nnx.Param))
leaves = jax.tree.leaves(params)
assert all(x.sharding.mesh.shape == mesh.shape for x in leaves), "a weight is off the mesh"
parts = [len({s.index for s in x.addressable_shards}) for x in leaves]
ids = jnp.asarray(np.load(fixture + "/golden.npz")["input_ids"])
got = np.asarray(nnx.jit(lambda model, x: model(x))(split, ids))
want = np.asarray(plain(ids))
err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
print("split", sum(p > 1 for p in parts), "of", len(parts), "err", err)
"""


def test_import_onto_a_mesh_splits_weights_and_keeps_logits():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(4))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(FIXTURE)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    words = proc.stdout.split()
    n_split, n_all, err = int(words[1]), int(words[3]), float(words[5])
    assert n_split >= n_all // 2, proc.stdout  # the matrices, not just a few
    assert err < 1e-5, proc.stdout
