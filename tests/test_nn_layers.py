"""Layers and their functional forms: Linear (crate layout) and F.linear (torch layout), Embedding with
padding_idx, Dropout (fresh masks, eval, capture), Flatten, Identity, activation modules, one_hot, pad."""

import math

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, check_gradients, manual_seed
import axonml_autograd.nn as nn
import axonml_autograd.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _v(a, grad=True):
    return Variable(Tensor.from_numpy(np.asarray(a)), requires_grad=grad)


def test_linear_has_torchs_out_in_layout_and_initial_bounds():
    lin = nn.Linear(65, 17, seed=0)
    assert lin.weight.shape() == [17, 65] and lin.bias.shape() == [17]
    bound = 1 / math.sqrt(65)
    w = lin.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound and abs(w.mean()) < 0.1 * bound
    assert np.abs(lin.bias.numpy()).max() <= bound
    x = np.random.default_rng(0).standard_normal((3, 65)).astype(np.float32)
    np.testing.assert_allclose(lin(_v(x, False)).numpy(), x @ w.T + lin.bias.numpy(), rtol=1e-5, atol=1e-5)
    assert nn.Linear(3, 2, bias=False, seed=1).bias is None
    with pytest.raises(ValueError, match=r"linear: input of shape \[3, 4\] does not fit weight \[17, 65\]"):
        lin(_v(np.zeros((3, 4), np.float32), False))


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3), (1, 3)])
def test_functional_linear_takes_torchs_out_in_weight_and_matches_torch(fp64, shape):
    rng = np.random.default_rng(len(shape))
    xh, wh, bh = rng.standard_normal(shape), rng.standard_normal((17, 3)), rng.standard_normal(17)
    x, w, b = _v(xh), _v(wh), _v(bh)
    y = F.linear(x, w, b)
    g = rng.standard_normal(shape[:-1] + (17,))
    y.backward(Tensor.from_numpy(g))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (xh, wh, bh))
    ty = TF.linear(tx, tw, tb)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(ours.grad().numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert check_gradients(lambda a, c: F.linear(a, c), [_v(xh[..., :3]), _v(wh[:4])])
    with pytest.raises(ValueError, match=r"linear: input of shape \[5, 4\] does not fit weight \[17, 3\]"):
        F.linear(_v(np.zeros((5, 4))), w)


def test_embedding_padding_row_starts_at_zero_and_gets_no_gradient_like_torch(fp64):
    emb = nn.Embedding(7, 3, padding_idx=2, dtype="float64", seed=0)
    assert emb.weight.numpy()[2].tolist() == [0.0, 0.0, 0.0]
    w0 = emb.weight.numpy().copy()
    idx = [[2, 5, 2], [0, 2, 6]]
    out = emb(idx)
    g = np.random.default_rng(1).standard_normal((2, 3, 3))
    out.backward(Tensor.from_numpy(g))
    tw = torch.tensor(w0, requires_grad=True)
    tout = TF.embedding(torch.tensor(idx), tw, padding_idx=2)
    tout.backward(torch.tensor(g))
    np.testing.assert_array_equal(out.numpy(), tout.detach().numpy())
    np.testing.assert_allclose(emb.weight.grad().numpy(), tw.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert emb.weight.grad().numpy()[2].tolist() == [0.0, 0.0, 0.0]
    # A device tensor of indices, and a negative padding_idx as torch counts it.
    e2 = nn.Embedding(5, 2, padding_idx=-1, seed=1)
    assert e2.padding_idx == 4 and repr(e2) == "Embedding(5, 2, padding_idx=4)"
    ids = Tensor.from_numpy(np.array([4, 1], np.int32), dtype="int32")
    e2(ids).sum().backward()
    assert e2.weight.grad().numpy()[4].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="Embedding: padding_idx 5 is out of range for 5 embeddings"):
        nn.Embedding(5, 2, padding_idx=5)


def test_embedding_initialises_standard_normal():
    w = nn.Embedding(400, 50, seed=3).weight.numpy()
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1.0) < 0.02


def test_dropout_scales_survivors_and_draws_a_fresh_mask_every_call():
    manual_seed(5)
    x = Variable(Tensor.ones([200, 100]), requires_grad=True)
    drop = nn.Dropout(0.3)
    a, b = drop(x).numpy(), drop(x).numpy()
    np.testing.assert_allclose(np.unique(a), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs((a == 0).mean() - 0.3) < 0.02
    assert (a != b).any()                       # a new mask each call
    y = drop(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad().numpy(), y.numpy())   # gradient through the same mask
    assert drop.eval()(x) is x                   # the identity in eval
    assert F.dropout(x, 0.0) is x and F.dropout(x, 0.5, training=False) is x
    assert not F.dropout(x, 1.0).numpy().any()
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)


def test_dropout_draws_a_fresh_mask_at_every_captured_replay():
    drop = nn.Dropout(0.5)
    step = capture(lambda x: drop(Variable(x)))
    x = Tensor.ones([64, 64])
    masks = [step(x).numpy().copy() for _ in range(4)]
    assert step.replays >= 2
    assert all((masks[k] != masks[k + 1]).any() for k in range(3))
    assert all(abs((m == 0).mean() - 0.5) < 0.05 for m in masks)


def test_flatten_unflatten_identity():
    x = _v(np.arange(24.0).reshape(2, 3, 4), False)
    assert nn.Flatten()(x).shape() == [2, 12] and nn.Flatten(0, 1)(x).shape() == [6, 4]
    assert nn.Unflatten(1, (3, 4))(nn.Flatten()(x)).shape() == [2, 3, 4]
    assert nn.Identity(54, unused=1)(x) is x


@pytest.mark.parametrize("module,fn", [
    (nn.ReLU(), TF.relu), (nn.LeakyReLU(0.2), lambda t: TF.leaky_relu(t, 0.2)), (nn.GELU(), TF.gelu),
    (nn.GELU("tanh"), lambda t: TF.gelu(t, approximate="tanh")), (nn.Tanh(), torch.tanh), (nn.Sigmoid(), torch.sigmoid),
    (nn.SiLU(), TF.silu), (nn.ELU(0.5), lambda t: TF.elu(t, 0.5)), (nn.SELU(), TF.selu), (nn.Mish(), TF.mish),
    (nn.Softplus(2.0, 5.0), lambda t: TF.softplus(t, 2.0, 5.0)), (nn.Hardtanh(-0.5, 2.0), lambda t: TF.hardtanh(t, -0.5, 2.0)),
    (nn.LogSigmoid(), TF.logsigmoid), (nn.Softmax(dim=0), lambda t: TF.softmax(t, 0)),
    (nn.LogSoftmax(1), lambda t: TF.log_softmax(t, 1)),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_activation_modules_match_torch(fp64, module, fn):
    xh = np.random.default_rng(6).standard_normal((3, 17)) * 3
    x = _v(xh)
    y = module(x)
    g = np.random.default_rng(7).standard_normal((3, 17))
    y.backward(Tensor.from_numpy(g))
    tx = torch.tensor(xh, requires_grad=True)
    ty = fn(tx)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad().numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_activation_module_reprs_and_bad_arguments():
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)" and repr(nn.ReLU()) == "ReLU()"
    with pytest.raises(TypeError, match="LeakyReLU: unexpected argument 'slope'"):
        nn.LeakyReLU(slope=0.1)


def test_one_hot_matches_torch():
    idx = [[0, 3], [2, 2]]
    np.testing.assert_array_equal(F.one_hot(idx).numpy(), TF.one_hot(torch.tensor(idx)).numpy())
    dev_idx = Tensor.from_numpy(np.array([4, 0, 1], np.int32), dtype="int32")
    np.testing.assert_array_equal(F.one_hot(dev_idx, 6).numpy(), np.eye(6, dtype=np.int32)[[4, 0, 1]])
    with pytest.raises(ValueError, match="one_hot: give num_classes"):
        F.one_hot(dev_idx)
    with pytest.raises(ValueError, match="one_hot: class value 3 is out of range for 3 classes"):
        F.one_hot([3], 3)


@pytest.mark.parametrize("shape,pads", [((3, 4), (1, 2)), ((2, 3, 5), (0, 1, 2, 0)), ((1, 2, 3, 4), (1, 1, 1, 1, 1, 1)),
                                        ((17,), (0, 0))])
def test_constant_pad_matches_torch_and_gradchecks(fp64, shape, pads):
    rng = np.random.default_rng(sum(shape))
    xh = rng.standard_normal(shape)
    x = _v(xh)
    y = F.pad(x, pads, value=2.5)
    ty = TF.pad(torch.tensor(xh, requires_grad=True), pads, value=2.5)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    assert check_gradients(lambda a: F.pad(a, pads), [x])
    with pytest.raises(ValueError, match="pad: mode 'wrap' is not supported"):   # reflect & co: test_resample.py
        F.pad(x, pads, mode="wrap")
    with pytest.raises(ValueError, match="pad: expected an even number of pads"):
        F.pad(x, (1,))
