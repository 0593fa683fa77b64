"""Losses, each reduced to a 0-d mean like PyTorch's defaults.

mse, l1 and smooth-L1 are compositions of differentiable ops; binary cross-entropy is one elementwise
op with its own backward (log clamped at -100 as PyTorch does); nll_loss picks each row's target
log-probability with a mask kernel; cross_entropy fuses log-softmax and that pick into one row
kernel each way.
"""

from __future__ import annotations


import numpy as np

from ..grad_fn import record
from ..tensor import Tensor, as_index, broadcast_view, cross_entropy_rows, cross_entropy_rows_backward, elementwise, reduce
from .activation import _floats
from . import differentiable as dv
from .arithmetic import register_vjps, unary


def _check_same_shape(name, p, t):
    if p.shape() != t.shape():
        raise ValueError(f"{name}: input shape {p.shape()} and target shape {t.shape()} differ")


def mse_loss(pred, target):
    _check_same_shape("mse_loss", pred, target)
    diff = pred - target
    return (diff * diff).mean()


def l1_loss(pred, target):
    _check_same_shape("l1_loss", pred, target)
    return (pred - target).abs().mean()


_SMOOTH_L1 = {
    "smooth_l1": ("fabs(x) < beta ? L(0.5) * x * x / beta : fabs(x) - L(0.5) * beta",
                  "(fabs(x) < beta || x != x) ? g * x / beta : (x > 0 ? g : (x < 0 ? -g : L(0.0)))", ("beta",)),
}


def _smooth_l1_grad(g, x, y, s):
    beta = s["beta"]
    quadratic = elementwise("(fabs(x) < beta || x != x) ? 1 : 0", [x.data()], names=("x",), scalars={"beta": beta},
                            dtype="int32")
    sign = elementwise("x > 0 ? L(1.0) : (x < 0 ? L(-1.0) : L(0.0))", [x.data()], names=("x",))
    return dv.select(quadratic, g * x * (1.0 / beta), g * dv.const(g, sign))


register_vjps(_SMOOTH_L1, {"smooth_l1": _smooth_l1_grad})


def smooth_l1_loss(pred, target, beta=1.0):
    _check_same_shape("smooth_l1_loss", pred, target)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    if beta == 0:
        return l1_loss(pred, target)
    return unary(_SMOOTH_L1, "smooth_l1", pred - target, beta=beta).mean()


def binary_cross_entropy(pred, target):
    """-mean(t log p + (1 - t) log(1 - p)); p must be probabilities in [0, 1] (else the loss is NaN)."""
    _check_same_shape("binary_cross_entropy", pred, target)
    p, t = _floats(pred.data()), _floats(target.data())
    # p outside [0, 1] or NaN gives NaN, not a plausible number (torch raises; that would need a read).
    losses = elementwise("(p >= L(0.0) && p <= L(1.0)) ? -(t * fmax(log(p), L(-100.0)) + (L(1.0) - t) * "
                         "fmax(log(L(1.0) - p), L(-100.0))) : (T)NAN",
                         [p, t], names=("p", "t"), op="binary_cross_entropy")

    def rule(ctx, g):
        ps, ts = ctx.saved_tensors
        gp = gt = None
        if ctx.needs_input_grad[0]:
            gp = elementwise("(p >= L(0.0) && p <= L(1.0)) ? g * (p - t) / fmax((L(1.0) - p) * p, L(1e-12)) : (T)NAN",
                             [g, ps, ts], names=("g", "p", "t"))
        if ctx.needs_input_grad[1]:
            gt = elementwise("g * (fmax(log(L(1.0) - p), L(-100.0)) - fmax(log(p), L(-100.0)))", [g, ps],
                             names=("g", "p"))
        return gp, gt

    return record("BinaryCrossEntropyBackward", losses, [pred, target], rule, saved=(p, t),
                  vrule=_bce_vrule).mean()


def _bce_vrule(ctx, g):
    ps, ts = ctx.saved_tensors
    p, t = ctx.input(0, ps), ctx.input(1, ts)
    gp = gt = None
    if ctx.needs_input_grad[0]:
        inside = (ps >= 0).logical_and(ps <= 1)
        gp = dv.select(inside, g * (p - t) / ((1.0 - p) * p).clamp(min=1e-12), float("nan"))
    if ctx.needs_input_grad[1]:
        gt = g * ((1.0 - p).log().clamp(min=-100.0) - p.log().clamp(min=-100.0))
    return gp, gt


def _class_indices(targets, n, c, device) -> Tensor:
    """Targets as an int32 tensor of n class indices; lists are range-checked on the host."""
    if isinstance(targets, Tensor):
        t = targets
    elif callable(getattr(targets, "data", None)) and isinstance(targets.data(), Tensor):
        t = targets.data()
    else:
        if isinstance(targets, (str, bytes)) or not hasattr(targets, "__len__"):
            raise TypeError(f"targets: expected a list of class indices or a Tensor, got {type(targets).__name__}")
        arr = np.asarray(targets)
        if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not np.all(arr == np.floor(arr))):
            raise TypeError(f"targets: class indices must be integers, got {list(arr.reshape(-1)[:5])}...")
        if arr.ndim != 1 or arr.size != n:
            raise ValueError(f"targets: expected {n} class indices (one per row of the input), got shape {list(arr.shape)}")
        if arr.size and (arr.min() < 0 or arr.max() >= c):
            bad = arr[(arr < 0) | (arr >= c)][0]
            raise IndexError(f"targets: class index {bad} is out of range for {c} classes")
        return Tensor.from_numpy(arr.astype(np.int32), dtype="int32", device=device)
    if t.shape() != [n]:
        raise ValueError(f"targets: expected shape [{n}] (one index per row), got {t.shape()}")
    if t.dtype.kind != "i":
        # A float tensor would be truncated (2.7 -> class 2) without a word; torch refuses it too.
        raise TypeError(f"targets: class indices must be an int32 or int64 tensor, got a {t.dtype} tensor; "
                        "convert it with .astype('int64') if its values are whole numbers")
    return as_index(t, "targets")


def nll_loss(log_probs, targets):
    """-mean over rows of log_probs[row, target[row]]; log_probs is [N, C].

    A target index outside [0, C) read from a device Tensor makes the loss NaN (lists raise IndexError).
    """
    lp = _floats(log_probs.data())
    if lp.ndim() != 2:
        raise ValueError(f"nll_loss: expected input of shape [N, C], got {lp.shape()}")
    n, c = lp._shape
    if n == 0:
        raise ValueError("nll_loss: empty batch (input has 0 rows)")
    idx = _class_indices(targets, n, c, lp.device)
    # Each element of the [N, C] output knows its class from its flat index: gid % C.
    tcol = broadcast_view(idx.reshape([n, 1]), (n, c))
    picked = elementwise("(t < 0 || t >= C) ? NAN : (gid % C == t ? -x : L(0.0))", [lp, tcol],
                         names=("x", "t"), int_scalars={"C": c}, op="nll_loss")
    loss = reduce(picked, "sum", scale=1.0 / n)
    if c == 0:   # no class to pick: no element carries the NaN, and a sum of nothing would say 0
        loss = Tensor.full((), float("nan"), lp.dtype, lp.device)

    def rule(ctx, g):
        (ids,) = ctx.saved_tensors
        shape = (ctx.n, ctx.c)
        return elementwise("gid % C == t ? -g * s : L(0.0)", [broadcast_view(g.reshape([1, 1]), shape),
                                                             broadcast_view(ids.reshape([ctx.n, 1]), shape)],
                           names=("g", "t"), scalars={"s": 1.0 / ctx.n}, int_scalars={"C": ctx.c})

    return record("NllLossBackward", loss, [log_probs], rule, saved=(idx,), n=n, c=c, vrule=_nll_vrule)


def _pick(ids, n, c, scale, dtype):
    """[n, c] with ``scale`` at each row's target column, 0 elsewhere (a constant)."""
    shape = (n, c)
    return elementwise("gid % C == t ? s : L(0.0)", [broadcast_view(ids.reshape([n, 1]), shape)], names=("t",),
                       scalars={"s": scale}, int_scalars={"C": c}, shape=shape, dtype=dtype)


def _nll_vrule(ctx, g):
    (ids,) = ctx.saved_tensors
    n, c = ctx.attrs["n"], ctx.attrs["c"]
    return g.reshape([1, 1]).expand([n, c]) * dv.const(g, _pick(ids, n, c, -1.0 / n, g.dtype))


def cross_entropy(logits, targets):
    """Mean cross-entropy of logits [N, C] against class indices (list or Tensor).

    One fused row kernel each way (log-softmax and the pick of the target); the same values as
    ``nll_loss(log_softmax(logits, 1), targets)``. A target outside [0, C) read from a device Tensor
    makes the loss NaN (lists raise IndexError).
    """
    if logits.ndim() > 2:
        # torch's [N, C, d1, ...]: the class axis moved last, every position a row of its own.
        nd, c = logits.ndim(), logits.shape()[1]
        rows = logits.permute([0] + list(range(2, nd)) + [1]).reshape([-1, c])
        device_targets = isinstance(targets, Tensor) or (callable(getattr(targets, "data", None))
                                                         and isinstance(targets.data(), Tensor))
        if device_targets:
            t = targets if isinstance(targets, Tensor) else targets.data()
            want = [logits.shape()[0]] + logits.shape()[2:]
            if t.shape() != want:
                raise ValueError(f"cross_entropy: targets of shape {t.shape()} for logits {logits.shape()}; "
                                 f"expected {want}")
            flat = t.reshape([t.numel()])
        else:
            arr = np.asarray(targets)
            want = (logits.shape()[0], *logits.shape()[2:])
            if arr.shape != want:
                raise ValueError(f"cross_entropy: targets of shape {list(arr.shape)} for logits {logits.shape()}; "
                                 f"expected {list(want)}")
            flat = arr.reshape(-1)
        return cross_entropy(rows, flat)
    if logits.ndim() != 2:
        raise ValueError(f"cross_entropy: expected logits of shape [N, C] or [N, C, d1, ...], got {logits.shape()}")
    x = _floats(logits.data())
    n, c = x._shape
    if n == 0:
        raise ValueError("cross_entropy: empty batch (input has 0 rows)")
    idx = _class_indices(targets, n, c, x.device)
    rows, lse = cross_entropy_rows(x, idx)
    loss = reduce(rows, "sum", scale=1.0 / n)

    def rule(ctx, g):
        xs, ids, l = ctx.saved_tensors
        return cross_entropy_rows_backward(g, xs, ids, l, 1.0 / ctx.attrs["n"])

    return record("CrossEntropyBackward", loss, [logits], rule, saved=(x, idx, lse), n=n, vrule=_cross_entropy_vrule)


def _cross_entropy_vrule(ctx, g):
    xs, ids, _lse = ctx.saved_tensors
    n, c = xs._shape
    x = ctx.input(0, xs)
    return (x.softmax(1) - dv.const(g, _pick(ids, n, c, 1.0, xs.dtype))) * (g * (1.0 / n))
