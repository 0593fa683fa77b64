## Interpolation (nearest, linear, bilinear), forward and backward, one element per work-item.
##
## Interpolation maps planes x[NC, H, W] to y[NC, OH, OW]; each axis has its own mode (`mh`, `mw`:
## "nearest" or "linear"), so 1-D input runs as H = OH = 1 with a nearest H axis. Source positions follow
## torch: nearest takes min(floor(o * scale), in - 1) computed in float (torch does so for every dtype);
## linear takes src = scale * o (align_corners) or max(scale * (o + 0.5) - 0.5, 0), its taps floor(src)
## and the next one (the same one at the last row), weights 1 - l and l with l = src - floor(src). An
## linear axis whose size does not change copies (torch's shortcut; nearest has none). `scale` comes from the host in T.
##
## Backward is a gather: input index i along an axis receives from the outputs whose first tap is i - 1
## or i (linear) or i (nearest); the first tap grows with o, so those outputs are a run, found by a
## binary search over the same index function as the forward. Each input element sums its run in a fixed
## order: no atomics, the same bits at every run.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}\

<%def name="taps(a, mode, o, n_in, n_out, scale)">\
% if mode == "nearest":
    const int ${a}0 = near_tap(${o}, ${n_in}, ${n_out}, ${scale});
% else:
    T ${a}l;
    const int ${a}0 = lin_tap(${o}, ${n_in}, ${n_out}, ${scale}, align, &${a}l);
    const int ${a}1 = ${a}0 + (${a}0 < ${n_in} - 1 ? 1 : 0);
    const T ${a}l1 = ${a}l, ${a}l0 = L(1.0) - ${a}l;
% endif
</%def>

// Nearest: the tap of output o.
inline int near_tap(int o, int n_in, int n_out, T scale)
{
    return min((int)floor((float)o * (float)scale), n_in - 1);
}

// Linear: the first tap of output o and (in *l) the weight of the second.
inline int lin_tap(int o, int n_in, int n_out, T scale, int align, T *l)
{
    if (n_in == n_out) {
        *l = (T)0;
        return o;
    }
    T src = align ? scale * (T)o : scale * ((T)o + L(0.5)) - L(0.5);
    if (src < (T)0) src = (T)0;
    const int i = min((int)floor(src), n_in - 1);
    *l = clamp(src - (T)i, (T)0, L(1.0));
    return i;
}

<%def name="first_tap(mode, o, n_in, n_out, scale)">\
% if mode == "nearest":
near_tap(${o}, ${n_in}, ${n_out}, ${scale})\
% else:
lin_tap(${o}, ${n_in}, ${n_out}, ${scale}, align, &unused)\
% endif
</%def>

// The first output of the run that reaches input index i along an axis (binary search on the first tap).
<%def name="run_start(name, mode)">\
inline int ${name}(int i, int n_in, int n_out, T scale, int align)
{
    T unused;
    const int target = ${"i" if mode == "nearest" else "i - 1"};
    int lo = 0, hi = n_out;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (${first_tap(mode, "mid", "n_in", "n_out", "scale")} < target) lo = mid + 1; else hi = mid;
    }
    return lo;
}
</%def>
${run_start("run_h", mh)}
${run_start("run_w", mw)}

__kernel void interp_forward(__global const T *restrict x, __global T *restrict y, const int H, const int W,
                             const int OH, const int OW, const T scale_h, const T scale_w, const int align,
                             const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int ow = gid % OW;
    const int t = gid / OW;
    const int oh = t % OH;
    const int nc = t / OH;
    __global const T *src = x + (long)nc * H * W;
${taps("h", mh, "oh", "H", "OH", "scale_h")}\
${taps("w", mw, "ow", "W", "OW", "scale_w")}\
% if mw == "nearest":
    const T r0 = src[h0 * W + w0];
% else:
    const T r0 = wl0 * src[h0 * W + w0] + wl1 * src[h0 * W + w1];
% endif
% if mh == "nearest":
    y[gid] = r0;
% else:
%   if mw == "nearest":
    const T r1 = src[h1 * W + w0];
%   else:
    const T r1 = wl0 * src[h1 * W + w0] + wl1 * src[h1 * W + w1];
%   endif
    y[gid] = hl0 * r0 + hl1 * r1;
% endif
}

<%def name="weight(a, mode, i)">\
% if mode == "nearest":
(T)1\
% else:
((${a}0 == ${i} ? ${a}l0 : (T)0) + (${a}1 == ${i} ? ${a}l1 : (T)0))\
% endif
</%def>

// dx[nc, h, w] = sum over the outputs (oh, ow) whose taps include (h, w) of their weights times g.
__kernel void interp_backward(__global const T *restrict g, __global T *restrict dx, const int H, const int W,
                              const int OH, const int OW, const T scale_h, const T scale_w, const int align,
                              const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int w = gid % W;
    const int t = gid / W;
    const int h = t % H;
    const int nc = t / H;
    __global const T *src = g + (long)nc * OH * OW;
    const int ow_start = run_w(w, W, OW, scale_w, align);
    T s = (T)0;
    for (int oh = run_h(h, H, OH, scale_h, align); oh < OH; ++oh) {
${taps("h", mh, "oh", "H", "OH", "scale_h")}\
        if (h0 > h) break;
        T r = (T)0;
        for (int ow = ow_start; ow < OW; ++ow) {
${taps("w", mw, "ow", "W", "OW", "scale_w")}\
            if (w0 > w) break;
            r += ${weight("w", mw, "w")} * src[oh * OW + ow];
        }
        s += ${weight("h", mh, "h")} * r;
    }
    dx[gid] = s;
}
