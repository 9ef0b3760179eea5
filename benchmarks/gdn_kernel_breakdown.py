"""The per-kernel breakdown of `benchmarks/gdn_kernel.py`: each Pallas kernel of the gated
delta rule on a GPU alone (the prep forward and backward, the state forward, dh and dqk, in
Triton and, at precision "default" where it takes the shape, in Mosaic GPU, where dqk and the
prep backward are also one kernel, "grads mosaic"), timed on random
operands of the shapes it sees for one benchmark shape, launched as the op launches it
(`gpu/config.plan`). gdn_kernel.py runs it first; rows are named "kernel:<cell>:<precision>"."""


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
    """Each kernel alone for shape s, on random operands in the dtypes the op hands it. Returns
    rows like the table's.

    args: gdn_kernel.py's (interpret, warmup, iters, inner, breakdown_only); skip_reason() ->
    str or None (its --budget-s); time_fn: its timer, (compiled, args, warmup, iters, inner) ->
    (median ms, min ms). launch: KernelConfig fields for a launch-parameter sweep of the Triton
    kernels; its rows are named "kernel:<cell>:<precision>:<k=v,...>"."""
    import functools
    import jax
    import jax.numpy as jnp
    from kernels.gated_delta_rule.gpu import (chunk, chunk_math, grad_mosaic, prep_mosaic,
                                              prep_mosaic_bwd, prep_triton, state_mosaic,
                                              state_mosaic_bwd, state_triton)
    from kernels.gated_delta_rule.gpu.config import KernelConfig, padded_k, plan, prep_v

    B, T, HV, K, V, C = s["B"], s["T"], s["HV"], s["K"], s["V"], 64
    BH, N = B * HV, -(-T // C)
    Kp, Tp = padded_k(K), N * C
    launch = dict(launch or {})
    # q, k, v in the operand dtype (below): bf16 at "default", what bf16 callers hand the prep
    p = plan(precision, bool(args.interpret), KernelConfig(**launch), C=C, Kp=Kp, V=V, B=B,
             HV=HV, bf16_qkv=precision == "default")
    Vp = prep_v(V, p.block_d)
    dt = chunk._operand_dtype(p)
    ks = iter(jax.random.split(jax.random.key(1), 32))
    rnd = lambda *shape, dtype=jnp.float32: (0.1 * jax.random.normal(next(ks), shape)).astype(dtype)
    # q, k, v in the operand dtype: what bf16 callers hand the prep at "default"
    q, k, v = rnd(BH, Tp, Kp, dtype=dt), rnd(BH, Tp, Kp, dtype=dt), rnd(BH, Tp, Vp, dtype=dt)
    g = -jax.random.uniform(next(ks), (BH, Tp), jnp.float32, 0.0, 0.5)
    beta = jax.random.uniform(next(ks), (BH, Tp), jnp.float32, 0.0, 2.0)
    w, kd, qd = rnd(BH, Tp, Kp, dtype=dt), rnd(BH, Tp, Kp, dtype=dt), rnd(BH, Tp, Kp, dtype=dt)
    u, aqk = rnd(BH, Tp, V, dtype=dt), rnd(BH, Tp, C, dtype=dt)
    gc = jax.random.uniform(next(ks), (BH, Kp, N), jnp.float32, 0.5, 1.0)
    s0, do = rnd(BH, Kp, V), rnd(BH, Tp, V, dtype=dt)
    states, dstates = rnd(BH, N * Kp, V, dtype=dt), rnd(BH, N * Kp, V, dtype=dt)
    delta, dd = rnd(BH, Tp, V, dtype=dt), rnd(BH, Tp, V, dtype=dt)
    cts = tuple(rnd(*x.shape, dtype=dt) for x in (w, rnd(BH, Tp, Vp), kd, qd, aqk))
    pk = chunk._triton_prep(p)  # the plan's decays: what the prep backward reads
    gk = chunk_math.decay_input(g, C, p.decays)
    # the decays the Triton prep forward reads where the op runs it (the Mosaic prep reads XLA's)
    g_fwd = "exact" if precision == "highest" else "outer"
    cells = {"prep fwd save": (
        functools.partial(prep_triton.prep_fwd, out_dtype=dt, save_inverse=True,
                          **dict(pk, decays=g_fwd)),
        (q, k, v, chunk_math.decay_input(g, C, g_fwd), beta))}
    if precision == "default" and prep_mosaic.takes_shape(C, Kp, Vp):
        cells["prep fwd save mosaic"] = (
            functools.partial(prep_mosaic.prep_fwd, C=C, save_inverse=True, **_mosaic(args)),
            (q, k, v, chunk_math.decay_input(g, C, "xla"), beta))
    chosen = lambda name: selects(getattr(args, "breakdown_only", None), name)
    if any(map(chosen, ("prep bwd", "prep bwd inverse", "prep bwd decay", "prep bwd qk"))):
        # T as the forward saves it, in the operand dtype (its inputs cost a compile)
        *_, T_inv = jax.jit(functools.partial(prep_triton.prep_fwd, out_dtype=dt,
                                              save_inverse=True, **pk))(q, k, v, gk, beta)
        cells["prep bwd"] = (functools.partial(prep_triton.prep_bwd, **pk),
                             (q, k, v, gk, beta, T_inv, *cts))
        # each of its three kernels alone, on the intermediates the one before writes
        inverse, decay, qk = prep_triton.prep_bwd_kernels(BH, Tp, Kp, Vp, grad_dtype=dt,
                                                          mid_dtype=dt, **pk)
        dw, du, dkd, dqd, daqk = cts
        inv_args = (k, v, gk, beta, T_inv, dw, du)
        dv, dk0, dA, db0, s_bek = jax.jit(inverse)(*inv_args)
        dec_args = (q, k, gk, beta, dA, daqk, db0)
        dkk, dqk, dgd, _ = jax.jit(decay)(*dec_args)
        cells |= {"prep bwd inverse": (inverse, inv_args), "prep bwd decay": (decay, dec_args),
                  "prep bwd qk": (qk, (q, k, gk, beta, s_bek, dgd, dkk, dqk, dk0, dqd, dkd))}
    if p.prep_bwd != "triton" and (chosen("prep bwd mosaic") or chosen("grads mosaic")):
        gx = chunk_math.decay_input(g, C, "xla")
        *_, T_m = jax.jit(functools.partial(prep_mosaic.prep_fwd, C=C, save_inverse=True,
                                            **_mosaic(args)))(q, k, v, gx, beta)
        cells["prep bwd mosaic"] = (
            functools.partial(prep_mosaic_bwd.prep_bwd, C=C, **_mosaic(args)),
            (q, k, v, gx, beta, T_m, *cts))
        if p.dqk == "fused":  # dqk and the prep backward in one kernel
            cells["grads mosaic"] = (
                functools.partial(grad_mosaic.chunk_grads, C=C, **_mosaic(args)),
                (q, k, v, gx, beta, T_m, states, dstates, delta, dd, do))
    fwd_kw, bwd_kw = chunk._triton_state(p, backward=False), chunk._triton_state(p, True)
    cells |= {
        "state fwd": (functools.partial(state_triton.state_fwd, residuals=False, **fwd_kw),
                      (w, u, kd, gc, qd, aqk, s0)),
        "state fwd+save": (functools.partial(state_triton.state_fwd, residuals=True, **fwd_kw),
                           (w, u, kd, gc, qd, aqk, s0)),
        "state dh": (functools.partial(state_triton.dh, **bwd_kw),
                     (w, kd, gc, qd, aqk, do, s0)),
        "state dqk": (functools.partial(state_triton.dqk, C=C, out_dtype=dt, **bwd_kw),
                      (states, dstates, delta, dd, do)),
    }
    if precision == "default" and state_mosaic.takes_shape(C, Kp, V):
        mg = _mosaic(args)
        cells |= {
            "state fwd mosaic": (functools.partial(state_mosaic.state_fwd, o_dtype=dt, **mg),
                                 (w, u, kd, gc, qd, aqk, s0)),
            "state fwd+save mosaic": (functools.partial(state_mosaic.state_fwd, residuals=True,
                                                        o_dtype=dt, **mg),
                                      (w, u, kd, gc, qd, aqk, s0)),
            "state dh mosaic": (functools.partial(state_mosaic_bwd.dh, **mg),
                                (w, kd, gc, qd, aqk, do, s0)),
        }
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
            print(f"  {name:<22} {precision:<8}{tag} {row['median_ms']:8.3f} ms  "
                  f"{row['bytes'] / row['median_ms'] / 1e6:7.0f} GB/s (its own operands)",
                  flush=True)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            print(f"  {name:<22} {precision:<8}{tag} FAILED: {row['error'][:150]}", flush=True)
        rows.append(row)
    return rows


def _mosaic(args):
    """The Mosaic GPU kernels' interpret argument: their interpreter with --interpret."""
    if not args.interpret:
        return {}
    from jax.experimental.pallas import mosaic_gpu as plgpu
    return dict(interpret=plgpu.InterpretGPUParams())
