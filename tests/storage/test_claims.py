"""Run claims on a local directory and on gs:// (the emulator): exclusive, heartbeats that find
out when the claim was lost, a stale claim reclaimed by exactly one of two racing drivers,
release only by the holder, staleness by the store's clock."""

import json
import os
import subprocess
import sys
import time

import pytest

from hybrid_jax.procs import HOST, PID_NAMESPACE
from hybrid_jax.storage import objects
from hybrid_jax.storage.claims import Claim

from tests.helpers.threads import race


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def plant(claim: Claim, **record) -> None:
    """A lock written by another driver."""
    objects.write_atomic(claim.path, json.dumps({"token": os.urandom(8).hex(), **record}).encode())


def test_a_claim_is_exclusive_and_released(root):
    run = root / "runs" / "a"
    a, b = Claim(run), Claim(run)
    assert a.try_acquire() and a.held
    assert not b.try_acquire()  # this process is alive: held
    assert b.holder()["runner_pid"] == os.getpid()
    with pytest.raises(RuntimeError, match="already held"):
        a.try_acquire()
    assert a.set_worker(os.getpid()) and b.holder()["worker_pid"] == os.getpid()
    assert a.set_worker(os.getpid())  # again: the worker fields may change
    with pytest.raises(ValueError, match="token"):
        a.heartbeat(token="mine")
    assert a.release() and not a.held
    assert b.holder() is None
    assert b.try_acquire() and b.reclaimed is None


def test_heartbeat_fails_once_the_claim_was_taken_over(root):
    a = Claim(root / "run")
    assert a.try_acquire()
    assert a.heartbeat() and a.heartbeat(step=3)
    plant(a, host="elsewhere", runner_pid=1, time=time.time())  # another driver's write
    assert not a.heartbeat()  # our version is gone: lost, and no longer held
    assert not a.held and not a.heartbeat()
    assert not a.release()  # a lost claim is left alone
    assert Claim(root / "run").holder()["host"] == "elsewhere"


def test_release_by_a_non_holder_does_nothing(root):
    a, b = Claim(root / "run"), Claim(root / "run")
    assert not b.release()  # never held
    assert a.try_acquire()
    assert not b.release()
    assert b.holder() is not None
    # a holder that lost its claim: its release must not remove the new holder's lock
    c = Claim(root / "run2")
    assert c.try_acquire()
    plant(c, host=HOST, pid_ns=PID_NAMESPACE, runner_pid=os.getpid(), time=0)
    assert not c.release()
    assert Claim(root / "run2").holder() is not None


def test_a_stale_claim_is_reclaimed_by_exactly_one_of_two_drivers(root):
    for round_ in range(4):
        run = root / f"run-{round_}"
        plant(Claim(run), host=HOST, pid_ns=PID_NAMESPACE, runner_pid=dead_pid(), time=0)
        assert Claim(run).holder() is None  # its process is gone: stale at once
        drivers = [Claim(run), Claim(run)]
        won = race(2, lambda i: drivers[i].try_acquire())
        assert sorted(won) == [False, True], won
        winner = drivers[won.index(True)]
        assert winner.reclaimed["runner_pid"] and winner.heartbeat()
        assert Claim(run).holder()["token"] == winner._record["token"]


def test_another_hosts_claim_goes_stale_after_stale_after(root):
    run = root / "run"
    plant(Claim(run), host="elsewhere", runner_pid=1, time=time.time())
    judge = Claim(run, stale_after=1.0)
    assert judge.holder()["host"] == "elsewhere"
    assert not judge.try_acquire()
    # past stale_after, plus on GCS the 1 s resolution of the server's Date header
    time.sleep(2.2 if str(root).startswith("gs://") else 1.2)
    assert judge.holder() is None
    assert judge.try_acquire() and judge.reclaimed["host"] == "elsewhere"


def test_age_is_the_servers_not_this_hosts_clock(gcs_bucket, monkeypatch):
    from tests.helpers.gcs import gs_prefix

    run = gs_prefix(gcs_bucket, "clock")
    plant(Claim(run), host="elsewhere", runner_pid=1, time=time.time())
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this host's clock an hour ahead
    assert Claim(run, stale_after=60).holder()["host"] == "elsewhere"


def test_an_unreadable_lock_is_judged_by_age(root):
    run = root / "run"
    objects.write_atomic(Claim(run).path, b"not json")
    assert Claim(run).holder() == {"host": "?", "unreadable": True}
    assert not Claim(run).try_acquire()


def test_stale_after_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="stale_after"):
        Claim(tmp_path, stale_after=0)


def test_a_write_reported_refused_that_did_happen_is_ours(root, monkeypatch):
    """google-cloud-storage retries a conditional write whose response was lost; the retry
    fails its own condition. The claim must still be ours, not blocked by itself."""
    create, replace = objects.create, objects.replace

    def lost_response(real):
        def write(*args):
            real(*args)
            return None  # as the retry reports: precondition failed
        return write

    monkeypatch.setattr(objects, "create", lost_response(create))
    a = Claim(root / "run")
    assert a.try_acquire() and a.held and a.reclaimed is None
    monkeypatch.setattr(objects, "replace", lost_response(replace))
    assert a.heartbeat(step=1) and a.held
    monkeypatch.setattr(objects, "create", create)
    monkeypatch.setattr(objects, "replace", replace)
    assert a.heartbeat() and Claim(root / "run").holder()["step"] == 1
