"""`hybrid-jax` command line: a thin dispatcher to each subcommand's own module.

Each subcommand module exposes `main(argv: list[str]) -> int`. Modules are imported only when
their subcommand runs, so `hybrid-jax models` never imports orbax or TensorFlow.
"""

from __future__ import annotations

import difflib
import importlib
import sys

SUBCOMMANDS = {
    "models": ("hybrid_jax.presets_cli", "list presets with parameter and FLOP counts"),
    "data": ("hybrid_jax.data.cli", "build/inspect token stores and tokenizers"),
    "train": ("hybrid_jax.train.cli", "train one run from a YAML config or preset, with key.sub=value overrides"),
    "sweep": ("hybrid_jax.sweep.cli", "plan, run, inspect and merge ladders of runs"),
    "fit": ("analysis.cli", "fit scaling laws to sweep results, write fits.json, REPORT.md, figures"),
    "compile": ("hybrid_jax.compile.cli",
                "compile the sharded train step for a TPU topology ahead of time: memory, FLOPs"),
    "export": ("hybrid_jax.hf.export_cli",
               "write a run's checkpoint as a Hugging Face olmo3 / olmo_hybrid checkpoint"),
    "import": ("hybrid_jax.hf.import_cli",
               "read a Hugging Face olmo3 / olmo_hybrid checkpoint into a model directory"),
    "generate": ("hybrid_jax.generate.cli",
                 "complete prompts with a checkpoint (cached decoding; greedy or sampled)"),
    "eval": ("hybrid_jax.evaluate.cli",
             "evaluate a checkpoint: ppl (loss, bits-per-byte), long-context (RULER-style), harness (lm-eval)"),
    "expressivity": ("hybrid_jax.expressivity.cli",
                     "synthetic tasks (parity, S5, MQAR, state recall, code): run SUITE --out DIR; list"),
}


def _usage() -> str:
    lines = ["usage: hybrid-jax COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<14}{help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"hybrid-jax: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
