"""The per-kernel breakdown of `benchmarks/gdn_kernel.py`: each Pallas kernel of the gated
delta rule alone (prep, the fused, split and Mosaic state passes, forward and backward), timed
on random operands of the shapes it sees for one benchmark shape. Split out of gdn_kernel.py,
which runs it first (see there); rows are named "kernel:<cell>:<precision>"."""

def selects(only, name):
    """Whether --breakdown-only's patterns pick cell `name`: a prefix, or with a trailing $ the
    exact name; "_" stands for a space (gdn_kernel_gpu.sh passes BENCH_ARGS through word
    splitting); none (or "") picks every cell."""
    for p in only or [""]:
        p = p.replace("_", " ")
        if (name == p[:-1]) if p.endswith("$") else name.startswith(p):
            return True
    return False


def run_breakdown(s, precision, args, *, skip_reason, time_fn, launch=None):
    """Each Pallas kernel of the pallas_gpu path alone (every prep and state pass, the
    defaults' kernels among them), on random operands of the shapes it sees for shape s: where
    the time goes. Returns rows like the table's.

    args: gdn_kernel.py's (interpret, warmup, iters, inner); skip_reason() -> str or None
    (its --budget-s); time_fn: its timer, (compiled, args, warmup, iters, inner) ->
    (median ms, min ms). launch: kernel_config keywords (num_warps, num_warps_bwd,
    num_warps_prep, num_stages, block_v) for a launch-parameter sweep; its rows are named
    "kernel:<cell>:<precision>:<k=v,...>"."""
    import functools
    import jax
    import jax.numpy as jnp
    from kernels.gated_delta_rule import pallas_gpu_common as cm
    from kernels.gated_delta_rule import pallas_gpu_prep as pp
    from kernels.gated_delta_rule import pallas_gpu_state as st

    B, T, HV, K, V, C = s["B"], s["T"], s["HV"], s["K"], s["V"], 64
    BH, N = B * HV, -(-T // C)
    Kp = max(16, cm._next_pow2(K))
    launch = dict(launch or {})
    cfg = cm.kernel_config(precision, bool(args.interpret), Kp, V, BH=BH, **launch)
    Tp, Vp = N * C, cm._prep_v(V, dict(cfg)["block_d"])
    dt = cm._operand_dtype(cfg)
    ks = iter(jax.random.split(jax.random.key(1), 32))
    rnd = lambda *shape, dtype=jnp.float32: (0.1 * jax.random.normal(next(ks), shape)).astype(dtype)
    # q, k, v in the operand dtype: what bf16 callers hand the prep at "default" (30e19fe)
    q, k, v = rnd(BH, Tp, Kp, dtype=dt), rnd(BH, Tp, Kp, dtype=dt), rnd(BH, Tp, Vp, dtype=dt)
    g = -jax.random.uniform(next(ks), (BH, Tp), jnp.float32, 0.0, 0.5)
    beta = jax.random.uniform(next(ks), (BH, Tp), jnp.float32, 0.0, 2.0)
    w, kd, qd = rnd(BH, Tp, Kp, dtype=dt), rnd(BH, Tp, Kp, dtype=dt), rnd(BH, Tp, Kp, dtype=dt)
    u, aqk = rnd(BH, Tp, V, dtype=dt), rnd(BH, Tp, C, dtype=dt)
    gc = jax.random.uniform(next(ks), (BH, Kp, N), jnp.float32, 0.5, 1.0)
    s0, do = rnd(BH, Kp, V), rnd(BH, Tp, V, dtype=dt)
    states = rnd(BH, N * Kp, V, dtype=dt)
    dw, du, dkd, dqd, daqk = (rnd(*x.shape, dtype=dt) for x in (w, rnd(BH, Tp, Vp), kd, qd, aqk))
    fc, bc, sc = (cm._call_cfg(cfg, which) for which in ("fwd", "bwd", "bwd_split"))
    # The prep kernels, fused and split in three each way (4 warps: 8 and 2 were slower in the
    # fifth and sixth sessions' runs, see pallas_gpu_common._prep_cfg).
    from kernels.gated_delta_rule.pallas_gpu_prep_split import (
        prep_bwd_kernels, prep_bwd_split, prep_fwd_saving_inverse, prep_fwd_split)
    pc = cm._prep_cfg(cfg)
    cts = (dw, du, dkd, dqd, daqk)
    gk = pp.decay_input(g, C, pc["decays"])  # what the kernels read: g, or G and logF
    cells = {"prep fwd": (functools.partial(pp.prep_fwd, C=C, out_dtype=dt, **pc),
                          (q, k, v, gk, beta)),
             "prep fwd save": (functools.partial(prep_fwd_saving_inverse, C=C, out_dtype=dt, **pc),
                               (q, k, v, gk, beta)),  # the fused one writing T (splitbwd)
             "prep fwd split": (functools.partial(prep_fwd_split, C=C, out_dtype=dt, **pc),
                                (q, k, v, gk, beta)),  # three kernels, timed together
             "prep bwd": (functools.partial(pp.prep_bwd, C=C, **pc), (q, k, v, gk, beta, *cts))}

    def prep_fwd_no_inverse(*a):  # an ablation: T = A (wrong), the inverse's cost by difference
        from unittest import mock
        with mock.patch.object(pp, "_unit_lower_inverse", lambda A, *_: A):  # at trace time
            return prep_fwd_saving_inverse(*a, C=C, out_dtype=dt, **pc)

    cells["prep fwd save, no inverse"] = (prep_fwd_no_inverse, (q, k, v, gk, beta))
    # the other decay modes (`pallas_gpu_prep.DECAYS`) where they are not the configuration's:
    # "exact" (the masked scans, as "highest" runs), "outer" and "xla" (G, logF from XLA)
    others = [d for d in pp.DECAYS if d != pc["decays"]] if precision == "default" else []
    for d in others:
        cells[f"prep fwd save, {d} decays"] = (
            functools.partial(prep_fwd_saving_inverse, C=C, out_dtype=dt, **dict(pc, decays=d)),
            (q, k, v, pp.decay_input(g, C, d), beta))
    from kernels.gated_delta_rule import pallas_mgpu_prep as mp
    if precision == "default" and mp.takes_shape(C, Kp, Vp):  # the Mosaic prep forward
        cells["prep fwd save mosaic"] = (
            functools.partial(mp.prep_fwd_mosaic, C=C, out_dtype=dt, save_inverse=True,
                              **dict(pc, decays="xla")),
            (q, k, v, pp.decay_input(g, C, "xla"), beta))
    chosen = lambda name: selects(getattr(args, "breakdown_only", None), name)
    split_bwd_cells = ("prep bwd split", "prep bwd inverse", "prep bwd decay", "prep bwd qk")
    if any(map(chosen, split_bwd_cells)):  # their inputs cost compiles: only when timed
        # T as the default forward (prep="pallas_splitbwd") saves it: in the operand dtype
        _, (T_inv,) = jax.jit(functools.partial(prep_fwd_saving_inverse, C=C, out_dtype=dt,
                                                **pc))(q, k, v, gk, beta)
        cells["prep bwd split"] = (functools.partial(prep_bwd_split, C=C, **pc),
                                   (q, k, v, gk, beta, T_inv, *cts))
        for d in others:
            cells[f"prep bwd split, {d} decays"] = (
                functools.partial(prep_bwd_split, C=C, **dict(pc, decays=d)),
                (q, k, v, pp.decay_input(g, C, d), beta, T_inv, *cts))
        # each of its three kernels alone, on the intermediates the one before writes
        # dtypes as the default path gives them bf16 callers (dq, dk, dv in q's dtype)
        inverse, decay, qk = prep_bwd_kernels(BH, Tp, Kp, Vp, C=C, grad_dtype=dt, mid_dtype=dt,
                                              **pc)
        inv_args = (k, v, gk, beta, T_inv, dw, du)
        dv, dk0, dA, db0, s_bek = jax.jit(inverse)(*inv_args)
        dec_args = (q, k, gk, beta, dA, daqk, db0)
        dkk, dqk, dgd, _ = jax.jit(decay)(*dec_args)
        cells |= {"prep bwd inverse": (inverse, inv_args), "prep bwd decay": (decay, dec_args),
                  "prep bwd qk": (qk, (q, k, gk, beta, s_bek, dgd, dkk, dqk, dk0, dqd, dkd))}
    cells |= {
        "state fwd": (functools.partial(st.state_pass_fwd_call, save_states=False, **fc),
                      (w, u, kd, gc, qd, aqk, s0)),
        "state fwd+save": (functools.partial(st.state_pass_fwd_call, save_states=True, **fc),
                           (w, u, kd, gc, qd, aqk, s0)),
        # the default state pass's forward before a backward: also saves delta
        "state fwd+delta": (functools.partial(st.state_pass_fwd_call, save_states=True,
                                              save_delta=True, **fc),
                            (w, u, kd, gc, qd, aqk, s0)),
        "state bwd": (functools.partial(st.state_pass_bwd_call, **bc),
                      (w, u, kd, gc, qd, aqk, states, do, s0)),
    }
    from kernels.gated_delta_rule import pallas_gpu_split as ps
    delta = rnd(BH, Tp, V, dtype=dt)
    cells["state fwd split"] = (functools.partial(ps.split_fwd, **fc), (w, u, kd, gc, qd, aqk, s0))
    cells["state bwd split"] = (functools.partial(ps.split_bwd, **sc),
                                (w, kd, gc, qd, aqk, states, delta, do, s0))
    if precision == "default":  # the Mosaic GPU state pass, forward and backward, same operands
        from jax.experimental.pallas import mosaic_gpu as plgpu
        from kernels.gated_delta_rule.pallas_mgpu import state_pass_fwd_mgpu
        from kernels.gated_delta_rule.pallas_mgpu_bwd import state_pass_bwd_mgpu
        mg = dict(interpret=plgpu.InterpretGPUParams()) if args.interpret else {}
        cells["state fwd mosaic"] = (functools.partial(state_pass_fwd_mgpu, **mg),
                                     (w, u, kd, gc, qd, aqk, s0))
        cells["state fwd+delta mosaic"] = (
            functools.partial(state_pass_fwd_mgpu, save_states=True, save_delta=True, **mg),
            (w, u, kd, gc, qd, aqk, s0))
        cells["state bwd mosaic"] = (functools.partial(state_pass_bwd_mgpu, **mg),
                                     (w, u, kd, gc, qd, aqk, states, do, s0))
        # the split backward with its sequential kernel in Mosaic GPU (state_pass="mosaic_dh"),
        # with its parallel one too where that takes V ("mosaic_dqk", the default), and the
        # sequential kernel alone (pallas_mgpu_dh.py)
        from kernels.gated_delta_rule.pallas_mgpu_dh import split_dh_mgpu
        from kernels.gated_delta_rule.pallas_mgpu_dqk import takes_shape as dqk_takes
        cells["state bwd split, mosaic dh"] = (
            functools.partial(ps.split_bwd, mosaic_dh=True, **sc),
            (w, kd, gc, qd, aqk, states, delta, do, s0))
        if dqk_takes(C, Kp, V):
            cells["state bwd split, mosaic dh+dqk"] = (
                functools.partial(ps.split_bwd, mosaic_dh=True, mosaic_dqk=True, **sc),
                (w, kd, gc, qd, aqk, states, delta, do, s0))
        cells["state dh mosaic"] = (functools.partial(split_dh_mgpu, **mg),
                                    (w, kd, gc, qd, aqk, do, s0))
    cells = {name: cell for name, cell in cells.items() if chosen(name)}
    if not cells:
        raise ValueError(f"--breakdown-only {args.breakdown_only!r} matches no cell")
    tag = ":" + ",".join(f"{k}={v}" for k, v in launch.items()) if launch else ""
    rows = []
    for name, (fn, fargs) in cells.items():
        row = {"shape": s, "impl": f"kernel:{name}:{precision}{tag}", "mode": "fwd"}
        if skip_reason():
            row["error"] = skip_reason()
            rows.append(row)
            continue
        try:
            compiled = jax.jit(fn).lower(*fargs).compile()
            row["median_ms"], row["min_ms"] = time_fn(compiled, fargs, args.warmup, args.iters,
                                                      args.inner)
            ins = sum(x.size * x.dtype.itemsize for x in fargs)
            outs = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
                jax.eval_shape(fn, *fargs)))
            row["bytes"] = ins + outs
            print(f"  {name:<16} {precision:<8}{tag} {row['median_ms']:8.3f} ms  "
                  f"{row['bytes'] / row['median_ms'] / 1e6:7.0f} GB/s (its own operands)",
                  flush=True)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            print(f"  {name:<16} {precision:<8}{tag} FAILED: {row['error'][:150]}", flush=True)
        rows.append(row)
    return rows
