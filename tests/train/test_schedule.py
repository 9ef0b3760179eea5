"""Learning-rate schedules against tables computed by hand (see the formulas in schedule.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax.config import ConfigError
from hybrid_jax.train.config import ScheduleConfig
from hybrid_jax.train.schedule import Schedule

TPS = 10  # tokens per step; every token count below is 10 x a step count


def sched(total_steps, **kw):
    return Schedule(ScheduleConfig(**kw), peak_lr=1.0, tokens_per_step=TPS,
                    total_steps=total_steps)


def c(p):  # cosine factor at progress p
    return 0.5 * (1 + math.cos(math.pi * p))


def test_cosine_with_warmup():
    s = sched(6, kind="cosine", warmup_tokens=20)
    # warmup (s+1)/2; then progress (s+1-2)/4
    expected = [0.5, 1.0, c(0.25), c(0.5), c(0.75), 0.0]
    np.testing.assert_allclose(s.table(), expected, atol=1e-6)
    assert s.decay_end_steps() == (6,)


def test_cosine_floor():
    s = sched(6, kind="cosine", warmup_tokens=20, final_lr_ratio=0.1)
    expected = [0.5, 1.0, 0.1 + 0.9 * c(0.25), 0.55, 0.1 + 0.9 * c(0.75), 0.1]
    np.testing.assert_allclose(s.table(), expected, atol=1e-6)


def test_constant():
    np.testing.assert_allclose(sched(5, kind="constant", warmup_tokens=30).table(),
                               [1 / 3, 2 / 3, 1, 1, 1], atol=1e-6)


def test_wsd():
    s = sched(10, kind="wsd", warmup_tokens=20, decay_fraction=0.3)
    expected = [0.5, 1, 1, 1, 1, 1, 1, 2 / 3, 1 / 3, 0]
    np.testing.assert_allclose(s.table(), expected, atol=1e-6)
    assert s.decay_end_steps() == (10,)


def test_wsd_floor():
    s = sched(10, kind="wsd", warmup_tokens=20, decay_fraction=0.3, final_lr_ratio=0.25)
    np.testing.assert_allclose(s.table()[6:], [1, 0.75, 0.5, 0.25], atol=1e-6)


def test_wsds_two_decays():
    # Periods of 10 and 20 steps; 20% decays: 2 steps ending at 10, 4 steps ending at 30.
    s = sched(30, kind="wsds", warmup_tokens=20, decay_fraction=0.2, decay_tokens=(100, 300))
    expected = ([0.5, 1] + [1] * 6 + [0.5, 0]        # steps 0..9: warmup, stable, decay to 0
                + [1] * 16 + [0.75, 0.5, 0.25, 0])   # steps 10..29: back to peak, decay
    np.testing.assert_allclose(s.table(), expected, atol=1e-6)
    assert s.decay_end_steps() == (10, 30)


def test_wsds_default_ten_percent_and_floor():
    s = sched(400, kind="wsds", warmup_tokens=50, decay_tokens=(1000, 2000, 4000),
              final_lr_ratio=0.1)
    lr = s.table()
    assert s.decay_lengths == (10, 10, 20)
    np.testing.assert_allclose(lr[[0, 4, 89, 90, 98, 99, 100]],
                               [0.2, 1.0, 1.0, 0.91, 0.19, 0.1, 1.0], atol=1e-6)
    np.testing.assert_allclose(lr[[189, 190, 199, 200]], [1.0, 0.91, 0.1, 1.0], atol=1e-6)
    np.testing.assert_allclose(lr[[379, 380, 399]], [1.0, 0.955, 0.1], atol=1e-6)
    assert s.decay_end_steps() == (100, 200, 400)


def test_decay_points_round_to_steps():
    s = sched(3, kind="wsds", decay_tokens=(14, 26), decay_fraction=0.5)  # 1.4 -> 1, 2.6 -> 3
    assert s.decay_end_steps() == (1, 3)


def test_warmup_past_first_decay_is_refused():
    with pytest.raises(ConfigError, match="warmup_tokens"):
        sched(30, kind="wsds", warmup_tokens=100, decay_fraction=0.2, decay_tokens=(100, 300))


def test_decay_points_on_one_step_are_refused():
    with pytest.raises(ConfigError, match="same step"):
        sched(2, kind="wsds", decay_tokens=(11, 14, 20))


def test_jittable_with_traced_int_step():
    s = sched(30, kind="wsds", warmup_tokens=20, decay_fraction=0.2, decay_tokens=(100, 300))
    lr = jax.jit(jax.vmap(s))(jnp.arange(30, dtype=jnp.int32))
    np.testing.assert_allclose(np.asarray(lr), s.table(), atol=1e-6)
