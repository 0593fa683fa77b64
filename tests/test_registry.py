"""Tests generated from the op registry (as PyTorch's OpInfo): every row is checked against its numpy
reference, its gradient against central differences, its second derivative with gradgradcheck, its
integer form against numpy's integers, its captured replay against eager bit for bit, and against torch
where the row names torch's function. A new row is tested by all of these without a line here.

The inputs come from the row's domain, kept 0.2 away from its kinks and poles (``away_from``), on
shapes that are not multiples of any work-group size, broadcasting for two-input rows.
"""

import math
import pathlib
import sys

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, check_gradients, gradgradcheck
from axonml_autograd.device import default_device
from axonml_autograd.expr import evaluate, names, render
from axonml_autograd.functions import pointwise as F
from axonml_autograd.registry import OPS

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from registry_cases import call, operands_for, reference, scalars_of  # noqa: E402

DEV = default_device()
needs_fp64 = pytest.mark.skipif(not DEV.fp64, reason="the device has no float64")
ROWS = sorted(OPS)
DIFFERENTIABLE = [n for n in ROWS if OPS[n].differentiable]
# Scalars for the rows whose defaults are "no bound" (clamp) or where the default hides the parameter.
SHAPES_1 = [(1,), (3,), (17,), (65,), (129,), (3, 17)]
SHAPES_2 = [((17,), (17,)), ((3, 1), (1, 65)), ((129,), ()), ((), (5,)), ((2, 1, 3), (4, 1))]


def shapes_for(spec):
    return [(s,) for s in SHAPES_1] if spec.arity == 1 else SHAPES_2


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=needs_fp64)])
@pytest.mark.parametrize("name", ROWS)
def test_every_row_matches_its_numpy_reference(name, dtype):
    spec = OPS[name]
    rtol = 2e-5 if dtype == "float32" else 1e-12
    for k, shapes in enumerate(shapes_for(spec)):
        arrays = operands_for(spec, shapes, seed=10 * k, dtype=dtype)
        got = call(spec, *[Variable(Tensor.from_numpy(a)) for a in arrays]).numpy()
        want = reference(spec, *[a.astype(np.float64) for a in arrays])
        assert got.dtype == np.dtype(dtype) and got.shape == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=f"{name} on {shapes}")


@needs_fp64
@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_every_row_gradient_matches_central_differences(name):
    spec = OPS[name]
    for k, shapes in enumerate(shapes_for(spec)[:3]):
        inputs = [Variable(Tensor.from_numpy(a), requires_grad=True) for a in operands_for(spec, shapes, 100 + 10 * k)]
        assert check_gradients(lambda *v: call(spec, *v), inputs, atol=1e-6, rtol=1e-5)


@needs_fp64
@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_every_row_second_derivative_matches_central_differences(name):
    spec = OPS[name]
    shapes = shapes_for(spec)[1]
    inputs = [Variable(Tensor.from_numpy(a), requires_grad=True) for a in operands_for(spec, shapes, 200)]
    assert gradgradcheck(lambda *v: call(spec, *v), inputs, atol=1e-6, rtol=1e-5)


# numpy's integer maths is Python's (floor division, remainder with the divisor's sign) for these.
INTEGER_ROWS = [n for n in ROWS if OPS[n].int_form is not None]


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("name", INTEGER_ROWS)
def test_every_integer_form_is_exact_like_numpy(name, dtype):
    spec = OPS[name]
    rng = np.random.default_rng(7)
    arrays = [rng.integers(-50, 50, size=s[0] if isinstance(s[0], tuple) else s).astype(dtype)
              for s in shapes_for(spec)[1]]
    if name == "pow":
        arrays[0] = np.abs(arrays[0]) % 5
        arrays[1] = np.abs(arrays[1]) % 4
    if name in ("floordiv", "remainder"):
        arrays[1][arrays[1] == 0] = 3
    got = call(spec, *[Tensor.from_numpy(a) for a in arrays])
    want = reference(spec, *arrays) if spec.reference is not np.power else np.power(*arrays)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.numpy(), np.asarray(want).astype(dtype))


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_every_row_replays_bit_for_bit_under_capture(name):
    spec = OPS[name]
    params = [Variable(Tensor.from_numpy(a), requires_grad=True)
              for a in operands_for(spec, shapes_for(spec)[1], 300, dtype="float32")]

    def step():
        for p in params:
            p.zero_grad()
        out = call(spec, *params)
        (out * out).sum().backward()
        return out.data()

    eager = step().numpy(), [p.grad().numpy() for p in params]
    fn = capture(step)
    for _ in range(3):
        out = fn()
    assert fn.recordings == 1 and fn.replays == 2
    np.testing.assert_array_equal(out.numpy(), eager[0])
    for p, g in zip(params, eager[1]):
        np.testing.assert_array_equal(p.grad().numpy(), g)


@needs_fp64
@pytest.mark.parametrize("name", [n for n in DIFFERENTIABLE if OPS[n].torch])
def test_every_row_with_a_torch_twin_matches_torch_in_value_and_gradient(name):
    torch = pytest.importorskip("torch")
    spec = OPS[name]
    fn = torch
    for part in spec.torch.split("."):
        fn = getattr(fn, part)
    arrays = operands_for(spec, shapes_for(spec)[1], 400)
    ours = [Variable(Tensor.from_numpy(a), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = call(spec, *ours)
    ref = fn(*theirs, *scalars_of(spec).values())
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    out.sum().backward()
    ref.sum().backward()
    for v, t in zip(ours, theirs):
        np.testing.assert_allclose(v.grad().numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_the_expression_language_renders_and_evaluates_one_rule_the_same_way():
    rule = "g * 0.5 if a == b else (0 if a < b else g)"
    assert render(rule) == "((a == b) ? (g * L(0.5)) : ((a < b) ? L(0.0) : g))"
    assert names(rule) == ("a", "b", "g")
    pick = lambda m, t, f: t if m else f   # noqa: E731  (Python numbers: the conditions are bools)
    assert [evaluate(rule, {"g": 2.0, "a": a, "b": 1.0}, {}, pick) for a in (1.0, 0.0, 3.0)] == [1.0, 0.0, 2.0]
    assert render("-(-x)") == "-(-x)"   # never C's decrement
    with pytest.raises(ValueError, match="not part of the language"):
        render("x[0]")


def test_every_rule_reads_only_what_its_row_provides():
    for spec in OPS.values():
        allowed = set(spec.inputs) | {"g", "y"} | set(spec.kernel_scalars)
        for rule in spec.gradient:
            assert set(names(rule)) <= allowed, (spec.name, rule)
        assert set(names(spec.forward)) <= set(spec.inputs) | set(spec.kernel_scalars), spec.name
        assert math.isfinite(spec.domain[0]) and spec.domain[0] < spec.domain[1]
