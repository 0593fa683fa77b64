"""Layers and losses as functions (``import axonml_autograd.nn.functional as F``), PyTorch's argument order.

>>> from axonml_autograd import Tensor, Variable
>>> import axonml_autograd.nn.functional as F
>>> w = Variable(Tensor.from_vec([0.0, 1.0, 10.0, 11.0, 20.0, 21.0], [3, 2]), requires_grad=True)
>>> F.embedding([[2, 0]], w).to_vec()
[20.0, 21.0, 0.0, 1.0]
>>> logits = Variable(Tensor.from_vec([2.0, 0.0, 0.0, 2.0], [2, 2]), requires_grad=True)
>>> round(F.cross_entropy(logits, [0, -100]).item(), 4)      # the second row is ignored
0.1269
>>> F.one_hot([2, 0], 3).to_vec()
[0, 0, 1, 1, 0, 0]
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import amp
from ..elementwise_kernels import broadcast_view, elementwise
from .. import surface as _surface
from ..functions import activation as _act
from ..functions import linalg as _linalg
from ..functions import loss as _loss
from ..functions import norm as _norm
from ..functions import resample as _resample
from ..functions.resample import (adaptive_max_pool2d, avg_pool1d, fold, interpolate, max_pool1d, pixel_shuffle,
                                  pixel_unshuffle, unfold)
from ..functions.conv import (adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, conv_transpose1d, conv_transpose2d,
                              max_pool2d)
from ..functions.indexing import embedding as _embedding
from ..grad_fn import record
from ..tensor import Tensor, View, cat
from ..variable import Variable
from ..shapes import as_float, as_int, broadcast_shapes, contiguous_strides
from ..elementwise_kernels import copy_view

__all__ = ["normalize", "cosine_similarity", "scaled_dot_product_attention", "linear", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "max_pool2d", "max_pool1d", "avg_pool1d", "adaptive_max_pool2d", "interpolate", "upsample", "pixel_shuffle", "pixel_unshuffle", "unfold", "fold", "avg_pool2d", "adaptive_avg_pool2d", "embedding", "embedding_bag", "dropout", "dropout2d", "prelu", "instance_norm", "layer_norm", "batch_norm", "group_norm", "one_hot", "pad",
           "relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "softmax", "log_softmax", "softplus", "elu",
           "cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss",
           "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div"]


def _var(x, op, what="input"):
    from ..variable import as_variable
    return as_variable(x, op, what)


def _opt_var(x, op, what):
    return None if x is None else _var(x, op, what)


def _probability(p, op):
    p = as_float(p, f"{op}: p")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    return p


# -- layers -------------------------------------------------------------------------------------------------

def linear(input, weight, bias=None, *, layout="torch"):
    """``input @ weight^T + bias`` with torch's ``[out, in]`` weight; ``layout="in_out"`` takes the
    crate's ``[in, out]`` weight (``nn.Linear``'s) and computes ``input @ weight + bias``.

    >>> from axonml_autograd import Tensor, Variable
    >>> x = Variable(Tensor.ones([2, 3]))
    >>> linear(x, Variable(Tensor.ones([4, 3]))).shape()
    [2, 4]
    """
    x, w = _var(input, "linear"), _var(weight, "linear", "weight")
    b = _opt_var(bias, "linear", "bias")
    if layout == "in_out":
        if w.ndim() != 2 or x.ndim() == 0 or x.shape()[-1] != w.shape()[0]:
            raise ValueError(f"linear: input of shape {x.shape()} does not fit weight {w.shape()} "
                             f"(layout in_out: expected input [..., {w.shape()[0] if w.ndim() else '?'}])")
        y = x.matmul(w)
        return y.add_var(b) if b is not None else y
    if layout != "torch":
        raise ValueError(f"linear: layout must be 'torch' ([out, in]) or 'in_out' ([in, out]), got {layout!r}")
    return _linalg.linear(x, w, b)


def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` [V, D] for every index in ``input`` (a list or an int32 Tensor, any shape).

    With ``padding_idx`` the rows looked up at that index pass no gradient to the weight (torch's rule).
    """
    w = _var(weight, "embedding", "weight")
    if padding_idx is None:
        return _embedding(input, w)
    v = w.shape()[0] if w.ndim() == 2 else 0
    pad_i = as_int(padding_idx, "embedding: padding_idx")
    if not -v <= pad_i < v:
        raise ValueError(f"embedding: padding_idx {pad_i} is out of range for {v} embeddings")
    pad_i %= max(v, 1)
    idx = input.data() if callable(getattr(input, "data", None)) and not isinstance(input, Tensor) else input
    if not isinstance(idx, Tensor):
        arr = np.asarray(idx)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"embedding: indices must be integers, got {arr.dtype}")
        idx = Tensor.from_numpy(arr.astype(np.int32), dtype="int32", device=w.device)
    rows = _embedding(idx, w)
    # The same values either way; the gradient reaches the weight only where the index is not padding.
    keep = elementwise("(int)(i != p)", [idx.reshape(idx.shape() + [1])], names=("i",), int_scalars={"p": pad_i},
                         op="embedding", dtype=np.int32)
    return rows.where(keep, rows.detach())


def _index_tensor(x, device, what):
    """An integer index Tensor from a list, a Tensor or a Variable."""
    t = x.data() if callable(getattr(x, "data", None)) and not isinstance(x, Tensor) else x
    if not isinstance(t, Tensor):
        arr = np.asarray(t)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{what} must be integers, got {arr.dtype}")
        t = Tensor.from_numpy(arr.astype(np.int32), dtype="int32", device=device)
    elif t.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got {t.dtype}")
    return t


def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False, mode="mean",
                  sparse=False, per_sample_weights=None, include_last_offset=False, padding_idx=None):
    """torch's ``embedding_bag``: the sum, mean or max of the embedding rows of each bag. Bags are the rows
    of a 2-D ``input`` [B, L], or the runs of a 1-D ``input`` starting at ``offsets`` [B] (with
    ``include_last_offset`` the last offset ends the last bag). An empty bag gives zeros; ``padding_idx``
    entries are left out (and not counted by ``mean``). On the device: a [B, T] bag matrix times the
    looked-up rows (``max``: a masked maximum over [B, T, D]).

    >>> from axonml_autograd import Tensor, Variable
    >>> w = Variable(Tensor.from_vec([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2]))
    >>> embedding_bag([0, 2, 1], w, offsets=[0, 2], mode="sum").to_vec()
    [6.0, 8.0, 3.0, 4.0]
    """
    w = _var(weight, "embedding_bag", "weight")
    if mode not in ("sum", "mean", "max"):
        raise ValueError(f"embedding_bag: mode must be 'sum', 'mean' or 'max', got {mode!r}")
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding_bag: max_norm, scale_grad_by_freq and sparse are not supported")
    if w.ndim() != 2:
        raise ValueError(f"embedding_bag: weight must be 2-D [num_embeddings, dim], got shape {w.shape()}")
    dev = w.data().device
    idx = _index_tensor(input, dev, "embedding_bag: input")
    if idx.ndim() == 2:
        if offsets is not None:
            raise ValueError(f"embedding_bag: offsets must be None for a 2-D input (shape {idx.shape()})")
        B, L = idx.shape()
        starts = Tensor.from_numpy(np.arange(B, dtype=np.int32) * L, dtype="int32", device=dev) if B else None
        idx = idx.reshape([B * L])
    elif idx.ndim() == 1:
        if offsets is None:
            raise ValueError("embedding_bag: a 1-D input needs offsets (the start of each bag)")
        starts = _index_tensor(offsets, dev, "embedding_bag: offsets")
        if starts.ndim() != 1:
            raise ValueError(f"embedding_bag: offsets must be 1-D, got shape {starts.shape()}")
        if include_last_offset:
            if starts.shape()[0] < 1:
                raise ValueError("embedding_bag: include_last_offset needs at least one offset")
            starts = starts.narrow(0, 0, starts.shape()[0] - 1)
        B = starts.shape()[0]
    else:
        raise ValueError(f"embedding_bag: input must be 1-D (with offsets) or 2-D, got shape {idx.shape()}")
    T, D = idx.shape()[0], w.shape()[1]
    if B == 0 or T == 0:
        return Variable(Tensor.zeros([B, D], w.dtype, dev)) if not w.requires_grad() else (w.sum() * 0.0).expand([B, D])
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError("embedding_bag: per_sample_weights is only supported with mode='sum' (as torch)")
    ends = cat([starts.narrow(0, 1, B - 1), Tensor.full([1], T, starts.dtype, dev)]) if B > 1 else \
        Tensor.full([1], T, starts.dtype, dev)
    pad = -1 if padding_idx is None else as_int(padding_idx, "embedding_bag: padding_idx") % w.shape()[0]
    # member[b, t]: token t belongs to bag b (and is not padding)
    member = elementwise("(s <= (gid % nt) && (gid % nt) < e && i != pad) ? L(1.0) : L(0.0)",
                         [starts.reshape([B, 1]), ends.reshape([B, 1]), idx.reshape([1, T])], names=("s", "e", "i"),
                         int_scalars={"nt": T, "pad": pad}, shape=[B, T], dtype=w.dtype, op="embedding_bag")
    rows = _embedding(idx, w)                                                      # [T, D]
    if mode == "max":
        scores = rows.reshape(1, T, D).expand([B, T, D]).masked_fill(
            elementwise("m == 0", [member.reshape([B, T, 1])], names=("m",), op="embedding_bag"), float("-inf"))
        best = scores.max(1).values
        empty = elementwise("c == 0", [member.sum(1).reshape([B, 1])], names=("c",), op="embedding_bag")
        return best.masked_fill(empty, 0.0)
    if mode == "mean":
        member = elementwise("m / max(c, L(1.0))", [member, member.sum(1).reshape([B, 1])], names=("m", "c"),
                             op="embedding_bag")
    weights = Variable(member)
    if per_sample_weights is not None:
        psw = _var(per_sample_weights, "embedding_bag", "per_sample_weights")
        if psw.shape() != [T]:
            raise ValueError(f"embedding_bag: per_sample_weights must have the input's shape, got {psw.shape()} "
                             f"for {T} indices")
        weights = weights * psw.reshape(1, T)
    return weights.matmul(rows)


@amp.op("prelu")
def prelu(input, weight):
    """``max(0, x) + weight * min(0, x)`` with ``weight`` one number or one per channel (dim 1; dim 0 of a
    1-D input). The gradient at 0 is torch's (``weight``)."""
    x, w = _var(input, "prelu"), _var(weight, "prelu", "weight")
    n = w.numel()
    if n != 1:
        ch = 1 if x.ndim() >= 2 else 0
        if x.ndim() == 0 or x.shape()[ch] != n:
            raise ValueError(f"prelu: {n} weights do not fit input of shape {x.shape()} (channels are dim {ch})")
        shape = [1] * x.ndim()
        shape[ch] = n
        w = w.reshape(*shape)
    elif w.ndim():
        w = w.reshape([])
    positive = elementwise("a > 0", [x.data()], op="prelu")
    return x.where(positive, w * x)


def dropout2d(input, p=0.5, training=True):
    """Zero whole channels of ``[N, C, H, W]`` (or ``[N, C, L]``, torch's channel-wise reading of 3-D input)
    with probability ``p``, scaling the kept ones by ``1/(1-p)``; the identity when not ``training``."""
    x = _var(input, "dropout2d")
    p = _probability(p, "dropout2d")
    if x.ndim() not in (3, 4):
        raise ValueError(f"dropout2d: expected a 3-D or 4-D input, got shape {x.shape()}")
    if not training or p == 0.0:
        return x
    shape = x.shape()[:2] + [1] * (x.ndim() - 2)
    if p >= 1.0:
        return x * 0.0
    u = Tensor.rand(shape, dtype=x.dtype, device=x.data().device)
    mask = elementwise("u >= p ? s : L(0.0)", [u], names=("u",), scalars={"p": p, "s": 1.0 / (1.0 - p)},
                       op="dropout2d")
    return x * Variable(mask)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Normalise each channel of each sample of ``[N, C, ...]`` over its spatial positions (torch's
    ``instance_norm``); with running statistics and ``use_input_stats`` they are updated on the device
    with the mean over the batch of the per-instance statistics (unbiased variance), and without
    ``use_input_stats`` they normalise instead."""
    x = _var(input, "instance_norm")
    if x.ndim() < 3:
        raise ValueError(f"instance_norm: expected [N, C, ...] with at least one spatial dim, got {x.shape()}")
    N, C = x.shape()[:2]
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError("instance_norm: use_input_stats=False needs running_mean and running_var")
        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    y = group_norm(x, C, weight, bias, eps)
    if running_mean is not None and running_var is not None:
        m = as_float(momentum, "instance_norm: momentum")
        from ..no_grad import no_grad
        with no_grad():
            flat = x.detach().reshape(N, C, -1)
            mean = flat.mean(2).mean(0).data()
            var = flat.var(2).mean(0).data()
        rm, rv = (r.data() if isinstance(r, Variable) else r for r in (running_mean, running_var))
        elementwise("(L(1.0) - m) * r + m * v", [rm, mean], names=("r", "v"), scalars={"m": m}, out=rm.view(),
                    op="instance_norm")
        elementwise("(L(1.0) - m) * r + m * v", [rv, var], names=("r", "v"), scalars={"m": m}, out=rv.view(),
                    op="instance_norm")
    return y


def dropout(input, p=0.5, training=True):
    """Zero each element with probability ``p`` (a fresh mask from the device generator at every call,
    captured replays included) and scale the rest by ``1/(1-p)``; the identity when not ``training``."""
    x = _var(input, "dropout")
    p = _probability(p, "dropout")
    if not training or p == 0.0:
        return x
    return _act.dropout(x, p)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing ``normalized_shape`` axes (mean 0, variance 1, biased), then
    ``* weight + bias``: one kernel forward, one (plus a column sum for weight and bias) backward."""
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    return _norm.layer_norm(_var(input, "layer_norm"), tuple(normalized_shape),
                            _opt_var(weight, "layer_norm", "weight"), _opt_var(bias, "layer_norm", "bias"),
                            as_float(eps, "layer_norm: eps"))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               num_batches_tracked=None):
    """Per-channel normalisation of ``[N, C, ...]``: the batch's statistics when ``training`` (updating
    the running ones in place on the device), else the running statistics. One kernel each way."""
    if momentum is not None:
        momentum = as_float(momentum, "batch_norm: momentum")
    return _norm.batch_norm(_var(input, "batch_norm"), running_mean, running_var,
                            _opt_var(weight, "batch_norm", "weight"), _opt_var(bias, "batch_norm", "bias"),
                            bool(training), momentum, as_float(eps, "batch_norm: eps"), num_batches_tracked)


@amp.op("group_norm")
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise ``[N, C, ...]`` over each group of ``C / num_groups`` channels (and the spatial axes),
    then a per-channel ``* weight + bias``: layer_norm's kernels over ``[N * G, rest]`` rows."""
    x = _var(input, "group_norm")
    g = as_int(num_groups, "group_norm: num_groups")
    shape = x.shape()
    if len(shape) < 2:
        raise ValueError(f"group_norm: expected input of shape [N, C, ...], got {shape}")
    n, c = shape[0], shape[1]
    if g <= 0 or c % g:
        raise ValueError(f"group_norm: num_groups {g} must divide the number of channels {c}")
    rest = math.prod(shape[1:]) // g
    y = _norm.layer_norm(x.reshape([n * g, rest]), (rest,), None, None, as_float(eps, "group_norm: eps"))
    y = y.reshape(shape)
    affine_shape = [1, c] + [1] * (len(shape) - 2)
    for what, p in (("weight", weight), ("bias", bias)):
        if p is not None and list(p.shape()) != [c]:
            raise ValueError(f"group_norm: {what} of shape {list(p.shape())} for {c} channels")
    if weight is not None:
        y = y * _var(weight, "group_norm", "weight").reshape(affine_shape)
    if bias is not None:
        y = y + _var(bias, "group_norm", "bias").reshape(affine_shape)
    return y


def one_hot(tensor, num_classes=-1) -> Tensor:
    """int32 ``[..., num_classes]`` with a 1 at each index (no gradient). ``num_classes=-1`` takes
    ``max + 1`` of a list; a device Tensor needs ``num_classes`` (finding the max would be a read)."""
    num_classes = as_int(num_classes, "one_hot: num_classes")
    if isinstance(tensor, Tensor) or callable(getattr(tensor, "data", None)):
        idx = tensor if isinstance(tensor, Tensor) else tensor.data()
        if idx.dtype != np.int32:
            raise TypeError(f"one_hot: indices must be an int32 tensor, got {idx.dtype}")
        if num_classes < 0:
            raise ValueError("one_hot: give num_classes for a device tensor of indices")
    else:
        arr = np.asarray(tensor)
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"one_hot: indices must be integers, got {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise ValueError(f"one_hot: class values must be non-negative, got {int(arr.min())}")
        if num_classes < 0:
            num_classes = int(arr.max()) + 1 if arr.size else 0
        elif arr.size and arr.max() >= num_classes:
            raise ValueError(f"one_hot: class value {int(arr.max())} is out of range for {num_classes} classes")
        idx = Tensor.from_numpy(arr.astype(np.int32), dtype="int32")
    shape = tuple(idx.shape()) + (num_classes,)
    if math.prod(shape) == 0:
        return Tensor(shape, "int32", idx.device)
    column = broadcast_view(idx.reshape(list(idx.shape()) + [1]), shape)
    return elementwise("(int)(i == gid % C)", [column], names=("i",), int_scalars={"C": num_classes},
                         op="one_hot", dtype=np.int32)


def pad(input, pad, mode="constant", value=None):
    """torch's ``F.pad``: ``pad = (left, right)`` for the last axis, then ``(top, bottom)`` for the one
    before, ...; constant mode with ``value`` (default 0; non-negative pads), or mode ``"reflect"``,
    ``"replicate"``, ``"circular"`` over the last 1-3 axes (see ``functions.resample.pad``).

    >>> from axonml_autograd import Tensor
    >>> pad(Tensor.from_vec([1.0, 2.0, 3.0], [1, 3]), (1, 2), mode="circular").to_vec()
    [3.0, 1.0, 2.0, 3.0, 1.0, 2.0]
    """
    x = _var(input, "pad")
    if mode in ("reflect", "replicate", "circular"):
        if value is not None:
            raise ValueError(f"pad: padding mode {mode!r} doesn't take in value argument")
        return _resample.pad(x, pad, mode)
    if mode != "constant":
        raise ValueError(f"pad: mode {mode!r} is not supported (supported: 'constant', 'reflect', 'replicate', "
                         f"'circular')")
    if value is None:
        value = 0.0
    if not isinstance(pad, (list, tuple)) or len(pad) % 2 or len(pad) // 2 > x.ndim():
        raise ValueError(f"pad: expected an even number of pads, at most 2 per axis of the input {x.shape()}, "
                         f"got {pad!r}")
    pads = [as_int(p, "pad: pad") for p in pad]
    if any(p < 0 for p in pads):
        raise ValueError(f"pad: negative pads are not supported, got {pads}")
    value = as_float(value, "pad: value")
    data = x.data()
    shape = list(data._shape)
    before, out_shape = [0] * len(shape), list(shape)
    for k in range(len(pads) // 2):
        axis = len(shape) - 1 - k
        before[axis] = pads[2 * k]
        out_shape[axis] += pads[2 * k] + pads[2 * k + 1]
    st = contiguous_strides(out_shape)
    offset = sum(b * s for b, s in zip(before, st))
    out = Tensor.full(out_shape, value, data.dtype, data.device)
    if data.numel():
        elementwise("a", [data], out=View(out, data._shape, st, offset), op="pad")
        out._version = 0

    def rule(ctx, g):
        return copy_view(View(g, ctx.attrs["shape"], ctx.attrs["strides"], ctx.attrs["offset"]))

    return record("ConstantPadNdBackward", out, [x], rule, shape=data._shape, strides=st, offset=offset,
                  vrule=_pad_vrule)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """torch's deprecated ``F.upsample``: ``interpolate``."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def _pad_vrule(ctx, g):
    # The gradient reads the input's window out of g: a differentiable window (its own gradient writes back).
    from ..functions.shape import window
    return window(g, ctx.attrs["shape"], ctx.attrs["strides"], ctx.attrs["offset"])


# -- activations (the Variable methods, in torch's spelling) ----------------------------------------------

def gelu(input, approximate="none"): return _var(input, "gelu").gelu(approximate)


# relu, leaky_relu, sigmoid, tanh, silu, softplus, elu, selu, mish, hardtanh, logsigmoid: from the registry.
_ENTRIES = _surface.functional_entries(lambda x, op: _var(x, op))
globals().update(_ENTRIES)
__all__ += [n for n in _ENTRIES if n not in __all__]


@amp.op("normalize")
def normalize(input, p=2.0, dim=1, eps=1e-12):
    """torch's ``F.normalize``: ``x / max(||x||_p, eps)`` along ``dim``."""
    x = _var(input, "normalize")
    return x / x.norm(p, dim, keepdim=True).clamp(min=eps)


@amp.op("cosine_similarity")
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """torch's ``F.cosine_similarity``: ``x1 . x2 / sqrt(max(||x1||^2 ||x2||^2, eps^2))`` along ``dim``
    (the inputs broadcast)."""
    a, b = _var(x1, "cosine_similarity", "x1"), _var(x2, "cosine_similarity", "x2")
    w12 = (a * b).sum(dim)
    w1, w2 = (a * a).sum(dim), (b * b).sum(dim)
    return w12 / (w1 * w2).clamp(min=eps * eps).sqrt()


@amp.op("scaled_dot_product_attention")
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """torch's ``F.scaled_dot_product_attention``: ``softmax(q k^T * scale + mask) v`` over the last two
    axes (any leading batch/head axes broadcast). ``attn_mask``: a bool mask (True keeps) or an additive
    float mask, broadcastable to [..., L, S]; ``is_causal``: query i sees keys j <= i (torch's top-left
    alignment when L != S).

    float32/float64 inputs run the fused kernels (functions/attention.py: online softmax, no [L, S]
    matrix in memory, memory linear in the sequence length, ``dropout_p`` applied inside them from the
    device generator); a query row whose keys are all masked gives zeros there, as torch does. Otherwise
    (a value width other than the query's, a mask that needs a gradient, ``dropout_p`` = 1, mixed dtypes
    or devices) it is composed from differentiable ops, where such a row gives NaN. float16/bfloat16
    inputs run the fused kernels on float32 copies (the result rounded once to the input's type). Both have gradients of every order (the fused op's differentiable rule recomputes the
    composed maths for ``create_graph=True``) and run inside ``capture``.

    >>> from axonml_autograd import Tensor
    >>> q = Tensor.ones([1, 2, 4])
    >>> scaled_dot_product_attention(q, q, q, is_causal=True).shape()
    [1, 2, 4]
    """
    q, k, v = (_var(t, "scaled_dot_product_attention", n) for t, n in ((query, "query"), (key, "key"),
                                                                      (value, "value")))
    if q.ndim() < 2 or k.ndim() < 2 or v.ndim() < 2:
        raise ValueError(f"scaled_dot_product_attention: query, key and value need at least 2 dims, got "
                         f"{q.shape()}, {k.shape()}, {v.shape()}")
    if q.shape()[-1] != k.shape()[-1] or k.shape()[-2] != v.shape()[-2]:
        raise ValueError(f"scaled_dot_product_attention: query {q.shape()}, key {k.shape()} and value "
                         f"{v.shape()} do not fit (query and key share the last dim, key and value the "
                         "second-last)")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, not both (as torch)")
    L, S = q.shape()[-2], k.shape()[-2]
    s = 1.0 / math.sqrt(q.shape()[-1]) if scale is None else as_float(scale, "scaled_dot_product_attention: scale")
    fused = _fused_attention(q, k, v, attn_mask, dropout_p, is_causal, s)
    if fused is not None:
        return fused
    scores = (q @ k.mT) * s
    if is_causal:
        # Made on the device from the element index (no upload, so capture can replay it).
        upper = elementwise("(gid % S) > (gid / S)", [], names=(), int_scalars={"S": S}, shape=(L, S),
                              dtype=np.bool_, device=q.data().device, op="causal mask")
        scores = scores.masked_fill(upper, float("-inf"))
    elif attn_mask is not None:
        m = attn_mask.data() if not isinstance(attn_mask, Tensor) and hasattr(attn_mask, "data") else attn_mask
        if not isinstance(m, Tensor):
            raise TypeError(f"scaled_dot_product_attention: attn_mask must be a Tensor or Variable, got "
                            f"{type(attn_mask).__name__}")
        if m.dtype.kind == "b":
            scores = scores.masked_fill(~m, float("-inf"))
        else:
            scores = scores + _var(attn_mask, "scaled_dot_product_attention", "attn_mask")
    weights = scores.softmax(-1)
    if dropout_p:
        weights = dropout(weights, dropout_p, True)
    return weights @ v


def _fused_attention(q, k, v, attn_mask, dropout_p, is_causal, scale):
    """The fused kernels' result, or None where the composed path must run (see the docstring above)."""
    from ..functions import attention as _attention
    dropout_p = _probability(dropout_p, "scaled_dot_product_attention")
    mask = attn_mask
    if mask is not None and not isinstance(mask, Tensor):
        if getattr(mask, "requires_grad", False) or not hasattr(mask, "data"):
            return None
        mask = mask.data()
    if mask is not None and not isinstance(mask, Tensor):
        return None
    batch = broadcast_shapes(q.shape()[:-2], k.shape()[:-2], v.shape()[:-2], op="scaled_dot_product_attention")
    q, k, v = (x if tuple(x.shape()[:-2]) == batch else x.expand(list(batch) + x.shape()[-2:]) for x in (q, k, v))
    if not _attention.can_fuse(q, k, v, mask, dropout_p):
        return None
    if mask is not None:
        full = tuple(batch) + (q.shape()[-2], k.shape()[-2])
        try:
            fits = broadcast_shapes(tuple(mask.shape()), full) == full
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {mask.shape()} does not broadcast "
                             f"to the scores' shape {list(full)}")
        if mask.dtype.kind not in "bf":
            return None
    return _attention.fused_attention(q, k, v, mask, is_causal, scale, dropout_p)


def _packed_self_attention(packed, heads, attn_mask, dropout_p):
    """MultiheadAttention's self-attention on its packed in-projection [N, L, 3E] through the fused kernels
    as one op (functions/attention.py ``packed_self_attention``), or None where the heads must be read out
    and given to :func:`scaled_dot_product_attention` (the same conditions as its fused path)."""
    from ..functions import attention as _attention
    dropout_p = _probability(dropout_p, "scaled_dot_product_attention")
    x = packed.data()
    N, L, E3 = x._shape
    D = E3 // 3 // heads
    if dropout_p >= 1.0 or (dropout_p and N * heads * L * L >= 2 ** 31) or 0 in x._shape:
        return None
    if not (x.dtype in (np.float32, np.float64) or x.dtype.itemsize == 2):
        return None
    mask = attn_mask
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype.kind not in "bf":
            return None
        full = (N, heads, L, L)
        try:
            if broadcast_shapes(tuple(mask.shape()), full) != full:
                return None
        except ValueError:
            return None
    return _attention.packed_self_attention(packed, heads, mask, False, 1.0 / math.sqrt(D), dropout_p)


def softmax(input, dim=-1): return _var(input, "softmax").softmax(dim)
def log_softmax(input, dim=-1): return _var(input, "log_softmax").log_softmax(dim)


# -- losses --------------------------------------------------------------------------------------------------

def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """torch's ``F.cross_entropy`` (class indices, or probabilities as a float tensor of the input's shape)."""
    return _loss.cross_entropy(_var(input, "cross_entropy"), target, weight, ignore_index, reduction, label_smoothing)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """torch's ``F.nll_loss`` over log-probabilities ``[N, C]`` (``[C]``, ``[N, C, d1, ...]``)."""
    return _loss.nll_loss(_var(input, "nll_loss"), target, weight, ignore_index, reduction)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    return _loss.binary_cross_entropy(_var(input, "binary_cross_entropy"), target, weight, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    return _loss.binary_cross_entropy_with_logits(_var(input, "binary_cross_entropy_with_logits"), target, weight,
                                                  reduction, pos_weight)


def mse_loss(input, target, reduction="mean"):
    return _loss.mse_loss(_var(input, "mse_loss"), target, reduction)


def l1_loss(input, target, reduction="mean"):
    return _loss.l1_loss(_var(input, "l1_loss"), target, reduction)


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    return _loss.smooth_l1_loss(_var(input, "smooth_l1_loss"), target, beta, reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    return _loss.huber_loss(_var(input, "huber_loss"), target, reduction, delta)


def kl_div(input, target, reduction="mean", log_target=False):
    return _loss.kl_div(_var(input, "kl_div"), target, reduction, log_target)
