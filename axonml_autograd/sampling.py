"""Sampling on the device from the Philox generator: ``multinomial``, ``bernoulli``, and the in-place
``uniform_``/``normal_``/``bernoulli_`` methods of Tensor and Variable.

Every draw takes its uniform numbers from the device generator (``random.py``) unless ``seed=`` is
given, so a captured step draws fresh samples at every replay, the same ones the eager calls would
draw from the same generator state. ``generator=`` takes a :class:`random.Generator` of your own
(``random.Generator(device, seed)``) instead of the device's.

``multinomial`` uses the Gumbel trick: category ``j`` gets the key ``log p_j + G_j`` with ``G_j``
Gumbel noise (``-log(-log u)``); the largest key is a draw from ``p / sum(p)``. With replacement each
sample takes its own row of noise and an argmax (``rows * num_samples * categories`` uniforms); without
replacement one row of keys is sorted on the device and the first ``num_samples`` are taken (the
Gumbel-top-k trick, an exact draw without replacement). Weights need not be normalised; a zero weight
has the key ``-inf`` and never wins over a positive one. Indices are int32 (as ``argmax`` and ``topk``).

>>> from axonml_autograd import Tensor, sampling
>>> idx = sampling.multinomial(Tensor.from_vec([0.0, 3.0, 1.0], [3]), 2, seed=5)
>>> sorted(idx.to_vec())
[1, 2]
"""

from __future__ import annotations

import numbers

import numpy as np

from . import launch, random as _random
from .elementwise_kernels import elementwise
from .rows import reduce
from .shapes import as_float
from .tensor import Tensor

__all__ = ["multinomial", "bernoulli"]


def _unwrap(x, op, what="input"):
    from .variable import Variable
    if isinstance(x, Variable):
        return x.data(), True
    if isinstance(x, Tensor):
        return x, False
    raise TypeError(f"{op}: expected a Tensor or Variable as {what}, got {type(x).__name__}")


def _check_generator(generator, seed, op):
    if generator is not None and not isinstance(generator, _random.Generator):
        raise TypeError(f"{op}: generator must be an axonml_autograd.random.Generator, got {generator!r}")
    if generator is not None and seed is not None:
        raise ValueError(f"{op}: give a generator or a seed, not both")


def _uniforms(shape, dtype, device, seed, generator, op) -> Tensor:
    t = Tensor(list(shape), dtype, device)
    _random._fill(t, seed, 0, "uniform", 0.0, 1.0, op, gen=generator)
    t._version = 0
    return t


def _validate(p: Tensor, replacement: bool):
    """torch's checks, with one small read of the device (skipped while a capture records: a replay
    could not repeat the read)."""
    if launch.active_capture() is not None:
        return
    flags = elementwise("(isnan(p) || isinf(p) || p < 0) ? L(2.0) : (p > 0 ? L(1.0) : L(0.0))", [p],
                        names=("p",), op="multinomial")
    rows = reduce(flags, "max", flags.ndim() - 1).numpy().reshape(-1)
    if (rows >= 2).any():
        raise ValueError("multinomial: probability tensor contains either inf, nan or element < 0")
    if replacement and (rows < 1).any():
        raise ValueError("multinomial: invalid multinomial distribution (sum of probabilities <= 0), "
                         f"probs of shape {p.shape()}")


def multinomial(input, num_samples, replacement=False, *, generator=None, seed=None):
    """``num_samples`` category indices per row of ``input`` (1-D ``[n]`` or 2-D ``[rows, n]`` non-negative
    weights, not necessarily normalised), drawn with probabilities proportional to the weights: torch's
    ``multinomial``, with int32 indices. Without replacement an index appears at most once per row; once
    the positive weights are exhausted the zero-weight categories follow (as in torch).

    >>> from axonml_autograd import Tensor
    >>> multinomial(Tensor.from_vec([0.0, 1.0], [2]), 4, replacement=True, seed=1).to_vec()
    [1, 1, 1, 1]
    """
    from .variable import Variable
    p, was_var = _unwrap(input, "multinomial")
    _check_generator(generator, seed, "multinomial")
    if p.dtype.kind != "f":
        raise TypeError(f"multinomial: expected floating-point probabilities, got {p.dtype}")
    if p.ndim() not in (1, 2):
        raise ValueError(f"multinomial: prob_dist must be 1 or 2 dim, got shape {p.shape()}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (numbers.Integral, np.integer)):
        raise TypeError(f"multinomial: num_samples must be an int, got {num_samples!r}")
    k = int(num_samples)
    n = p._shape[-1]
    if k <= 0:
        raise ValueError(f"multinomial: cannot sample n_sample <= 0 samples (num_samples={k})")
    if not replacement and k > n:
        raise ValueError(f"multinomial: cannot sample n_sample > prob_dist.size(-1) samples without "
                         f"replacement (num_samples={k}, shape {p.shape()})")
    if n == 0:
        raise ValueError(f"multinomial: no categories to sample from (shape {p.shape()})")
    one_d = p.ndim() == 1
    p2 = p.reshape([1, n]) if one_d else p
    rows = p2._shape[0]
    _validate(p2, replacement)
    # u + h lies in (0, 1) for every uniform u the generator makes (multiples of 2**-24 or 2**-53).
    h = 2.0 ** -25 if p.dtype == np.float32 else 2.0 ** -54
    key = "p > 0 ? log(p) - log(-log(u + h)) : -INFINITY"
    if replacement:
        u = _uniforms((rows, k, n), p.dtype, p.device, seed, generator, "multinomial")
        keys = elementwise(key, [p2.reshape([rows, 1, n]), u], names=("p", "u"), scalars={"h": h},
                           op="multinomial")
        idx = reduce(keys, "argmax", 2)[1]
    else:
        from .functions.sorting import _argsort_rows
        u = _uniforms((rows, n), p.dtype, p.device, seed, generator, "multinomial")
        keys = elementwise(key, [p2, u], names=("p", "u"), scalars={"h": h}, op="multinomial")
        order = _argsort_rows(keys, True)[0]
        idx = order if k == n else order.narrow(1, 0, k).contiguous()
    if one_d:
        idx = idx.reshape([k])
    return Variable(idx) if was_var else idx


def bernoulli(input, p=None, *, generator=None, seed=None):
    """0/1 draws: element ``i`` is 1 with probability ``input[i]`` (torch's ``bernoulli(input)``), or
    with probability ``p`` for every element when ``p`` is given (``input`` then gives the shape). The
    result has ``input``'s float dtype and is not differentiable (as in torch).

    >>> from axonml_autograd import Tensor
    >>> bernoulli(Tensor.from_vec([0.0, 1.0, 1.0], [3]), seed=3).to_vec()
    [0.0, 1.0, 1.0]
    """
    from .variable import Variable
    x, was_var = _unwrap(input, "bernoulli")
    _check_generator(generator, seed, "bernoulli")
    if x.dtype.kind != "f":
        raise TypeError(f"bernoulli: expected a floating-point input, got {x.dtype}")
    out = Tensor(x._shape, x.dtype, x.device)
    _bernoulli_into(out, x if p is None else p, generator, seed)
    out._version = 0
    return Variable(out) if was_var else out


def _bernoulli_into(out: Tensor, p, generator, seed):
    """Fill ``out`` with 0/1 draws of probability ``p`` (a number or a Tensor/Variable broadcast to it)."""
    u = _uniforms(out._shape, out.dtype if out.dtype.kind == "f" else np.dtype(np.float32), out.device, seed,
                  generator, "bernoulli")
    if isinstance(p, numbers.Real) and not isinstance(p, bool):
        pv = as_float(p, "bernoulli: p")
        if not 0.0 <= pv <= 1.0:
            raise ValueError(f"bernoulli: p must be in [0, 1], got {pv}")
        elementwise("u < q ? 1 : 0", [u], names=("u",), scalars={"q": pv}, out=out.view(), op="bernoulli")
    else:
        pt, _ = _unwrap(p, "bernoulli", "p")
        if launch.active_capture() is None and pt.numel():
            bad = elementwise("(p >= 0 && p <= 1) ? L(0.0) : L(1.0)", [pt], names=("p",), op="bernoulli")
            if reduce(bad, "max").item() > 0:
                raise ValueError("bernoulli: expected all probabilities in [0, 1]")
        elementwise("u < p ? 1 : 0", [u, pt], names=("u", "p"), out=out.view(), op="bernoulli")
    out._version += 1
    return out


class SamplingMethods:
    """The sampling methods of Variable (Tensor gets them through ``surface.attach_tensor_forms``)."""

    def multinomial(self, num_samples, replacement=False, *, generator=None, seed=None):
        """torch's ``x.multinomial(num_samples, replacement)``: int32 category indices (see
        :func:`axonml_autograd.sampling.multinomial`)."""
        return multinomial(self, num_samples, replacement, generator=generator, seed=seed)

    def bernoulli(self, p=None, *, generator=None, seed=None):
        """0/1 draws with the probabilities in this tensor (or ``p``); see :func:`sampling.bernoulli`."""
        return bernoulli(self, p, generator=generator, seed=seed)

    def bernoulli_(self, p=0.5, *, generator=None, seed=None):
        """Fill in place with 0/1 draws of probability ``p`` (a number or a tensor of probabilities)."""
        return self._inplace(lambda: _bernoulli_into(self._data, p, generator, seed), "bernoulli_", rebind=False)

    def uniform_(self, a=0.0, b=1.0, *, generator=None, seed=None):
        """Fill in place with uniform numbers in ``[a, b)`` (torch's ``uniform_(from, to)``), from the
        device generator (or ``generator``/``seed``); under ``no_grad`` for a leaf that requires grad."""
        lo, hi = _random._check_range(a, b, "uniform_")
        _check_generator(generator, seed, "uniform_")
        return self._inplace(lambda: _random._fill(self._data, seed, 0, "uniform", lo, hi, "uniform_", gen=generator),
                             "uniform_", rebind=False)

    def normal_(self, mean=0.0, std=1.0, *, generator=None, seed=None):
        """Fill in place with normal numbers of mean ``mean`` and standard deviation ``std``."""
        m, s = _random._check_normal(mean, std, "normal_")
        _check_generator(generator, seed, "normal_")
        return self._inplace(lambda: _random._fill(self._data, seed, 0, "normal", m, s, "normal_", gen=generator),
                             "normal_", rebind=False)

