"""``MultiheadAttention`` as torch has it: the same parameters (``in_proj_weight`` [3E, E],
``in_proj_bias``, ``out_proj.weight`` [E, E] in torch's [out, in] layout, so a torch state_dict loads
as it is), the same arguments and the same results, built on ``F.scaled_dot_product_attention``.

>>> from axonml_autograd import Tensor, Variable
>>> mha = MultiheadAttention(8, 2, batch_first=True, seed=0)
>>> x = Variable(Tensor.rand([3, 5, 8], seed=1))
>>> out, weights = mha(x, x, x)
>>> out.shape(), weights.shape()
([3, 5, 8], [3, 5, 5])
"""

from __future__ import annotations

import math

from .. import init
from ..tensor import Tensor
from ..variable import Variable
from . import functional as F
from .layers import Linear
from .module import Module


class _TorchLinear(Linear):
    """``nn.Linear`` with positional (seed, dtype, device) and ``zero_bias`` (MultiheadAttention's
    out_proj starts with a zero bias, as torch's)."""

    def __init__(self, in_features, out_features, bias, seed, dtype, device, zero_bias=False):
        super().__init__(in_features, out_features, bias, seed=seed, dtype=dtype, device=device)
        if zero_bias and self.bias is not None:
            init.zeros_(self.bias)


class MultiheadAttention(Module):
    """``MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False)``.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(output, weights)`` as torch: inputs
    [L, N, E] (``batch_first``: [N, L, E]); ``key_padding_mask`` [N, S] with True for padding;
    ``attn_mask`` [L, S] or [N * heads, L, S], bool (True = not allowed, torch's convention here) or
    additive float; weights averaged over heads unless ``average_attn_weights=False``; ``None`` without
    ``need_weights``.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False, seed=None,
                 dtype="float32", device=None):
        super().__init__()
        embed_dim, num_heads = int(embed_dim), int(num_heads)
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} must be a positive multiple of "
                             f"num_heads {num_heads}")
        if seed is None:
            seed = init.next_seed()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        self.in_proj_weight = Variable(Tensor.empty([3 * embed_dim, embed_dim], dtype, device), requires_grad=True)
        init.xavier_uniform_(self.in_proj_weight, seed=init.derive_seed(seed, 0))   # torch's choice
        self.in_proj_bias = Variable(Tensor.zeros([3 * embed_dim], dtype, device), requires_grad=True) \
            if bias else None
        self.out_proj = _TorchLinear(embed_dim, embed_dim, bias, init.derive_seed(seed, 1), dtype, device,
                                     zero_bias=True)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        q, k, v = (x if isinstance(x, Variable) else Variable(x) for x in (query, key, value))
        if q.ndim() != 3 or k.ndim() != 3 or v.ndim() != 3:
            raise ValueError(f"MultiheadAttention: expected batched 3-D inputs, got {q.shape()}, {k.shape()}, "
                             f"{v.shape()}")
        if not self.batch_first:   # torch's default layout [L, N, E]
            q, k, v = (x.transpose(0, 1) for x in (q, k, v))
        N, L, E = q.shape()
        S = k.shape()[1]
        if E != self.embed_dim:
            raise ValueError(f"MultiheadAttention: query of width {E}, expected embed_dim {self.embed_dim}")
        H, D = self.num_heads, self.head_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        proj = [F.linear(x, w[i * E:(i + 1) * E], None if b is None else b[i * E:(i + 1) * E])
                for i, x in enumerate((q, k, v))]
        qh, kh, vh = (p.reshape(N, -1, H, D).transpose(1, 2) for p in proj)   # [N, H, len, D]
        scores = (qh @ kh.mT) * (1.0 / math.sqrt(D))                          # [N, H, L, S]
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: is_causal needs attn_mask too (as torch); pass the causal mask")
        if attn_mask is not None:
            m = attn_mask.data() if isinstance(attn_mask, Variable) else attn_mask
            shaped = m.reshape([N, H, L, S]) if m.ndim() == 3 else m
            scores = scores.masked_fill(shaped, float("-inf")) if m.dtype.kind == "b" else scores + Variable(shaped)
        if key_padding_mask is not None:
            pad = key_padding_mask.data() if isinstance(key_padding_mask, Variable) else key_padding_mask
            if pad.dtype.kind == "b":
                scores = scores.masked_fill(pad.reshape([N, 1, 1, S]), float("-inf"))
            else:
                scores = scores + Variable(pad.reshape([N, 1, 1, S]))
        weights = scores.softmax(-1)
        dropped = F.dropout(weights, self.dropout, self.training) if self.dropout else weights
        out = (dropped @ vh).transpose(1, 2).reshape(N, L, E)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, (weights.mean(1) if average_attn_weights else weights)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, " \
               f"batch_first={self.batch_first}"


class TransformerEncoderLayer(Module):
    """torch's ``TransformerEncoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1,
    activation="relu", layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True)``: self-
    attention and a feed-forward block, each with a residual connection and a LayerNorm (after, or
    before with ``norm_first``). Its parameters and state_dict keys are torch's.

    >>> from axonml_autograd import Tensor, Variable
    >>> layer = TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True, seed=0)
    >>> layer(Variable(Tensor.rand([3, 5, 8], seed=1))).shape()
    [3, 5, 8]
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, seed=None, dtype="float32", device=None):
        super().__init__()
        from .normalization import LayerNorm
        from .layers import Dropout
        if seed is None:
            seed = init.next_seed()
        if activation not in ("relu", "gelu") and not callable(activation):
            raise ValueError(f"TransformerEncoderLayer: activation must be 'relu', 'gelu' or a callable, got "
                             f"{activation!r}")
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            seed=init.derive_seed(seed, 0), dtype=dtype, device=device)
        self.linear1 = _TorchLinear(d_model, dim_feedforward, bias, init.derive_seed(seed, 1), dtype, device)
        self.dropout = Dropout(dropout)
        self.linear2 = _TorchLinear(dim_feedforward, d_model, bias, init.derive_seed(seed, 2), dtype, device)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype, device=device)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype, device=device)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.activation = activation

    def _act(self, x):
        if callable(self.activation):
            return self.activation(x)
        return x.relu() if self.activation == "relu" else x.gelu()

    def _sa(self, x, mask, padding, is_causal):
        out = self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False,
                             is_causal=is_causal)[0]
        return self.dropout1(out)

    def _ff(self, x):
        return self.dropout2(self.linear2(self.dropout(self._act(self.linear1(x)))))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src if isinstance(src, Variable) else Variable(src)
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff(x))
