"""Sweep state without training: run claims as the runner uses them (records written by a
runner before claims recorded a pid namespace included), and `sweep merge`."""

import json
import os
import subprocess
import sys
import time

from hybrid_jax.sweep import cli
from hybrid_jax.sweep.ladder import load_ladder
from hybrid_jax.sweep.runner import Sweep
from hybrid_jax.storage.claims import Claim
from hybrid_jax.storage.results import append_rows, read_rows
from hybrid_jax.sweep.state import HOST, write_json

from tests.helpers.sweeps import micro_ladder


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_exclusive_and_released(tmp_path):
    a, b = Claim(tmp_path), Claim(tmp_path)
    assert a.try_acquire()
    assert not b.try_acquire()  # this process is alive: the lock is held
    assert a.holder()["runner_pid"] == os.getpid()
    a.release()
    assert b.try_acquire()


def test_stale_lock_of_a_dead_process_is_reclaimed(tmp_path):
    lock = Claim(tmp_path)
    pid = dead_pid()
    (tmp_path / "lock").write_text(json.dumps({"host": HOST, "runner_pid": pid,
                                               "worker_pid": pid, "time": time.time()}))
    assert lock.holder() is None
    assert lock.try_acquire()
    assert json.loads((tmp_path / "lock").read_text())["runner_pid"] == os.getpid()


def test_live_worker_keeps_the_lock_after_its_runner_died(tmp_path):
    lock = Claim(tmp_path)
    (tmp_path / "lock").write_text(json.dumps({"host": HOST, "runner_pid": dead_pid(),
                                               "worker_pid": os.getpid(), "time": time.time()}))
    assert lock.holder() is not None and not lock.try_acquire()


def test_other_hosts_lock_goes_stale_without_heartbeat(tmp_path):
    lock = Claim(tmp_path, stale_after=60)
    (tmp_path / "lock").write_text(json.dumps({"host": "elsewhere", "runner_pid": 1}))
    assert lock.holder() is not None
    old = time.time() - 120
    os.utime(tmp_path / "lock", (old, old))
    assert lock.holder() is None and lock.try_acquire()


def row(run_id, tokens, loss=2.0):
    return {"run_id": run_id, "tokens": tokens, "val": {"val": {"loss": loss, "bpb": 3.0}}}


def test_merge_dedupes_rows_and_copies_done_markers(tmp_path):
    ladder = micro_ladder(tmp_path / "l.yaml", tmp_path / "store")
    mine = Sweep(load_ladder(ladder), tmp_path / "mine")
    theirs = Sweep(load_ladder(ladder), tmp_path / "theirs")
    a, b = (s.run_id for s in mine.runs)
    # mine has run a's first point; theirs finished both runs (b completely: done.json)
    append_rows(mine.root, [row(a, 10)])
    append_rows(theirs.root, [row(a, 10), row(a, 20), row(b, 10), row(b, 20),
                                 row("not-in-this-ladder", 5)])
    theirs_b = theirs.root / "runs" / b
    theirs_b.mkdir(parents=True)
    write_json(theirs_b / "done.json", {"run_id": b, "rows": [row(b, 10), row(b, 20)]})
    assert cli.main(["merge", str(ladder), "--root", str(mine.root), str(theirs.root)]) == 0
    assert cli.main(["merge", str(ladder), "--root", str(mine.root), str(theirs.root)]) == 0
    got = sorted((r["run_id"], r["tokens"]) for r in read_rows(mine.root))
    assert got == [(a, 10), (a, 20), (b, 10), (b, 20)]
    states = {s.run_id: mine.state(s) for s in mine.runs}
    assert states == {a: "pending", b: "done"}  # b will not be trained again here
