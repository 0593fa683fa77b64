"""The recurrence of one RNN / LSTM / GRU layer in one direction, as one recorded op.

The caller projects the inputs of every step at once (``x @ W_ih^T``, one matmul over [T * B, in]);
this op runs the steps: per step one matmul ``h_prev @ W_hh^T`` and one cell kernel
(cl_kernels/rnn_cell.cl.mako) that adds the biases, applies the gates and writes the new state.
Every state lives in one tensor S of [K, T + 1, B, H] (K = 2 for the LSTM: h, then c), which is the
op's result: the caller takes the output sequence, h_n and c_n as windows of it.

Backward walks the steps in reverse: one cell kernel (the gate maths) and one matmul
(``dgates @ W_hh``) per step; then W_hh's gradient is ONE product of the stacked gate gradients of
all steps with the stacked previous states, and the biases' gradients one column sum each.
``_rnn_vrule`` is the same gradient written with Variable ops (recomputing the forward), for
``create_graph=True``; it is slow (a few ops per step) and only runs for gradients of gradients.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..grad_fn import record
from ..matmul import matmul as matmul_tensors
from ..tensor import Tensor, check_index32
from . import differentiable as dv

_TEMPLATE = "rnn_cell.cl.mako"
GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}
SAVED = {"lstm": 5, "gru": 4}   # per unit, what forward keeps for backward (the simple RNN reads S)


def _window(t: Tensor, shape) -> Tensor:
    """A contiguous tensor of ``shape`` over ``t``'s storage (the offset goes to the matmul separately)."""
    return Tensor(shape, t.dtype, t.device, _storage=t._storage)


_plans = {}   # (device, target, kernel, options, n, H) -> (kernel, global size, local size, chunk)


def _launch(name, mode, dtype, n, bias, has_len, args, H):
    """Enqueue ``name`` over the ``n`` = B * H items. GPUs: a work-item per item. CPUs: a few
    work-items per core, each over consecutive items, ``vw`` at a time (the target's vector width
    when it divides H; a work-group costs microseconds there, and vectors make exp/tanh cheaper).
    The kernel and its geometry are kept per shape: a layer launches this 2 T times a step."""
    dev = args["S"].device if "S" in args else args["gS"].device
    key = (dev, dev.target, name, mode, dtype, bool(bias), bool(has_len), n, H)
    plan = _plans.get(key)
    if plan is None:
        target = dev.target
        vw = _vector_width(target, dtype, H)
        knl = kernels.get_kernel(dev, _TEMPLATE, name, ctype=kernels.ctype(dtype), mode=mode, bias=bool(bias),
                                 has_len=bool(has_len), vw=vw, seq=False, nv=1)
        if target.is_gpu:
            chunk, local = 1, kernels.fit_local(dev, knl, target.local_size(64))
            size = kernels.round_up(n, local)
        else:
            chunk = max(64, -(-n // (target.items_per_unit * target.compute_units)))
            chunk, local = -(-chunk // vw) * vw, 1
            size = -(-n // chunk)
        if len(_plans) > 1024:
            _plans.clear()
        plan = _plans[key] = (knl, (size,), (local,), chunk)
    knl, size, local, chunk = plan
    kernels.launch(dev, knl, size, local, n=n, chunk=chunk, **args)


def _vector_width(target, dtype, H) -> int:
    """The target's widest vector width that divides H (1 on GPUs: a work-item per unit there)."""
    if target.is_gpu:
        return 1
    for w in target.widths_float if dtype == np.float32 else target.widths_double:
        if H % w == 0:
            return w
    return 1


def sequence_kernels(dev) -> bool:
    """Whether a layer's recurrence runs as one launch each way (CPUs) rather than two per step."""
    return not dev.target.is_gpu


def _launch_sequence(name, mode, dtype, B, H, bias, has_len, args):
    """Enqueue ``seq_forward``/``seq_backward``: a work-item per block of batch rows, a few per core."""
    dev = args["S"].device
    key = (dev, dev.target, name, mode, dtype, bool(bias), bool(has_len), B, H)
    plan = _plans.get(key)
    if plan is None:
        target = dev.target
        vw = _vector_width(target, dtype, H)
        nv = 2 if (H // vw) % 2 == 0 else 1
        knl = kernels.get_kernel(dev, _TEMPLATE, name, ctype=kernels.ctype(dtype), mode=mode, bias=bool(bias),
                                 has_len=bool(has_len), vw=vw, seq=True, nv=nv)
        rows = max(1, -(-B // (target.items_per_unit * target.compute_units)))
        if len(_plans) > 1024:
            _plans.clear()
        plan = _plans[key] = (knl, (-(-B // rows),), rows)
    knl, size, rows = plan
    kernels.launch(dev, knl, size, (1,), B=B, H=H, rows=rows, **args)


def _slots(T, reverse):
    """(step order, slot read, slot written) of each step: a forward pass goes up, a reverse one down."""
    if reverse:
        return [(t, t + 1, t) for t in range(T - 1, -1, -1)]
    return [(t, t, t + 1) for t in range(T)]


def rnn_recurrence(mode, xp, w_hh, b_ih, b_hh, h0, c0, lens=None, reverse=False):
    """The states S [K, T + 1, B, H] of one layer-direction from the projected inputs ``xp``
    ([T, B, G * H], no bias), ``w_hh`` [G * H, H], optional biases [G * H], optional initial states
    ``h0``/``c0`` [B, H] (Variables or None: zeros) and ``lens`` (an int32 Tensor [B] or None).

    Slot 0 holds h0 for a forward pass (its outputs are slots 1..T, h_n is slot T); a reverse pass
    keeps h0 in slot T, its outputs in slots 0..T-1 and h_n in slot 0.
    """
    xs, ws = xp.data(), w_hh.data()
    if xs.dtype.itemsize == 2 or ws.dtype.itemsize == 2:
        # float16/bfloat16 (a 16-bit module, or autocast's projection): the recurrence in float32, so the
        # state is not rounded at every step, and the states rounded once to the 16-bit type.
        low = xs.dtype if xs.dtype.itemsize == 2 else ws.dtype
        wide = [None if v is None else v.float() for v in (xp, w_hh, b_ih, b_hh, h0, c0)]
        return rnn_recurrence(mode, *wide, lens=lens, reverse=reverse).to(low)
    T, B, GH = xs._shape
    H = ws._shape[1]
    K = 2 if mode == "lstm" else 1
    dt, dev = xs.dtype, xs.device
    check_index32("recurrent layers", K * (T + 1) * B * H, T * B * max(GH, 5 * H))   # the kernels' int offsets
    bi = b_ih.data() if b_ih is not None else None
    bh = b_hh.data() if b_hh is not None else None
    h0s = h0.data() if h0 is not None else None
    c0s = c0.data() if c0 is not None else None
    S = Tensor([K, T + 1, B, H], dt, dev)
    plane, BH = (T + 1) * B * H, B * H
    start = T if reverse else 0
    if h0s is not None:
        h0s = h0s if h0s._view is None else h0s.contiguous()
    if c0s is not None:
        c0s = c0s if c0s._view is None else c0s.contiguous()
    _launch("cell_init", mode, dt, BH, False, False,
            dict(S=S, slot=start * BH, c_plane=plane, h0=h0s if h0s is not None else S,
                 c0=c0s if c0s is not None else S, zero=int(h0s is None)), H)
    sw = SAVED.get(mode, 0)
    sv = Tensor([T, B, sw * H], dt, dev) if sw else S
    hp = Tensor([B, GH], dt, dev)
    hwin = _window(S, [B, H])
    has_len = lens is not None
    xs = xs if xs._view is None else xs.contiguous()
    if sequence_kernels(dev):
        args = dict(xp=xs, wt=ws.T.contiguous(), hp=hp, S=S, c_plane=plane, sv=sv, steps=T, reverse=int(reverse))
        if bi is not None:
            args.update(bi=bi, bh=bh)
        if has_len:
            args["lens"] = lens
        _launch_sequence("seq_forward", mode, dt, B, H, bi is not None, has_len, args)
    for t, prev, nxt in (() if sequence_kernels(dev) else _slots(T, reverse)):
        matmul_tensors(hwin, ws, trans_b=True, out=hp, offsets=(prev * BH, 0, 0))
        args = dict(xp=xs, x_off=t * B * GH, hp=hp, S=S, prev=prev * BH, next=nxt * BH, c_plane=plane,
                    sv=sv, s_off=t * B * sw * H, t=t, H=H)
        if bi is not None:
            args.update(bi=bi, bh=bh)
        if has_len:
            args["lens"] = lens
        _launch("cell_forward", mode, dt, BH, bi is not None, has_len, args, H)
    return record(f"{'LSTM' if mode == 'lstm' else 'GRU' if mode == 'gru' else 'RNN'}Backward", S,
                  [xp, w_hh, b_ih, b_hh, h0, c0], rule=_rnn_rule, vrule=_rnn_vrule,
                  saved=(xs, ws, bi, bh, h0s, c0s, S, sv, lens), mode=mode, reverse=reverse)


def _rnn_rule(ctx, g: Tensor):
    xs, ws, bi, bh, h0s, c0s, S, sv, lens = ctx.saved_tensors
    mode, reverse = ctx.mode, ctx.reverse
    need = ctx.needs_input_grad
    T, B, GH = xs._shape
    H = ws._shape[1]
    dt, dev = xs.dtype, xs.device
    plane, BH = (T + 1) * B * H, B * H
    sw = SAVED.get(mode, 0)
    g = g if g._view is None else g.contiguous()
    dgi = Tensor([T, B, GH], dt, dev)
    dgh = Tensor([T, B, GH], dt, dev) if mode == "gru" else dgi
    carry_h = Tensor.zeros([B, H], dt, dev)
    carry_c = Tensor.zeros([B, H], dt, dev) if mode == "lstm" else carry_h
    dmm = Tensor([B, H], dt, dev)
    steps = _slots(T, reverse)[::-1]
    need_h0 = need[4] or need[5]
    if sequence_kernels(dev):
        args = dict(gS=g, dmm=dmm, carry_h=carry_h, carry_c=carry_c, S=S, c_plane=plane, sv=sv, dgi=dgi, dgh=dgh,
                    w=ws if ws._view is None else ws.contiguous(), steps=T, reverse=int(reverse), final_product=int(need_h0))
        if lens is not None:
            args["lens"] = lens
        _launch_sequence("seq_backward", mode, dt, B, H, False, lens is not None, args)
    for k, (t, prev, nxt) in enumerate(() if sequence_kernels(dev) else steps):
        args = dict(gS=g, dmm=dmm, first=int(k == 0), carry_h=carry_h, carry_c=carry_c, S=S, prev=prev * BH,
                    next=nxt * BH, c_plane=plane, sv=sv, s_off=t * B * sw * H, dgi=dgi, dgh=dgh,
                    g_off=t * B * GH, t=t, H=H)
        if lens is not None:
            args["lens"] = lens
        _launch("cell_backward", mode, dt, BH, False, lens is not None, args, H)
        if k + 1 < len(steps) or need_h0:
            matmul_tensors(_window(dgh, [B, GH]), ws, out=dmm, offsets=(t * B * GH, 0, 0))
    dh0 = dc0 = None
    if need_h0:
        dh0 = Tensor([B, H], dt, dev)
        dc0 = Tensor([B, H], dt, dev) if mode == "lstm" else dh0
        _launch("cell_finish", mode, dt, BH, False, False,
                dict(gS=g, dmm=dmm, first=0, carry_h=carry_h, carry_c=carry_c, slot=steps[-1][1] * BH,
                     c_plane=plane, dh0=dh0, dc0=dc0), H)
        if mode != "lstm":
            dc0 = None
    dw = None
    if need[1]:   # sum over steps of dgates_t^T @ h_prev_t: one product over all T * B rows
        hoff = BH if reverse else 0
        dw = matmul_tensors(_window(dgh, [T * B, GH]), _window(S, [T * B, H]), trans_a=True,
                            offsets=(0, hoff, 0))
    dbi = dgi.reshape([T * B, GH]).sum(axis=0) if need[2] else None
    dbh = dgh.reshape([T * B, GH]).sum(axis=0) if need[3] else None
    return dgi, dw, dbi, dbh, dh0, dc0


def step_masks(lens, T, dtype, device):
    """For the differentiable rule: one [B, 1] constant per step, 1 where the row's sequence runs."""
    host = lens.numpy() if isinstance(lens, Tensor) else np.asarray(lens)
    return [Tensor.from_numpy((t < host).astype(dtype).reshape(-1, 1), device=device) for t in range(T)]


def _rnn_vrule(ctx, g):
    """The same gradients with Variable ops: the forward recomputed from the op's inputs, then
    backpropagation through time by hand, so the result is a graph (create_graph=True)."""
    from ..variable import Variable
    xs, ws, bis, bhs, h0s, c0s, S, sv, lens = ctx.saved_tensors
    mode, reverse = ctx.mode, ctx.reverse
    T, B, GH = xs._shape
    H = ws._shape[1]
    X, W = ctx.input(0, xs), ctx.input(1, ws)
    bi = ctx.input(2, bis) if bis is not None else None
    bh = ctx.input(3, bhs) if bhs is not None else None
    zero = Variable(Tensor.zeros([B, H], xs.dtype, xs.device))
    h = ctx.input(4, h0s) if h0s is not None else zero
    c = (ctx.input(5, c0s) if c0s is not None else zero) if mode == "lstm" else None
    masks = step_masks(lens, T, xs.dtype, xs.device) if lens is not None else None
    steps = _slots(T, reverse)
    cache = {}
    for t, prev, nxt in steps:
        xt = X[t] if bi is None else X[t] + bi
        hh = h.matmul(W.t()) if bh is None else h.matmul(W.t()) + bh
        if mode in ("tanh", "relu"):
            a = xt + hh
            hn = a.tanh() if mode == "tanh" else a.relu()
            cn, vals = None, (hn, a)
        elif mode == "lstm":
            a = xt + hh
            i, f = a.narrow(-1, 0, H).sigmoid(), a.narrow(-1, H, H).sigmoid()
            gg, o = a.narrow(-1, 2 * H, H).tanh(), a.narrow(-1, 3 * H, H).sigmoid()
            cn = f * c + i * gg
            tc = cn.tanh()
            hn, vals = o * tc, (i, f, gg, o, tc)
        else:
            r = (xt.narrow(-1, 0, H) + hh.narrow(-1, 0, H)).sigmoid()
            z = (xt.narrow(-1, H, H) + hh.narrow(-1, H, H)).sigmoid()
            hnp = hh.narrow(-1, 2 * H, H)
            n = (xt.narrow(-1, 2 * H, H) + r * hnp).tanh()
            hn, cn, vals = (1 - z) * n + z * h, None, (r, z, n, hnp)
        if masks is not None:
            m = Variable(masks[t])
            hn = m * hn + (1 - m) * h
            if cn is not None:
                cn = m * cn + (1 - m) * c
        cache[t] = (h, c, hn, vals)
        h, c = hn, cn
    dX, dG, hprev = [None] * T, [None] * T, [None] * T
    dh_next = dc_next = None
    for t, prev, nxt in reversed(steps):
        h_prev, c_prev, h_new, vals = cache[t]
        dh = g[0, nxt] if dh_next is None else g[0, nxt] + dh_next
        dc = None
        if mode == "lstm":
            dc = g[1, nxt] if dc_next is None else g[1, nxt] + dc_next
        keep_h = keep_c = None
        if masks is not None:
            m = Variable(masks[t])
            keep_h, dh = dh * (1 - m), dh * m
            if dc is not None:
                keep_c, dc = dc * (1 - m), dc * m
        if mode == "tanh":
            act = vals[0]
            gi = gh = dh * (1 - act * act)
            direct = None
        elif mode == "relu":
            gi = gh = dv.select(_positive(vals[1]), dh, 0.0)
            direct = None
        elif mode == "lstm":
            i, f, gg, o, tc = vals
            dc = dc + dh * o * (1 - tc * tc)
            gi = gh = _gates([dc * gg * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - gg * gg),
                              dh * tc * o * (1 - o)])
            dc_next = dc * f if keep_c is None else dc * f + keep_c
            direct = None
        else:
            r, z, n, hnp = vals
            dan = dh * (1 - z) * (1 - n * n)
            dar = dan * hnp * r * (1 - r)
            daz = dh * (h_prev - n) * z * (1 - z)
            gi = _gates([dar, daz, dan])
            gh = _gates([dar, daz, dan * r])
            direct = dh * z
        dX[t], dG[t], hprev[t] = gi, gh, h_prev
        dh_next = gh.matmul(W)
        if direct is not None:
            dh_next = dh_next + direct
        if keep_h is not None:
            dh_next = dh_next + keep_h
    stack = type(X).stack
    gX = stack(dX, 0)
    gG = stack(dG, 0).reshape([T * B, GH])
    gW = gG.t().matmul(stack(hprev, 0).reshape([T * B, H]))
    gbi = gX.reshape([T * B, GH]).sum(0) if bi is not None else None
    gbh = gG.sum(0) if bh is not None else None
    start = steps[0][1]
    gh0 = dh_next + g[0, start]
    gc0 = (dc_next + g[1, start]) if mode == "lstm" else None
    return gX, gW, gbi, gbh, gh0, gc0


def _gates(parts):
    """The per-gate gradients side by side, as the gates are laid out ([B, G * H])."""
    return type(parts[0]).cat(parts, -1)


def _positive(a) -> Tensor:
    """The constant mask a > 0 (relu's derivative) as a Tensor."""
    return a.data() > 0   # comparisons give constants (a Tensor) whether or not the operand records
