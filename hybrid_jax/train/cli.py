"""`hybrid-jax train --config CONFIG [key.sub=value ...]` (also `python -m hybrid_jax.train`).

CONFIG is a YAML file (see experiments/configs/) or a model preset name such as `hybrid_tiny`,
which gives a run with every other section at its defaults; `data.store=PATH` and
`train.tokens=N` (or a wsds schedule) are then needed. Overrides are dotted keys, values in
YAML syntax: `optim.lr=1e-3 schedule.decay_tokens=[1e6,2e6] model.d_model=128`.

A run lives in runs/<name>-<hash8> (train.run_dir to choose); starting the same command again
resumes it from its latest checkpoint that passes its checksums. Exit status:
  0   finished;
  75  stopped by SIGTERM/SIGINT after saving a checkpoint (rerun to resume);
  74  a checkpoint could not be saved (e.g. the disk is full; free space, rerun to resume);
  1   the run failed (a non-finite loss, a checkpoint that does not restore);
  2   refused before training: the configuration, the data, or a run directory in use by
      another training process.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: try again
EXIT_SAVE_FAILED = 74  # EX_IOERR


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-jax train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--config", required=True, help="YAML file or model preset name")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    p.add_argument("--coordinator", help="host:port of process 0 (multi-process runs)")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and run directory, check it fits, and exit")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hybrid_jax.config import ConfigError
    from hybrid_jax.data import EpochLimitError, StoreError
    from hybrid_jax.train.weights import ModelCheckpointError
    from hybrid_jax.overrides import OverrideError
    from hybrid_jax.sharding import MeshError
    from hybrid_jax.train.config import load_config
    from hybrid_jax.train.checkpoint import CheckpointRestoreError, CheckpointSaveError
    from hybrid_jax.train.loop import ConfigMismatchError, NonFiniteError, check_fits, train
    from hybrid_jax.train.run_lock import RunLockedError
    from hybrid_jax.train.schedule import build_schedule

    overrides = list(args.overrides)
    for flag, key in (("coordinator", "distributed.coordinator"),
                      ("num_processes", "distributed.num_processes"),
                      ("process_id", "distributed.process_id")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    try:
        cfg = load_config(args.config, overrides)
    except (ConfigError, OverrideError, KeyError, FileNotFoundError) as e:
        return _refused(e)
    try:
        if args.dry_run:
            import jax

            shape = check_fits(cfg, jax.device_count())
            scaling = build_schedule(cfg).decay_end_steps()
            print(json.dumps(cfg.to_dict(), indent=1))
            print(f"run_dir: {cfg.run_dir}\nconfig_hash: {cfg.config_hash()}\n"
                  f"total_steps: {cfg.total_steps}\nscaling_steps: {list(scaling)}\n"
                  f"mesh (data, fsdp, tensor): {shape}")
            return 0
        summary = train(cfg, verbose=not args.quiet)
    except (ConfigError, MeshError, EpochLimitError, ConfigMismatchError) as e:
        return _refused(e)
    except StoreError as e:
        return _refused(e, "data refused")
    except ModelCheckpointError as e:
        return _refused(e, "train.init_from refused")
    except RunLockedError as e:
        return _refused(e, "refused")
    except CheckpointSaveError as e:
        return _failed(e, EXIT_SAVE_FAILED)
    except (NonFiniteError, CheckpointRestoreError) as e:
        return _failed(e, 1)
    return EXIT_INTERRUPTED if summary["status"] == "interrupted" else 0


def _refused(e: BaseException, what: str = "configuration refused") -> int:
    print(f"hybrid-jax train: {what}: {_message(e)}", file=sys.stderr)
    return 2


def _failed(e: BaseException, code: int) -> int:
    print(f"hybrid-jax train: {type(e).__name__}: {e}", file=sys.stderr)
    return code


def _message(e: BaseException) -> str:
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)
