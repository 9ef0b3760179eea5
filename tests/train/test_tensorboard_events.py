"""TensorBoard events from MetricsLog: TensorFlow's bytes, every record on disk before a kill, and
after a resume each step shown once, with the resumed attempt's values."""

import signal

import pytest
from tensorboardX import RecordWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary

from hybrid_jax.train.metrics import MetricsLog

from tests.helpers.tfevents import event_files, read_events, shown_scalars
from tests.helpers.training import run_python

# Produced once by tensorboard 2.21's RecordWriter on event_pb2.Event(wall_time=1.5, step=7,
# summary=Summary(value=[Value(tag="a/b", simple_value=2.5)])).SerializeToString().
GOLDEN = bytes.fromhex("19000000000000008bf1082809000000000000f83f10072a0c0a0a0a03612f62"
                       "15000020409abc1bac")


def test_tensorboardx_writes_tensorflow_records(tmp_path):
    event = Event(wall_time=1.5, step=7,
                  summary=Summary(value=[Summary.Value(tag="a/b", simple_value=2.5)]))
    writer = RecordWriter(str(tmp_path / "events"))
    writer.write(event.SerializeToString())
    writer.close()
    assert (tmp_path / "events").read_bytes() == GOLDEN


def test_round_trip_and_a_damaged_record_is_refused(tmp_path):
    log = MetricsLog(tmp_path, enabled=True, tensorboard=True, resume_step=0)
    log.write({"kind": "train", "step": 1, "tokens": 256, "loss": 5.5, "lr": 0.25, "mfu": None,
               "ok": True}, tb_prefix="train")
    log.write({"kind": "eval", "step": 2**40, "sets": {"val": {"bpb": 1.5}}}, tb_prefix="eval")
    log.close()
    assert shown_scalars(tmp_path / "tensorboard") == {
        "train/loss": [(1, 5.5)], "train/lr": [(1, 0.25)], "eval/sets/val/bpb": [(2**40, 1.5)]}
    (path,) = event_files(tmp_path / "tensorboard")
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad data CRC"):
        read_events(path)
    path.write_bytes(bytes(data[:-1]))
    with pytest.raises(ValueError, match="cut short"):
        read_events(path)


def test_a_killed_run_leaves_every_logged_step_readable(tmp_path):
    proc = run_python("""
        import os, signal, sys
        from hybrid_jax.train.metrics import MetricsLog

        log = MetricsLog(sys.argv[1], enabled=True, tensorboard=True, resume_step=0)
        for step in range(1, 41):
            log.write({"kind": "train", "step": step, "loss": float(step)}, tb_prefix="train")
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no exit handlers
        """, str(tmp_path), check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert shown_scalars(tmp_path / "tensorboard")["train/loss"] == [
        (step, float(step)) for step in range(1, 41)]


def log_attempt(run_dir, resume_step, last_step, base):
    """An attempt from resume_step + 1 to last_step: loss base + step, an eval every 4 steps."""
    log = MetricsLog(run_dir, enabled=True, tensorboard=True, resume_step=resume_step)
    for step in range(resume_step + 1, last_step + 1):
        log.write({"kind": "train", "step": step, "loss": base + step}, tb_prefix="train")
        if step % 4 == 0:
            log.write({"kind": "eval", "step": step, "sets": {"val": {"loss": base - step}}},
                      tb_prefix="eval")
    log.close()


# The first attempt logged steps 1..10 and died; its last checkpoint was at step 6.
EXPECTED = {"train/loss": [(s, 100.0 + s) for s in range(1, 7)]
            + [(s, 200.0 + s) for s in range(7, 13)],
            "eval/sets/val/loss": [(4, 96.0), (8, 192.0), (12, 188.0)]}


def test_after_a_resume_each_step_is_shown_once(tmp_path):
    log_attempt(tmp_path, 0, 10, 100.0)
    log_attempt(tmp_path, 6, 12, 200.0)
    first, second = (read_events(p) for p in event_files(tmp_path / "tensorboard"))
    # What TensorBoard acts on: right after its file version, each attempt's file has a
    # SessionLog START at the first step that attempt logs.
    for events, start in ((first, 1), (second, 7)):
        assert events[0].file_version == "brain.Event:2"
        assert events[1].session_log.status == SessionLog.START and events[1].step == start
    logged = [e.step for e in first + second
              if [v.tag for v in e.summary.value] == ["train/loss"]]
    assert logged == [*range(1, 11), *range(7, 13)]  # steps 7..10 are in both files
    assert shown_scalars(tmp_path / "tensorboard") == EXPECTED


def test_tensorboard_itself_shows_each_step_once(tmp_path):
    pytest.importorskip("tensorboard", reason="needs the [test] extra's tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_attempt(tmp_path, 0, 10, 100.0)
    log_attempt(tmp_path, 6, 12, 200.0)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), purge_orphaned_data=True).Reload()
    assert {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
            } == EXPECTED
