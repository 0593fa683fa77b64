"""axonml-autograd: reverse-mode automatic differentiation on OpenCL devices.

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.from_vec([2.0, 3.0], [2]), requires_grad=True)
>>> loss = x.pow(2.0).sum()
>>> loss.backward()
>>> x.grad().to_vec()
[4.0, 6.0]
"""

import builtins as _builtins

import numpy as _np

from .device import Device, DeviceError, DeviceMemoryError, default_device, empty_cache, get_device, set_default_device
from .kernels import KernelBuildError
from .tensor import Tensor

from .no_grad import (EnableGradGuard, InferenceModeGuard, NoGradGuard, enable_grad, inference_mode,
                      is_grad_enabled, is_inference_mode, no_grad)
from .variable import Variable
from . import surface as _surface   # methods from the op registry: attached once, here
_surface.attach_all()
from .grad_fn import GradientFunction
from .backward import backward, check_gradients, grad, gradcheck, gradgradcheck, numerical_gradient
from .anomaly import AnomalyError, detect_anomaly
from .amp import GradScaler, autocast, get_autocast_dtype, is_autocast_enabled
from .capture import CaptureError, capture
from .creation import arange, eye, full_like, linspace, ones_like, rand_like, randint, randn_like, zeros_like
from .random import manual_seed
from .sampling import bernoulli, multinomial
from . import distributions, random, sampling
from .serialization import load, save
from . import data, optim, utils   # training toolkit: loaders, optimisers + lr_scheduler, clip_grad_norm_
from .data import randperm
from .custom import Function, FunctionCtx, Kernel, elementwise   # your own ops in OpenCL C


def zeros(*shape, dtype="float32", device=None) -> Tensor:
    """torch's ``zeros(2, 3)`` / ``zeros([2, 3])``: a Tensor (wrap it in a Variable for a gradient)."""
    return Tensor.zeros(_shape_args(shape), dtype, device)


def ones(*shape, dtype="float32", device=None) -> Tensor:
    return Tensor.ones(_shape_args(shape), dtype, device)


def full(shape, fill_value, dtype=None, device=None) -> Tensor:
    """torch's ``full``: without ``dtype`` the value decides (bool, int64 for an int, else float32)."""
    if dtype is None:
        dtype = ("bool" if isinstance(fill_value, _builtins.bool) else "int64" if isinstance(fill_value, int)
                 else "float32")   # the builtin: this module's `bool` is the dtype
    return Tensor.full(shape, fill_value, dtype, device)


def rand(*shape, seed=None, dtype="float32", device=None) -> Tensor:
    """Uniform [0, 1) from the device generator (``manual_seed``), or reproducible with ``seed=``."""
    return Tensor.rand(_shape_args(shape), seed, dtype, device)


def randn(*shape, seed=None, dtype="float32", device=None) -> Tensor:
    return Tensor.randn(_shape_args(shape), seed, dtype, device)


def from_numpy(array, dtype=None, device=None) -> Tensor:
    return Tensor.from_numpy(array, dtype, device)


def einsum(equation, *operands):
    """numpy/torch ``einsum`` over Variables or Tensors (see ``functions/einsum.py``)."""
    from .functions.einsum import einsum as _einsum
    result = _einsum(equation, *operands)
    ops = operands[0] if len(operands) == 1 and isinstance(operands[0], (list, tuple)) else operands
    return result.data() if _builtins.all(isinstance(t, Tensor) for t in ops) else result


def cat(tensors, dim=0):
    """torch's ``cat``: Variables (differentiable) or Tensors, joined along ``dim``.

    >>> from axonml_autograd import Tensor, cat
    >>> cat([Tensor.ones([1, 2]), Tensor.zeros([1, 2])]).to_vec()
    [1.0, 1.0, 0.0, 0.0]
    """
    return _join(Variable.cat, tensors, dim)


def stack(tensors, dim=0):
    """torch's ``stack``: join along a new axis ``dim``."""
    return _join(Variable.stack, tensors, dim)


def _join(fn, tensors, dim):
    tensors = list(tensors)
    if tensors and _builtins.all(isinstance(t, Tensor) for t in tensors):
        return fn([Variable(t) for t in tensors], dim).data()
    return fn(tensors, dim)


def _shape_args(shape):
    return list(shape[0]) if len(shape) == 1 and isinstance(shape[0], (list, tuple)) else list(shape)


def where(condition, a, b):
    """``a`` where ``condition`` is non-zero, else ``b`` (Variables, Tensors or numbers; broadcasting)."""
    from .variable import _operand
    like = a if isinstance(a, Variable) else b if isinstance(b, Variable) else Variable(
        a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else Tensor.scalar(0.0))
    return _operand(a, like, "where").where(condition, _operand(b, like, "where"))


__all__ = ["Tensor", "Variable", "GradientFunction", "no_grad", "NoGradGuard", "enable_grad", "EnableGradGuard",
           "inference_mode", "InferenceModeGuard", "is_grad_enabled", "is_inference_mode", "backward", "grad",
           "numerical_gradient", "gradcheck", "check_gradients", "gradgradcheck", "Device", "DeviceError", "DeviceMemoryError",
           "KernelBuildError", "default_device", "get_device", "set_default_device", "empty_cache",
           "detect_anomaly", "AnomalyError", "capture", "CaptureError", "arange", "linspace", "eye", "zeros_like",
           "ones_like", "full_like", "rand_like", "randn_like", "randint", "manual_seed", "multinomial", "bernoulli", "where", "save", "load",
           "randperm", "elementwise", "Function", "FunctionCtx", "Kernel", "zeros", "ones", "full", "rand", "randn",
           "from_numpy", "cat", "stack", "einsum"]

# Function forms (ag.exp(x), ag.sum(x, 1), ag.softmax(x, -1), ...), generated from one list (surface.py).
globals().update(_surface.top_level_functions(set(globals())))
from . import autograd, func  # noqa: E402  (ag.autograd.grad, ag.func.hessian without another import)

# torch-style dtype names (ag.float32, ag.int64, ag.bool): numpy dtypes, accepted wherever a dtype is.
# Not in __all__: `from axonml_autograd import *` must not shadow the builtin bool.
float32, float64, int32, int64 = (_np.dtype(n) for n in ("float32", "float64", "int32", "int64"))
bool = _np.dtype("bool")  # noqa: A001
long, double = int64, float64
# The 16-bit floats (dtypes.py): float16 is numpy's; bfloat16 is a small dtype object of our own.
from .dtypes import bfloat16, float16  # noqa: E402
half = float16

__version__ = "0.1.0"
