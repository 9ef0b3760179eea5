"""orbax checkpoints on gs:// (the emulator): the CheckpointManager set up as
hybrid_jax/train/checkpoint.py sets it up (state and meta items, async saves with a
post-finalization hook, retention) saves a small train-state-like pytree and restores it bit for
bit. Arrays go through tensorstore's own GCS driver (TENSORSTORE_GCS_HTTP_URL), everything else
through epath, which hybrid_jax.storage points at google-cloud-storage."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from hybrid_jax.storage import paths  # noqa: F401 (registers the gs:// backend)
from tests.helpers.gcs import gs_prefix


def manager(directory: epath.Path, hook) -> ocp.CheckpointManager:
    preserve = policies.AnyPreservationPolicy([policies.LatestN(1), policies.CustomSteps([1])])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preserve, enable_async_checkpointing=True, create=True,
        cleanup_tmp_directories=True,
        async_options=ocp.AsyncOptions(post_finalization_callback=hook))
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


def test_checkpoints_save_and_restore_on_gs(gcs_bucket):
    directory = epath.Path(gs_prefix(gcs_bucket, "run")) / "checkpoints"
    state = {"step": jnp.int32(0),
             "params": {"w": jnp.arange(24, dtype=jnp.float32).reshape(4, 6),
                        "emb": jnp.ones((8, 4), jnp.bfloat16)},
             "opt_state": (jnp.zeros(6), jnp.full((3,), 7, jnp.int32))}
    hooked = []
    mgr = manager(directory, lambda: hooked.append(True))
    for step in (1, 2, 3):
        state = {**state, "step": jnp.int32(step), "opt_state": (state["opt_state"][0] + step,
                                                                 state["opt_state"][1])}
        mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave({"step": step})),
                 force=True)
        mgr.wait_until_finished()
    mgr.close()
    assert len(hooked) == 3
    # retention: the latest one, plus the kept step 1; step 2 deleted from the bucket
    assert sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) == [1, 3]
    assert (directory / "3" / "commit_success.txt").exists()  # orbax's commit on GCS

    mgr = manager(directory, lambda: None)
    assert mgr.all_steps() == [1, 3] and mgr.latest_step() == 3
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = mgr.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                      meta=ocp.args.JsonRestore()))
    mgr.close()
    assert restored["meta"] == {"step": 3}
    got, want = jax.tree.leaves(restored["state"]), jax.tree.leaves(state)
    assert [x.dtype for x in got] == [x.dtype for x in want]
    for x, y in zip(got, want):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
