"""Batches of sequences of different lengths, as ``torch.nn.utils.rnn``.

``pad_sequence`` stacks sequences into one padded batch; ``pack_padded_sequence`` pairs a padded
batch with its lengths (a :class:`PackedSequence`), which RNN / LSTM / GRU run as torch runs a packed
batch (outputs past a length are zero, h_n is each sequence's state at its last step);
``pad_packed_sequence`` gives back the padded output and the lengths. Unlike torch's, the
PackedSequence keeps the padded tensor (``.data`` is [T, B, *], or [B, T, *] with ``batch_first``).

>>> from axonml_autograd import Tensor, Variable
>>> import axonml_autograd.nn as nn
>>> seqs = [Variable(Tensor.rand([n, 3], seed=n)) for n in (4, 2, 3)]
>>> padded = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
>>> padded.shape()
[3, 4, 3]
>>> packed = nn.utils.rnn.pack_padded_sequence(padded, [4, 2, 3], batch_first=True, enforce_sorted=False)
>>> out, h_n = nn.GRU(3, 5, batch_first=True, seed=0)(packed)
>>> out, lengths = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
>>> out.shape(), lengths
([3, 4, 5], [4, 2, 3])
"""

from __future__ import annotations

import numpy as np

from ...tensor import Tensor
from ...variable import Variable
from ..recurrent import PackedSequence

__all__ = ["pad_sequence", "pack_padded_sequence", "pad_packed_sequence", "pack_sequence", "PackedSequence"]


def _variable(x, op):
    if isinstance(x, Variable):
        return x
    if isinstance(x, Tensor):
        return Variable(x)
    raise TypeError(f"{op}: expected Variables or Tensors, got {type(x).__name__}")


def pad_sequence(sequences, batch_first=False, padding_value=0.0):
    """Stack sequences [L_i, *] into [T, B, *] (``batch_first``: [B, T, *]), T = max L_i, the tail
    of each filled with ``padding_value``; differentiable in each sequence."""
    seqs = [_variable(s, "pad_sequence") for s in sequences]
    if not seqs:
        raise ValueError("pad_sequence: no sequences given")
    rest = seqs[0].shape()[1:]
    for s in seqs:
        if s.ndim() < 1 or s.shape()[1:] != rest:
            raise ValueError(f"pad_sequence: sequences must share their trailing shape; got "
                             f"{[x.shape() for x in seqs]}")
    T = max(s.shape()[0] for s in seqs)
    padded = []
    for s in seqs:
        n = s.shape()[0]
        if n < T:
            d = s.data()
            s = Variable.cat([s, Variable(Tensor.full([T - n] + rest, padding_value, d.dtype, d.device))], 0)
        padded.append(s)
    return Variable.stack(padded, 0 if batch_first else 1)


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """A :class:`PackedSequence` of the padded ``input`` ([T, B, *] or, ``batch_first``, [B, T, *]) and
    ``lengths`` (host ints, or a tensor read once). ``enforce_sorted`` checks that lengths decrease,
    as torch does; any order works here."""
    x = _variable(input, "pack_padded_sequence")
    host = lengths.numpy() if isinstance(lengths, (Tensor, Variable)) else np.asarray(lengths)
    host = [int(n) for n in host.reshape(-1)]
    B, T = (x.shape()[0], x.shape()[1]) if batch_first else (x.shape()[1], x.shape()[0])
    if len(host) != B:
        raise ValueError(f"pack_padded_sequence: {len(host)} lengths for a batch of {B} (input shape {x.shape()})")
    if any(n < 1 or n > T for n in host):
        raise ValueError(f"pack_padded_sequence: lengths must be in [1, {T}], got {host}")
    if enforce_sorted and any(a < b for a, b in zip(host, host[1:])):
        raise ValueError(f"pack_padded_sequence: lengths {host} are not sorted in decreasing order; sort "
                         "them or pass enforce_sorted=False")
    return PackedSequence(x, host, batch_first)


def pack_sequence(sequences, enforce_sorted=True):
    """torch's ``pack_sequence``: sequences [L_i, *] padded (``pad_sequence``) and packed with their
    lengths (host ints, known from the shapes: no read)."""
    seqs = [_variable(s, "pack_sequence") for s in sequences]
    return pack_padded_sequence(pad_sequence(seqs), [s.shape()[0] for s in seqs], enforce_sorted=enforce_sorted)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """``(padded, lengths)`` of a PackedSequence: [T, B, *] (or [B, T, *]) with T = max(lengths) (or
    ``total_length``), zeros (or ``padding_value``) past each length."""
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"pad_packed_sequence: expected a PackedSequence, got {type(sequence).__name__}")
    x, host = sequence.data, sequence.lengths
    if sequence.batch_first != bool(batch_first):
        x = x.transpose(0, 1)
    T = x.shape()[1 if batch_first else 0]
    want = max(host) if total_length is None else int(total_length)
    if want < max(host):
        raise ValueError(f"pad_packed_sequence: total_length {want} is less than the longest length {max(host)}")
    dim = 1 if batch_first else 0
    if want < T:
        x = x.narrow(dim, 0, want)
    elif want > T:
        shape = x.shape()
        shape[dim] = want - T
        d = x.data()
        x = Variable.cat([x, Variable(Tensor.zeros(shape, d.dtype, d.device))], dim)
    if padding_value != 0.0:
        m = (np.arange(want)[:, None] < np.asarray(host)[None, :])
        if batch_first:
            m = m.T
        m = m.reshape(m.shape + (1,) * (x.ndim() - 2))
        d = x.data()
        x = x + Variable(Tensor.from_numpy(np.where(m, 0.0, padding_value).astype(d.dtype), device=d.device))
    return x, list(host)
