"""Where a training step's device time goes: trace a few steps, group the GPU kernels.

Used by `train_throughput.py --profile DIR`. The trace is JAX's own profiler
(`jax.profiler.trace(..., create_perfetto_trace=True)`), read back from its Chrome-trace JSON,
so no TensorBoard or Nsight is needed on the machine. Kernels are grouped two ways:

* by kind, from the kernel name (matrix products, attention, collectives, copies, the
  triangular solves of the chunked gated delta rule, XLA fusions, other);
* by the layer that issued them, from the HLO op's source path when the trace carries one
  (`tf_op` / `long_name` / `hlo_op` arguments), matched against our module names.

Totals are summed kernel time, which can exceed wall time when streams overlap; the step
time from the timing loop is the honest denominator and is reported next to them.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from pathlib import Path

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
LAYERS = (("gdn", re.compile(r"GDN|gated_?delta", re.I)),
          ("attention", re.compile(r"Attention|attention|attn", re.I)),
          ("mlp", re.compile(r"MLP|mlp", re.I)),
          ("embed/logits", re.compile(r"embed|logits|unembed|lm_head|cross_entropy|z_loss",
                                      re.I)),
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


def summarize(log_dir: str | Path, steps: int, step_time_s: float, top: int = 25) -> dict:
    path = find_trace(log_dir)
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    events = device_events(trace)
    by_kind, by_layer, by_name = (collections.Counter() for _ in range(3))
    source_of = {}
    for e in events:
        us = float(e["dur"])
        args = e.get("args", {}) or {}
        source = " ".join(str(args.get(k, "")) for k in ("tf_op", "long_name", "hlo_op",
                                                          "name"))
        by_kind[kind_of(e["name"])] += us
        by_layer[layer_of(source)] += us
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
                            for row in table(by_name)[:top]]}


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
    return "\n".join(lines)
