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
from .module import Module


class _OutProj(Module):
    """torch's ``out_proj``: a linear layer with a [out, in] weight (its state_dict keys are torch's)."""

    def __init__(self, embed_dim, bias, seed, dtype, device):
        super().__init__()
        self.weight = Variable(Tensor.empty([embed_dim, embed_dim], dtype, device), requires_grad=True)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), seed=seed)   # torch's Linear initialisation
        self.bias = Variable(Tensor.zeros([embed_dim], dtype, device), requires_grad=True) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


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
        self.out_proj = _OutProj(embed_dim, bias, init.derive_seed(seed, 1), dtype, device)

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
