"""Every elementwise op and its gradient against PyTorch (float64 reference) on special values.

Skipped without torch (a dev-only oracle). The inputs cover both signs of 0, tiny, moderate, large
and huge magnitudes, NaN and the infinities: NaN must propagate where torch propagates it, and
gradients must saturate exactly where torch's do (no 1 - tanh^2 cancellation noise).
"""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable
from axonml_autograd.registry import OPS as REGISTRY

torch = pytest.importorskip("torch")

SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-4, -1e-4, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 20.0, -20.0, 100.0, -100.0,
           1e4, -1e4, 1e30, -1e30, float("nan"), float("inf"), float("-inf")]
F = torch.nn.functional

# name: (ours, torch's), both over one input.
OPS = {
    "relu": (lambda v: v.relu(), torch.relu),
    "leaky_relu": (lambda v: v.leaky_relu(0.1), lambda t: F.leaky_relu(t, 0.1)),
    "sigmoid": (lambda v: v.sigmoid(), torch.sigmoid),
    "tanh": (lambda v: v.tanh(), torch.tanh),
    "gelu_tanh": (lambda v: v.gelu("tanh"), lambda t: F.gelu(t, approximate="tanh")),
    "gelu": (lambda v: v.gelu(), F.gelu),
    "softplus": (lambda v: v.softplus(), F.softplus),
    "softplus_beta2": (lambda v: v.softplus(2.0, 10.0), lambda t: F.softplus(t, 2.0, 10.0)),
    "elu": (lambda v: v.elu(0.7), lambda t: F.elu(t, 0.7)),
    "selu": (lambda v: v.selu(), F.selu),
    "mish": (lambda v: v.mish(), F.mish),
    "hardtanh": (lambda v: v.hardtanh(-0.5, 2.0), lambda t: F.hardtanh(t, -0.5, 2.0)),
    "logsigmoid": (lambda v: v.logsigmoid(), F.logsigmoid),
    "rpow": (lambda v: 2.0 ** v, lambda t: 2.0 ** t),
    "sin": (lambda v: v.sin(), torch.sin),
    "cos": (lambda v: v.cos(), torch.cos),
    "tan": (lambda v: v.tan(), torch.tan),
    "asin": (lambda v: v.asin(), torch.asin),
    "acos": (lambda v: v.acos(), torch.acos),
    "atan": (lambda v: v.atan(), torch.atan),
    "sinh": (lambda v: v.sinh(), torch.sinh),
    "cosh": (lambda v: v.cosh(), torch.cosh),
    "asinh": (lambda v: v.asinh(), torch.asinh),
    "atanh": (lambda v: v.atanh(), torch.atanh),
    "erf": (lambda v: v.erf(), torch.erf),
    "erfc": (lambda v: v.erfc(), torch.erfc),
    "log1p": (lambda v: v.log1p(), torch.log1p),
    "expm1": (lambda v: v.expm1(), torch.expm1),
    "log2": (lambda v: v.log2(), torch.log2),
    "log10": (lambda v: v.log10(), torch.log10),
    "exp2": (lambda v: v.exp2(), torch.exp2),
    "rsqrt": (lambda v: v.rsqrt(), torch.rsqrt),
    "reciprocal": (lambda v: v.reciprocal(), torch.reciprocal),
    "square": (lambda v: v.square(), torch.square),
    "sign": (lambda v: v.sign(), torch.sign),
    "floor": (lambda v: v.floor(), torch.floor),
    "ceil": (lambda v: v.ceil(), torch.ceil),
    "round": (lambda v: v.round(), torch.round),
    "trunc": (lambda v: v.trunc(), torch.trunc),
    "silu": (lambda v: v.silu(), F.silu),
    "exp": (lambda v: v.exp(), torch.exp),
    "log": (lambda v: v.log(), torch.log),
    "sqrt": (lambda v: v.sqrt(), torch.sqrt),
    "abs": (lambda v: v.abs(), torch.abs),
    "neg": (lambda v: -v, torch.neg),
    "clamp": (lambda v: v.clamp(-0.5, 0.5), lambda t: torch.clamp(t, -0.5, 0.5)),
    "clamp_max": (lambda v: v.clamp(max=1.0), lambda t: torch.clamp(t, max=1.0)),
    "clamp_min": (lambda v: v.clamp(min=0.0), lambda t: torch.clamp(t, min=0.0)),
    "pow2": (lambda v: v.pow(2.0), lambda t: torch.pow(t, 2.0)),
    "pow3": (lambda v: v.pow(3.0), lambda t: torch.pow(t, 3.0)),
    "mul_scalar": (lambda v: v * 2.5, lambda t: t * 2.5),
    "rdiv": (lambda v: 1.0 / v, lambda t: 1.0 / t),
    "smooth_l1": (lambda v: v.smooth_l1_loss(Variable(Tensor.zeros(v.shape(), v.dtype))) * v.numel(),
                  lambda t: F.smooth_l1_loss(t, torch.zeros_like(t), reduction="sum")),
    "softmax": (lambda v: v.reshape([1, -1]).softmax(-1), lambda t: torch.softmax(t.reshape(1, -1), -1)),
    "log_softmax": (lambda v: v.reshape([1, -1]).log_softmax(-1), lambda t: torch.log_softmax(t.reshape(1, -1), -1)),
    "max_dim": (lambda v: v.reshape([1, -1]).max_dim(1), lambda t: t.reshape(1, -1).max(1).values),
}


def _torch_fn(path):
    fn = torch
    for part in path.split("."):
        fn = getattr(fn, part)
    return fn


# Every registry row with a torch twin is compared too, so a new row is checked on special values
# without a line here (the table above pins the calls with non-default options).
for _spec in REGISTRY.values():
    if _spec.torch and _spec.kind != "loss" and _spec.name not in OPS and not _spec.scalars:
        if _spec.arity == 1:
            OPS[_spec.name] = ((lambda n: lambda v: getattr(v, n)())(_spec.name), _torch_fn(_spec.torch))

# softmax and max look at the whole row: NaN or inf in one element changes every output, so they
# get the finite values only (NaN rows are covered by their own test below).
FINITE_ONLY = {"softmax", "log_softmax", "max_dim"}


# Where we differ from torch on purpose: at x = +-inf torch's gelu (tanh) gradient is NaN, from 0 * inf
# inside its formula; ours is the limit, 1 and 0.
DELIBERATE = {("gelu_tanh", "gradient"): [float("inf"), float("-inf")]}


def _values(name):
    vals = [v for v in SPECIAL if np.isfinite(v) and abs(v) < 1e20] if name in FINITE_ONLY else SPECIAL
    return np.array(vals)


def _compare(x, got, want, dtype, what, slack=1.0):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    # A few ulps relative, and two epsilons absolute: these functions and gradients are of order 1, so
    # below that both answers are rounding (where a curve saturates, torch's 1 - tanh^2 gives 0 and our
    # a / (1 + a)^2 the true 1.7e-17 at x = 20; an error like gelu's old 0.0064 is far above it).
    eps = float(np.finfo(dtype).eps)
    rtol, atol = (1e-9, 2 * eps) if dtype == np.float64 else (3e-6, 2 * eps)
    if slack != 1.0:   # sums of many terms: rounding grows with their count and magnitude
        rtol, atol = eps * slack, eps * slack
    with np.errstate(invalid="ignore"):
        close = (np.isnan(got) & np.isnan(want)) | (got == want) | (np.abs(got - want) <= atol + rtol * np.abs(want))
    bad = np.flatnonzero(~close)
    assert not bad.size, f"{what} differs from torch at " + ", ".join(
        f"x={x[i]!r}: {got[i]!r} vs {want[i]!r}" for i in bad[:8])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_and_gradient_match_torch_on_special_values(name, dtype, device):
    if dtype == np.float64 and not device.fp64:
        pytest.skip("no fp64")
    ours, theirs = OPS[name]
    x = _values(name)
    with np.errstate(all="ignore"):
        xs = x.astype(dtype)
    v = Variable(Tensor.from_numpy(xs, dtype=dtype), requires_grad=True)
    out = ours(v)
    out.sum().backward()
    # The reference: torch in float64 on the values our dtype can hold.
    t = torch.from_numpy(xs.astype(np.float64)).requires_grad_(True)
    ref = theirs(t)
    ref.sum().backward()
    # torch's float64 answer rounded to our dtype: float32 overflows and underflows where it must.
    with np.errstate(all="ignore"):
        want_out = ref.detach().numpy().reshape(-1).astype(dtype)
        want_grad = t.grad.numpy().astype(dtype)
    got_grad = v.grad().numpy()
    for x_special in DELIBERATE.get((name, "gradient"), []):
        at = xs == x_special
        assert np.all(got_grad[at] == (1.0 if x_special > 0 else 0.0))
        want_grad[at] = got_grad[at]
    _compare(xs, out.numpy().reshape(-1), want_out, dtype, f"{name} forward")
    _compare(xs, got_grad, want_grad, dtype, f"{name} gradient")


def test_binary_cross_entropy_of_an_invalid_probability_is_nan_not_a_plausible_number(device):
    p = Variable(Tensor.from_vec([0.3, float("nan"), 1.5, -0.5, 0.0, 1.0], [6]), requires_grad=True)
    t = Variable(Tensor.from_vec([1.0, 1.0, 1.0, 0.0, 0.0, 1.0], [6]))
    for k in range(6):
        loss = p.narrow(0, k, 1).binary_cross_entropy(t.narrow(0, k, 1))
        assert np.isnan(loss.item()) == (k in (1, 2, 3)), (k, loss.item())
    full = p.binary_cross_entropy(t)
    full.backward()
    assert np.isnan(full.item())
    assert np.isnan(p.grad().numpy()[[1, 2, 3]]).all() and np.isfinite(p.grad().numpy()[[0, 4, 5]]).all()


def test_class_indices_in_a_float_tensor_are_refused_not_truncated(device):
    logits = Variable(Tensor.from_vec([0.1, 0.2, 0.3, 0.4], [2, 2]), requires_grad=True)
    with pytest.raises(TypeError, match="targets: class indices must be an int32 or int64 tensor, got a float32"):
        logits.cross_entropy(Tensor.from_vec([1.7, 0.0], [2]))
    with pytest.raises(TypeError, match="int32 or int64 tensor"):
        logits.log_softmax(1).nll_loss(Tensor.from_vec([1.0, 0.0], [2]))


def test_cross_entropy_over_zero_classes_is_nan(device):
    logits = Variable(Tensor.zeros([3, 0]), requires_grad=True)
    loss = logits.cross_entropy(Tensor.from_numpy(np.zeros(3, np.int32), dtype="int32"))
    assert np.isnan(loss.item())
    with pytest.raises(IndexError, match="out of range for 0 classes"):
        logits.cross_entropy([0, 0, 0])
    assert np.isnan(logits.log_softmax(1).nll_loss(Tensor.from_numpy(np.zeros(3, np.int32), dtype="int32")).item())


# Reductions, products and losses on a [5, 7] input: random values, and the same with special values
# planted (NaN, +-inf, +-1e30, -0). ours(v, t) and torch's(x, t) take the input and class indices.
W = np.random.default_rng(5).standard_normal((7, 4))
TARGETS = np.array([0, 3, 6, 2, 5], np.int32)
REDUCTIONS = {
    "sum": (lambda v, t: v.sum(), lambda x, t: x.sum()),
    "mean": (lambda v, t: v.mean(), lambda x, t: x.mean()),
    "sum_dim": (lambda v, t: v.sum_dim(1), lambda x, t: x.sum(1)),
    "mean_dim0": (lambda v, t: v.mean_dim(0, keepdim=True), lambda x, t: x.mean(0, keepdim=True)),
    "var_dim": (lambda v, t: v.var_dim(1), lambda x, t: x.var(1)),
    "max_dim": (lambda v, t: v.max_dim(1), lambda x, t: x.max(1).values),
    "softmax0": (lambda v, t: v.softmax(0), lambda x, t: torch.softmax(x, 0)),
    "log_softmax1": (lambda v, t: v.log_softmax(1), lambda x, t: torch.log_softmax(x, 1)),
    "matmul": (lambda v, t: v.matmul(Variable(Tensor.from_numpy(W, dtype=v.dtype))),
               lambda x, t: x @ torch.from_numpy(W)),
    "mse": (lambda v, t: v.mse_loss(Variable(Tensor.from_numpy(np.full((5, 7), 0.5), dtype=v.dtype))),
            lambda x, t: F.mse_loss(x, torch.full((5, 7), 0.5, dtype=torch.float64))),
    "l1": (lambda v, t: v.l1_loss(Variable(Tensor.from_numpy(np.full((5, 7), 0.5), dtype=v.dtype))),
           lambda x, t: F.l1_loss(x, torch.full((5, 7), 0.5, dtype=torch.float64))),
    "bce": (lambda v, t: v.sigmoid().binary_cross_entropy(Variable(Tensor.from_numpy(np.full((5, 7), 0.25), dtype=v.dtype))),
            lambda x, t: F.binary_cross_entropy(torch.sigmoid(x), torch.full((5, 7), 0.25, dtype=torch.float64))),
    "cross_entropy": (lambda v, t: v.cross_entropy(t), lambda x, t: F.cross_entropy(x, t)),
    "nll": (lambda v, t: v.log_softmax(1).nll_loss(t), lambda x, t: F.nll_loss(torch.log_softmax(x, 1), t)),
    "var0": (lambda v, t: v.var(0, correction=0), lambda x, t: x.var(0, correction=0)),
    "std": (lambda v, t: v.std(1), lambda x, t: x.std(1)),
    "logsumexp": (lambda v, t: v.logsumexp(1), lambda x, t: torch.logsumexp(x, 1)),
    "norm": (lambda v, t: v.norm(2, 1), lambda x, t: torch.linalg.vector_norm(x, 2, 1)),
    "amax": (lambda v, t: v.amax(1), lambda x, t: x.amax(1)),
}


# Compositions whose special-value behaviour differs from torch's dedicated kernels: float32 squares of
# 1e30 overflow where torch's norm and std keep the scale, and max spreads NaN gradients differently.
RANDOM_ONLY = {"var0", "std", "logsumexp", "norm", "amax"}


def _input(kind):
    x = np.random.default_rng(11).standard_normal((5, 7))
    if kind == "special":
        x[0, 0], x[1, 2], x[2, 3], x[3, 1], x[4, 6], x[2, 0] = np.nan, np.inf, -np.inf, 1e30, -1e30, -0.0
    return x


@pytest.mark.parametrize("kind", ["random", "special"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions_products_and_losses_match_torch(name, dtype, kind, device):
    if dtype == np.float64 and not device.fp64:
        pytest.skip("no fp64")
    ours, theirs = REDUCTIONS[name]
    if kind == "special" and name in RANDOM_ONLY:
        pytest.skip("compared on random input only (see RANDOM_ONLY)")
    with np.errstate(all="ignore"):
        xs = _input(kind).astype(dtype)
    v = Variable(Tensor.from_numpy(xs, dtype=dtype), requires_grad=True)
    out = ours(v, Tensor.from_numpy(TARGETS, dtype="int32"))
    out.sum().backward()
    t = torch.from_numpy(xs.astype(np.float64)).requires_grad_(True)
    try:
        ref = theirs(t, torch.from_numpy(TARGETS.astype(np.int64)))
    except RuntimeError as e:   # torch refuses a NaN probability; we cannot raise without a read: NaN
        assert "between 0 and 1" in str(e) and np.isnan(out.item())
        return
    ref.sum().backward()
    with np.errstate(all="ignore"):
        want_out, want_grad = ref.detach().numpy().reshape(-1).astype(dtype), t.grad.numpy().reshape(-1).astype(dtype)
    # Sums of 7-35 terms: allow their rounding (a few ulps per term) on top of _compare's tolerance.
    got_out, got_grad = out.numpy().reshape(-1), v.grad().numpy().reshape(-1)
    scale = 1e3 if dtype == np.float32 else 1e5
    _compare(np.arange(got_out.size), got_out, want_out, dtype, f"{name} forward", scale)
    _compare(xs.reshape(-1), got_grad, want_grad, dtype, f"{name} gradient", scale)


PAIR_VALUES = [0.0, -0.0, 0.5, 1.5, -2.5, 3.0, -3.0, 1e30, float("nan"), float("inf"), float("-inf")]
BINARY_OPS = {
    "maximum": (lambda a, b: a.maximum(b), torch.maximum),
    "minimum": (lambda a, b: a.minimum(b), torch.minimum),
    "atan2": (lambda a, b: a.atan2(b), torch.atan2),
    "fmod": (lambda a, b: a.fmod(b), torch.fmod),
    "remainder": (lambda a, b: a.remainder(b), torch.remainder),
    "pow": (lambda a, b: a.pow(b), torch.pow),
}
for _spec in REGISTRY.values():
    if _spec.torch and _spec.arity == 2 and _spec.kind == "maths" and _spec.name not in BINARY_OPS:
        BINARY_OPS[_spec.name] = ((lambda n: lambda a, b: getattr(a, n)(b))(_spec.name), _torch_fn(_spec.torch))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(BINARY_OPS))
def test_binary_op_and_both_gradients_match_torch_on_every_pair_of_special_values(name, dtype, device):
    if dtype == np.float64 and not device.fp64:
        pytest.skip("no fp64")
    ours, theirs = BINARY_OPS[name]
    a_h, b_h = (np.array(v, dtype) for v in zip(*[(a, b) for a in PAIR_VALUES for b in PAIR_VALUES]))
    a = Variable(Tensor.from_numpy(a_h, dtype=dtype), requires_grad=True)
    b = Variable(Tensor.from_numpy(b_h, dtype=dtype), requires_grad=True)
    out = ours(a, b)
    out.sum().backward()
    ta = torch.from_numpy(a_h.astype(np.float64)).requires_grad_(True)
    tb = torch.from_numpy(b_h.astype(np.float64)).requires_grad_(True)
    ref = theirs(ta, tb)
    ref.sum().backward()
    pairs = np.array([f"({x}, {y})" for x, y in zip(a_h, b_h)])
    with np.errstate(all="ignore"):
        want = [r.astype(dtype) for r in (ref.detach().numpy(), ta.grad.numpy(), tb.grad.numpy())]
    for what, got, w in (("forward", out.numpy(), want[0]), ("gradient a", a.grad().numpy(), want[1]),
                         ("gradient b", b.grad().numpy(), want[2])):
        _compare(pairs, got, w, dtype, f"{name} {what}")
