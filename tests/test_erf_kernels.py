"""float32 erf/erfc written out in arithmetic (cl_kernels/erf.mako), which the device target chooses where
the builtins are slow library calls (PoCL's CPU ones, ~7 exps an element): within 8 ulps of the exact
values on every path a kernel takes (vector loop, scalar tail, strided walk, fused), special values as the
builtins, and GELU on them as torch's."""

import dataclasses
import math
import sys

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import Variable, capture, default_device
from axonml_autograd.nn import functional as F
from axonml_autograd.target import apply_overrides

ek = sys.modules["axonml_autograd.elementwise_kernels"]


@pytest.fixture(params=[True, False], ids=["written", "builtin"])
def own_erf(request, monkeypatch):
    dev = default_device()
    monkeypatch.setattr(dev, "target", dataclasses.replace(dev.target, own_erf=request.param))
    monkeypatch.setattr(ek, "_plans", {})   # plans made under the other choice hold its kernels
    return request.param


def _ulps(got, exact):
    spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


def _values():
    # Not a multiple of any vector width: the scalar tail runs too.
    x = np.concatenate([np.linspace(-12, 12, 60_001), np.geomspace(1e-30, 0.9, 301), -np.geomspace(1e-30, 0.9, 301),
                        [0.8499, 0.85, 0.8501, 9.9, 10.5, 11.0, 11.5]]).astype(np.float32)
    return x


def test_erf_and_erfc_stay_within_8_ulps_of_the_exact_values(own_erf):
    x = _values()
    exact_erf = np.array([math.erf(v) for v in x.astype(np.float64)])
    exact_erfc = np.array([math.erfc(v) for v in x.astype(np.float64)])
    t = ag.from_numpy(x)
    for got, exact in ((ag.erf(t), exact_erf), (ag.erfc(t), exact_erfc)):
        u = _ulps(got.numpy(), exact)
        assert u.max() <= (8 if own_erf else 16), f"{u.max()} ulps at x={x[u.argmax()]}"
    # A transposed view takes the strided kernel.
    sq = x[:251 * 239].reshape(251, 239)
    got = ag.erfc(ag.from_numpy(sq).T).numpy()
    assert _ulps(got, exact_erfc[:251 * 239].reshape(251, 239).T).max() <= (8 if own_erf else 16)


def test_special_values_are_the_builtins(own_erf):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38], np.float32)
    t = ag.from_numpy(x)
    erf, erfc = ag.erf(t).numpy(), ag.erfc(t).numpy()
    np.testing.assert_array_equal(erf[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(erf[1]) and not np.signbit(erf[0])
    np.testing.assert_array_equal(erfc[:4], [1.0, 1.0, 0.0, 2.0])
    assert np.isnan(erf[4]) and np.isnan(erfc[4])
    assert _ulps(erf[5:], 2 / math.sqrt(math.pi) * x[5:].astype(np.float64)).max() <= 1   # denormals too


def test_gelu_on_them_keeps_its_digits_and_captured_equals_eager(own_erf):
    x_h = np.concatenate([np.linspace(-13, 9, 3001), [-np.inf, np.inf, 0.0]]).astype(np.float32)
    x = Variable(ag.from_numpy(x_h), requires_grad=True)
    y = F.gelu(x)
    y.sum().backward()
    # Exact in float64 through erfc: x Phi(x) and Phi(x) + x phi(x) (torch's float64 gelu, 1 + erf, is 0
    # below -8.3, where these are ~1e-17). The input to erfc is -x/sqrt(2) rounded to float32, as ours.
    xd = x_h.astype(np.float64)
    arg = (-x_h * np.float32(0.7071067811865476)).astype(np.float64)
    phi = np.array([0.5 * math.erfc(a) for a in arg])
    with np.errstate(invalid="ignore", over="ignore"):
        want = xd * phi
        density = xd * np.exp(-0.5 * xd * xd) / math.sqrt(2 * math.pi)
    got, got_g = y.data().numpy(), x.grad().numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))   # gelu(-inf) is NaN, as torch's
    ok = np.isfinite(want) & (np.abs(want) > 1e-36)
    assert _ulps(got[ok], want[ok]).max() <= 16
    # The gradient's two terms cancel in the left tail (in torch's formula too), and exp(-x^2/2) carries the
    # rounding of x^2/2 (6e-8 of 85 at x = -13): within 2e-5 of the larger term.
    ok = np.isfinite(density)
    scale = np.maximum(np.abs(phi), np.abs(density))[ok]
    assert (np.abs(got_g[ok] - (phi + density)[ok]) <= 2e-5 * scale).all()

    def f(v):
        return F.gelu(v) * 2.0 + ag.erfc(v)   # several launches: a fused kernel when captured
    g = capture(f)
    v = Variable(ag.from_numpy(x_h[:1003] * 0.5))
    for _ in range(2):
        np.testing.assert_array_equal(g(v).data().numpy(), f(v).data().numpy())


def test_the_choice_is_a_target_field_an_override_may_set():
    t = default_device().target
    assert apply_overrides(t, {"own_erf": "0"}).own_erf is False
    assert apply_overrides(t, {"own_erf": "1"}).own_erf is True
    with pytest.raises(ValueError, match="own_erf"):
        apply_overrides(t, {"own_erf": "maybe"})
