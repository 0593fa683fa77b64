"""Convolution and pooling layers: thin Modules over ``nn.functional``, initialised as PyTorch's.

``Conv1d``/``Conv2d`` hold ``weight`` [out, in/groups, *kernel] (PyTorch's layout) and ``bias`` [out];
the weight is drawn with ``kaiming_uniform_(a=sqrt(5))`` and the bias uniformly in
``+-1/sqrt(fan_in)``, ``fan_in = in/groups * prod(kernel)``, as ``torch.nn.Conv2d.reset_parameters``. ``ConvTranspose1d``/
``ConvTranspose2d`` hold torch's ``[in, out/groups, *kernel]`` and draw it the same way (so their fan_in is
``out/groups * prod(kernel)``, as torch's).

>>> from axonml_autograd import Tensor, Variable
>>> conv = Conv2d(3, 8, 3, padding=1, seed=0)
>>> [(name, p.shape()) for name, p in conv.named_parameters()]
[('weight', [8, 3, 3, 3]), ('bias', [8])]
>>> y = MaxPool2d(2)(conv(Variable(Tensor.zeros([2, 3, 16, 16]))))
>>> y.shape()
[2, 8, 8, 8]
"""

from __future__ import annotations

import math

from .. import init
from ..functions import conv as _F
from ..tensor import Tensor
from ..variable import Variable
from .module import Module

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


class _ConvNd(Module):
    _spatial = 2
    _fn = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", seed=None, dtype="float32", device=None):
        super().__init__()
        name = type(self).__name__
        n = self._spatial
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"{name}: padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got "
                             f"{padding_mode!r}")
        for what, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must both "
                             f"be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _F._ints(kernel_size, n, name, "kernel_size", 1)
        self.stride = _F._ints(stride, n, name, "stride", 1)
        self.dilation = _F._ints(dilation, n, name, "dilation", 1)
        pads = _F._conv_padding(padding, n, name, self.stride, self.dilation, self.kernel_size)   # checks it
        self.padding = padding if isinstance(padding, str) else _F._ints(padding, n, name, "padding", 0)
        self.padding_mode = padding_mode
        # Other modes pad first (F.pad's order: the last axis' (before, after) first) and convolve unpadded.
        self._pad = tuple(p for pair in reversed(pads) for p in pair) if padding_mode != "zeros" else None
        if seed is None:
            seed = init.next_seed()
        shape = [out_channels, in_channels // groups, *self.kernel_size]
        self.weight = Variable(Tensor.empty(shape, dtype, device), requires_grad=True)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), seed=init.derive_seed(seed, 0))
        self.bias = None
        if bias:
            fan_in = (in_channels // groups) * math.prod(self.kernel_size)
            bound = 1.0 / math.sqrt(fan_in)
            self.bias = Variable(Tensor.empty([out_channels], dtype, device), requires_grad=True)
            init.uniform_(self.bias, -bound, bound, seed=init.derive_seed(seed, 1))

    def forward(self, x):
        if self._pad is not None:
            from ..functions.resample import pad
            return type(self)._fn(pad(x, self._pad, self.padding_mode), self.weight, self.bias, self.stride, 0,
                                  self.dilation, self.groups)
        return type(self)._fn(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def __repr__(self):
        extra = "" if self.bias is not None else ", bias=False"
        extra += f", groups={self.groups}" if self.groups != 1 else ""
        extra += f", dilation={self.dilation}" if any(d != 1 for d in self.dilation) else ""
        extra += f", padding_mode={self.padding_mode!r}" if self.padding_mode != "zeros" else ""
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}{extra})")


class Conv2d(_ConvNd):
    """2-D convolution over [N, C, H, W] (or [C, H, W]); arguments as ``torch.nn.Conv2d``."""
    _spatial = 2
    _fn = staticmethod(_F.conv2d)


class Conv1d(_ConvNd):
    """1-D convolution over [N, C, L] (or [C, L]); arguments as ``torch.nn.Conv1d``.

    >>> from axonml_autograd import Tensor, Variable
    >>> Conv1d(4, 6, 5, stride=2, seed=0)(Variable(Tensor.zeros([3, 4, 17]))).shape()
    [3, 6, 7]
    """
    _spatial = 1
    _fn = staticmethod(_F.conv1d)


class _ConvTransposeNd(Module):
    _spatial = 2
    _fn = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", seed=None, dtype="float32", device=None):
        super().__init__()
        name = type(self).__name__
        n = self._spatial
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported, got {padding_mode!r}")
        for what, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must both "
                             f"be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _F._ints(kernel_size, n, name, "kernel_size", 1)
        self.stride = _F._ints(stride, n, name, "stride", 1)
        self.dilation = _F._ints(dilation, n, name, "dilation", 1)
        self.padding = _F._ints(padding, n, name, "padding", 0)
        self.output_padding = _F._ints(output_padding, n, name, "output_padding", 0)
        if seed is None:
            seed = init.next_seed()
        # torch's layout [in, out/groups, *kernel]; its fan_in (dimension 1 times the kernel) sets both bounds.
        shape = [in_channels, out_channels // groups, *self.kernel_size]
        self.weight = Variable(Tensor.empty(shape, dtype, device), requires_grad=True)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), seed=init.derive_seed(seed, 0))
        self.bias = None
        if bias:
            bound = 1.0 / math.sqrt((out_channels // groups) * math.prod(self.kernel_size))
            self.bias = Variable(Tensor.empty([out_channels], dtype, device), requires_grad=True)
            init.uniform_(self.bias, -bound, bound, seed=init.derive_seed(seed, 1))

    def forward(self, x, output_size=None):
        extra = self.output_padding
        if output_size is not None:
            extra = _F.conv_transpose_output_padding(type(self).__name__, x.shape(), output_size, self.stride,
                                                     self.padding, self.kernel_size, self.dilation, self._spatial)
        return type(self)._fn(x, self.weight, self.bias, self.stride, self.padding, extra, self.groups,
                              self.dilation)

    def __repr__(self):
        extra = "" if self.bias is not None else ", bias=False"
        extra += f", output_padding={self.output_padding}" if any(self.output_padding) else ""
        extra += f", groups={self.groups}" if self.groups != 1 else ""
        extra += f", dilation={self.dilation}" if any(d != 1 for d in self.dilation) else ""
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}{extra})")


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution over [N, C, H, W] (or [C, H, W]); arguments, weight layout
    [in, out/groups, kh, kw] and initialisation as ``torch.nn.ConvTranspose2d``; ``forward(x, output_size)``
    picks the output_padding that gives ``output_size``.

    >>> from axonml_autograd import Tensor, Variable
    >>> up = ConvTranspose2d(4, 2, 3, stride=2, padding=1, seed=0)
    >>> up(Variable(Tensor.zeros([1, 4, 5, 5])), output_size=[10, 10]).shape()
    [1, 2, 10, 10]
    """
    _spatial = 2
    _fn = staticmethod(_F.conv_transpose2d)


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution over [N, C, L] (or [C, L]); arguments as ``torch.nn.ConvTranspose1d``.

    >>> from axonml_autograd import Tensor, Variable
    >>> ConvTranspose1d(4, 6, 3, stride=2, seed=0)(Variable(Tensor.zeros([3, 4, 5]))).shape()
    [3, 6, 11]
    """
    _spatial = 1
    _fn = staticmethod(_F.conv_transpose1d)


class MaxPool2d(Module):
    """``max_pool2d`` as a layer (``return_indices`` gives ``(output, int32 indices)``)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x):
        return _F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                             self.return_indices)

    def __repr__(self):
        return (f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode})")


class AvgPool2d(Module):
    """``avg_pool2d`` as a layer."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, x):
        return _F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                             self.count_include_pad, self.divisor_override)

    def __repr__(self):
        return f"AvgPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding})"


class AdaptiveAvgPool2d(Module):
    """``adaptive_avg_pool2d`` as a layer: ``AdaptiveAvgPool2d(1)`` is global average pooling."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return _F.adaptive_avg_pool2d(x, self.output_size)

    def __repr__(self):
        return f"AdaptiveAvgPool2d(output_size={self.output_size})"
