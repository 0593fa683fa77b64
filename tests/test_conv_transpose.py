"""Transposed convolution (conv2d's input gradient as an op): values and gradients against torch in
float64 at odd shapes with stride, padding, output_padding, groups and dilation, central differences,
second derivatives, the layers' layout and initialisation, output_size, capture/replay, and errors."""

import math

import numpy as np
import pytest

import axonml_autograd.nn.functional as F
from axonml_autograd import Tensor, Variable, capture, check_gradients, gradgradcheck
from axonml_autograd import nn


def _var(a, grad=True):
    return Variable(Tensor.from_numpy(np.asarray(a, np.float64), dtype="float64"), requires_grad=grad)


def _compare(ours_fn, torch_fn, arrays, rng, atol=1e-10):
    torch = pytest.importorskip("torch")
    vs = [_var(a) for a in arrays]
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out, want = ours_fn(*vs), torch_fn(*ts)
    assert out.shape() == list(want.shape)
    np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=1e-10, atol=atol)
    r = rng.standard_normal(tuple(want.shape))
    (out * _var(r, grad=False)).sum().backward()
    (want * torch.tensor(r)).sum().backward()
    for k, (v, t) in enumerate(zip(vs, ts)):
        np.testing.assert_allclose(v.grad().numpy(), t.grad.numpy(), rtol=1e-10, atol=atol,
                                   err_msg=f"gradient of input {k}")


# (input shape, weight shape [in, out/groups, kh, kw], stride, padding, output_padding, groups, dilation, bias)
CASES_2D = [
    ((1, 3, 5, 7), (3, 2, 3, 3), 1, 0, 0, 1, 1, True),
    ((2, 4, 17, 9), (4, 3, 3, 2), 2, 1, 1, 1, 1, True),            # stride 2, output_padding 1
    ((2, 4, 5, 7), (4, 3, 3, 3), (2, 1), (1, 0), (1, 0), 2, 1, False),   # groups 2
    ((1, 2, 5, 4), (2, 3, 3, 2), 1, 1, 0, 1, 2, True),              # dilation 2
    ((1, 2, 4, 3), (2, 1, 1, 1), 1, 0, 1, 2, 2, True),              # 1x1, output_padding < dilation
    ((2, 3, 1, 1), (3, 5, 1, 1), 1, 0, 0, 1, 1, True),              # pointwise
    ((1, 6, 3, 5), (6, 1, 4, 3), 3, 2, 2, 3, (1, 2), True),         # stride > kernel gap
]


@pytest.mark.parametrize("case", CASES_2D, ids=[str(i) for i in range(len(CASES_2D))])
def test_conv_transpose2d_matches_torch_forward_and_gradients_in_float64(case):
    torch = pytest.importorskip("torch")
    xs, ws, stride, padding, extra, groups, dilation, bias = case
    rng = np.random.default_rng(sum(xs) + sum(ws))
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws)] + \
        ([rng.standard_normal(ws[1] * groups)] if bias else [])
    kw = dict(stride=stride, padding=padding, output_padding=extra, groups=groups, dilation=dilation)
    _compare(lambda x, w, b=None: F.conv_transpose2d(x, w, b, **kw),
             lambda x, w, b=None: torch.nn.functional.conv_transpose2d(x, w, b, **kw), arrays, rng)


CASES_1D = [
    ((1, 3, 5), (3, 2, 3), 1, 0, 0, 1, 1),
    ((2, 4, 17), (4, 3, 4), 2, 1, 1, 2, 1),
    ((2, 2, 9), (2, 1, 3), 3, 2, 1, 1, 2),
]


@pytest.mark.parametrize("case", CASES_1D, ids=[str(i) for i in range(len(CASES_1D))])
def test_conv_transpose1d_matches_torch_forward_and_gradients_in_float64(case):
    torch = pytest.importorskip("torch")
    xs, ws, stride, padding, extra, groups, dilation = case
    rng = np.random.default_rng(sum(xs))
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[1] * groups)]
    kw = dict(stride=stride, padding=padding, output_padding=extra, groups=groups, dilation=dilation)
    _compare(lambda x, w, b: F.conv_transpose1d(x, w, b, **kw),
             lambda x, w, b: torch.nn.functional.conv_transpose1d(x, w, b, **kw), arrays, rng)


def test_unbatched_input_gives_an_unbatched_output():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    _compare(lambda x, w: F.conv_transpose2d(x, w, stride=2),
             lambda x, w: torch.nn.functional.conv_transpose2d(x, w, stride=2),
             [rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 2, 2, 3))], rng)
    _compare(lambda x, w: F.conv_transpose1d(x, w, padding=1),
             lambda x, w: torch.nn.functional.conv_transpose1d(x, w, padding=1),
             [rng.standard_normal((3, 6)), rng.standard_normal((3, 2, 3))], rng)


def test_conv_transpose_is_the_adjoint_of_conv():
    """<conv_transpose(u, w), x> = <u, conv(x, w)> with the same stride, padding, dilation and groups."""
    rng = np.random.default_rng(2)
    x, w, u = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 3, 3)), None
    kw = dict(stride=2, padding=1, dilation=(1, 2), groups=2)
    y = F.conv2d(_var(x, False), _var(w, False), **kw)
    u = rng.standard_normal(tuple(y.shape()))
    t = F.conv_transpose2d(_var(u, False), _var(w, False), output_padding=(0, 1), **kw)
    assert t.shape() == list(x.shape)
    assert math.isclose(float((t.numpy() * x).sum()), float((y.numpy() * u).sum()), rel_tol=1e-12)


def _scalarised(fn, shape, rng):
    r = _var(rng.standard_normal(shape), grad=False)
    return lambda *vs: (fn(*vs) * r).sum()


@pytest.mark.parametrize("name, fn, shapes, out_shape", [
    ("conv_transpose2d", lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                                             groups=2, dilation=(1, 2)),
     [(1, 4, 3, 2), (4, 1, 2, 2), (2,)], (1, 2, 5, 4)),
    ("conv_transpose1d", lambda x, w, b: F.conv_transpose1d(x, w, b, stride=3, output_padding=2),
     [(2, 2, 3), (2, 3, 2), (3,)], (2, 3, 10)),
])
def test_gradients_match_central_differences(name, fn, shapes, out_shape):
    rng = np.random.default_rng(3)
    inputs = [_var(rng.uniform(-1, 1, s)) for s in shapes]
    assert fn(*inputs).shape() == list(out_shape)
    assert check_gradients(_scalarised(fn, out_shape, rng), inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_second_derivatives_match_finite_differences():
    rng = np.random.default_rng(4)
    inputs = [_var(rng.uniform(-1, 1, s)) for s in [(1, 2, 3, 2), (2, 2, 2, 2), (4,)]]
    fn = lambda x, w, b: F.conv_transpose2d(x, w, b, stride=(2, 1), padding=(0, 1), groups=2).tanh()  # noqa: E731
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4) is True


def test_layers_hold_torchs_layout_and_initialisation_and_take_output_size():
    torch = pytest.importorskip("torch")
    layer = nn.ConvTranspose2d(6, 8, (3, 2), stride=2, padding=1, output_padding=1, groups=2, seed=0)
    assert [(n, p.shape()) for n, p in layer.named_parameters()] == [("weight", [6, 4, 3, 2]), ("bias", [8])]
    bound = 1.0 / math.sqrt(4 * 3 * 2)    # torch's fan_in of [in, out/groups, kh, kw]: out/groups * kh * kw
    w, b = layer.weight.numpy(), layer.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound and np.abs(b).max() <= bound
    x = np.random.default_rng(5).standard_normal((2, 6, 5, 4)).astype(np.float32)
    want = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), 2, 1, 1, 2)
    np.testing.assert_allclose(layer(Variable(Tensor.from_numpy(x))).numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    # output_size picks the output_padding as torch's forward(input, output_size) does.
    up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, seed=1)
    t = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    xv = Tensor.zeros([1, 2, 5, 5])
    for size in ([9, 9], [10, 9], [1, 3, 10, 10]):
        assert up(Variable(xv), output_size=size).shape() == list(t(torch.zeros(1, 2, 5, 5), output_size=size).shape)
    with pytest.raises(ValueError, match="requested an output size of .*range from 9 to 10"):
        up(Variable(xv), output_size=[11, 11])
    c1 = nn.ConvTranspose1d(4, 2, 3, bias=False, seed=2)
    assert [n for n, _ in c1.named_parameters()] == ["weight"] and c1.weight.shape() == [4, 2, 3]
    assert c1(Variable(Tensor.zeros([4, 7]))).shape() == [2, 9]


def test_a_captured_step_replays_bit_for_bit():
    rng = np.random.default_rng(7)

    def make():
        up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, seed=1)
        up1 = nn.ConvTranspose1d(2, 2, 2, stride=2, seed=2)
        params = up.parameters() + up1.parameters()

        def step(x):
            for p in params:
                p.zero_grad()
            h = up(Variable(x)).tanh()
            loss = (up1(h.reshape([2, 2, 100])) ** 2).sum()
            loss.backward()
            return loss, [p.grad() for p in params]
        return step

    eager, f = make(), capture(make())
    for _ in range(3):
        x = Tensor.from_numpy(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))
        want_loss, want_grads = eager(x)
        got_loss, got_grads = f(x)
        assert got_loss.item() == want_loss.item()
        for a, b in zip(got_grads, want_grads):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert f.replays == 2


def _t(*shape):
    return Variable(Tensor.zeros(list(shape)))


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.conv_transpose2d(_t(1, 3, 4, 4), _t(3, 2, 3, 3), stride=2, output_padding=2), ValueError,
     "output padding must be smaller than either stride or dilation"),
    (lambda: F.conv_transpose2d(_t(1, 3, 4, 4), _t(4, 2, 3, 3)), ValueError, "has 3 channels.*expects 4"),
    (lambda: F.conv_transpose2d(_t(1, 3, 4, 4), _t(3, 2, 3, 3), groups=2), ValueError, "divisible by groups"),
    (lambda: F.conv_transpose2d(_t(1, 4, 4, 4), _t(4, 2, 3, 3), _t(2), groups=2), ValueError,
     r"bias must have shape \[4\]"),
    (lambda: F.conv_transpose2d(_t(3, 4), _t(3, 2, 3, 3)), ValueError, "conv_transpose2d: expected a 3-D or 4-D"),
    (lambda: F.conv_transpose1d(_t(1, 3, 4), _t(3, 2, 3, 3)), ValueError, "weight must be 3-D"),
    (lambda: F.conv_transpose2d(_t(1, 1, 1, 1), _t(1, 1, 1, 1), padding=1), ValueError, "is not positive"),
    (lambda: F.conv_transpose2d(_t(1, 1, 2, 2), _t(1, 1, 1, 1), stride=0), ValueError, "stride must be >= 1"),
])
def test_bad_arguments_raise_errors_naming_the_op_and_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_permuted_input_and_permuted_gradient_are_read_as_their_values():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    _compare(lambda x, w: F.conv_transpose2d(x.permute([0, 2, 1, 3]), w, stride=2).permute([0, 2, 3, 1]) * 1.0,
             lambda x, w: torch.nn.functional.conv_transpose2d(x.permute(0, 2, 1, 3), w, stride=2).permute(0, 2, 3, 1),
             [rng.standard_normal((2, 5, 3, 4)), rng.standard_normal((3, 2, 2, 2))], rng)
