"""Resampling against torch in float64 (values and gradients) at odd shapes: interpolate (nearest, linear,
bilinear; align_corners both ways; size=, scale factors 2 and 1.5, recompute_scale_factor), pad's reflect,
replicate and circular modes (negative pads too), adaptive_max_pool2d, 1-D pools, pixel (un)shuffle,
unfold/fold; central-difference gradchecks, deterministic backward, capture/replay, layers, errors."""

import math

import numpy as np
import pytest

import axonml_autograd.nn.functional as F
from axonml_autograd import Tensor, Variable, capture, check_gradients
from axonml_autograd import nn


def _var(a, grad=True):
    return Variable(Tensor.from_numpy(np.asarray(a, np.float64), dtype="float64"), requires_grad=grad)


def _compare(ours_fn, torch_fn, shape, rng, atol=1e-12):
    torch = pytest.importorskip("torch")
    a = rng.standard_normal(shape)
    v, t = _var(a), torch.tensor(a, requires_grad=True)
    out, want = ours_fn(v), torch_fn(t)
    assert out.shape() == list(want.shape)
    np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=1e-12, atol=atol)
    r = rng.standard_normal(tuple(want.shape))
    (out * _var(r, grad=False)).sum().backward()
    (want * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(v.grad().numpy(), t.grad.numpy(), rtol=1e-12, atol=atol)
    return out


INTERP_CASES = [
    ((1, 3, 5, 7), dict(scale_factor=2, mode="nearest")),
    ((2, 4, 17, 9), dict(scale_factor=1.5, mode="nearest")),
    ((2, 4, 17, 9), dict(size=(5, 4), mode="nearest")),                     # downsampling
    ((1, 3, 5, 7), dict(scale_factor=2, mode="bilinear", align_corners=False)),
    ((1, 3, 5, 7), dict(scale_factor=1.5, mode="bilinear", align_corners=True)),
    ((2, 4, 17, 9), dict(size=(6, 20), mode="bilinear", align_corners=False)),
    ((2, 4, 17, 9), dict(size=(6, 20), mode="bilinear", align_corners=True)),
    ((2, 4, 17, 9), dict(scale_factor=(0.7, 2.3), mode="bilinear")),
    ((2, 4, 17, 9), dict(scale_factor=(0.7, 2.3), mode="bilinear", recompute_scale_factor=True)),
    ((1, 1, 1, 1), dict(size=(3, 1), mode="bilinear", align_corners=True)),
    ((2, 3, 7), dict(scale_factor=1.5, mode="linear")),
    ((2, 3, 7), dict(size=17, mode="linear", align_corners=True)),
    ((2, 3, 17), dict(size=5, mode="nearest")),
    ((2, 3, 7), dict(scale_factor=1.5, mode="nearest-exact")),
    ((2, 4, 17, 9), dict(scale_factor=(2.1, 0.6), mode="nearest-exact")),
    ((2, 3, 9), dict(size=4, mode="area")),
    ((2, 4, 17, 9), dict(scale_factor=0.5, mode="area")),
    ((1, 2, 3, 5), dict(scale_factor=(1.0, 1.1), mode="bilinear")),         # linear keeps a size unchanged
]


@pytest.mark.parametrize("shape, kw", INTERP_CASES, ids=[str(i) for i in range(len(INTERP_CASES))])
def test_interpolate_matches_torch_forward_and_gradient_in_float64(shape, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(sum(shape))
    _compare(lambda x: F.interpolate(x, **kw), lambda t: torch.nn.functional.interpolate(t, **kw), shape, rng)


@pytest.mark.parametrize("sf", [2.1, 1.1])
def test_nearest_at_a_doubled_or_kept_size_matches_torchs_forward_and_has_its_adjoint_as_gradient(sf):
    """torch's forward maps output o to floor(o / scale_factor) here, but its backward takes o // 2 (doubled
    size) or o (kept size): not the adjoint of its forward. Ours is: central differences agree."""
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(9).standard_normal((2, 3, 5))
    got = F.interpolate(_var(a), scale_factor=sf)
    want = torch.nn.functional.interpolate(torch.tensor(a), scale_factor=sf).numpy()
    np.testing.assert_array_equal(got.numpy(), want)
    x = _var(a)
    r = _var(np.random.default_rng(10).standard_normal(want.shape), grad=False)
    assert check_gradients(lambda v: (F.interpolate(v, scale_factor=sf) * r).sum(), [x], eps=1e-6, atol=1e-7)


def test_float32_interpolation_agrees_with_torch_to_rounding():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(1).standard_normal((2, 3, 9, 13)).astype(np.float32)
    for kw in (dict(scale_factor=1.5, mode="bilinear"), dict(size=(4, 20), mode="bilinear", align_corners=True),
               dict(scale_factor=1.7, mode="nearest")):
        got = F.interpolate(Tensor.from_numpy(a), **kw).numpy()
        np.testing.assert_allclose(got, torch.nn.functional.interpolate(torch.tensor(a), **kw).numpy(), atol=1e-5)


PAD_CASES = [((1, 3, 5, 7), (2, 3, 1, 4)), ((2, 5, 7), (3, -1)), ((2, 5, 7), (-2, 4)), ((3, 6), (5, 0)),
             ((2, 2, 3, 4, 5), (1, 2, 2, 1, 2, 0)), ((1, 2, 4, 1), (0, 0, 3, 2))]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape, pads", PAD_CASES, ids=[str(i) for i in range(len(PAD_CASES))])
def test_pad_modes_match_torch_forward_and_gradient(mode, shape, pads):
    torch = pytest.importorskip("torch")
    sizes = [shape[-1 - k] for k in range(len(pads) // 2) for _ in range(2)]
    if mode == "reflect" and any(p >= n for p, n in zip(pads, sizes)):
        pytest.skip("reflect pads must be smaller than their axis")
    rng = np.random.default_rng(len(shape) + sum(pads))
    _compare(lambda x: F.pad(x, pads, mode=mode), lambda t: torch.nn.functional.pad(t, pads, mode=mode), shape, rng)


def test_pads_that_crop_a_dimension_away_give_an_empty_result_as_torch():
    torch = pytest.importorskip("torch")
    for mode, shape, pads in (("circular", (2, 6), (-3, -3)), ("circular", (3, 6, 3), (-3, 0)),
                              ("reflect", (1, 2, 4, 3), (0, 0, -2, -2)), ("replicate", (1, 2, 2, 4, 3), (-2, -1) + (0,) * 4)):
        x = _var(np.ones(shape))
        y = F.pad(x, pads, mode=mode)
        assert y.shape() == list(torch.nn.functional.pad(torch.ones(shape), pads, mode=mode).shape)
        y.sum().backward()
        np.testing.assert_array_equal(x.grad().numpy(), np.zeros(shape))


def test_adaptive_max_pool2d_and_1d_pools_match_torch_with_indices():
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    rng = np.random.default_rng(2)
    for shape, size in (((2, 3, 7, 9), (3, 4)), ((1, 2, 5, 5), (5, 2)), ((3, 4, 6), 4), ((1, 1, 17, 3), (None, 2))):
        _compare(lambda x: F.adaptive_max_pool2d(x, size), lambda t: TF.adaptive_max_pool2d(t, size), shape, rng)
        a = rng.standard_normal(shape)
        _, got = F.adaptive_max_pool2d(Tensor.from_numpy(a, dtype="float64"), size, return_indices=True)
        np.testing.assert_array_equal(got.numpy(), TF.adaptive_max_pool2d(torch.tensor(a), size, True)[1].numpy())
    _compare(lambda x: F.max_pool1d(x, 3, 2, 1, ceil_mode=True), lambda t: TF.max_pool1d(t, 3, 2, 1, ceil_mode=True),
             (2, 3, 17), rng)
    _compare(lambda x: F.max_pool1d(x, 2, dilation=2), lambda t: TF.max_pool1d(t, 2, dilation=2), (3, 9), rng)
    a = rng.standard_normal((2, 3, 17))
    _, idx = F.max_pool1d(Tensor.from_numpy(a, dtype="float64"), 3, 2, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), TF.max_pool1d(torch.tensor(a), 3, 2, return_indices=True)[1].numpy())
    _compare(lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=False),
             lambda t: TF.avg_pool1d(t, 3, 2, 1, count_include_pad=False), (2, 3, 17), rng)
    _compare(lambda x: F.avg_pool1d(x, 4), lambda t: TF.avg_pool1d(t, 4), (3, 9), rng)


def test_pixel_shuffle_unfold_and_fold_match_torch():
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    rng = np.random.default_rng(3)
    _compare(lambda x: F.pixel_shuffle(x, 2), lambda t: TF.pixel_shuffle(t, 2), (2, 8, 3, 5), rng)
    _compare(lambda x: F.pixel_shuffle(x, 3), lambda t: TF.pixel_shuffle(t, 3), (9, 1, 2), rng)
    _compare(lambda x: F.pixel_unshuffle(x, 2), lambda t: TF.pixel_unshuffle(t, 2), (2, 3, 4, 6), rng)
    kw = dict(dilation=2, padding=1, stride=(2, 1))
    _compare(lambda x: F.unfold(x, (2, 3), **kw), lambda t: TF.unfold(t, (2, 3), **kw), (2, 3, 9, 7), rng)
    _compare(lambda x: F.unfold(x, 2), lambda t: TF.unfold(t, 2), (3, 5, 4), rng)
    _compare(lambda x: F.fold(x, (5, 6), (2, 3), padding=1, stride=2),
             lambda t: TF.fold(t, (5, 6), (2, 3), padding=1, stride=2), (2, 6, 9), rng)
    _compare(lambda x: F.fold(x, (4, 5), 2, dilation=(1, 2)), lambda t: TF.fold(t, (4, 5), 2, dilation=(1, 2)),
             (8, 9), rng)


def _scalarised(fn, shape, rng):
    r = _var(rng.standard_normal(shape), grad=False)
    return lambda v: (fn(v) * r).sum()


@pytest.mark.parametrize("name, fn, shape", [
    ("nearest", lambda x: F.interpolate(x, scale_factor=1.5, mode="nearest"), (1, 2, 3, 4)),
    ("bilinear", lambda x: F.interpolate(x, size=(5, 3), mode="bilinear"), (1, 2, 3, 4)),
    ("bilinear_align", lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True), (1, 1, 3, 2)),
    ("linear", lambda x: F.interpolate(x, size=7, mode="linear"), (2, 1, 4)),
    ("nearest-exact", lambda x: F.interpolate(x, size=(2, 7), mode="nearest-exact"), (1, 2, 3, 4)),
    ("reflect", lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect"), (1, 2, 3, 4)),
    ("replicate", lambda x: F.pad(x, (3, -1), mode="replicate"), (2, 2, 4)),
    ("circular", lambda x: F.pad(x, (1, 2, 2, 0), mode="circular"), (1, 2, 3, 4)),
    ("adaptive_max_pool2d", lambda x: F.adaptive_max_pool2d(x, (2, 3)), (1, 2, 5, 4)),
    ("max_pool1d", lambda x: F.max_pool1d(x, 3, 2, 1), (2, 2, 7)),
    ("avg_pool1d", lambda x: F.avg_pool1d(x, 3, 2, 1), (2, 2, 7)),
    ("pixel_shuffle", lambda x: F.pixel_shuffle(x, 2), (1, 4, 2, 3)),
    ("unfold", lambda x: F.unfold(x, 2, padding=1, stride=2), (1, 2, 3, 4)),
    ("fold", lambda x: F.fold(x, (3, 4), 2), (1, 8, 6)),
])
def test_gradients_match_central_differences(name, fn, shape):
    rng = np.random.default_rng(4)
    # Distinct values at least 4/n apart: the max pools keep their choice under the finite difference.
    a = (rng.permutation(math.prod(shape)).reshape(shape) / math.prod(shape) - 0.5) * 4
    x = _var(a)
    out_shape = tuple(fn(x).shape())
    assert check_gradients(_scalarised(fn, out_shape, rng), [x], eps=1e-6, atol=1e-7, rtol=1e-5)


def test_backward_is_the_same_bit_for_bit_every_run():
    rng = np.random.default_rng(5)
    x = Variable(Tensor.from_numpy(rng.standard_normal((2, 3, 17, 9)).astype(np.float32)), requires_grad=True)
    grads = []
    for _ in range(2):
        x.zero_grad()
        y = F.interpolate(F.pad(x, (2, 2, 1, 1), mode="reflect"), scale_factor=1.5, mode="bilinear")
        (y * y).sum().backward()
        grads.append(x.grad().numpy())
    np.testing.assert_array_equal(grads[0], grads[1])


def test_a_captured_step_replays_bit_for_bit():
    rng = np.random.default_rng(7)

    def make():
        conv = nn.Conv2d(2, 8, 3, seed=1)
        params = conv.parameters()

        def step(x):
            for p in params:
                p.zero_grad()
            h = conv(F.pad(Variable(x), (1, 1, 1, 1), mode="replicate"))
            h = F.pixel_shuffle(h, 2)
            h = F.interpolate(h, scale_factor=1.5, mode="bilinear") + F.interpolate(h, size=(15, 18))
            h = F.adaptive_max_pool2d(F.pad(h, (1, 0, 2, 1), mode="circular"), 3)
            loss = (F.fold(F.unfold(h, 2), (3, 3), 2) ** 2).sum() + F.max_pool1d(h.reshape([2, 2, 9]), 2).sum()
            loss.backward()
            return loss, [p.grad() for p in params]
        return step

    eager, f = make(), capture(make())
    for _ in range(3):
        x = Tensor.from_numpy(rng.standard_normal((2, 2, 5, 6)).astype(np.float32))
        want_loss, want_grads = eager(x)
        got_loss, got_grads = f(x)
        assert got_loss.item() == want_loss.item()
        for a, b in zip(got_grads, want_grads):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert f.replays == 2


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv_layers_take_torchs_padding_modes(mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    for ours, theirs, shape in (
            (nn.Conv2d(4, 6, (3, 2), padding=(1, 2), groups=2, padding_mode=mode, seed=0, dtype="float64"),
             torch.nn.Conv2d(4, 6, (3, 2), padding=(1, 2), groups=2, padding_mode=mode, dtype=torch.float64),
             (2, 4, 5, 7)),
            (nn.Conv2d(2, 3, 4, padding="same", dilation=(1, 2), padding_mode=mode, seed=1, dtype="float64"),
             torch.nn.Conv2d(2, 3, 4, padding="same", dilation=(1, 2), padding_mode=mode, dtype=torch.float64),
             (1, 2, 9, 9)),
            (nn.Conv1d(3, 2, 3, stride=2, padding=2, padding_mode=mode, seed=2, dtype="float64"),
             torch.nn.Conv1d(3, 2, 3, stride=2, padding=2, padding_mode=mode, dtype=torch.float64), (3, 6))):
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(ours.weight.numpy()))
            theirs.bias.copy_(torch.tensor(ours.bias.numpy()))
        _compare(ours, theirs, shape, rng)
    assert "padding_mode='%s'" % mode in repr(nn.Conv1d(1, 1, 3, padding=1, padding_mode=mode))


def test_layers_equal_their_functional_forms():
    rng = np.random.default_rng(8)
    x = Tensor.from_numpy(rng.standard_normal((2, 4, 6, 5)).astype(np.float32))
    pairs = [
        (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
         F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)),
        (nn.UpsamplingBilinear2d(size=(7, 3)), F.interpolate(x, size=(7, 3), mode="bilinear", align_corners=True)),
        (nn.UpsamplingNearest2d(scale_factor=3), F.interpolate(x, scale_factor=3)),
        (nn.AdaptiveMaxPool2d((2, 3)), F.adaptive_max_pool2d(x, (2, 3))),
        (nn.PixelShuffle(2), F.pixel_shuffle(x, 2)),
        (nn.PixelUnshuffle(2), F.pixel_unshuffle(F.pad(x, (0, 1, 0, 0), mode="replicate"), 2)),
        (nn.Unfold(3, padding=1), F.unfold(x, 3, padding=1)),
        (nn.ReflectionPad2d(2), F.pad(x, (2, 2, 2, 2), mode="reflect")),
        (nn.CircularPad2d((1, 0, 0, 2)), F.pad(x, (1, 0, 0, 2), mode="circular")),
    ]
    for layer, want in pairs:
        arg = F.pad(x, (0, 1, 0, 0), mode="replicate") if isinstance(layer, nn.PixelUnshuffle) else x
        np.testing.assert_array_equal(layer(arg).numpy(), want.numpy())
    x1 = Tensor.from_numpy(rng.standard_normal((2, 4, 9)).astype(np.float32))
    np.testing.assert_array_equal(nn.MaxPool1d(3, 2)(x1).numpy(), F.max_pool1d(x1, 3, 2).numpy())
    np.testing.assert_array_equal(nn.AvgPool1d(2)(x1).numpy(), F.avg_pool1d(x1, 2).numpy())
    np.testing.assert_array_equal(nn.ReplicationPad1d((1, 3))(x1).numpy(), F.pad(x1, (1, 3), mode="replicate").numpy())
    np.testing.assert_array_equal(nn.ReflectionPad1d(2)(x1).numpy(), F.pad(x1, (2, 2), mode="reflect").numpy())
    np.testing.assert_array_equal(nn.CircularPad1d(1)(x1).numpy(), F.pad(x1, (1, 1), mode="circular").numpy())
    np.testing.assert_array_equal(nn.ReplicationPad2d(1)(x).numpy(), F.pad(x, (1,) * 4, mode="replicate").numpy())
    cols = F.unfold(x, 2)
    np.testing.assert_array_equal(nn.Fold((6, 5), 2)(cols).numpy(), F.fold(cols, (6, 5), 2).numpy())


def _t(*shape):
    return Variable(Tensor.zeros(list(shape)))


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.interpolate(_t(1, 1, 3, 3), size=4, scale_factor=2), ValueError, "only one of size or scale_factor"),
    (lambda: F.interpolate(_t(1, 1, 3, 3)), ValueError, "either size or scale_factor"),
    (lambda: F.interpolate(_t(1, 1, 3), size=4, mode="bilinear"), ValueError, "got 3D input, but bilinear mode needs 4D"),
    (lambda: F.interpolate(_t(1, 1, 3, 3), size=4, mode="linear"), ValueError, "got 4D input, but linear mode needs 3D"),
    (lambda: F.interpolate(_t(1, 1, 3, 3), size=4, align_corners=True), ValueError, "align_corners option can only"),
    (lambda: F.interpolate(_t(1, 1, 3, 3), size=4, mode="bicubic"), ValueError, "mode 'bicubic' is not supported"),
    (lambda: F.interpolate(_t(1, 1, 3, 3), size=4, mode="area", align_corners=False), ValueError,
     "align_corners option can only"),
    (lambda: F.interpolate(_t(1, 1, 3, 3), size=(4, 4, 4)), ValueError, "size must be an int or a tuple of 2"),
    (lambda: F.interpolate(_t(1, 1, 3, 3), scale_factor=0.1), ValueError, "is empty"),
    (lambda: F.pad(_t(1, 3, 5), (5, 0), mode="reflect"), ValueError,
     r"padding size should be less than the corresponding input dimension.*\(5, 0\) at dimension 2"),
    (lambda: F.pad(_t(1, 3, 5), (6, 0), mode="circular"), ValueError, "wrap around more than once"),
    (lambda: F.pad(_t(1, 3, 4), (-2, -2), mode="reflect"), ValueError, "too small at dimension 2.*0 elements"),
    (lambda: F.pad(_t(1, 3, 3), (3, -2), mode="circular"), ValueError, "wrap around more than once"),
    (lambda: F.pad(_t(1, 2, 3, 5), (1, 1), mode="replicate"), NotImplementedError,
     "padding size 2 is not supported for 4D input"),
    (lambda: F.pad(_t(5), (1, 1), mode="reflect"), NotImplementedError, "not supported for 1D input"),
    (lambda: F.pad(_t(1, 3, 5), (1, 1), mode="reflect", value=1.0), ValueError, "doesn't take in value"),
    (lambda: F.pad(_t(1, 3, 5), (1, 1), mode="wrap"), ValueError, "mode 'wrap' is not supported"),
    (lambda: F.adaptive_max_pool2d(_t(1, 3, 5), 0), ValueError, "output_size must be >= 1"),
    (lambda: F.max_pool1d(_t(1, 1, 2, 5), 2), ValueError, "max_pool1d: expected a 2-D or 3-D input"),
    (lambda: F.pixel_shuffle(_t(1, 3, 2, 2), 2), ValueError, r"channels \(3.*divisible by upscale_factor squared"),
    (lambda: F.pixel_unshuffle(_t(1, 3, 3, 2), 2), ValueError, "must be divisible by downscale_factor"),
    (lambda: F.unfold(_t(1, 1, 2, 2), 3), ValueError, "too small for kernel_size"),
    (lambda: F.fold(_t(1, 4, 5), (3, 3), 2), ValueError, r"expected 4 blocks \(L\)"),
    (lambda: F.fold(_t(1, 5, 4), (3, 3), 2), ValueError, "must be divisible by the kernel's size 4"),
])
def test_bad_arguments_raise_errors_naming_the_op_and_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


@pytest.mark.parametrize("op", ["interpolate", "pad", "adaptive_max_pool2d", "unfold", "max_pool1d"])
def test_permuted_inputs_and_permuted_gradients_are_read_as_their_values(op):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    ours = {"interpolate": lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"),
            "pad": lambda x: F.pad(x, (1, 2, 2, 1), mode="reflect"),
            "adaptive_max_pool2d": lambda x: F.adaptive_max_pool2d(x, (2, 3)),
            "unfold": lambda x: F.unfold(x, 2).reshape([2, 3, 4, 12]),
            "max_pool1d": lambda x: F.max_pool1d(x.reshape([2, 15, 4]), 2).reshape([2, 3, 5, 2])}[op]
    theirs = {"interpolate": lambda x: TF.interpolate(x, scale_factor=1.5, mode="bilinear"),
              "pad": lambda x: TF.pad(x, (1, 2, 2, 1), mode="reflect"),
              "adaptive_max_pool2d": lambda x: TF.adaptive_max_pool2d(x, (2, 3)),
              "unfold": lambda x: TF.unfold(x, 2).reshape(2, 3, 4, 12),
              "max_pool1d": lambda x: TF.max_pool1d(x.reshape(2, 15, 4), 2).reshape(2, 3, 5, 2)}[op]
    _compare(lambda x: ours(x.permute([0, 2, 1, 3])).permute([0, 2, 3, 1]) * 1.0,
             lambda t: theirs(t.permute(0, 2, 1, 3)).permute(0, 2, 3, 1), (2, 5, 3, 4), np.random.default_rng(11))
