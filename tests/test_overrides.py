import dataclasses

import pytest

from hybrid_jax.config import ConfigError, ModelConfig
from hybrid_jax.overrides import (OverrideError, apply_overrides, from_dict, leaf_keys,
                                  parse_override)
from hybrid_jax.train.config import RunConfig, load_config


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1.0
    steps: int = 3
    points: tuple[int, ...] = ()
    name: str = "a"
    flag: bool = False
    maybe: int | None = None


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)


def test_leaf_keys_are_dotted():
    keys = leaf_keys(Outer)
    assert "inner.lr" in keys and "model.d_model" in keys and "inner" not in keys


def test_values_are_parsed_and_coerced():
    o = apply_overrides(Outer(), ["inner.lr=1e-3", "inner.steps=2e3", "inner.points=[1e6,2e6]",
                                  "inner.name=xyz", "inner.flag=true", "inner.maybe=null"])
    assert o.inner == Inner(lr=1e-3, steps=2000, points=(1_000_000, 2_000_000), name="xyz",
                            flag=True, maybe=None)
    assert isinstance(o.inner.lr, float) and isinstance(o.inner.points[0], int)


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(OverrideError, match=r"unknown override key 'inner\.lrr'.*'inner\.lr'"):
        apply_overrides(Outer(), ["inner.lrr=1"])
    with pytest.raises(OverrideError, match=r"'model\.d_model'"):
        apply_overrides(Outer(), ["model.dmodel=1"])
    with pytest.raises(OverrideError, match=r"'model\.d_model'"):  # wrong section, right leaf
        apply_overrides(Outer(), ["modle.d_model=1"])


@pytest.mark.parametrize("text, key", [("inner.steps=abc", "inner.steps"),
                                       ("inner.steps=1.5", "inner.steps"),
                                       ("inner.lr=fast", "inner.lr"),
                                       ("inner.flag=3", "inner.flag"),
                                       ("inner.points=[1,x]", r"inner.points\[1\]"),
                                       ("inner.name=[1]", "inner.name")])
def test_type_errors_name_the_key(text, key):
    with pytest.raises(OverrideError, match=key):
        apply_overrides(Outer(), [text])


def test_malformed_override():
    with pytest.raises(OverrideError, match="key.sub=value"):
        parse_override("inner.lr")
    with pytest.raises(OverrideError) as err:
        parse_override("inner.lr=[1,")
    assert "\n" not in str(err.value) and "at line 1, column 4" in str(err.value)


def test_overrides_apply_together_before_validation():
    # 96 = 3 x 32 heads: valid only once both are set
    o = apply_overrides(Outer(), ["model.d_model=96", "model.n_heads=3", "model.mlp_hidden=64"])
    assert (o.model.d_model, o.model.n_heads) == (96, 3)


def test_model_validation_errors_name_the_field():
    with pytest.raises(ConfigError, match="ModelConfig.n_heads"):
        apply_overrides(Outer(), ["model.n_heads=7"])


def test_from_dict_unknown_key():
    with pytest.raises(OverrideError, match=r"'inner\.steps'"):
        from_dict(Outer, {"inner": {"stepz": 3}})


def test_run_config_from_preset_with_overrides():
    cfg = load_config("hybrid_tiny", ["optim.lr=1e-3", "schedule.kind=wsds",
                                      "schedule.decay_tokens=[5120,10240]"])
    assert cfg.model.family == "hybrid" and cfg.optim.lr == 1e-3
    assert cfg.schedule.decay_tokens == (5120, 10240) and cfg.total_tokens == 10240


def test_run_config_unknown_override():
    with pytest.raises(OverrideError, match=r"did you mean 'optim\.lr'"):
        load_config("hybrid_tiny", ["train.tokens=512", "optim.lrate=1"])


def test_unknown_preset_suggests():
    with pytest.raises(KeyError, match="hybrid_tiny"):
        load_config("hybrid_tinny", [])


def test_run_config_keys_cover_every_section():
    keys = leaf_keys(RunConfig)
    for section in ("model", "train", "optim", "schedule", "data", "mesh", "checkpoint", "eval",
                    "log", "distributed"):
        assert any(k.startswith(section + ".") for k in keys), section
