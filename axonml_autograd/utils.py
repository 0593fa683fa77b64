"""Gradient utilities as in ``torch.nn.utils``: clipping by norm or value, parameters <-> one vector.

Everything here runs on the device and never reads from it, so it fits between ``backward()`` and
``opt.step()`` inside a captured step (:func:`axonml_autograd.capture`). :func:`clip_grad_norm_`
returns the total norm as a device tensor: read it (``.item()``) when you want to log it, not in
the step. The one exception is ``error_if_nonfinite=True``, which must look at the norm on the host
to decide whether to raise: that is one read (a wait for the device) per call, and it cannot be
captured.

>>> from axonml_autograd import Tensor, Variable
>>> w = Variable(Tensor.from_vec([3.0, 4.0], [2]), requires_grad=True)
>>> (w * w).sum().backward()                  # grad = [6, 8], norm 10
>>> norm = clip_grad_norm_([w], max_norm=5.0)
>>> round(norm.item(), 4), [round(v, 4) for v in w.grad().to_vec()]
(10.0, [3.0, 4.0])
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .tensor import Tensor, View, cat
from .shapes import contiguous_strides
from .elementwise_kernels import elementwise
from .rows import reduce

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters"]


def _variables(parameters, op) -> list:
    """``parameters`` as a list of Variables (one Variable, or any iterable of them)."""
    from .variable import Variable
    if isinstance(parameters, Variable):
        return [parameters]
    if isinstance(parameters, (Tensor, str, bytes)) or not hasattr(parameters, "__iter__"):
        raise TypeError(f"{op}: parameters must be a Variable or an iterable of Variables, "
                        f"got {type(parameters).__name__}")
    params = list(parameters)
    for k, p in enumerate(params):
        if not isinstance(p, Variable):
            raise TypeError(f"{op}: parameter {k} is a {type(p).__name__}, expected a Variable")
    return params


def _grads(parameters, op) -> list:
    """The gradients of ``parameters`` that have one; all must share a dtype and a device."""
    grads = [g for g in (p.grad for p in _variables(parameters, op)) if g is not None]
    for g in grads[1:]:
        if g.dtype != grads[0].dtype or g.device is not grads[0].device:
            raise ValueError(f"{op}: gradients must share one dtype and device, got {grads[0].dtype} on "
                             f"{grads[0].device.name} and {g.dtype} on {g.device.name}")
    return grads


def _real(value, what) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}: expected a number, got {value!r}")
    return float(value)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False) -> Tensor:
    """Scale the gradients of ``parameters`` in place so that their joint norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the total norm is the ``norm_type``-norm of all gradients
    together (``float("inf")``: the largest magnitude); every gradient is multiplied by
    ``min(1, max_norm / (total + 1e-6))``. Returns the total norm (before clipping) as a 0-d device
    Tensor. Parameters without a gradient are skipped; with none at all the norm is 0.

    No host read: the norm, the factor and the scaling are device work, the factor read by the
    scaling kernel from device memory, so the call works inside a captured step (``max_norm`` and
    ``norm_type`` are then fixed by the recording; pass them as arguments of the captured function
    to vary them). ``error_if_nonfinite=True`` reads the norm back to raise RuntimeError when it is
    NaN or infinite, as PyTorch does: one wait for the device, and not allowed in a capture.

    >>> from axonml_autograd import Tensor, Variable
    >>> a = Variable(Tensor.from_vec([1.0, -2.0], [2]), requires_grad=True)
    >>> a.set_grad(Tensor.from_vec([1.0, -2.0], [2]))
    >>> clip_grad_norm_(a, 1.0, norm_type=float("inf")).item()
    2.0
    >>> [round(v, 4) for v in a.grad().to_vec()]
    [0.5, -1.0]
    """
    op = "clip_grad_norm_"
    max_norm = _real(max_norm, f"{op} max_norm")
    norm_type = _real(norm_type, f"{op} norm_type")
    if math.isnan(norm_type) or norm_type <= 0:
        raise ValueError(f"{op}: norm_type must be a positive number or inf, got {norm_type}")
    grads = _grads(parameters, op)
    if not grads:
        return Tensor.full([], 0.0)
    inf = math.isinf(norm_type)
    # Per gradient: sum |g|^p (max |g| for inf); then across gradients, then the p-th root.
    if inf:
        expr, scalars = "fabs(a)", None
    elif norm_type == 2.0:
        expr, scalars = "a * a", None
    elif norm_type == 1.0:
        expr, scalars = "fabs(a)", None
    else:
        expr, scalars = "pow(fabs(a), p)", {"p": norm_type}
    how = "max" if inf else "sum"
    parts = [reduce(elementwise(expr, [g], scalars=scalars, op=op), how).reshape([1])
             for g in grads if g.numel()]
    if not parts:
        return Tensor.full([], 0.0, grads[0].dtype, grads[0].device)
    joint = reduce(cat(parts) if len(parts) > 1 else parts[0], how)
    if inf or norm_type == 1.0:
        total = joint
    elif norm_type == 2.0:
        total = elementwise("sqrt(a)", [joint], op=op)
    else:
        total = elementwise("pow(a, q)", [joint], scalars={"q": 1.0 / norm_type}, op=op)
    if error_if_nonfinite:
        value = total.item()     # the documented host read
        if not math.isfinite(value):
            raise RuntimeError(f"{op}: the total norm of order {norm_type} of the gradients is {value}, so they "
                               "cannot be clipped; pass error_if_nonfinite=False to clip anyway (the "
                               "gradients become NaN or zero)")
    # min(1, max_norm / (total + 1e-6)), NaN kept (torch's clamp keeps it; fmin would drop it).
    scale = elementwise("(m / (a + L(1e-6)) < L(1.0) || a != a) ? m / (a + L(1e-6)) : L(1.0)", [total],
                        scalars={"m": max_norm}, op=op)
    for g in grads:
        if g.numel():
            elementwise("a * b", [g, scale], out=g.view(), op=op)   # the factor broadcast from device memory
    return total


def clip_grad_value_(parameters, clip_value) -> None:
    """Clamp every gradient of ``parameters`` in place to ``[-clip_value, clip_value]`` (NaN stays NaN).

    One elementwise kernel per gradient, ``clip_value`` a kernel argument: no host read, no rebuild.

    >>> from axonml_autograd import Tensor, Variable
    >>> a = Variable(Tensor.zeros([3]), requires_grad=True)
    >>> a.set_grad(Tensor.from_vec([-3.0, 0.5, 2.0], [3]))
    >>> clip_grad_value_([a], 1.0)
    >>> a.grad().to_vec()
    [-1.0, 0.5, 1.0]
    """
    op = "clip_grad_value_"
    c = _real(clip_value, f"{op} clip_value")
    if not c >= 0:
        raise ValueError(f"{op}: clip_value must be >= 0, got {c}")
    for g in _grads(parameters, op):
        if g.numel():
            elementwise("a > c ? c : (a < -c ? -c : a)", [g], scalars={"c": c}, out=g.view(), op=op)


def parameters_to_vector(parameters) -> Tensor:
    """The parameters' values flattened and joined into one 1-D device Tensor (a copy), in order.

    >>> from axonml_autograd import Tensor, Variable
    >>> a = Variable(Tensor.from_vec([1.0, 2.0, 3.0, 4.0], [2, 2]), requires_grad=True)
    >>> b = Variable(Tensor.from_vec([5.0], [1]), requires_grad=True)
    >>> parameters_to_vector([a, b]).to_vec()
    [1.0, 2.0, 3.0, 4.0, 5.0]
    """
    op = "parameters_to_vector"
    params = _variables(parameters, op)
    if not params:
        raise ValueError(f"{op}: got no parameters")
    datas = [p.data() for p in params]
    for k, d in enumerate(datas):
        if d.dtype != datas[0].dtype or d.device is not datas[0].device:
            raise ValueError(f"{op}: parameter {k} is {d.dtype} on {d.device.name}, parameter 0 is "
                             f"{datas[0].dtype} on {datas[0].device.name}; they must match")
    return cat([d.reshape([-1]) for d in datas])


def vector_to_parameters(vec, parameters) -> None:
    """Copy consecutive slices of the 1-D ``vec`` (a Tensor or Variable) into the parameters, in place.

    The inverse of :func:`parameters_to_vector`. The parameters keep their own buffers (PyTorch
    rebinds ``param.data`` to views of ``vec`` instead), so later changes to ``vec`` do not reach them.

    >>> from axonml_autograd import Tensor, Variable
    >>> a = Variable(Tensor.zeros([2, 2]), requires_grad=True)
    >>> b = Variable(Tensor.zeros([1]), requires_grad=True)
    >>> vector_to_parameters(Tensor.from_vec([1.0, 2.0, 3.0, 4.0, 5.0], [5]), [a, b])
    >>> a.to_vec(), b.to_vec()
    ([1.0, 2.0, 3.0, 4.0], [5.0])
    """
    from .variable import Variable
    op = "vector_to_parameters"
    if isinstance(vec, Variable):
        vec = vec.data()
    if not isinstance(vec, Tensor):
        raise TypeError(f"{op}: vec must be a Tensor or Variable, got {type(vec).__name__}")
    if vec.ndim() != 1:
        raise ValueError(f"{op}: vec must be 1-D, got shape {vec.shape()}")
    params = _variables(parameters, op)
    need = sum(p.data().numel() for p in params)
    if vec.numel() != need:
        raise ValueError(f"{op}: vec has {vec.numel()} elements, the parameters have {need}")
    start = 0
    for k, p in enumerate(params):
        d = p.data()
        if d.dtype != vec.dtype or d.device is not vec.device:
            raise ValueError(f"{op}: parameter {k} is {d.dtype} on {d.device.name}, vec is {vec.dtype} on "
                             f"{vec.device.name}")
        n = d.numel()
        if n:
            elementwise("a", [View(vec, d._shape, contiguous_strides(d._shape), start)], out=d.view(), op=op)
        start += n
