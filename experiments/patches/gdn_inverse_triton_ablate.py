"""Where the Triton T kernel's time goes (each variant drops a part; outputs wrong, times only),
the diagonal blocks by a power product, and P chunks a program (unrolled). Needs
gdn-inverse-triton.patch applied; `--interpret` runs it on CPU at a small shape. Results:
experiments/LOG.md. As committed it times `PICK` (the last call's); the first call
timed the P = 1 variants, each at 1 and 2 warps."""
import functools, json, statistics, sys
from pathlib import Path
sys.path.insert(0, ".")
import jax, jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from benchmarks.gdn_kernel_compare import interleaved_samples
from benchmarks.gdn_unit_lower_inverse import operands, float64_error
from kernels.gated_delta_rule.gpu.triton_common import NN, NT, dot_fn, triton_params

BLOCK = 16

def _kernel(k_ref, gs_ref, b_ref, t_ref, *, C, dot, dot_blocks, subst, below, power, P=1):
    for p in range(P):  # P chunks a program, unrolled: their chains interleave
        _chunk(k_ref, gs_ref, b_ref, t_ref, p * C, C=C, dot=dot, dot_blocks=dot_blocks,
               subst=subst, below=below, power=power)


def _chunk(k_ref, gs_ref, b_ref, t_ref, base, *, C, dot, dot_blocks, subst, below, power):
    n_blocks = C // BLOCK
    blk = lambda r: pl.ds(base + r * BLOCK, BLOCK)
    tblk = lambda r: pl.ds(r * BLOCK, BLOCK)
    k = [k_ref[blk(r), :] for r in range(n_blocks)]
    G = [gs_ref[0, blk(r)] for r in range(n_blocks)]
    beta = [b_ref[blk(r)] for r in range(n_blocks)]
    row = lax.broadcasted_iota(jnp.int32, (BLOCK, BLOCK), 0)
    col = lax.broadcasted_iota(jnp.int32, (BLOCK, BLOCK), 1)

    def a_block(r, c):
        d = G[r][:, None] - G[c][None, :]
        if r == c:
            d = jnp.where(row > col, d, -jnp.inf)
        return beta[r][:, None] * dot(k[r], k[c], NT) * jnp.exp(d)

    A = {(r, c): a_block(r, c) for r in range(n_blocks) for c in range(r + 1)}
    eye = jnp.where(row == col, 1.0, 0.0)
    if power:  # (I + A)^-1 = (I + N)(I + N^2)(I + N^4)(I + N^8), N = -A strictly lower
        X = {}
        for r in range(n_blocks):
            N = -A[r, r]
            P = eye + N
            for _ in range(3):
                N = dot_blocks(N, N, NN)
                P = P + dot_blocks(P, N, NN)
            X[r, r] = P
    else:
        N = [-A[r, r] for r in range(n_blocks)]
        if subst:
            for i in range(2, BLOCK):
                for r in range(n_blocks):
                    a = jnp.sum(jnp.where(row == i, N[r], 0.0), axis=0)
                    a = a + jnp.sum(a[:, None] * N[r], axis=0)
                    N[r] = jnp.where(row == i, a[None, :], N[r])
        X = {(r, r): N[r] + eye for r in range(n_blocks)}
    for r in range(1, n_blocks):
        for c in range(r - 1, -1, -1):
            if not below:
                X[r, c] = A[r, c]
                continue
            s = dot_blocks(A[r, r - 1], X[r - 1, c], NN)
            for m in range(c, r - 1):
                s = s + dot_blocks(A[r, m], X[m, c], NN)
            X[r, c] = -dot_blocks(X[r, r], s, NN)
    zero = jnp.zeros((BLOCK, BLOCK), t_ref.dtype)
    for r in range(n_blocks):
        for c in range(n_blocks):
            t_ref[blk(r), tblk(c)] = X[r, c].astype(t_ref.dtype) if c <= r else zero


def inverse(k, gs, beta, *, C, warps, interpret, P=1, **flags):
    BH, Tp, Kp = k.shape
    kernel = functools.partial(_kernel, C=C, dot=dot_fn("default", interpret),
                               dot_blocks=dot_fn("tf32", interpret), P=P, **flags)
    R = P * C
    return pl.pallas_call(
        kernel, grid=(BH, Tp // R), interpret=interpret,
        in_specs=[pl.BlockSpec((None, R, Kp), lambda i, n: (i, n, 0)),
                  pl.BlockSpec((None, 2, R), lambda i, n: (i, 0, n)),
                  pl.BlockSpec((None, R), lambda i, n: (i, n))],
        out_specs=pl.BlockSpec((None, R, C), lambda i, n: (i, n, 0)),
        out_shape=jax.ShapeDtypeStruct((BH, Tp, C), jnp.bfloat16),
        compiler_params=triton_params(warps, 1, interpret),
    )(k.astype(jnp.bfloat16), gs.astype(jnp.float32), beta.astype(jnp.float32))

VARIANTS = {
    "full": dict(subst=True, below=True, power=False),
    "full, 2 chunks a program": dict(subst=True, below=True, power=False, P=2),
    "full, 4 chunks a program": dict(subst=True, below=True, power=False, P=4),
    "A and stores only, 4 chunks a program": dict(subst=False, below=False, power=False, P=4),
    "no substitution": dict(subst=False, below=True, power=False),
    "no blocks below": dict(subst=True, below=False, power=False),
    "A and stores only": dict(subst=False, below=False, power=False),
    "power diagonal": dict(subst=False, below=True, power=True),
}
# (variant, warps) as the last call timed them
PICK = [("full", 1), ("full, 4 chunks a program", 1), ("full, 4 chunks a program", 2),
        ("A and stores only, 4 chunks a program", 1), ("A and stores only", 1),
        ("full, 2 chunks a program", 1)]


def main():
    interpret = "--interpret" in sys.argv
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else None
    shape = (dict(B=1, T=128, H=2, HV=2, K=64, V=64) if interpret else
             dict(B=4, T=4096, H=16, HV=16, K=128, V=128))
    C = 64
    q, k, v, gs, beta = operands(shape, C)
    fns, errs = {}, {}
    for name, w in PICK:
        n = f"{name}, {w} warp"
        fns[n] = jax.jit(functools.partial(inverse, C=C, warps=w, interpret=interpret,
                                           **VARIANTS[name]))
        errs[n] = float64_error(jax.block_until_ready(fns[n](k, gs, beta)), k, gs, beta, C)
        print("compiled", n, flush=True)
    wrapped = {n: (lambda f: lambda *_: f(k, gs, beta))(f) for n, f in fns.items()}
    samples = interleaved_samples(wrapped, (), 2 if interpret else 20, 1 if interpret else 3)
    rows = {n: dict(ms=statistics.median(s), min_ms=min(s), err=errs[n]) for n, s in samples.items()}
    for n, r in rows.items():
        print(f"| {n} | {r['ms']:.3f} | {r['min_ms']:.3f} | {r['err']:.1e} |", flush=True)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "t_ablate.json").write_text(json.dumps(dict(device=jax.devices()[0].device_kind, shape=shape, rows=rows), indent=1))

if __name__ == "__main__":
    main()
