"""Property-based tests: every op family, random shapes (0- and 1-size axes included), both float types.

Forward results are compared with numpy in float32 and float64; gradients with float64 central
differences (``check_gradients``) on small shapes. Two Hypothesis profiles:

* ``ci`` (default): derandomized, a modest number of examples, no example database; the whole file
  takes well under a minute.
* ``long``: ``HYPOTHESIS_PROFILE=long pytest tests/test_properties.py`` for a run by hand (minutes).
"""

import contextlib
import math
import os
import pathlib
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from axonml_autograd import Tensor, Variable, default_device
from axonml_autograd.backward import check_gradients
from axonml_autograd.registry import OPS as REGISTRY

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from registry_cases import call as registry_call  # noqa: E402
from registry_cases import reference as registry_reference  # noqa: E402
from registry_cases import sample as registry_sample  # noqa: E402

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=50, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=250, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
GRAD_PROFILE = settings(PROFILE, max_examples=max(4, PROFILE.max_examples // 2))

FP64 = default_device().fp64
DTYPES = st.sampled_from([np.float32, np.float64] if FP64 else [np.float32])
needs_fp64 = pytest.mark.skipif(not FP64, reason="the device has no cl_khr_fp64")

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
small_shapes = hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3)
seeds = st.integers(0, 2**32 - 1)


# -- helpers -----------------------------------------------------------------------------------------

def values(seed, shape, low=-2.0, high=2.0, away_from_zero=0.0):
    """Random values for ``shape``; ``away_from_zero`` keeps |x| above it (kinks, divisions)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=shape)
    if away_from_zero:
        x = np.sign(x + (x == 0)) * (away_from_zero + np.abs(x))
    return x


def var(array, dtype, requires_grad=False):
    return Variable(Tensor.from_numpy(np.asarray(array), dtype=dtype), requires_grad)


def tol(dtype, scale=1.0):
    return dict(rtol=1e-4, atol=1e-5 * scale) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12 * scale)


def assert_forward(out, expected, dtype, scale=1.0):
    got = out.numpy()
    expected = np.asarray(expected, dtype=np.float64)
    assert list(got.shape) == list(expected.shape), (got.shape, expected.shape)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.astype(np.float64), expected, **tol(dtype, scale))


def assert_gradients(fn, arrays, seed=0):
    """Backward of ``sum(fn(*inputs) * W)`` (W fixed, random) against float64 central differences."""
    inputs = [var(a, np.float64, True) for a in arrays]
    out_shape = fn(*inputs).shape()
    weights = var(np.random.default_rng(seed).uniform(0.5, 1.5, size=out_shape), np.float64)
    assert check_gradients(lambda *vs: (fn(*vs) * weights).sum(), inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@contextlib.contextmanager
def quiet():
    """numpy's own reductions of empty slices warn; the expected NaN is what the test wants."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# -- binary ops with broadcasting --------------------------------------------------------------------

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
}
# ... and every two-input registry row that is smooth away from b = 0 (fmod and remainder jump, floordiv
# has no gradient, pow wants a positive base: test_registry.py covers those).
for _spec in REGISTRY.values():
    if (_spec.arity == 2 and _spec.differentiable and _spec.kind != "loss" and _spec.name not in BINARY
            and _spec.domain == (-2.0, 2.0) and set(_spec.away_from) <= {0.0}
            and _spec.name not in ("fmod", "remainder")):
        BINARY[_spec.name] = ((lambda sp: lambda a, b: registry_call(sp, a, b))(_spec),
                              (lambda sp: lambda a, b: registry_reference(sp, a, b))(_spec))
pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=4)
small_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=2)


@PROFILE
@given(op=st.sampled_from(sorted(BINARY)), shapes=pairs, dtype=DTYPES, seed=seeds)
@example(op="add", shapes=hnp.BroadcastableShapes(((3, 1), (3, 4)), (3, 4)), dtype=np.float32, seed=0)
@example(op="mul", shapes=hnp.BroadcastableShapes(((0, 1), (1, 5)), (0, 5)), dtype=np.float32, seed=0)
def test_binary_op_forward_matches_numpy_under_broadcasting(op, shapes, dtype, seed):
    (sa, sb), result_shape = shapes
    a, b = values(seed, sa), values(seed + 1, sb, away_from_zero=0.5)
    ours, ref = BINARY[op]
    a_, b_ = a.astype(dtype), b.astype(dtype)
    assert_forward(ours(var(a_, dtype), var(b_, dtype)), ref(a_.astype(np.float64), b_.astype(np.float64)), dtype)


@needs_fp64
@GRAD_PROFILE
@given(op=st.sampled_from(sorted(BINARY)), shapes=small_pairs, seed=seeds)
@example(op="mul", shapes=hnp.BroadcastableShapes(((2, 1), (1, 2, 2)), (1, 2, 2)), seed=0)
def test_binary_op_gradient_reduces_over_exactly_the_broadcast_axes(op, shapes, seed):
    (sa, sb), _ = shapes
    assert_gradients(BINARY[op][0], [values(seed, sa), values(seed + 1, sb, away_from_zero=0.5)], seed)


SCALAR = {
    "add_scalar": (lambda x, s: x + s, lambda x, s: x + s),
    "sub_scalar": (lambda x, s: x - s, lambda x, s: x - s),
    "rsub_scalar": (lambda x, s: s - x, lambda x, s: s - x),
    "mul_scalar": (lambda x, s: x * s, lambda x, s: x * s),
    "div_scalar": (lambda x, s: x / s, lambda x, s: x / s),
    "rdiv_scalar": (lambda x, s: s / x, lambda x, s: s / x),
}


@PROFILE
@given(op=st.sampled_from(sorted(SCALAR)), shape=shapes, dtype=DTYPES, seed=seeds,
       s=st.floats(0.25, 4.0) | st.floats(-4.0, -0.25))
def test_scalar_op_forward_and_gradient(op, shape, dtype, seed, s):
    ours, ref = SCALAR[op]
    x = values(seed, shape, away_from_zero=0.5).astype(dtype)
    # The scalar is a kernel argument of the tensor's type, so numpy gets it rounded the same way.
    assert_forward(ours(var(x, dtype), s), ref(x.astype(np.float64), float(dtype(s))), dtype)
    if dtype == np.float64 and np.prod(shape) <= 9:
        assert_gradients(lambda v: ours(v, s), [x], seed)


# -- elementwise unary ops ---------------------------------------------------------------------------

def _gelu(x):   # torch's default: with erf
    return 0.5 * x * (1 + np.vectorize(math.erf, otypes=[np.float64])(x / np.sqrt(2)))


UNARY = {   # name: (ours, numpy, (low, high, away_from_zero))
    "neg": (lambda v: -v, np.negative, (-2, 2, 0)),
    "exp": (lambda v: v.exp(), np.exp, (-2, 2, 0)),
    "log": (lambda v: v.log(), np.log, (0.2, 3, 0)),
    "sqrt": (lambda v: v.sqrt(), np.sqrt, (0.2, 3, 0)),
    "abs": (lambda v: v.abs(), np.abs, (-2, 2, 0.1)),
    "pow3": (lambda v: v.pow(3.0), lambda x: x ** 3, (-2, 2, 0)),
    "pow_half": (lambda v: v.pow(0.5), np.sqrt, (0.2, 3, 0)),
    "clamp": (lambda v: v.clamp(-0.7, 0.9), lambda x: np.clip(x, -0.7, 0.9), (-2, 2, 0)),
    "relu": (lambda v: v.relu(), lambda x: np.maximum(x, 0), (-2, 2, 0.1)),
    "leaky_relu": (lambda v: v.leaky_relu(0.1), lambda x: np.where(x > 0, x, 0.1 * x), (-2, 2, 0.1)),
    "sigmoid": (lambda v: v.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), (-3, 3, 0)),
    "tanh": (lambda v: v.tanh(), np.tanh, (-3, 3, 0)),
    "gelu": (lambda v: v.gelu(), _gelu, (-3, 3, 0)),
    "silu": (lambda v: v.silu(), lambda x: x / (1 + np.exp(-x)), (-3, 3, 0)),
}


# ... and every one-input registry row, on its own domain and 0.2 away from its kinks (sample()).
for _spec in REGISTRY.values():
    if _spec.arity == 1 and _spec.differentiable and _spec.name not in UNARY:
        UNARY[_spec.name] = ((lambda sp: lambda v: registry_call(sp, v))(_spec),
                             (lambda sp: lambda x: registry_reference(sp, x))(_spec), _spec)


def _unary_input(name, seed, shape):
    if not isinstance(UNARY[name][2], tuple):
        return registry_sample(UNARY[name][2], shape, seed)
    low, high, away = UNARY[name][2]
    x = values(seed, shape, low, high, away)
    if name == "clamp":   # keep clear of the clamp edges, where finite differences straddle the kink
        x = np.where(np.abs(x + 0.7) < 0.05, x - 0.1, np.where(np.abs(x - 0.9) < 0.05, x + 0.1, x))
    return x


@PROFILE
@given(op=st.sampled_from(sorted(UNARY)), shape=shapes, dtype=DTYPES, seed=seeds)
def test_unary_op_forward_matches_numpy(op, shape, dtype, seed):
    x = _unary_input(op, seed, shape).astype(dtype)
    ours, ref, _ = UNARY[op]
    assert_forward(ours(var(x, dtype)), ref(x.astype(np.float64)), dtype)


@needs_fp64
@GRAD_PROFILE
@given(op=st.sampled_from(sorted(UNARY)), shape=small_shapes, seed=seeds)
def test_unary_op_gradient_matches_finite_differences(op, shape, seed):
    assert_gradients(UNARY[op][0], [_unary_input(op, seed, shape)], seed)


# -- reductions --------------------------------------------------------------------------------------

@st.composite
def shape_and_dim(draw, shape_strategy=shapes, min_dims=1):
    shape = draw(shape_strategy.filter(lambda s: len(s) >= min_dims))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return shape, dim


def _ref_reduce(kind, x, dim, keepdim):
    with quiet():
        if kind == "sum":
            return np.sum(x, axis=dim, keepdims=keepdim)
        if kind == "mean":
            return np.mean(x, axis=dim, keepdims=keepdim)
        if kind == "var":
            return np.var(x, axis=dim, ddof=1, keepdims=keepdim)
        return np.max(x, axis=dim, keepdims=keepdim)


REDUCE = {
    "sum": lambda v, d, k: v.sum_dim(d, k),
    "mean": lambda v, d, k: v.mean_dim(d, k),
    "var": lambda v, d, k: v.var_dim(d, k),
    "max": lambda v, d, k: v.max_dim(d, k),
}


@PROFILE
@given(kind=st.sampled_from(sorted(REDUCE)), sd=shape_and_dim(), keepdim=st.booleans(), dtype=DTYPES, seed=seeds)
@example(kind="sum", sd=((4, 0, 2), 1), keepdim=True, dtype=np.float32, seed=0)
def test_reduction_over_a_dim_matches_numpy(kind, sd, keepdim, dtype, seed):
    shape, dim = sd
    x = values(seed, shape).astype(dtype)
    if kind == "max" and shape[dim] == 0:
        with pytest.raises(ValueError, match="cannot reduce an empty dimension"):
            REDUCE[kind](var(x, dtype), dim, keepdim)
        return
    if kind == "var" and shape[dim] == 0:
        return   # pinned by test_var_over_an_empty_dim_is_nan
    assert_forward(REDUCE[kind](var(x, dtype), dim, keepdim), _ref_reduce(kind, x.astype(np.float64), dim, keepdim),
                   dtype, scale=max(shape))


@PROFILE
@given(shape=shapes, dtype=DTYPES, seed=seeds)
def test_sum_and_mean_of_everything_match_numpy(shape, dtype, seed):
    x = values(seed, shape).astype(dtype)
    x64 = x.astype(np.float64)
    assert_forward(var(x, dtype).sum(), np.sum(x64), dtype, scale=x.size or 1)
    with quiet():
        assert_forward(var(x, dtype).mean(), np.mean(x64), dtype)


@needs_fp64
@GRAD_PROFILE
@given(kind=st.sampled_from(sorted(REDUCE) + ["sum_all", "mean_all"]), sd=shape_and_dim(small_shapes),
       keepdim=st.booleans(), seed=seeds)
def test_reduction_gradient_matches_finite_differences(kind, sd, keepdim, seed):
    shape, dim = sd
    if kind in ("max", "var") and shape[dim] < 2:
        return   # max over nothing raises; var of one element is NaN (no gradient to compare)
    x = values(seed, shape)
    if kind == "sum_all":
        fn = lambda v: v.sum()
    elif kind == "mean_all":
        fn = lambda v: v.mean()
    else:
        fn = lambda v: REDUCE[kind](v, dim, keepdim)
    assert_gradients(fn, [x], seed)


# -- softmax and log_softmax -------------------------------------------------------------------------

def _softmax(x, dim):
    e = np.exp(x - np.max(x, axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


@PROFILE
@given(log=st.booleans(), sd=shape_and_dim(), dtype=DTYPES, seed=seeds)
def test_softmax_and_log_softmax_match_numpy(log, sd, dtype, seed):
    shape, dim = sd
    if shape[dim] == 0:
        return   # pinned by test_softmax_over_an_empty_dim_gives_an_empty_result
    x = values(seed, shape, -4, 4).astype(dtype)
    v = var(x, dtype)
    out = v.log_softmax(dim) if log else v.softmax(dim)
    with quiet():
        ref = _softmax(x.astype(np.float64), dim) if x.size else np.zeros(shape)
    assert_forward(out, np.log(ref) if log else ref, dtype)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_over_an_empty_dim_gives_an_empty_result(log):
    # As numpy and PyTorch: nothing to normalise is not an error. (Today the max pass refuses it.)
    v = var(np.zeros((0, 3)), np.float32)
    out = v.log_softmax(0) if log else v.softmax(0)
    assert out.shape() == [0, 3]


def test_var_over_an_empty_dim_is_nan():
    # numpy's var(ddof=1) and PyTorch give NaN for no elements; a sum over nothing would say 0.
    out = var(np.zeros((0, 3)), np.float32).var_dim(0)
    assert out.shape() == [3] and np.isnan(out.numpy()).all()


@needs_fp64
@GRAD_PROFILE
@given(log=st.booleans(), sd=shape_and_dim(small_shapes), seed=seeds)
def test_softmax_gradient_matches_finite_differences(log, sd, seed):
    shape, dim = sd
    if 0 in shape:
        return
    assert_gradients(lambda v: v.log_softmax(dim) if log else v.softmax(dim), [values(seed, shape)], seed)


# -- matmul ------------------------------------------------------------------------------------------

@st.composite
def matmul_shapes(draw, max_side=5, max_batch_dims=2):
    m, k, n = (draw(st.integers(0, max_side)) for _ in range(3))
    (ba, bb), _ = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=max_batch_dims,
                                                         max_side=3))
    a = (k,) if draw(st.booleans()) and not ba else ba + (m, k)
    b = (k,) if draw(st.booleans()) and not bb else bb + (k, n)
    return a, b


@PROFILE
@given(ab=matmul_shapes(), dtype=DTYPES, seed=seeds)
@example(ab=((3,), (3,)), dtype=np.float32, seed=0)
@example(ab=((2, 0), (0, 3)), dtype=np.float32, seed=0)
@example(ab=((2, 1, 3, 4), (5, 4, 2)), dtype=np.float32, seed=0)
def test_matmul_matches_numpy(ab, dtype, seed):
    sa, sb = ab
    a, b = values(seed, sa).astype(dtype), values(seed + 1, sb).astype(dtype)
    k = sa[-1]
    assert_forward(var(a, dtype).matmul(var(b, dtype)), np.matmul(a.astype(np.float64), b.astype(np.float64)),
                   dtype, scale=max(k, 1))


@needs_fp64
@GRAD_PROFILE
@given(ab=matmul_shapes(max_side=3, max_batch_dims=1), seed=seeds)
def test_matmul_gradient_matches_finite_differences(ab, seed):
    sa, sb = ab
    assert_gradients(lambda a, b: a.matmul(b), [values(seed, sa), values(seed + 1, sb)], seed)


# -- shape ops ---------------------------------------------------------------------------------------

@st.composite
def shape_op(draw, shape_strategy=shapes):
    """(name, shape, ours, numpy reference) for a random shape op applicable to a random shape."""
    shape = draw(shape_strategy)
    nd = len(shape)
    choices = ["reshape", "unsqueeze", "squeeze_all", "expand"]
    if nd >= 1:
        choices += ["transpose", "narrow", "squeeze_dim", "cat", "slice"]
    name = draw(st.sampled_from(choices))
    if name == "reshape":
        target = [int(np.prod(shape))] if draw(st.booleans()) else list(reversed(shape))
        return name, shape, lambda v: v.reshape(target), lambda x: x.reshape(target)
    if name == "unsqueeze":
        d = draw(st.integers(-nd - 1, nd))
        return name, shape, lambda v: v.unsqueeze(d), lambda x: np.expand_dims(x, d)
    if name == "squeeze_all":
        return name, shape, lambda v: v.squeeze(), lambda x: x.reshape([s for s in shape if s != 1])
    if name == "expand":
        extra = draw(st.lists(st.integers(0, 3), max_size=2))
        target = list(extra) + [draw(st.integers(0, 3)) if s == 1 else s for s in shape]
        return name, shape, lambda v: v.expand(target), lambda x: np.broadcast_to(x, target)
    d = draw(st.integers(-nd, nd - 1))
    size = shape[d]
    if name == "transpose":
        d1 = draw(st.integers(-nd, nd - 1))
        return name, shape, lambda v: v.transpose(d, d1), lambda x: np.swapaxes(x, d, d1)
    if name == "narrow":
        start = draw(st.integers(0, size))
        length = draw(st.integers(0, size - start))
        return name, shape, lambda v: v.narrow(d, start, length), \
            lambda x: np.take(x, np.arange(start, start + length), axis=d)
    if name == "squeeze_dim":
        return name, shape, lambda v: v.squeeze(d), \
            lambda x: np.squeeze(x, axis=d) if shape[d] == 1 else x
    if name == "slice":
        lo = draw(st.integers(0, shape[0]))
        hi = draw(st.integers(lo, shape[0]))
        return name, shape, lambda v: v.slice([(lo, hi)]), lambda x: x[lo:hi]
    # cat with a copy of itself scaled, along d
    return name, shape, lambda v: Variable.cat([v, v * 2.0], d), lambda x: np.concatenate([x, x * 2], axis=d)


@PROFILE
@given(op=shape_op(), dtype=DTYPES, seed=seeds)
def test_shape_op_matches_numpy(op, dtype, seed):
    _name, shape, ours, ref = op
    x = values(seed, shape).astype(dtype)
    assert_forward(ours(var(x, dtype)), ref(x.astype(np.float64)), dtype)


@needs_fp64
@GRAD_PROFILE
@given(op=shape_op(small_shapes), seed=seeds)
def test_shape_op_gradient_matches_finite_differences(op, seed):
    _name, shape, ours, _ref = op
    assert_gradients(ours, [values(seed, shape)], seed)


# -- losses ------------------------------------------------------------------------------------------

def _smooth_l1(d, beta):
    return np.where(np.abs(d) < beta, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)


LOSSES = {   # name: (ours, numpy on float64 arrays)
    "mse": (lambda p, t: p.mse_loss(t), lambda p, t: np.mean((p - t) ** 2)),
    "l1": (lambda p, t: p.l1_loss(t), lambda p, t: np.mean(np.abs(p - t))),
    "smooth_l1": (lambda p, t: p.smooth_l1_loss(t, 0.5), lambda p, t: np.mean(_smooth_l1(p - t, 0.5))),
    "bce": (lambda p, t: p.binary_cross_entropy(t),
            lambda p, t: np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))),
}


def _loss_inputs(name, seed, shape):
    if name == "bce":
        return values(seed, shape, 0.05, 0.95), values(seed + 1, shape, 0.0, 1.0)
    p, t = values(seed, shape), values(seed + 1, shape)
    # |p - t| clear of 0 (l1's kink) and of beta (smooth_l1's seam) for the finite differences.
    d = p - t
    d = np.where(np.abs(d) < 0.05, d + 0.1, d)
    d = np.where(np.abs(np.abs(d) - 0.5) < 0.05, d * 1.3, d)
    return t + d, t


@PROFILE
@given(name=st.sampled_from(sorted(LOSSES)), shape=shapes.filter(lambda s: np.prod(s) > 0), dtype=DTYPES,
       seed=seeds)
def test_elementwise_loss_matches_numpy(name, shape, dtype, seed):
    p, t = (a.astype(dtype) for a in _loss_inputs(name, seed, shape))
    ours, ref = LOSSES[name]
    assert_forward(ours(var(p, dtype), var(t, dtype)), ref(p.astype(np.float64), t.astype(np.float64)), dtype)


@needs_fp64
@GRAD_PROFILE
@given(name=st.sampled_from(sorted(LOSSES)), shape=small_shapes.filter(lambda s: np.prod(s) > 0), seed=seeds)
def test_elementwise_loss_gradient_matches_finite_differences(name, shape, seed):
    p, t = _loss_inputs(name, seed, shape)
    assert_gradients(LOSSES[name][0], [p, t], seed)


@st.composite
def classification(draw, max_n=6, max_c=5):
    n, c = draw(st.integers(1, max_n)), draw(st.integers(1, max_c))
    return n, c, draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n))


@PROFILE
@given(case=classification(), as_tensor=st.booleans(), dtype=DTYPES, seed=seeds)
def test_cross_entropy_and_nll_match_numpy(case, as_tensor, dtype, seed):
    n, c, targets = case
    x = values(seed, (n, c), -4, 4).astype(dtype)
    tgt = Tensor.from_numpy(np.array(targets, np.int32), dtype="int32") if as_tensor else targets
    x64 = x.astype(np.float64)
    logp = x64 - x64.max(1, keepdims=True) - np.log(np.exp(x64 - x64.max(1, keepdims=True)).sum(1, keepdims=True))
    expected = -np.mean(logp[np.arange(n), targets])
    assert_forward(var(x, dtype).cross_entropy(tgt), expected, dtype)
    assert_forward(var(logp.astype(dtype), dtype).nll_loss(tgt), expected, dtype)


@needs_fp64
@GRAD_PROFILE
@given(case=classification(4, 4), seed=seeds)
def test_cross_entropy_gradient_matches_finite_differences(case, seed):
    n, c, targets = case
    assert_gradients(lambda v: v.cross_entropy(targets), [values(seed, (n, c))], seed)
