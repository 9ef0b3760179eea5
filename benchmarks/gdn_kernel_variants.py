"""The gated delta rule variants `gdn_kernel.py` times, by name, and the issue's shapes.

Our implementations (the names' meanings as of the ninth session, when the default state pass
became "auto": mosaic_splitbwd where the Mosaic kernels take the shape, else splitbwd; since the
seventh, prep="pallas_splitbwd"; earlier result files name earlier defaults):
    pallas_gpu          kernels/gated_delta_rule/pallas_gpu.py as the API runs it (its
                        defaults), precision="highest" (TF32x3 kernel dots)
    pallas_gpu_default  the same at precision="default" (bf16 dot operands, fp32 accumulation;
                        since the twelfth session prep="auto", state_pass="auto" and
                        caller_layout=None are the Mosaic prep forward, state forward, dh and
                        dqk kernels, with q, k, v, o and their gradients in the caller's
                        layout, where they take the shape: every issue shape)
    pallas_gpu_default_v11  the eleventh session's default: the Mosaic prep forward, state
                        forward and dh kernel (state_pass="mosaic_dh"), XLA transposes
    pallas_gpu_default_callerlayout  pallas_gpu_default_v11 with caller_layout=True: the
                        kernels read q, k, v, dO and write o, dq, dk, dv in [B, T, HV * d],
                        no XLA transposes of them (eleventh session; timed in the twelfth)
    pallas_gpu_mosaic_dqk, pallas_gpu_mosaic_dqk_callerlayout  the eleventh's default with the
                        split backward's parallel kernel in Mosaic GPU too (state_pass=
                        "mosaic_dqk", pallas_mgpu_dqk.py), without and with caller_layout;
                        the second is the twelfth session's default
    Every variant but pallas_gpu_default that does not name caller_layout runs without it.
    pallas_gpu_default_v9  the ninth and tenth sessions' default: the Triton prep
                        (prep="pallas_splitbwd") and state_pass="mosaic_splitbwd"
    Every variant below that names no prep runs the Triton one, prep="pallas_splitbwd" (the
    default until the eleventh session), so that each keeps the meaning it was timed with.
    pallas_gpu_xlaprep, pallas_gpu_default_xlaprep  the chunk-local WY transform in XLA
    pallas_gpu_default_splitprep / _fusedprep  the prep as three kernels each way
                        (prep="pallas_split") / one each way (prep="pallas")
    pallas_gpu_default_fused  the sixth session's default: prep="pallas_split" and the fused
                        state pass both ways (state_pass="triton")
    pallas_gpu_split    state_pass="split" (pallas_gpu_split.py both ways)
    pallas_gpu_splitbwd state_pass="splitbwd" at "default": the Triton forward state pass, where
                        "auto" (since the ninth session) picks the Mosaic one
    pallas_gpu_mosaic   the Mosaic GPU state pass (pallas_mgpu.py; K padded to at most 128, V
                        a multiple of 64: all four issue shapes)
    pallas_gpu_mosaic_splitbwd  its forward (saving delta) with the Triton split backward
    pallas_gpu_mosaic_dh  the same with the split backward's sequential kernel in Mosaic GPU
                        (pallas_mgpu_dh.py; ninth session, untimed)
    pallas_gpu_default_{bv16,bv32,bv64,bw8,s2}  launch variants: V tiles of 16, 32 or 64
                        (the default picks 32 or 64 by the SM count), 8 warps for the split
                        backward, 2 pipeline stages
    pallas_gpu_default_exactdecays  "default" with exact_decays=True: each in-chunk log-decay
                        difference summed over its own terms (masked [C, C] scans), as
                        "highest" does; the default at "default" takes G_i - G_j (ninth
                        session)
    pallas_gpu_default_c32  chunk_size=32
    pallas_gpu_mosaic_prep  prep="mosaic": the prep forward in Mosaic GPU (pallas_mgpu_prep.py,
                        TMA + wgmma, G and logF from XLA) with the Triton backward kernels and
                        state_pass="mosaic_splitbwd" (tenth session; timed in the eleventh)
    pallas_gpu_default_xladecays  "default" with decays_in_xla: G and logF summed by XLA before
                        the prep kernels, which run no scans (pip Triton: layout conversions
                        22 -> 17 in the prep forward, decay kernel spills 84 -> 32 B; tenth
                        session, untimed)
    pallas_gpu_default_decay8w3s  the prep backward's decay kernel at 8 warps, 3 stages (alone
                        0.219 against 0.262 ms at 4 warps, 1 stage: eighth session's sweep;
                        tenth session, untimed end to end)
    pallas_gpu_default_f32qkv  q, k, v cast to fp32 first, so the prep kernels read fp32 (as
                        every caller's did before the seventh session)
The XLA rows (xla_chunked, xla_chunked_default) and fla are described in gdn_kernel.py.
"""

SHAPES = ["B=4,T=4096,H=16,K=128,V=128", "B=8,T=2048,H=8,K=128,V=128",
          "B=1,T=8192,H=32,K=128,V=128", "B=1,T=8192,H=30,K=96,V=192"]
# The XLA reference through the API, name -> its precision.
XLA_IMPLS = {"xla_chunked": "highest", "xla_chunked_default": "default"}
# name -> keyword arguments of chunk_gated_delta_rule_pallas_gpu (or of the API, for XLA_IMPLS)
JAX_IMPLS = {
    **{name: dict(implementation="chunked", precision=p) for name, p in XLA_IMPLS.items()},
    "pallas_gpu": dict(precision="highest"),
    "pallas_gpu_default": dict(precision="default"),
    "pallas_gpu_default_v9": dict(precision="default", state_pass="mosaic_splitbwd"),
    "pallas_gpu_default_v11": dict(precision="default", prep="auto", state_pass="mosaic_dh"),
    "pallas_gpu_default_callerlayout": dict(precision="default", prep="auto",
                                            state_pass="mosaic_dh", caller_layout=True),
    "pallas_gpu_mosaic_dqk": dict(precision="default", prep="auto", state_pass="mosaic_dqk"),
    "pallas_gpu_mosaic_dqk_callerlayout": dict(precision="default", prep="auto",
                                               state_pass="mosaic_dqk", caller_layout=True),
    "pallas_gpu_xlaprep": dict(precision="highest", prep="xla"),
    "pallas_gpu_default_xlaprep": dict(precision="default", prep="xla"),
    "pallas_gpu_default_splitprep": dict(precision="default", prep="pallas_split"),
    "pallas_gpu_default_fusedprep": dict(precision="default", prep="pallas"),
    "pallas_gpu_default_fused": dict(precision="default", prep="pallas_split",
                                     state_pass="triton"),
    "pallas_gpu_split": dict(precision="default", state_pass="split"),
    # the Triton forward state pass (the default at "default" until the ninth session)
    "pallas_gpu_splitbwd": dict(precision="default", state_pass="splitbwd"),
    "pallas_gpu_mosaic": dict(precision="default", state_pass="mosaic"),
    "pallas_gpu_mosaic_splitbwd": dict(precision="default", state_pass="mosaic_splitbwd"),
    "pallas_gpu_mosaic_dh": dict(precision="default", state_pass="mosaic_dh"),
    "pallas_gpu_default_bv32": dict(precision="default", block_v=32),
    "pallas_gpu_default_bv64": dict(precision="default", block_v=64),
    # 16-wide V tiles: twice the sequential programs of 32 where B*HV is small (not yet timed)
    "pallas_gpu_default_bv16": dict(precision="default", block_v=16),
    # the masked-scan in-chunk decays at "default" (its default until the ninth session)
    "pallas_gpu_default_exactdecays": dict(precision="default", exact_decays=True),
    # 32-row chunks: lighter chunk-parallel programs, twice the sequential steps
    "pallas_gpu_default_c32": dict(precision="default", chunk_size=32),
    "pallas_gpu_default_bw8": dict(precision="default", num_warps_bwd=8),
    "pallas_gpu_mosaic_prep": dict(precision="default", prep="mosaic",
                                   state_pass="mosaic_splitbwd"),
    "pallas_gpu_default_xladecays": dict(precision="default", decays_in_xla=True),
    "pallas_gpu_default_decay8w3s": dict(precision="default",
                                         prep_launch={"gdr_prep_bwd_decay": (8, 3)}),
    "pallas_gpu_default_s2": dict(precision="default", num_stages=2),
    # q, k, v upcast to fp32 before the call: the path bf16 callers took before the seventh
    # session handed them to the prep kernels in bf16 (the baseline of that change)
    "pallas_gpu_default_f32qkv": dict(precision="default", qkv_dtype="float32"),
}
for _name, _kw in JAX_IMPLS.items():  # the Triton prep and the transposed layout wherever a
    if _name not in XLA_IMPLS and _name != "pallas_gpu_default":  # variant names neither
        _kw.setdefault("prep", "pallas_splitbwd")
        _kw.setdefault("caller_layout", False)
# In the order they run (fla, then XLA, then ours): the goal's comparisons first, so that a run
# cut short by --budget-s loses the least telling variants.
DEFAULT_IMPLS = ("fla", "xla_chunked", "xla_chunked_default", "pallas_gpu_default",
                 "pallas_gpu_default_v11", "pallas_gpu_default_v9",
                 "pallas_gpu_default_fused", "pallas_gpu_default_splitprep",
                 "pallas_gpu_default_fusedprep", "pallas_gpu_split", "pallas_gpu_mosaic_splitbwd",
                 "pallas_gpu_mosaic", "pallas_gpu_default_xlaprep", "pallas_gpu",
                 "pallas_gpu_xlaprep")
ALL_IMPLS = tuple(JAX_IMPLS) + ("fla",)
# The rows `--impl fla` gives: fla timed by do_bench (host launches included) and replayed from
# a CUDA graph (GPU time alone; see gdn_kernel_fla._graph_row).
FLA_IMPLS = ("fla", "fla_cudagraph")
