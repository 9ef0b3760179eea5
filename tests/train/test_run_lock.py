"""The run lock without training: refusal by a live holder in another process, reclaim of a
dead or silent holder's lock, one winner of a racing reclaim, release, heartbeats."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybrid_jax.procs import HOST, PID_NAMESPACE
from hybrid_jax.storage import objects
from hybrid_jax.train import run_lock
from tests.helpers.gcs import gcs_bucket, gcs_emulator, gs_prefix  # noqa: F401 (fixtures)
from hybrid_jax.train.run_lock import RunLock, RunLockedError

MODULE = Path(run_lock.__file__)
REPO = MODULE.parents[2]
# Loaded by path so that the child processes start in a blink: `import hybrid_jax.train` would
# import jax.
LOAD = ("import importlib.util, sys, time\n"
        "from pathlib import Path\n"
        "spec = importlib.util.spec_from_file_location('run_lock', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['run_lock'] = m\n"
        "spec.loader.exec_module(m)\n")
HOLD = LOAD + ("with m.RunLock(sys.argv[2]):\n"
               "    print('held', flush=True)\n"
               "    sys.stdin.read()\n")  # until the parent closes our stdin
# Each racer sleeps after its first read, so that all of them judge the stale lock before any
# replaces it: an unconditional replace (unlink, create) would then let two of them win.
RACE = LOAD + ("class Slow(m.LockFile):\n"
               "    slept = False\n"
               "    def read(self):\n"
               "        seen = super().read()\n"
               "        if not self.slept:\n"
               "            self.slept = True\n"
               "            time.sleep(0.3)\n"
               "        return seen\n"
               "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))\n"
               "store = Slow(sys.argv[2])\n"
               "try:\n"
               "    with m.RunLock(sys.argv[2], heartbeat_every=None, store=store):\n"
               "        print('won', flush=True)\n"
               "        time.sleep(2.0)\n"  # so that every loser meets a live holder
               "except m.RunLockedError:\n"
               "    print('refused', flush=True)\n")


def holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(MODULE), str(run_dir)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def lock_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "train.lock").read_text())


def age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_live_holder_in_another_process_refuses_at_once(tmp_path):
    proc = holder(tmp_path / "run")
    try:
        t0 = time.monotonic()
        with pytest.raises(RunLockedError) as e, RunLock(tmp_path / "run"):
            pass
        assert time.monotonic() - t0 < 1.0
        msg = str(e.value)
        assert "\n" not in msg and f"host {HOST}, pid {proc.pid}, started " in msg
        assert "is in use by another training process" in msg and "train.lock" in msg
        assert e.value.holder["pid"] == proc.pid
        assert lock_of(tmp_path / "run")["pid"] == proc.pid  # the refusal left it alone
    finally:
        proc.stdin.close()  # a clean exit releases the lock
        assert proc.wait(timeout=10) == 0
    assert not (tmp_path / "run" / "train.lock").exists()
    with RunLock(tmp_path / "run") as lock:
        assert lock.reclaimed is None and lock_of(tmp_path / "run")["pid"] == os.getpid()


def test_a_killed_holders_lock_is_reclaimed(tmp_path, capfd):
    proc = holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_of(tmp_path)["pid"] == proc.pid
    with RunLock(tmp_path, argv=["train", "x"]) as lock:
        assert lock.reclaimed["pid"] == proc.pid
        got = lock_of(tmp_path)
        assert (got["host"], got["pid"], got["argv"]) == (HOST, os.getpid(), ["train", "x"])
        assert {"pid_start", "started", "started_iso"} <= set(got)
    err = capfd.readouterr().err
    assert f"reclaimed the stale lock {tmp_path / 'train.lock'}" in err
    assert f"pid {proc.pid}" in err and "its process is gone" in err


def test_a_racing_reclaim_has_exactly_one_winner(tmp_path):
    (tmp_path / "train.lock").write_text(json.dumps(
        {"host": HOST, "pid": dead_pid(), "pid_start": None, "pid_ns": PID_NAMESPACE,
         "started": time.time()}))
    go = f"{time.time() + 1.5:.6f}"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(MODULE), str(tmp_path), go],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=30) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert sorted(out.strip() for out, _ in outs) == ["refused"] * 3 + ["won"]
    assert sum("reclaimed the stale lock" in err for _, err in outs) == 1
    assert not (tmp_path / "train.lock").exists()


def test_release_removes_only_our_own_lock(tmp_path):
    with RunLock(tmp_path, heartbeat_every=None):
        pass
    assert not (tmp_path / "train.lock").exists()
    lock = RunLock(tmp_path, heartbeat_every=None)
    lock.acquire()
    theirs = json.dumps({"host": "elsewhere", "pid": 1, "started": time.time()})
    (tmp_path / "train.lock").write_text(theirs)  # taken over while we thought we held it
    assert not lock.heartbeat()
    lock.release()
    assert (tmp_path / "train.lock").read_text() == theirs


def test_heartbeat_keeps_a_foreign_hosts_lock_fresh(tmp_path, monkeypatch, capfd):
    path = tmp_path / "train.lock"
    ours = RunLock(tmp_path, stale_after=60, heartbeat_every=0.05)
    ours.acquire()
    try:
        monkeypatch.setattr(run_lock, "HOST", "another-host")  # now its record is foreign
        age(path, 120)
        time.sleep(0.5)  # the heartbeat thread touches it
        assert time.time() - path.stat().st_mtime < 5
        with pytest.raises(RunLockedError, match=r"heartbeat \d+ s ago, stale after 60 s"):
            RunLock(tmp_path, stale_after=60).acquire()
        age(path, 120)
        assert ours.heartbeat() and time.time() - path.stat().st_mtime < 5
    finally:
        ours.release()
    assert not path.exists()


def test_a_foreign_hosts_lock_without_heartbeat_goes_stale(tmp_path, capfd):
    path = tmp_path / "train.lock"
    path.write_text(json.dumps({"host": "elsewhere", "pid": os.getpid(), "started": 0}))
    lock = RunLock(tmp_path, stale_after=60, heartbeat_every=None)
    with pytest.raises(RunLockedError, match="host elsewhere"):
        lock.acquire()
    age(path, 120)
    with lock:
        assert lock.reclaimed["host"] == "elsewhere" and lock_of(tmp_path)["host"] == HOST
    assert "no heartbeat for 120 s" in capfd.readouterr().err


def test_an_unreadable_lock_is_held_until_stale(tmp_path):
    path = tmp_path / "train.lock"
    path.write_text("")  # a holder between its create and its write, or one cut short
    with pytest.raises(RunLockedError, match="being written or was cut short"):
        RunLock(tmp_path, stale_after=60).acquire()
    age(path, 120)
    with RunLock(tmp_path, stale_after=60) as lock:
        assert lock.reclaimed == {"unreadable": True}


def test_run_dir_is_created_refused_if_a_file_and_untouched_when_disabled(tmp_path):
    with RunLock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b" / "train.lock").exists()
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a directory"), RunLock(tmp_path / "f"):
        pass
    with RunLock(tmp_path / "c", enabled=False) as lock:
        assert lock.heartbeat()
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="heartbeat_every"):
        RunLock(tmp_path, stale_after=10, heartbeat_every=10)


def test_a_gs_run_dir_is_locked_in_the_bucket(gcs_bucket):
    run = gs_prefix(gcs_bucket, "lock-run")
    with RunLock(run, heartbeat_every=None) as first:
        with pytest.raises(RunLockedError, match="is in use by another training process"):
            RunLock(run, heartbeat_every=None, argv=["second"]).acquire()
        assert first.heartbeat()
        info = json.loads(objects.read_bytes(f"{run}/train.lock"))
        assert (info["host"], info["pid"]) == (HOST, os.getpid())
    assert objects.read(f"{run}/train.lock") is None
