"""The sweep runner end to end, in real child processes, on micro ladders (seconds per run):
rows complete and unique, SIGKILL of the runner then restart resumes, two runners on a gs://
root never train the same run, a failing run is retried then marked failed while the others
complete; numeric flags out of range are refused before anything starts. Commands that
train nothing (status, a rerun with nothing to do) run in this process."""

import json
import os
import re
import signal
import subprocess

import pytest

from analysis.results import load_results

from hybrid_jax.storage.paths import read_text_or_none
from tests.helpers import REPO
from tests.helpers.gcs import EMULATOR_ENV, gcs_emulator, gs_prefix  # noqa: F401 (fixture)
from tests.helpers.sweeps import (build_micro_store, cache_dir, lines, micro_ladder, rows,
                                  run_dirs, run_sweep, sweep_cmd, sweep_env, sweep_here,
                                  wait_for)

# A runner looks at its workers every --poll seconds (default 1): at 0.2 s a test does not wait
# most of a second after each attempt ends.
FAST_POLL = ("--poll", "0.2")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_micro_store(tmp_path_factory.mktemp("data") / "store")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return sweep_env(cache_dir(tmp_path_factory))


def keys(root):
    return [(r["run_id"], r["tokens"]) for r in rows(root)]


def assert_complete(root, n_runs, n_points):
    got = keys(root)
    assert len(got) == len(set(got)) == n_runs * n_points, got
    assert len({k[0] for k in got}) == n_runs
    for d in run_dirs(root):
        assert (d / "done.json").exists(), d
        # metrics.jsonl reads as one uninterrupted run: every step exactly once
        steps = [r["step"] for r in lines(d / "metrics.jsonl") if r["kind"] == "train"]
        assert steps == list(range(1, len(steps) + 1))


def test_end_to_end_rows_complete_unique_and_status_done(store, env, tmp_path):
    ladder, root = micro_ladder(tmp_path / "l.yaml", store), tmp_path / "root"
    out = run_sweep(env, "run", ladder, "--root", root, "--parallel", "2",
                    "--report-every", "0.5", *FAST_POLL).stdout
    assert_complete(root, 2, 2)
    # the driver's running overview: runs by state and the sweep's ETA
    assert re.search(r"^\[sweep\] \d done, \d running, \d pending, 0 failed, 0 refused, "
                     r"0 invalid; eta (\d+:\d\d|\?)$", out, re.M), out
    results = load_results(root / "results.jsonl", val_set="val")  # the analysis' own checks
    assert len(results.points) == 4 and results.points.families == ["transformer"]
    row = rows(root)[0]
    for key in ("ladder", "size", "seq_len", "lr", "batch_tokens", "wall_s", "git_sha",
                "versions", "device_kind", "n_params_total", "flops"):
        assert key in row, key
    assert row["ladder"] == "micro" and row["seq_len"] == 32 and row["batch_tokens"] == 256
    from hybrid_jax.flops import train_flops
    from hybrid_jax.sweep.ladder import load_ladder

    spec = {r.run_id: r for r in load_ladder(ladder).expand(root)[0]}[row["run_id"]]
    assert row["flops"] == train_flops(spec.config.model, 32, row["tokens"])
    assert row["n_params"] == spec.n_params and row["tokens"] in spec.hyper.decay_tokens
    status = sweep_here(env, "status", ladder, "--root", root).stdout
    table = [line.split() for line in status.splitlines() if line.startswith("transformer-")]
    assert [t[1] for t in table] == ["done", "done"] and all("100%" in t for t in table)
    assert "2 runs: 2 done; 4/4 result rows" in status
    # a second runner trains nothing and adds nothing
    before = (root / "results.jsonl").read_text()
    assert "0 to do" in sweep_here(env, "run", ladder, "--root", root).stdout
    assert (root / "results.jsonl").read_text() == before


def test_sigkill_the_runner_then_restart_resumes(store, env, tmp_path):
    sizes = {"long": {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 32}}
    # points at steps 82, 164 and 247; the checkpoint at step 50 comes before the first, and
    # the kill, which lands a few steps after it, leaves more than 150 steps of the run to go
    ladder = micro_ladder(tmp_path / "l.yaml", store, sizes=sizes, ratios=(4, 8, 12))
    root = tmp_path / "root"
    proc = subprocess.Popen(sweep_cmd("run", ladder, "--root", root, *FAST_POLL), env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def past_first_point():
        dirs = run_dirs(root) if (root / "runs").exists() else []
        metrics = dirs[0] / "metrics.jsonl" if dirs else None
        if not metrics or not metrics.exists():
            return False
        return any(r.get("kind") == "eval" for r in lines_safe(metrics)) and any(
            p.name.isdigit() for p in (dirs[0] / "checkpoints").iterdir())

    wait_for(past_first_point, 180, "the first scaling point", proc)
    lock = json.loads((run_dirs(root)[0] / "lock").read_text())
    worker = lock["worker_pid"]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # the worker got SIGTERM from the kernel (PR_SET_PDEATHSIG), saves a checkpoint, exits
    wait_for(lambda: not _alive(worker), 60, "the orphaned worker to exit")
    run_dir = run_dirs(root)[0]
    assert not (run_dir / "done.json").exists()
    run_sweep(env, "run", ladder, "--root", root, *FAST_POLL)
    assert_complete(root, 1, 3)
    history = lines(run_dir / "attempts.jsonl")
    trains = [r for r in history if r["event"] == "train"]
    assert trains[0]["status"] == "interrupted" and trains[-1]["status"] == "completed"
    # the killed runner wrote no "exit" event; its attempt still counts
    assert [r["attempt"] for r in history if r["event"] == "start"] == [1, 2]
    assert [r["attempt"] for r in trains] == ["1", "2"]
    assert trains[-1]["resumed_from_step"] > 0  # resumed, not restarted from scratch
    assert trains[-1]["resumed_from_step"] >= trains[0]["steps"] - 1


def test_two_runners_at_once_on_a_gs_root_never_train_the_same_run(store, env, tmp_path,
                                                                   gcs_emulator):
    """Both drivers keep the sweep in a bucket (the emulator): claims are GCS objects created
    if absent, so each run has one owner, ever."""
    sizes = {f"s{i}": {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 16 * (i + 1)}
             for i in range(3)}
    # one scaling point a run: what is checked is who trains each run, not its points
    ladder = micro_ladder(tmp_path / "l.yaml", store, sizes=sizes, ratios=(2,))
    root = gs_prefix(gcs_emulator.bucket, "two-runners")
    env = {**env, **{k: os.environ[k] for k in EMULATOR_ENV}}
    cmd = sweep_cmd("run", ladder, "--root", root, *FAST_POLL)
    procs = [subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert_complete(root, 3, 1)
    owners = set()
    for d in run_dirs(root):
        exits = [r for r in lines(d / "attempts.jsonl") if r["event"] == "exit"]
        assert len(exits) == 1 and exits[0]["outcome"] == "completed", (d, exits)
        starts = [line for line in read_text_or_none(d / "worker.log").splitlines()
                  if line.startswith("[sweep] run ")]
        assert len(starts) == 1, starts  # one worker, one owner, ever
        owners.add(exits[0]["runner_pid"])
    assert owners <= {p.pid for p in procs}


def test_a_failing_run_is_retried_then_marked_failed_and_the_rest_completes(store, env, tmp_path):
    sizes = {"ok": {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 32},
             "nan": {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 32,
                     "overrides": ["optim.lr=1e30"]},  # diverges: NaN at step 2
             "invalid": {"d_model": 16, "n_layers": 2, "n_heads": 3, "mlp_hidden": 32},
             "greedy": {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 32,
                        "overrides": ["data.max_epochs=0.001"]}}
    # one scaling point: the completed run only has to complete
    ladder = micro_ladder(tmp_path / "l.yaml", store, sizes=sizes, ratios=(2,))
    root = tmp_path / "root"
    proc = run_sweep(env, "run", ladder, "--root", root, "--max-retries", "1", *FAST_POLL,
                     check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "invalid run transformer/invalid" in proc.stdout and "n_heads" in proc.stdout
    by_size = {d.name.split("-")[1]: d for d in run_dirs(root)}
    assert set(by_size) == {"ok", "nan", "greedy"}
    assert (by_size["ok"] / "done.json").exists()
    # past data.max_epochs: refused before training, with the missing-token message
    refused = json.loads((by_size["greedy"] / "failed.json").read_text())
    assert refused["kind"] == "refused" and "training tokens missing" in refused["error"]
    assert not (by_size["greedy"] / "worker.log").exists()
    failed = json.loads((by_size["nan"] / "failed.json").read_text())
    assert failed["failures"] == 2 and "NonFiniteError" in failed["traceback"]
    history = lines(by_size["nan"] / "attempts.jsonl")
    exits = [r for r in history if r["event"] == "exit"]
    assert [e["outcome"] for e in exits] == ["failed", "failed"]
    assert [r["attempt"] for r in history if r["event"] == "start"] == [1, 2]
    assert {r["run_id"] for r in rows(root)} == {by_size["ok"].name}
    status = sweep_here(env, "status", ladder, "--root", root).stdout
    assert "failed" in status and "invalid" in status and " done " in status
    # a restarted runner leaves the failed run alone (--retry-failed would try it again) and
    # checks the refused one again (the store may have grown): refused again, nothing trained
    again = sweep_here(env, "run", ladder, "--root", root, check=False).stdout
    assert "1 to do" in again and f"refused {by_size['greedy'].name}" in again
    assert lines(by_size["nan"] / "attempts.jsonl") == history  # no new attempt


def lines_safe(path):
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("args, message", [
    (["run", "--parallel", "-2"], "--parallel must be a positive integer, got -2"),
    (["run", "--parallel", "0"], "--parallel must be a positive integer, got 0"),
    (["run", "--max-retries", "-1"], "--max-retries must be an integer >= 0, got -1"),
    (["run", "--poll", "0"], "--poll must be a positive number of seconds, got 0.0"),
    (["run", "--stale-after", "-5"], "--stale-after must be a positive number of seconds"),
    (["lr-check", "--size", "a", "--parallel", "-1"], "--parallel must be a positive integer"),
    (["lr-check", "--size", "a", "--poll", "nan"], "--poll must be a positive number"),
    (["plan", "--parallel", "0"], "--parallel must be a positive integer, got 0"),
])
def test_out_of_range_numbers_are_refused_in_one_line(tmp_path, capsys, args, message):
    from hybrid_jax.sweep import cli

    ladder = micro_ladder(tmp_path / "l.yaml", tmp_path / "store")
    command, *flags = args
    assert cli.main([command, str(ladder), "--root", str(tmp_path / "root"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "root").exists()


def test_runner_refuses_no_slots():
    from hybrid_jax.sweep.runner import Runner

    with pytest.raises(ValueError, match="parallel must be a positive integer, got -2"):
        Runner(None, parallel=-2)


def test_attempts_are_numbered_by_start_events_killed_runners_included(tmp_path, monkeypatch):
    """A runner killed with SIGKILL leaves a start event and no exit: the next attempt is 2."""
    from hybrid_jax.sweep import runner as R
    from hybrid_jax.sweep.ladder import load_ladder

    sweep = R.Sweep(load_ladder(micro_ladder(tmp_path / "l.yaml", tmp_path / "store")),
                    tmp_path / "root", ["transformer/a"])
    sweep.prepare()
    (spec,) = sweep.runs
    history = spec.run_dir / "attempts.jsonl"

    class FakeWorker:
        pid = os.getpid()

    runner = R.Runner(sweep, parallel=1, say=lambda *a: None)
    monkeypatch.setattr(runner.executor, "start", lambda *a, **k: FakeWorker())
    lock = sweep.lock(spec)
    assert lock.try_acquire()
    runner._start(spec, lock, 0)  # then the runner is "killed": no exit event follows
    assert [r["event"] for r in lines(history)] == ["start"]
    runner.active.clear()
    runner._start(spec, lock, 0)
    assert runner.active[0].attempt == 2
    assert [r["attempt"] for r in lines(history)] == [1, 2]
    # histories from runners that wrote only exit events keep counting from their last number
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "attempts.jsonl").write_text(
        '{"event": "exit", "attempt": 1}\n{"event": "train", "attempt": "2"}\n'
        '{"event": "exit", "attempt": 2}\n{"event": "reset"}\n{"event": "start", "att')
    assert R.attempts_started(legacy) == 2


def test_ladder_evals_are_added_to_every_scaling_points_row(store, env, tmp_path):
    """`evals` in the ladder: ppl on the run's own store, with the training evaluation's
    settings, gives the training evaluation's numbers; the long-context suite's accuracy is in
    the row; and `fit` reads the eval's loss as a validation set."""
    sizes = {"a": {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 32}}
    evals = {"ppl": {"same": {"data": str(store), "max_tokens": 256}},
             "long_context": {"lengths": [400], "tasks": ["niah_single"], "samples": 2,
                              "batch_size": 2, "teacher_forced": True}}  # byte tokens: the
    # task's text needs ~350
    ladder = micro_ladder(tmp_path / "l.yaml", store, sizes=sizes, ratios=(2,), evals=evals)
    root = tmp_path / "root"
    out = run_sweep(env, "run", ladder, "--root", root, *FAST_POLL).stdout
    got = rows(root)
    assert len(got) == 1, out
    for row in got:
        own = {k: v for k, v in row["val"].items() if "/" not in k}
        assert own and {f"same/{k}" for k in own} == set(row["val"]) - set(own)
        for name, r in own.items():
            assert row["val"][f"same/{name}"]["loss"] == pytest.approx(r["loss"], rel=1e-5)
            assert row["val"][f"same/{name}"]["tokens"] == r["tokens"]
        lc = row["evals"]["long_context"]
        assert [(c["task"], c["length"], c["n"]) for c in lc["accuracy"]] == [
            ("niah_single", 400, 2)] and 0 <= lc["mean"] <= 1
        assert lc["answer_logprob_mean"] == lc["accuracy"][0]["answer_logprob"] < 0
    assert "evaluated step" in read_text_or_none(run_dirs(root)[0] / "worker.log")
    results = load_results(root / "results.jsonl", val_set=f"same/{next(iter(own))}")
    assert len(results.points) == 1


def test_bad_ladder_evals_are_refused_in_one_line(tmp_path):
    from hybrid_jax.sweep.ladder import LadderError, load_ladder

    for evals, message in (({"bleu": {}}, "unknown kind(s) ['bleu']"),
                           ({"ppl": {"x": {"dta": "s"}}}, "evals.ppl.x.dta"),
                           ({"long_context": {"lengths": ["0k"]}}, "not a positive length"),
                           ({"long_context": {"lengths": [64], "tasks": ["nope"]}},
                            "unknown ['nope']")):
        path = micro_ladder(tmp_path / "l.yaml", tmp_path / "store", evals=evals)
        with pytest.raises(LadderError, match=re.escape(message)):
            load_ladder(path)
