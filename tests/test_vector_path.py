"""CPU elementwise kernels over contiguous operands run math builtins on vectors, with a scalar tail,
and fall back to the scalar loop for expressions that have no vector meaning."""

import numpy as np
import pytest

from axonml_autograd import Tensor
from axonml_autograd.elementwise_kernels import _plans, _vector_safe, elementwise


def _plan_of(expr):
    return next(p for k, p in _plans.items() if k[0] == expr)


@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 17, 65, 129, 1003, 70_001])
def test_vector_loop_and_scalar_tail_match_numpy(device, fp64, n):
    for dt, rtol in ((np.float32, 2e-6), (np.float64, 1e-14)):
        x = np.random.default_rng(n).uniform(-3, 3, n).astype(dt)
        y = np.random.default_rng(n + 1).uniform(0.5, 2, n).astype(dt)
        got = elementwise("exp(a) * tanh(b) + log(b) / a", [Tensor.from_numpy(x), Tensor.from_numpy(y)]).numpy()
        np.testing.assert_allclose(got, np.exp(x) * np.tanh(y) + np.log(y) / x, rtol=rtol, atol=rtol)


def test_cpu_devices_take_the_vector_loop_for_plain_maths(device):
    if device.target.is_gpu:
        pytest.skip("the vector loop is the CPU strategy")
    elementwise("exp(a) - a", [Tensor.ones([100], device=device)])
    # The target's width, within 256 bits.
    assert _plan_of("exp(a) - a").vector == min(device.target.vw_float, 8)


def test_expression_without_a_vector_form_falls_back_to_the_scalar_loop(device, monkeypatch):
    # Which builtins accept vectors mixed with scalars differs between compilers, so a vector build
    # that fails must quietly give way to the scalar kernel.
    from axonml_autograd import kernels

    real = kernels.get_kernel

    def no_vector_builds(dev, template, name, options=(), local=0, **params):
        if params.get("vector"):
            raise kernels.KernelBuildError("no vector form (simulated)")
        return real(dev, template, name, options, local, **params)

    monkeypatch.setattr(kernels, "get_kernel", no_vector_builds)
    x = np.linspace(0.1, 3, 1001).astype(np.float32)
    got = elementwise("pow(a, s) + L(0.25)", [Tensor.from_numpy(x, device=device)], scalars={"s": 2.5}).numpy()
    np.testing.assert_allclose(got, x ** 2.5 + 0.25, rtol=1e-5)
    assert _plan_of("pow(a, s) + L(0.25)").vector == 0


@pytest.mark.parametrize("expr,safe", [("exp(a) * b", True), ("a > 0 ? a : L(0.0)", False),
                                       ("(T)(a == b)", False), ("gid % C", False), ("fmax(a, s)", True)])
def test_only_plain_arithmetic_is_vectorised(expr, safe):
    assert _vector_safe(expr) is safe
