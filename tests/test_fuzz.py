"""Bad inputs at the API edge: named, clean Python exceptions; and random garbage never crashes or hangs.

The fuzz loop runs in a child process (``python tests/test_fuzz.py SEED COUNT``) so that an interpreter
crash or a hang shows up as a failed test with the child's output, not as a dead test run.
"""

import math
import os
import random
import subprocess
import sys
import traceback

import numpy as np
import pytest

from axonml_autograd import DeviceError, DeviceMemoryError, Tensor, Variable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = (TypeError, ValueError, IndexError, RuntimeError, DeviceError, DeviceMemoryError)


def logits():
    return Variable(Tensor.from_vec([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [2, 3]), requires_grad=True)


# -- named errors for bad arguments ------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, match", [
    (lambda: Tensor.from_vec("abc", [3]), TypeError, r"from_vec: values must be a flat list"),
    (lambda: Tensor.from_vec([[1.0, 2.0], [3.0]], [3]), TypeError, r"from_vec: values must be a flat list"),
    (lambda: Tensor.from_vec([[1.0, 2.0], [3.0, 4.0]], [4]), ValueError, r"from_vec: values must be a flat list"),
    (lambda: Tensor.from_vec([1.0, "x"], [2]), TypeError, r"from_vec: values"),
    (lambda: Tensor.from_vec([1.0, 2.0], [3]), ValueError, r"2 values do not fill shape \[3\]"),
    (lambda: Tensor.from_vec([1.0, 2.0], [-2]), ValueError, r"shape: dimensions must be non-negative"),
    (lambda: Tensor.from_vec([1.0, 2.0], [2.0]), TypeError, r"shape: expected a list or tuple of non-negative ints"),
    (lambda: Tensor.from_vec([1.0, 2.0], "2"), TypeError, r"shape: expected a list or tuple"),
    (lambda: Tensor.zeros([2], dtype="int16"), TypeError, r"dtype: int16 is not supported"),
    (lambda: Tensor.zeros([2], dtype="bogus"), TypeError, r"dtype: expected one of float32, float64, int32, int64, bool"),
    # Past 2**31 elements a tensor is fine (64-bit indexing); past the device's largest allocation it is not.
    (lambda: Tensor.zeros([2**20, 2**20]), DeviceMemoryError, r"larger than the device's maximum single allocation"),
    (lambda: Tensor.from_numpy(np.array(["a", "b"])), TypeError, r"from_numpy: expected numbers"),
    (lambda: Variable("abc"), TypeError, r"Variable: expected a Tensor, got str"),
    (lambda: Variable(Tensor.zeros([2]), requires_grad="yes"), TypeError, r"requires_grad must be a bool"),
    (lambda: logits().sum_dim(2), IndexError, r"sum_dim dim: 2 is out of range for a tensor of 2 dimensions"),
    (lambda: logits().mean_dim(-3), IndexError, r"mean_dim dim: -3 is out of range"),
    (lambda: logits().softmax(5), IndexError, r"softmax dim: 5 is out of range"),
    (lambda: logits().sum_dim(1.5), TypeError, r"sum_dim dim: expected an int, got 1.5"),
    (lambda: logits().transpose(0, 2), IndexError, r"transpose dim1: 2 is out of range"),
    (lambda: logits().reshape([4, -1]), ValueError, r"reshape: cannot reshape \[2, 3\] \(6 elements\)"),
    (lambda: logits().reshape([-3, 2]), ValueError, r"reshape: invalid shape"),
    (lambda: logits().narrow(1, 0.5, 1), TypeError, r"narrow: start must be an int"),
    (lambda: logits().narrow(1, 2, 5), IndexError, r"narrow: start 2 \+ length 5 exceeds size 3"),
    (lambda: logits().matmul(logits()), ValueError, r"matmul: inner dimensions differ: \(2, 3\) @ \(2, 3\)"),
    (lambda: logits() + "a", TypeError, r"add: expected a Variable, Tensor or number, got str"),
    (lambda: logits().pow("2"), TypeError, r"pow: expected a number"),
    (lambda: logits().cross_entropy([0, 3]), IndexError, r"targets: class index 3 is out of range for 3 classes"),
    (lambda: logits().cross_entropy([0, -1]), IndexError, r"targets: class index -1 is out of range"),
    (lambda: logits().cross_entropy([]), ValueError, r"targets: expected 2 class indices"),
    (lambda: logits().cross_entropy([0.5, 1.0]), TypeError, r"targets: class indices must be integers"),
    (lambda: logits().cross_entropy("ab"), TypeError, r"targets: expected a list of class indices"),
    (lambda: logits().cross_entropy(7), TypeError, r"targets: expected a list of class indices"),
    (lambda: Variable(Tensor.zeros([0, 3])).cross_entropy([]), ValueError, r"cross_entropy: empty batch"),
    (lambda: logits().mse_loss(Variable(Tensor.zeros([3]))), ValueError, r"mse_loss: input shape \[2, 3\] and target shape \[3\]"),
    (lambda: Tensor.zeros([2]).apply("nope"), ValueError, r"apply: .*'nope'"),
    (lambda: Tensor.full([2], "a"), TypeError, r"value must be a number, got 'a'"),
    (lambda: Tensor.full([2], [1, 2], dtype="int32"), TypeError, r"value must be a number, got \[1, 2\]"),
    (lambda: Tensor.full([2], 2**40, dtype="int32"), ValueError, r"value 1099511627776 is not an int32"),
    (lambda: logits().backward(), RuntimeError, r"backward: the output has shape \[2, 3\]"),
    # Numbers beyond float range, fractional positions, 0-d narrows, non-number bounds, foreign dtypes.
    (lambda: logits().add_scalar(10**400), ValueError, r"add_scalar: 1000000000\d*\.\.\. \(401 digits\) is beyond"),
    (lambda: logits() * 10**400, ValueError, r"mul: .* beyond the range of a float"),
    (lambda: Tensor.zeros([2]) + 10**400, ValueError, r"add: .* beyond the range of a float"),
    (lambda: logits().clamp(0, 10**400), ValueError, r"clamp max: .* beyond the range of a float"),
    (lambda: logits().leaky_relu(-10**400), ValueError, r"leaky_relu: .* beyond the range of a float"),
    (lambda: Tensor.full([2], 10**400), ValueError, r"full: .* beyond the range of a float"),
    (lambda: Tensor.full([2], 1.5, dtype="int32"), ValueError, r"full: value 1.5 is not an int32"),
    (lambda: Tensor.from_vec([1.5], [1], dtype="int32"), ValueError, r"value .*1.5.* is not an int32"),
    (lambda: Tensor.from_vec([2.0**40], [1], dtype="int32"), ValueError, r"is not an int32"),
    (lambda: Tensor.zeros([3]).narrow(0, 0.5, 1), TypeError, r"narrow: start must be an int, got 0.5"),
    (lambda: Tensor.zeros([3]).narrow(0, 0, 1.0), TypeError, r"narrow: length must be an int, got 1.0"),
    (lambda: Tensor.scalar(1.0).narrow(0, 0, 1), IndexError, r"narrow: a 0-d tensor has no dimension"),
    (lambda: Variable(Tensor.scalar(1.0)).narrow(0, 0, 1), IndexError, r"narrow: a 0-d tensor has no dimension"),
    (lambda: logits().slice([(0.5, 2)]), TypeError, r"slice: range 0 start must be an int, got 0.5"),
    (lambda: logits().slice([(0, 2, 3)]), TypeError, r"slice: range 0 must be a \(start, end\) pair"),
    (lambda: logits().slice(5), TypeError, r"slice: expected a list of \(start, end\) pairs"),
    (lambda: logits().clamp("a", 1), TypeError, r"clamp min: expected a number, got 'a'"),
    (lambda: logits().clamp(0, [1]), TypeError, r"clamp max: expected a number"),
    (lambda: Variable(Tensor.zeros([2]), True).set_grad(Tensor.zeros([2], dtype="int32")), TypeError,
     r"set_grad: the gradient is int32, the variable is float32"),
    (lambda: __import__("axonml_autograd.optim", fromlist=["SGD"]).SGD([Variable(Tensor.zeros([2]), True)], lr=10**400),
     ValueError, r"SGD lr: expected a finite number, got an int of 401 digits"),
    (lambda: Variable(Tensor.zeros([1])).backward(), RuntimeError, r"backward: the output does not require grad"),
])
def test_bad_argument_raises_an_error_naming_it(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_nan_and_inf_are_accepted_by_from_vec():
    t = Tensor.from_vec([float("nan"), float("inf"), -float("inf")], [3])
    v = t.to_vec()
    assert math.isnan(v[0]) and v[1:] == [float("inf"), -float("inf")]


def test_cross_entropy_accepts_class_indices_as_a_numpy_array():
    # A numpy array has a .data attribute (a memoryview); it must not be mistaken for a Variable.
    by_list = logits().cross_entropy([0, 2]).item()
    assert logits().cross_entropy(np.array([0, 2])).item() == by_list


# -- random garbage ----------------------------------------------------------------------------------

def garbage_pool():
    small = Tensor.from_vec([1.0, -2.0, 3.0, 0.5, 0.0, -1.0], [2, 3])
    return [
        # Sizes past int32 (2**32: beyond 32-bit indexing; as a float32 shape 16 GB, past most devices'
        # largest allocation) and past any device ([2**40], [2**20, 2**20]).
        None, True, False, 0, 1, 2, 3, -1, -7, 2**32, 2**40, 2**63, -2**40, 0.5, -0.0, float("nan"),
        float("inf"), -float("inf"), 1e308, "", "abc", "float32", "float64", "int32", b"xy", [], [1], [2, 3],
        [1, 2, 3], [[1, 2], [3]], [[1, 2], [3, 4]], [1, "a"], [None], (2, 3), (3, 2), (2, -3), (0,), (0, 3),
        (-1,), (1, 1, 6), [2**20, 2**20], [2**40], [2**30], [1.5, 2], {"a": 1}, {1, 2}, object(),
        np.float32(1.5), np.int64(2), np.int32(-1), np.array([1, 2]), np.array([[1.0, 2.0, 3.0]]),
        np.array(["a"]), np.zeros((0, 3)), np.array([np.nan]), complex(1, 2), slice(0, 1), range(3),
        lambda: 0, small, small.reshape([6]), Tensor.zeros([0, 3]), Tensor.scalar(2.0), Tensor.zeros([3, 1]),
        Tensor.from_numpy(np.array([0, 2], np.int32), dtype="int32"), Variable(small), Variable(small, True),
        Variable(Tensor.from_vec([0.2, 0.8], [2]), True), Variable(Tensor.zeros([2, 1]), True),
        # Huge and tiny numbers, special values inside tensors, 0-d and zero-size Variables, integers.
        10**400, -10**400, 5e-324, 1e-45, np.float64(1e300), np.nan,
        Tensor.from_vec([float("nan"), float("inf"), -float("inf"), 1e38, -1e-45, 0.0], [2, 3]),
        Tensor.from_numpy(np.array([[2**31 - 1, -2**31, 7]], np.int32)), Variable(Tensor.scalar(-3.0), True),
        Variable(Tensor.zeros([0, 3]), True), Variable(Tensor.from_numpy(np.array([5, -5, 0], np.int32))),
        Variable(Tensor.from_vec([float("nan"), 1e30, -1e30], [3]), True),
    ]


TENSOR_CONSTRUCTORS = [
    ("Tensor", lambda *a: Tensor(*a)), ("from_vec", Tensor.from_vec), ("from_numpy", Tensor.from_numpy),
    ("full", Tensor.full), ("zeros", Tensor.zeros), ("ones", Tensor.ones), ("scalar", Tensor.scalar),
    ("rand", Tensor.rand), ("randn", Tensor.randn), ("empty", Tensor.empty), ("Variable", Variable),
]

VARIABLE_METHODS = [
    "add", "sub", "mul", "div", "add_var", "sub_var", "mul_var", "div_var", "add_scalar", "div_scalar",
    "__add__", "__rsub__", "__rtruediv__", "__matmul__", "__rmatmul__", "matmul", "pow", "clamp",
    "leaky_relu", "softmax", "log_softmax", "sum_dim", "mean_dim", "var_dim", "max_dim", "reshape",
    "view", "transpose", "narrow", "slice", "expand", "unsqueeze", "squeeze", "mse_loss", "l1_loss",
    "smooth_l1_loss", "binary_cross_entropy", "cross_entropy", "nll_loss", "backward", "set_data",
    "set_grad", "requires_grad_", "relu", "exp", "log", "sum", "mean", "item",
    "sigmoid", "tanh", "gelu", "silu", "sqrt", "abs", "neg_var", "t", "flatten", "__neg__", "__mul__",
    "__truediv__", "__radd__", "__rmul__", "__pow__", "sub_scalar", "mul_scalar", "detach", "zero_grad",
]

TENSOR_METHODS = [
    "reshape", "transpose", "permute", "narrow", "expand", "sum", "mean", "max", "argmax", "astype",
    "matmul", "__add__", "__mul__", "__truediv__", "__pow__", "__rsub__", "item", "size", "apply", "to",
    "__sub__", "__neg__", "__radd__", "__rmul__", "__rtruediv__", "clone", "numpy", "to_vec",
]


def _force(result):
    """Make whatever came out finish now, so a kernel that reads or writes out of bounds runs now: read it
    back, or for a result past a million elements (the pool's [2**30] is 4 GB where a device allows
    it) wait for the device instead: reading those took 40 of this test's 41 s."""
    if isinstance(result, (Tensor, Variable)):
        t = result.data() if isinstance(result, Variable) else result
        if t.numel() <= 1 << 20:
            result.numpy()
        else:
            t.device.synchronize()
    elif isinstance(result, tuple):
        for r in result:
            _force(r)


def fuzz(seed, count):
    """Run ``count`` random calls; return the distinct unexpected failures as text."""
    from axonml_autograd.optim import SGD, Adam

    rng = random.Random(seed)
    pool = garbage_pool()
    pick = lambda: rng.choice(pool)
    failures = {}
    for case in range(count):
        kind = rng.random()
        if kind < 0.3:
            name, fn = rng.choice(TENSOR_CONSTRUCTORS)
            args = [pick() for _ in range(rng.randint(0, 3))]
            label = name
        elif kind < 0.75:
            receiver = rng.choice([x for x in pool if isinstance(x, Variable)])
            name = rng.choice(VARIABLE_METHODS)
            fn = getattr(receiver, name)
            args = [pick() for _ in range(rng.randint(0, 3))]
            label = f"Variable.{name}"
        elif kind < 0.95:
            receiver = rng.choice([x for x in pool if isinstance(x, Tensor)])
            name = rng.choice(TENSOR_METHODS)
            fn = getattr(receiver, name)
            args = [pick() for _ in range(rng.randint(0, 3))]
            label = f"Tensor.{name}"
        else:
            cls = rng.choice([SGD, Adam])
            fn, args, label = cls, [pick(), pick()], cls.__name__
        try:
            _force(fn(*args))
        except ALLOWED:
            pass
        except Exception as e:   # noqa: BLE001 - what the test is looking for
            key = (label, type(e).__name__)
            if key not in failures:
                failures[key] = (f"case {case}: {label}({', '.join(_short(a) for a in args)}) raised "
                                 f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}")
    return list(failures.values())


def _short(x):
    text = repr(x)
    return text if len(text) < 60 else text[:57] + "..."


@pytest.mark.parametrize("seed", [0, 1])
def test_random_garbage_gives_only_clean_python_exceptions(seed):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), str(seed), "1500"], env=env,
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the fuzz loop hung (no result after {e.timeout} s); last output:\n{e.stdout}")
    assert done.returncode == 0, (f"the fuzz process died (exit {done.returncode}):\n"
                                  f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    assert done.stdout.strip().endswith("clean"), done.stdout[-8000:]


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    problems = fuzz(int(sys.argv[1]), int(sys.argv[2]))
    for p in problems:
        print(p)
    print(f"{len(problems)} kinds of unexpected exception" if problems else "clean")


# -- random calls whose results are checked ------------------------------------------------------------

def _random_operand(rng, shape, dtype):
    if dtype == np.int32:
        pool = np.array([0, 1, -1, 7, -7, 2**31 - 1, -2**31, 2**30 + 1, 123456789], np.int64)
        return rng.choice(pool, size=shape).astype(np.int32)
    x = np.asarray(rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e3]), np.float64)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e30, -1e-30, 3e38])
    mask = rng.random(shape) < 0.2
    x[mask] = rng.choice(special, size=int(mask.sum()))
    return x.astype(dtype)


def _expected(op, a, b, reverse):
    """numpy's answer under our promotion rules: int32 +-* stay int32 (wrapping), else the widest float."""
    ints = a.dtype == np.int32 and (b.dtype == np.int32 if isinstance(b, np.ndarray) else
                                    float(b).is_integer() and -2**31 <= b < 2**31)
    if ints and op in "+-*":
        x, y = a.astype(np.int64), np.asarray(b, np.int64)
        x, y = (y, x) if reverse else (x, y)
        r = {"+": x + y, "-": x - y, "*": x * y}[op]
        return ((r + 2**31) % 2**32 - 2**31).astype(np.int32)
    dt = np.float64 if np.float64 in (a.dtype, getattr(b, "dtype", None)) else np.float32
    x, y = a.astype(dt).astype(np.float64), np.asarray(b).astype(dt).astype(np.float64)
    x, y = (y, x) if reverse else (x, y)
    with np.errstate(all="ignore"):
        return {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op].astype(dt)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_arithmetic_calls_agree_with_numpy_under_torchs_promotion(seed, device):
    rng = np.random.default_rng(seed)
    dtypes = [np.float32, np.int32] + ([np.float64] if device.fp64 else [])
    shapes = [(), (0,), (1,), (3,), (2, 3), (17,), (3, 1), (1, 4), (2, 0, 3)]
    for case in range(120):
        shape = shapes[rng.integers(len(shapes))]
        a = _random_operand(rng, shape, dtypes[rng.integers(len(dtypes))])
        op = "+-*/"[rng.integers(4)]
        reverse = False
        if rng.random() < 0.4:   # a Python number, on either side
            b = float(rng.choice([0.0, 1.0, -2.5, 3.0, 1e300, 5e-324, np.nan, 7.0, -4.0]))
            reverse = bool(rng.random() < 0.5)
            ta = Tensor.from_numpy(a)
            got = {"+": lambda: b + ta if reverse else ta + b, "-": lambda: b - ta if reverse else ta - b,
                   "*": lambda: b * ta if reverse else ta * b, "/": lambda: b / ta if reverse else ta / b}[op]()
        else:
            bshape = [s if rng.random() < 0.7 else 1 for s in shape]
            b = _random_operand(rng, tuple(bshape), dtypes[rng.integers(len(dtypes))])
            ta, tb = Tensor.from_numpy(a), Tensor.from_numpy(b)
            got = {"+": ta + tb, "-": ta - tb, "*": ta * tb, "/": ta / tb}[op]
        want = _expected(op, a, b, reverse)
        what = f"case {case}: {a.dtype}{list(shape)} {op} {getattr(b, 'dtype', type(b).__name__)} (reverse={reverse})"
        assert got.dtype == want.dtype, what
        out = got.numpy()
        assert out.shape == want.shape, what
        if want.dtype == np.int32:
            np.testing.assert_array_equal(out, want, err_msg=what)
        else:
            np.testing.assert_array_equal(np.isnan(out), np.isnan(want), err_msg=what)
            rtol = 1e-14 if want.dtype == np.float64 else 4e-7
            ok = ~np.isnan(want)
            np.testing.assert_allclose(out[ok], want[ok], rtol=rtol, atol=0, err_msg=what)
