"""Convolution and pooling: forward values and gradients against torch.nn.functional in float64 over
odd shapes (1, 3, 17; odd channel counts, groups, stride 2, dilation 2, padding, "same"), whole
gradients against central differences, torch's tie and NaN rules for max pooling, capture/replay,
deterministic backward, the layers' initialisation, and errors that name the op and the argument."""

import math

import numpy as np
import pytest

import axonml_autograd.nn.functional as F
from axonml_autograd import Tensor, Variable, capture, check_gradients
from axonml_autograd import nn

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _var(a, grad=True):
    return Variable(Tensor.from_numpy(np.asarray(a, np.float64), dtype="float64"), requires_grad=grad)


def _compare(ours_fn, torch_fn, arrays, rng, atol=1e-10):
    """Forward of ``ours_fn(*Variables)`` equals ``torch_fn(*tensors)``, and so do the gradients of
    ``sum(out * r)`` for a random ``r`` with respect to every input."""
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


# (input shape, weight shape, stride, padding, dilation, groups, bias)
CONV2D_CASES = [
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1, 1, True),              # everything 1: the 1x1 path
    ((2, 3, 17, 17), (5, 3, 3, 3), 1, 1, 1, 1, True),
    ((3, 6, 17, 9), (9, 2, 3, 2), 2, (1, 0), (2, 1), 3, False),   # groups, stride 2, dilation 2
    ((1, 5, 5, 7), (5, 1, 3, 3), 1, "same", 1, 5, True),           # depthwise, "same"
    ((2, 3, 8, 9), (4, 3, 2, 4), 1, "same", (1, 2), 1, True),      # even kernel: asymmetric "same"
    ((2, 3, 17, 3), (3, 3, 1, 3), (2, 1), "valid", 1, 1, True),
    ((1, 3, 17, 17), (3, 3, 1, 1), 2, 0, 1, 1, True),              # 1x1 but strided: unfolded
    ((2, 4, 3, 3), (7, 4, 1, 1), 1, 0, 1, 1, False),               # pointwise
    ((1, 3, 6, 6), (2, 3, 3, 3), 3, 2, 2, 1, True),                # stride larger than the kernel gap
]


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
@pytest.mark.parametrize("case", CONV2D_CASES, ids=[str(i) for i in range(len(CONV2D_CASES))])
def test_conv2d_matches_torch_forward_and_gradients_in_float64(case):
    xs, ws, stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(sum(xs) + sum(ws))
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws)] + ([rng.standard_normal(ws[0])] if bias else [])

    def ours(x, w, b=None):
        return F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    def theirs(x, w, b=None):
        return TF.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)

    _compare(ours, theirs, arrays, rng)


CONV1D_CASES = [
    ((1, 1, 1), (1, 1, 1), 1, 0, 1, 1),
    ((3, 4, 17), (6, 2, 3), 2, 1, 2, 2),
    ((2, 3, 17), (5, 3, 4), 1, "same", 3, 1),
    ((2, 3, 65), (3, 1, 5), 3, 2, 1, 3),
]


@pytest.mark.parametrize("case", CONV1D_CASES, ids=[str(i) for i in range(len(CONV1D_CASES))])
def test_conv1d_matches_torch_forward_and_gradients_in_float64(case):
    xs, ws, stride, padding, dilation, groups = case
    rng = np.random.default_rng(sum(xs))
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])]
    _compare(lambda x, w, b: F.conv1d(x, w, b, stride, padding, dilation, groups),
             lambda x, w, b: TF.conv1d(x, w, b, stride, padding, dilation, groups), arrays, rng)


def test_unbatched_inputs_give_unbatched_outputs_like_torch():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 7, 5)), rng.standard_normal((2, 3, 3, 3))
    _compare(lambda a, b: F.conv2d(a, b, padding=1), lambda a, b: TF.conv2d(a, b, padding=1), [x, w], rng)
    _compare(lambda a: F.max_pool2d(a, 2), lambda a: TF.max_pool2d(a, 2), [x], rng)
    x1 = rng.standard_normal((3, 17))
    _compare(lambda a, b: F.conv1d(a, b), lambda a, b: TF.conv1d(a, b), [x1, rng.standard_normal((4, 3, 2))], rng)


def _scalarised(fn, shape, rng):
    """``sum(fn(...) * r)``: one output, so check_gradients runs one backward and compares every input."""
    r = _var(rng.standard_normal(shape), grad=False)
    return lambda *vs: (fn(*vs) * r).sum()


@pytest.mark.parametrize("name, fn, shapes, out_shape", [
    ("conv2d", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
     [(2, 4, 5, 6), (4, 2, 3, 2), (4,)], (2, 4, 3, 8)),
    ("conv1d", lambda x, w, b: F.conv1d(x, w, b, stride=2, padding="valid", dilation=2),
     [(1, 3, 9), (2, 3, 3), (2,)], (1, 2, 3)),
    ("max_pool2d", lambda x: F.max_pool2d(x, 3, 2, 1, dilation=(1, 2), ceil_mode=True), [(1, 2, 7, 8)], (1, 2, 4, 4)),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, (3, 2), (2, 1), (1, 1), count_include_pad=False), [(2, 1, 5, 4)],
     (2, 1, 3, 5)),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (3, 4)), [(1, 2, 7, 5)], (1, 2, 3, 4)),
])
def test_gradients_match_central_differences(name, fn, shapes, out_shape):
    rng = np.random.default_rng(3)
    # Distinct values in [-2, 2] at least 4/n apart: max pooling keeps its choice under the finite difference.
    arrays = [(rng.permutation(math.prod(s)).reshape(s) / math.prod(s) - 0.5) * 4 for s in shapes]
    inputs = [_var(a) for a in arrays]
    assert fn(*inputs).shape() == list(out_shape)
    assert check_gradients(_scalarised(fn, out_shape, rng), inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


MAX_POOL_CASES = [
    # (input shape, kernel, stride, padding, dilation, ceil_mode)
    ((1, 1, 1, 1), 1, None, 0, 1, False),
    ((2, 3, 17, 17), 2, None, 0, 1, False),
    ((2, 3, 17, 17), 3, 2, 1, 1, False),
    ((1, 3, 17, 9), (3, 2), (2, 1), (1, 1), (2, 1), False),
    ((2, 5, 17, 17), 3, 2, 1, 2, True),
    ((1, 1, 5, 5), 2, 2, 0, 1, True),
    ((3, 1, 6, 7), (2, 3), (3, 2), (1, 0), 1, True),
]


@pytest.mark.parametrize("case", MAX_POOL_CASES, ids=[str(i) for i in range(len(MAX_POOL_CASES))])
def test_max_pool2d_matches_torch_including_ties_and_indices(case):
    shape, k, s, p, d, ceil = case
    rng = np.random.default_rng(sum(shape))
    # Small integers: many ties inside windows, so the first-maximum rule decides the gradient.
    x = rng.integers(-3, 3, shape).astype(np.float64)
    _compare(lambda a: F.max_pool2d(a, k, s, p, d, ceil), lambda a: TF.max_pool2d(a, k, s, p, d, ceil), [x], rng)
    _, idx = F.max_pool2d(_var(x), k, s, p, d, ceil, return_indices=True)
    _, t_idx = TF.max_pool2d(torch.tensor(x), k, s, p, d, ceil, return_indices=True)
    assert idx.dtype == np.int32
    np.testing.assert_array_equal(idx.numpy(), t_idx.numpy())


def test_max_pool2d_propagates_nan_and_picks_its_gradient_like_torch():
    x = np.array([[[[1.0, np.nan, 3.0, 2.0], [np.nan, 0.0, -np.inf, -np.inf]]]])
    ours = _var(x)
    y = F.max_pool2d(ours, 2)
    t = torch.tensor(x, requires_grad=True)
    ty = TF.max_pool2d(t, 2)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_array_equal(ours.grad().numpy(), t.grad.numpy())


AVG_POOL_CASES = [
    # (input shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    ((1, 1, 1, 1), 1, None, 0, False, True, None),
    ((2, 3, 17, 17), 2, None, 0, False, True, None),
    ((2, 3, 17, 17), 3, 2, 1, False, True, None),
    ((2, 3, 17, 17), 3, 2, 1, False, False, None),
    ((1, 3, 17, 9), (3, 2), (2, 1), (1, 1), True, True, None),
    ((1, 3, 17, 9), (3, 2), (2, 3), (1, 1), True, False, None),
    ((2, 1, 5, 5), 2, 2, 1, True, True, 3),
]


@pytest.mark.parametrize("case", AVG_POOL_CASES, ids=[str(i) for i in range(len(AVG_POOL_CASES))])
def test_avg_pool2d_matches_torch(case):
    shape, k, s, p, ceil, include, divisor = case
    rng = np.random.default_rng(sum(shape))
    _compare(lambda a: F.avg_pool2d(a, k, s, p, ceil, include, divisor),
             lambda a: TF.avg_pool2d(a, k, s, p, ceil, include, divisor), [rng.standard_normal(shape)], rng)


@pytest.mark.parametrize("shape, size", [
    ((1, 1, 1, 1), 1), ((2, 3, 17, 17), 1), ((2, 3, 17, 17), (5, 3)), ((1, 3, 17, 9), (None, 4)),
    ((1, 2, 5, 3), (7, 6)), ((3, 1, 9, 9), 3),
])
def test_adaptive_avg_pool2d_matches_torch(shape, size):
    rng = np.random.default_rng(sum(shape))
    _compare(lambda a: F.adaptive_avg_pool2d(a, size), lambda a: TF.adaptive_avg_pool2d(a, size),
             [rng.standard_normal(shape)], rng)


def test_float32_conv2d_agrees_with_torch_to_rounding():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((3, 5, 17, 17)), rng.standard_normal((7, 5, 3, 3)), rng.standard_normal(7)
    ours = F.conv2d(*(Variable(Tensor.from_numpy(a.astype(np.float32))) for a in (x, w, b)), padding=1, stride=2)
    assert ours.data().dtype == np.float32
    want = TF.conv2d(*(torch.tensor(a) for a in (x, w, b)), padding=1, stride=2).numpy()
    np.testing.assert_allclose(ours.numpy(), want, rtol=1e-4, atol=1e-4)


def test_backward_is_the_same_bit_for_bit_every_run():
    rng = np.random.default_rng(6)
    x = Variable(Tensor.from_numpy(rng.standard_normal((2, 3, 17, 17)).astype(np.float32)), requires_grad=True)
    w = Variable(Tensor.from_numpy(rng.standard_normal((4, 3, 3, 3)).astype(np.float32)), requires_grad=True)
    grads = []
    for _ in range(2):
        x.zero_grad(), w.zero_grad()
        F.avg_pool2d(F.max_pool2d(F.conv2d(x, w, padding=2, dilation=2), 3, 1, 1), 2).sum().backward()
        grads.append((x.grad().numpy(), w.grad().numpy()))
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunk_bytes", [None, 1], ids=["whole-batch", "image-by-image"])
def test_a_captured_cnn_step_replays_bit_for_bit(monkeypatch, chunk_bytes):
    if chunk_bytes is not None:
        from axonml_autograd.functions import conv as conv_module
        monkeypatch.setattr(conv_module, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(7)

    def make():
        conv1, conv2 = nn.Conv2d(1, 3, 3, padding=1, seed=1), nn.Conv2d(3, 4, 3, stride=2, groups=1, seed=2)
        conv3 = nn.Conv1d(4, 5, 2, seed=3)
        params = conv1.parameters() + conv2.parameters() + conv3.parameters()

        def step(x):
            for p in params:
                p.zero_grad()
            h = F.max_pool2d(conv1(Variable(x)).relu(), 2, ceil_mode=True)
            h = F.avg_pool2d(conv2(h), 2, 1, 1)
            h = F.adaptive_avg_pool2d(h, (2, 3)).reshape([2, 4, 6])
            loss = (conv3(h) * conv3(h)).sum()
            loss.backward()
            return loss, [p.grad() for p in params]
        return step

    eager, f = make(), capture(make())
    for _ in range(4):
        x = Tensor.from_numpy(rng.standard_normal((2, 1, 9, 11)).astype(np.float32))
        want_loss, want_grads = eager(x)
        got_loss, got_grads = f(x)
        assert got_loss.item() == want_loss.item()
        for a, b in zip(got_grads, want_grads):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert f.replays == 3


def test_conv_layers_are_initialised_like_torch_and_call_the_functional_form():
    conv = nn.Conv2d(6, 8, (3, 5), stride=2, padding=(1, 2), groups=2, seed=0)
    assert [(n, p.shape()) for n, p in conv.named_parameters()] == [("weight", [8, 3, 3, 5]), ("bias", [8])]
    bound = 1.0 / math.sqrt(3 * 3 * 5)   # kaiming_uniform(a=sqrt(5)) and the bias: 1/sqrt(fan_in)
    w, b = conv.weight.numpy(), conv.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound and w.std() > 0.4 * bound
    assert np.abs(b).max() <= bound
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 6, 9, 9)).astype(np.float32)
    want = TF.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), 2, (1, 2), 1, 2).numpy()
    np.testing.assert_allclose(conv(Variable(Tensor.from_numpy(x))).numpy(), want, rtol=1e-5, atol=1e-5)
    c1 = nn.Conv1d(4, 2, 3, bias=False, padding="same", seed=1)
    assert [n for n, _ in c1.named_parameters()] == ["weight"] and c1.weight.shape() == [2, 4, 3]
    assert nn.Conv2d(1, 1, 3, seed=5).weight.numpy().tolist() == nn.Conv2d(1, 1, 3, seed=5).weight.numpy().tolist()


def test_pooling_layers_equal_their_functional_forms():
    rng = np.random.default_rng(9)
    x = Variable(Tensor.from_numpy(rng.standard_normal((2, 3, 9, 9)).astype(np.float32)))
    for layer, fn in [(nn.MaxPool2d(3, 2, 1), lambda v: F.max_pool2d(v, 3, 2, 1)),
                      (nn.AvgPool2d(2, count_include_pad=False), lambda v: F.avg_pool2d(v, 2)),
                      (nn.AdaptiveAvgPool2d(1), lambda v: F.adaptive_avg_pool2d(v, 1))]:
        assert list(layer.parameters()) == []
        np.testing.assert_array_equal(layer(x).numpy(), fn(x).numpy())
    y, idx = nn.MaxPool2d(2, return_indices=True)(x)
    assert y.shape() == [2, 3, 4, 4] and idx.shape() == [2, 3, 4, 4]


def _t(*shape):
    return Variable(Tensor.zeros(list(shape)))


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.conv2d(_t(3, 4), _t(1, 3, 1, 1)), ValueError, ["conv2d", "3-D or 4-D", "[3, 4]"]),
    (lambda: F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3)), ValueError, ["conv2d", "weight", "[2, 3, 3]"]),
    (lambda: F.conv2d(_t(1, 4, 5, 5), _t(2, 3, 3, 3)), ValueError, ["conv2d", "4 channels", "[2, 3, 3, 3]"]),
    (lambda: F.conv2d(_t(1, 4, 5, 5), _t(3, 2, 3, 3), groups=2), ValueError, ["conv2d", "divisible by groups"]),
    (lambda: F.conv2d(_t(1, 4, 5, 5), _t(2, 4, 3, 3), groups=0), ValueError, ["conv2d", "groups"]),
    (lambda: F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3, 3), _t(3)), ValueError, ["conv2d", "bias", "[2]", "[3]"]),
    (lambda: F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3, 3), stride=2, padding="same"), ValueError, ["conv2d", "same"]),
    (lambda: F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3, 3), padding="full"), ValueError, ["conv2d", "padding"]),
    (lambda: F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3, 3), stride=0), ValueError, ["conv2d", "stride"]),
    (lambda: F.conv2d(_t(1, 3, 5, 5), _t(2, 3, 3, 3), stride=(1, 2, 3)), TypeError, ["conv2d", "stride"]),
    (lambda: F.conv2d(_t(1, 3, 2, 2), _t(2, 3, 3, 3)), ValueError, ["conv2d", "larger than the padded input"]),
    (lambda: F.conv2d([1.0], _t(2, 3, 3, 3)), TypeError, ["conv2d", "input"]),
    (lambda: F.conv2d(_t(1, 3, 5, 5), Variable(Tensor.zeros([2, 3, 3, 3], dtype="float64"))), TypeError,
     ["conv2d", "dtypes"]),
    (lambda: F.conv1d(_t(1, 3, 5, 5), _t(2, 3, 3)), ValueError, ["conv1d", "2-D or 3-D", "NCL"]),
    (lambda: F.max_pool2d(_t(1, 1, 5, 5), 2, padding=2), ValueError, ["max_pool2d", "padding", "half"]),
    (lambda: F.max_pool2d(_t(1, 1, 2, 2), 3), ValueError, ["max_pool2d", "too small"]),
    (lambda: F.max_pool2d(_t(5, 5), 2), ValueError, ["max_pool2d", "3-D or 4-D"]),
    (lambda: F.avg_pool2d(_t(1, 1, 5, 5), 0), ValueError, ["avg_pool2d", "kernel_size"]),
    (lambda: F.avg_pool2d(_t(1, 1, 5, 5), 2, divisor_override=0), ValueError, ["avg_pool2d", "divisor_override"]),
    (lambda: F.adaptive_avg_pool2d(_t(1, 1, 5, 5), (2, 0)), ValueError, ["adaptive_avg_pool2d", "output_size"]),
    (lambda: F.adaptive_avg_pool2d(_t(1, 1, 5, 5), "big"), TypeError, ["adaptive_avg_pool2d", "output_size"]),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, ["Conv2d", "divisible by groups"]),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="wrap"), ValueError, ["Conv2d", "padding_mode"]),
    (lambda: nn.Conv1d(3, 4, 3, stride=2, padding="same"), ValueError, ["Conv1d", "same"]),
])
def test_bad_arguments_raise_errors_naming_the_op_and_the_argument(call, error, words):
    with pytest.raises(error) as info:
        call()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_train_digits_cnn_learns_and_resumes_as_a_cnn(tmp_path, capsys):
    pytest.importorskip("sklearn")
    import importlib.util
    import json
    from pathlib import Path

    from axonml_autograd import serialization
    path = Path(__file__).resolve().parent.parent / "scripts" / "train_digits.py"
    spec = importlib.util.spec_from_file_location("train_digits", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "cnn"
    common = ["--model", "cnn", "--channels", "8,16", "--epochs", "5", "--out", str(out), "--no-progress"]
    assert script.main(common + ["--stop-after", "4"]) == 0
    assert "CNN conv3x3 1->8" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())["history"]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["test_accuracy"] > 0.7                      # chance is 10 %
    shapes = {k: v.shape for k, v in serialization.load(out / "checkpoint.npz").items()}
    assert shapes == {"conv1.weight": (8, 1, 3, 3), "conv1.bias": (8,), "conv2.weight": (16, 8, 3, 3),
                      "conv2.bias": (16,), "fc.weight": (10, 64), "fc.bias": (10,)}
    # Resuming without --model rebuilds the CNN from the checkpoint's metadata.
    assert script.main(["--epochs", "5", "--out", str(out), "--quiet", "--resume", str(out / "checkpoint.npz")]) == 0
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())["history"]] == [1, 2, 3, 4, 5]




@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 1, 1, 1), (2, (2, 0), (1, 2), 3)])
def test_gpu_launch_shapes_match_torch(gpu_like, stride, padding, dilation, groups):
    rng = np.random.default_rng(10)
    xs, ws = rng.standard_normal((2, 6, 9, 8)), rng.standard_normal((3, 6 // groups, 3, 2))
    x, w = (Variable(Tensor.from_numpy(a, dtype="float64", device=gpu_like), requires_grad=True) for a in (xs, ws))
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (xs, ws))
    y = F.max_pool2d(F.conv2d(x, w, None, stride, padding, dilation, groups), 2, 1, 1)
    y = F.avg_pool2d(y, 2, 1, 1, count_include_pad=False) + F.adaptive_avg_pool2d(y, (2, 3)).sum()
    ty = TF.max_pool2d(TF.conv2d(tx, tw, None, stride, padding, dilation, groups), 2, 1, 1)
    ty = TF.avg_pool2d(ty, 2, 1, 1, count_include_pad=False) + TF.adaptive_avg_pool2d(ty, (2, 3)).sum()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    r = rng.standard_normal(tuple(ty.shape))
    (y * Variable(Tensor.from_numpy(r, dtype="float64", device=gpu_like))).sum().backward()
    (ty * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(x.grad().numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(w.grad().numpy(), tw.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_a_frozen_weight_still_gives_the_input_gradient():
    rng = np.random.default_rng(11)
    xs, ws = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, 3, 3))
    x, w = _var(xs), _var(ws, grad=False)
    F.conv2d(x, w, stride=2, padding=1).sum().backward()
    tx = torch.tensor(xs, requires_grad=True)
    TF.conv2d(tx, torch.tensor(ws), stride=2, padding=1).sum().backward()
    np.testing.assert_allclose(x.grad().numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    assert w.grad is None


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
@pytest.mark.parametrize("chunk_bytes", [1, 3000])
@pytest.mark.parametrize("case", [CONV2D_CASES[2], CONV2D_CASES[4], CONV2D_CASES[6]], ids=["groups", "same", "1x1s2"])
def test_conv2d_in_chunks_of_the_batch_matches_torch(monkeypatch, chunk_bytes, case):
    from axonml_autograd.functions import conv as conv_module
    monkeypatch.setattr(conv_module, "CHUNK_BYTES", chunk_bytes)   # one image, or a few, per chunk
    xs, ws, stride, padding, dilation, groups, bias = case
    xs = (5,) + xs[1:]
    rng = np.random.default_rng(12)
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws)] + ([rng.standard_normal(ws[0])] if bias else [])
    _compare(lambda x, w, b=None: F.conv2d(x, w, b, stride, padding, dilation, groups),
             lambda x, w, b=None: TF.conv2d(x, w, b, stride, padding, dilation, groups), arrays, rng)


def test_a_frozen_input_or_weight_in_chunks(monkeypatch):
    from axonml_autograd.functions import conv as conv_module
    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 1)
    rng = np.random.default_rng(13)
    xs, ws = rng.standard_normal((3, 2, 5, 5)), rng.standard_normal((4, 2, 3, 3))
    for x_grad in (True, False):
        x, w = _var(xs, grad=x_grad), _var(ws, grad=not x_grad)
        tx, tw = torch.tensor(xs, requires_grad=x_grad), torch.tensor(ws, requires_grad=not x_grad)
        F.conv2d(x, w, padding=1).sum().backward()
        TF.conv2d(tx, tw, padding=1).sum().backward()
        ours, theirs = (x, tx) if x_grad else (w, tw)
        np.testing.assert_allclose(ours.grad().numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("op", ["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"])
def test_permuted_inputs_and_permuted_gradients_are_read_as_their_values(op):
    # A permute is a strided view of its buffer: the input arrives as one in forward, and the gradient of a
    # permuted result arrives as one in backward; conv's chunks read storage directly, so both are laid out
    # first (conv2d's gradients came out wrong before).
    rng = np.random.default_rng(14)
    xs, ws = rng.standard_normal((2, 5, 3, 4)), rng.standard_normal((4, 3, 2, 2))
    ours = {"conv2d": lambda x, w: F.conv2d(x, w, padding=1), "max_pool2d": lambda x, w: F.max_pool2d(x, 2, 1),
            "avg_pool2d": lambda x, w: F.avg_pool2d(x, 2, 1), "adaptive_avg_pool2d":
            lambda x, w: F.adaptive_avg_pool2d(x, (2, 3))}[op]
    theirs = {"conv2d": lambda x, w: TF.conv2d(x, w, padding=1), "max_pool2d": lambda x, w: TF.max_pool2d(x, 2, 1),
              "avg_pool2d": lambda x, w: TF.avg_pool2d(x, 2, 1), "adaptive_avg_pool2d":
              lambda x, w: TF.adaptive_avg_pool2d(x, (2, 3))}[op]
    arrays = [xs, ws] if op == "conv2d" else [xs]
    _compare(lambda x, w=None: ours(x.permute([0, 2, 1, 3]), w).permute([0, 2, 3, 1]) * 1.0,
             lambda x, w=None: theirs(x.permute(0, 2, 1, 3), w).permute(0, 2, 3, 1), arrays, rng)
