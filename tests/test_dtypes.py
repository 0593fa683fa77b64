"""int64 and bool tensors, torch's promotion between every pair of dtypes, and integer // and %.

References are numpy computed in int64/float64 (or Python's own integers for the division rules)."""

import itertools

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, arange, capture, where
import axonml_autograd.nn.functional as F

BIG = np.array([2**53 + 1, -2**62, 2**63 - 1, -2**63, 7, -7, 0, 1, -1, 123456789012345], np.int64)
DIV = np.array([3, -5, 2, -1, 2, -2, 7, 0, -1, 10**9], np.int64)


def _wrap64(values):
    """Python integers reduced to int64 by two's complement wrapping."""
    return np.array([((int(v) + 2**63) % 2**64) - 2**63 for v in values], np.int64)


@pytest.mark.parametrize("op,ref", [
    (lambda a, b: a + b, lambda a, b: [x + y for x, y in zip(a, b)]),
    (lambda a, b: a - b, lambda a, b: [x - y for x, y in zip(a, b)]),
    (lambda a, b: a * b, lambda a, b: [x * y for x, y in zip(a, b)]),
    (lambda a, b: a * 3, lambda a, b: [x * 3 for x in a]),
    (lambda a, b: a + 2**60, lambda a, b: [x + 2**60 for x in a]),
    (lambda a, b: -a, lambda a, b: [-x for x in a]),
], ids=["add", "sub", "mul", "mul_scalar", "add_big_scalar", "neg"])
def test_int64_arithmetic_is_exact_beyond_float_precision_and_wraps(op, ref):
    a, b = Tensor.from_numpy(BIG), Tensor.from_numpy(DIV)
    got = op(a, b)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got.numpy(), _wrap64(ref([int(v) for v in BIG], [int(v) for v in DIV])))


def _py_floordiv(a, b):
    if b == 0:
        return 0                       # numpy's defined result (Python raises)
    return a // b


def _py_mod(a, b):
    return 0 if b == 0 else a % b


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_floordiv_and_mod_follow_python_signs_and_define_division_by_zero(dtype):
    lo = -2**31 if dtype == "int32" else -2**63
    a = np.array([7, -7, 7, -7, 0, 5, -5, lo, lo, 9, -9, 3], dtype)
    b = np.array([2, 2, -2, -2, 3, 0, 0, -1, 1, 4, 4, 0], dtype)
    ta, tb = Tensor.from_numpy(a), Tensor.from_numpy(b)
    q, r = ta // tb, ta % tb
    assert q.dtype == np.dtype(dtype) and r.dtype == np.dtype(dtype)
    bits = 32 if dtype == "int32" else 64
    wrap = lambda v: ((v + 2**(bits - 1)) % 2**bits) - 2**(bits - 1)
    np.testing.assert_array_equal(q.numpy(), [wrap(_py_floordiv(int(x), int(y))) for x, y in zip(a, b)])
    np.testing.assert_array_equal(r.numpy(), [_py_mod(int(x), int(y)) for x, y in zip(a, b)])
    # With a Python int on either side, and through a Variable.
    np.testing.assert_array_equal((ta // 3).numpy(), [_py_floordiv(int(x), 3) for x in a])
    np.testing.assert_array_equal((100 % Variable(tb)).numpy(), [_py_mod(100, int(y)) for y in b])


def test_float_floordiv_and_mod_match_numpy_and_differentiate_like_floor_and_remainder():
    a = np.array([7.5, -7.5, 3.0, -0.5, 2.25], np.float64)
    b = np.array([2.0, 2.0, -2.0, 0.75, -1.5], np.float64)
    x = Variable(Tensor.from_numpy(a), requires_grad=True)
    y = Variable(Tensor.from_numpy(b), requires_grad=True)
    q, r = x // y, x % y
    np.testing.assert_array_equal(q.numpy(), np.floor_divide(a, b))
    np.testing.assert_allclose(r.numpy(), np.mod(a, b), rtol=1e-15)
    (q.sum() + r.sum()).backward()
    np.testing.assert_array_equal(x.grad().numpy(), np.ones_like(a))              # floor: 0; remainder: 1
    np.testing.assert_allclose(y.grad().numpy(), -np.floor_divide(a, b), rtol=1e-15)


DTYPES = ["bool", "int32", "int64", "float32", "float64"]
TORCH_ORDER = {"bool": 0, "int32": 1, "int64": 2, "float32": 3, "float64": 4}


@pytest.mark.parametrize("left,right", list(itertools.product(DTYPES, DTYPES)))
def test_promotion_follows_torch_in_either_order(left, right, fp64):
    a = Tensor.from_numpy(np.array([1, 0, 1]).astype(left))
    b = Tensor.from_numpy(np.array([1, 1, 0]).astype(right))
    want = max(left, right, key=TORCH_ORDER.get)
    for got in (a + b, b + a, a * b, Variable(a) * Variable(b)):
        assert got.dtype == np.dtype(want), (left, right, got.dtype)
    if "bool" in (left, right):   # as torch: no subtraction with a bool, the message points to ~
        with pytest.raises(TypeError, match="sub: subtraction with a bool tensor.*~"):
            Variable(a) - Variable(b)
    else:
        assert (a - b).dtype == np.dtype(want)
    np.testing.assert_array_equal((a + b).numpy(), np.array([2, 1, 1]) if want != "bool" else [True, True, True])


def test_comparisons_are_bool_and_bool_masks_drive_where_masked_fill_and_arithmetic():
    x = np.array([[-1.5, 0.0, 2.0], [3.0, -0.25, np.nan]], np.float32)
    v = Variable(Tensor.from_numpy(x), requires_grad=True)
    mask = v > 0
    assert mask.dtype == np.bool_ and mask.numpy().tolist() == (x > 0).tolist()
    np.testing.assert_array_equal(where(mask, v, 0.0).numpy(), np.where(x > 0, x, 0.0))
    np.testing.assert_array_equal(v.masked_fill(mask, -1.0).numpy(), np.where(x > 0, -1.0, x))
    scaled = v * mask                                       # bool counts as 0/1 and keeps float32
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled.numpy(), x * (x > 0))
    scaled.sum().backward()
    np.testing.assert_array_equal(v.grad().numpy(), (x > 0).astype(np.float32))
    m = Tensor.from_numpy(x > 0)
    assert (~m).numpy().tolist() == (~(x > 0)).tolist()
    n = Tensor.from_numpy(x < 2.5)
    assert (m & n).numpy().tolist() == ((x > 0) & (x < 2.5)).tolist()
    assert (m | n).numpy().tolist() == ((x > 0) | (x < 2.5)).tolist()
    assert (m ^ n).dtype == np.bool_ and (m ^ n).numpy().tolist() == ((x > 0) ^ (x < 2.5)).tolist()
    assert (mask & (v < 2.5)).numpy().tolist() == ((x > 0) & (x < 2.5)).tolist()
    assert m.logical_and(Tensor.from_numpy(x < 2.5)).numpy().tolist() == ((x > 0) & (x < 2.5)).tolist()


def test_bitwise_ops_of_integers_are_bitwise_and_floats_are_refused():
    a, b = np.array([12, -1, 2**40 + 5], np.int64), np.array([10, 7, 3], np.int32)
    ta, tb = Tensor.from_numpy(a), Tensor.from_numpy(b)
    for got, want in [(ta & tb, a & b), (ta | tb, a | b), (tb ^ ta, a ^ b), (~ta, ~a)]:
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got.numpy(), want)
    with pytest.raises(TypeError, match="bitwise_and: defined for bool and integer tensors, got float32"):
        Tensor.zeros([2]) & Tensor.zeros([2])


def test_integer_and_bool_sums_are_int64_and_exact_like_torch():
    big = np.full(5, 2**31 - 1, np.int32)
    s = Tensor.from_numpy(big).sum()
    assert s.dtype == np.int64 and s.item() == 5 * (2**31 - 1)
    flags = np.array([[True, False, True], [True, True, False]])
    got = Tensor.from_numpy(flags).sum(axis=1)
    assert got.dtype == np.int64 and got.numpy().tolist() == [2, 2]
    assert Tensor.from_numpy(flags).max().item() is True
    b64 = Tensor.from_numpy(BIG)
    assert b64.max().item() == int(BIG.max())
    assert Variable(b64).argmax().item() == int(np.argmax(BIG))


def test_astype_to_bool_is_true_for_any_non_zero_value_nan_included():
    x = np.array([0.0, -0.0, 0.5, -3.0, np.nan, np.inf], np.float32)
    got = Tensor.from_numpy(x).astype("bool")
    assert got.dtype == np.bool_
    assert got.numpy().tolist() == x.astype(bool).tolist()
    assert Tensor.from_numpy(np.array([0, 2**40, -1], np.int64)).astype("bool").numpy().tolist() == [False, True, True]


def test_int64_index_tensors_select_and_an_index_beyond_int32_is_caught_not_wrapped():
    w = np.arange(12, dtype=np.float64).reshape(4, 3)
    weight = Variable(Tensor.from_numpy(w), requires_grad=True)
    idx = Tensor.from_numpy(np.array([3, 0, 3], np.int64))
    np.testing.assert_array_equal(weight.index_select(0, idx).numpy(), w[[3, 0, 3]])
    np.testing.assert_array_equal(F.embedding(idx, weight).numpy(), w[[3, 0, 3]])
    np.testing.assert_array_equal(weight[:, Tensor.from_numpy(np.array([2, -1], np.int64))].numpy(), w[:, [2, -1]])
    # 2**32 + 1 would be 1 if wrapped to int32: it must come out as an out-of-range index (NaN row).
    far = Tensor.from_numpy(np.array([1, 2**32 + 1], np.int64))
    got = weight.index_select(0, far).numpy()
    np.testing.assert_array_equal(got[0], w[1])
    assert np.isnan(got[1]).all()
    loss = Variable(Tensor.from_numpy(w)).cross_entropy(Tensor.from_numpy(np.array([0, 2, 1, 1], np.int64)))
    ref = -np.mean((w - np.log(np.exp(w).sum(1, keepdims=True)))[np.arange(4), [0, 2, 1, 1]])
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-12)


def test_a_bool_mask_selects_like_numpy_with_gradients_and_one_host_read(host_traffic):
    a = np.arange(24.0).reshape(2, 3, 4)
    x = Variable(Tensor.from_numpy(a), requires_grad=True)
    mask = x > 10.5
    with host_traffic() as t:
        picked = x[mask]
    assert t.reads == 1                      # the mask, for the result's length
    np.testing.assert_array_equal(picked.numpy(), a[a > 10.5])
    rows = np.array([[True, False, True], [False, False, True]])
    np.testing.assert_array_equal(x[Tensor.from_numpy(rows)].numpy(), a[rows])
    np.testing.assert_array_equal(x[rows.tolist()].numpy(), a[rows])
    np.testing.assert_array_equal(x.masked_select(x < 3).numpy(), a[a < 3])
    assert x[x > 100].shape() == [0]
    (x[x > 10.5] * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad().numpy(), np.where(a > 10.5, 2.0, 0.0))
    np.testing.assert_array_equal(x.nonzero().numpy(), np.argwhere(a))
    with pytest.raises(IndexError, match=r"bool mask of shape \[3\] does not match the leading dims of shape \[2, 3, 4\]"):
        x[Tensor.from_numpy(np.array([True, False, True]))]


def test_arange_of_ints_is_int64_and_reaches_beyond_int32():
    got = arange(2**40, 2**40 + 5, 2)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got.numpy(), np.arange(2**40, 2**40 + 5, 2))


def test_int64_and_bool_tensors_survive_save_and_load(tmp_path):
    from axonml_autograd import load, save
    tensors = {"big": Tensor.from_numpy(BIG), "mask": Tensor.from_numpy(np.array([True, False]))}
    save(str(tmp_path / "t.npz"), tensors)
    back = load(str(tmp_path / "t.npz"))
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype
        np.testing.assert_array_equal(back[name], t.numpy())


def test_integer_and_mask_ops_replay_under_capture():
    @capture
    def step(a, b):
        return (a * b + a // b), (a > b)

    a = Tensor.from_numpy(np.array([2**40 + 3, -9, 5], np.int64))
    for k in range(3):
        b = Tensor.from_numpy(np.array([2, 4, -3 - k], np.int64))
        total, mask = step(a, b)
        av, bv = [int(v) for v in a.numpy()], [int(v) for v in b.numpy()]
        assert total.numpy().tolist() == [x * y + x // y for x, y in zip(av, bv)]
        assert mask.numpy().tolist() == [x > y for x, y in zip(av, bv)]
    assert step.replays >= 1


@pytest.mark.parametrize("shape", [(1,), (3,), (17,), (65,), (129, 3)])
def test_int64_broadcasting_on_odd_shapes(shape):
    rng = np.random.default_rng(len(shape))
    a = rng.integers(-2**62, 2**62, size=shape, dtype=np.int64)
    b = rng.integers(-1000, 1000, size=shape[-1:], dtype=np.int64)
    got = Tensor.from_numpy(a) - Tensor.from_numpy(b)
    np.testing.assert_array_equal(got.numpy(), a - b)
    np.testing.assert_array_equal((Tensor.from_numpy(a) % Tensor.from_numpy(b)).numpy(),
                                  np.where(b == 0, 0, np.mod(a, np.where(b == 0, 1, b))))


_TORCH_OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
              "div": lambda a, b: a / b, "floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b,
              "lt": lambda a, b: a < b, "eq": lambda a, b: a == b, "and": lambda a, b: a & b,
              "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b}


@pytest.mark.parametrize("left,right", list(itertools.product(DTYPES, DTYPES)))
def test_every_dtype_pair_agrees_with_torch_on_every_binary_operator(left, right, fp64):
    """Values and result dtypes against torch, broadcasting [3, 4] with [4], every operator and pair."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(TORCH_ORDER[left] * 5 + TORCH_ORDER[right])

    def make(shape, dt):
        if dt == "bool":
            return rng.random(shape) < 0.5
        if dt.startswith("int"):
            return rng.integers(-50, 50, shape).astype(dt)
        return (rng.standard_normal(shape) * 10).astype(dt)

    a, b = make((3, 4), left), make((4,), right)
    for name, op in _TORCH_OPS.items():
        bb = b
        if name in ("div", "floordiv", "mod"):
            bb = np.ones_like(b) if right == "bool" else np.where(b == 0, 3, b).astype(b.dtype)
        try:
            want = op(torch.from_numpy(a), torch.from_numpy(np.array(bb)))
        except RuntimeError:   # torch refuses: bitwise ops of floats, subtraction or // % of bools
            with pytest.raises(TypeError):
                op(Tensor.from_numpy(a), Tensor.from_numpy(bb))
            continue
        got = op(Tensor.from_numpy(a), Tensor.from_numpy(bb))
        w = want.numpy()
        assert got.dtype == w.dtype, (name, left, right, got.dtype, w.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(got.numpy(), w, rtol=1e-6 if w.dtype == np.float32 else 1e-13, atol=1e-6,
                                       err_msg=f"{name} {left} {right}")
        else:
            np.testing.assert_array_equal(got.numpy(), w, err_msg=f"{name} {left} {right}")


def test_torch_conveniences_for_integers_bools_and_dtype_names():
    import axonml_autograd as ag
    big = np.array([1, 2**40, -5], np.int64)
    v = Variable(Tensor.from_numpy(big))
    np.testing.assert_array_equal((v + 2**60).numpy(), big + 2**60)      # exact through the Variable path too
    c = v.clamp(0, 100)
    assert c.dtype == np.int64 and c.numpy().tolist() == [1, 100, 0]      # integers stay integers, as torch
    assert (Tensor.from_vec([1.5, -2.0], [2]) * True).to_vec() == [1.5, -2.0]   # a Python bool is 0 or 1
    assert (Tensor.from_vec([1.5, -2.0], [2]) + False).to_vec() == [1.5, -2.0]
    assert ag.full([2], 7).dtype == np.int64 and ag.full([2], True).dtype == np.bool_
    assert ag.full([2], 7.5).dtype == np.float32
    assert ag.float32 == np.float32 and ag.int64 == np.int64 and ag.bool == np.bool_ and ag.long == np.int64
    assert Tensor.zeros([2], dtype=ag.int64).dtype == np.int64
    assert "bool" not in ag.__all__   # `import *` keeps the builtin


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_powers_stay_integer_exact_and_wrap_like_torch(dtype):
    bits = 32 if dtype == "int32" else 64
    wrap = lambda v: ((v + 2 ** (bits - 1)) % 2 ** bits) - 2 ** (bits - 1)
    base = np.array([2, -3, 7, 0, 1, -1, 10], dtype)
    exps = np.array([10, 3, 25, 0, 9, 7, 19], dtype)
    t, e = Tensor.from_numpy(base), Tensor.from_numpy(exps)
    for got, want in [(t ** e, [wrap(int(b) ** int(x)) for b, x in zip(base, exps)]),
                      (t ** 3, [wrap(int(b) ** 3) for b in base]),
                      (2 ** e, [wrap(2 ** int(x)) for x in exps]),
                      (Variable(t) ** 2, [int(b) ** 2 for b in base]),
                      (Variable(t).pow(Variable(e)), [wrap(int(b) ** int(x)) for b, x in zip(base, exps)])]:
        assert got.dtype == np.dtype(dtype)
        assert got.numpy().tolist() == want
    with pytest.raises(ValueError, match="integers to negative integer powers are not allowed"):
        t ** -1
    assert (t ** 0.5).dtype == np.float32                           # a float exponent promotes
    f = Variable(Tensor.from_vec([2.0, 3.0], [2]), requires_grad=True)
    (f ** 3).sum().backward()                                        # floats keep their gradient
    assert f.grad().to_vec() == [12.0, 27.0]
