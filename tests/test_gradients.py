"""Every differentiable op, table-driven: its whole Jacobian against central differences in float64
(``check_gradients``), and its forward values against numpy in float32 and float64.

Shapes are deliberately not multiples of a tile or work-group size (1, 3, 5, 17, 65), and binary ops
are checked on broadcast shapes. Inputs avoid kinks: relu/abs/l1 away from 0, clamp away from its bounds,
max_dim without ties, smooth_l1 away from 0 and +-beta; log/sqrt/fractional pow get positive inputs and
binary cross-entropy probabilities in (0.05, 0.95).
"""

import math
import re
import zlib
from typing import Callable, NamedTuple

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable
from axonml_autograd.backward import GradcheckError, check_gradients

GRAD_ATOL = 1e-6
GRAD_RTOL = 1e-4


# ------------------------------------------------------------------------------------------------------
# Input generators
# ------------------------------------------------------------------------------------------------------

def _away(x, points, margin=0.1):
    """Move every value of ``x`` that is within ``margin`` of one of ``points`` by 2 * margin."""
    x = x.copy()
    for p in points:
        near = np.abs(x - p) < margin
        x[near] = x[near] + np.where(x[near] >= p, 2 * margin, -2 * margin)
    return x


def gen(kind, shape, rng, previous):
    n = int(np.prod(shape))
    if callable(kind):
        return np.asarray(kind(rng, shape, previous), dtype=np.float64).reshape(shape)
    if kind == "u":          # anything in [-2, 2]
        return rng.uniform(-2, 2, shape)
    if kind == "nz":         # away from 0
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.25, 2, shape)
    if kind == "pos":        # log, sqrt, fractional powers, denominators
        return rng.uniform(0.5, 2, shape)
    if kind == "prob":
        return rng.uniform(0.05, 0.95, shape)
    if kind == "t01":        # soft targets
        return rng.uniform(0, 1, shape)
    if kind == "distinct":   # no ties (gaps of 0.25 >> eps)
        return (rng.permutation(n) * 0.25 - n * 0.125).reshape(shape)
    if kind == "clamp":      # away from the bounds used below, -0.5 and 0.7
        return _away(rng.uniform(-2, 2, shape), [-0.5, 0.7])
    if kind == "unit":       # inside (-1, 1): asin, acos, atanh
        return rng.uniform(-0.9, 0.9, shape)
    if kind == "big":        # cosh, sinh, exp2 ... over a wider range, and above 1 for acosh-like ops
        return rng.uniform(-3, 3, shape)
    if kind == "steps":      # floor, ceil, round, trunc: away from every integer and half-integer
        return _away(rng.uniform(-3, 3, shape), [k / 2 for k in range(-7, 8)], 0.05)
    raise ValueError(kind)


def offset_from_first(low, high):
    """An input equal to input 0 minus a difference of magnitude in [low, high] (for l1/smooth_l1)."""
    def make(rng, shape, previous):
        d = rng.choice([-1.0, 1.0], shape) * rng.uniform(low, high, shape)
        return previous[0] - d
    return make


def smooth_l1_target(beta):
    """Differences on both sides of beta and well away from 0 and +-beta."""
    def make(rng, shape, previous):
        mag = np.where(rng.uniform(size=shape) < 0.5, rng.uniform(0.2, 0.8, shape) * beta,
                       rng.uniform(1.2, 2.5, shape) * beta)
        return previous[0] - rng.choice([-1.0, 1.0], shape) * mag
    return make


# ------------------------------------------------------------------------------------------------------
# numpy references
# ------------------------------------------------------------------------------------------------------

def np_softmax(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def np_log_softmax(x, dim):
    m = x.max(axis=dim, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=dim, keepdims=True))


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


_erf = np.vectorize(math.erf, otypes=[np.float64])


def np_gelu(x):
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def np_softplus(x, beta=1.0, threshold=20.0):
    return np.where(x * beta > threshold, x, np.log1p(np.exp(x * beta)) / beta)


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_bce(p, t):
    return -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))


def np_nll(lp, targets):
    return -np.mean(lp[np.arange(lp.shape[0]), np.asarray(targets)])


def _np_scatter_add(x, dim, index, src):
    out = x.copy()
    rows = np.arange(index.shape[0])[:, None].repeat(index.shape[1], 1)
    np.add.at(out, (rows, index), src)
    return out


def np_smooth_l1(p, t, beta):
    d = np.abs(p - t)
    return np.mean(np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta))


# ------------------------------------------------------------------------------------------------------
# The table: id -> op on Variables, numpy reference, inputs as (shape, kind, requires_grad)
# ------------------------------------------------------------------------------------------------------

class Case(NamedTuple):
    id: str
    fn: Callable
    ref: Callable
    inputs: tuple


CASES = []


def case(id, fn, ref, *inputs):
    CASES.append(Case(id, fn, ref, tuple((list(s), k, rg) for s, k, rg in
                                           (i if len(i) == 3 else (*i, True) for i in inputs))))


# Broadcasting binary ops, by method name and by operator.
BROADCAST_SHAPES = [
    ("3x17_3x17", [3, 17], [3, 17]),
    ("3x1_3x4", [3, 1], [3, 4]),
    ("4_3x4", [4], [3, 4]),
    ("3x4_4", [3, 4], [4]),
    ("2x1x5_3x1", [2, 1, 5], [3, 1]),
    ("0d_5", [], [5]),
    ("1x65_65", [1, 65], [65]),
]
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a.add_var(b), lambda a, b: a.add(b)),
    "sub": (lambda a, b: a - b, lambda a, b: a.sub_var(b), lambda a, b: a.sub(b)),
    "mul": (lambda a, b: a * b, lambda a, b: a.mul_var(b), lambda a, b: a.mul(b)),
    "div": (lambda a, b: a / b, lambda a, b: a.div_var(b), lambda a, b: a.div(b)),
}
for name, (ref, method, generic) in BINARY.items():
    denominator = "pos" if name == "div" else "u"
    for sid, sa, sb in BROADCAST_SHAPES:
        case(f"{name}_var-{sid}", method, ref, (sa, "u"), (sb, denominator))
    case(f"{name}_operator-3x1_3x4", ref, ref, ([3, 1], "u"), ([3, 4], denominator))
    case(f"{name}_generic-2x1x5_3x1", generic, ref, ([2, 1, 5], "u"), ([3, 1], denominator))
    # Only one side requires grad: the other gets nothing, this one still the reduced gradient.
    case(f"{name}_var-3x1_3x4-only_first_requires_grad", method, ref,
         ([3, 1], "u", True), ([3, 4], denominator, False))
    case(f"{name}_var-3x1_3x4-only_second_requires_grad", method, ref,
         ([3, 1], "u", False), ([3, 4], denominator, True))
case("sub_var-4x1_1x3-other_order", lambda a, b: b.sub_var(a), lambda a, b: b - a, ([4, 1], "u"), ([1, 3], "u"))
case("div_var-4x1_1x3-denominator_broadcast", lambda a, b: a.div_var(b), lambda a, b: a / b,
     ([4, 3], "u"), ([1, 3], "pos"))

# Scalars on either side.
SCALAR = {
    "add_scalar": (lambda x: x.add_scalar(2.5), lambda x: x + 2.5),
    "sub_scalar": (lambda x: x.sub_scalar(2.5), lambda x: x - 2.5),
    "mul_scalar": (lambda x: x.mul_scalar(-1.75), lambda x: x * -1.75),
    "div_scalar": (lambda x: x.div_scalar(-1.75), lambda x: x / -1.75),
    "add_number": (lambda x: x.add(2.5), lambda x: x + 2.5),
    "sub_number": (lambda x: x.sub(2.5), lambda x: x - 2.5),
    "mul_number": (lambda x: x.mul(3.0), lambda x: x * 3.0),
    "div_number": (lambda x: x.div(3.0), lambda x: x / 3.0),
    "operator_plus_scalar": (lambda x: x + 2.5, lambda x: x + 2.5),
    "operator_scalar_plus": (lambda x: 2.5 + x, lambda x: 2.5 + x),
    "operator_minus_scalar": (lambda x: x - 2.5, lambda x: x - 2.5),
    "operator_scalar_minus": (lambda x: 2.5 - x, lambda x: 2.5 - x),
    "operator_times_scalar": (lambda x: x * 3, lambda x: x * 3),
    "operator_scalar_times": (lambda x: 3 * x, lambda x: 3 * x),
    "operator_over_scalar": (lambda x: x / 4.0, lambda x: x / 4.0),
    "operator_scalar_over": (lambda x: 4.0 / x, lambda x: 4.0 / x),
    "neg_var": (lambda x: x.neg_var(), lambda x: -x),
    "operator_neg": (lambda x: -x, lambda x: -x),
}
for name, (fn, ref) in SCALAR.items():
    case(f"{name}-2x3x5", fn, ref, ([2, 3, 5], "pos" if name == "operator_scalar_over" else "u"))
case("operator_scalar_over-0d", lambda x: 4.0 / x, lambda x: 4.0 / x, ([], "pos"))


def const_like(v, shape):
    """A constant Tensor (not a Variable) on v's device and dtype."""
    return Tensor.from_numpy(CONST(shape), dtype=v.dtype, device=v.device)


def CONST(shape):
    n = int(np.prod(shape))
    return (np.linspace(0.5, 1.5, n) if n > 1 else np.array([0.75])).reshape(shape)


# A plain Tensor on the left of an operator: the Variable's reflected operator must take over.
case("operator_tensor_plus_variable-3x4", lambda a: const_like(a, [4]) + a, lambda a: CONST([4]) + a,
     ([3, 4], "u"))
case("operator_tensor_minus_variable-3x4", lambda a: const_like(a, [3, 1]) - a, lambda a: CONST([3, 1]) - a,
     ([3, 4], "u"))
case("operator_tensor_times_variable-3x4", lambda a: const_like(a, [3, 4]) * a, lambda a: CONST([3, 4]) * a,
     ([3, 4], "u"))
case("operator_tensor_over_variable-3x4", lambda a: const_like(a, [4]) / a, lambda a: CONST([4]) / a,
     ([3, 4], "pos"))
case("operator_tensor_matmul_variable-2x3_3x4", lambda b: const_like(b, [2, 3]) @ b,
     lambda b: CONST([2, 3]) @ b, ([3, 4], "u"))
case("operator_variable_matmul_tensor-2x3_3x4", lambda a: a @ const_like(a, [3, 4]),
     lambda a: a @ CONST([3, 4]), ([2, 3], "u"))
case("tensor_operand_is_a_constant-3x4", lambda a: a * Tensor.from_numpy(np.arange(4.0), dtype=a.dtype,
                                                                         device=a.device),
     lambda a: a * np.arange(4.0), ([3, 4], "u"))

# Elementwise maths.
case("pow_2-3x17", lambda x: x.pow(2.0), lambda x: x ** 2, ([3, 17], "u"))
case("pow_3-1x65", lambda x: x.pow(3), lambda x: x ** 3, ([1, 65], "u"))
case("pow_0.5-17", lambda x: x.pow(0.5), lambda x: x ** 0.5, ([17], "pos"))
case("pow_-1.5-2x3x5", lambda x: x.pow(-1.5), lambda x: x ** -1.5, ([2, 3, 5], "pos"))
case("pow_0-5", lambda x: x.pow(0.0), lambda x: x ** 0.0, ([5], "u"))
case("operator_pow_2.5-17", lambda x: x ** 2.5, lambda x: x ** 2.5, ([17], "pos"))
case("exp-3x17", lambda x: x.exp(), np.exp, ([3, 17], "u"))
case("exp-0d", lambda x: x.exp(), np.exp, ([], "u"))
case("log-3x17", lambda x: x.log(), np.log, ([3, 17], "pos"))
case("sqrt-1x65", lambda x: x.sqrt(), np.sqrt, ([1, 65], "pos"))
case("abs-3x17", lambda x: x.abs(), np.abs, ([3, 17], "nz"))
case("clamp_both-2x3x5", lambda x: x.clamp(-0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), ([2, 3, 5], "clamp"))
case("clamp_min-17", lambda x: x.clamp(min=-0.5), lambda x: np.maximum(x, -0.5), ([17], "clamp"))
case("clamp_max-17", lambda x: x.clamp(max=0.7), lambda x: np.minimum(x, 0.7), ([17], "clamp"))

# Activations.
ACT = {
    "relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0), "nz"),
    "leaky_relu_default": (lambda x: x.leaky_relu(), lambda x: np.where(x > 0, x, 0.01 * x), "nz"),
    "leaky_relu_0.2": (lambda x: x.leaky_relu(0.2), lambda x: np.where(x > 0, x, 0.2 * x), "nz"),
    "sigmoid": (lambda x: x.sigmoid(), np_sigmoid, "u"),
    "tanh": (lambda x: x.tanh(), np.tanh, "u"),
    "gelu": (lambda x: x.gelu(), np_gelu, "u"),
    "gelu_tanh": (lambda x: x.gelu("tanh"), np_gelu_tanh, "u"),
    "softplus": (lambda x: x.softplus(), np_softplus, "u"),
    "softplus_beta3": (lambda x: x.softplus(3.0, 4.0), lambda x: np_softplus(x, 3.0, 4.0), "u"),
    "elu": (lambda x: x.elu(0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x)), "nz"),
    "selu": (lambda x: x.selu(), lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
             "nz"),
    "mish": (lambda x: x.mish(), lambda x: x * np.tanh(np_softplus(x)), "u"),
    "hardtanh": (lambda x: x.hardtanh(-0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), "clamp"),
    "logsigmoid": (lambda x: x.logsigmoid(), lambda x: -np.logaddexp(0, -x), "u"),
    "silu": (lambda x: x.silu(), lambda x: x * np_sigmoid(x), "u"),
}
for name, (fn, ref, kind) in ACT.items():
    case(f"{name}-3x17", fn, ref, ([3, 17], kind))
    case(f"{name}-1x65", fn, ref, ([1, 65], kind))
for name, fn, ref in (("softmax", lambda d: (lambda x: x.softmax(d)), np_softmax),
                      ("log_softmax", lambda d: (lambda x: x.log_softmax(d)), np_log_softmax)):
    case(f"{name}_dim-1-3x5", fn(-1), lambda x, r=ref: r(x, -1), ([3, 5], "u"))
    case(f"{name}_dim0-3x5", fn(0), lambda x, r=ref: r(x, 0), ([3, 5], "u"))
    case(f"{name}_dim1-2x3x5", fn(1), lambda x, r=ref: r(x, 1), ([2, 3, 5], "u"))
    case(f"{name}_dim0-17", fn(0), lambda x, r=ref: r(x, 0), ([17], "u"))
    case(f"{name}_dim1-1x65", fn(1), lambda x, r=ref: r(x, 1), ([1, 65], "u"))

# Maths: one row each, on shapes of 17 and [3, 5], with inputs inside each function's domain.
MATHS = {
    "sin": (np.sin, "big"), "cos": (np.cos, "big"), "tan": (np.tan, "unit"), "asin": (np.arcsin, "unit"),
    "acos": (np.arccos, "unit"), "atan": (np.arctan, "big"), "sinh": (np.sinh, "big"), "cosh": (np.cosh, "big"),
    "asinh": (np.arcsinh, "big"), "atanh": (np.arctanh, "unit"), "erf": (_erf, "u"),
    "erfc": (lambda x: 1 - _erf(x), "u"), "log1p": (np.log1p, "pos"), "expm1": (np.expm1, "u"),
    "log2": (np.log2, "pos"), "log10": (np.log10, "pos"), "exp2": (np.exp2, "u"),
    "rsqrt": (lambda x: 1 / np.sqrt(x), "pos"), "reciprocal": (lambda x: 1 / x, "pos"),
    "square": (np.square, "u"), "sign": (np.sign, "nz"), "floor": (np.floor, "steps"),
    "ceil": (np.ceil, "steps"), "round": (np.round, "steps"), "trunc": (np.trunc, "steps"),
}
for name, (ref, kind) in MATHS.items():
    case(f"{name}-17", lambda x, n=name: getattr(x, n)(), ref, ([17], kind))
    case(f"{name}-3x5", lambda x, n=name: getattr(x, n)(), ref, ([3, 5], kind))

# Binary maths, broadcasting, both sides differentiable (away from ties, zeros and the remainder's jumps).
case("maximum-3x1_3x4", lambda a, b: a.maximum(b), np.maximum, ([3, 1], "distinct"), ([3, 4], "u"))
case("minimum-4_3x4", lambda a, b: a.minimum(b), np.minimum, ([4], "distinct"), ([3, 4], "u"))
case("atan2-3x17", lambda a, b: a.atan2(b), np.arctan2, ([3, 17], "nz"), ([3, 17], "nz"))
case("fmod-3x5_5", lambda a, b: a.fmod(b), np.fmod, ([3, 5], "steps"), ([5], lambda r, s, p: r.uniform(1.1, 1.4, s)))
case("remainder-17", lambda a, b: a.remainder(b), np.remainder, ([17], "steps"),
     ([17], lambda r, s, p: r.choice([-1.0, 1.0], s) * r.uniform(1.1, 1.4, s)))
case("pow_tensor_exponent-3x4_4", lambda a, b: a.pow(b), np.power, ([3, 4], "pos"), ([4], "u"))
case("rpow-17", lambda x: 2.5 ** x, lambda x: 2.5 ** x, ([17], "u"))

# torch's spellings of reductions and shapes.
case("sum_tuple-2x3x5", lambda x: x.sum((0, 2)), lambda x: x.sum(axis=(0, 2)), ([2, 3, 5], "u"))
case("mean_keepdim-3x17", lambda x: x.mean(dim=1, keepdim=True), lambda x: x.mean(axis=1, keepdims=True),
     ([3, 17], "u"))
case("sum_all_keepdim-3x5", lambda x: x.sum(keepdim=True), lambda x: x.sum(keepdims=True), ([3, 5], "u"))
case("max_all-3x17", lambda x: x.max(), lambda x: x.max(), ([3, 17], "distinct"))
case("max_dim_values-2x3x5", lambda x: x.max(1)[0], lambda x: x.max(axis=1), ([2, 3, 5], "distinct"))
case("min_all-17", lambda x: x.min(), lambda x: x.min(), ([17], "distinct"))
case("min_dim_keepdim-3x5", lambda x: x.min(0, keepdim=True)[0], lambda x: x.min(axis=0, keepdims=True),
     ([3, 5], "distinct"))
case("permute-2x3x5", lambda x: x.permute(2, 0, 1), lambda x: x.transpose(2, 0, 1), ([2, 3, 5], "u"))
case("T-3x17", lambda x: x.T, lambda x: x.T, ([3, 17], "u"))
case("mT-2x3x5", lambda x: x.mT, lambda x: np.swapaxes(x, -1, -2), ([2, 3, 5], "u"))
case("flip-2x3x5", lambda x: x.flip(0, 2), lambda x: np.flip(x, (0, 2)), ([2, 3, 5], "u"))
case("flip-17", lambda x: x.flip(0), lambda x: x[::-1], ([17], "u"))
case("tril-5x7", lambda x: x.tril(), np.tril, ([5, 7], "u"))
case("diagonal-5x7", lambda x: x.diagonal(), np.diagonal, ([5, 7], "u"))
case("diagonal_offset-5x7", lambda x: x.diagonal(2), lambda x: np.diagonal(x, 2), ([5, 7], "u"))
case("diagonal_neg-2x3x5", lambda x: x.diagonal(-1, 2, 1), lambda x: np.diagonal(x, -1, 2, 1), ([2, 3, 5], "u"))
case("diagonal_last_column-3x4", lambda x: x.diagonal(3), lambda x: np.diagonal(x, 3), ([3, 4], "u"))
case("triu_1-2x3x5", lambda x: x.triu(1), lambda x: np.triu(x, 1), ([2, 3, 5], "u"))
case("tril_neg-17x3", lambda x: x.tril(-2), lambda x: np.tril(x, -2), ([17, 3], "u"))
case("repeat-3x1", lambda x: x.repeat(2, 1, 4), lambda x: np.tile(x, (2, 1, 4)), ([3, 1], "u"))
case("stack-3x5_3x5", lambda a, b: Variable.stack([a, b], 1), lambda a, b: np.stack([a, b], 1), ([3, 5], "u"),
     ([3, 5], "u"))
case("split-17", lambda x: Variable.cat([p * (k + 1) for k, p in enumerate(x.split(5))], 0),
     lambda x: np.concatenate([p * (k + 1) for k, p in enumerate(np.split(x, [5, 10, 15]))]), ([17], "u"))
case("chunk-3x17", lambda x: x.chunk(4, 1)[3] * 2.0, lambda x: x[:, 15:] * 2.0, ([3, 17], "u"))
case("flatten-2x3x5", lambda x: x.flatten(1), lambda x: x.reshape(2, 15), ([2, 3, 5], "u"))
case("unflatten-3x6", lambda x: x.unflatten(1, (2, 3)), lambda x: x.reshape(3, 2, 3), ([3, 6], "u"))
case("reshape_varargs-3x17", lambda x: x.reshape(17, -1), lambda x: x.reshape(17, 3), ([3, 17], "u"))
case("expand_as-3x1", lambda x: x.expand_as(Variable(Tensor.zeros([3, 4], x.dtype))),
     lambda x: np.broadcast_to(x, (3, 4)), ([3, 1], "u"))
case("cross_entropy_nd-2x5x3", lambda x: x.cross_entropy([[0, 4, 2], [1, 1, 3]]),
     lambda x: np_nll(np_log_softmax(x.transpose(0, 2, 1).reshape(6, 5), 1), [0, 4, 2, 1, 1, 3]),
     ([2, 5, 3], "u"))

# torch-style reductions and selection by a mask.
case("var_correction0-3x17", lambda x: x.var(1, correction=0), lambda x: x.var(axis=1), ([3, 17], "u"))
case("var_all-2x3x5", lambda x: x.var(), lambda x: x.var(ddof=1), ([2, 3, 5], "u"))
case("std_tuple_keepdim-2x3x5", lambda x: x.std((0, 2), keepdim=True),
     lambda x: x.std(axis=(0, 2), ddof=1, keepdims=True), ([2, 3, 5], "u"))
case("amax_tuple-2x3x5", lambda x: x.amax((1, 2)), lambda x: x.max(axis=(1, 2)), ([2, 3, 5], "distinct"))
case("amin-17", lambda x: x.amin(0), lambda x: x.min(axis=0), ([17], "distinct"))
case("cumsum-3x17", lambda x: x.cumsum(1), lambda x: np.cumsum(x, 1), ([3, 17], "u"))
case("cumsum_dim0-2x3x5", lambda x: x.cumsum(0), lambda x: np.cumsum(x, 0), ([2, 3, 5], "u"))
case("prod-3x5", lambda x: x.prod(1), lambda x: np.prod(x, 1), ([3, 5], "u"))
case("prod_all_keepdim-2x3", lambda x: x.prod(keepdim=True), lambda x: np.prod(x, keepdims=True), ([2, 3], "u"))
case("prod_with_zero-17", lambda x: x.prod(0), lambda x: np.prod(x, 0),
     ([17], lambda r, s, p: np.where(np.arange(17) == 5, 0.0, r.uniform(0.8, 1.2, s))))
case("logsumexp-3x17", lambda x: x.logsumexp(1), lambda x: np.log(np.exp(x).sum(axis=1)), ([3, 17], "u"))
case("norm2-3x5", lambda x: x.norm(), lambda x: np.sqrt((x * x).sum()), ([3, 5], "nz"))
case("norm1_dim-3x17", lambda x: x.norm(1, 1), lambda x: np.abs(x).sum(axis=1), ([3, 17], "nz"))
case("norm3_keepdim-3x5", lambda x: x.norm(3, 0, keepdim=True),
     lambda x: (np.abs(x) ** 3).sum(axis=0, keepdims=True) ** (1 / 3), ([3, 5], "nz"))
case("where-3x1_3x4", lambda a, b: a.where(Tensor.from_numpy(np.array([1, 0, 0, 1], np.int32), dtype="int32"), b),
     lambda a, b: np.where(np.array([1, 0, 0, 1]) != 0, a, b), ([3, 1], "u"), ([3, 4], "u"))
case("masked_fill-3x17", lambda x: x.masked_fill(Tensor.from_numpy((np.arange(17) % 3 == 0).astype(np.int32),
                                                                   dtype="int32"), 2.5),
     lambda x: np.where(np.arange(17) % 3 == 0, 2.5, x), ([3, 17], "u"))

# Indexing and selection (repeated indices accumulate).
case("index_int-3x17", lambda x: x[1], lambda x: x[1], ([3, 17], "u"))
case("index_slices-2x3x5", lambda x: x[:, 1:, ::2], lambda x: x[:, 1:, ::2], ([2, 3, 5], "u"))
case("index_neg_none_ellipsis-2x3x5", lambda x: x[..., -1, None], lambda x: x[..., -1, None], ([2, 3, 5], "u"))
case("index_list_repeats-3x17", lambda x: x[:, [16, 0, 16, 3]], lambda x: x[:, [16, 0, 16, 3]], ([3, 17], "u"))
case("index_select-65x3", lambda x: x.index_select(0, [64, 1, 64, 64, 0]), lambda x: x[[64, 1, 64, 64, 0]],
     ([65, 3], "u"))
case("gather-3x5", lambda x: x.gather(1, np.array([[4, 0, 4], [1, 1, 2], [0, 3, 3]])),
     lambda x: np.take_along_axis(x, np.array([[4, 0, 4], [1, 1, 2], [0, 3, 3]]), 1), ([3, 5], "u"))
case("scatter_add-3x5_3x4", lambda x, s: x.scatter_add(1, np.array([[4, 0, 4, 1], [2, 2, 2, 2], [0, 1, 3, 4]]), s),
     lambda x, s: _np_scatter_add(x, 1, np.array([[4, 0, 4, 1], [2, 2, 2, 2], [0, 1, 3, 4]]), s),
     ([3, 5], "u"), ([3, 4], "u"))
case("embedding-17x3", lambda w: __import__("axonml_autograd.nn.functional", fromlist=["embedding"]).embedding(
     [[16, 2], [2, 0]], w), lambda w: w[np.array([[16, 2], [2, 0]])], ([17, 3], "u"))

# Reductions.
case("sum-3x17", lambda x: x.sum(), lambda x: np.sum(x), ([3, 17], "u"))
case("sum-0d", lambda x: x.sum(), lambda x: np.sum(x), ([], "u"))
case("sum-1x65", lambda x: x.sum(), lambda x: np.sum(x), ([1, 65], "u"))
case("mean-2x3x5", lambda x: x.mean(), lambda x: np.mean(x), ([2, 3, 5], "u"))
case("mean-17", lambda x: x.mean(), lambda x: np.mean(x), ([17], "u"))
for name, fn, ref in (("sum_dim", lambda x, d, k: x.sum_dim(d, k), lambda x, d, k: x.sum(axis=d, keepdims=k)),
                      ("mean_dim", lambda x, d, k: x.mean_dim(d, k), lambda x, d, k: x.mean(axis=d, keepdims=k)),
                      ("var_dim", lambda x, d, k: x.var_dim(d, k),
                       lambda x, d, k: x.var(axis=d, ddof=1, keepdims=k)),
                      ("max_dim", lambda x, d, k: x.max_dim(d, k), lambda x, d, k: x.max(axis=d, keepdims=k))):
    kind = "distinct" if name == "max_dim" else "u"
    for shape, dim, keep in (([3, 17], 1, False), ([3, 17], 0, True), ([2, 3, 5], 1, False),
                             ([2, 3, 5], -1, True), ([2, 3, 5], 0, False), ([17], 0, False)):
        sid = "x".join(map(str, shape))
        case(f"{name}_dim{dim}{'_keepdim' if keep else ''}-{sid}",
             lambda x, f=fn, d=dim, k=keep: f(x, d, k), lambda x, r=ref, d=dim, k=keep: r(x, d, k), (shape, kind))

# Matrix products.
MATMUL = [
    ("2d-3x17_17x2", [3, 17], [17, 2]),
    ("2d-1x5_5x3", [1, 5], [5, 3]),
    ("batched-2x3x4_2x4x5", [2, 3, 4], [2, 4, 5]),
    ("broadcast_batch-2x1x3x4_3x4x2", [2, 1, 3, 4], [3, 4, 2]),
    ("broadcast_batch-3x4_2x4x2", [3, 4], [2, 4, 2]),
    ("broadcast_batch-2x3x4_4x5", [2, 3, 4], [4, 5]),
    ("1d_2d-4_4x3", [4], [4, 3]),
    ("2d_1d-3x4_4", [3, 4], [4]),
    ("1d_1d-5_5", [5], [5]),
    ("1d_batched-4_2x4x3", [4], [2, 4, 3]),
    ("batched_1d-2x3x4_4", [2, 3, 4], [4]),
]
for sid, sa, sb in MATMUL:
    case(f"matmul_{sid}", lambda a, b: a.matmul(b), np.matmul, (sa, "u"), (sb, "u"))
case("matmul_operator-3x4_4x2", lambda a, b: a @ b, np.matmul, ([3, 4], "u"), ([4, 2], "u"))
case("matmul-3x4_4x2-only_weight_requires_grad", lambda a, b: a.matmul(b), np.matmul,
     ([3, 4], "u", False), ([4, 2], "u", True))
case("matmul-3x4_4x2-only_input_requires_grad", lambda a, b: a.matmul(b), np.matmul,
     ([3, 4], "u", True), ([4, 2], "u", False))

# Shapes.
case("reshape-3x17_to_17x3", lambda x: x.reshape([17, 3]), lambda x: x.reshape(17, 3), ([3, 17], "u"))
case("reshape-2x3x5_to_minus1x5", lambda x: x.reshape([-1, 5]), lambda x: x.reshape(-1, 5), ([2, 3, 5], "u"))
case("transpose-3x17", lambda x: x.transpose(0, 1), lambda x: x.T, ([3, 17], "u"))
case("transpose_0_2-2x3x5", lambda x: x.transpose(0, 2), lambda x: np.swapaxes(x, 0, 2), ([2, 3, 5], "u"))
case("transpose_neg-2x3x5", lambda x: x.transpose(-1, -2), lambda x: np.swapaxes(x, -1, -2), ([2, 3, 5], "u"))
case("narrow_dim1-3x17", lambda x: x.narrow(1, 5, 7), lambda x: x[:, 5:12], ([3, 17], "u"))
case("narrow_dim0-2x3x5", lambda x: x.narrow(0, 1, 1), lambda x: x[1:2], ([2, 3, 5], "u"))
case("narrow_last-1x65", lambda x: x.narrow(-1, 60, 5), lambda x: x[:, 60:65], ([1, 65], "u"))
case("slice-3x17", lambda x: x.slice([(1, 3), (2, 9)]), lambda x: x[1:3, 2:9], ([3, 17], "u"))
case("slice_leading_only-2x3x5", lambda x: x.slice([(0, 1)]), lambda x: x[0:1], ([2, 3, 5], "u"))
case("slice_python_ranges-2x3x5", lambda x: x.slice([range(1, 2), slice(0, 2)]), lambda x: x[1:2, 0:2],
     ([2, 3, 5], "u"))
case("expand-3x1_to_3x4", lambda x: x.expand([3, 4]), lambda x: np.broadcast_to(x, (3, 4)), ([3, 1], "u"))
case("expand-4_to_2x3x4", lambda x: x.expand([2, 3, 4]), lambda x: np.broadcast_to(x, (2, 3, 4)), ([4], "u"))
case("expand-0d_to_5", lambda x: x.expand([5]), lambda x: np.broadcast_to(x, (5,)), ([], "u"))
case("unsqueeze0-17", lambda x: x.unsqueeze(0), lambda x: x[None], ([17], "u"))
case("unsqueeze_last-3x5", lambda x: x.unsqueeze(-1), lambda x: x[..., None], ([3, 5], "u"))
case("squeeze0-1x65", lambda x: x.squeeze(0), lambda x: x[0], ([1, 65], "u"))
case("squeeze_all-1x3x1x5", lambda x: x.squeeze(), lambda x: np.squeeze(x), ([1, 3, 1, 5], "u"))
case("cat_dim1-2x3_2x5_2x1", lambda a, b, c: Variable.cat([a, b, c], 1),
     lambda a, b, c: np.concatenate([a, b, c], 1), ([2, 3], "u"), ([2, 5], "u"), ([2, 1], "u"))
case("cat_dim0-1x5_3x5", lambda a, b: Variable.cat([a, b], 0), lambda a, b: np.concatenate([a, b], 0),
     ([1, 5], "u"), ([3, 5], "u"))
case("cat_dim0-second_constant", lambda a, b: Variable.cat([a, b], 0), lambda a, b: np.concatenate([a, b], 0),
     ([2, 3], "u", True), ([3, 3], "u", False))

# Losses (the target requires grad too where the loss is differentiable in it).
case("mse_loss-3x17", lambda p, t: p.mse_loss(t), lambda p, t: np.mean((p - t) ** 2), ([3, 17], "u"), ([3, 17], "u"))
case("mse_loss-17-constant_target", lambda p, t: p.mse_loss(t), lambda p, t: np.mean((p - t) ** 2),
     ([17], "u"), ([17], "u", False))
case("binary_cross_entropy-3x17", lambda p, t: p.binary_cross_entropy(t), np_bce, ([3, 17], "prob"),
     ([3, 17], "t01"))
case("binary_cross_entropy-1x65-hard_labels", lambda p, t: p.binary_cross_entropy(t), np_bce,
     ([1, 65], "prob"), ([1, 65], lambda rng, s, prev: rng.integers(0, 2, s), False))
case("l1_loss-3x17", lambda p, t: p.l1_loss(t), lambda p, t: np.mean(np.abs(p - t)),
     ([3, 17], "u"), ([3, 17], offset_from_first(0.1, 1.5)))
case("smooth_l1_loss-3x17", lambda p, t: p.smooth_l1_loss(t), lambda p, t: np_smooth_l1(p, t, 1.0),
     ([3, 17], "u"), ([3, 17], smooth_l1_target(1.0)))
case("smooth_l1_loss_beta0.5-2x3x5", lambda p, t: p.smooth_l1_loss(t, beta=0.5),
     lambda p, t: np_smooth_l1(p, t, 0.5), ([2, 3, 5], "u"), ([2, 3, 5], smooth_l1_target(0.5)))
CE_TARGETS = [0, 4, 2, 4, 1]
case("cross_entropy-5x5-list_targets", lambda x: x.cross_entropy(CE_TARGETS),
     lambda x: np_nll(np_log_softmax(x, 1), CE_TARGETS), ([5, 5], "u"))
case("cross_entropy-3x17-tensor_targets",
     lambda x: x.cross_entropy(Tensor.from_numpy(np.array([16, 0, 9], np.int32), dtype="int32", device=x.device)),
     lambda x: np_nll(np_log_softmax(x, 1), [16, 0, 9]), ([3, 17], "u"))
case("cross_entropy-1x65", lambda x: x.cross_entropy([64]), lambda x: np_nll(np_log_softmax(x, 1), [64]),
     ([1, 65], "u"))
case("nll_loss-5x3", lambda x: x.nll_loss([2, 0, 1, 1, 2]), lambda x: np_nll(x, [2, 0, 1, 1, 2]), ([5, 3], "u"))
case("nll_loss_after_log_softmax-4x17", lambda x: x.log_softmax(1).nll_loss([3, 16, 0, 8]),
     lambda x: np_nll(np_log_softmax(x, 1), [3, 16, 0, 8]), ([4, 17], "u"))

# A composite: everything at once, so the scheduler sums contributions through a real graph.
case("composite_mlp-4x5",
     lambda x, w, b: (x.matmul(w) + b).tanh().mul_var(x.narrow(1, 0, 3)).sum_dim(1).pow(2.0).mean(),
     lambda x, w, b: np.mean(np.sum(np.tanh(x @ w + b) * x[:, :3], axis=1) ** 2),
     ([4, 5], "u"), ([5, 3], "u"), ([3], "u"))


ids = [c.id for c in CASES]
assert len(ids) == len(set(ids)), "case ids must be unique"


def make_arrays(c: Case):
    rng = np.random.default_rng(zlib.crc32(c.id.encode()))
    arrays = []
    for shape, kind, _rg in c.inputs:
        arrays.append(gen(kind, shape, rng, arrays))
    return arrays


def make_vars(c: Case, arrays, dtype, device):
    return [Variable(Tensor.from_numpy(a, dtype=dtype, device=device), requires_grad=rg)
            for a, (_s, _k, rg) in zip(arrays, c.inputs)]


# ------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", CASES, ids=ids)
def test_gradient_matches_finite_differences_float64(c, device, fp64):
    arrays = make_arrays(c)
    inputs = make_vars(c, arrays, "float64", device)
    assert check_gradients(c.fn, inputs, eps=1e-6, atol=GRAD_ATOL, rtol=GRAD_RTOL) is True
    # check_gradients leaves no gradient behind.
    assert all(v.grad is None for v in inputs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("c", CASES, ids=ids)
def test_forward_matches_numpy(c, dtype, device):
    if dtype == "float64" and not device.fp64:
        pytest.skip("no cl_khr_fp64")
    arrays = [a.astype(dtype) for a in make_arrays(c)]
    inputs = make_vars(c, arrays, dtype, device)
    out = c.fn(*inputs)
    expected = np.asarray(c.ref(*[a.astype(np.float64) for a in arrays]))
    got = out.numpy()
    assert got.dtype == np.dtype(dtype)
    assert out.shape() == list(expected.shape)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, expected, **tol)
    assert out.requires_grad() == any(rg for _s, _k, rg in c.inputs)


# A check that the checker itself can fail: a wrong backward is caught and reported precisely.
def test_check_gradients_raises_naming_the_input_and_the_worst_element(device, fp64):
    from axonml_autograd.grad_fn import record
    from axonml_autograd.elementwise_kernels import elementwise

    def wrong_square(v):  # forward x^2, backward claims 3x instead of 2x
        x = v.data()
        return record("WrongSquareBackward", elementwise("a * a", [x]), [v],
                      lambda ctx, g: elementwise("L(3.0) * g * x", [g, ctx.saved_tensors[0]], names=("g", "x")),
                      saved=(x,))

    a = Variable(Tensor.from_numpy(np.array([1.0, 2.0, 3.0]), dtype="float64", device=device), True)
    b = Variable(Tensor.from_numpy(np.array([0.5, -1.0, 4.0]), dtype="float64", device=device), True)
    with pytest.raises(GradcheckError) as info:
        check_gradients(lambda a, b: a + wrong_square(b), [a, b])
    msg = str(info.value)
    assert "input 1" in msg
    assert "shape [3]" in msg
    assert "d output[2] / d input[2]" in msg   # |3x - 2x| is largest at x = 4
    # The two values at that element: 3 * 4 = 12 from backward, 2 * 4 = 8 by finite differences.
    numbers = [float(x) for x in re.findall(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?", msg)]
    assert any(abs(x - 12.0) < 1e-9 for x in numbers), msg
    assert any(abs(x - 8.0) < 1e-6 for x in numbers), msg
