"""Which part of the fused chunk-gradient kernel makes ptxas serialize its wgmmas (C7514)?
Each variant edits the kernel's source in a child process (the repository is untouched),
compiles and runs chunk_grads once with MOSAIC_GPU_DUMP_PTXAS=1, and reports registers,
spills and whether C7514 names the kernel. Stub variants keep the barrier protocol, so they
run; their outputs are meaningless. Variants named in TIMED are also timed alone (B4 T4096
H16 K = V = 128 as BH 64, N 64).

    python experiments/patches/gdn_grads_c7514_bisect.py OUT_DIR [VARIANT ...]  # on a GPU
"""
import json, os, re, subprocess, sys, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG = "kernels/gated_delta_rule/gpu/prep_grads_mosaic.py"
GM = "kernels/gated_delta_rule/gpu/grad_mosaic.py"

CHAIN_STUB = '''
def chain(daqk, s, h, *, scale):
    plgpu.barrier_wait(h.bv)
    plgpu.barrier_arrive(h.dt)
    handover(h.dqk)
    meet(h.done)
'''
TILES_STUB = '''
def tiles(s, h, *, out, scale):
    handover(h.bv)
    plgpu.barrier_wait(h.dt)
    plgpu.barrier_wait(h.dqk)
    finish_stores()
    meet(h.done)
'''
SPLIT_P1 = ("dw, dqd = wgmma_products(((du_s, st_s.T), (do_s, st_s.T)), ((C, Kp), (C, Kp)))",
            "(dw,) = wgmma_products(((du_s, st_s.T),), ((C, Kp),)); "
            "(dqd,) = wgmma_products(((do_s, st_s.T),), ((C, Kp),))")
SPLIT_KK = ("KK, QK = wgmma_products(((s.k, s.k.T), (s.q, s.k.T)), ((C, C), (C, C)))",
            "(KK,) = wgmma_products(((s.k, s.k.T),), ((C, C),)); "
            "(QK,) = wgmma_products(((s.q, s.k.T),), ((C, C),))")
# daqk kept as an fp32 accumulator value until chain (no early bf16 cast)
NO_DAQK_CAST = ("daqk = daqk.astype(bf16)  # in registers", "daqk = daqk  # in registers")
# phase 1 of CHAIN without its products (dw, dqd, daqk from SMEM loads instead)
P1_CHAIN_NOMMA = [
    ("dw, dqd = wgmma_products(((du_s, st_s.T), (do_s, st_s.T)), ((C, Kp), (C, Kp)))",
     "dw = plgpu.load(dw_s, layout=WG).astype(f32); dqd = plgpu.load(dqd_s, layout=WG).astype(f32)"),
    ("(daqk,) = wgmma_products(((do_s, delta_s.T),), ((C, C),))",
     "daqk = plgpu.load(delta_s.at[:, :C], layout=WG).astype(f32)"),
]
P1_TILES_NOMMA = [("(dkd,) = wgmma_products(((delta_s, dst_s.T),), ((C, Kp),))",
                   "dkd = plgpu.load(dkd_s, layout=WG).astype(f32)")]
DGC_NOLOOP = ("            dgc = dgc + jnp.sum(dS * S, axis=1)", "            dgc = dgc")

CHAIN_NO_DAQK = ("dQK = scale * daqk.astype(_f32) * Dc", "dQK = scale * Dc")
CHAIN_NO_KKQK = ("KK, QK = wgmma_products(((s.k, s.k.T), (s.q, s.k.T)), ((C, C), (C, C)))",
                 "KK = plgpu.load(s.x, layout=_WG); QK = KK")
CHAIN_NO_DT = ("dT = _mm(((s.du, s.v.T), (s.dw, s.ck.T)), (C, C))", "dT = G_i")
EARLY = """    row = plgpu.broadcasted_iota(jnp.int32, (C, C), 0, layout=_WG)
    col = plgpu.broadcasted_iota(jnp.int32, (C, C), 1, layout=_WG)
    G_i = _per_row(G, C)
    Dc = jnp.exp(jnp.where(row >= col, G_i - transposed(G_i), -jnp.inf))
    dQK = scale * daqk.astype(_f32) * Dc  # with respect to (q k^T) Dc of the unscaled q
    D = jnp.where(row > col, Dc, 0.0)
"""
CHAIN_LATE = [(EARLY, ""), ("    dAD = jnp.where(row > col,", EARLY + "    dAD = jnp.where(row > col,")]
VARIANTS = {
    "chain_late": ({"sub": CHAIN_LATE}, {}),
    "chain_no_daqk": ({"sub": [CHAIN_NO_DAQK]}, {}),
    "chain_no_kkqk": ({"sub": [CHAIN_NO_KKQK]}, {}),
    "chain_no_dt": ({"sub": [CHAIN_NO_DT]}, {}),
    "base": ({}, {}),
    "chain_stub": ({"append": CHAIN_STUB}, {}),
    "tiles_stub": ({"append": TILES_STUB}, {}),
    "both_stubs": ({"append": CHAIN_STUB + TILES_STUB}, {}),
    "both_stubs_p1chain_nomma": ({"append": CHAIN_STUB + TILES_STUB}, {"sub": P1_CHAIN_NOMMA}),
    "both_stubs_p1tiles_nomma": ({"append": CHAIN_STUB + TILES_STUB}, {"sub": P1_TILES_NOMMA}),
    "both_stubs_dgc_noloop": ({"append": CHAIN_STUB + TILES_STUB}, {"sub": [DGC_NOLOOP]}),
    "split_pairs": ({"sub": [SPLIT_KK]}, {"sub": [SPLIT_P1]}),
    "no_daqk_cast": ({}, {"sub": [NO_DAQK_CAST]}),
    "chain_stub_no_daqk_cast": ({"append": CHAIN_STUB}, {"sub": [NO_DAQK_CAST]}),
}

CHILD = r'''
import os, sys, types, importlib
sys.path.insert(0, ROOT)
import jax, jax.numpy as jnp, numpy as np
def edit(path, spec):
    src = open(os.path.join(ROOT, path)).read()
    for old, new in spec.get("sub", []):
        assert old in src, (path, old)
        src = src.replace(old, new)
    return src + spec.get("append", "")
import kernels.gated_delta_rule.gpu as gpu_pkg
for name, path, spec in (("prep_grads_mosaic", PG, PG_SPEC), ("grad_mosaic", GM, GM_SPEC)):
    full = "kernels.gated_delta_rule.gpu." + name
    mod = types.ModuleType(full); mod.__file__ = os.path.join(ROOT, path)
    sys.modules[full] = mod; setattr(gpu_pkg, name, mod)
    exec(compile(edit(path, spec), mod.__file__, "exec"), mod.__dict__)
gm = sys.modules["kernels.gated_delta_rule.gpu.grad_mosaic"]
BH, N, C, Kp, V = 4, 4, 64, KP, VV
Tp = N * C
r = np.random.default_rng(0)
f = lambda *s: jnp.asarray(r.normal(size=s) * 0.1, jnp.float32)
bf = lambda *s: f(*s).astype(jnp.bfloat16)
args = (bf(BH, Tp, Kp), bf(BH, Tp, Kp), bf(BH, Tp, V), f(BH, 2, Tp), jax.nn.sigmoid(f(BH, Tp)),
        bf(BH, Tp, C), bf(BH, N * Kp, V), bf(BH, N * Kp, V), bf(BH, Tp, V), bf(BH, Tp, V),
        bf(BH, Tp, V))
fn = jax.jit(lambda *a: gm.chunk_grads(*a, C=C))
out = fn(*args)
jax.block_until_ready(out)
print("RAN_OK")
if TIME:
    BH, N = 64, 64
    Tp = N * C
    args = (bf(BH, Tp, Kp), bf(BH, Tp, Kp), bf(BH, Tp, V), f(BH, 2, Tp), jax.nn.sigmoid(f(BH, Tp)),
            bf(BH, Tp, C), bf(BH, N * Kp, V), bf(BH, N * Kp, V), bf(BH, Tp, V), bf(BH, Tp, V),
            bf(BH, Tp, V))
    from benchmarks.gdn_kernel import time_jax
    print("TIME_MS", *time_jax(fn, args, warmup=1, iters=30, inner=5))
'''

TIMED = {"base", "split_pairs", "no_daqk_cast", "chain_late"}
_TIME = re.compile(r"TIME_MS (\S+) (\S+)")
_REGS = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")

def run(name, kp, v):
    pg_spec, gm_spec = VARIANTS[name]
    code = (CHILD.replace("ROOT", repr(ROOT)).replace("PG_SPEC", repr(pg_spec))
            .replace("GM_SPEC", repr(gm_spec)).replace("PG,", repr(PG) + ",")
            .replace("GM,", repr(GM) + ",").replace("KP", str(kp)).replace("VV", str(v))
            .replace("if TIME:", f"if {name in TIMED}:"))
    env = dict(os.environ, MOSAIC_GPU_DUMP_PTXAS="1")
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, env=env)
        text, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        text, rc = (e.stdout or b"").decode() + (e.stderr or b"").decode(), "timeout"
    grads = [l for l in text.splitlines() if "chunk_grads" in l or "C7514" in l]
    regs = _REGS.findall(text)
    spill = _SPILL.findall(text)
    row = dict(variant=name, Kp=kp, V=v, rc=rc, ran="RAN_OK" in text,
               c7514="C7514" in text, registers=regs[-1:] , spills=spill[-1:],
               time_ms=_TIME.findall(text)[-1:], s=round(time.time() - t0, 1))
    if rc not in (0,) or not row["ran"]:
        row["tail"] = text[-1500:]
    return row, text

if __name__ == "__main__":
    out = sys.argv[1]
    names = sys.argv[2:] or list(VARIANTS)
    rows = []
    with open(os.path.join(out, "c7514.log"), "w") as log:
        for name in names:
            row, text = run(name, 128, 128)
            log.write(f"===== {name}\n{text}\n")
            rows.append(row)
            print(json.dumps(row), flush=True)
    json.dump(rows, open(os.path.join(out, "c7514.json"), "w"), indent=1)
