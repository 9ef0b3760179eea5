import json

import pytest

from hybrid_jax.train.metrics import MetricsLog, mfu, peak_flops, read_metrics

from tests.helpers.tfevents import shown_scalars


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
    assert shown_scalars(tmp_path / "tensorboard")["eval/sets/val/loss"] == [(4, 1.0)]


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
