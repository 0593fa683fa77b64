"""Losses with PyTorch's options against torch.nn.functional in float64, every option combination that
matters, gradchecks, both launch strategies of the fused row kernel, capture, and bad input."""

import itertools

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, check_gradients
import axonml_autograd.nn as nn
import axonml_autograd.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
REDUCTIONS = ["mean", "sum", "none"]




def _compare(ours, theirs, arrays, device=None, rtol=1e-10, atol=1e-11, grads=True):
    """Forward values and the gradient of every input under a random upstream gradient."""
    vs = [Variable(Tensor.from_numpy(a, device=device), requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    o, t = ours(*vs), theirs(*ts)
    assert o.shape() == list(t.shape)
    np.testing.assert_allclose(o.numpy(), t.detach().numpy(), rtol=rtol, atol=atol)
    if grads:
        g = np.random.default_rng(99).standard_normal(tuple(t.shape))
        o.backward(Tensor.from_numpy(np.asarray(g), device=device))
        t.backward(torch.tensor(g))
        for v, tt in zip(vs, ts):
            np.testing.assert_allclose(v.grad().numpy(), tt.grad.numpy(), rtol=rtol, atol=atol)


def _ints(a, device=None):
    return Tensor.from_numpy(np.asarray(a, np.int32), dtype="int32", device=device)


@pytest.mark.parametrize("reduction,smoothing,weighted,ignore_index",
                         list(itertools.product(REDUCTIONS, [0.0, 0.25], [False, True], [-100, 2])))
@pytest.mark.parametrize("where", ["cpu", "gpu_like"])
def test_cross_entropy_matches_torch_for_every_option(fp64, reduction, smoothing, weighted, ignore_index, where,
                                                      request):
    dev = request.getfixturevalue("gpu_like") if where == "gpu_like" else None
    rng = np.random.default_rng(1)
    n, c = 17, 5
    x = rng.standard_normal((n, c)) * 3
    t = rng.integers(0, c, n)
    t[[3, 9]] = ignore_index          # rows that are ignored
    w = rng.random(c) + 0.25
    _compare(lambda a: F.cross_entropy(a, _ints(t, dev), Tensor.from_numpy(w, device=dev) if weighted else None,
                                       ignore_index, reduction, smoothing),
             lambda a: TF.cross_entropy(a, torch.tensor(t), torch.tensor(w) if weighted else None,
                                        ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing),
             [x], device=dev)


@pytest.mark.parametrize("reduction,weighted,ignore_index",
                         list(itertools.product(REDUCTIONS, [False, True], [-100, 0])))
@pytest.mark.parametrize("where", ["cpu", "gpu_like"])
def test_nll_loss_matches_torch_for_every_option(fp64, reduction, weighted, ignore_index, where, request):
    dev = request.getfixturevalue("gpu_like") if where == "gpu_like" else None
    rng = np.random.default_rng(2)
    x = np.log(rng.dirichlet(np.ones(65), 3))
    t = rng.integers(0, 65, 3)
    t[1] = ignore_index
    w = rng.random(65) + 0.1
    _compare(lambda a: F.nll_loss(a, _ints(t, dev), Tensor.from_numpy(w, device=dev) if weighted else None,
                                  ignore_index, reduction),
             lambda a: TF.nll_loss(a, torch.tensor(t), torch.tensor(w) if weighted else None,
                                   ignore_index=ignore_index, reduction=reduction), [x], device=dev)


@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 5, 2, 3), (1, 1, 1)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_and_nll_over_extra_dims_match_torch(fp64, shape, reduction):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape)
    t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    w = rng.random(shape[1]) + 0.5
    _compare(lambda a: F.cross_entropy(a, t.tolist(), weight=Tensor.from_numpy(w), reduction=reduction,
                                       label_smoothing=0.1),
             lambda a: TF.cross_entropy(a, torch.tensor(t), weight=torch.tensor(w), reduction=reduction,
                                        label_smoothing=0.1), [x])
    _compare(lambda a: F.nll_loss(a, _ints(t), reduction=reduction),
             lambda a: TF.nll_loss(a, torch.tensor(t), reduction=reduction), [x])


def test_cross_entropy_unbatched_and_with_probability_targets_match_torch(fp64):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(7)
    _compare(lambda a: F.cross_entropy(a, 4), lambda a: TF.cross_entropy(a, torch.tensor(4)), [x])
    p = rng.dirichlet(np.ones(5), 4)
    w = rng.random(5) + 0.5
    for reduction in REDUCTIONS:
        _compare(lambda a: F.cross_entropy(a, Tensor.from_numpy(p), weight=Tensor.from_numpy(w), reduction=reduction,
                                           label_smoothing=0.3),
                 lambda a: TF.cross_entropy(a, torch.tensor(p), weight=torch.tensor(w), reduction=reduction,
                                            label_smoothing=0.3), [rng.standard_normal((4, 5))])


def test_every_row_ignored_gives_nan_mean_like_torch(fp64):
    x = np.random.default_rng(4).standard_normal((3, 4))
    _compare(lambda a: F.cross_entropy(a, [-100, -100, -100]),
             lambda a: TF.cross_entropy(a, torch.tensor([-100, -100, -100])), [x], grads=False)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pointwise_losses_match_torch(fp64, reduction):
    rng = np.random.default_rng(5)
    shape = (3, 17)
    x, y = rng.standard_normal(shape) * 2, rng.standard_normal(shape)
    y[0, :3] = x[0, :3]     # zero differences: the kink of l1 and smooth-l1
    _compare(lambda a, b: F.mse_loss(a, b, reduction), lambda a, b: TF.mse_loss(a, b, reduction=reduction), [x, y])
    _compare(lambda a, b: F.l1_loss(a, b, reduction), lambda a, b: TF.l1_loss(a, b, reduction=reduction), [x, y])
    for beta in (0.0, 0.5, 2.0):
        _compare(lambda a, b: F.smooth_l1_loss(a, b, reduction, beta),
                 lambda a, b: TF.smooth_l1_loss(a, b, reduction=reduction, beta=beta), [x, y])
    for delta in (0.3, 1.0, 3.0):
        _compare(lambda a, b: F.huber_loss(a, b, reduction, delta),
                 lambda a, b: TF.huber_loss(a, b, reduction=reduction, delta=delta), [x, y])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_matches_torch(fp64, reduction, weighted):
    rng = np.random.default_rng(6)
    p, t = rng.uniform(0.01, 0.99, (4, 65)), rng.random((4, 65))
    w = rng.random(65) + 0.5          # broadcast along the rows
    _compare(lambda a, b: F.binary_cross_entropy(a, b, Tensor.from_numpy(w) if weighted else None, reduction),
             lambda a, b: TF.binary_cross_entropy(a, b, torch.tensor(w) if weighted else None, reduction=reduction),
             [p, t])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,pos_weighted", [(False, False), (True, False), (False, True), (True, True)])
def test_binary_cross_entropy_with_logits_matches_torch_and_never_overflows(fp64, reduction, weighted, pos_weighted):
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((5, 3)) * 40, rng.random((5, 3))   # logits far past exp's range in float32
    x[0] = [800.0, -800.0, 0.0]
    w, pw = rng.random(3) + 0.5, rng.random(3) * 3
    _compare(lambda a, b: F.binary_cross_entropy_with_logits(a, b, Tensor.from_numpy(w) if weighted else None,
                                                             reduction, Tensor.from_numpy(pw) if pos_weighted else None),
             lambda a, b: TF.binary_cross_entropy_with_logits(a, b, torch.tensor(w) if weighted else None,
                                                              reduction=reduction,
                                                              pos_weight=torch.tensor(pw) if pos_weighted else None),
             [x, t])


@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(fp64, reduction, log_target):
    rng = np.random.default_rng(8)
    inp = np.log(rng.dirichlet(np.ones(17), 3))
    tgt = rng.dirichlet(np.ones(17), 3)
    tgt = np.log(tgt) if log_target else tgt
    with np.errstate(all="ignore"):
        _compare(lambda a, b: F.kl_div(a, b, reduction, log_target),
                 lambda a, b: TF.kl_div(a, b, reduction=reduction, log_target=log_target), [inp, tgt])


def test_kl_div_of_zero_target_is_zero_like_torch(fp64):
    inp = np.log(np.array([[0.5, 0.25, 0.25]]))
    _compare(lambda a, b: F.kl_div(a, b, "sum"), lambda a, b: TF.kl_div(a, b, reduction="sum"),
             [inp, np.array([[1.0, 0.0, 0.0]])], grads=False)


def test_loss_gradchecks(fp64):
    rng = np.random.default_rng(9)
    v = lambda a: Variable(Tensor.from_numpy(np.asarray(a, np.float64)), requires_grad=True)   # noqa: E731
    x, y = v(rng.standard_normal((3, 4))), v(rng.standard_normal((3, 4)))
    w = Tensor.from_numpy(rng.random(4) + 0.5)
    t = _ints([1, -100, 3])
    assert check_gradients(lambda a: F.cross_entropy(a, t, w, label_smoothing=0.2), [x])
    assert check_gradients(lambda a: F.cross_entropy(a, t, reduction="none"), [x])
    assert check_gradients(lambda a: F.nll_loss(a, t, w, reduction="sum"), [x])
    assert check_gradients(lambda a, b: F.mse_loss(a, b), [x, y])
    assert check_gradients(lambda a, b: F.huber_loss(a, b, delta=0.5), [x, y])
    assert check_gradients(lambda a, b: F.binary_cross_entropy_with_logits(a, b.sigmoid(), pos_weight=w), [x, y])
    assert check_gradients(lambda a, b: F.binary_cross_entropy(a.sigmoid(), b.sigmoid(), w), [x, y])
    assert check_gradients(lambda a, b: F.kl_div(a.log_softmax(1), b.softmax(1), "batchmean"), [x, y])


def test_loss_modules_keep_their_options_and_weights_as_buffers(fp64):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 4))
    t = [0, 3, 1, 1, 2, -1]
    w = Tensor.from_numpy(rng.random(4) + 0.5)
    crit = nn.CrossEntropyLoss(weight=w, ignore_index=-1, reduction="sum", label_smoothing=0.1)
    assert list(crit.state_dict()) == ["weight"]
    got = crit(Variable(Tensor.from_numpy(x)), t).item()
    want = TF.cross_entropy(torch.tensor(x), torch.tensor(t), torch.tensor(w.numpy()), ignore_index=-1,
                            reduction="sum", label_smoothing=0.1).item()
    assert got == pytest.approx(want, rel=1e-12)
    assert "reduction='sum'" in repr(crit)
    pair = [Variable(Tensor.from_numpy(rng.standard_normal(5))) for _ in range(2)]
    for module, fn in [(nn.MSELoss(), TF.mse_loss), (nn.L1Loss(reduction="sum"), lambda a, b: TF.l1_loss(a, b, reduction="sum")),
                       (nn.SmoothL1Loss(beta=0.3), lambda a, b: TF.smooth_l1_loss(a, b, beta=0.3)),
                       (nn.HuberLoss(delta=2.0), lambda a, b: TF.huber_loss(a, b, delta=2.0)),
                       (nn.BCEWithLogitsLoss(pos_weight=Tensor.from_numpy(np.full(5, 2.0))),
                        lambda a, b: TF.binary_cross_entropy_with_logits(a, b.sigmoid(), pos_weight=torch.full((5,), 2.0, dtype=torch.float64)))]:
        b = pair[1] if not isinstance(module, nn.BCEWithLogitsLoss) else pair[1].sigmoid()
        assert module(pair[0], b).item() == pytest.approx(
            fn(torch.tensor(pair[0].numpy()), torch.tensor(pair[1].numpy())).item(), rel=1e-12)


def test_existing_crate_spellings_keep_their_meaning():
    logits = Variable(Tensor.from_vec([2.0, 1.0, 0.1, 0.5, 2.5, 0.3], [2, 3]), requires_grad=True)
    a = logits.cross_entropy([0, 1]).item()
    b = TF.cross_entropy(torch.tensor(logits.numpy()), torch.tensor([0, 1])).item()
    assert a == pytest.approx(b, rel=1e-6)
    pred = Variable(Tensor.from_vec([0.5, 1.5, 2.5], [3]), True)
    assert pred.mse_loss(Variable(Tensor.from_vec([1.0, 2.0, 3.0], [3]))).item() == pytest.approx(0.25)


def test_cross_entropy_with_options_replays_under_capture_bit_for_bit():
    rng = np.random.default_rng(11)
    w = Variable(Tensor.from_numpy(rng.standard_normal((6, 4)).astype(np.float32)), requires_grad=True)
    cw = Tensor.from_numpy(rng.random(4).astype(np.float32) + 0.5)

    def step(x, t):
        w.zero_grad()
        loss = F.cross_entropy(Variable(x).matmul(w), t, cw, ignore_index=0, label_smoothing=0.1)
        loss.backward()
        return loss

    captured = capture(step)
    for k in range(3):
        x = Tensor.from_numpy(rng.standard_normal((5, 6)).astype(np.float32))
        t = _ints(rng.integers(0, 4, 5))
        got, got_g = captured(x, t).numpy().copy(), w.grad().numpy().copy()
        want = step(x, t).numpy()
        assert got.tolist() == want.tolist() and got_g.tolist() == w.grad().numpy().tolist()
    assert captured.replays >= 1


def test_bad_loss_arguments_raise_naming_the_op():
    x = Variable(Tensor.zeros([3, 4]))
    with pytest.raises(ValueError, match="cross_entropy: reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        F.cross_entropy(x, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\]"):
        F.cross_entropy(x, [0, 1, 2], label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"cross_entropy: weight of shape \[3\] for 4 classes"):
        F.cross_entropy(x, [0, 1, 2], weight=Tensor.ones([3]))
    with pytest.raises(IndexError, match="class index 4 is out of range for 4 classes"):
        F.cross_entropy(x, [0, 4, 2])
    with pytest.raises(TypeError, match="class indices must be an int32 or int64 tensor"):
        F.nll_loss(x, Tensor.zeros([3]))
    with pytest.raises(ValueError, match=r"mse_loss: input shape \[3, 4\] and target shape \[4\] differ"):
        F.mse_loss(x, Variable(Tensor.zeros([4])))
    with pytest.raises(ValueError, match="huber_loss: delta must be positive"):
        F.huber_loss(x, x, delta=0.0)
    with pytest.raises(ValueError, match="kl_div: reduction must be one of"):
        F.kl_div(x, x, reduction="avg")
    with pytest.raises(TypeError, match="binary_cross_entropy_with_logits: target must be a Variable or Tensor"):
        F.binary_cross_entropy_with_logits(x, [1.0, 2.0])
