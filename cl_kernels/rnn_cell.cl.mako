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
    }
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
    }
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
