"""Matrix products. Backward runs g @ B^T and A^T @ g as single kernels: a transposed operand is a view,
which the matmul kernel reads through its trans flags."""

from __future__ import annotations

from .. import amp
from . import differentiable as dv
from ..grad_fn import record
from ..tensor import Tensor
from ..elementwise_kernels import elementwise
from ..matmul import matmul as matmul_tensors
from .shape import reshape


@amp.op("matmul")
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
    return _product(a, b, False, False)


def _product(a, b, ta, tb):
    """``op(a) @ op(b)`` over Variables of at least 2 dims, ``op`` transposing the last two axes where
    ``ta``/``tb`` say: the kernel's flags, so that no gradient needs a transposed copy."""
    x, y = a._data, b._data
    return record("MatmulBackward", matmul_tensors(x, y, trans_a=ta, trans_b=tb), [a, b], saved=(x, y), ta=ta,
                  tb=tb, vrule=_matmul_vrule)


def _matmul_vrule(ctx, g):
    """For C = op(A) op(B) (``op`` as the flags say): dA from g and B, dB from A and g, each one product
    with flags, summed over the batch axes that broadcasting stretched."""
    xs, ys = ctx.saved_tensors
    ta, tb = ctx.attrs["ta"], ctx.attrs["tb"]
    ga = gb = None
    if ctx.needs_input_grad[0]:
        b = ctx.input(1, ys)
        ga = dv.sum_to(_product(b, g, tb, True) if ta else _product(g, b, False, not tb), xs._shape)
    if ctx.needs_input_grad[1]:
        a = ctx.input(0, xs)
        gb = dv.sum_to(_product(g, a, True, ta) if tb else _product(a, g, not ta, False), ys._shape)
    return ga, gb


@amp.op("linear")
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
    if b is not None and x.dtype.itemsize == 2 and b.data().dtype == x.dtype == wt.dtype:
        # 16-bit with a bias: the product and the bias add in float32, rounded once (torch's addmm): the
        # float32 product, then one kernel adding the bias and rounding.
        acc = matmul_tensors(x2, wt, trans_b=True, out=Tensor([x2._shape[0], wt._shape[0]], "float32", x.device))
        out = elementwise("a + b", [acc, b.data()], op="linear bias", dtype=x.dtype)
        if x.ndim() != 2:
            out = out.reshape(list(lead) + [wt._shape[0]])
        return record("AddmmBackward", out, [a, w, b], saved=(x, wt), vrule=_linear_bias_vrule)
    bt = None if b is None else b.data()
    if bt is not None and bt.dtype == x.dtype == wt.dtype and x.dtype.itemsize != 2 and bt._shape == wt._shape[:1] \
            and bt.device is x.device:
        # The bias added by the product's kernel as it writes C (torch's addmm): the bits of y + b,
        # without a launch and a pass of its own.
        out = matmul_tensors(x2, wt, trans_b=True, bias=bt)
        if x.ndim() != 2:
            out = out.reshape(list(lead) + [wt._shape[0]])
        return record("AddmmBackward", out, [a, w, b], saved=(x, wt), vrule=_linear_bias_vrule)
    out = matmul_tensors(x2, wt, trans_b=True)
    if x.ndim() != 2:
        out = out.reshape(list(lead) + [wt._shape[0]])
    y = record("LinearBackward", out, [a, w], saved=(x, wt), vrule=_linear_vrule)
    return y if b is None else y + b


def _linear_bias_vrule(ctx, g):
    ga, gw = _linear_vrule(ctx, g)
    gb = None
    if ctx.needs_input_grad[2]:
        out_f = ctx.saved_tensors[1]._shape[0]
        gb = reshape(g, (g.numel() // out_f if out_f else 0, out_f)).sum(0)   # in float32, rounded once
    return ga, gw, gb


def _linear_vrule(ctx, g):
    xs, ws = ctx.saved_tensors
    out_f, in_f = ws._shape
    rows = xs.numel() // in_f if in_f else 0
    g2 = reshape(g, (rows, out_f))
    ga = gw = None
    if ctx.needs_input_grad[0]:
        w = ctx.input(1, ws)
        ga = reshape(_product(g2, w, False, False), xs._shape)
    if ctx.needs_input_grad[1]:
        x2 = reshape(ctx.input(0, xs), (rows, in_f))
        gw = _product(g2, x2, True, False)
    return ga, gw
