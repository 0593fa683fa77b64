"""The fused scaled-dot-product attention (functions/attention.py, cl_kernels/attention.cl.mako): values and
q/k/v gradients against torch in float64 on shapes that are not multiples of the key block, causal (L != S
too), bool and float masks with broadcast batch axes, fully masked rows (zeros, as torch), float64
finite differences, gradients of gradients (its composed differentiable rule), capture bit-equal to
eager, memory linear in the sequence length, dropout inside the kernels (Philox words recomputed per
element: the output is its mask times the attention, replays draw as eager calls), and
MultiheadAttention's path through it."""

import os
import sys

import numpy as np
import pytest

import axonml_autograd.nn.functional as F
from axonml_autograd import Tensor, Variable, capture, nn
from axonml_autograd.backward import check_gradients
from axonml_autograd.device import get_device

sys.path.insert(0, os.path.dirname(__file__))
from capture_checks import assert_replays_equal_eager  # noqa: E402

RNG = np.random.default_rng(23)
FUSED = "ScaledDotProductAttentionBackward"


def var(a, dtype=np.float64, grad=True):
    return Variable(Tensor.from_numpy(np.asarray(a, dtype=dtype)), requires_grad=grad)


def _torch():
    return pytest.importorskip("torch")


def _compare(qs, ks, vs, mask=None, causal=False, scale=None, dtype=np.float64, rtol=1e-10, atol=1e-12):
    torch = _torch()
    q, k, v = (RNG.standard_normal(s) for s in (qs, ks, vs))
    vq, vk, vv = var(q, dtype), var(k, dtype), var(v, dtype)
    m = None if mask is None else Tensor.from_numpy(mask)
    ours = F.scaled_dot_product_attention(vq, vk, vv, attn_mask=m, is_causal=causal, scale=scale)
    assert ours.grad_fn.name() == FUSED
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    theirs = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.from_numpy(mask), is_causal=causal, scale=scale)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol)
    g = RNG.standard_normal(theirs.shape)
    ours.backward(Tensor.from_numpy(g.astype(dtype)))
    theirs.backward(torch.from_numpy(g))
    for name, mine, ref in (("q", vq, tq), ("k", vk, tk), ("v", vv, tv)):
        np.testing.assert_allclose(mine.grad().numpy(), ref.grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("B,H,L,S,D", [(1, 1, 1, 3, 8), (2, 3, 17, 65, 17), (1, 2, 65, 17, 64), (2, 1, 3, 1, 8)])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_torch_values_and_gradients(B, H, L, S, D, causal, fp64):
    _compare((B, H, L, D), (B, H, S, D), (B, H, S, D), causal=causal)


@pytest.mark.parametrize("kind,shape", [("bool", (17, 33)), ("float", (2, 1, 17, 33)), ("bool", (2, 1, 1, 33)),
                                        ("float", (3, 17, 33)), ("bool", (2, 3, 17, 33))])
def test_masks_broadcast_over_batch_and_heads(kind, shape, fp64):
    mask = RNG.random(shape) < 0.7 if kind == "bool" else RNG.standard_normal(shape)
    if kind == "bool":
        mask[..., 0] = True
    _compare((2, 3, 17, 8), (2, 3, 33, 8), (2, 3, 33, 8), mask=mask, scale=0.3)


def test_fully_masked_rows_give_zeros_as_torch(fp64):
    mask = RNG.random((2, 1, 5, 9)) < 0.6
    mask[0, 0, 2, :] = False
    mask[1, 0, 4, :] = False
    _compare((2, 2, 5, 4), (2, 2, 9, 4), (2, 2, 9, 4), mask=mask)


def test_batch_broadcasting_and_unbatched_inputs(fp64):
    torch = _torch()
    q, k, v = RNG.standard_normal((2, 3, 5, 8)), RNG.standard_normal((3, 7, 8)), RNG.standard_normal((1, 3, 7, 8))
    vq, vk, vv = var(q), var(k), var(v)
    ours = F.scaled_dot_product_attention(vq, vk, vv, is_causal=True)
    assert ours.grad_fn.name() == FUSED
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    theirs = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    ours.sum().backward()
    theirs.sum().backward()
    for mine, ref in ((vq, tq), (vk, tk), (vv, tv)):
        assert mine.grad().shape == list(ref.grad.shape)
        np.testing.assert_allclose(mine.grad().numpy(), ref.grad.numpy(), rtol=1e-10, atol=1e-12)
    _compare((6, 17), (3, 17), (3, 17))   # a single [L, D] head


def test_float32_at_129_matches_torch():
    _compare((2, 2, 129, 64), (2, 2, 129, 64), (2, 2, 129, 64), causal=True, dtype=np.float32, rtol=2e-4, atol=2e-5)


def test_gradcheck_float64(fp64):
    q, k, v = var(RNG.standard_normal((1, 2, 3, 5))), var(RNG.standard_normal((1, 2, 4, 5))), \
        var(RNG.standard_normal((1, 2, 4, 5)))
    mask = Tensor.from_numpy(RNG.standard_normal((3, 4)))
    check_gradients(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), [q, k, v])
    check_gradients(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), [q, k, v])


def test_gradients_of_gradients_match_torch(fp64):
    torch = _torch()
    q, k, v = (RNG.standard_normal((1, 2, 5, 4)) for _ in range(3))
    vq, vk, vv = var(q), var(k), var(v)
    out = F.scaled_dot_product_attention(vq, vk, vv, is_causal=True)
    assert out.grad_fn.name() == FUSED
    from axonml_autograd import autograd
    gq, = autograd.grad(out.pow(2.0).sum(), [vq], create_graph=True)
    gq.pow(2.0).sum().backward()
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    # torch's fused CPU kernel has no double backward: its composed maths is the reference here.
    scores = (tq @ tk.transpose(-2, -1)) / 2.0
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    tout = scores.softmax(-1) @ tv
    tgq, = torch.autograd.grad(tout.pow(2).sum(), [tq], create_graph=True)
    tgq.pow(2).sum().backward()
    np.testing.assert_allclose(gq.numpy(), tgq.detach().numpy(), rtol=1e-9, atol=1e-11)
    for mine, ref in ((vk, tk), (vv, tv)):
        np.testing.assert_allclose(mine.grad().numpy(), ref.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_capture_replays_bit_identical_to_eager():
    w = var(RNG.standard_normal((2, 3, 19, 8)), np.float32)
    pad = Tensor.from_numpy(RNG.random((2, 1, 1, 19)) < 0.8)

    def step(x):
        h = Variable(x) * w
        out = F.scaled_dot_product_attention(h, h, h, attn_mask=pad)
        (out * out).sum().backward()
        return out

    assert_replays_equal_eager(step, lambda: Tensor.from_numpy(RNG.standard_normal((2, 3, 19, 8)).astype(np.float32)), w)


def test_memory_grows_linearly_in_the_sequence_length():
    dev = get_device()

    def peak(T):
        q, k, v = (var(RNG.standard_normal((2, T, 16)), np.float32) for _ in range(3))
        dev.synchronize()
        base = dev.pool.in_use_bytes
        dev.pool.peak_bytes = base
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.sum().backward()
        dev.synchronize()
        return dev.memory_stats()["peak_bytes"] - base

    small, large = peak(256), peak(512)
    # Quadratic memory would be 4x (a [T, T] float32 score matrix per head is 2 MiB at 512).
    assert large < 2.6 * small, (small, large)
    assert large < 2 * 512 * 512 * 4


def test_a_mask_that_needs_a_gradient_or_dropping_everything_takes_the_composed_path():
    q = var(RNG.standard_normal((1, 4, 8)), np.float32)
    assert F.scaled_dot_product_attention(q, q, q, dropout_p=1.0).grad_fn.name() != FUSED
    m = var(RNG.standard_normal((4, 4)), np.float32)
    assert F.scaled_dot_product_attention(q, q, q, attn_mask=m).grad_fn.name() != FUSED
    assert F.scaled_dot_product_attention(q, q, q, attn_mask=m.detach()).grad_fn.name() == FUSED


@pytest.mark.parametrize("causal,dtype", [(False, np.float64), (True, np.float64), (True, np.float32)])
def test_dropout_is_its_mask_times_the_attention_and_draws_anew(causal, dtype, fp64):
    from axonml_autograd import autograd
    from axonml_autograd import random as ag_random
    from axonml_autograd.functions import attention
    B, H, L, S, D = 2, 3, 17, 33, 8
    qn, kn, vn, gn = (RNG.standard_normal((B, H, n, D)).astype(dtype) for n in (L, S, S, L))
    q, k, v = var(qn, dtype), var(kn, dtype), var(vn, dtype)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    ag_random.manual_seed(5)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=causal)
    assert out.grad_fn.name() == FUSED
    keep = attention._dropout_matrix(out.grad_fn, q.data(), k.data()).numpy()
    assert len(np.unique(keep)) == 2 and keep.min() == 0 and 0.6 < (keep > 0).mean() < 0.8
    np.testing.assert_allclose(keep.max(), 1 / 0.7, rtol=1e-6)
    s = qn @ kn.transpose(0, 1, 3, 2) / np.sqrt(D)
    if causal:
        s = np.where(np.triu(np.ones((L, S), bool), 1), -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out.numpy(), (p * keep) @ vn, **tol)
    # The kernels' gradients equal the composed rule's (which reads the same mask as a matrix).
    first = autograd.grad(out, [q, k, v], Tensor.from_numpy(gn), retain_graph=True)
    composed = autograd.grad(out, [q, k, v], Tensor.from_numpy(gn), create_graph=True)
    for a, b in zip(first, composed):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **tol)
    ag_random.manual_seed(5)
    again = F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=causal)
    assert np.array_equal(again.numpy(), out.numpy())
    assert not np.array_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.3).numpy(), out.numpy())


def test_dropout_under_capture_draws_what_eager_calls_draw():
    from axonml_autograd import random as ag_random
    w = var(RNG.standard_normal((2, 2, 9, 8)), np.float32)

    def step(x):
        h = Variable(x) * w
        out = F.scaled_dot_product_attention(h, h, h, dropout_p=0.25)
        out.sum().backward()
        return out

    xs = [Tensor.from_numpy(RNG.standard_normal((2, 2, 9, 8)).astype(np.float32)) for _ in range(3)]
    ag_random.manual_seed(11)
    eager = []
    for x in xs:
        w.zero_grad()
        eager.append((step(x).numpy(), w.grad().numpy()))
    captured = capture(step)
    ag_random.manual_seed(11)
    for x, (want, want_g) in zip(xs, eager):
        w.zero_grad()
        got = captured(x).numpy()
        assert np.array_equal(got, want) and np.array_equal(w.grad().numpy(), want_g)
    assert captured.replays >= 1


def test_a_mask_that_does_not_broadcast_is_refused():
    q = var(RNG.standard_normal((2, 4, 8)), np.float32)
    with pytest.raises(ValueError, match=r"attn_mask of shape \[3, 4\] does not broadcast"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=Tensor.from_numpy(np.ones((3, 4), bool)))


@pytest.mark.parametrize("which", ["padding", "attn_mask"])
def test_multihead_attention_without_weights_matches_torch(which, fp64):
    torch = _torch()
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True, dtype=torch.float64)
    ours = nn.MultiheadAttention(16, 4, batch_first=True, dtype="float64")
    ours.load_state_dict({k: Tensor.from_numpy(p.detach().numpy()) for k, p in ref.state_dict().items()})
    x = RNG.standard_normal((3, 17, 16))
    pad = RNG.random((3, 17)) < 0.3
    pad[:, 0] = False
    causal = np.triu(np.ones((17, 17), bool), 1)
    kw = dict(key_padding_mask=pad) if which == "padding" else dict(attn_mask=causal)
    vx = var(x)
    out, w = ours(vx, vx, vx, need_weights=False, **{k: Tensor.from_numpy(m) for k, m in kw.items()})
    assert w is None
    tx = torch.tensor(x, requires_grad=True)
    tout, _ = ref(tx, tx, tx, need_weights=False, **{k: torch.from_numpy(m) for k, m in kw.items()})
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    out.sum().backward()
    tout.sum().backward()
    np.testing.assert_allclose(vx.grad().numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.in_proj_weight.grad().numpy(), ref.in_proj_weight.grad.numpy(),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("bfloat16", 1.6e-2)])
def test_16_bit_inputs_run_on_float32_working_copies_and_keep_16_bits(dtype, tol):
    torch = _torch()
    arrays = [RNG.standard_normal((2, 3, 17, 8)).astype(np.float32) for _ in range(3)]
    q, k, v = (Variable(Tensor.from_numpy(a).astype(dtype), requires_grad=True) for a in arrays)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.dtype == dtype and out.grad_fn.name() == FUSED   # one op on the 16-bit tensors, which it keeps
    # What the graph keeps for backward is 16-bit (q, k, v and the output), not float32 copies.
    kept = [t for t in out.grad_fn._saved if t is not None and t.shape == (2, 3, 17, 8)]   # not lse
    assert [str(t.dtype) for t in kept] == [dtype] * 4
    out.sum().backward()
    tdt = getattr(torch, dtype)
    tq, tk, tv = (torch.tensor(a).to(tdt).float().requires_grad_() for a in arrays)
    theirs = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    theirs.sum().backward()
    np.testing.assert_allclose(out.numpy().astype(np.float32), theirs.detach().numpy(), atol=tol)
    for mine, ref in ((q, tq), (k, tk), (v, tv)):
        assert mine.grad().dtype == dtype
        np.testing.assert_allclose(mine.grad().numpy().astype(np.float32), ref.grad.numpy(), atol=tol)
