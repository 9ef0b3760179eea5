"""The WSD-S Chinchilla recipe against numbers worked out by hand."""

import pytest

from hybrid_jax.sweep.recipe import Recipe, batch_sequences, resolve
from hybrid_jax.config import ConfigError


def test_reference_size_gets_the_reference_numbers():
    h = resolve(Recipe(), 108_000_000, 2048, (10, 20))
    assert h.batch_sequences == 160 and h.batch_tokens == 327_680  # 327,680 / 2048 exactly
    assert h.lr == pytest.approx(0.00235)
    assert h.b2 == 0.99 and h.b1 == 0.9 and h.weight_decay == 0.1
    assert h.warmup_tokens == 108_000_000
    # 10 N = 1.08e9 tokens = 3295.9 steps -> 3296; 20 N = 6591.8 -> 6592
    assert h.steps == (3296, 6592)
    assert h.decay_tokens == (3296 * 327_680, 6592 * 327_680)
    assert h.decay_fraction == 0.1
    sections = h.run_sections()
    assert sections["schedule"] == {"kind": "wsds", "warmup_tokens": 108_000_000,
                                    "decay_fraction": 0.1, "final_lr_ratio": 0.0,
                                    "decay_tokens": [1_080_033_280, 2_160_066_560]}
    assert sections["train"] == {"global_batch": 160, "seq_len": 2048}


def test_eight_times_the_reference():
    # (8)^(2/3) = 4: batch 1,310,720 tokens = 640 x 2048; (8)^(-1/3) = 1/2: lr 0.001175
    h = resolve(Recipe(), 864_000_000, 2048, (10,))
    assert h.batch_tokens == 1_310_720 and h.batch_sequences == 640
    assert h.lr == pytest.approx(0.001175)
    assert h.b2 == 0.95  # batch >= 524,288 tokens


def test_beta2_threshold_is_on_the_rounded_batch():
    at = resolve(Recipe(batch_tokens=524_288), 108_000_000, 2048, (10,))
    below = resolve(Recipe(batch_tokens=524_288 - 2048), 108_000_000, 2048, (10,))
    assert (at.batch_tokens, at.b2) == (524_288, 0.95)
    assert (below.batch_tokens, below.b2) == (522_240, 0.99)
    # 524,288 (N/108M)^(2/3) crossing: N = 108M * 1.6^1.5 = 218.58M
    assert resolve(Recipe(), 218_600_000, 2048, (10,)).b2 == 0.95
    assert resolve(Recipe(), 215_000_000, 2048, (10,)).b2 == 0.99


def test_batch_rounding_to_whole_sequences_and_data_parallel():
    assert batch_sequences(300_000, 2048) == 146          # 146.48 sequences
    assert batch_sequences(300_000, 2048, 8) == 144       # 18.3 groups of 8 -> 18
    assert batch_sequences(100, 2048, 4) == 4             # at least one per device
    assert batch_sequences(1, 128) == 1
    h = resolve(Recipe(data_parallel=8), 108_000_000 * 1.3 ** 1.5, 2048, (10,))
    assert h.batch_sequences % 8 == 0


def test_small_model_numbers_and_overrides():
    # N = 1.08M: scale 1e-2 -> batch 327,680 * 0.0464159 = 15,209.6 tokens = 118.8 x 128 -> 119
    h = resolve(Recipe(), 1_080_000, 128, (2, 4, 8))
    assert h.batch_sequences == 119
    assert h.lr == pytest.approx(0.00235 * 100 ** (1 / 3))
    assert h.warmup_tokens == 1_080_000
    assert h.batch_tokens == 15_232
    assert h.steps == (142, 284, 567)  # 141.8, 283.6, 567.2 steps of 15,232 tokens
    o = resolve(Recipe(lr=1e-3, b2=0.9, warmup_tokens=5, weight_decay=0.0, final_lr_ratio=0.1),
                1_080_000, 128, (2,))
    got = (o.lr, o.b2, o.warmup_tokens, o.weight_decay, o.final_lr_ratio)
    assert got == (1e-3, 0.9, 5, 0.0, 0.1)


def test_refusals():
    with pytest.raises(ConfigError, match="strictly increasing"):
        resolve(Recipe(), 1e6, 128, (4, 2))
    with pytest.raises(ConfigError, match="warmup"):  # warmup N ends after 0.9 * 1.05 N
        resolve(Recipe(), 10_000_000, 128, (1.05, 2))
    with pytest.raises(ConfigError, match="same step|one step"):
        resolve(Recipe(batch_tokens=10**9), 1e6, 128, (2, 3))
    with pytest.raises(ConfigError, match="data_parallel"):
        Recipe(data_parallel=0)
