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
from ..functions import shape as shape_ops
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
        packed_input = query is key and key is value
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
        if packed_input:
            # Self-attention (torch's packed in-projection): one product for q, k and v. The fused path
            # takes it as it is; elsewhere each head layout [N, H, L, D] is read out of it by a window.
            packed = F.linear(q, w, b)   # [N, L, 3E]

            def heads():
                return tuple(shape_ops.window(packed, [N, H, L, D], [L * 3 * E, D, 3 * E, 1], i * E)
                             for i in range(3))
        else:
            proj = [F.linear(x, w[i * E:(i + 1) * E], None if b is None else b[i * E:(i + 1) * E])
                    for i, x in enumerate((q, k, v))]
            qh, kh, vh = (p.reshape(N, -1, H, D).transpose(1, 2) for p in proj)   # [N, H, len, D]
            heads = lambda: (qh, kh, vh)
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: is_causal needs attn_mask too (as torch); pass the causal mask")
        if not need_weights and (attn_mask is None or key_padding_mask is None):
            # Without the weights to return, F.scaled_dot_product_attention runs it (the fused kernels
            # where they apply); its bool masks keep where True, ours drop where True.
            mask = None
            for m, shape in ((attn_mask, None), (key_padding_mask, [N, 1, 1, S])):
                if m is None:
                    continue
                m = m.data() if isinstance(m, Variable) else m
                if shape is None:
                    shape = [N, H, L, S] if m.ndim() == 3 else list(m.shape())
                mask = ~m.reshape(shape) if m.dtype.kind == "b" else m.reshape(shape)
            p = self.dropout if self.training else 0.0
            # Packed: the heads' attention as one op on the in-projection, its gradient one kernel.
            out = F._packed_self_attention(packed, H, mask, p) if packed_input else None
            if out is None:
                qh, kh, vh = heads()
                out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, dropout_p=p)
            out = self.out_proj(out.transpose(1, 2).reshape(N, L, E))
            return (out.transpose(0, 1) if not self.batch_first else out), None
        qh, kh, vh = heads()
        scores = (qh @ kh.mT) * (1.0 / math.sqrt(D))                          # [N, H, L, S]
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
        _activation(activation, "TransformerEncoderLayer")
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


def _activation(activation, who):
    if activation not in ("relu", "gelu") and not callable(activation):
        raise ValueError(f"{who}: activation must be 'relu', 'gelu' or a callable, got {activation!r}")
    return activation


def _clones(layer, num_layers, who):
    """``num_layers`` deep copies of ``layer`` (torch's ``_get_clones``: identical initial weights)."""
    import copy
    from .module import ModuleList
    if not isinstance(layer, Module):
        raise TypeError(f"{who}: expected a layer Module, got {type(layer).__name__}")
    n = int(num_layers)
    if n < 0:
        raise ValueError(f"{who}: num_layers must be non-negative, got {num_layers}")
    return ModuleList([copy.deepcopy(layer) for _ in range(n)])


class TransformerEncoder(Module):
    """torch's ``TransformerEncoder(encoder_layer, num_layers, norm=None)``: ``num_layers`` deep copies of
    ``encoder_layer`` (``layers.0``, ``layers.1``, ... in the state_dict) applied in turn, then ``norm``.

    >>> from axonml_autograd import Tensor, Variable
    >>> enc = TransformerEncoder(TransformerEncoderLayer(8, 2, 16, batch_first=True, seed=0), 2)
    >>> enc(Variable(Tensor.rand([3, 5, 8], seed=1))).shape()
    [3, 5, 8]
    """

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers, "TransformerEncoder")
        self.num_layers = len(self.layers)
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = src if isinstance(src, Variable) else Variable(src)
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return self.norm(x) if self.norm is not None else x


class TransformerDecoderLayer(Module):
    """torch's ``TransformerDecoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1,
    activation="relu", layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True)``: self-
    attention over the target, cross-attention to ``memory`` and a feed-forward block, each with a
    residual connection and a LayerNorm (after each block, or before with ``norm_first``). Parameter
    names are torch's (``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm1..3``).

    >>> from axonml_autograd import Tensor, Variable
    >>> layer = TransformerDecoderLayer(8, 2, dim_feedforward=16, batch_first=True, seed=0)
    >>> layer(Variable(Tensor.rand([3, 4, 8], seed=1)), Variable(Tensor.rand([3, 6, 8], seed=2))).shape()
    [3, 4, 8]
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, seed=None, dtype="float32", device=None):
        super().__init__()
        from .normalization import LayerNorm
        from .layers import Dropout
        if seed is None:
            seed = init.next_seed()
        self.activation = _activation(activation, "TransformerDecoderLayer")
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            seed=init.derive_seed(seed, 0), dtype=dtype, device=device)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, seed=init.derive_seed(seed, 3),
                                                 dtype=dtype, device=device)
        self.linear1 = _TorchLinear(d_model, dim_feedforward, bias, init.derive_seed(seed, 1), dtype, device)
        self.dropout = Dropout(dropout)
        self.linear2 = _TorchLinear(dim_feedforward, d_model, bias, init.derive_seed(seed, 2), dtype, device)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype, device=device)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype, device=device)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype, device=device)
        self.dropout1, self.dropout2, self.dropout3 = Dropout(dropout), Dropout(dropout), Dropout(dropout)

    def _act(self, x):
        if callable(self.activation):
            return self.activation(x)
        return x.relu() if self.activation == "relu" else x.gelu()

    def _sa(self, x, mask, padding, is_causal):
        return self.dropout1(self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False,
                                            is_causal=is_causal)[0])

    def _mha(self, x, mem, mask, padding, is_causal):
        return self.dropout2(self.multihead_attn(x, mem, mem, attn_mask=mask, key_padding_mask=padding,
                                                 need_weights=False, is_causal=is_causal)[0])

    def _ff(self, x):
        return self.dropout3(self.linear2(self.dropout(self._act(self.linear1(x)))))

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt if isinstance(tgt, Variable) else Variable(tgt)
        mem = memory if isinstance(memory, Variable) else Variable(memory)
        if self.norm_first:
            x = x + self._sa(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha(self.norm2(x), mem, memory_mask, memory_key_padding_mask, memory_is_causal)
            return x + self._ff(self.norm3(x))
        x = self.norm1(x + self._sa(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha(x, mem, memory_mask, memory_key_padding_mask, memory_is_causal))
        return self.norm3(x + self._ff(x))


class TransformerDecoder(Module):
    """torch's ``TransformerDecoder(decoder_layer, num_layers, norm=None)``: deep copies of
    ``decoder_layer`` applied in turn to the target (each attending to ``memory``), then ``norm``."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers, "TransformerDecoder")
        self.num_layers = len(self.layers)
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        x = tgt if isinstance(tgt, Variable) else Variable(tgt)
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
        return self.norm(x) if self.norm is not None else x


class Transformer(Module):
    """torch's ``Transformer(d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
    dim_feedforward=2048, dropout=0.1, activation="relu", custom_encoder=None, custom_decoder=None,
    layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True)``: an encoder and a decoder
    with a final LayerNorm each (``encoder.norm``, ``decoder.norm``), every matrix re-initialised
    Xavier-uniform as torch does. ``forward(src, tgt, src_mask, tgt_mask, memory_mask, ...)``.

    >>> Transformer.generate_square_subsequent_mask(3).to_vec()
    [0.0, -inf, -inf, 0.0, 0.0, -inf, 0.0, 0.0, 0.0]
    """

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                 dropout=0.1, activation="relu", custom_encoder=None, custom_decoder=None, layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, seed=None, dtype="float32", device=None):
        super().__init__()
        from .normalization import LayerNorm
        if seed is None:
            seed = init.next_seed()
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                            batch_first, norm_first, bias, seed=init.derive_seed(seed, 0),
                                            dtype=dtype, device=device)
            self.encoder = TransformerEncoder(layer, num_encoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype,
                                                        device=device))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                            batch_first, norm_first, bias, seed=init.derive_seed(seed, 1),
                                            dtype=dtype, device=device)
            self.decoder = TransformerDecoder(layer, num_decoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype,
                                                        device=device))
        for k, p in enumerate(self.parameters()):   # torch's _reset_parameters
            if p.ndim() > 1:
                init.xavier_uniform_(p, seed=init.derive_seed(seed, 100 + k))
        self.d_model, self.nhead, self.batch_first = d_model, nhead, bool(batch_first)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        s = src if isinstance(src, Variable) else Variable(src)
        t = tgt if isinstance(tgt, Variable) else Variable(tgt)
        b = 0 if self.batch_first else 1
        if s.ndim() == 3 and t.ndim() == 3 and s.shape()[b] != t.shape()[b]:
            raise RuntimeError(f"Transformer: the batch number of src and tgt must be equal, got shapes "
                               f"{s.shape()} and {t.shape()}")
        if s.shape()[-1] != self.d_model or t.shape()[-1] != self.d_model:
            raise RuntimeError(f"Transformer: the feature number of src and tgt must be equal to d_model "
                               f"{self.d_model}, got shapes {s.shape()} and {t.shape()}")
        memory = self.encoder(s, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(t, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None) -> Tensor:
        """torch's causal mask: ``[sz, sz]`` float, ``-inf`` above the diagonal and ``0`` elsewhere (made
        on the device)."""
        from ..elementwise_kernels import elementwise
        from ..shapes import as_int
        n = as_int(sz, "generate_square_subsequent_mask: sz")
        if n < 0:
            raise ValueError(f"generate_square_subsequent_mask: sz must be non-negative, got {n}")
        out = Tensor([n, n], dtype or "float32", device)
        if n:
            elementwise("(gid % sz) > (gid / sz) ? -INFINITY : L(0.0)", [], names=(), int_scalars={"sz": n},
                        out=out.view(), op="generate_square_subsequent_mask", device=out.device)
        return out
