## Recurrent cells (nn.RNN / LSTM / GRU), one time step per launch, over the B * H items (batch row b,
## hidden unit j): a work-item takes `chunk` consecutive items (1 on GPUs; on CPUs enough that a
## launch has a few work-items per core, as the elementwise kernels do), `vw` at a time: vectors of
## `vw` units of one row (vw divides H and chunk; 1 on GPUs), so the gate maths runs on vectors.
##
## The layer keeps every state in one buffer S of [K, T + 1, B, H] (K = 2 for the LSTM: h then c):
## a step reads slot `prev` and writes slot `next` (a forward pass goes up, a reverse one down).
## `xp` holds the input projections of all steps, x @ W_ih^T ([T, B, G * H]); `hp` this step's
## h_prev @ W_hh^T ([B, G * H]). Gate order is torch's: LSTM i, f, g, o; GRU r, z, n with
## n = tanh(x_n + b_in + r * (h_n + b_hn)). Forward saves what backward reads in `sv`
## ([T, B, SW * H]: the LSTM's activated i, f, g, o and tanh(c); the GRU's r, z, n and h_n + b_hn); the simple
## RNN reads its output h back from S.
##
## With `lengths` a row b whose sequence has ended (t >= lens[b]) keeps its state: S[next] = S[prev],
## which is torch's packed-sequence result (h_n is the state at each sequence's last step; a reverse
## pass starts at each sequence's last step from h0).
##
## Backward, per step in reverse order of the forward: dh = gS[next] + dmm + carry_h, where dmm is
## the next step's gate gradients @ W_hh (left out at the first backward step) and carry_h the part
## of dh_prev that does not go through W_hh (the GRU's z * dh, a finished row's dh). It writes the
## pre-activation gate gradients: `dgi` for x's projection and the biases b_ih, `dgh` for W_hh h and
## b_hh (the same but for the GRU's n gate, where it is r * dn), and the carries for the step before.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype, vector=vw)}\
<%
    G = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}[mode]
%>
#define G ${G}
#define SW ${5 if mode == "lstm" else 4}
#define LD(p) VLOAD(0, (p))
#define ST(v, p) VSTORE((v), 0, (p))
#define ONE ((TV)L(1.0))
#define ZERO ((TV)L(0.0))

inline TV sigm(const TV x) { return ONE / (ONE + exp(-x)); }

## One item's step (row b, units j..j+vw): the body of cell_forward / cell_backward and of the
## sequence kernels below, which run it for their rows at every step. `gid` is b * H + j.
<%def name="forward_item()">\
        const int b = gid / H, j = gid - b * H;
        const int GH = G * H;
        __global const T *x = xp + x_off + b * GH + j;
        __global const T *p = hp + b * GH + j;
% if has_len:
        if (t >= lens[b]) {
            ST(LD(S + prev + gid), S + next + gid);
  % if mode == "lstm":
            ST(LD(S + c_plane + prev + gid), S + c_plane + next + gid);
  % endif
            continue;
        }
% endif
% if bias:
#define PRE(k) (LD(x + (k) * H) + LD(p + (k) * H) + LD(bi + (k) * H + j) + LD(bh + (k) * H + j))
% else:
#define PRE(k) (LD(x + (k) * H) + LD(p + (k) * H))
% endif
% if mode == "tanh":
        ST(tanh(PRE(0)), S + next + gid);
% elif mode == "relu":
        ST(fmax(PRE(0), ZERO), S + next + gid);
% elif mode == "lstm":
        const TV i = sigm(PRE(0)), f = sigm(PRE(1)), g = tanh(PRE(2)), o = sigm(PRE(3));
        const TV cn = f * LD(S + c_plane + prev + gid) + i * g;
        ST(cn, S + c_plane + next + gid);
        const TV tc = tanh(cn);
        ST(o * tc, S + next + gid);
        __global T *s = sv + s_off + b * SW * H + j;
        ST(i, s); ST(f, s + H); ST(g, s + 2 * H); ST(o, s + 3 * H); ST(tc, s + 4 * H);
% else:
        const TV r = sigm(PRE(0)), z = sigm(PRE(1));
  % if bias:
        const TV hn = LD(p + 2 * H) + LD(bh + 2 * H + j);
        const TV nn = tanh(LD(x + 2 * H) + LD(bi + 2 * H + j) + r * hn);
  % else:
        const TV hn = LD(p + 2 * H);
        const TV nn = tanh(LD(x + 2 * H) + r * hn);
  % endif
        ST((ONE - z) * nn + z * LD(S + prev + gid), S + next + gid);
        __global T *s = sv + s_off + b * SW * H + j;
        ST(r, s); ST(z, s + H); ST(nn, s + 2 * H); ST(hn, s + 3 * H);
% endif
</%def>
<%def name="backward_item()">\
        const int b = gid / H, j = gid - b * H;
        const int GH = G * H;
        TV dh = LD(gS + next + gid) + LD(carry_h + gid);
        if (!first) dh += LD(dmm + gid);
% if mode == "lstm":
        TV dc = LD(gS + c_plane + next + gid) + LD(carry_c + gid);
% endif
        __global T *di = dgi + g_off + b * GH + j;
        __global T *dhh = dgh + g_off + b * GH + j;
% if has_len:
        if (t >= lens[b]) {   // a finished row: the state passes through unchanged
            ST(dh, carry_h + gid);
  % if mode == "lstm":
            ST(dc, carry_c + gid);
  % endif
            for (int k = 0; k < G; ++k) {
                ST(ZERO, di + k * H);
  % if mode == "gru":
                ST(ZERO, dhh + k * H);
  % endif
            }
            continue;
        }
% endif
% if mode == "tanh":
        const TV h = LD(S + next + gid);
        ST(dh * (ONE - h * h), di);
        ST(ZERO, carry_h + gid);
% elif mode == "relu":
  % if vw == 1:
        ST(LD(S + next + gid) > ZERO ? dh : ZERO, di);
  % else:
        ST(select(ZERO, dh, isgreater(LD(S + next + gid), ZERO)), di);
  % endif
        ST(ZERO, carry_h + gid);
% elif mode == "lstm":
        __global const T *s = sv + s_off + b * SW * H + j;
        const TV i = LD(s), f = LD(s + H), g = LD(s + 2 * H), o = LD(s + 3 * H), tc = LD(s + 4 * H);
        dc += dh * o * (ONE - tc * tc);
        ST(dc * g * i * (ONE - i), di);
        ST(dc * LD(S + c_plane + prev + gid) * f * (ONE - f), di + H);
        ST(dc * i * (ONE - g * g), di + 2 * H);
        ST(dh * tc * o * (ONE - o), di + 3 * H);
        ST(dc * f, carry_c + gid);
        ST(ZERO, carry_h + gid);
% else:
        __global const T *s = sv + s_off + b * SW * H + j;
        const TV r = LD(s), z = LD(s + H), nn = LD(s + 2 * H), hn = LD(s + 3 * H);
        const TV dan = dh * (ONE - z) * (ONE - nn * nn);
        const TV dar = dan * hn * r * (ONE - r);
        const TV daz = dh * (LD(S + prev + gid) - nn) * z * (ONE - z);
        ST(dar, di); ST(daz, di + H); ST(dan, di + 2 * H);
        ST(dar, dhh); ST(daz, dhh + H); ST(dan * r, dhh + 2 * H);
        ST(dh * z, carry_h + gid);
% endif
</%def>

// The items [g0, g1) of this work-item, vw at a time (all in one row b: vw divides H and chunk).
#define ITEMS const int g0 = get_global_id(0) * chunk, g1 = min(g0 + chunk, n); \
    for (int gid = g0; gid < g1; gid += ${vw})

__kernel void cell_forward(__global const T *restrict xp, const int x_off, __global const T *restrict hp,
% if bias:
                           __global const T *restrict bi, __global const T *restrict bh,
% endif
                           __global T *restrict S, const int prev, const int next, const int c_plane,
                           __global T *restrict sv, const int s_off,
% if has_len:
                           __global const int *restrict lens,
% endif
                           const int t, const int H, const int n, const int chunk)
{
    ITEMS {
${forward_item()}    }
}

__kernel void cell_backward(__global const T *restrict gS, __global const T *restrict dmm, const int first,
                            __global T *restrict carry_h, __global T *restrict carry_c,
                            __global const T *restrict S, const int prev, const int next, const int c_plane,
                            __global const T *restrict sv, const int s_off,
                            __global T *restrict dgi, __global T *restrict dgh, const int g_off,
% if has_len:
                            __global const int *restrict lens,
% endif
                            const int t, const int H, const int n, const int chunk)
{
    ITEMS {
${backward_item()}    }
}

// The initial state's gradient after the last backward step: dh0 = gS[slot] + dmm + carry_h.
__kernel void cell_finish(__global const T *restrict gS, __global const T *restrict dmm, const int first,
                          __global const T *restrict carry_h, __global const T *restrict carry_c,
                          const int slot, const int c_plane, __global T *restrict dh0, __global T *restrict dc0,
                          const int n, const int chunk)
{
    ITEMS {
        TV dh = LD(gS + slot + gid) + LD(carry_h + gid);
        if (!first) dh += LD(dmm + gid);
        ST(dh, dh0 + gid);
% if mode == "lstm":
        ST(LD(gS + c_plane + slot + gid) + LD(carry_c + gid), dc0 + gid);
% endif
    }
}

// The initial state into slot `slot` of S: h0 (and the LSTM's c0), or zeros when `zero`.
__kernel void cell_init(__global T *S, const int slot, const int c_plane, __global const T *h0,
                        __global const T *c0, const int zero, const int n, const int chunk)
{
    ITEMS {
        ST(zero ? ZERO : LD(h0 + gid), S + slot + gid);
% if mode == "lstm":
        ST(zero ? ZERO : LD(c0 + gid), S + c_plane + slot + gid);
% endif
    }
}
% if seq:

## The sequence kernels (CPUs): a work-item owns the batch rows [b0, b1) and runs every step for them,
## so a layer's whole recurrence is one launch each way instead of two per step. Rows never interact
## (only W_hh, read-only, is shared), so no work-item waits for another; the states it reads at a
## step are the ones it wrote at the step before. Each step's product for the rows, out[b, :] =
## a[b, :] @ m ([K, N], rows contiguous), runs on vectors of `vw` columns, `nv` vectors and four rows
## at a time (the accumulators stay in registers), as the blocked matmul's micro-tile does.
//
// Every vector access here is at a multiple of vw elements from the start of a buffer (the offsets
// are steps, rows and units, all multiples of vw, and H is one), so it is a plain vector load or
// store through a pointer: on PoCL vloadn/vstoren stay out-of-line calls, which cost more than the
// arithmetic (the blocked matmul reads its panels the same way).
#undef LD
#undef ST
#define LD(p) (*(__global const TV *)(p))
#define ST(v, p) (*(__global TV *)(p) = (v))
<%def name="rows_product(out, out_ld, a, a_ld, m, K, N)">\
    for (int r0 = b0; r0 < b1; r0 += 4) {
        const int nrows = min(4, b1 - r0);
        __global const T *a0 = ${a} + (size_t)r0 * ${a_ld};
% for r in range(1, 4):
        __global const T *a${r} = ${a} + (size_t)(r0 + min(${r}, nrows - 1)) * ${a_ld};
% endfor
        for (int n0 = 0; n0 < ${N}; n0 += ${vw * nv}) {
% for r in range(4):
  % for v in range(nv):
            TV acc${r}_${v} = ZERO;
  % endfor
% endfor
            for (int k = 0; k < ${K}; ++k) {
                __global const T *mk = ${m} + (size_t)k * ${N} + n0;
% for v in range(nv):
                const TV w${v} = LD(mk + ${v * vw});
% endfor
% for r in range(4):
                { const T av = a${r}[k];
  % for v in range(nv):
                  acc${r}_${v} += av * w${v};
  % endfor
                }
% endfor
            }
% for r in range(4):
            if (${r} < nrows) {
  % for v in range(nv):
                ST(acc${r}_${v}, ${out} + (size_t)(r0 + ${r}) * ${out_ld} + n0 + ${v * vw});
  % endfor
            }
% endfor
        }
    }
</%def>

__kernel void seq_forward(__global const T *restrict xp, __global const T *restrict wt, __global T *restrict hp,
% if bias:
                          __global const T *restrict bi, __global const T *restrict bh,
% endif
                          __global T *restrict S, const int c_plane, __global T *restrict sv,
% if has_len:
                          __global const int *restrict lens,
% endif
                          const int steps, const int reverse, const int B, const int H, const int rows)
{
    const int b0 = get_global_id(0) * rows, b1 = min(B, b0 + rows);
    const int GH = G * H, BH = B * H;
    for (int s = 0; s < steps; ++s) {
        const int t = reverse ? steps - 1 - s : s;
        const int prev = (reverse ? t + 1 : t) * BH, next = (reverse ? t : t + 1) * BH;
        const int x_off = t * B * GH, s_off = t * B * SW * H;
        // hp[b, :] = h_prev[b, :] @ W_hh^T for this work-item's rows (wt is W_hh^T, [H, G * H]).
${rows_product("hp", "GH", "(S + prev)", "H", "wt", "H", "GH")}
        for (int b = b0; b < b1; ++b) {
            for (int jj = 0; jj < H; jj += ${vw}) {
                const int gid = b * H + jj;
${forward_item()}
            }
        }
    }
}

__kernel void seq_backward(__global const T *restrict gS, __global T *restrict dmm,
                           __global T *restrict carry_h, __global T *restrict carry_c,
                           __global const T *restrict S, const int c_plane,
                           __global const T *restrict sv, __global T *restrict dgi, __global T *restrict dgh,
                           __global const T *restrict w,
% if has_len:
                           __global const int *restrict lens,
% endif
                           const int steps, const int reverse, const int B, const int H, const int rows,
                           const int final_product)
{
    const int b0 = get_global_id(0) * rows, b1 = min(B, b0 + rows);
    const int GH = G * H, BH = B * H;
    int last_off = 0;
    for (int s = 0; s < steps; ++s) {
        const int t = reverse ? s : steps - 1 - s;     // the forward's steps, last first
        const int prev = (reverse ? t + 1 : t) * BH, next = (reverse ? t : t + 1) * BH;
        const int g_off = t * B * GH, s_off = t * B * SW * H;
        const int first = s == 0;
        if (!first) {
            // dmm[b, :] = the step after's gate gradients [b, :] @ W_hh ([G * H, H]).
${rows_product("dmm", "H", "(dgh + last_off)", "GH", "w", "GH", "H")}
        }
        for (int b = b0; b < b1; ++b) {
            for (int jj = 0; jj < H; jj += ${vw}) {
                const int gid = b * H + jj;
${backward_item()}
            }
        }
        last_off = g_off;
    }
    if (final_product) {   // for the initial state's gradient (cell_finish)
${rows_product("dmm", "H", "(dgh + last_off)", "GH", "w", "GH", "H")}
    }
}
% endif
