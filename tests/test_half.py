"""16-bit tensors (float16, bfloat16): storage dtypes whose kernels compute in float32 and round once.

Compared against torch on the CPU on the same 16-bit inputs. The tolerance is stated in units of the
16-bit type's last place (ulps): + - * and comparisons, where, relu, max, min and argmax must be bit for
bit (float32 holds every exact sum and product of two 16-bit values to within one float32 rounding, and
rounding that once more to 16 bits gives the correctly rounded result, as torch's); functions computed
by a math library (exp, tanh, gelu, pow...) may differ by 1 ulp, because PoCL's float32 exp is not
torch's (Sleef) and an ulp of float32 moves a result across a 16-bit rounding boundary now and then.
Sums and means may differ by 1 ulp (another float32 summation order). Gradients are compared with
torch's float32 gradient rounded once (1 ulp) and with torch's own 16-bit gradient (2 ulps; tanh and
sigmoid more, because torch's 16-bit backward works from the rounded output); log_softmax is compared
absolutely near 0 (torch's own 16-bit log_softmax rounds inside, ours rounds once).
"""

import os
import sys
import tempfile

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import Tensor, Variable, capture
from axonml_autograd.device import default_device
from axonml_autograd.dtypes import bfloat16, float16, to_bf16_bits
from axonml_autograd.registry import OPS

sys.path.insert(0, os.path.dirname(__file__))
from registry_cases import call, operands_for, scalars_of  # noqa: E402

DEV = default_device()
DTYPES = ["float16", "bfloat16"]
SIZES = (1, 3, 17, 65, 129)


def tdt(torch, name):
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
            "float64": torch.float64, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}[name]


def _ordered(values, dt):
    """16-bit patterns as integers ordered like the values (for ulp distances)."""
    v = np.asarray(values, np.float32)
    raw = (v.astype(np.float16).view(np.uint16) if dt == "float16" else to_bf16_bits(v)).astype(np.int64)
    return np.where(raw & 0x8000, -(raw & 0x7FFF), raw)


def ulps(ours, theirs, dt):
    """Per element: how many 16-bit steps apart (NaN with NaN is 0, NaN with a number a million)."""
    a, b = np.atleast_1d(np.asarray(ours, np.float32)), np.atleast_1d(np.asarray(theirs, np.float32))
    d = np.abs(_ordered(a, dt) - _ordered(b, dt))
    d[np.isnan(a) & np.isnan(b)] = 0
    d[np.isnan(a) != np.isnan(b)] = 1 << 20
    return d


def as_torch(torch, t):
    """A Tensor/Variable of ours as a torch tensor of the same dtype and values."""
    t = t.data() if isinstance(t, Variable) else t
    return torch.from_numpy(t.numpy().astype(np.float32)).to(tdt(torch, str(t.dtype)))


def tvalues(t):
    return t.detach().float().numpy()


# -- dtypes, creation, casts ----------------------------------------------------------------------------
def test_the_dtype_names_and_creation_in_every_form():
    assert ag.half is ag.float16 is float16 and ag.bfloat16 is bfloat16
    assert str(bfloat16) == "bfloat16" and bfloat16 == "bfloat16" and bfloat16 != np.float32
    assert np.dtype("float32") != bfloat16 and bfloat16.itemsize == 2 and bfloat16.kind == "f"
    for dt in (ag.float16, "float16", ag.bfloat16, "bfloat16"):
        want = "bfloat16" if "b" in str(dt) else "float16"
        for t in (ag.zeros(3, dtype=dt), ag.ones(2, 3, dtype=dt), ag.full([2], 1.5, dtype=dt),
                  Tensor.empty([4], dtype=dt), ag.rand(5, seed=1, dtype=dt), ag.randn(5, seed=2, dtype=dt),
                  Tensor.from_vec([1, 2.5], [2], dtype=dt), ag.from_numpy(np.ones(3, np.float32), dtype=dt)):
            assert str(t.dtype) == want
        assert ag.ones(2, dtype=dt).to_vec() == [1.0, 1.0]
        assert ag.full([2], -2.25, dtype=dt).numpy().dtype == (np.float32 if want == "bfloat16" else np.float16)
    # numpy float16 keeps its type; the random numbers are the float32 draw rounded
    assert ag.from_numpy(np.array([1.5, 2.0], np.float16)).dtype == np.float16
    np.testing.assert_array_equal(ag.rand(9, seed=4, dtype="float16").numpy(),
                                  ag.rand(9, seed=4).numpy().astype(np.float16))
    with pytest.raises(ValueError, match="overflow"):
        ag.full([2], 70000.0, dtype="float16")
    with pytest.raises(ValueError, match="overflow"):
        ag.full([2], 3.4e38, dtype="bfloat16")


@pytest.mark.parametrize("dt", DTYPES)
def test_to_half_bfloat16_and_astype_on_tensors_and_variables(dt):
    x = Tensor.from_vec([1.0, -2.5, 3.140625], [3])
    for y in (x.to(dt), x.astype(dt), x.half() if dt == "float16" else x.bfloat16(), x.to(getattr(ag, dt))):
        assert str(y.dtype) == dt and y.to_vec() == [1.0, -2.5, 3.140625]
    assert x.to(dt).to("float32").dtype == np.float32
    v = Variable(x, requires_grad=True)
    h = v.half() if dt == "float16" else v.bfloat16()
    assert str(h.data().dtype) == dt
    (h * 2.0).sum().backward()
    assert v.grad().dtype == np.float32 and v.grad().to_vec() == [2.0, 2.0, 2.0]


def special_float32():
    """Every kind of float32: random bit patterns (NaN, inf, subnormal...) and the rounding ties."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=4000, dtype=np.uint64).astype(np.uint32)
    wide = bits.view(np.float32)
    small = rng.uniform(-70000, 70000, 2000).astype(np.float32)
    tiny = (rng.uniform(-1, 1, 1000) * 2.0 ** rng.integers(-30, -10, 1000)).astype(np.float32)
    ties = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1 + 2**-11, 1 + 3 * 2**-11, 2049.0, 2051.0,
                     65504.0, 65519.0, 65520.0, -65520.0, 3.3895313892515355e+38, 3.39e38, 3.4028235e38,
                     np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 1e-45],
                    np.float32)
    return np.concatenate([ties, wide, small, tiny])


@pytest.mark.parametrize("dt", DTYPES)
def test_float32_to_16_bits_rounds_to_nearest_even_as_torch_on_the_device_and_the_host(dt):
    torch = pytest.importorskip("torch")
    x = special_float32()
    want = tvalues(torch.from_numpy(x).to(tdt(torch, dt)))
    device = Tensor.from_numpy(x).astype(dt).numpy()
    host = Tensor.from_numpy(x, dtype=dt).numpy()
    for got in (device, host):
        assert ulps(got, want, dt).max() == 0
        assert np.array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]))
    # the ties, spelled out: to even; NaN stays NaN; past the largest finite value is inf
    if dt == "bfloat16":
        assert device[:3].tolist() == [1.0, 1.015625, -1.0]
        assert device[11] == device[12] == 3.3895313892515355e+38 and np.isinf(device[13])   # float32 max: inf
    else:
        assert device[3:7].tolist() == [1.0, 1 + 2**-9, 2048.0, 2052.0]
        assert device[7:11].tolist() == [65504.0, 65504.0, np.inf, -np.inf]
        assert device[20:23].tolist() == [2.0**-24, 0.0, 2.0**-24]   # subnormals, ties to even
    assert np.isnan(device[16]) and np.isnan(device[17])


def test_every_float16_converts_exactly_and_float32_rounds_to_float16_as_numpy():
    # Every float16 to float32 (exact), and float32 with every upper 16 bits and the lower bits that
    # decide a rounding (below, at and above the halfway point, with an even and an odd last kept bit)
    # to float16, against numpy's conversion (ties to even). On CPUs the kernels convert float16 by
    # integer arithmetic, on GPUs with vload_half/vstore_half_rte: both must give these bits.
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    wide = Tensor.from_numpy(h).astype("float32").numpy()
    nan = np.isnan(h)
    assert np.array_equal(wide[~nan].view(np.uint32), h[~nan].astype(np.float32).view(np.uint32))
    assert np.isnan(wide[nan]).all() and np.array_equal(np.signbit(wide[nan]), np.signbit(h[nan]))
    low = np.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x2000, 0x3000, 0xFFFF], np.uint32)
    f = ((np.arange(65536, dtype=np.uint32)[:, None] << 16) | low).reshape(-1).view(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        want = f.astype(np.float16)
    got = Tensor.from_numpy(f).astype("float16").numpy()
    nan = np.isnan(f)
    assert np.array_equal(got[~nan].view(np.uint16), want[~nan].view(np.uint16))
    assert np.isnan(got[nan]).all() and np.array_equal(np.signbit(got[nan]), np.signbit(f[nan]))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")   # signalling NaNs among the inputs
@pytest.mark.parametrize("src, dst", [("bfloat16", "float16"), ("float16", "bfloat16"), ("float16", "float32"),
                                      ("bfloat16", "float32"), ("float16", "int32"), ("bfloat16", "int64"),
                                      ("int32", "float16"), ("int64", "bfloat16"), ("bool", "bfloat16"),
                                      ("float16", "bool"), ("float64", "float16"), ("float64", "bfloat16"),
                                      ("bfloat16", "float64")])
def test_casts_between_16_bit_and_every_other_dtype_as_torch(src, dst):
    torch = pytest.importorskip("torch")
    if "float64" in (src, dst) and not DEV.fp64:
        pytest.skip("no float64 on this device")
    x = special_float32()
    if src in ("int32", "int64"):
        x = np.random.default_rng(1).integers(-70000, 70000, 500)
    elif src == "bool":
        x = np.arange(7) % 3 == 0
    else:
        x = x[np.isfinite(x) & (np.abs(x) < 1e9)] if dst in ("int32", "int64") else x
        x = np.concatenate([x, np.array([70144.0, 65520.0, -1e5], np.float32)])  # bfloat16 values past float16
    theirs = torch.from_numpy(np.asarray(x)).to(tdt(torch, src))
    ours = ag.from_numpy(np.asarray(x), dtype=src)
    np.testing.assert_array_equal(ours.numpy().astype(np.float64), tvalues(theirs).astype(np.float64))
    got, want = ours.astype(dst).numpy(), theirs.to(tdt(torch, dst))
    want = want.numpy() if dst not in ("bfloat16",) else tvalues(want)
    if dst in DTYPES:
        assert ulps(got, want, dst).max() == 0
    else:
        np.testing.assert_array_equal(got, want)
    if src == "bfloat16" and dst == "float16":   # bfloat16 beyond float16's range becomes inf, as torch
        assert np.isinf(got[-3]) and np.isinf(got[-1]) and got[-1] < 0


def test_promotion_follows_torch():
    torch = pytest.importorskip("torch")
    names = ["float16", "bfloat16", "float32", "int32", "int64", "bool"] + (["float64"] if DEV.fp64 else [])
    for a in names:
        for b in names:
            if "float16" not in (a, b) and "bfloat16" not in (a, b):
                continue
            ours = (ag.ones(2, dtype=a) + ag.ones(2, dtype=b)).dtype
            theirs = (torch.ones(2, dtype=tdt(torch, a)) + torch.ones(2, dtype=tdt(torch, b))).dtype
            assert str(ours) == str(theirs).replace("torch.", ""), (a, b)
            mask = ag.ones(2, dtype="bool")
            where = ag.where(mask, ag.ones(2, dtype=a), ag.ones(2, dtype=b)).dtype
            twhere = torch.where(torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=tdt(torch, a)),
                                 torch.ones(2, dtype=tdt(torch, b))).dtype
            assert str(where) == str(twhere).replace("torch.", ""), ("where", a, b)
    for dt in DTYPES:   # a Python number keeps the tensor's type
        x = ag.ones(2, dtype=dt)
        assert str((x + 2.5).dtype) == dt and str((3 * x).dtype) == dt and str((x / 7).dtype) == dt
        assert (x > 0.5).dtype == np.bool_


# -- elementwise ----------------------------------------------------------------------------------------
EXACT = ("add", "sub", "mul", "relu", "maximum", "minimum", "neg", "abs")
ROWS = ["add", "sub", "mul", "div", "exp", "log", "tanh", "sigmoid", "relu", "gelu", "pow", "sqrt", "maximum",
        "abs", "sin", "softplus", "silu", "clamp"]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("name", ROWS)
def test_registry_rows_on_16_bit_inputs_equal_torchs(name, dt):
    torch = pytest.importorskip("torch")
    spec = OPS[name]
    fn = torch
    for part in spec.torch.split("."):
        fn = getattr(fn, part)
    n = SIZES[ROWS.index(name) % len(SIZES)]
    arrays = operands_for(spec, [(n, 7)] * spec.arity, 11, dtype="float32")
    theirs = [torch.from_numpy(a).to(tdt(torch, dt)) for a in arrays]
    ours = [Tensor.from_numpy(tvalues(t), dtype=dt) for t in theirs]
    out = call(spec, *ours)
    assert str(out.dtype) == dt
    ref = fn(*theirs, *scalars_of(spec).values())
    once = fn(*[t.float() for t in theirs], *scalars_of(spec).values()).to(tdt(torch, dt))   # float32, one rounding
    limit = 0 if name in EXACT else 1
    assert ulps(out.numpy(), tvalues(ref), dt).max() <= limit
    assert ulps(out.numpy(), tvalues(once), dt).max() <= limit


@pytest.mark.parametrize("dt", DTYPES)
def test_comparisons_where_broadcasts_views_and_mixed_operands(dt):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a32, b32 = rng.normal(size=(17, 1)).astype(np.float32), rng.normal(size=(65,)).astype(np.float32)
    ta, tb = torch.from_numpy(a32).to(tdt(torch, dt)), torch.from_numpy(b32).to(tdt(torch, dt))
    a, b = as_torch_back(ta, dt), as_torch_back(tb, dt)
    for ours, theirs in [(a < b, ta < tb), (a == a, ta == ta), (a >= b, ta >= tb)]:
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(ag.where(a > b, a, b).numpy().astype(np.float32),
                                  tvalues(torch.where(ta > tb, ta, tb)))
    # a transposed view, read in place, and mixed operand types
    m = Tensor.from_numpy(rng.normal(size=(3, 129)).astype(np.float32), dtype=dt)
    tm = as_torch(torch, m)
    assert ulps((m.T * 2.0 + 1.0).numpy(), tvalues(tm.T * 2.0 + 1.0), dt).max() == 0
    i = ag.from_numpy(np.arange(129, dtype=np.int32))
    assert str((m + i).dtype) == dt and ulps((m + i).numpy(), tvalues(tm + torch.arange(129, dtype=torch.int32)), dt).max() == 0
    f = ag.from_numpy(rng.normal(size=129).astype(np.float32))
    assert (m * f).dtype == np.float32
    np.testing.assert_array_equal((m * f).numpy(), (tm * torch.from_numpy(f.numpy())).numpy())


def as_torch_back(t, dt):
    return Tensor.from_numpy(tvalues(t), dtype=dt)


# -- reductions and softmax ------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", [(129,), (17, 65), (3, 1, 5)])
def test_reductions_accumulate_in_float32_as_torch(dt, shape):
    torch = pytest.importorskip("torch")
    n = int(np.prod(shape))
    distinct = (np.random.default_rng(5).permutation(n) / 4 - 7).astype(np.float32).reshape(shape)
    theirs = torch.from_numpy(distinct).to(tdt(torch, dt))
    x = Tensor.from_numpy(tvalues(theirs), dtype=dt)
    v = Variable(x)
    assert ulps(x.sum().numpy(), tvalues(theirs.sum()), dt).max() <= 1
    assert ulps(x.mean().numpy(), tvalues(theirs.mean()), dt).max() <= 1
    for d in range(len(shape)):
        for ours, ref in [(x.sum(d), theirs.sum(d)), (x.mean(d), theirs.mean(d))]:
            assert str(ours.dtype) == dt and ulps(ours.numpy(), tvalues(ref), dt).max() <= 1
        values, idx = x.max(d)
        np.testing.assert_array_equal(values.numpy().astype(np.float32), tvalues(theirs.max(d).values))
        np.testing.assert_array_equal(idx.numpy(), theirs.max(d).indices.numpy())
        np.testing.assert_array_equal(x.argmax(d).numpy(), theirs.argmax(d).numpy())
        np.testing.assert_array_equal(v.min(d)[0].data().numpy().astype(np.float32), tvalues(theirs.min(d).values))
    assert str(x.max().dtype) == dt and x.max().item() == theirs.max().item()


def test_a_16_bit_sum_is_not_a_16_bit_running_sum():
    # 4096 ones: a float16 accumulator would stop at 2048 (2048 + 1 rounds back to 2048).
    assert ag.ones(4096, dtype="float16").sum().item() == 4096.0
    assert ag.ones(4096, dtype="bfloat16").mean().item() == 1.0


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_rows_compute_in_float32(dt, log):
    torch = pytest.importorskip("torch")
    theirs = (torch.randn(17, 65, generator=torch.Generator().manual_seed(1)) * 4).to(tdt(torch, dt))
    x = Variable(as_torch_back(theirs, dt))
    ours = x.log_softmax(-1) if log else x.softmax(-1)
    ref = theirs.log_softmax(-1) if log else theirs.softmax(-1)
    once = (theirs.float().log_softmax(-1) if log else theirs.float().softmax(-1)).to(tdt(torch, dt))
    assert str(ours.data().dtype) == dt
    # log_softmax is x - logsumexp(row): near 0 it cancels, and an ulp of the float32 logsumexp (~20
    # here) is many 16-bit ulps of a tiny result, so there the comparison is absolute.
    # torch's own 16-bit log_softmax rounds a step inside (x - max, then - log(sum)): it is up to an ulp
    # at 1 (2**-10, 2**-7) from the correctly rounded result that ours and `once` agree on.
    step = 2.0 ** (-10 if dt == "float16" else -7)
    got = ours.data().numpy().astype(np.float32)
    np.testing.assert_allclose(got, tvalues(once), rtol=step, atol=8 * 2.0**-23 * 32 if log else 0)
    np.testing.assert_allclose(got, tvalues(ref), rtol=step, atol=step if log else 0)


# -- autograd ----------------------------------------------------------------------------------------------
GRAD_ROWS = ["mul", "div", "exp", "log", "tanh", "sigmoid", "gelu", "pow", "relu", "sqrt"]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("name", GRAD_ROWS)
def test_gradients_of_16_bit_leaves_are_16_bit_and_equal_torchs(name, dt):
    torch = pytest.importorskip("torch")
    spec = OPS[name]
    fn = torch
    for part in spec.torch.split("."):
        fn = getattr(fn, part)
    arrays = operands_for(spec, [(65,)] * spec.arity, 21, dtype="float32")
    theirs = [torch.from_numpy(a).to(tdt(torch, dt)).requires_grad_() for a in arrays]
    ours = [Variable(as_torch_back(t.detach(), dt), requires_grad=True) for t in theirs]
    call(spec, *ours).sum().backward()
    fn(*theirs, *scalars_of(spec).values()).sum().backward()
    wide = [t.detach().float().requires_grad_() for t in theirs]   # the same rule in float32, rounded once
    fn(*wide, *scalars_of(spec).values()).sum().backward()
    for v, t, w in zip(ours, theirs, wide):
        assert str(v.grad().dtype) == dt and str(t.grad.dtype) == f"torch.{dt}"
        assert ulps(v.grad().numpy(), tvalues(w.grad.to(tdt(torch, dt))), dt).max() <= 1
        # torch's tanh and sigmoid backward work from their rounded output (1 - y*y, y * (1 - y)), ours
        # from x (the float32 result above, rounded once): further apart
        assert ulps(v.grad().numpy(), tvalues(t.grad), dt).max() <= {"tanh": 8, "sigmoid": 4}.get(name, 2)


@pytest.mark.parametrize("dt", DTYPES)
def test_backward_through_broadcasts_reductions_and_softmax(dt):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(2)
    tx = torch.randn(17, 65, generator=g).to(tdt(torch, dt)).requires_grad_()
    tw = torch.randn(65, generator=g).to(tdt(torch, dt)).requires_grad_()
    x, w = (Variable(as_torch_back(t.detach(), dt), requires_grad=True) for t in (tx, tw))
    loss = ((x * w).sigmoid().softmax(-1) * (x + 1.0)).sum(1).mean()
    tloss = ((tx * tw).sigmoid().softmax(-1) * (tx + 1.0)).sum(1).mean()
    loss.backward()
    tloss.backward()
    assert str(loss.data().dtype) == dt and str(x.grad().dtype) == dt and str(w.grad().dtype) == dt
    step = 2.0 ** (-10 if dt == "float16" else -7)   # one ulp at 1
    for ours, ref in [(loss.data(), tloss), (x.grad(), tx.grad), (w.grad(), tw.grad)]:
        np.testing.assert_allclose(ours.numpy().astype(np.float32), tvalues(ref), rtol=4 * step, atol=4 * step * 2**-4)


def test_16_bit_leaves_can_require_grad_and_integers_still_cannot():
    v = Variable(ag.ones(3, dtype="float16"), requires_grad=True)
    b = Variable(ag.ones(3, dtype="bfloat16")).requires_grad_()
    (v * 3.0).sum().backward()
    (b.exp()).sum().backward()
    assert v.grad().dtype == np.float16 and v.grad().to_vec() == [3.0, 3.0, 3.0]
    assert b.grad().dtype is bfloat16 and b.grad().to_vec() == [2.71875] * 3   # e rounded to bfloat16
    with pytest.raises(TypeError, match="floating"):
        Variable(ag.ones(3, dtype="int32"), requires_grad=True)


@pytest.mark.parametrize("dt", DTYPES)
def test_captured_16_bit_step_replays_bit_for_bit(dt):
    x = Variable(ag.randn(17, 65, seed=3, dtype=dt), requires_grad=True)

    def step():
        x.zero_grad()
        loss = (x.tanh() * x).softmax(-1).sum()
        loss.backward()
        return loss.data()

    eager = step().numpy(), x.grad().numpy()
    fn = capture(step)
    for _ in range(3):
        out = fn()
    assert fn.replays == 2
    np.testing.assert_array_equal(out.numpy(), eager[0])
    np.testing.assert_array_equal(x.grad().numpy(), eager[1])


# -- checkpoints, printing, refusals -------------------------------------------------------------------------
def test_checkpoints_keep_float16_and_bfloat16_bits():
    path = os.path.join(tempfile.mkdtemp(), "half.npz")
    h = Variable(ag.randn(17, seed=1, dtype="float16"))
    b = Variable(Tensor.from_numpy(special_float32()[:200], dtype="bfloat16"))
    ag.save(path, {"h": h, "b": b, "f": Variable(ag.ones(2))})
    raw = np.load(path, allow_pickle=False)
    assert raw["h"].dtype == np.float16 and raw["b"].dtype == np.uint16
    np.testing.assert_array_equal(raw["b"], to_bf16_bits(b.data().numpy()))
    ck = ag.serialization.read(path)
    assert ck.metadata["bfloat16_entries"] == ["b"]
    h2, b2 = Variable(ag.zeros(17, dtype="float16")), Variable(ag.zeros(200, dtype="bfloat16"))
    ag.serialization.load_into(path, {"h": h2, "b": b2}, strict=False)
    np.testing.assert_array_equal(h2.data().numpy(), h.data().numpy())
    np.testing.assert_array_equal(to_bf16_bits(b2.data().numpy()), raw["b"])   # every bit, NaNs included
    nested = os.path.join(tempfile.mkdtemp(), "tree.npz")
    ag.save({"model": {"b": b}, "step": 3}, nested)
    back = ag.load(nested)
    assert back["step"] == 3 and back["model"]["b"].dtype == np.float32
    np.testing.assert_array_equal(to_bf16_bits(back["model"]["b"]), raw["b"])


def test_printing_names_the_dtype():
    assert "dtype=float16" in repr(ag.ones(2, dtype="float16"))
    assert "dtype=bfloat16" in repr(ag.ones(2, dtype="bfloat16"))
    assert "dtype=bfloat16" in repr(Variable(ag.ones(2, dtype="bfloat16")))
    assert ag.full([1], 1.5, dtype="bfloat16").item() == 1.5
    assert Tensor.from_vec([1, 2.5], [2], dtype="bfloat16").to_vec() == [1.0, 2.5]


@pytest.mark.parametrize("dt", DTYPES)
def test_a_kernel_without_a_16_bit_form_refuses_it_by_name(dt):
    # Every op has a 16-bit path now (the recurrent layers last: tests/test_half_ops.py); the guard that
    # stops a template without a 16-bit form from building one stays, naming the template and the dtype.
    from axonml_autograd import kernels
    with pytest.raises(TypeError, match=f"rnn_cell: {dt} tensors are not supported"):
        kernels.get_kernel(DEV, "rnn_cell.cl.mako", "cell_init", ctype=kernels.ctype(ag.float16 if dt == "float16"
                                                                                     else ag.bfloat16))


def test_pickle_deepcopy_and_create_graph_keep_16_bit():
    import copy
    import pickle
    b = ag.randn(5, seed=1, dtype="bfloat16")
    for c in (pickle.loads(pickle.dumps(b)), copy.deepcopy(b)):
        assert c.dtype is bfloat16 and np.array_equal(c.numpy(), b.numpy())
    x = Variable(Tensor.from_vec([0.5, 1.0, 2.0], [3], dtype="float16"), requires_grad=True)
    (g,) = ag.autograd.grad((x * x * x).sum(), [x], create_graph=True)
    assert g.data().dtype == np.float16 and g.data().to_vec() == [0.75, 3.0, 12.0]
    g.sum().backward()
    assert x.grad().dtype == np.float16 and x.grad().to_vec() == [3.0, 6.0, 12.0]


@pytest.mark.skipif(not DEV.fp64, reason="no float64 on this device")
def test_float64_converts_through_float32_as_torch():
    torch = pytest.importorskip("torch")
    # just above a 16-bit tie in float64, exactly on it in float32: torch rounds twice, so the tie goes to even
    v = np.array([1 + 2**-11 + 2**-40, 1 + 2**-8 + 2**-40, -(1 + 3 * 2**-11 - 2**-40)])
    for dt in DTYPES:
        want = tvalues(torch.from_numpy(v).to(tdt(torch, dt)))
        assert want[0 if dt == "float16" else 1] == 1.0
        for ours in (Tensor.from_numpy(v, dtype=dt), Tensor.from_numpy(v).astype(dt)):
            np.testing.assert_array_equal(ours.numpy().astype(np.float32), want)


@pytest.mark.parametrize("dt", DTYPES)
def test_the_cpu_vector_loop_converts_as_the_scalar_one(dt):
    # One 16-bit type in and out takes the vector loop on CPUs (runs of 8, then a scalar tail): every
    # 16-bit pattern through it unchanged (NaN stays NaN), and products landing on and beside ties
    # rounded as numpy rounds the float32 product.
    raw = np.arange(65536 + 5, dtype=np.uint32).astype(np.uint16)
    vals = raw.view(np.float16).astype(np.float32) if dt == "float16" else \
        (raw.astype(np.uint32) << 16).view(np.float32)
    x = Tensor.from_numpy(vals, dtype=dt)
    same = (x * 1.0).numpy().astype(np.float32)
    nan = np.isnan(vals)
    assert np.array_equal(same[~nan].view(np.uint32), vals[~nan].view(np.uint32)) and np.isnan(same[nan]).all()
    finite = vals[np.isfinite(vals)]
    y = Tensor.from_numpy(finite, dtype=dt)
    for s in (1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 0.75, 3.0):
        with np.errstate(over="ignore"):
            prod = finite * np.float32(s)
            want = prod.astype(np.float16).astype(np.float32) if dt == "float16" else \
                (to_bf16_bits(prod).astype(np.uint32) << 16).view(np.float32)
        got = (y * s).numpy().astype(np.float32)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), s
