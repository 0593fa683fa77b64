"""Recurrent layers as torch has them: ``RNN``, ``LSTM``, ``GRU`` and their one-step cells.

Same arguments, same parameter names and shapes (``weight_ih_l0`` [gates * H, in], ``weight_hh_l0``
[gates * H, H], ``bias_ih_l0``, ``bias_hh_l0``, ``..._reverse`` for the second direction; torch's gate
order: LSTM i, f, g, o; GRU r, z, n), the same init (uniform in +-1/sqrt(H)), so a torch
``state_dict()`` (as numpy arrays) loads as it is and gives the same results.

Per layer and direction: one matmul projects the inputs of all steps (``x @ W_ih^T``), then each step
is one matmul ``h @ W_hh^T`` and one fused cell kernel (functions/recurrent.py).

Variable-length batches: ``forward(input, hx, lengths=[...])`` (or a :class:`PackedSequence` from
``nn.utils.rnn.pack_padded_sequence``) gives torch's packed results: outputs past a sequence's length
are zero and h_n / c_n are each sequence's state at its last step. ``lengths`` are host ints (checked
to lie in [1, T]) or an int32 Tensor [B] on the input's device, which is used without being read, so
a step that takes it as an argument can be captured (its values are not checked: a length past T
runs every step, 0 leaves h0).

>>> from axonml_autograd import Tensor, Variable
>>> import axonml_autograd.nn as nn
>>> lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True, seed=0)
>>> out, (h_n, c_n) = lstm(Variable(Tensor.rand([4, 7, 3], seed=1)))
>>> out.shape(), h_n.shape(), c_n.shape()
([4, 7, 5], [2, 4, 5], [2, 4, 5])
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import init
from ..creation import arange
from ..functions.recurrent import GATES, rnn_recurrence
from ..tensor import Tensor
from ..variable import Variable
from . import functional as F
from .module import Module

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "PackedSequence"]


class PackedSequence:
    """A batch of sequences of different lengths: the padded ``data`` (as ``batch_first`` says) and
    the ``lengths`` (host ints). torch packs the steps into one flat tensor; here the padded batch is
    kept, and the recurrent layers run it with their ``lengths`` argument, with torch's results."""

    def __init__(self, data, lengths, batch_first=False):
        self.data, self.lengths, self.batch_first = data, [int(n) for n in lengths], bool(batch_first)

    def __iter__(self):   # (data, lengths), as pad_packed_sequence returns
        return iter((self.data, self.lengths))

    def __repr__(self):
        return f"PackedSequence(shape={self.data.shape()}, lengths={self.lengths}, batch_first={self.batch_first})"


def _param(shape, bound, seed, k, dtype, device):
    v = Variable(Tensor.empty(shape, dtype, device), requires_grad=True)
    init.uniform_(v, -bound, bound, seed=init.derive_seed(seed, k))
    return v


def _variable(x, what):
    if isinstance(x, Variable):
        return x
    if isinstance(x, Tensor):
        return Variable(x)
    raise TypeError(f"{what}: expected a Variable or Tensor, got {type(x).__name__}")


def _lengths(lengths, B, T, op):
    if isinstance(lengths, Tensor):
        lengths = lengths.numpy()
    elif isinstance(lengths, Variable):
        lengths = lengths.numpy()
    host = [int(n) for n in np.asarray(lengths).reshape(-1)]
    if len(host) != B:
        raise ValueError(f"{op}: lengths has {len(host)} entries for a batch of {B}")
    if any(n < 1 or n > T for n in host):
        raise ValueError(f"{op}: lengths must be in [1, {T}] (the padded sequence length), got {host}")
    return host


def _time_mask(host, T, dtype, device):
    """[T, B, 1] constant: 1 where step t is within row b's length."""
    m = (np.arange(T)[:, None] < np.asarray(host)[None, :]).astype(dtype)
    return Tensor.from_numpy(m.reshape(T, len(host), 1), device=device)


class RNNBase(Module):
    """The shared body of RNN, LSTM and GRU (``mode``: 'tanh', 'relu', 'lstm', 'gru')."""

    _name = "RNN"

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, seed=None, dtype="float32", device=None):
        super().__init__()
        for what, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{self._name}: {what} must be a positive integer, got {v!r}")
        dropout = float(dropout)
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{self._name}: dropout must be in [0, 1], got {dropout}")
        if seed is None:
            seed = init.next_seed()
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), dropout
        self.bidirectional = bool(bidirectional)
        G, H = GATES[mode], self.hidden_size
        bound = 1.0 / math.sqrt(H)
        k = 0
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else H * (2 if self.bidirectional else 1)
            for suffix in ("", "_reverse") if self.bidirectional else ("",):
                shapes = [("weight_ih", [G * H, width]), ("weight_hh", [G * H, H])]
                if self.bias:
                    shapes += [("bias_ih", [G * H]), ("bias_hh", [G * H])]
                for name, shape in shapes:
                    setattr(self, f"{name}_l{layer}{suffix}", _param(shape, bound, seed, k, dtype, device))
                    k += 1

    def _weights(self, layer, suffix):
        get = lambda n: getattr(self, f"{n}_l{layer}{suffix}")   # noqa: E731
        return (get("weight_ih"), get("weight_hh"), get("bias_ih") if self.bias else None,
                get("bias_hh") if self.bias else None)

    def forward(self, input, hx=None, lengths=None):
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError(f"{self._name}: give lengths either in the PackedSequence or as lengths=")
            lengths, batch_first, input = input.lengths, input.batch_first, input.data
        else:
            batch_first = self.batch_first
        x = _variable(input, self._name)
        D, L, H = (2 if self.bidirectional else 1), self.num_layers, self.hidden_size
        if x.ndim() not in (2, 3):
            raise ValueError(f"{self._name}: expected a 2-D (unbatched) or 3-D (batched) input, got shape "
                             f"{x.shape()}")
        if x.shape()[-1] != self.input_size:
            raise ValueError(f"{self._name}: input.size(-1) must be equal to input_size: expected "
                             f"{self.input_size}, got {x.shape()[-1]} (input shape {x.shape()})")
        unbatched = x.ndim() == 2
        if unbatched:
            x = x.unsqueeze(1)
        elif batch_first:
            x = x.transpose(0, 1)
        T, B = x.shape()[0], x.shape()[1]
        if T < 1:
            raise ValueError(f"{self._name}: the input has no time steps (shape {input.shape()})")
        h0 = c0 = None
        if hx is not None:
            if self.mode == "lstm":
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise ValueError(f"{self._name}: hx must be a tuple (h_0, c_0)")
                h0, c0 = _variable(hx[0], self._name), _variable(hx[1], self._name)
            else:
                h0 = _variable(hx, self._name)
            want = [L * D, H] if unbatched else [L * D, B, H]
            for name, s in (("h_0", h0), ("c_0", c0)):
                if s is not None and s.shape() != want:
                    raise ValueError(f"{self._name}: expected {name} of shape {want}, got {s.shape()} "
                                     f"(input shape {input.shape()})")
            if unbatched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1) if c0 is not None else None
        host = lens = None
        if isinstance(lengths, Variable):
            lengths = lengths.data()
        if isinstance(lengths, Tensor):   # on the device: used as it is, never read (capturable)
            if lengths.dtype != np.int32 or lengths.shape() != [B] or lengths.device is not x.data().device:
                raise ValueError(f"{self._name}: lengths as a Tensor must be int32 of shape [{B}] on the "
                                 f"input's device, got {lengths.dtype} {lengths.shape()} on {lengths.device}")
            lens = lengths
        elif lengths is not None:
            host = _lengths(lengths, B, T, self._name)
            lens = Tensor.from_numpy(np.asarray(host, dtype=np.int32), device=x.data().device)
        h_n, c_n = [], []
        for layer in range(L):
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:D]):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, suffix)
                idx = layer * D + d
                xp = F.linear(x, w_ih)
                S = rnn_recurrence(self.mode, xp, w_hh, b_ih, b_hh, h0[idx] if h0 is not None else None,
                                   c0[idx] if c0 is not None else None, lens, reverse=bool(d))
                outs.append(S[0, 0:T] if d else S[0, 1:T + 1])
                h_n.append(S[0, 0] if d else S[0, T])
                if self.mode == "lstm":
                    c_n.append(S[1, 0] if d else S[1, T])
            x = outs[0] if D == 1 else Variable.cat(outs, -1)
            if layer + 1 < L and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, True)
        if host is not None and min(host) < T:
            x = x * Variable(_time_mask(host, T, x.data().dtype, x.data().device))
        elif host is None and lens is not None:   # the same mask, made on the device
            steps = arange(T, dtype="int32", device=lens.device).reshape([T, 1])
            x = x * Variable((steps < lens.reshape([1, B])).astype(x.data().dtype).reshape([T, B, 1]))
        h_n = Variable.stack(h_n, 0)
        c_n = Variable.stack(c_n, 0) if self.mode == "lstm" else None
        if unbatched:
            x = x.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        elif batch_first:
            x = x.transpose(0, 1)
        if packed:
            x = PackedSequence(x, host, batch_first)
        return x, ((h_n, c_n) if self.mode == "lstm" else h_n)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "relu":
            s += ", nonlinearity='relu'"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s


class RNN(RNNBase):
    """``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False,
    dropout=0.0, bidirectional=False)``: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    ``forward(input, hx=None, lengths=None)`` returns ``(output, h_n)``: output [T, B, D * H]
    ([B, T, D * H] with ``batch_first``; [T, D * H] for an unbatched [T, in] input), h_n [L * D, B, H].

    >>> from axonml_autograd import Tensor, Variable
    >>> rnn = RNN(3, 4, nonlinearity="relu", bidirectional=True, seed=0)
    >>> out, h_n = rnn(Variable(Tensor.rand([5, 2, 3], seed=1)))
    >>> out.shape(), h_n.shape()
    ([5, 2, 8], [2, 2, 4])
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, seed=None, dtype="float32", device=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(nonlinearity, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, seed, dtype, device)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False)``; ``forward(input, (h_0, c_0)=None, lengths=None)`` returns
    ``(output, (h_n, c_n))`` with torch's shapes. Gates i, f, g, o (torch's order).

    >>> from axonml_autograd import Tensor, Variable
    >>> lstm = LSTM(3, 4, seed=0)
    >>> out, (h, c) = lstm(Variable(Tensor.rand([6, 2, 3], seed=1)))
    >>> out.shape(), h.shape(), c.shape()
    ([6, 2, 4], [1, 2, 4], [1, 2, 4])
    """
    _name = "LSTM"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, seed=None, dtype="float32", device=None):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         seed, dtype, device)


class GRU(RNNBase):
    """``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False)``: torch's gates r, z, n with n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
    h' = (1 - z) * n + z * h; ``forward(input, hx=None, lengths=None)`` returns ``(output, h_n)``.

    >>> from axonml_autograd import Tensor, Variable
    >>> gru = GRU(3, 4, batch_first=True, seed=0)
    >>> out, h = gru(Variable(Tensor.rand([2, 6, 3], seed=1)))
    >>> out.shape(), h.shape()
    ([2, 6, 4], [1, 2, 4])
    """
    _name = "GRU"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, seed=None, dtype="float32", device=None):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         seed, dtype, device)


class _CellBase(Module):
    _name = "RNNCell"

    def __init__(self, mode, input_size, hidden_size, bias, seed, dtype, device):
        super().__init__()
        for what, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{self._name}: {what} must be a positive integer, got {v!r}")
        if seed is None:
            seed = init.next_seed()
        self.mode, self.input_size, self.hidden_size, self.bias = mode, int(input_size), int(hidden_size), bool(bias)
        G, H = GATES[mode], self.hidden_size
        bound = 1.0 / math.sqrt(H)
        self.weight_ih = _param([G * H, self.input_size], bound, seed, 0, dtype, device)
        self.weight_hh = _param([G * H, H], bound, seed, 1, dtype, device)
        self.bias_ih = _param([G * H], bound, seed, 2, dtype, device) if bias else None
        self.bias_hh = _param([G * H], bound, seed, 3, dtype, device) if bias else None

    def forward(self, input, hx=None):
        x = _variable(input, self._name)
        if x.ndim() not in (1, 2) or x.shape()[-1] != self.input_size:
            raise ValueError(f"{self._name}: expected input of shape [batch, {self.input_size}] or "
                             f"[{self.input_size}], got {x.shape()}")
        unbatched = x.ndim() == 1
        if unbatched:
            x = x.unsqueeze(0)
        B, H = x.shape()[0], self.hidden_size
        h0 = c0 = None
        if hx is not None:
            if self.mode == "lstm":
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise ValueError(f"{self._name}: hx must be a tuple (h_0, c_0)")
                h0, c0 = _variable(hx[0], self._name), _variable(hx[1], self._name)
            else:
                h0 = _variable(hx, self._name)
            want = [H] if unbatched else [B, H]
            for name, s in (("h_0", h0), ("c_0", c0)):
                if s is not None and s.shape() != want:
                    raise ValueError(f"{self._name}: expected {name} of shape {want}, got {s.shape()} "
                                     f"(input shape {x.shape() if not unbatched else [self.input_size]})")
            if unbatched:
                h0 = h0.unsqueeze(0)
                c0 = c0.unsqueeze(0) if c0 is not None else None
        xp = F.linear(x.unsqueeze(0), self.weight_ih)
        S = rnn_recurrence(self.mode, xp, self.weight_hh, self.bias_ih, self.bias_hh, h0, c0)
        h, c = S[0, 1], (S[1, 1] if self.mode == "lstm" else None)
        if unbatched:
            h = h.squeeze(0)
            c = c.squeeze(0) if c is not None else None
        return (h, c) if self.mode == "lstm" else h

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.mode == "relu":
            s += ", nonlinearity='relu'"
        return s


class RNNCell(_CellBase):
    """``RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh')``: one step,
    ``forward(input [B, in], hx [B, H] = zeros) -> h'`` (parameters ``weight_ih``, ``weight_hh``,
    ``bias_ih``, ``bias_hh`` as torch).

    >>> from axonml_autograd import Tensor, Variable
    >>> RNNCell(3, 4, seed=0)(Variable(Tensor.rand([2, 3], seed=1))).shape()
    [2, 4]
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", seed=None, dtype="float32",
                 device=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(nonlinearity, input_size, hidden_size, bias, seed, dtype, device)
        self.nonlinearity = nonlinearity


class LSTMCell(_CellBase):
    """``LSTMCell(input_size, hidden_size, bias=True)``: ``forward(input, (h, c) = zeros) -> (h', c')``.

    >>> from axonml_autograd import Tensor, Variable
    >>> h, c = LSTMCell(3, 4, seed=0)(Variable(Tensor.rand([2, 3], seed=1)))
    >>> h.shape(), c.shape()
    ([2, 4], [2, 4])
    """
    _name = "LSTMCell"

    def __init__(self, input_size, hidden_size, bias=True, seed=None, dtype="float32", device=None):
        super().__init__("lstm", input_size, hidden_size, bias, seed, dtype, device)


class GRUCell(_CellBase):
    """``GRUCell(input_size, hidden_size, bias=True)``: ``forward(input, h = zeros) -> h'``.

    >>> from axonml_autograd import Tensor, Variable
    >>> GRUCell(3, 4, seed=0)(Variable(Tensor.rand([2, 3], seed=1))).shape()
    [2, 4]
    """
    _name = "GRUCell"

    def __init__(self, input_size, hidden_size, bias=True, seed=None, dtype="float32", device=None):
        super().__init__("gru", input_size, hidden_size, bias, seed, dtype, device)
