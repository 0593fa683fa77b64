"""Losses with PyTorch's options; ``reduction`` is ``"mean"`` (the default), ``"sum"`` or ``"none"``.

Pointwise losses are registry rows (``registry.py``: forward and one gradient rule per input), one
kernel each way. Binary cross-entropy clamps its logs at -100 as PyTorch does; the with-logits form is
composed from ``logsigmoid``, which never overflows. cross_entropy and nll_loss run one row kernel
each way (``cross_entropy_rows`` in ``tensor.py``): log-softmax, the pick of the target, class
weights, ``ignore_index`` and label smoothing fused; a mean divides by the summed weights of the
rows not ignored, read by the kernels on the device.
"""

from __future__ import annotations

import math

import numpy as np

from .. import amp
from ..grad_fn import record
from ..tensor import Tensor, View
from ..shapes import as_float, as_int
from ..elementwise_kernels import as_index, broadcast_view, elementwise
from ..rows import cross_entropy_rows, cross_entropy_rows_backward, reduce
from . import differentiable as dv
from .activation import _floats
from .pointwise import binary, unary

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(name, reduction, extra=()):
    if reduction not in REDUCTIONS + tuple(extra):
        raise ValueError(f"{name}: reduction must be one of {', '.join(map(repr, REDUCTIONS + tuple(extra)))}, "
                         f"got {reduction!r}")


def _reduce(losses, reduction):
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _check_same_shape(name, p, t):
    if p.shape() != t.shape():
        raise ValueError(f"{name}: input shape {p.shape()} and target shape {t.shape()} differ")


def _variable(x, op, what="input"):
    from ..variable import as_variable
    return as_variable(x, op, what)


@amp.op("mse_loss")
def mse_loss(pred, target, reduction="mean"):
    """``(input - target)^2``, reduced."""
    _check_reduction("mse_loss", reduction)
    target = _variable(target, "mse_loss", "target")
    _check_same_shape("mse_loss", pred, target)
    return _reduce(binary("mse_loss", pred, target), reduction)


@amp.op("l1_loss")
def l1_loss(pred, target, reduction="mean"):
    """``|input - target|``, reduced."""
    _check_reduction("l1_loss", reduction)
    target = _variable(target, "l1_loss", "target")
    _check_same_shape("l1_loss", pred, target)
    return _reduce(binary("l1_loss", pred, target), reduction)


@amp.op("smooth_l1_loss")
def smooth_l1_loss(pred, target, beta=1.0, reduction="mean"):
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = input - target``)."""
    _check_reduction("smooth_l1_loss", reduction)
    target = _variable(target, "smooth_l1_loss", "target")
    _check_same_shape("smooth_l1_loss", pred, target)
    beta = as_float(beta, "smooth_l1_loss: beta")
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    if beta == 0:
        return l1_loss(pred, target, reduction)
    return _reduce(unary("smooth_l1", pred - target, beta=beta), reduction)


@amp.op("huber_loss")
def huber_loss(pred, target, reduction="mean", delta=1.0):
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``: ``delta * smooth_l1(beta=delta)``."""
    _check_reduction("huber_loss", reduction)
    delta = as_float(delta, "huber_loss: delta")
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    target = _variable(target, "huber_loss", "target")
    _check_same_shape("huber_loss", pred, target)
    losses = unary("smooth_l1", pred - target, beta=delta)
    return _reduce(losses * delta if delta != 1.0 else losses, reduction)


def _weight_variable(weight, name, what="weight"):
    if weight is None:
        return None
    return _variable(weight, name, what)


@amp.op("binary_cross_entropy")
def binary_cross_entropy(pred, target, weight=None, reduction="mean"):
    """``-w (t log p + (1 - t) log(1 - p))``; ``p`` must be probabilities in [0, 1] (else NaN), logs
    clamped at -100 as torch does; ``weight`` broadcasts against the input."""
    _check_reduction("binary_cross_entropy", reduction)
    target = _variable(target, "binary_cross_entropy", "target")
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

    losses = record("BinaryCrossEntropyBackward", losses, [pred, target], rule, saved=(p, t), vrule=_bce_vrule)
    w = _weight_variable(weight, "binary_cross_entropy")
    if w is not None:
        losses = losses * w
    return _reduce(losses, reduction)


def _bce_vrule(ctx, g):
    ps, ts = ctx.saved_tensors
    p, t = ctx.input(0, ps), ctx.input(1, ts)
    gp = gt = None
    if ctx.needs_input_grad[0]:
        inside = elementwise("(p >= L(0.0) && p <= L(1.0)) ? 1 : 0", [ps], names=("p",), dtype="int32")
        gp = dv.select(inside, g * (p - t) / ((1.0 - p) * p).clamp(min=1e-12), float("nan"))
    if ctx.needs_input_grad[1]:
        gt = g * ((1.0 - p).log().clamp(min=-100.0) - p.log().clamp(min=-100.0))
    return gp, gt


@amp.op("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(logits, target, weight=None, reduction="mean", pos_weight=None):
    """``-w (pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))`` without overflow at any ``x``.

    Written ``(1 - t) x - (1 + (pw - 1) t) logsigmoid(x)`` (torch's form), differentiable in the input,
    the target and ``pos_weight`` (which broadcasts along the last axis, one per class).
    """
    name = "binary_cross_entropy_with_logits"
    _check_reduction(name, reduction)
    target = _variable(target, name, "target")
    _check_same_shape(name, logits, target)
    ls = logits.logsigmoid()
    pw = _weight_variable(pos_weight, name, "pos_weight")
    if pw is not None:
        lw = (pw - 1.0) * target + 1.0
        losses = (1.0 - target) * logits - lw * ls
    else:
        losses = (1.0 - target) * logits - ls
    w = _weight_variable(weight, name)
    if w is not None:
        losses = losses * w
    return _reduce(losses, reduction)


@amp.op("kl_div")
def kl_div(input, target, reduction="mean", log_target=False):
    """torch's ``kl_div``: ``input`` holds log-probabilities; pointwise ``t (log t - input)`` (with
    ``log_target``, ``exp(t) (t - input)``). ``reduction="batchmean"`` divides the sum by the batch size."""
    _check_reduction("kl_div", reduction, ("batchmean",))
    target = _variable(target, "kl_div", "target")
    _check_same_shape("kl_div", input, target)
    losses = binary("kl_div_log_target" if log_target else "kl_div", input, target)
    if reduction == "batchmean":
        n = input.shape()[0] if input.ndim() else 1
        return losses.sum() / float(n) if n != 1 else losses.sum()
    return _reduce(losses, reduction)


# ------------------------------------------------------------------------------------------------------
# Class-index losses: one row kernel each way
# ------------------------------------------------------------------------------------------------------

def _class_indices(targets, n, c, device, ignore_index=None, shape=None) -> Tensor:
    """Targets as an int32 tensor of n class indices; lists are range-checked on the host
    (``ignore_index`` is allowed)."""
    want = [n] if shape is None else list(shape)
    if isinstance(targets, Tensor):
        t = targets
    elif callable(getattr(targets, "data", None)) and isinstance(targets.data(), Tensor):
        t = targets.data()
    else:
        scalar_ok = shape == [] and isinstance(targets, (int, np.integer)) and not isinstance(targets, bool)
        if isinstance(targets, (str, bytes)) or not (hasattr(targets, "__len__") or scalar_ok):
            raise TypeError(f"targets: expected a list of class indices or a Tensor, got {type(targets).__name__}")
        arr = np.asarray(targets)
        if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not np.all(arr == np.floor(arr))):
            raise TypeError(f"targets: class indices must be integers, got {list(arr.reshape(-1)[:5])}...")
        if list(arr.shape) != want:
            raise ValueError(f"targets: expected {want if shape is not None else n} class indices "
                             f"(one per row of the input), got shape {list(arr.shape)}")
        flat = arr.reshape(-1)
        bad = ((flat < 0) | (flat >= c)) & (flat != (ignore_index if ignore_index is not None else -1 - 2**40))
        if bad.any():
            raise IndexError(f"targets: class index {flat[bad][0]} is out of range for {c} classes")
        return Tensor.from_numpy(flat.astype(np.int32), dtype="int32", device=device)
    if t.shape() != want:
        raise ValueError(f"targets: expected shape {want} (one index per row), got {t.shape()}")
    if t.dtype.kind != "i":
        # A float tensor would be truncated (2.7 -> class 2) without a word; torch refuses it too.
        raise TypeError(f"targets: class indices must be an int32 or int64 tensor, got a {t.dtype} tensor; "
                        "convert it with .astype('int64') if its values are whole numbers")
    return as_index(t, "targets").reshape([n])


def _brief_targets(t) -> str:
    if isinstance(t, Tensor) or callable(getattr(t, "data", None)):
        return f"of shape {(t if isinstance(t, Tensor) else t.data()).shape()}"
    text = repr(t)
    return text if len(text) <= 40 else text[:37] + "..."


def _as_rows(name, a, targets, ignore_index):
    """(rows Variable [R, C], int32 targets [R], shape of the per-row result) for [C], [N, C], [N, C, d...]."""
    nd = a.ndim()
    if nd == 0:
        raise ValueError(f"{name}: expected input of shape [N, C] or [N, C, d1, ...], got {a.shape()}")
    if nd == 1:   # unbatched: one row, a 0-d target
        c = a.shape()[0]
        t = targets
        tt = t if isinstance(t, Tensor) else t.data() if callable(getattr(t, "data", None)) else None
        scalar = (isinstance(t, (int, np.integer)) and not isinstance(t, bool)) or (tt is not None and tt.ndim() == 0)
        if not scalar:
            raise ValueError(f"{name}: expected input of shape [N, C] or [N, C, d1, ...] (or [C] with one class "
                             f"index, unbatched), got input {a.shape()} with targets {_brief_targets(t)}")
        idx = _class_indices(t, 1, c, a.device, ignore_index, shape=[])
        return a.reshape([1, c]), idx, []
    shape = a.shape()
    c = shape[1]
    if nd == 2:
        n = shape[0]
        if n == 0:
            raise ValueError(f"{name}: empty batch (input has 0 rows)")
        return a, _class_indices(targets, n, c, a.device, ignore_index), [n]
    # torch's [N, C, d1, ...]: the class axis moved last, every position a row of its own.
    batch = [shape[0]] + shape[2:]
    rows = a.permute([0] + list(range(2, nd)) + [1]).reshape([-1, c])
    tt = targets if isinstance(targets, Tensor) else targets.data() if callable(getattr(targets, "data", None)) \
        else None
    given = tt.shape() if tt is not None else list(np.shape(targets))
    if given != batch:
        raise ValueError(f"{name}: targets of shape {given} for logits {shape}; expected {batch}")
    idx = _class_indices(targets, math.prod(batch), c, a.device, ignore_index, shape=batch)
    if math.prod(batch) == 0:
        raise ValueError(f"{name}: empty batch (input has 0 rows)")
    return rows, idx, batch


def _float32(v):
    """A 16-bit float Tensor or Variable as float32 (differentiably); anything else as it is."""
    d = v.data() if callable(getattr(v, "data", None)) else v
    if not isinstance(d, Tensor) or d.dtype.kind != "f" or d.dtype.itemsize != 2:
        return v
    return d.astype(np.float32) if d is v else v.to(np.float32)


def _class_loss(name, a, targets, weight, ignore_index, reduction, label_smoothing, nll):
    # Under autocast the loss of 16-bit logits is float32 (its kernels read them as they are).
    float32_result = amp.float32_result()
    _check_reduction(name, reduction)
    ignore_index = as_int(ignore_index, f"{name}: ignore_index")
    label_smoothing = as_float(label_smoothing, f"{name}: label_smoothing")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing}")
    rows, idx, out_shape = _as_rows(name, a, targets, ignore_index)
    x = _floats(rows.data())
    R, C = x._shape
    w = None
    if weight is not None:
        w = weight.data() if not isinstance(weight, Tensor) else weight
        if not isinstance(w, Tensor):
            raise TypeError(f"{name}: weight must be a Tensor or Variable, got {type(weight).__name__}")
        if w.shape() != [C]:
            raise ValueError(f"{name}: weight of shape {w.shape()} for {C} classes (input {a.shape()})")
        w = w if w.dtype == x.dtype else w.astype(x.dtype)
    mean = reduction == "mean"
    per_row, lse = cross_entropy_rows(x, idx, w, ignore_index, label_smoothing, nll=nll, count=mean)
    den = None
    if reduction == "none":
        loss = per_row.reshape(out_shape)
    elif reduction == "sum":
        loss = reduce(per_row, "sum")
    else:
        den = reduce(per_row, "sum", 1)   # [summed weights, summed losses]
        loss = elementwise("b / a", [View(den, (), (), 0), View(den, (), (), 1)], op=name)
    if C == 0:   # no class to pick: no row carries the NaN, and a sum of nothing would say 0
        loss = Tensor.full(loss._shape, float("nan"), x.dtype, x.device)
    if loss.dtype != x.dtype and not float32_result:
        loss = loss.astype(x.dtype)   # 16-bit logits: computed in float32, the loss rounded once to their type (torch)

    def rule(ctx, g):
        saved = list(ctx.saved_tensors)
        xs, ids, l = saved[:3]
        ws = saved[3] if ctx.attrs["weighted"] else None
        dens = saved[-1] if ctx.attrs["mean"] else None
        gr = g.reshape([g.numel()]) if g.ndim() != 1 else g
        return cross_entropy_rows_backward(gr, xs, ids, l, 1.0, ws, ctx.attrs["ignore_index"],
                                           ctx.attrs["label_smoothing"], nll=ctx.attrs["nll"], den=dens)

    saved = (x, idx, lse) + ((w,) if w is not None else ()) + ((den,) if den is not None else ())
    return record("NllLossBackward" if nll else "CrossEntropyBackward", loss, [rows], rule, saved=saved,
                  weighted=w is not None, mean=mean, ignore_index=ignore_index, label_smoothing=label_smoothing,
                  nll=nll, vrule=_class_loss_vrule)


def _class_weights(ids, w, rows, cols, ignore_index, smoothing, dtype):
    """The constant [rows, cols] matrix A with each row's loss ``-sum_c A[r, c] log_softmax(x)[r, c]``:
    ``w[c] ((1 - eps) [c == t] + eps / C)``, zero on rows whose target is ignored or out of range."""
    shape = (rows, cols)
    # Ones without class weights: a float operand also makes the kernel compute in the input's float type.
    w = w if w is not None else Tensor.ones((cols,), dtype, ids.device)
    return elementwise("(t == ign || t < 0 || t >= C) ? L(0.0) : w * ((gid % C == t ? L(1.0) - e : L(0.0)) "
                       "+ e / (T)C)", [broadcast_view(ids.reshape([rows, 1]), shape),
                                       broadcast_view(w.reshape([1, cols]), shape)],
                       names=("t", "w"), scalars={"e": smoothing}, int_scalars={"C": cols, "ign": ignore_index},
                       shape=shape, dtype=dtype)


def _class_loss_vrule(ctx, g):
    """The rows' gradient over Variables: ``G (softmax(x) sum_c A - A)`` for cross-entropy and ``-G A`` for
    nll (A from :func:`_class_weights`, G the incoming gradient per row, over the summed weights for a
    mean); differentiable to any order through softmax."""
    saved = ctx.saved_tensors
    xs, ids = saved[0], saved[1]
    attrs = ctx.attrs
    rows, cols = xs._shape
    if xs.numel() == 0:
        return dv.zeros(ctx.input(0, xs))
    dtype = np.dtype(np.float32) if xs.dtype.itemsize == 2 else xs.dtype   # the kernels' arithmetic
    a = _class_weights(ids, saved[3] if attrs["weighted"] else None, rows, cols, attrs["ignore_index"],
                       attrs["label_smoothing"], dtype)
    gr = g.reshape([g.numel(), 1])   # one gradient for the whole loss, or one per row ("none")
    if attrs["mean"]:
        # Over the summed weights, on the rows that count (an ignored row stays 0 when all are ignored).
        den = saved[-1]
        per_row = elementwise("(t == ign || t < 0 || t >= C) ? L(0.0) : L(1.0) / d",
                              [ids.reshape([rows, 1]), View(den, (), (), 0)], names=("t", "d"),
                              int_scalars={"C": cols, "ign": attrs["ignore_index"]}, dtype=dtype)
        gr = gr * dv.const(g, per_row)
    if attrs["nll"]:
        gx = gr * dv.const(g, elementwise("-a", [a], names=("a",)))
    else:
        x = ctx.input(0, xs)
        x = x if x.dtype == dtype else x.to(dtype)
        gx = gr * (x.softmax(1) * dv.const(g, reduce(a, "sum", 1, keepdim=True)) - dv.const(g, a))
    return gx if gx.dtype == xs.dtype else gx.to(xs.dtype)   # 16-bit logits: rounded once, as the kernel


@amp.op("nll_loss", reads_16bit=True)
def nll_loss(log_probs, targets, weight=None, ignore_index=-100, reduction="mean"):
    """torch's ``nll_loss``: ``-weight[t] * input[t]`` per row of log-probabilities ``[N, C]``
    (``[C]`` or ``[N, C, d1, ...]`` too); a mean divides by the summed weights of the rows not ignored.

    A target outside [0, C) read from a device Tensor makes the loss NaN (lists raise IndexError).
    """
    return _class_loss("nll_loss", log_probs, targets, weight, ignore_index, reduction, 0.0, nll=True)


@amp.op("cross_entropy", reads_16bit=True)
def cross_entropy(logits, targets, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """torch's ``cross_entropy`` over logits ``[N, C]`` (``[C]``, ``[N, C, d1, ...]``) against class
    indices (a list or an int32 Tensor), or against class probabilities (a float Tensor or Variable of
    the input's shape).

    Class indices run one fused row kernel each way (the same values as ``nll_loss(log_softmax(x, 1),
    t)``); a target outside [0, C) other than ``ignore_index`` read from a device Tensor makes the loss
    NaN (lists raise IndexError).
    """
    t = targets.data() if callable(getattr(targets, "data", None)) else targets
    if isinstance(t, Tensor) and t.dtype.kind == "f" and t.shape() == logits.shape():
        if amp.float32_result():   # composed from ops that would stay 16-bit: autocast's float32 copies
            logits, targets, weight = (_float32(v) for v in (logits, targets, weight))
        return _soft_cross_entropy(logits, _variable(targets, "cross_entropy", "target"), weight, reduction,
                                   label_smoothing)
    return _class_loss("cross_entropy", logits, targets, weight, ignore_index, reduction, label_smoothing, nll=False)


def _soft_cross_entropy(logits, target, weight, reduction, label_smoothing):
    """Probabilities as targets: ``-sum_c w_c t_c log_softmax(x)_c`` over the class axis (1)."""
    _check_reduction("cross_entropy", reduction)
    _check_same_shape("cross_entropy", logits, target)
    label_smoothing = as_float(label_smoothing, "cross_entropy: label_smoothing")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    dim = 0 if logits.ndim() == 1 else 1
    c = logits.shape()[dim]
    logp = logits.log_softmax(dim)
    if label_smoothing > 0:
        target = target * (1.0 - label_smoothing) + label_smoothing / c
    prod = logp * target
    if weight is not None:
        w = _variable(weight, "cross_entropy", "weight")
        if w.shape() != [c]:
            raise ValueError(f"cross_entropy: weight of shape {w.shape()} for {c} classes")
        prod = prod * (w.reshape([c] + [1] * (logits.ndim() - dim - 1)))
    losses = -prod.sum(dim)
    if reduction == "mean":
        n = logits.numel() // c if c else 0
        return losses.sum() / float(n) if n != 1 else losses.sum()
    return _reduce(losses, reduction)
