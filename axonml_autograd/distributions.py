"""Probability distributions as in ``torch.distributions``: :class:`Categorical` and :class:`Normal`.

Parameters are Variables (numbers and Tensors are wrapped), so ``log_prob``, ``entropy`` and
``rsample`` are differentiable with respect to them. Samples come from the device generator
(``sampling.multinomial`` and ``Tensor.randn``), so they are fresh at each call and each captured
replay; ``seed=`` makes one reproducible. Category indices are int32 (torch: int64).

>>> from axonml_autograd import Tensor, Variable
>>> from axonml_autograd.distributions import Categorical, Normal
>>> d = Categorical(probs=Tensor.from_vec([0.25, 0.75], [2]))
>>> round(d.log_prob(Tensor.from_vec([1], [1], dtype="int32")).item(), 4)
-0.2877
>>> n = Normal(Variable(Tensor.from_vec([0.0], [1]), requires_grad=True), 2.0)
>>> n.rsample([3]).shape()
[3, 1]
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .shapes import broadcast_shapes
from .tensor import Tensor
from .variable import Variable

__all__ = ["Distribution", "Categorical", "Normal"]


def _param(x, name, like=None):
    if isinstance(x, Variable):
        return x
    if isinstance(x, Tensor):
        return Variable(x)
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        if like is not None:
            return Variable(Tensor.full([], float(x), like.dtype, like.data().device))
        return Variable(Tensor.scalar(float(x)))
    raise TypeError(f"{name}: expected a Variable, Tensor or number, got {type(x).__name__}")


def _sample_shape(sample_shape, op):
    if isinstance(sample_shape, numbers.Integral) and not isinstance(sample_shape, bool):
        return [int(sample_shape)]
    try:
        shape = [int(s) for s in sample_shape]
    except TypeError:
        raise TypeError(f"{op}: sample_shape must be a list of ints, got {sample_shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{op}: sample_shape must be non-negative, got {shape}")
    return shape


class Distribution:
    """What every distribution offers: ``batch_shape``, ``sample``, ``log_prob``, ``entropy``."""

    has_rsample = False

    @property
    def batch_shape(self):
        return list(self._batch_shape)

    def sample(self, sample_shape=(), *, seed=None):
        raise NotImplementedError

    def rsample(self, sample_shape=(), *, seed=None):
        raise NotImplementedError(f"{type(self).__name__} has no reparameterised sample (rsample)")

    def log_prob(self, value):
        raise NotImplementedError

    def entropy(self):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(batch_shape={self.batch_shape})"


class Categorical(Distribution):
    """Categories ``0..n-1`` of the last dim with probabilities ``probs`` (normalised here; any
    non-negative weights) or ``logits`` (unnormalised log-probabilities): torch's ``Categorical``.

    >>> from axonml_autograd import Tensor
    >>> Categorical(logits=Tensor.zeros([2, 3])).sample([4], seed=1).shape()
    [4, 2]
    """

    def __init__(self, probs=None, logits=None):
        if (probs is None) == (logits is None):
            raise ValueError("Categorical: give exactly one of probs or logits")
        raw = _param(probs if logits is None else logits, "Categorical")
        if raw.ndim() < 1 or raw.shape()[-1] < 1:
            raise ValueError(f"Categorical: expected at least one category in the last dim, got shape {raw.shape()}")
        if raw.dtype.kind != "f":
            raise TypeError(f"Categorical: expected floating-point parameters, got {raw.dtype}")
        eps = float(np.finfo(raw.dtype).eps)
        if logits is None:
            self.probs = raw / raw.sum(-1, keepdim=True)
            # torch's probs_to_logits: log of the probabilities clamped into [eps, 1 - eps]
            self.logits = self.probs.clamp(eps, 1.0 - eps).log()
        else:
            self.logits = raw - raw.logsumexp(-1, keepdim=True)
            self.probs = self.logits.softmax(-1)
        self._num_events = raw.shape()[-1]
        self._batch_shape = raw.shape()[:-1]

    @property
    def param_shape(self):
        return self.probs.shape()

    @property
    def mean(self):
        raise NotImplementedError("Categorical: the mean is undefined (as in torch it is NaN)")

    def sample(self, sample_shape=(), *, seed=None):
        """int32 category indices of shape ``sample_shape + batch_shape`` (not differentiable)."""
        from .sampling import multinomial
        shape = _sample_shape(sample_shape, "Categorical.sample")
        m, n = math.prod(shape), self._num_events
        p2 = self.probs.data().reshape([-1, n])
        if m == 0 or p2.shape()[0] == 0:
            return Tensor.zeros(shape + self._batch_shape, "int32", p2.device)
        idx = multinomial(p2, m, replacement=True, seed=seed)              # [batch, m]
        return idx.transpose(0, 1).contiguous().reshape(shape + self._batch_shape)

    def log_prob(self, value):
        """The log-probability of each category index in ``value`` (broadcast against ``batch_shape``)."""
        v = value.data() if isinstance(value, Variable) else value
        if isinstance(v, (list, tuple, numbers.Integral)):
            v = Tensor.from_numpy(np.asarray(v, np.int32), dtype="int32", device=self.logits.data().device)
        if not isinstance(v, Tensor) or v.dtype.kind not in "iu":
            raise TypeError(f"Categorical.log_prob: expected integer category indices, got {value!r}")
        shape = broadcast_shapes(tuple(v.shape()), tuple(self._batch_shape), op="Categorical.log_prob")
        n = self._num_events
        logits = self.logits.expand(list(shape) + [n])
        idx = v.expand(list(shape)).contiguous().reshape(list(shape) + [1])
        return logits.gather(-1, Variable(idx)).squeeze(-1)

    def entropy(self):
        """``-sum(p * log p)`` over the categories (a zero probability contributes nothing)."""
        lo = float(np.finfo(self.logits.dtype).min)
        return -(self.logits.clamp(lo, None) * self.probs).sum(-1)


class Normal(Distribution):
    """The normal distribution of mean ``loc`` and standard deviation ``scale`` (broadcast together):
    torch's ``Normal``. ``rsample`` is ``loc + scale * eps``, differentiable in both.

    >>> round(Normal(0.0, 1.0).entropy().item(), 4)   # 0.5 + 0.5 * log(2 pi)
    1.4189
    """

    has_rsample = True

    def __init__(self, loc, scale):
        like = loc if isinstance(loc, (Variable, Tensor)) else scale if isinstance(scale, (Variable, Tensor)) else None
        like = _param(like, "Normal") if like is not None else None
        self.loc, self.scale = _param(loc, "Normal loc", like), _param(scale, "Normal scale", like)
        self._batch_shape = list(broadcast_shapes(tuple(self.loc.shape()), tuple(self.scale.shape()), op="Normal"))
        # torch broadcasts the parameters to the batch shape (differentiably)
        if self.loc.shape() != self._batch_shape:
            self.loc = self.loc.expand(self._batch_shape)
        if self.scale.shape() != self._batch_shape:
            self.scale = self.scale.expand(self._batch_shape)

    @property
    def mean(self):
        return self.loc

    @property
    def stddev(self):
        return self.scale

    @property
    def variance(self):
        return self.scale.pow(2)

    def _eps(self, sample_shape, seed, op):
        shape = _sample_shape(sample_shape, op) + self._batch_shape
        return Variable(Tensor.randn(shape, seed, self.loc.dtype, self.loc.data().device))

    def rsample(self, sample_shape=(), *, seed=None):
        """``loc + scale * eps`` with ``eps`` standard normal: gradients reach ``loc`` and ``scale``."""
        return self.loc + self.scale * self._eps(sample_shape, seed, "Normal.rsample")

    def sample(self, sample_shape=(), *, seed=None):
        """As :meth:`rsample`, without a graph."""
        return self.rsample(sample_shape, seed=seed).detach()

    def log_prob(self, value):
        v = _param(value, "Normal.log_prob", self.loc)
        var = self.scale.pow(2)
        return -((v - self.loc).pow(2)) / (var * 2.0) - self.scale.log() - 0.5 * math.log(2 * math.pi)

    def entropy(self):
        return self.scale.log() + (0.5 + 0.5 * math.log(2 * math.pi))
