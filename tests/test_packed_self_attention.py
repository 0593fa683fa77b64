"""Self-attention on a packed in-projection as one op (functions/attention.py ``packed_self_attention``):
the same output bits and (up to the sign of zeros) the same gradient as the fused op on the three windows
it replaces, float64 finite differences, gradients of gradients through its composed rule, 16-bit inputs,
dropout, capture bit-equal to eager, and MultiheadAttention taking it. Needs no torch: the windows' path is
the reference here (tests/test_fused_attention.py and tests/test_attention.py check that path and
MultiheadAttention against torch)."""

import os
import sys

import numpy as np
import pytest

import axonml_autograd.nn.functional as F
from axonml_autograd import Tensor, Variable, autograd, nn
from axonml_autograd import random as ag_random
from axonml_autograd.backward import check_gradients
from axonml_autograd.functions import attention, shape as shape_ops

sys.path.insert(0, os.path.dirname(__file__))
from capture_checks import assert_replays_equal_eager  # noqa: E402

RNG = np.random.default_rng(31)
PACKED = "PackedSelfAttentionBackward"


def _packed(N, L, E, dtype=np.float32):
    x = RNG.standard_normal((N, L, 3 * E))
    return Variable(Tensor.from_numpy(x.astype(np.float32)).astype(dtype) if dtype != np.float64
                    else Tensor.from_numpy(x), requires_grad=True)


def _windows(p, H):
    """The path the packed op replaces: q, k and v heads read out by three windows."""
    N, L, E3 = p.shape()
    E = E3 // 3
    D = E // H
    return [shape_ops.window(p, [N, H, L, D], [L * E3, D, E3, 1], i * E) for i in range(3)]


def _masks(kind, L):
    if kind == "causal":
        return Tensor.from_numpy(~np.triu(np.ones((L, L), bool), 1))   # True keeps
    if kind == "float":
        return Tensor.from_numpy(RNG.standard_normal((L, L)).astype(np.float32))
    return None


@pytest.mark.parametrize("N,L,H,D", [(1, 1, 1, 8), (2, 17, 3, 8), (2, 65, 2, 17), (3, 3, 4, 8)])   # (head widths the fused tests build too)
@pytest.mark.parametrize("mask", [None, "causal", "float"])
def test_packed_op_gives_the_fused_ops_output_and_gradient_on_the_windows(N, L, H, D, mask):
    p = _packed(N, L, H * D)
    m = _masks(mask, L)
    ours = attention.packed_self_attention(p, H, m)
    assert ours.grad_fn.name() == PACKED and ours.shape() == [N, H, L, D]
    g = Tensor.from_numpy(RNG.standard_normal((N, H, L, D)).astype(np.float32))
    (mine,) = autograd.grad(ours, [p], g)
    q, k, v = _windows(p, H)
    theirs = attention.fused_attention(q, k, v, m)
    (ref,) = autograd.grad(theirs, [p], g)
    assert np.array_equal(ours.numpy(), theirs.numpy())
    # The windows' sum adds +0 to each head's gradient, which turns a -0 into +0: values, not sign bits.
    np.testing.assert_array_equal(mine.numpy(), ref.numpy())


def test_gradcheck_float64(fp64):
    p = _packed(2, 5, 6, np.float64)
    m = Tensor.from_numpy(RNG.standard_normal((5, 5)))
    check_gradients(lambda a: attention.packed_self_attention(a, 2, m), [p])
    check_gradients(lambda a: attention.packed_self_attention(a, 3, _masks("causal", 5)), [p])


def test_gradients_of_gradients_match_the_windows_path(fp64):
    p = _packed(1, 4, 6, np.float64)
    m = _masks("causal", 4)
    results = []
    for fn in (lambda a: attention.packed_self_attention(a, 2, m), lambda a: attention.fused_attention(*_windows(a, 2), m)):
        p.zero_grad()
        (gp,) = autograd.grad(fn(p).pow(2.0).sum(), [p], create_graph=True)
        gp.pow(2.0).sum().backward()
        results.append((gp.numpy(), p.grad().numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_packed_input_gives_the_windows_paths_bits(dtype):
    p = _packed(2, 9, 8, dtype)
    ours = attention.packed_self_attention(p, 2, _masks("causal", 9))
    g = Tensor.from_numpy(RNG.standard_normal(ours.shape()).astype(np.float32)).astype(dtype)
    (mine,) = autograd.grad(ours, [p], g)
    theirs = attention.fused_attention(*_windows(p, 2), _masks("causal", 9))
    (ref,) = autograd.grad(theirs, [p], g)
    assert str(ours.dtype) == str(mine.dtype) == dtype
    assert np.array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(mine.numpy().astype(np.float32), ref.numpy().astype(np.float32))


def test_dropout_draws_what_the_windows_path_draws():
    p = _packed(2, 17, 8)
    g = Tensor.from_numpy(RNG.standard_normal((2, 2, 17, 4)).astype(np.float32))
    ag_random.manual_seed(9)
    ours = attention.packed_self_attention(p, 2, None, dropout_p=0.25)
    (mine,) = autograd.grad(ours, [p], g)
    ag_random.manual_seed(9)
    theirs = attention.fused_attention(*_windows(p, 2), None, dropout_p=0.25)
    (ref,) = autograd.grad(theirs, [p], g)
    assert np.array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(mine.numpy(), ref.numpy())


def test_capture_replays_bit_identical_to_eager():
    w = Variable(Tensor.from_numpy(RNG.standard_normal((3, 19, 24)).astype(np.float32)), requires_grad=True)
    m = _masks("causal", 19)

    def step(x):
        out = attention.packed_self_attention(Variable(x) * w, 2, m)
        (out * out).sum().backward()
        return out

    assert_replays_equal_eager(step, lambda: Tensor.from_numpy(RNG.standard_normal((3, 19, 24)).astype(np.float32)), w)


def _names(fn, seen=None):
    seen = set() if seen is None else seen
    if fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        yield fn.name()
        for nxt in fn.next_functions():
            yield from _names(nxt[0] if isinstance(nxt, tuple) else nxt, seen)


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_self_attention_takes_the_packed_op_when_it_returns_no_weights(need_weights):
    mha = nn.MultiheadAttention(12, 3, batch_first=True, seed=0)
    x = Variable(Tensor.from_numpy(RNG.standard_normal((2, 7, 12)).astype(np.float32)), requires_grad=True)
    causal = Tensor.from_numpy(np.triu(np.ones((7, 7), bool), 1))   # MultiheadAttention's: True drops
    out, _ = mha(x, x, x, attn_mask=causal, need_weights=need_weights)
    names = set(_names(out.grad_fn))
    assert (PACKED in names) == (not need_weights)
    assert ("WindowBackward" in names) == need_weights
