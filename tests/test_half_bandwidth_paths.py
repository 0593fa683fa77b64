"""The 16-bit bandwidth paths (issue 21): float16/bfloat16 sums and means read the 16-bit tensor in the
reduce kernel itself (float32 accumulators, the float32 sum's blocked + Kahan order, the result rounded
once to the input's type, as torch), and 16-bit elementwise kernels on CPUs convert float16 8 lanes at a
time (F16C where the CPU has it), with the same bits as before.

Sums and means are compared with torch's float32 sum/mean of the same 16-bit values rounded once, torch's
own float16/bfloat16 sum/mean (below a thousand elements) and numpy's float64 sum rounded once (at most
1 ulp apart: torch's float32 summation order differs from ours);
elementwise results with numpy's float32 arithmetic on the 16-bit values rounded once (exactly).
"""

import os
import sys

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import Tensor, Variable, capture, kernels, launch
from axonml_autograd.rows import reduce

sys.path.insert(0, os.path.dirname(__file__))
from test_half import DTYPES, tdt, ulps  # noqa: E402

SHAPES = [(1,), (3,), (17,), (65,), (129,), (1000003,)]


def values(shape, seed, scale=4.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def as16(h, dt):
    """A 16-bit Tensor of ours and the float32 values it holds (exactly)."""
    t = Tensor.from_numpy(h).astype(dt)
    return t, t.astype("float32").numpy()


def check(ours, want, dt, ulp=1):
    assert str(ours.dtype) == dt
    got = ours.astype("float32").numpy()
    d = ulps(got, np.asarray(want, np.float32).reshape(got.shape), dt)
    assert d.max() <= ulp, f"{d.max()} ulps apart: {got.ravel()[:4]} vs {np.ravel(want)[:4]}"


@pytest.fixture
def launched(monkeypatch):
    """The names of the kernels launched."""
    names = []
    real = launch.kernel

    def counted(device, knl, *args, **kwargs):
        names.append(knl.function_name)
        return real(device, knl, *args, **kwargs)

    monkeypatch.setattr(launch, "kernel", counted)
    return names


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: str(s[0]))
def test_sum_and_mean_of_everything_match_torch_and_float64(dt, shape):
    torch = pytest.importorskip("torch")
    x, h = as16(values(shape, 1), dt)
    t = torch.from_numpy(h).to(tdt(torch, dt))
    for op in ("sum", "mean"):
        ours = getattr(x, op)()
        assert ours.shape == ()
        # torch's float32 reduction of the 16-bit values rounded once; its own 16-bit op where that is
        # accurate (of a million elements it is a few, for bfloat16 several, 16-bit steps off the exact
        # sum: ours is the exact one rounded, checked against float64 below)
        check(ours, getattr(t.float(), op)().to(t.dtype).float().numpy(), dt)
        if h.size < 1000:
            check(ours, getattr(t, op)().float().numpy(), dt)
        ref = h.astype(np.float64).sum() / (h.size if op == "mean" else 1)
        check(ours, np.float32(ref), dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(17, 65), (3, 129, 5), (1000003, 1)], ids=str)
def test_sum_and_mean_along_each_dim_with_and_without_keepdim(dt, shape):
    torch = pytest.importorskip("torch")
    x, h = as16(values(shape, 2), dt)
    t = torch.from_numpy(h).to(tdt(torch, dt))
    for d in range(len(shape)):
        for keep in (False, True):
            for op in ("sum", "mean"):
                ours = reduce(x, op, d, keepdim=keep)
                want = getattr(t, op)(d, keepdim=keep)
                assert list(ours.shape) == list(want.shape)
                check(ours, getattr(t.float(), op)(d, keepdim=keep).to(t.dtype).float().numpy(), dt)
                if shape[d] < 1000:
                    check(ours, want.float().numpy(), dt)
                ref = h.astype(np.float64).sum(d, keepdims=keep) / (shape[d] if op == "mean" else 1)
                check(ours, ref.astype(np.float32), dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_non_contiguous_views_are_summed_as_their_values(dt):
    torch = pytest.importorskip("torch")
    x, h = as16(values((33, 70), 3), dt)
    t = torch.from_numpy(h).to(tdt(torch, dt))
    views = [(x.transpose(0, 1), t.transpose(0, 1)), (x.narrow(1, 5, 17), t.narrow(1, 5, 17)),
             (x.transpose(0, 1).narrow(0, 3, 65), t.transpose(0, 1).narrow(0, 3, 65))]
    for v, tv in views:
        check(v.sum(), tv.sum().float().numpy(), dt)
        check(v.mean(), tv.mean().float().numpy(), dt)
        for d in (0, 1):
            check(reduce(v, "sum", d), tv.sum(d).float().numpy(), dt)
            check(reduce(v, "mean", d, keepdim=True), tv.mean(d, keepdim=True).float().numpy(), dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_inf_and_nan_propagate(dt):
    torch = pytest.importorskip("torch")
    h = values((5, 130), 4)
    h[1, 7] = np.inf
    h[2, 9], h[2, 100] = np.inf, -np.inf
    h[3, 64] = np.nan
    x, h = as16(h, dt)
    t = torch.from_numpy(h).to(tdt(torch, dt))
    for ours, want in ((reduce(x, "sum", 1), t.sum(1)), (reduce(x, "mean", 1), t.mean(1)),
                       (x.narrow(0, 1, 1).sum(), t[1].sum()), (x.sum(), t.sum())):
        check(ours, want.float().numpy(), dt)
    got = reduce(x, "sum", 1).astype("float32").numpy()
    assert got[1] == np.inf and np.isnan(got[2]) and np.isnan(got[3]) and np.isfinite(got[[0, 4]]).all()


def test_float16_sums_that_overflow_are_inf_as_torch_and_the_mean_is_not():
    torch = pytest.importorskip("torch")
    h = np.full(70000, 1.0, np.float32)
    x = Tensor.from_numpy(h).astype("float16")
    t = torch.from_numpy(h).half()
    assert float(x.sum().astype("float32").item()) == float(t.sum()) == np.inf
    assert float((-x).sum().astype("float32").item()) == -np.inf
    # the mean is accumulated in float32 and divided before the one rounding: 1, not inf
    assert float(x.mean().astype("float32").item()) == float(t.mean()) == 1.0
    big = Tensor.from_numpy(np.full((4, 3), 3e38, np.float32)).astype("bfloat16")
    tb = torch.full((4, 3), 3e38).bfloat16()
    check(big.sum(), tb.sum().float().numpy(), "bfloat16")
    check(reduce(big, "sum", 0), tb.sum(0).float().numpy(), "bfloat16")


@pytest.mark.parametrize("dt", DTYPES)
def test_the_16_bit_tensor_is_read_directly_without_a_float32_copy(dt, launched):
    x, _ = as16(values((100000,), 5), dt)
    ag.get_device(None).synchronize()
    del launched[:]
    x.sum()
    reduce(x.reshape([100, 1000]), "mean", 1)
    assert set(launched) == {"reduce"}, launched   # no cast kernel ("ew") before or after


@pytest.mark.parametrize("dt", DTYPES)
def test_gradients_of_16_bit_sum_and_mean(dt):
    torch = pytest.importorskip("torch")
    h = values((17, 65), 6)
    x = Variable(Tensor.from_numpy(h).astype(dt), requires_grad=True)
    tx = torch.from_numpy(x.data().astype("float32").numpy()).to(tdt(torch, dt)).requires_grad_()
    g = Tensor.from_numpy(values((65,), 7)).astype(dt)
    tg = torch.from_numpy(g.astype("float32").numpy()).to(tdt(torch, dt))
    (x.sum() * 3.0 + (x.mean(0) * Variable(g)).sum()).backward()
    (tx.sum() * 3.0 + (tx.mean(0) * tg).sum()).backward()
    assert x.grad().dtype == x.data().dtype
    check(x.grad(), tx.grad.float().numpy(), dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_a_captured_16_bit_sum_equals_eager_bit_for_bit(dt):
    x, _ = as16(values((3, 1000), 8), dt)
    fn = capture(lambda a: (a.sum(), reduce(a, "mean", 1), a + a))
    eager = [t.astype("float32").numpy() for t in fn.fn(x)]
    for _ in range(3):
        replayed = [t.astype("float32").numpy() for t in fn(x)]
        for a, b in zip(eager, replayed):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert fn.replays >= 1


def _float16_bits(h):
    return np.asarray(h, np.float16).view(np.uint16)


@pytest.mark.parametrize("n", [65536, 65536 + 3])
def test_float16_elementwise_results_are_numpys_float32_rounded_once_for_every_bit_pattern(n):
    every = np.resize(np.arange(65536, dtype=np.uint16), n).view(np.float16)
    other = np.roll(every, 12345)
    a, b = Tensor.from_numpy(every, dtype="float16"), Tensor.from_numpy(other, dtype="float16")
    with np.errstate(all="ignore"):
        fa, fb = every.astype(np.float32), other.astype(np.float32)
        for ours, want in ((a + b, fa + fb), (a * b, fa * fb), (a * 3e-5, fa * np.float32(3e-5)),
                           (a - b, fa - fb)):
            got = ours.numpy()
            want16 = want.astype(np.float16)
            nan = np.isnan(want16)
            assert np.array_equal(np.isnan(got), nan)
            assert np.array_equal(_float16_bits(got)[~nan], _float16_bits(want16)[~nan])
            # a NaN result is a quiet NaN
            assert (_float16_bits(got)[nan] & 0x7e00 == 0x7e00).all()


def test_float32_and_float64_reduce_sources_have_no_16_bit_code():
    for ctype in ("float", "double"):
        for strategy in ("serial", "local"):
            src = kernels.render("reduce.cl.mako", ctype=ctype, strategy=strategy, op="sum", with_index=False,
                                 has_in_idx=False, inner_block=16, local_size=64)
            assert "ushort" not in src and "half" not in src and "F16C" not in src
    src = kernels.render("reduce.cl.mako", ctype="float", strategy="serial", op="sum", with_index=False,
                         has_in_idx=False, inner_block=16, local_size=1, in_ctype="half", out_ctype="half",
                         half_io="bits")
    assert "__global const ushort *x" in src and "f2h_(total * scale)" in src


@pytest.mark.parametrize("dt", DTYPES)
def test_the_64_bit_index_form_gives_the_same_bits(dt, monkeypatch):
    """Tensors past 2**31 elements take the reduce kernel's long form (its row loop); forced here on small
    ones, with launches capped (64 work-items on CPUs, two work-groups on GPUs) so the loop runs several
    rounds."""
    from axonml_autograd import rows
    cases = [((1000,), None), ((6, 300), 1), ((5000, 3), 0), ((3, 5000), 1)]
    xs = [as16(values(shape, 9), dt)[0] for shape, _ in cases]
    want = [[reduce(x, op, axis).astype("float32").numpy() for op in ("sum", "mean")] for x, (_, axis) in zip(xs, cases)]
    monkeypatch.setattr(rows, "index_type", lambda *extents: "long")
    # at least two work-groups' worth (a GPU target's are up to 256 wide)
    t = ag.get_device(None).target
    monkeypatch.setattr(rows, "_MAX_WORK_ITEMS", 2 * t.local_size(256) if t.is_gpu else 64)
    for x, (_, axis), w in zip(xs, cases, want):
        for op, expected in zip(("sum", "mean"), w):
            got = reduce(x, op, axis).astype("float32").numpy()
            assert np.array_equal(got.reshape(-1).view(np.uint32), expected.reshape(-1).view(np.uint32))


@pytest.mark.parametrize("dt", DTYPES)
def test_16_bit_adds_take_the_vector_loop_on_cpus_and_every_kernel_builds(dt):
    """A vector form that does not build falls back quietly to the scalar loop (correct, ~3x slower):
    this catches that."""
    from axonml_autograd import elementwise_kernels as ew
    dev = ag.get_device(None)
    x, _ = as16(values((1000,), 10), dt)
    ew._plans.clear()
    x + x
    x.sum()
    assert not [k for k in dev.failed_builds if "elementwise (a + b)" in str(k[0]) or "reduce" in str(k[0])]
    plans = [p for p in ew._plans.values() if p.dtype == x.dtype and p.n == 1000]
    assert plans and all((p.vector == 0) == dev.target.is_gpu for p in plans)
