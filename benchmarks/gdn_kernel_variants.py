"""The gated delta rule implementations `gdn_kernel.py` times, by name, and the benchmark shapes.

Ours (kernels/gated_delta_rule/gpu/chunk.py, its one path: the Mosaic GPU kernels where they
take the shape, else Triton; `config.plan`):
    pallas_gpu          precision="highest" (TF32x3 kernel dots: every kernel Triton)
    pallas_gpu_default  precision="default" (bf16 dot operands, fp32 accumulation): what "auto"
                        runs on a GPU; at the four benchmark shapes (bf16 inputs) every kernel
                        in Mosaic GPU, q, k, v, o and their gradients in the caller's layout
    pallas_gpu_default_c32  chunk_size=32: the same at "default" with every kernel in Triton
                        (the Mosaic ones take chunk 64 only): the Triton fallback timed
    pallas_gpu_default_f32qkv  q, k, v cast to fp32 first, so the kernels read fp32 (what
                        fp32 callers get)
Variants that lost a benchmark were deleted; their numbers are in experiments/LOG.md. Launch
knobs (`KernelConfig`) are swept kernel by kernel with gdn_kernel.py --breakdown-launch.
The XLA rows (xla_chunked, xla_chunked_default), fla and jla are described in gdn_kernel.py.
"""

SHAPES = ["B=4,T=4096,H=16,K=128,V=128", "B=8,T=2048,H=8,K=128,V=128",
          "B=1,T=8192,H=32,K=128,V=128", "B=1,T=8192,H=30,K=96,V=192"]
# The XLA reference through the API, name -> its precision.
XLA_IMPLS = {"xla_chunked": "highest", "xla_chunked_default": "default"}
# name -> keyword arguments of chunk_gated_delta_rule_pallas_gpu ("config": KernelConfig's;
# "qkv_dtype": q, k, v cast to it first), or of the API for XLA_IMPLS
JAX_IMPLS = {
    **{name: dict(implementation="chunked", precision=p) for name, p in XLA_IMPLS.items()},
    "pallas_gpu": dict(precision="highest"),
    "pallas_gpu_default": dict(precision="default"),
    "pallas_gpu_default_c32": dict(precision="default", chunk_size=32),
    "pallas_gpu_default_f32qkv": dict(precision="default", qkv_dtype="float32"),
}
# Peers that run in this JAX process (a benchmark dependency, carried as a wheel; never a
# runtime one): name -> how gdn_kernel.jax_fn calls it.
PEER_IMPLS = ("jla",)
# Each shape runs the JAX rows (XLA, then jla and ours) and then fla's child process, which
# takes minutes (torch, Triton's autotuning): a run cut short by --budget-s keeps ours against
# jla and loses fla first.
DEFAULT_IMPLS = ("fla", "xla_chunked", "xla_chunked_default", "jla", "pallas_gpu_default",
                 "pallas_gpu_default_c32", "pallas_gpu")
ALL_IMPLS = tuple(JAX_IMPLS) + PEER_IMPLS + ("fla",)
# The rows `--impl fla` gives: fla timed by do_bench (host launches included) and replayed from
# a CUDA graph (GPU time alone; see gdn_kernel_fla._graph_row).
FLA_IMPLS = ("fla", "fla_cudagraph")
