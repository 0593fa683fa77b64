"""layer_norm, batch_norm and group_norm (fused kernels) against torch in float64, by gradcheck, on both
launch strategies, under capture; and the LayerNorm / BatchNorm / GroupNorm modules."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, check_gradients
import axonml_autograd.nn as nn
import axonml_autograd.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _v(a, grad=True, device=None):
    return Variable(Tensor.from_numpy(np.asarray(a), device=device), requires_grad=grad)




LN_CASES = [((1, 1), (1,)), ((5, 17), (17,)), ((3, 4, 65), (4, 65)), ((65, 3), (3,)), ((2, 9, 8), (8,)),
            ((4, 7), (4, 7))]


@pytest.mark.parametrize("shape,ns", LN_CASES)
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
@pytest.mark.parametrize("where", ["cpu", "gpu_like"])
def test_layer_norm_forward_and_gradients_match_torch_float64(fp64, shape, ns, affine, where, request):
    dev = request.getfixturevalue("gpu_like") if where == "gpu_like" else None
    rng = np.random.default_rng(len(shape) + sum(shape))
    xh, gh = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape)
    wh, bh = rng.standard_normal(ns), rng.standard_normal(ns)
    x = _v(xh, device=dev)
    w = _v(wh, device=dev) if affine != "none" else None
    b = _v(bh, device=dev) if affine == "both" else None
    y = F.layer_norm(x, ns, w, b, eps=1e-5)
    y.backward(Tensor.from_numpy(gh, device=dev))
    tx = torch.tensor(xh, requires_grad=True)
    tw = torch.tensor(wh, requires_grad=True) if w is not None else None
    tb = torch.tensor(bh, requires_grad=True) if b is not None else None
    ty = TF.layer_norm(tx, ns, tw, tb, eps=1e-5)
    ty.backward(torch.tensor(gh))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x.grad().numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-11)
    if w is not None:
        np.testing.assert_allclose(w.grad().numpy(), tw.grad.numpy(), rtol=1e-10, atol=1e-11)
    if b is not None:
        np.testing.assert_allclose(b.grad().numpy(), tb.grad.numpy(), rtol=1e-10, atol=1e-11)


def test_layer_norm_backward_column_sums_span_many_row_blocks(fp64):
    # 300 rows: several row blocks whose partial column sums are reduced afterwards.
    rng = np.random.default_rng(3)
    xh, gh, wh = rng.standard_normal((300, 13)), rng.standard_normal((300, 13)), rng.standard_normal(13)
    x, w, b = _v(xh), _v(wh), _v(np.zeros(13))
    F.layer_norm(x, 13, w, b).backward(Tensor.from_numpy(gh))
    xhat = (xh - xh.mean(1, keepdims=True)) / np.sqrt(xh.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(w.grad().numpy(), (gh * xhat).sum(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b.grad().numpy(), gh.sum(0), rtol=1e-12, atol=1e-10)


def test_layer_norm_float32_matches_numpy():
    rng = np.random.default_rng(4)
    xh = rng.standard_normal((33, 768)).astype(np.float32) * 5 + 3
    y = F.layer_norm(Variable(Tensor.from_numpy(xh)), (768,)).numpy()
    x64 = xh.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_layer_norm_gradcheck(fp64):
    rng = np.random.default_rng(5)
    x, w, b = _v(rng.standard_normal((3, 5))), _v(rng.standard_normal(5)), _v(rng.standard_normal(5))
    assert check_gradients(lambda a, c, d: F.layer_norm(a, (5,), c, d), [x, w, b])


BN_SHAPES = [(4, 3), (2, 3, 5), (3, 2, 4, 5), (17, 1), (1, 3, 65)]


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("where", ["cpu", "gpu_like"])
def test_batch_norm_training_matches_torch_and_updates_running_stats(fp64, shape, where, request):
    dev = request.getfixturevalue("gpu_like") if where == "gpu_like" else None
    C = shape[1]
    rng = np.random.default_rng(sum(shape))
    xh, gh = rng.standard_normal(shape) * 2 + 0.5, rng.standard_normal(shape)
    wh, bh = rng.standard_normal(C), rng.standard_normal(C)
    rm0, rv0 = rng.standard_normal(C), rng.random(C) + 0.5
    x, w, b = _v(xh, device=dev), _v(wh, device=dev), _v(bh, device=dev)
    rm, rv = Tensor.from_numpy(rm0.copy(), device=dev), Tensor.from_numpy(rv0.copy(), device=dev)
    y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.3, eps=1e-4)
    y.backward(Tensor.from_numpy(gh, device=dev))
    trm, trv = torch.tensor(rm0), torch.tensor(rv0)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (xh, wh, bh))
    ty = TF.batch_norm(tx, trm, trv, tw, tb, training=True, momentum=0.3, eps=1e-4)
    ty.backward(torch.tensor(gh))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-11, atol=1e-11)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(ours.grad().numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-12, atol=1e-12)   # unbiased, as torch


@pytest.mark.parametrize("where", ["cpu", "gpu_like"])
def test_batch_norm_eval_uses_running_stats_and_matches_torch(fp64, where, request):
    dev = request.getfixturevalue("gpu_like") if where == "gpu_like" else None
    rng = np.random.default_rng(8)
    xh, gh = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    wh, bh, rm0, rv0 = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4), rng.random(4) + 0.5
    x, w, b = _v(xh, device=dev), _v(wh, device=dev), _v(bh, device=dev)
    rm, rv = Tensor.from_numpy(rm0, device=dev), Tensor.from_numpy(rv0, device=dev)
    y = F.batch_norm(x, rm, rv, w, b, training=False)
    y.backward(Tensor.from_numpy(gh, device=dev))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (xh, wh, bh))
    ty = TF.batch_norm(tx, torch.tensor(rm0), torch.tensor(rv0), tw, tb, training=False)
    ty.backward(torch.tensor(gh))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(ours.grad().numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-10)
    assert rm.numpy().tolist() == rm0.tolist()   # eval changes nothing


def test_batch_norm_gradcheck_training_and_eval(fp64):
    rng = np.random.default_rng(9)
    x, w, b = _v(rng.standard_normal((4, 3, 2))), _v(rng.standard_normal(3)), _v(rng.standard_normal(3))
    assert check_gradients(lambda a, c, d: F.batch_norm(a, None, None, c, d, training=True), [x, w, b])
    rm, rv = Tensor.from_numpy(rng.standard_normal(3)), Tensor.from_numpy(rng.random(3) + 0.5)
    assert check_gradients(lambda a, c, d: F.batch_norm(a, rm, rv, c, d, training=False), [x, w, b])


@pytest.mark.parametrize("shape,groups", [((2, 6, 5), 3), ((3, 4, 3, 3), 2), ((1, 3, 7), 1), ((2, 4), 4)])
def test_group_norm_matches_torch_float64(fp64, shape, groups):
    C = shape[1]
    rng = np.random.default_rng(C + groups)
    xh, gh, wh, bh = rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(C), rng.standard_normal(C)
    x, w, b = _v(xh), _v(wh), _v(bh)
    y = F.group_norm(x, groups, w, b)
    y.backward(Tensor.from_numpy(gh))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (xh, wh, bh))
    ty = TF.group_norm(tx, groups, tw, tb)
    ty.backward(torch.tensor(gh))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-11, atol=1e-11)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(ours.grad().numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_group_norm_gradcheck(fp64):
    rng = np.random.default_rng(10)
    x, w, b = _v(rng.standard_normal((2, 4, 3))), _v(rng.standard_normal(4)), _v(rng.standard_normal(4))
    assert check_gradients(lambda a, c, d: F.group_norm(a, 2, c, d), [x, w, b])


def test_batchnorm_module_tracks_stats_like_torch_over_steps_then_evaluates(fp64):
    rng = np.random.default_rng(11)
    ours = nn.BatchNorm2d(3, momentum=0.2, dtype="float64")
    theirs = torch.nn.BatchNorm2d(3, momentum=0.2, dtype=torch.float64)
    for _ in range(3):
        xh = rng.standard_normal((2, 3, 4, 4))
        ours(_v(xh, grad=False))
        theirs(torch.tensor(xh))
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-12)
    assert ours.num_batches_tracked.to_vec() == [3]
    ours.eval()
    theirs.eval()
    xh = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(ours(_v(xh, grad=False)).numpy(), theirs(torch.tensor(xh)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


def test_batchnorm_cumulative_average_with_momentum_none(fp64):
    rng = np.random.default_rng(12)
    ours = nn.BatchNorm1d(2, momentum=None, dtype="float64")
    theirs = torch.nn.BatchNorm1d(2, momentum=None, dtype=torch.float64)
    for _ in range(4):
        xh = rng.standard_normal((5, 2))
        ours(_v(xh, grad=False))
        theirs(torch.tensor(xh))
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-12)


def test_batchnorm_without_running_stats_uses_batch_stats_in_eval(fp64):
    m = nn.BatchNorm1d(2, track_running_stats=False, affine=False, dtype="float64").eval()
    y = m(_v([[1.0, 2.0], [3.0, 6.0]], grad=False)).numpy()
    np.testing.assert_allclose(y, [[-1.0, -1.0], [1.0, 1.0]], atol=1e-4)
    assert m.state_dict() == {}


def test_norm_modules_initialise_as_torch_and_check_shapes():
    ln = nn.LayerNorm([4, 3])
    assert ln.weight.to_vec() == [1.0] * 12 and ln.bias.to_vec() == [0.0] * 12
    assert nn.LayerNorm(3, bias=False).bias is None and nn.LayerNorm(3, elementwise_affine=False).weight is None
    bn = nn.BatchNorm2d(5)
    assert bn.running_var.to_vec() == [1.0] * 5 and bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()
    with pytest.raises(ValueError, match=r"LayerNorm: input of shape \[2, 5\] does not end in normalized_shape \[4, 3\]"):
        ln(_v(np.zeros((2, 5)), grad=False))
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4-D input with 5 channels.*\[2, 5, 3\]"):
        bn(_v(np.zeros((2, 5, 3), np.float32), grad=False))
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected 2-D or 3-D input with 4 channels.*\[3, 5\]"):
        nn.BatchNorm1d(4)(_v(np.zeros((3, 5), np.float32), grad=False))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(4)(_v(np.zeros((1, 4), np.float32), grad=False))
    with pytest.raises(ValueError, match="num_channels 6 must be divisible by num_groups 4"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"GroupNorm: expected input \[N, 6, \.\.\.\], got input of shape \[2, 4\]"):
        nn.GroupNorm(3, 6)(_v(np.zeros((2, 4), np.float32), grad=False))


def test_layer_norm_and_batch_norm_replay_under_capture_bit_for_bit():
    rng = np.random.default_rng(13)
    ln, bn = nn.LayerNorm(7), nn.BatchNorm1d(7)
    ln_e, bn_e = nn.LayerNorm(7), nn.BatchNorm1d(7)
    params = ln.parameters() + bn.parameters()

    def step(x):
        for p in params:
            p.zero_grad()
        loss = bn(ln(Variable(x))).pow(2.0).sum()
        loss.backward()
        return loss

    def eager(x):
        for p in ln_e.parameters() + bn_e.parameters():
            p.zero_grad()
        loss = bn_e(ln_e(Variable(x))).pow(2.0).sum()
        loss.backward()
        return loss

    captured = capture(step)
    for k in range(4):
        x = Tensor.from_numpy((rng.standard_normal((5, 7)) * (k + 1)).astype(np.float32))
        assert captured(x).numpy().tolist() == eager(x).numpy().tolist()
        assert ln.weight.grad().numpy().tolist() == ln_e.weight.grad().numpy().tolist()
        assert bn.bias.grad().numpy().tolist() == bn_e.bias.grad().numpy().tolist()
    assert captured.replays >= 2
    # running statistics were updated on the device at every replay
    assert bn.running_mean.numpy().tolist() == bn_e.running_mean.numpy().tolist()
    assert bn.num_batches_tracked.to_vec() == [4]
