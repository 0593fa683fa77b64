## Recurrent cells (nn.RNN / LSTM / GRU), one time step per launch, one work-item per (batch row b,
## hidden unit j) over B * H items.
##
## The layer keeps every state in one buffer S of [K, T + 1, B, H] (K = 2 for the LSTM: h then c):
## a step reads slot `prev` and writes slot `next` (a forward pass goes up, a reverse one down).
## `xp` holds the input projections of all steps, x @ W_ih^T ([T, B, G * H]); `hp` this step's
## h_prev @ W_hh^T ([B, G * H]). Gate order is torch's: LSTM i, f, g, o; GRU r, z, n with
## n = tanh(x_n + b_in + r * (h_n + b_hn)). Forward saves what backward reads in `sv`
## ([T, B, 4 * H]: the LSTM's activated i, f, g, o; the GRU's r, z, n and h_n + b_hn); the simple
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
${c.preamble(ctype)}\
<%
    G = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}[mode]
%>
#define G ${G}

inline T sigm(const T x) { return L(1.0) / (L(1.0) + exp(-x)); }

__kernel void cell_forward(__global const T *restrict xp, const int x_off, __global const T *restrict hp,
% if bias:
                           __global const T *restrict bi, __global const T *restrict bh,
% endif
                           __global T *restrict S, const int prev, const int next, const int c_plane,
                           __global T *restrict sv, const int s_off,
% if has_len:
                           __global const int *restrict lens,
% endif
                           const int t, const int H, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int b = gid / H, j = gid - b * H;
    const int GH = G * H;
    __global const T *x = xp + x_off + b * GH;
    __global const T *p = hp + b * GH;
% if has_len:
    if (t >= lens[b]) {
        S[next + gid] = S[prev + gid];
  % if mode == "lstm":
        S[c_plane + next + gid] = S[c_plane + prev + gid];
  % endif
        return;
    }
% endif
% if bias:
#define BI(k) bi[(k) * H + j]
#define BH(k) bh[(k) * H + j]
% else:
#define BI(k) L(0.0)
#define BH(k) L(0.0)
% endif
% if mode == "tanh":
    S[next + gid] = tanh(x[j] + p[j] + BI(0) + BH(0));
% elif mode == "relu":
    S[next + gid] = fmax(x[j] + p[j] + BI(0) + BH(0), L(0.0));
% elif mode == "lstm":
    const T i = sigm(x[j] + p[j] + BI(0) + BH(0));
    const T f = sigm(x[H + j] + p[H + j] + BI(1) + BH(1));
    const T g = tanh(x[2 * H + j] + p[2 * H + j] + BI(2) + BH(2));
    const T o = sigm(x[3 * H + j] + p[3 * H + j] + BI(3) + BH(3));
    const T cn = f * S[c_plane + prev + gid] + i * g;
    S[c_plane + next + gid] = cn;
    S[next + gid] = o * tanh(cn);
    __global T *s = sv + s_off + b * 4 * H;
    s[j] = i; s[H + j] = f; s[2 * H + j] = g; s[3 * H + j] = o;
% else:
    const T r = sigm(x[j] + p[j] + BI(0) + BH(0));
    const T z = sigm(x[H + j] + p[H + j] + BI(1) + BH(1));
    const T hn = p[2 * H + j] + BH(2);
    const T nn = tanh(x[2 * H + j] + BI(2) + r * hn);
    S[next + gid] = (L(1.0) - z) * nn + z * S[prev + gid];
    __global T *s = sv + s_off + b * 4 * H;
    s[j] = r; s[H + j] = z; s[2 * H + j] = nn; s[3 * H + j] = hn;
% endif
}

__kernel void cell_backward(__global const T *restrict gS, __global const T *restrict dmm, const int first,
                            __global T *restrict carry_h, __global T *restrict carry_c,
                            __global const T *restrict S, const int prev, const int next, const int c_plane,
                            __global const T *restrict sv, const int s_off,
                            __global T *restrict dgi, __global T *restrict dgh, const int g_off,
% if has_len:
                            __global const int *restrict lens,
% endif
                            const int t, const int H, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int b = gid / H, j = gid - b * H;
    const int GH = G * H;
    T dh = gS[next + gid] + carry_h[gid];
    if (!first) dh += dmm[gid];
% if mode == "lstm":
    T dc = gS[c_plane + next + gid] + carry_c[gid];
% endif
    __global T *di = dgi + g_off + b * GH;
    __global T *dhh = dgh + g_off + b * GH;
% if has_len:
    if (t >= lens[b]) {   // a finished row: the state passes through unchanged
        carry_h[gid] = dh;
  % if mode == "lstm":
        carry_c[gid] = dc;
  % endif
        for (int k = 0; k < G; ++k) {
            di[k * H + j] = L(0.0);
  % if mode == "gru":
            dhh[k * H + j] = L(0.0);
  % endif
        }
        return;
    }
% endif
% if mode == "tanh":
    const T h = S[next + gid];
    di[j] = dh * (L(1.0) - h * h);
    carry_h[gid] = L(0.0);
% elif mode == "relu":
    di[j] = S[next + gid] > L(0.0) ? dh : L(0.0);
    carry_h[gid] = L(0.0);
% elif mode == "lstm":
    __global const T *s = sv + s_off + b * 4 * H;
    const T i = s[j], f = s[H + j], g = s[2 * H + j], o = s[3 * H + j];
    const T tc = tanh(S[c_plane + next + gid]);
    dc += dh * o * (L(1.0) - tc * tc);
    di[j] = dc * g * i * (L(1.0) - i);
    di[H + j] = dc * S[c_plane + prev + gid] * f * (L(1.0) - f);
    di[2 * H + j] = dc * i * (L(1.0) - g * g);
    di[3 * H + j] = dh * tc * o * (L(1.0) - o);
    carry_c[gid] = dc * f;
    carry_h[gid] = L(0.0);
% else:
    __global const T *s = sv + s_off + b * 4 * H;
    const T r = s[j], z = s[H + j], nn = s[2 * H + j], hn = s[3 * H + j];
    const T dan = dh * (L(1.0) - z) * (L(1.0) - nn * nn);
    const T dar = dan * hn * r * (L(1.0) - r);
    const T daz = dh * (S[prev + gid] - nn) * z * (L(1.0) - z);
    di[j] = dar; di[H + j] = daz; di[2 * H + j] = dan;
    dhh[j] = dar; dhh[H + j] = daz; dhh[2 * H + j] = dan * r;
    carry_h[gid] = dh * z;
% endif
}

// The initial state's gradient after the last backward step: dh0 = gS[slot] + dmm + carry_h.
__kernel void cell_finish(__global const T *restrict gS, __global const T *restrict dmm, const int first,
                          __global const T *restrict carry_h, __global const T *restrict carry_c,
                          const int slot, const int c_plane, __global T *restrict dh0, __global T *restrict dc0,
                          const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    T dh = gS[slot + gid] + carry_h[gid];
    if (!first) dh += dmm[gid];
    dh0[gid] = dh;
% if mode == "lstm":
    dc0[gid] = gS[c_plane + slot + gid] + carry_c[gid];
% endif
}

// The initial state into slot `slot` of S: h0 (and the LSTM's c0), or zeros when `zero`.
__kernel void cell_init(__global T *S, const int slot, const int c_plane, __global const T *h0,
                        __global const T *c0, const int zero, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    S[slot + gid] = zero ? L(0.0) : h0[gid];
% if mode == "lstm":
    S[c_plane + slot + gid] = zero ? L(0.0) : c0[gid];
% endif
}
