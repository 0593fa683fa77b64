"""Normalisation layers: ``LayerNorm``, ``BatchNorm1d``, ``BatchNorm2d``, ``GroupNorm``.

Each holds its parameters (weight 1, bias 0, as torch initialises them) and, for batch norm, its
running statistics as buffers (saved in ``state_dict()``), and calls ``nn.functional``.

>>> from axonml_autograd import Tensor, Variable
>>> bn = BatchNorm1d(3)
>>> y = bn(Variable(Tensor.from_vec([1.0, 2.0, 3.0, 3.0, 2.0, 1.0], [2, 3])))
>>> bn.running_mean.to_vec(), bn.num_batches_tracked.to_vec()
([0.20000000298023224, 0.20000000298023224, 0.20000000298023224], [1])
>>> sorted(bn.state_dict())
['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
"""

from __future__ import annotations

import numbers

import numpy as np

from ..elementwise_kernels import elementwise, fill
from ..tensor import Tensor
from ..shapes import as_float, as_int
from ..variable import Variable
from . import functional as F
from .module import Module

__all__ = ["LayerNorm", "BatchNorm1d", "BatchNorm2d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d"]


def _affine(module, shape, dtype, device, weight=True, bias=True):
    module.weight = Variable(Tensor.ones(shape, dtype, device), requires_grad=True) if weight else None
    module.bias = Variable(Tensor.zeros(shape, dtype, device), requires_grad=True) if bias else None


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` axes; ``elementwise_affine`` adds a weight and
    (unless ``bias=False``) a bias of that shape."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype="float32", device=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(as_int(s, "LayerNorm: normalized_shape") for s in normalized_shape)
        self.eps = as_float(eps, "LayerNorm: eps")
        self.elementwise_affine = bool(elementwise_affine)
        _affine(self, list(self.normalized_shape), dtype, device, elementwise_affine, elementwise_affine and bias)

    def forward(self, x):
        n = len(self.normalized_shape)
        if tuple(x.shape()[x.ndim() - n:]) != self.normalized_shape or x.ndim() < n:
            raise ValueError(f"LayerNorm: input of shape {x.shape()} does not end in normalized_shape "
                             f"{list(self.normalized_shape)}")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class _BatchNorm(Module):
    _ranks = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype="float32", device=None):
        super().__init__()
        self.num_features = as_int(num_features, f"{type(self).__name__}: num_features")
        self.eps = as_float(eps, f"{type(self).__name__}: eps")
        self.momentum = None if momentum is None else as_float(momentum, f"{type(self).__name__}: momentum")
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        _affine(self, [self.num_features], dtype, device, affine, affine)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor.zeros([self.num_features], dtype, device))
            self.register_buffer("running_var", Tensor.ones([self.num_features], dtype, device))
            self.register_buffer("num_batches_tracked", Tensor.zeros([], "int64", device))   # torch's 0-d int64
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            fill(self.running_mean, 0.0)
            fill(self.running_var, 1.0)
            fill(self.num_batches_tracked, 0)

    def forward(self, x):
        name = type(self).__name__
        shape = x.shape()
        if len(shape) not in self._ranks or shape[1] != self.num_features:
            ranks = " or ".join(f"{r}-D" for r in self._ranks)
            raise ValueError(f"{name}: expected {ranks} input with {self.num_features} channels (dim 1), "
                             f"got input of shape {shape}")
        use_batch = self.training or not self.track_running_stats
        if self.training and self.track_running_stats:
            # torch's counter (an in-place device add: no read, and a captured replay repeats it).
            nbt = self.num_batches_tracked
            elementwise("(long)((ulong)a + 1ul)", [nbt], out=nbt.view(), op="num_batches_tracked", dtype=np.int64)
        # Untracked statistics are None here, so eval() without them normalises with the batch's, as torch.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_batch, self.momentum, self.eps,
                            num_batches_tracked=self.num_batches_tracked)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm of ``[N, C]`` or ``[N, C, L]``: per channel, the batch's statistics in training (the
    running ones updated on the device with ``momentum``), the running ones in ``eval()``."""
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm of ``[N, C, H, W]`` (statistics over N, H and W per channel)."""
    _ranks = (4,)


class GroupNorm(Module):
    """Normalise each of ``num_groups`` groups of channels of ``[N, C, ...]``; per-channel affine."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 dtype="float32", device=None):
        super().__init__()
        self.num_groups = as_int(num_groups, "GroupNorm: num_groups")
        self.num_channels = as_int(num_channels, "GroupNorm: num_channels")
        if self.num_groups <= 0 or self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels {self.num_channels} must be divisible by num_groups "
                             f"{self.num_groups}")
        self.eps = as_float(eps, "GroupNorm: eps")
        self.affine = bool(affine)
        _affine(self, [self.num_channels], dtype, device, affine, affine)

    def forward(self, x):
        if x.ndim() < 2 or x.shape()[1] != self.num_channels:
            raise ValueError(f"GroupNorm: expected input [N, {self.num_channels}, ...], got input of shape "
                             f"{x.shape()}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(_BatchNorm):
    _ranks = ()
    _spatial = 1

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = False,
                 track_running_stats: bool = False, dtype="float32", device=None):
        if track_running_stats and momentum is None:
            raise NotImplementedError(f"{type(self).__name__}: momentum=None (a cumulative average) is not "
                                      "supported with track_running_stats; give a number")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype, device)

    def forward(self, x):
        name = type(self).__name__
        shape = x.shape()
        batched, unbatched = self._spatial + 2, self._spatial + 1
        if len(shape) not in (batched, unbatched):
            raise ValueError(f"{name}: expected {unbatched}-D (unbatched) or {batched}-D input, got shape {shape}")
        if len(shape) == unbatched:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if shape[1] != self.num_features and (self.affine or self.track_running_stats):
            raise ValueError(f"{name}: expected input with {self.num_features} channels (dim 1), got shape {shape}")
        use_input = self.training or not self.track_running_stats
        # torch's instance norm leaves num_batches_tracked at 0 (the buffer is kept for its state_dict)
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_input,
                               self.momentum if self.momentum is not None else 0.1, self.eps)


class InstanceNorm1d(_InstanceNorm):
    """torch's ``InstanceNorm1d(num_features, eps=1e-5, momentum=0.1, affine=False,
    track_running_stats=False)``: each channel of each sample of ``[N, C, L]`` (or unbatched ``[C, L]``)
    normalised over ``L``; running statistics only with ``track_running_stats`` (then used in ``eval()``).

    >>> from axonml_autograd import Tensor, Variable
    >>> [round(v, 4) for v in InstanceNorm1d(2)(Variable(Tensor.from_vec([1.0, 3.0, 5.0, 5.0], [1, 2, 2]))).to_vec()]
    [-1.0, 1.0, 0.0, 0.0]
    """
    _spatial = 1


class InstanceNorm2d(_InstanceNorm):
    """torch's ``InstanceNorm2d``: as :class:`InstanceNorm1d` over ``[N, C, H, W]`` (or ``[C, H, W]``)."""
    _spatial = 2
