## Interpolation (nearest, linear, bilinear), forward and backward.
##
## Interpolation maps planes x[NC, H, W] to y[NC, OH, OW]; each axis has its own mode (`mh`, `mw`:
## "nearest", "exact" or "linear"), so 1-D input runs as H = OH = 1 with a nearest H axis. Source
## positions follow torch: nearest takes min(floor(o * scale), in - 1) computed in float (torch does so
## for every dtype), nearest-exact ("exact") min(floor((o + 0.5) * scale), in - 1);
## linear takes src = scale * o (align_corners) or max(scale * (o + 0.5) - 0.5, 0), its taps floor(src)
## and the next one (the same one at the last row), weights 1 - l and l with l = src - floor(src). A
## linear axis whose size does not change copies (torch's shortcut; nearest has none). `scale` comes
## from the host in T.
##
## Backward is a gather: input index i along an axis receives from the outputs whose first tap is i - 1
## or i (linear) or i (nearest, exact); the first tap grows with o, so those outputs are a run, its ends
## found from the source position solved for o and corrected by the forward's own index function. Each input
## element sums its run in a fixed order: no atomics, the same bits at every run.
##
## `rows`: CPUs take a whole output row (forward) or input row (backward) per work-item, the row's
## vertical taps computed once; GPUs one element per work-item.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}\

<%def name="taps(a, mode, o, n_in, n_out, scale)">\
% if mode != "linear":
    const int ${a}0 = ${mode}_tap(${o}, ${n_in}, ${n_out}, ${scale});
% else:
    T ${a}l;
    const int ${a}0 = lin_tap(${o}, ${n_in}, ${n_out}, ${scale}, align, &${a}l);
    const int ${a}1 = ${a}0 + (${a}0 < ${n_in} - 1 ? 1 : 0);
    const T ${a}l1 = ${a}l, ${a}l0 = L(1.0) - ${a}l;
% endif
</%def>

// Nearest: the tap of output o.
inline int nearest_tap(int o, int n_in, int n_out, T scale)
{
    return min((int)floor((float)o * (float)scale), n_in - 1);
}

// Nearest-exact: the tap of output o's centre, min(floor((o + 0.5) * scale), in - 1) (torch forms the
// product in double and floors it as a float).
inline int exact_tap(int o, int n_in, int n_out, T scale)
{
    return min((int)floor((float)(((T)o + L(0.5)) * (T)(float)scale)), n_in - 1);
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
% if mode != "linear":
${mode}_tap(${o}, ${n_in}, ${n_out}, ${scale})\
% else:
lin_tap(${o}, ${n_in}, ${n_out}, ${scale}, align, &unused)\
% endif
</%def>

// The first output whose first tap is >= target along an axis: from an estimate (the source position
// solved for o), stepped down while the output before also qualifies and up while this one does not.
// The tap grows with o, so the answer is exact whatever the estimate's rounding; the steps are few.
<%def name="first_at_least(name, mode)">\
inline int ${name}(int target, int n_in, int n_out, T scale, int align)
{
    T unused;
% if mode == "nearest":
    T e = (T)target / scale;
% elif mode == "exact":
    T e = (T)target / scale - L(0.5);
% else:
    T e = n_in == n_out ? (T)target : align ? (T)target / scale : ((T)target + L(0.5)) / scale - L(0.5);
% endif
    int o = scale > (T)0 ? (int)ceil(clamp(e, (T)0, (T)n_out)) : 0;
    while (o > 0 && ${first_tap(mode, "o - 1", "n_in", "n_out", "scale")} >= target) --o;
    while (o < n_out && ${first_tap(mode, "o", "n_in", "n_out", "scale")} < target) ++o;
    return o;
}
</%def>
${first_at_least("first_h", mh)}
${first_at_least("first_w", mw)}

__kernel void interp_forward(__global const T *restrict x, __global T *restrict y, const int H, const int W,
                             const int OH, const int OW, const T scale_h, const T scale_w, const int align,
                             const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
% if rows:
    const int oh = gid % OH;
    const int nc = gid / OH;
% else:
    const int ow = gid % OW;
    const int t = gid / OW;
    const int oh = t % OH;
    const int nc = t / OH;
% endif
    __global const T *src = x + (long)nc * H * W;
${taps("h", mh, "oh", "H", "OH", "scale_h")}\
% if rows:
    for (int ow = 0; ow < OW; ++ow) {
        const long o = (long)gid * OW + ow;
% else:
    {
        const int o = gid;
% endif
${taps("w", mw, "ow", "W", "OW", "scale_w")}\
% if mw != "linear":
        const T r0 = src[h0 * W + w0];
% else:
        const T r0 = wl0 * src[h0 * W + w0] + wl1 * src[h0 * W + w1];
% endif
% if mh != "linear":
        y[o] = r0;
% else:
%   if mw != "linear":
        const T r1 = src[h1 * W + w0];
%   else:
        const T r1 = wl0 * src[h1 * W + w0] + wl1 * src[h1 * W + w1];
%   endif
        y[o] = hl0 * r0 + hl1 * r1;
% endif
    }
}

// The weight with which output o reads input index i along an axis (o in i's run).
<%def name="weight_fn(name, a, mode)">\
inline T ${name}(int o, int i, int n_in, int n_out, T scale, int align)
{
% if mode != "linear":
    return (T)1;
% else:
${taps(a, mode, "o", "n_in", "n_out", "scale")}\
    return (${a}0 == i ? ${a}l0 : (T)0) + (${a}1 == i ? ${a}l1 : (T)0);
% endif
}
</%def>
${weight_fn("weight_h", "h", mh)}
${weight_fn("weight_w", "w", mw)}

<% lag_h, lag_w = (0 if mh != "linear" else 1), (0 if mw != "linear" else 1) %>\
// dx[nc, h, w] = sum over the outputs (oh, ow) whose taps include (h, w) of their weights times g. Those
// are the runs of rows [oh0, oh1) and columns [ow0, ow1) whose first tap is h - 1 or h (linear) or h
// (nearest). Runs of up to RMAX outputs have their weights computed once, into registers (a row's
// vertical weights once per row on CPUs).
#define RMAX 8
__kernel void interp_backward(__global const T *restrict g, __global T *restrict dx, const int H, const int W,
                              const int OH, const int OW, const T scale_h, const T scale_w, const int align,
                              const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
% if rows:
    const int h = gid % H;
    const int nc = gid / H;
% else:
    const int w = gid % W;
    const int t = gid / W;
    const int h = t % H;
    const int nc = t / H;
% endif
    __global const T *src = g + (long)nc * OH * OW;
    const int oh0 = first_h(h - ${lag_h}, H, OH, scale_h, align), oh1 = first_h(h + 1, H, OH, scale_h, align);
    const int hshort = oh1 - oh0 <= RMAX;
    T ht[RMAX];
    if (hshort)
        for (int oh = oh0; oh < oh1; ++oh) ht[oh - oh0] = weight_h(oh, h, H, OH, scale_h, align);
% if rows:
    // Along the row, each column's run ends where a later one's starts: first_w(j) for j = w - 1, w are
    // kept from the steps before (first_w(-1) = first_w(0) = 0: every tap is >= 0).
    int f_prev = 0, f_here = 0;
    for (int w = 0; w < W; ++w) {
        const long i = (long)gid * W + w;
        const int f_next = first_w(w + 1, W, OW, scale_w, align);
        const int ow0 = ${"f_prev" if lag_w else "f_here"}, ow1 = f_next;
        f_prev = f_here;
        f_here = f_next;
% else:
    {
        const int i = gid;
        const int ow0 = first_w(w - ${lag_w}, W, OW, scale_w, align), ow1 = first_w(w + 1, W, OW, scale_w, align);
% endif
        const int wshort = ow1 - ow0 <= RMAX;
        T wt[RMAX];
        if (wshort)
            for (int ow = ow0; ow < ow1; ++ow) wt[ow - ow0] = weight_w(ow, w, W, OW, scale_w, align);
        T s = (T)0;
        for (int oh = oh0; oh < oh1; ++oh) {
            __global const T *row = src + oh * OW;
            T r = (T)0;
            if (wshort)
                for (int ow = ow0; ow < ow1; ++ow) r += wt[ow - ow0] * row[ow];
            else
                for (int ow = ow0; ow < ow1; ++ow) r += weight_w(ow, w, W, OW, scale_w, align) * row[ow];
            s += (hshort ? ht[oh - oh0] : weight_h(oh, h, H, OH, scale_h, align)) * r;
        }
        dx[i] = s;
    }
}
