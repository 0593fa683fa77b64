"""torch functions built from differentiable ops: F.normalize, F.cosine_similarity,
F.scaled_dot_product_attention, dot, outer, roll, isclose/allclose. Values and gradients against torch
in float64 (skipped without torch), finite differences without it."""

import numpy as np
import pytest

import axonml_autograd.nn.functional as F
from axonml_autograd import Tensor, Variable, capture
from axonml_autograd.backward import check_gradients

RNG = np.random.default_rng(21)


def var(a, grad=True):
    return Variable(Tensor.from_numpy(np.asarray(a, dtype=np.float64)), requires_grad=grad)


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("shape,dim", [((3, 17), 1), ((5, 4, 3), 0), ((1, 65), -1)])
def test_normalize_and_cosine_similarity_match_torch(shape, dim, fp64):
    torch = _torch()
    a, b = RNG.standard_normal(shape), RNG.standard_normal(shape)
    a.reshape(-1)[0] = 0.0
    x, y = var(a), var(b)
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    for ours, theirs in [(F.normalize(x, dim=dim), torch.nn.functional.normalize(tx, dim=dim)),
                         (F.cosine_similarity(x, y, dim=dim), torch.nn.functional.cosine_similarity(tx, ty, dim=dim))]:
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    check_gradients(lambda x, y: (F.cosine_similarity(x, y, dim=dim) * 2.0).sum() + F.normalize(x, dim=dim).pow(3.0).sum(),
                    [x, y])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_scaled_dot_product_attention_matches_torch(causal, mask_kind, fp64):
    torch = _torch()
    if causal and mask_kind:
        pytest.skip("torch refuses both")
    q, k, v = (RNG.standard_normal(s) for s in ((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6)))
    mask = None
    if mask_kind == "bool":
        mask = RNG.random((5, 7)) < 0.7
        mask[:, 0] = True                      # no row without a key
    elif mask_kind == "float":
        mask = RNG.standard_normal((5, 7))
    vq, vk, vv = var(q), var(k), var(v)
    ours = F.scaled_dot_product_attention(vq, vk, vv, attn_mask=None if mask is None else Tensor.from_numpy(mask),
                                          is_causal=causal)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    theirs = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.from_numpy(mask), is_causal=causal)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-11, atol=1e-12)
    g = RNG.standard_normal(theirs.shape)
    ours.backward(Tensor.from_numpy(g))
    theirs.backward(torch.from_numpy(g))
    for mine, ref in ((vq, tq), (vk, tk), (vv, tv)):
        np.testing.assert_allclose(mine.grad().numpy(), ref.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_causal_attention_replays_under_capture():
    q = Variable(Tensor.from_numpy(RNG.standard_normal((1, 4, 8)).astype(np.float32)))

    @capture
    def attend(x):
        return F.scaled_dot_product_attention(Variable(x), Variable(x), Variable(x), is_causal=True)

    for _ in range(3):
        x = RNG.standard_normal((1, 4, 8)).astype(np.float32)
        got = attend(Tensor.from_numpy(x))
        s = x @ x.transpose(0, 2, 1) / np.sqrt(8)
        s = np.where(np.triu(np.ones((4, 4), bool), 1), -np.inf, s)
        w = np.exp(s - s.max(-1, keepdims=True))
        np.testing.assert_allclose(got.numpy(), (w / w.sum(-1, keepdims=True)) @ x, rtol=1e-5, atol=1e-6)
    assert attend.replays >= 1


def test_dot_outer_roll_and_closeness():
    a, b = RNG.standard_normal(17), RNG.standard_normal(5)
    x, y = var(a), var(b)
    np.testing.assert_allclose(x.dot(x).item(), a @ a, rtol=1e-13)
    np.testing.assert_allclose(x.outer(y).numpy(), np.outer(a, b), rtol=1e-15)
    m = RNG.standard_normal((3, 4))
    vm = var(m)
    np.testing.assert_array_equal(vm.roll(1, 0).numpy(), np.roll(m, 1, 0))
    np.testing.assert_array_equal(vm.roll((-1, 6), (0, 1)).numpy(), np.roll(m, (-1, 6), (0, 1)))
    np.testing.assert_array_equal(vm.roll(5).numpy(), np.roll(m, 5))
    check_gradients(lambda x, y: x.outer(y).roll(2, 1).pow(2.0).sum() + x.dot(x), [x, y])
    c = np.array([1.0, np.nan, np.inf, 1e-9])
    d = np.array([1.0 + 1e-7, np.nan, np.inf, 0.0])
    assert var(c).isclose(var(d)).numpy().tolist() == np.isclose(c, d).tolist()
    assert var(c).isclose(var(d), equal_nan=True).numpy().tolist() == np.isclose(c, d, equal_nan=True).tolist()
    assert var(a).allclose(var(a + 1e-12)) is True and var(a).allclose(var(a + 1.0)) is False
    with pytest.raises(ValueError, match=r"dot: expected two 1-D Variables of one length, got \[17\] and \[5\]"):
        x.dot(y)


@pytest.mark.parametrize("shape,dim", [((17,), 0), ((3, 5), 1), ((4, 3, 2), 0)])
def test_cumprod_matches_numpy_and_its_gradient_is_exact_at_zeros(shape, dim, fp64):
    a = RNG.uniform(0.5, 1.5, shape) * RNG.choice([-1.0, 1.0], shape)
    a.reshape(-1)[1] = 0.0
    a.reshape(-1)[-1] = 0.0
    x = var(a)
    np.testing.assert_allclose(x.cumprod(dim).numpy(), np.cumprod(a, dim), rtol=1e-14, atol=1e-15)
    check_gradients(lambda x: (x.cumprod(dim) * Variable(Tensor.from_numpy(np.arange(a.size, dtype=np.float64)
                                                                          .reshape(shape)))).sum(), [x])
    ints = Variable(Tensor.from_numpy(np.array([2, 3, -4], np.int32)))
    assert ints.cumprod(0).dtype == np.int64 and ints.cumprod(0).to_vec() == [2, 6, -24]


def test_cumprod_normalize_and_cosine_replay_under_capture():
    @capture
    def f(a, b):
        x, y = Variable(a), Variable(b)
        return x.cumprod(1) + F.normalize(x, dim=1) * F.cosine_similarity(x, y, dim=1).unsqueeze(1)

    for _ in range(3):
        a, b = RNG.standard_normal((3, 5)), RNG.standard_normal((3, 5))
        want = np.cumprod(a, 1) + a / np.linalg.norm(a, axis=1, keepdims=True) * (
            (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))[:, None]
        np.testing.assert_allclose(f(Tensor.from_numpy(a), Tensor.from_numpy(b)).numpy(), want, rtol=1e-12)
    assert f.replays >= 1
