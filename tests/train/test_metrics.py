import json

import pytest

from hybrid_jax.train import tb
from hybrid_jax.train.metrics import MetricsLog, mfu, peak_flops, read_metrics

# Produced once by tensorboard 2.21's RecordWriter on event_pb2.Event(wall_time=1.5, step=7,
# summary=Summary(value=[Value(tag="a/b", simple_value=2.5)])).SerializeToString().
GOLDEN = bytes.fromhex("19000000000000008bf1082809000000000000f83f10072a0c0a0a0a03612f62"
                       "15000020409abc1bac")


def test_event_record_matches_tensorboard_bytes():
    assert tb.tfrecord(tb.encode_event(wall_time=1.5, step=7, scalars={"a/b": 2.5})) == GOLDEN


def test_crc32c_known_value():
    assert tb.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_writer_round_trip(tmp_path):
    w = tb.EventFileWriter(tmp_path)
    w.scalars(1, {"train/loss": 5.5, "train/lr": 0.25})
    w.scalars(2**40, {"eval/val/bpb": 1.5})
    w.close()
    assert tb.read_scalars(w.path) == [(1, "train/loss", 5.5), (1, "train/lr", 0.25),
                                       (2**40, "eval/val/bpb", 1.5)]
    data = bytearray(w.path.read_bytes())
    data[-3] ^= 1
    w.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        tb.read_scalars(w.path)


@pytest.mark.parametrize("kind, peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
                                        ("NVIDIA A100-SXM4-80GB", 312e12), ("TPU v5 lite", 197e12),
                                        ("TPU v5p", 459e12), ("TPU v6 lite", 918e12),
                                        ("TPU v4", 275e12), ("cpu", None)])
def test_peak_table(kind, peak):
    assert peak_flops(kind) == peak


def test_mfu():
    assert mfu(6e9, 1e4, "NVIDIA H100 80GB HBM3", 2) == pytest.approx(6e13 / (2 * 989e12))
    assert mfu(6e9, 1e4, "cpu", 1) is None


def test_metrics_log_truncates_past_the_resume_step(tmp_path):
    log = MetricsLog(tmp_path, enabled=True, tensorboard=True, resume_step=0)
    for step in range(1, 6):
        log.write({"kind": "train", "step": step, "loss": 10.0 - step, "lr": 0.1}, tb_prefix="train")
    log.write({"kind": "eval", "step": 4, "sets": {"val": {"loss": 1.0}}}, tb_prefix="eval")
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')  # a line cut by a kill
    log = MetricsLog(tmp_path, enabled=True, tensorboard=False, resume_step=3)
    log.write({"kind": "train", "step": 4, "loss": 0.5, "lr": 0.1}, tb_prefix="train")
    log.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 9), (2, 8), (3, 7), (4, 0.5)]
    assert read_metrics(tmp_path, "eval") == []
    events = list((tmp_path / "tensorboard").iterdir())
    assert ("eval/sets/val/loss" in {t for _, t, _ in tb.read_scalars(events[0])})


def test_non_finite_values_are_valid_json(tmp_path):
    log = MetricsLog(tmp_path, enabled=True, tensorboard=False, resume_step=0)
    log.write({"kind": "train", "step": 1, "loss": float("nan")}, tb_prefix="train")
    log.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == "nan"


def test_progress_bar_and_log_lines():
    import io

    from hybrid_jax.train.metrics import Progress

    record = {"loss": 2.5, "grad_norm": 0.5, "lr": 1e-3, "tokens_per_s": 1000.0, "mfu": 0.25}
    bar = io.StringIO()
    p = Progress(10, 0, mode="bar", log_every=5, enabled=True, stream=bar)
    p.update(5, record)
    p.close()
    assert bar.getvalue().startswith("\r[" + "#" * 15 + "." * 15 + "] 5/10  loss 2.5000")
    assert "mfu 25.0%" in bar.getvalue() and "eta " in bar.getvalue()
    lines = io.StringIO()  # not a terminal: plain lines every log_every steps
    p = Progress(10, 0, mode="auto", log_every=5, enabled=True, stream=lines)
    for step in range(1, 11):
        p.update(step, record)
    assert [ln.split()[1] for ln in lines.getvalue().splitlines()] == ["5/10", "10/10"]
