"""Resampling layers: thin Modules over ``functions/resample.py``, arguments as torch's.

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.zeros([2, 8, 5, 5]))
>>> Upsample(scale_factor=2, mode="bilinear")(x).shape()
[2, 8, 10, 10]
>>> PixelShuffle(2)(x).shape(), ReflectionPad2d(1)(x).shape()
([2, 2, 10, 10], [2, 8, 7, 7])
"""

from __future__ import annotations

from ..functions import resample as _R
from .module import Module

__all__ = ["Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "AdaptiveMaxPool2d", "MaxPool1d",
           "AvgPool1d", "PixelShuffle", "PixelUnshuffle", "Unfold", "Fold", "ReflectionPad1d", "ReflectionPad2d",
           "ReplicationPad1d", "ReplicationPad2d", "CircularPad1d", "CircularPad2d"]


class Upsample(Module):
    """``interpolate`` as a layer (torch's ``nn.Upsample``)."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, x):
        return _R.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                              self.recompute_scale_factor)

    def __repr__(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{type(self).__name__}({what}, mode={self.mode!r})"


class UpsamplingNearest2d(Upsample):
    """torch's ``nn.UpsamplingNearest2d``: ``Upsample(mode="nearest")``."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, "nearest")


class UpsamplingBilinear2d(Upsample):
    """torch's ``nn.UpsamplingBilinear2d``: ``Upsample(mode="bilinear", align_corners=True)``."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, "bilinear", align_corners=True)


class AdaptiveMaxPool2d(Module):
    """``adaptive_max_pool2d`` as a layer (``return_indices`` gives ``(output, int32 indices)``)."""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, x):
        return _R.adaptive_max_pool2d(x, self.output_size, self.return_indices)

    def __repr__(self):
        return f"AdaptiveMaxPool2d(output_size={self.output_size})"


class MaxPool1d(Module):
    """``max_pool1d`` as a layer."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x):
        return _R.max_pool1d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                             self.return_indices)

    def __repr__(self):
        return (f"MaxPool1d(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode})")


class AvgPool1d(Module):
    """``avg_pool1d`` as a layer."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x):
        return _R.avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def __repr__(self):
        return f"AvgPool1d(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding})"


class PixelShuffle(Module):
    """``pixel_shuffle`` as a layer: [*, C * r * r, H, W] -> [*, C, H * r, W * r]."""

    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, x):
        return _R.pixel_shuffle(x, self.upscale_factor)

    def __repr__(self):
        return f"PixelShuffle(upscale_factor={self.upscale_factor})"


class PixelUnshuffle(Module):
    """``pixel_unshuffle`` as a layer: [*, C, H * r, W * r] -> [*, C * r * r, H, W]."""

    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, x):
        return _R.pixel_unshuffle(x, self.downscale_factor)

    def __repr__(self):
        return f"PixelUnshuffle(downscale_factor={self.downscale_factor})"


class Unfold(Module):
    """``unfold`` (im2col) as a layer."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, x):
        return _R.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)

    def __repr__(self):
        return (f"Unfold(kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, "
                f"stride={self.stride})")


class Fold(Module):
    """``fold`` (col2im) as a layer."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.output_size = output_size
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, x):
        return _R.fold(x, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)

    def __repr__(self):
        return (f"Fold(output_size={self.output_size}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride})")


class _PadNd(Module):
    _mode = None
    _spatial = 1

    def __init__(self, padding):
        super().__init__()
        n = 2 * self._spatial
        if isinstance(padding, int) and not isinstance(padding, bool):
            padding = (padding,) * n
        if not isinstance(padding, (tuple, list)) or len(padding) != n:
            raise ValueError(f"{type(self).__name__}: padding must be an int or a tuple of {n} ints, got {padding!r}")
        self.padding = tuple(padding)

    def forward(self, x):
        return _R.pad(x, self.padding, self._mode)

    def __repr__(self):
        return f"{type(self).__name__}({self.padding})"


class ReflectionPad1d(_PadNd):
    """``F.pad(x, padding, "reflect")`` over the last axis; ``padding`` an int or (left, right)."""
    _mode, _spatial = "reflect", 1


class ReflectionPad2d(_PadNd):
    """``F.pad(x, padding, "reflect")`` over the last two axes; ``padding`` an int or (left, right, top, bottom)."""
    _mode, _spatial = "reflect", 2


class ReplicationPad1d(_PadNd):
    """``F.pad(x, padding, "replicate")`` over the last axis."""
    _mode, _spatial = "replicate", 1


class ReplicationPad2d(_PadNd):
    """``F.pad(x, padding, "replicate")`` over the last two axes."""
    _mode, _spatial = "replicate", 2


class CircularPad1d(_PadNd):
    """``F.pad(x, padding, "circular")`` over the last axis."""
    _mode, _spatial = "circular", 1


class CircularPad2d(_PadNd):
    """``F.pad(x, padding, "circular")`` over the last two axes."""
    _mode, _spatial = "circular", 2
