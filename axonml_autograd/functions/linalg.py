"""Matrix products. Backward runs g @ B^T and A^T @ g as single kernels through the trans flags."""

from __future__ import annotations

from . import differentiable as dv
from ..grad_fn import record
from ..matmul import matmul as matmul_tensors
from ..rows import sum_to_shape


def matmul(a, b):
    """numpy's matmul: 2-D, batched with broadcast batch dims, and 1-D operands promoted and squeezed."""
    x, y = a.data(), b.data()
    if x.ndim() == 0 or y.ndim() == 0:
        raise ValueError(f"matmul: both operands need at least one dimension, got {x.shape()} @ {y.shape()}")
    if x.ndim() == 1 or y.ndim() == 1:
        # numpy's rule: a 1-D left operand is a row, a 1-D right operand a column, removed afterwards.
        out = matmul(a.reshape([1, x.numel()]) if x.ndim() == 1 else a,
                     b.reshape([y.numel(), 1]) if y.ndim() == 1 else b)
        if y.ndim() == 1:
            out = out.squeeze(-1)
        if x.ndim() == 1:
            out = out.squeeze(-1 if y.ndim() == 1 else -2)
        return out
    out = matmul_tensors(x, y)

    def rule(ctx, g):
        xs, ys = ctx.saved_tensors
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = sum_to_shape(matmul_tensors(g, ys, trans_b=True), xs._shape)
        if ctx.needs_input_grad[1]:
            gb = sum_to_shape(matmul_tensors(xs, g, trans_a=True), ys._shape)
        return ga, gb

    return record("MatmulBackward", out, [a, b], rule, saved=(x, y), vrule=_matmul_vrule)


def _matmul_vrule(ctx, g):
    xs, ys = ctx.saved_tensors
    a, b = ctx.input(0, xs), ctx.input(1, ys)
    ga = gb = None
    if ctx.needs_input_grad[0]:
        ga = dv.sum_to(matmul(g, b.mT), xs._shape)
    if ctx.needs_input_grad[1]:
        gb = dv.sum_to(matmul(a.mT, g), ys._shape)
    return ga, gb


def linear(a, w, b=None):
    """torch's ``F.linear``: ``a @ w^T + b`` with ``w`` of shape ``[out, in]``; any leading dims on ``a``.

    The transpose is the matmul kernel's flag, never a copy: forward ``a @ w^T``, backward ``g @ w``
    and ``g^T @ a``.
    """
    x, wt = a.data(), w.data()
    if wt.ndim() != 2:
        raise ValueError(f"linear: weight must be [out_features, in_features], got {wt.shape()}")
    if x.ndim() == 0 or x._shape[-1] != wt._shape[1]:
        raise ValueError(f"linear: input of shape {x.shape()} does not fit weight {wt.shape()} "
                         f"(expected input [..., {wt._shape[1]}])")
    lead = x._shape[:-1]
    x2 = x.reshape([-1, wt._shape[1]]) if x.ndim() != 2 else x
    out = matmul_tensors(x2, wt, trans_b=True)
    if x.ndim() != 2:
        out = out.reshape(list(lead) + [wt._shape[0]])

    def rule(ctx, g):
        xs, ws = ctx.saved_tensors
        g2 = g.reshape([-1, ws._shape[0]])
        ga = gw = None
        if ctx.needs_input_grad[0]:
            ga = matmul_tensors(g2, ws).reshape(xs._shape)
        if ctx.needs_input_grad[1]:
            gw = matmul_tensors(g2, xs.reshape([-1, ws._shape[1]]), trans_a=True)
        return ga, gw

    y = record("LinearBackward", out, [a, w], rule, saved=(x, wt), vrule=_linear_vrule)
    return y if b is None else y + b


def _linear_vrule(ctx, g):
    xs, ws = ctx.saved_tensors
    out_f, in_f = ws._shape
    ga = gw = None
    if ctx.needs_input_grad[0]:
        ga = matmul(g.reshape([-1, out_f]), ctx.input(1, ws)).reshape(list(xs._shape))
    if ctx.needs_input_grad[1]:
        gw = matmul(g.reshape([-1, out_f]).mT, ctx.input(0, xs).reshape([-1, in_f]))
    return ga, gw
