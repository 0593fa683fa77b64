"""Fused scaled-dot-product attention: one tiled kernel forward, two backward (``cl_kernels/attention.cl.mako``).

``fused_attention(q, k, v, mask, is_causal, scale)`` computes ``softmax(q k^T * scale + mask) v`` the way
FlashAttention does: a work-item owns a block of query rows and walks the keys in blocks with the online
softmax (running max, running sum, rescaled accumulator), so no [L, S] score matrix is ever stored; the
forward keeps the per-row logsumexp (``lse``, [B*H, Lp]) for backward. Backward first forms
``dsum_i = rowsum(dO_i * O_i)``, then one kernel over query rows writes dq and one over key rows writes
dk and dv, each recomputing ``p_ij = exp(s_ij - lse_i)``. No atomics: every output element is written
by one work-item in a fixed order, so results are deterministic and a capture replays them bit for bit.
Memory is linear in the sequence lengths: the inputs, transposed padded copies of the operands the score
loops read ([D, Sp] per head), and O(L) row statistics.

CPUs run backward as ONE kernel: a work-item owns a run of keys of one head, writes their dk and dv and
adds their share of dq into a partial of its own (one run per head when there are enough heads to fill
the cores; otherwise a few runs and a fixed-order sum of the partials); the kernel writes dq, dk and dv
from zero (no fills). Before it, one prep kernel writes the transposed q and dO and dsum. GPUs run one
kernel for dq (over query rows) and one for dk/dv (over key rows), a work-item per row.

CPU blocking (:func:`_plan`, per direction): R rows per register block, key (query) blocks of BK = vw * NK,
G register blocks per cache group (a group's accumulators stay in private memory while each key block, in
L1, passes over all of them), scores in passes of SC vectors (R x SC accumulators: 6 x 2 fills the 16
vector registers of AVX2 as the matmul kernel does), EC accumulator vectors per p @ V / dk / dv row.
``AXONML_ATTN_PLAN`` / ``AXONML_ATTN_BPLAN`` = "R,BK,spill,EC[,G[,SC]]" (BK and SC in elements) override it
for tuning, and ``AXONML_ATTN_QC`` the query chunk of the CPU backward (128: a chunk's rows stay in cache
while a key run passes over them). The transposed copies get a row stride off multiples of 256 bytes
(:func:`_row_stride`): at power-of-two strides the D rows a score loop reads fall into a few L1 sets. The
float32 forward takes an inline exp (Cephes' expf polynomial, about 1 ulp; PoCL's is an out-of-line call
that spills the score vectors) and keeps the running sums lane by lane.

The differentiable rule (``create_graph=True``) recomputes the attention from the composed maths, so
gradients of gradients work (with dropout it reads the same kept-scales as a matrix).

Dropout is inside the kernels: each element's keep decision is a Philox word recomputed from its
indices and the device generator's key and position (saved per call), so forward and backward agree
without storing a mask, and a captured replay draws fresh words as the eager calls would.

``nn.functional.scaled_dot_product_attention`` decides when this op runs (:func:`can_fuse`) and otherwise
composes the attention from differentiable ops.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .. import kernels
from ..elementwise_kernels import broadcast_view, copy_view, elementwise
from .. import random as _random
from ..grad_fn import record
from ..tensor import Tensor, check_index32

_TEMPLATE = "attention.cl.mako"


def can_fuse(q, k, v, mask, dropout_p) -> bool:
    """Whether the fused kernels take these operands: float Variables of one dtype on one device (16-bit ones
    on float32 working copies)
    with the same batch shape, q's width equal to v's, a constant mask (a Tensor, or a Variable needing no
    gradient) and ``dropout_p`` < 1."""
    qs, ks, vs = q.data(), k.data(), v.data()
    if dropout_p >= 1.0:
        return False
    if dropout_p and math.prod(qs._shape[:-1]) * ks._shape[-2] >= 2 ** 31:
        return False   # the dropout counters index (head, row) tiles in 32 bits
    if not (qs.dtype == ks.dtype == vs.dtype) or not (qs.dtype in (np.float32, np.float64) or qs.dtype.itemsize == 2):
        return False
    if not (qs.device is ks.device is vs.device):
        return False
    if qs.ndim() < 2 or qs._shape[:-2] != ks._shape[:-2] or ks._shape[:-2] != vs._shape[:-2]:
        return False
    if qs._shape[-1] != vs._shape[-1] or 0 in qs._shape or 0 in ks._shape:
        return False
    if mask is not None and getattr(mask, "requires_grad", False) is True:
        return False
    return True


def _plan(dev, dtype, D, name):
    """(vw, R, NK, spill, EC, G, SC): the vector width (the target's widest that divides D; 1 on GPUs), rows
    per register block, vectors per key (backward: query) block, how the p @ V products run (spill: p
    through a private array, EC vectors of a row at a time; else lane by lane), register blocks per cache
    group (each key / query block in L1 passes over G blocks of R rows, their accumulators in private
    memory), and vectors per score pass (R x SC accumulators; the CPU choices fill the 16 vector registers
    of AVX2: 6 x 2 forward, 4 x 2 backward, as matmul's 6 x 2)."""
    t = dev.target
    if t.is_gpu:
        return 1, 1, 16, 0, 1, 1, 16
    vw = next((w for w in t.vector_widths(dtype) if D % w == 0), 1)
    env = os.environ.get("AXONML_ATTN_PLAN" if name == "attn_forward" else "AXONML_ATTN_BPLAN")
    if env:
        r, blk, sp, ec, *g = map(int, env.split(","))
        return vw, r, max(1, blk // vw), sp, ec, (g or [1])[0], (g[1:] or [0])[0] // vw or max(1, blk // vw)
    if name == "attn_forward":
        return vw, 6, max(1, 32 // vw), 1, 2, 4, max(1, 16 // vw)
    return vw, 4, max(1, 16 // vw), 1, 8, 8, max(1, 16 // vw)


def _kernel(dev, dtype, name, D, mask, causal, with_dq=False, dropout=False):
    vw, R, NK, spill, EC, G, SC = _plan(dev, dtype, D, name)
    while (D // vw) % EC:
        EC //= 2
    while NK % SC:
        SC //= 2
    qc = int(os.environ.get("AXONML_ATTN_QC", 128)) if with_dq else 0
    qc = kernels.round_up(max(qc, vw * NK), vw * NK) if with_dq else 0
    knl = kernels.get_kernel(dev, _TEMPLATE, name, ctype=kernels.ctype(dtype), D=D, vw=vw, R=R, NK=NK, EC=EC, QC=qc, G=G, SC=SC,
                             mask=mask, causal=bool(causal), spill=bool(spill), with_dq=bool(with_dq),
                             dropout=bool(dropout))
    return knl, vw * NK, R


def _row_width(dev, dtype, D):
    """The vector width of the row kernels (transposes, dsum): the target's widest that divides D (1 on GPUs)."""
    if dev.target.is_gpu:
        return 1
    return next((w for w in dev.target.vector_widths(dtype) if D % w == 0), 1)


def _grid(dev, knl, blocks, BH):
    """(global, local) for a launch over ``blocks`` row blocks of each of the ``BH`` heads."""
    if dev.target.is_gpu:
        local = kernels.fit_local(dev, knl, dev.target.local_size(64))
        return (kernels.round_up(blocks, local), BH), (local, 1)
    return (blocks, BH), (1, 1)


def _launch_rows(dev, knl, total, **args):
    """A launch of a per-row helper kernel (transpose, dsum) over ``total`` rows, a few work-items per core."""
    t = dev.target
    if t.is_gpu:
        local = kernels.fit_local(dev, knl, t.local_size(64))
        kernels.launch(dev, knl, (kernels.round_up(total, local),), (local,), rows=1, total=total, **args)
    else:
        rows = max(1, -(-total // (t.items_per_unit * t.compute_units)))
        kernels.launch(dev, knl, (-(-total // rows),), (1,), rows=rows, total=total, **args)


def _transposed(x: Tensor, n, np_, D, BH, dtype):
    """[BH, D, np_]: x ([BH, n, D]) transposed per head, zero-padded past n."""
    dev = x.device
    out = Tensor([BH, D, np_], dtype, dev)
    knl = kernels.get_kernel(dev, _TEMPLATE, "attn_transpose", ctype=kernels.ctype(dtype), D=D, vw=_row_width(dev, dtype, D),
                             R=1, NK=1, EC=1, QC=0, G=1, SC=1,
                             mask="none", causal=False, spill=False, with_dq=False, dropout=False)
    _launch_rows(dev, knl, BH * -(-np_ // 16), src=x, dst=out, n=n, np=np_)
    return out


def _row_stride(n, dtype):
    """The row stride (elements) of a transposed [D, n] copy: n, plus one 64-byte line when n's rows would
    be a multiple of 256 bytes apart (the score loops read a column block from each of the D rows; at
    power-of-two strides those all fall into a few sets of the L1 cache and evict one another)."""
    size = np.dtype(dtype).itemsize
    return n + 64 // size if (n * size) % 256 == 0 else n


def _mask_args(mask, batch, L, S, dtype):
    """(kind, kernel arguments) of ``mask`` read through strides as [*batch, L, S] (broadcast axes have
    stride 0; a mask whose leading batch axes do not collapse to one stride is copied once)."""
    if mask is None:
        return "none", {}
    if mask.dtype.kind == "b":
        kind = "bool"
    else:
        kind = "float"
        if mask.dtype != dtype:
            mask = mask.astype(dtype)
    full = tuple(batch) + (L, S)
    nb = len(batch)
    view = broadcast_view(mask, full)

    def outer_axes(v):   # the outer batch axes (all but the last) that have more than one entry
        return [(n, st) for n, st in zip(full[:max(0, nb - 1)], v.strides[:max(0, nb - 1)]) if n != 1]

    outer = outer_axes(view)
    if any(outer[i][1] != outer[i + 1][1] * outer[i + 1][0] for i in range(len(outer) - 1)):
        view = copy_view(view).view()   # not one stride apart: read as one index only after a copy
        outer = outer_axes(view)
    check_index32("scaled_dot_product_attention mask", view.tensor)
    st = view.strides
    hn = batch[-1] if batch else 1
    msh = st[nb - 1] if batch else 0
    msb = outer[-1][1] if outer else 0
    return kind, dict(mk=view.tensor, moff=view.offset, msb=msb, msh=msh, hn=hn, msi=st[-2], msj=st[-1])


def fused_attention(q, k, v, mask=None, is_causal=False, scale=None, dropout_p=0.0):
    """``dropout(softmax(q k^T * scale + mask)) v`` for Variables q [*batch, L, D], k [*batch, S, D], v
    [*batch, S, Dv] (Dv = D) through the fused kernels; ``mask`` a bool Tensor (True keeps) or an additive
    float Tensor broadcastable to [*batch, L, S], or None; ``dropout_p`` in [0, 1): the probabilities are
    dropped with a fresh draw of the device generator (one block of it per call; see the template).
    The caller checks :func:`can_fuse` first.

    >>> from axonml_autograd import Tensor, Variable
    >>> q = Variable(Tensor.ones([2, 3, 4]), requires_grad=True)
    >>> out = fused_attention(q, q, q, is_causal=True)
    >>> out.shape(), out.grad_fn.name()
    ([2, 3, 4], 'ScaledDotProductAttentionBackward')
    """
    o, saved, attrs = _forward(*(x.data().contiguous() for x in (q, k, v)), mask, is_causal, scale, dropout_p)
    return record("ScaledDotProductAttentionBackward", o, [q, k, v], rule=_rule, vrule=_vrule, saved=saved, **attrs)


def _forward(qs, ks, vs, mask, is_causal, scale, dropout_p):
    """The fused forward over contiguous q, k, v data: (output, the tensors its backward keeps, the
    attributes its backward reads)."""
    low = None
    if qs.dtype.itemsize == 2:
        # float16/bfloat16: the kernels on float32 working copies, the output rounded once; the graph
        # keeps the 16-bit q, k, v and output (half the memory), converted again by backward.
        low = qs.dtype
        originals = (qs, ks, vs)
        qs, ks, vs = (x.astype("float32") for x in (qs, ks, vs))
    batch = qs._shape[:-2]
    L, D = qs._shape[-2:]
    S = ks._shape[-2]
    BH = math.prod(batch)
    dt, dev = qs.dtype, qs.device
    s = 1.0 / math.sqrt(D) if scale is None else float(scale)
    check_index32("scaled_dot_product_attention", qs, ks, vs)
    kind, margs = _mask_args(mask, batch, L, S, dt)
    drop = None
    if dropout_p:
        gen = _random.generator(dev)
        with gen._lock:   # this call's key and position (a device copy: a replay draws anew), then advance
            rng = gen.get_state()
            gen.advance(1)
        drop = (min(2 ** 32 - 1, int(dropout_p * 2 ** 32)), 1.0 / (1.0 - dropout_p))
        margs = dict(margs, rng=rng, thresh=drop[0], rescale=drop[1])
    knl, BK, R = _kernel(dev, dt, "attn_forward", D, kind, is_causal, dropout=drop is not None)
    # One padding for both directions (their key blocks may differ; all are powers of two times vw).
    pad = max(BK, _plan(dev, dt, D, "backward")[2] * _plan(dev, dt, D, "backward")[0])
    Lp, Sp = kernels.round_up(L, pad), _row_stride(kernels.round_up(S, pad), dt)
    kt = _transposed(ks, S, Sp, D, BH, dt)
    o = Tensor(list(batch) + [L, D], dt, dev)
    lse = Tensor([BH, Lp], dt, dev)
    blocks = -(-Lp // R)
    per = 1 if dev.target.is_gpu else max(1, blocks * BH // (4 * dev.target.items_per_unit * dev.target.compute_units))
    size, local = _grid(dev, knl, -(-blocks // per), BH)
    kernels.launch(dev, knl, size, local, q=qs, kt=kt, v=vs, o=o, lse=lse, L=L, S=S, Lp=Lp, Sp=Sp, scale=s,
                   blocks=per, **margs)
    saved = (qs, ks, vs, kt, o, lse, margs.get("mk"), margs.get("rng"))
    if low is not None:
        o = o.astype(low)
        saved = originals + (None, o) + saved[5:]
    return o, saved, dict(mask=mask, kind=kind, margs=margs, causal=bool(is_causal), scale=s, padded=(Lp, Sp),
                          drop=drop, low=low)



def _rule(ctx, g: Tensor):
    low = ctx.low
    if low is not None:   # 16-bit: float32 working copies of what forward kept, the gradients rounded once
        return tuple(d.astype(low) for d in _gradients(ctx, g.astype("float32"),
                                                       *(t.astype("float32") for t in ctx.saved_tensors[:3]),
                                                       None, ctx.saved_tensors[4].astype("float32"),
                                                       ctx.saved_tensors[5]))
    return _gradients(ctx, g, *ctx.saved_tensors[:6])


def _gradients(ctx, g: Tensor, qs, ks, vs, kt, o, lse):
    batch = qs._shape[:-2]
    L, D = qs._shape[-2:]
    S = ks._shape[-2]
    BH = math.prod(batch)
    dt, dev = qs.dtype, qs.device
    g = g.contiguous()
    kind, margs, causal, s = ctx.kind, ctx.margs, ctx.causal, ctx.scale
    one_pass = not dev.target.is_gpu
    drop = ctx.drop is not None
    kkv, BK, R = _kernel(dev, dt, "attn_backward_dkv", D, kind, causal, with_dq=one_pass, dropout=drop)
    Lp, Sp = ctx.padded
    dsum = Tensor([BH, Lp], dt, dev)
    Lt = _row_stride(Lp, dt)
    qt, dot = Tensor([BH, D, Lt], dt, dev), Tensor([BH, D, Lt], dt, dev)
    kp = kernels.get_kernel(dev, _TEMPLATE, "attn_prep", ctype=kernels.ctype(dt), D=D, vw=_row_width(dev, dt, D), R=1, NK=1,
                            EC=1, QC=0, G=1, SC=1,
                            mask="none", causal=False, spill=False, with_dq=False, dropout=False)
    _launch_rows(dev, kp, BH * -(-Lt // 16), q=qs, dout=g, o=o, qt=qt, dot=dot, dsum=dsum, L=L, Lp=Lp, Lt=Lt)
    common = dict(dout=g, lse=lse, dsum=dsum, L=L, S=S, Lp=Lp, Sp=Sp, scale=s, **margs)
    dk, dv = Tensor(ks._shape, dt, dev), Tensor(vs._shape, dt, dev)
    if one_pass:
        # CPUs: one kernel; a work-item owns a run of keys of one head and adds its share of dq into a
        # partial of its own (one partial per run: as few runs as keep every core busy).
        t = dev.target
        chunks = max(1, min(-(-S // R), -(-(t.items_per_unit * t.compute_units) // BH)))
        kchunk = kernels.round_up(-(-S // chunks), R)
        chunks = -(-S // kchunk)
        dqp = Tensor([chunks] + list(qs._shape), dt, dev)   # every element written by the kernel
        kernels.launch(dev, kkv, (chunks, BH), (1, 1), qt=qt, q=qs, k=ks, v=vs, dot=dot, dk=dk, dv=dv, dqp=dqp, Lt=Lt,
                       kchunk=kchunk, nbh=BH, **common)
        dq = dqp.reshape(list(qs._shape)) if chunks == 1 else dqp.sum(0)
        return dq, dk, dv
    kq, _, _ = _kernel(dev, dt, "attn_backward_dq", D, kind, causal, dropout=drop)
    vt = _transposed(vs, S, Sp, D, BH, dt)
    if kt is None:   # not kept (16-bit forward): made again
        kt = _transposed(ks, S, Sp, D, BH, dt)
    dq = Tensor(qs._shape, dt, dev)
    size, local = _grid(dev, kq, -(-L // R), BH)
    kernels.launch(dev, kq, size, local, q=qs, kt=kt, vt=vt, k=ks, dq=dq, **common)
    size, local = _grid(dev, kkv, -(-S // R), BH)
    kernels.launch(dev, kkv, size, local, qt=qt, q=qs, k=ks, v=vs, dot=dot, dk=dk, dv=dv, Lt=Lt, **common)
    return dq, dk, dv


def _dropout_matrix(ctx, qs, ks) -> Tensor:
    """The kept-scales (0 or 1 / (1 - p)) of every element, [*batch, L, S]."""
    batch, L, S, dt, dev = qs._shape[:-2], qs._shape[-2], ks._shape[-2], qs.dtype, qs.device
    BH = math.prod(batch)
    out = Tensor(list(batch) + [L, S], dt, dev)
    knl = kernels.get_kernel(dev, _TEMPLATE, "attn_dropout_mask", ctype=kernels.ctype(dt), D=qs._shape[-1], vw=1, R=1,
                             NK=1, EC=1, QC=0, G=1, SC=1, mask="none", causal=False, spill=False, with_dq=False, dropout=True)
    rows = 1 if dev.target.is_gpu else max(1, -(-L * BH // (dev.target.items_per_unit * dev.target.compute_units)))
    rows = min(rows, L)
    kernels.launch(dev, knl, (-(-L // rows), BH), (1, 1), out=out, rng=ctx.saved_tensors[7], thresh=ctx.drop[0],
                   rescale=ctx.drop[1], L=L, S=S, rows=rows)
    return out


def _vrule(ctx, g):
    """The same gradients over Variables (for create_graph=True): the attention recomputed from the
    composed maths, p = softmax(s), dv = p^T g, ds = p * (g v^T - rowsum(g v^T * p)), dq = ds k * scale,
    dk = ds^T q * scale."""
    qs, ks, vs = ctx.saved_tensors[:3]
    q, k, v = ctx.input(0, qs), ctx.input(1, ks), ctx.input(2, vs)
    scores = (q @ k.mT) * ctx.scale
    L, S = qs._shape[-2], ks._shape[-2]
    if ctx.causal:
        upper = elementwise("(gid % S) > (gid / S)", [], names=(), int_scalars={"S": S}, shape=(L, S),
                            dtype=np.bool_, device=qs.device, op="causal mask")
        scores = scores.masked_fill(upper, float("-inf"))
    elif ctx.mask is not None:
        m = ctx.mask
        if m.dtype.kind == "b":
            scores = scores.masked_fill(~m, float("-inf"))
        else:
            scores = scores + g.__class__(m if m.dtype == qs.dtype else m.astype(qs.dtype))
    p = scores.softmax(-1)
    z = p
    if ctx.drop is not None:   # the same kept-scales as the kernels, as a matrix (create_graph only)
        keep = g.__class__(_dropout_matrix(ctx, qs, ks))
        z = p * keep
    dq = dk = dv = None
    need = ctx.needs_input_grad
    if need[2]:
        dv = z.mT @ g
    if need[0] or need[1]:
        dp = g @ v.mT
        if ctx.drop is not None:
            dp = dp * keep
        ds = p * (dp - (dp * p).sum(-1, keepdim=True))
        if need[0]:
            dq = (ds @ k) * ctx.scale
        if need[1]:
            dk = (ds.mT @ q) * ctx.scale
    return dq, dk, dv


# -- self-attention on torch's packed in-projection -----------------------------------------------------

def packed_self_attention(packed, heads, mask=None, is_causal=False, scale=None, dropout_p=0.0):
    """:func:`fused_attention` of the heads of a packed in-projection ``packed`` [N, L, 3E] (q, k and v side
    by side on the last axis, each E = heads * D wide, head h at columns h*D..), as ONE op: the result is
    [N, heads, L, D]. Its gradient is one [N, L, 3E] tensor written by one kernel, where reading the three
    heads out as separate windows gave three zero-filled gradients, three writes into them and two sums.
    The caller checks what :func:`can_fuse` checks.

    >>> from axonml_autograd import Tensor, Variable
    >>> p = Variable(Tensor.rand([2, 5, 12], seed=0), requires_grad=True)
    >>> out = packed_self_attention(p, 2, is_causal=True)
    >>> out.shape(), out.grad_fn.name()
    ([2, 2, 5, 2], 'PackedSelfAttentionBackward')
    """
    from ..tensor import View
    x = packed.data()
    N, L, E3 = x._shape
    E = E3 // 3
    D = E // heads
    # The heads [N, H, L, D] of q, k and v, each a strided read of the packed rows.
    qs, ks, vs = (copy_view(View(x, [N, heads, L, D], [L * E3, D, E3, 1], i * E)) for i in range(3))
    o, saved, attrs = _forward(qs, ks, vs, mask, is_causal, scale, dropout_p)
    return record("PackedSelfAttentionBackward", o, [packed], rule=_packed_rule, vrule=_packed_vrule, saved=saved,
                  **attrs)


def _pack_heads(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Three [N, H, L, D] tensors side by side as the packed [N, L, 3 * H * D] layout, in one kernel."""
    N, H, L, D = q._shape
    E = H * D
    shape = [N, L, 3, H, D]
    heads = [_heads_view(t, shape) for t in (q, k, v)]
    # E written into the expression, not passed: a division by a constant is a multiply, where a division
    # by an argument is an integer division per element (it made this kernel 3x slower).
    out = elementwise(f"((gid / {E}) % 3 == 0) ? q : (((gid / {E}) % 3 == 1) ? k : v)", heads, names=("q", "k", "v"),
                      shape=shape, op="packed self-attention gradient")
    return out.reshape([N, L, 3 * E])


def _heads_view(t: Tensor, shape):
    """[N, H, L, D] ``t`` read as [N, L, 3, H, D] (the same element for each of the three)."""
    from ..tensor import View
    N, H, L, D = t._shape
    return View(t, shape, [H * L * D, D, 0, L * D, 1], 0)


def _packed_rule(ctx, g: Tensor):
    low = ctx.low
    if low is not None:   # 16-bit: in float32 from the kept 16-bit heads, the packed gradient rounded once
        st = ctx.saved_tensors
        grads = _gradients(ctx, g.astype("float32"), *(t.astype("float32") for t in st[:3]), None,
                           st[4].astype("float32"), st[5])
        return _pack_heads(*grads).astype(low)
    return _pack_heads(*_gradients(ctx, g, *ctx.saved_tensors[:6]))


class _HeadsOfPacked:
    """The packed op's context as :func:`_vrule` reads a fused op's: inputs q, k, v (windows of the packed
    Variable), each needing a gradient when the packed input does."""

    def __init__(self, ctx, heads):
        self._ctx, self._heads = ctx, heads
        self.needs_input_grad = ctx.needs_input_grad * 3

    def input(self, k, tensor):
        return self._heads[k]

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def _packed_vrule(ctx, g):
    """The gradient over Variables (create_graph=True): the packed input rebuilt from the kept heads, its
    three windows, the fused op's composed rule on them, and the windows' gradients summed."""
    from .shape import into_zeros_variable, window
    qs, ks, vs = ctx.saved_tensors[:3]
    N, H, L, D = qs._shape
    E3 = 3 * H * D
    packed = ctx.input(0, _pack_heads(qs, ks, vs))
    strides = [L * E3, D, E3, 1]
    heads = [window(packed, [N, H, L, D], strides, i * H * D) for i in range(3)]
    grads = _vrule(_HeadsOfPacked(ctx, heads), g)
    total = None
    for i, d in enumerate(grads):
        if d is not None:
            d = into_zeros_variable(d, (N, L, E3), tuple(strides), i * H * D)
            total = d if total is None else total + d
    return total
