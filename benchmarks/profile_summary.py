"""Where a training step's device time goes: trace a few steps, group the GPU kernels.

Used by `train_throughput.py --profile DIR`. The trace is JAX's own profiler
(`jax.profiler.trace(..., create_perfetto_trace=True)`), read back from its Chrome-trace JSON,
so no TensorBoard or Nsight is needed on the machine. Kernels are grouped two ways:

* by kind, from the kernel name (matrix products, attention, collectives, copies, the
  triangular solves of the chunked gated delta rule, XLA fusions, other);
* by the layer that issued them, from the HLO op's source path when the trace carries one
  (`tf_op` / `long_name` / `hlo_op` arguments), matched against our module names. Inside CUDA
  graphs (XLA's command buffers, GPU's default) it does not; given the compiled program's HLO
  text, a kernel that runs an HLO instruction is traced to the Python call stack that built it
  (`hlo_sources.py`), and the innermost function naming a layer decides;
* with the HLO text, also by the innermost source line of ours (forward and backward apart).

Totals are summed kernel time, which can exceed wall time when streams overlap; the step
time from the timing loop is the honest denominator and is reported next to them.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import sys
from pathlib import Path

# hlo_sources sits beside this file, which is imported both as a script's neighbour
# (train_throughput.py) and as benchmarks.profile_summary (gdn_kernel_trace.py)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hlo_sources import innermost, kernel_sources  # noqa: E402

KINDS = (  # first match wins; order matters (an attention gemm is attention)
    ("attention", re.compile(r"cudnn|flash|fmha|sdpa|attention", re.I)),
    ("collective", re.compile(r"nccl|all[-_]?reduce|all[-_]?gather|reduce[-_]?scatter|"
                              r"collective|all[-_]?to[-_]?all", re.I)),
    ("triangular_solve", re.compile(r"trsm|triangular", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|xmma|wgmma|cublas|sm90_|sm80_|nvjet|matmul|"
                          r"\bdot\b|dot_", re.I)),
    ("copy", re.compile(r"memcpy|memset|copy|transpose", re.I)),
    ("fusion", re.compile(r"fusion|reduce|loop_|input_|scatter|gather|slice", re.I)),
)
LAYERS = (("gdn", re.compile(r"GDN|gated_?delta|CausalConv|\bgdr_", re.I)),
          ("attention", re.compile(r"Attention|attention|attn", re.I)),
          ("mlp", re.compile(r"MLP|mlp|SwiGLU", re.I)),
          ("norm", re.compile(r"RMSNorm|LayerNorm")),
          ("embed/logits", re.compile(r"embed|logits|unembed|lm_head|cross_entropy|z_loss|"
                                      r"token_losses|LM\.head", re.I)),
          ("optimizer", re.compile(r"adam|optax|clip|global_norm|apply_updates", re.I)))


def kind_of(name: str) -> str:
    for kind, pat in KINDS:
        if pat.search(name):
            return kind
    return "other"


def layer_of(source: str) -> str:
    for layer, pat in LAYERS:
        if pat.search(source):
            return layer
    return "unattributed"


def layer_of_stack(frames) -> str:
    """The layer of the innermost frame whose function names one (`hlo_sources.Frame`s,
    innermost first): an MLP inside a GDN block is "mlp", the block's own work "gdn"."""
    for frame in frames:
        layer = layer_of(frame.function)
        if layer != "unattributed":
            return layer
    return "unattributed"


def find_trace(log_dir: str | Path) -> Path:
    found = sorted(Path(log_dir).rglob("*.trace.json.gz")) + \
        sorted(Path(log_dir).rglob("perfetto_trace.json.gz"))
    if not found:
        raise FileNotFoundError(f"no *.trace.json.gz / perfetto_trace.json.gz under {log_dir}")
    return found[-1]


def device_events(trace: dict) -> list[dict]:
    """Complete events ('X') on processes whose name says GPU/device (not host threads)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    dev = {pid for pid, n in names.items() if re.search(r"GPU|/device:|stream", n, re.I)
           and not re.search(r"host|CPU", n)}
    return [e for e in events if e.get("ph") == "X" and e.get("pid") in dev and "dur" in e]


def trace_calls(fn, args, calls, log_dir):
    """Call fn(*args) once, then `calls` times under JAX's profiler, its trace under log_dir."""
    import jax
    jax.block_until_ready(fn(*args))
    with jax.profiler.trace(str(log_dir), create_perfetto_trace=True):
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)


def device_ms(fn, args, calls):
    """GPU ms a call of fn(*args), from a profiler trace of `calls` calls: the sum of the
    device's kernel durations (NaN on a host without a GPU). Wall time over a few calls of a
    kernel of tens of microseconds is partly the host's dispatch; this is not."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="device_ms_") as d:
        trace_calls(fn, args, calls, d)
        with gzip.open(find_trace(d)) as f:
            events = device_events(json.load(f))
    # a CPU host's trace has no device process: no GPU time to report
    return sum(e["dur"] for e in events) / 1e3 / calls if events else float("nan")


def summarize(log_dir: str | Path, steps: int, step_time_s: float, top: int = 25,
              hlo_text: str | None = None, root: str | None = None) -> dict:
    """The trace under log_dir, grouped. hlo_text: the traced program's optimized HLO (its
    `compile().as_text()`), to attribute kernels inside CUDA graphs; root: the path prefix of
    our source files (the innermost frame under it names a kernel's line)."""
    path = find_trace(log_dir)
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    events = device_events(trace)
    hlo = kernel_sources(hlo_text) if hlo_text else {}
    by_kind, by_layer, by_name, by_line = (collections.Counter() for _ in range(4))
    source_of = {}
    for e in events:
        us = float(e["dur"])
        args = e.get("args", {}) or {}
        source = " ".join(str(args.get(k, "")) for k in ("tf_op", "long_name", "hlo_op",
                                                          "name"))
        layer = layer_of(source)
        compiled = hlo.get(e["name"])
        if compiled is not None:
            if layer == "unattributed":
                layer = layer_of_stack(compiled.frames)
            frame = innermost(compiled, root) if root else None
            if frame is not None:
                where = f"{frame.file[len(root):]}:{frame.line} {frame.function}"
                # "bwd": made by autodiff's transpose; "fwd": the rest (the optimizer too)
                by_line[(where, "bwd" if compiled.backward else "fwd")] += us
            source = compiled.op_name
        elif layer == "unattributed":
            layer = layer_of(e["name"])  # Pallas kernels carry their own names (gdr_...)
        by_kind[kind_of(e["name"])] += us
        by_layer[layer] += us
        by_name[e["name"]] += us
        source_of.setdefault(e["name"], source[:200])
    total = sum(by_kind.values())
    per_step = 1e-6 * total / max(steps, 1)

    def table(counter):
        return [{"name": k, "ms_per_step": 1e-3 * v / steps, "share": v / total if total else 0}
                for k, v in counter.most_common()]

    return {"trace": str(path), "steps": steps, "events": len(events),
            "kernel_s_per_step": per_step, "step_time_s": step_time_s,
            "kernel_busy_fraction": per_step / step_time_s if step_time_s else None,
            "by_kind": table(by_kind), "by_layer": table(by_layer),
            "top_kernels": [{**row, "source": source_of[row["name"]]}
                            for row in table(by_name)[:top]],
            "top_lines": [{**row, "name": row["name"][0], "pass": row["name"][1]}
                          for row in table(by_line)[:top]]}


def format_summary(s: dict) -> str:
    lines = [f"profile: {s['events']} kernel events over {s['steps']} steps; kernels "
             f"{1e3 * s['kernel_s_per_step']:.1f} ms/step of {1e3 * s['step_time_s']:.1f} ms "
             f"step time ({100 * (s['kernel_busy_fraction'] or 0):.0f}% busy)"]
    for title in ("by_kind", "by_layer"):
        lines.append(f"  {title}: " + ", ".join(
            f"{r['name']} {r['ms_per_step']:.2f} ms ({100 * r['share']:.0f}%)"
            for r in s[title] if r["share"] >= 0.005))
    lines.append("  top kernels:")
    lines += [f"    {r['ms_per_step']:8.3f} ms {100 * r['share']:5.1f}%  {r['name'][:90]}"
              for r in s["top_kernels"][:12]]
    if s.get("top_lines"):
        lines.append("  top source lines (XLA's kernels, from the HLO):")
        lines += [f"    {r['ms_per_step']:8.3f} ms {100 * r['share']:5.1f}%  {r['pass']}  "
                  f"{r['name'][:90]}" for r in s["top_lines"][:15]]
    return "\n".join(lines)
