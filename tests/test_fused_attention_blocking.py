"""The CPU blocking of the fused attention kernels (functions/attention.py ``_plan``, cl_kernels/attention.cl.mako):
row blocks of R that do not divide the length, cache groups of G blocks (a partial last group), scores in
passes of SC vectors, several query chunks and key runs in the one-pass backward (dq, dk, dv written from
zero by the kernel), the inline float32 exp and lane-wise running sums, and narrow heads (d = 1, 3, 17),
against torch: values and q/k/v gradients."""

import numpy as np
import pytest

import axonml_autograd.nn.functional as F
from axonml_autograd import Tensor, Variable

RNG = np.random.default_rng(29)
FUSED = "ScaledDotProductAttentionBackward"


def _check(B, H, L, S, D, dtype, causal=False, mask=None, rtol=1e-10, atol=1e-12):
    torch = pytest.importorskip("torch")
    q, k, v = (RNG.standard_normal(s).astype(dtype) for s in ((B, H, L, D), (B, H, S, D), (B, H, S, D)))
    g = RNG.standard_normal((B, H, L, D)).astype(dtype)
    vq, vk, vv = (Variable(Tensor.from_numpy(a), requires_grad=True) for a in (q, k, v))
    m = None if mask is None else Tensor.from_numpy(mask.astype(dtype) if mask.dtype != bool else mask)
    ours = F.scaled_dot_product_attention(vq, vk, vv, attn_mask=m, is_causal=causal)
    assert ours.grad_fn.name() == FUSED
    ours.backward(Tensor.from_numpy(g))
    # The reference in float64 from the same (possibly float32) inputs.
    tq, tk, tv = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (q, k, v))
    tm = None if mask is None else torch.from_numpy(mask if mask.dtype == bool else mask.astype(np.float64))
    theirs = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=causal)
    theirs.backward(torch.from_numpy(g.astype(np.float64)))
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol, err_msg="out")
    for name, mine, ref in (("q", vq, tq), ("k", vk, tk), ("v", vv, tv)):
        np.testing.assert_allclose(mine.grad().numpy(), ref.grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("L,S,D,causal", [(129, 65, 3, True), (65, 129, 1, False), (17, 3, 17, True),
                                          (3, 129, 3, False), (1, 17, 1, True)])
def test_narrow_heads_and_odd_lengths_float64(L, S, D, causal, fp64):
    _check(1, 2, L, S, D, np.float64, causal=causal)


@pytest.mark.parametrize("causal", [False, True])
def test_float32_several_groups_chunks_and_runs(causal):
    # 8 heads of 257 rows: forward work-items of several 6-row blocks in groups (the last partial),
    # backward key runs split in two per head (dq partials summed), three 128-query chunks.
    _check(1, 8, 257, 257, 64, np.float32, causal=causal, rtol=3e-4, atol=3e-5)


def test_float32_float_mask_and_cross_lengths():
    mask = RNG.standard_normal((1, 1, 100, 70))
    _check(2, 2, 100, 70, 64, np.float32, mask=mask, rtol=3e-4, atol=3e-5)


@pytest.mark.parametrize("plan,bplan", [("3,16,1,1,2,8", "2,8,1,1,3"), ("4,32,1,4,1,8", "6,32,1,2,2,16")])
def test_other_plans_agree_with_torch(plan, bplan, monkeypatch, fp64):
    # R,BK,spill,EC,G,SC overrides: blocks that do not divide the lengths, score passes narrower than a
    # key block, single-block groups.
    monkeypatch.setenv("AXONML_ATTN_PLAN", plan)
    monkeypatch.setenv("AXONML_ATTN_BPLAN", bplan)
    _check(1, 3, 37, 41, 16, np.float64, causal=True)
    _check(1, 3, 37, 41, 16, np.float32, rtol=3e-4, atol=3e-5)
