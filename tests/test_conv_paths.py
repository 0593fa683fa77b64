"""Both convolution paths, forced: implicit GEMM (cl_kernels/conv_gemm.cl.mako, the CPU default) and
im2col + matmul (the GPU default), and each of the GEMM's micro-tiles, on odd shapes (1, 3, 17
channels and sizes, stride 2, dilation 2, groups 2, asymmetric "same", several k slices), values and
all three gradients against torch in float64; central differences through the GEMM path; the
transposed convolution (whose forward is the GEMM input gradient at stride 1); float32, 16-bit and
capture on the default path; and the error for an unknown path."""

import numpy as np
import pytest

import axonml_autograd.nn.functional as F
from axonml_autograd import Tensor, Variable, capture, check_gradients
from axonml_autograd.functions import conv as conv_mod


def _var(a, grad=True):
    return Variable(Tensor.from_numpy(np.asarray(a, np.float64), dtype="float64"), requires_grad=grad)


@pytest.fixture(params=["gemm", "im2col"])
def path(request, monkeypatch):
    monkeypatch.setattr(conv_mod, "path", request.param)
    return request.param


# (input shape, weight shape, stride, padding, dilation, groups, bias)
CASES = [
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1, 1, True),
    ((2, 3, 17, 17), (5, 3, 3, 3), 1, 1, 1, 1, True),
    ((1, 17, 3, 17), (3, 17, 3, 3), 1, 1, 1, 1, False),          # K = 153: input gradient in k slices
    ((2, 4, 9, 7), (6, 2, 3, 2), 2, (1, 0), 2, 2, True),         # groups 2, stride 2, dilation 2
    ((2, 4, 8, 9), (6, 2, 2, 4), 1, "same", (2, 1), 2, True),    # even kernel: asymmetric "same"
    ((3, 3, 17, 5), (17, 3, 3, 1), 1, (3, 0), 1, 1, True),       # padding larger than the kernel
    ((2, 6, 5, 5), (4, 6, 1, 1), 1, 0, 1, 1, False),             # pointwise
    ((1, 115, 3, 4), (2, 115, 3, 3), 1, 1, 1, 1, False),          # K = 1035 taps: past one offset table
    ((2, 3, 5, 16), (5, 3, 3, 3), 1, 1, 1, 1, True),              # rows of whole panels: no padded grid
]


def _torch_case(case, arrays, torch):
    xs, ws, stride, padding, dilation, groups, bias = case
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = torch.nn.functional.conv2d(ts[0], ts[1], ts[2] if bias else None, stride, padding, dilation, groups)
    return ts, out


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_each_path_matches_torch_in_float64(case, path):
    torch = pytest.importorskip("torch")
    xs, ws, stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(sum(xs) + sum(ws))
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws)] + ([rng.standard_normal(ws[0])] if bias else [])
    vs = [_var(a) for a in arrays]
    y = F.conv2d(vs[0], vs[1], vs[2] if bias else None, stride, padding, dilation, groups)
    ts, want = _torch_case(case, arrays, torch)
    np.testing.assert_allclose(y.numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-10)
    r = rng.standard_normal(tuple(want.shape))
    (y * _var(r, grad=False)).sum().backward()
    (want * torch.tensor(r)).sum().backward()
    for k, (v, t) in enumerate(zip(vs, ts)):
        np.testing.assert_allclose(v.grad().numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-10,
                                   err_msg=f"gradient of input {k} ({path})")


@pytest.mark.parametrize("tile, direct, blend", [((4, 2), True, True), ((6, 2), True, True), ((8, 1), True, True),
                                                 ((4, 2), False, True), ((4, 2), True, False)])
def test_each_micro_tile_matches_torch(tile, direct, blend, monkeypatch):
    """Each micro-tile; stride-1 products through copied panels instead of in place (direct=False); and
    on the padded grid instead of the output's positions with blended row ends (blend=False)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(conv_mod, "path", "gemm")
    monkeypatch.setattr(conv_mod, "forced_tile", tile)
    monkeypatch.setattr(conv_mod, "use_direct", direct)
    monkeypatch.setattr(conv_mod, "use_blend", blend)
    rng = np.random.default_rng(7)
    for case in (CASES[1], CASES[3]):
        xs, ws, stride, padding, dilation, groups, bias = case
        arrays = [rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])]
        vs = [_var(a) for a in arrays]
        y = F.conv2d(*vs, stride=stride, padding=padding, dilation=dilation, groups=groups)
        ts, want = _torch_case(case, arrays, torch)
        np.testing.assert_allclose(y.numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-10)
        y.sum().backward()
        want.sum().backward()
        for v, t in zip(vs, ts):
            np.testing.assert_allclose(v.grad().numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_gemm_path_gradients_match_central_differences(monkeypatch):
    monkeypatch.setattr(conv_mod, "path", "gemm")
    rng = np.random.default_rng(8)
    r = _var(rng.standard_normal((2, 4, 3, 4)), grad=False)
    inputs = [_var(rng.standard_normal(s)) for s in ((2, 4, 5, 6), (4, 2, 3, 2), (4,))]

    def f(x, w, b):
        return (F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2) * r).sum()

    assert check_gradients(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    r1 = _var(rng.standard_normal((2, 3, 17)), grad=False)
    inputs = [_var(rng.standard_normal(s)) for s in ((2, 3, 17), (3, 3, 3), (3,))]
    assert check_gradients(lambda x, w, b: (F.conv1d(x, w, b, padding=1) * r1).sum(), inputs,
                           eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_transpose_matches_torch_on_each_path(stride, path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9 + stride)
    arrays = [rng.standard_normal((2, 4, 5, 3)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(6)]
    vs = [_var(a) for a in arrays]
    y = F.conv_transpose2d(*vs, stride=stride, padding=1, groups=2)
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    want = torch.nn.functional.conv_transpose2d(*ts, stride=stride, padding=1, groups=2)
    np.testing.assert_allclose(y.numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-10)
    y.sum().backward()
    want.sum().backward()
    for v, t in zip(vs, ts):
        np.testing.assert_allclose(v.grad().numpy(), t.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_float32_and_16_bit_on_the_gemm_path(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(conv_mod, "path", "gemm")
    rng = np.random.default_rng(10)
    x, w, b = rng.standard_normal((3, 5, 17, 17)), rng.standard_normal((7, 5, 3, 3)) / 4, rng.standard_normal(7)
    want = torch.nn.functional.conv2d(*(torch.tensor(a) for a in (x, w, b)), padding=1).numpy()
    y32 = F.conv2d(*(Variable(Tensor.from_numpy(a.astype(np.float32))) for a in (x, w, b)), padding=1)
    np.testing.assert_allclose(y32.numpy(), want, rtol=1e-4, atol=1e-4)
    for dt in ("float16", "bfloat16"):
        y = F.conv2d(*(Variable(Tensor.from_numpy(a.astype(np.float32)).astype(dt)) for a in (x, w, b)), padding=1)
        assert str(y.data().dtype) == dt
        np.testing.assert_allclose(y.data().astype("float32").numpy(), want, rtol=0.05, atol=0.1)


def test_captured_step_on_the_gemm_path_equals_eager_bit_for_bit(monkeypatch):
    monkeypatch.setattr(conv_mod, "path", "gemm")
    rng = np.random.default_rng(11)
    x = Tensor.from_numpy(rng.standard_normal((2, 3, 9, 9)).astype(np.float32))
    w = Variable(Tensor.from_numpy(rng.standard_normal((4, 3, 3, 3)).astype(np.float32)), requires_grad=True)
    b = Variable(Tensor.from_numpy(rng.standard_normal(4).astype(np.float32)), requires_grad=True)

    def step(inp):
        w.zero_grad(), b.zero_grad()
        y = F.conv2d(Variable(inp, requires_grad=True), w, b, padding=1)
        y.sum().backward()
        return y.data()

    eager = [step(x).numpy(), w.grad().numpy(), b.grad().numpy()]
    f = capture(step)
    for _ in range(3):
        out = f(x)
        np.testing.assert_array_equal(out.numpy(), eager[0])
        np.testing.assert_array_equal(w.grad().numpy(), eager[1])
        np.testing.assert_array_equal(b.grad().numpy(), eager[2])


def test_an_unknown_path_is_refused(monkeypatch):
    monkeypatch.setattr(conv_mod, "path", "winograd")
    with pytest.raises(ValueError, match="path must be 'auto', 'gemm' or 'im2col', got 'winograd'"):
        F.conv2d(_var(np.ones((1, 1, 3, 3))), _var(np.ones((1, 1, 2, 2))))
