"""64-bit indexing: tensors (and views) past 2**31 - 1 elements.

Kernels index in 32 bits (``int``) unless a tensor or a view reaches further, then in 64 bits
(``long``); see ``tensor.index_type``. The small tests force the 64-bit kernels on small tensors
(so every form is checked against numpy in milliseconds) and check that ordinary sizes keep the
32-bit kernels; one big test runs a 2**31 + 7 element bool tensor when the device can hold it.
"""

import gc
import re

import numpy as np
import pytest

import axonml_autograd.elementwise_kernels as EW
import axonml_autograd.rows as ROWS
import axonml_autograd.tensor as T
from axonml_autograd import Tensor, Variable, kernels, where
from axonml_autograd.tensor import INT32_MAX, View, check_index32, index_type
from axonml_autograd.elementwise_kernels import elementwise
from axonml_autograd.rows import reduce


# -- the decision ---------------------------------------------------------------------------------------

def test_index_type_is_int_up_to_int32_max_and_long_beyond():
    assert index_type() == "int"
    assert index_type(0, 1, 1000, INT32_MAX) == "int"
    assert index_type(INT32_MAX + 1) == "long"
    assert index_type(10, 2**40) == "long"


def test_index_type_of_views_counts_their_reach_not_their_size():
    # Seven elements at an offset past 2**31: small, but their positions need 64 bits.
    assert index_type(View(None, (7,), (1,), 2**31)) == "long"
    assert index_type(View(None, (7,), (1,), 2**31 - 8)) == "int"    # last position 2**31 - 2
    assert index_type(View(None, (7,), (1,), 2**31 - 7)) == "long"   # last position 2**31 - 1 (+1 past it)
    # A strided window: 3 rows 2**30 apart reach 2**31 + 1.
    assert index_type(View(None, (3, 2), (2**30, 1), 0)) == "long"
    assert index_type(View(None, (2, 2), (2**30, 1), 0)) == "int"
    # Negative strides (flip) reach as far as positive ones; broadcast axes (stride 0) not at all.
    assert index_type(View(None, (3,), (-2**30,), 2**31)) == "long"
    assert index_type(View(None, (2**20, 2**20), (0, 1), 0)) == "int"
    assert index_type(View(None, (0, 5), (2**40, 1), 0)) == "int"   # empty: touches nothing


def test_ordinary_sizes_render_the_32_bit_kernels():
    # itype="int" renders the kernels that existed before 64-bit indexing, character for character.
    params = dict(ctype="float", rank=2, kinds=("flat", "strided"), names=("a",), scalars=("b",),
                  int_scalars=(), long_scalars=(), expr="a + b", inner=("1", "s"), types=())
    src = kernels.render("elementwise.cl.mako", itype="int", **params)
    assert src == kernels.render("elementwise.cl.mako", **params)   # int is the default
    assert "const int n, const int chunk" in src and not re.search(r"\blong\b", src)
    assert "const long n, const long chunk" in kernels.render("elementwise.cl.mako", itype="long", **params)
    red = kernels.render("reduce.cl.mako", ctype="float", strategy="serial", op="sum", with_index=False,
                         has_in_idx=False, local_size=1, inner_block=16)
    assert "const int R, const int inner" in red and "groups" not in red


def test_plans_for_ordinary_tensors_use_int(device, monkeypatch):
    chosen = []
    real = index_type
    for planner in (EW, ROWS):   # the planners that choose an index type
        monkeypatch.setattr(planner, "index_type", lambda *e: chosen.append(real(*e)) or chosen[-1])
    EW._plans.clear()
    x = Tensor.from_numpy(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    (x.permute([2, 0, 1]) * 2.0).numpy()
    x.sum(axis=1).numpy()
    (x > 3.0).sum().numpy()
    assert chosen and set(chosen) == {"int"}
    EW._plans.clear()


def test_32_bit_families_refuse_larger_inputs_by_name():
    with pytest.raises(ValueError, match=r"matmul: 2147483648 elements are beyond what matmul supports "
                                         r"\(2147483647, 32-bit indexing\)"):
        check_index32("matmul", 5, 2**31)
    check_index32("matmul", INT32_MAX, View(None, (7,), (1,), 2**31 - 8))   # fits: no error
    with pytest.raises(ValueError, match="sort: "):
        check_index32("sort", View(None, (7,), (1,), 2**31))


# -- the 64-bit kernels, forced on small tensors --------------------------------------------------------

@pytest.fixture
def force_long(monkeypatch):
    """Every elementwise plan and reduction takes its 64-bit kernel; launches are capped at 64
    work-items (or one work-group, where a group is larger: a cap below it would launch no group at all)
    so the reductions' row loop (and the GPU elementwise chunking) runs several rounds."""
    from axonml_autograd import default_device
    cap = max(64, default_device().target.work_group)
    for planner in (EW, ROWS):
        monkeypatch.setattr(planner, "index_type", lambda *extents: "long")
        monkeypatch.setattr(planner, "_MAX_WORK_ITEMS", cap)
    EW._plans.clear()
    yield
    EW._plans.clear()


def test_forced_long_elementwise_matches_numpy(device, force_long):
    rng = np.random.default_rng(0)
    a = rng.uniform(-2, 2, (5, 7, 9)).astype(np.float32)
    b = rng.uniform(0.5, 2, (7, 1)).astype(np.float32)
    ta, tb = Tensor.from_numpy(a), Tensor.from_numpy(b)
    np.testing.assert_allclose((ta * tb + 1.5).numpy(), a * b + 1.5, rtol=1e-6)          # broadcast, scalar
    np.testing.assert_allclose(elementwise("exp(a) - a", [ta]).numpy(), np.exp(a) - a, rtol=1e-5)   # flat (vector)
    np.testing.assert_allclose(ta.permute([2, 0, 1]).contiguous().numpy(), a.transpose(2, 0, 1))    # strided copy
    np.testing.assert_array_equal((ta > 0.25).numpy(), a > 0.25)                                   # bool output
    np.testing.assert_array_equal(ta[1:4, ::2, -3:].numpy(), a[1:4, ::2, -3:])                     # slice
    np.testing.assert_array_equal(ta.narrow(2, 3, 4).numpy(), a[:, :, 3:7])
    np.testing.assert_array_equal(ta.flip(1).numpy(), a[:, ::-1])                                  # negative strides
    np.testing.assert_array_equal(where(ta > 0, ta, Tensor.scalar(-1.0)).numpy(), np.where(a > 0, a, -1))
    n = 1000
    idx = elementwise("(int)(gid % 7)", [], names=(), shape=(n,), dtype=np.int32, device=device)
    np.testing.assert_array_equal(idx.numpy(), np.arange(n) % 7)
    t = Tensor.zeros([4, 6])
    t.T.fill_(2.5)                                       # a scalar written through a strided view
    np.testing.assert_array_equal(t.numpy(), np.full((4, 6), 2.5, np.float32))
    big = Tensor.from_numpy(rng.uniform(-1, 1, 5000).astype(np.float32))
    np.testing.assert_allclose((big * 3.0).numpy(), big.numpy() * 3.0, rtol=1e-6)   # many chunks


@pytest.mark.parametrize("shape, axis", [((1000,), None), ((6, 300), 1), ((300, 7), 0), ((4, 50, 33), 1),
                                         ((3, 5000), 1), ((5000, 3), 0)])
def test_forced_long_reductions_match_numpy(device, force_long, shape, axis):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    t = Tensor.from_numpy(x)
    np.testing.assert_allclose(t.sum(axis=axis).numpy(), x.sum(axis=axis), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reduce(t, "max", axis).numpy(), x.max(axis=axis))
    if axis is not None:
        np.testing.assert_array_equal(t.argmax(axis=axis).numpy(), x.argmax(axis=axis))
    mask = x > 0.3
    m = Tensor.from_numpy(mask)
    s = m.sum(axis=axis)
    assert s.dtype == np.int64
    np.testing.assert_array_equal(s.numpy(), mask.sum(axis=axis))
    ints = Tensor.from_numpy((x * 100).astype(np.int32))
    np.testing.assert_array_equal(ints.sum(axis=axis).numpy(), (x * 100).astype(np.int32).sum(axis=axis))


def test_integer_sums_read_their_own_type(device):
    # bool and int32 tensors are summed in int64 without an int64 copy of the input (no cast kernel).
    m = np.random.default_rng(2).uniform(size=(37, 1001)) > 0.5
    t = Tensor.from_numpy(m)
    for axis in (None, 0, 1):
        got = t.sum(axis=axis)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got.numpy(), m.sum(axis=axis))
    big = Tensor.from_numpy(np.full(5, 2**31 - 1, np.int32))
    assert big.sum().item() == 5 * (2**31 - 1)


# -- a real tensor past 2**31 elements ------------------------------------------------------------------

N = 2**31 + 7                     # = 45 * 131 * 364289
SHAPE = (45, 131, 364289)


def _room_for(device, nbytes, count):
    return device.max_alloc >= nbytes and device.global_mem >= count * nbytes + 2**30


def test_bool_tensor_past_int32_max(device):
    if not _room_for(device, N, 3):
        pytest.skip(f"needs {N} byte allocations and {3 * N + 2**30} bytes of device memory "
                    f"(max allocation {device.max_alloc}, global memory {device.global_mem})")
    A, B, C = SHAPE
    # mask[i, j, k] = a[i, j] < b[k]: one comparison of two small broadcast operands, so every count
    # below follows from a and b (sorted copies and searchsorted), never from a host copy of the mask.
    a = ((np.arange(A * B, dtype=np.int64) * 7919) % 1000).astype(np.int32).reshape(A, B)
    b = ((np.arange(C, dtype=np.int64) * 104729) % 1000).astype(np.int32)
    sorted_b = np.sort(b)
    above = C - np.searchsorted(sorted_b, a, side="right")      # per (i, j): how many k have b[k] > a[i, j]
    ta = Tensor.from_numpy(a.reshape(A, B, 1))
    tb = Tensor.from_numpy(b.reshape(1, 1, C))

    def expected(flat):
        i, rest = divmod(np.asarray(flat, np.int64), B * C)
        j, k = divmod(rest, C)
        return a[i, j] < b[k]

    mask = ta < tb
    assert mask.dtype == np.bool_ and mask.shape() == list(SHAPE) and mask.numel() == N > INT32_MAX
    total = int(above.sum())
    assert mask.sum().item() == total
    np.testing.assert_array_equal(mask.sum(axis=2).numpy(), above)
    sorted_a = np.sort(a, axis=1)
    per_ik = np.stack([np.searchsorted(sorted_a[i], b, side="left") for i in range(A)])   # count_j a[i,j] < b[k]
    np.testing.assert_array_equal(mask.sum(axis=1).numpy(), per_ik)

    # Slices at the far end: past index 2**31, read back small.
    flat = mask.reshape([N])
    np.testing.assert_array_equal(flat[N - 20:].numpy(), expected(np.arange(N - 20, N)))
    np.testing.assert_array_equal(flat[2**31 - 3:2**31 + 5].numpy(), expected(np.arange(2**31 - 3, 2**31 + 5)))
    np.testing.assert_array_equal(mask[A - 1, :, -3].numpy(), expected((A - 1) * B * C + np.arange(B) * C + C - 3))
    np.testing.assert_array_equal(mask[:, B - 1, ::50000].numpy(),
                                  a[:, B - 1, None] < b[None, ::50000])
    np.testing.assert_array_equal(flat.narrow(0, N - 4, 4).numpy(), expected(np.arange(N - 4, N)))

    # A comparison on it (with a 0-d operand), then where() with a broadcast and a 0-d operand.
    flip = mask == 0
    del mask, flat
    gc.collect()
    assert flip.sum().item() == N - total
    even = Tensor.from_numpy((np.arange(C) % 2 == 0).reshape(1, 1, C))
    chosen = where(flip, even, Tensor.scalar(0, dtype="bool"))
    del flip
    gc.collect()
    assert chosen.dtype == np.bool_ and chosen.numel() == N
    # chosen[i, j, k] = (b[k] <= a[i, j]) and k even
    b_even = np.sort(b[::2])
    want = int(np.searchsorted(b_even, a, side="right").sum())
    assert chosen.sum().item() == want
    np.testing.assert_array_equal(chosen.reshape([N])[N - 9:].numpy(),
                                  ~expected(np.arange(N - 9, N)) & (np.arange(N - 9, N) % C % 2 == 0))

    # A scalar written through a permuted view of the whole tensor, then a fill of the contiguous one.
    chosen.permute([1, 0, 2]).fill_(1)
    assert chosen.sum().item() == N
    chosen.fill_(0)
    assert chosen.sum().item() == 0
    del chosen
    gc.collect()
    z = Tensor.zeros([N], "bool")
    assert z.reshape(SHAPE)[A - 1, B - 1, C - 5:].numpy().tolist() == [False] * 5


# -- the 32-bit families refuse, each at its entry ----------------------------------------------------

def _families():
    from axonml_autograd.nn import functional as F
    from axonml_autograd.optim import SGD

    def sgd():
        w = Variable(Tensor.ones([8, 8]), requires_grad=True)
        (w * 2.0).sum().backward()
        SGD([w], lr=0.1).step()

    x = lambda: Variable(Tensor.ones([8, 8]))
    return [
        ("matmul", lambda: x().matmul(x())),
        ("softmax", lambda: x().softmax(1)),
        ("cross_entropy", lambda: x().cross_entropy([0] * 8)),
        ("layer_norm", lambda: F.layer_norm(x(), [8])),
        ("batch_norm", lambda: F.batch_norm(x(), None, None, training=True)),
        ("sort", lambda: x().sort(1)),
        ("cumsum", lambda: x().cumsum(1)),
        ("index_select", lambda: x().index_select(0, [1, 2])),
        ("convolution", lambda: F.conv2d(Variable(Tensor.ones([1, 1, 8, 8])), Variable(Tensor.ones([1, 1, 3, 3])))),
        ("pooling", lambda: F.max_pool2d(Variable(Tensor.ones([1, 1, 8, 8])), 2)),
        ("uniform", lambda: Tensor.rand([8, 8])),
        ("SGD.step", sgd),
        ("argmax", lambda: Tensor.ones([1, 64]).argmax(1)),
    ]


@pytest.mark.parametrize("op, call", _families(), ids=[f[0] for f in _families()])
def test_32_bit_families_refuse_past_the_limit(device, monkeypatch, op, call):
    # The limit lowered to 50 elements: 64-element inputs stand for tensors past 2**31 - 1.
    for module in (T, ROWS):
        monkeypatch.setattr(module, "INT32_MAX", 50)
    EW._plans.clear()
    with pytest.raises(ValueError, match=rf"^{re.escape(op)}: .* beyond what {re.escape(op)} supports \(50, "):
        call()
    EW._plans.clear()
