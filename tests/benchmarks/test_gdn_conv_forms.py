"""benchmarks/gdn_conv_forms.py on a CPU host: every form is the causal conv + SiLU (against
numpy in float64) with the same derivative, and the benchmark writes a row per form."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import gdn_conv_forms


def float64_conv_silu(x, w):
    W, T = w.shape[0], x.shape[1]
    x_pad = np.pad(x, ((0, 0), (W - 1, 0), (0, 0)))
    y = sum(x_pad[:, j:j + T] * w[j] for j in range(W))
    return y / (1 + np.exp(-y))


@pytest.mark.parametrize("form", list(gdn_conv_forms.FORMS))
def test_form_is_the_causal_conv_and_its_derivative_the_models(form):
    kx, kw, kd = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, 9, 5), jnp.float32)
    w = jax.random.normal(kw, (4, 5), jnp.float32) / 2
    dy = jax.random.normal(kd, x.shape, jnp.float32)
    y, dx, dw = gdn_conv_forms.fwd_bwd(form)(x, w, dy)
    np.testing.assert_allclose(y, float64_conv_silu(np.float64(x), np.float64(w)), atol=1e-5)
    _, dx_pad, dw_pad = gdn_conv_forms.fwd_bwd("pad")(x, w, dy)
    np.testing.assert_allclose(dx, dx_pad, atol=1e-5)
    np.testing.assert_allclose(dw, dw_pad, atol=1e-5)


def test_writes_a_row_per_form(tmp_path):
    assert gdn_conv_forms.main(["--interpret", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "gdn_conv_forms.json").read_text())["rows"]
    assert [r["form"] for r in rows] == list(gdn_conv_forms.FORMS)
    assert rows[0]["ratio"] == 1.0 and rows[0]["max_abs_diff"]["dx"] == 0
