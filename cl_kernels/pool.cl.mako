## 2-D pooling over [N, C, H, W] (NCHW, contiguous) planes, forward and backward, one element per
## work-item (max pooling on CPUs: runs of planes per work-item, the `_planes` and `_flat` kernels). Geometry is all kernel arguments; a program is specialised on the element type only.
##
## Backward kernels are gathers: each input element sums, in a fixed order, the gradients of the
## outputs whose window holds it, so there are no atomics and results are the same at every run.
## The outputs whose window row tap i lands on input row h have oh = (h + PH - i*DH) / SH, when that
## divides and is in range: the same inversion as col2im in conv.cl.mako.
##
## max: the window's first maximum (row-major scan, `v > best`), and a NaN wins (the last NaN in the
## scan): torch's rule. Its position h * W + w in the plane is kept for backward.
## avg: torch's divisor: the window clipped to the padded input (count_include_pad), or to the input
## itself, or `divisor` when positive (divisor_override).
## adaptive_avg: output (oh, ow) averages rows [floor(oh*H/OH), ceil((oh+1)*H/OH)) and likewise columns.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}\

__kernel void max_forward(__global const T *restrict x, __global T *restrict y, __global int *restrict idx,
                          ${c.geometry()}, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int ow = gid % OW;
    const int t = gid / OW;
    const int oh = t % OH;
    const int nc = t / OH;
    const int hs = oh * SH - PH, ws = ow * SW - PW;
    // torch starts from the window's first in-range position with -inf.
    int h0 = hs, w0 = ws;
    while (h0 < 0) h0 += DH;
    while (w0 < 0) w0 += DW;
    __global const T *src = x + (long)nc * H * W;
    T best = -INFINITY;
    int at = h0 * W + w0;
    for (int i = 0; i < KH; ++i) {
        const int h = hs + i * DH;
        if (h < 0 || h >= H) continue;
        for (int j = 0; j < KW; ++j) {
            const int w = ws + j * DW;
            if (w < 0 || w >= W) continue;
            const T v = src[h * W + w];
            if (v > best || isnan(v)) {
                best = v;
                at = h * W + w;
            }
        }
    }
    y[gid] = best;
    idx[gid] = at;
}

// CPUs: a work-item per [H, W] plane. The element-per-work-item kernels above spend most of their time
// in the four integer divisions that place an element; here the loops walk the plane, with the same
// windows, the same scan and the same sums in the same order, so the same bits. `window` (KH, KW, SH,
// SW, PH, PW, DH, DW), when given, makes the window constants of the program, so its loops unroll.
<% win = context.get("window") %>\
% for k, name in enumerate(("KH", "KW", "SH", "SW", "PH", "PW", "DH", "DW")):
#define P_${name} ${win[k] if win else name}
% endfor
__kernel void max_forward_planes(__global const T *restrict x, __global T *restrict y,
                                 __global int *restrict idx, ${c.geometry()}, const int n, const int per)
{
  // `per` planes each: PoCL's cost per work-group (~0.7 us) would otherwise dominate small planes.
  // A row of outputs at a time, window tap by tap, the output column innermost and without branches:
  // LLVM vectorises that loop, where an output-at-a-time scan paid a mispredicted branch for every
  // other comparison (640 us against 140 for [64,16,16,16] by 2 on a 2-core EPYC). Each output still
  // sees its taps in the (i, j) order of max_forward, so the same maximum and the same index.
  for (int nc = get_global_id(0) * per, last = min(n, nc + per); nc < last; ++nc) {
    __global const T *src = x + (long)nc * H * W;
    for (int oh = 0; oh < OH; ++oh) {
        const int hs = oh * P_SH - P_PH;
        const int h0 = hs < 0 ? hs + (-hs + P_DH - 1) / P_DH * P_DH : hs;   // the first row inside
        __global T *best = y + (long)nc * OH * OW + oh * OW;
        __global int *at = idx + (long)nc * OH * OW + oh * OW;
        for (int ow = 0; ow < OW; ++ow) {
            const int ws = ow * P_SW - P_PW;
            best[ow] = -INFINITY;
            at[ow] = h0 * W + (ws < 0 ? ws + (-ws + P_DW - 1) / P_DW * P_DW : ws);
        }
        for (int i = 0; i < P_KH; ++i) {
            const int h = hs + i * P_DH;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < P_KW; ++j)
                for (int ow = 0; ow < OW; ++ow) {
                    const int w = ow * P_SW - P_PW + j * P_DW;
                    const bool inside = w >= 0 & w < W;
                    const int e = h * W + (inside ? w : 0);
                    const T v = src[e], b = best[ow];
                    const bool take = inside & (v > b | v != v);   // (v != v: NaN, inline; isnan is a call on PoCL)
                    best[ow] = take ? v : b;
                    at[ow] = take ? e : at[ow];
                }
        }
    }
  }
}

// Planes whose output rows are shorter than a float vector (the host's choice, from the target's
// width): a row-at-a-time loop would be too short to vectorise, so the plane's outputs are flattened
// into chunks of POOL_CHUNK lanes instead. Each lane's window is placed once per work-item (the
// division by OW is paid per chunk, not per output of every plane) and the lanes are the inner loop,
// in private memory. Same taps in the same order as max_forward, so the same bits.
#define POOL_CHUNK 16
__kernel void max_forward_flat(__global const T *restrict x, __global T *restrict y,
                               __global int *restrict idx, ${c.geometry()}, const int n, const int per)
{
  const int nc0 = get_global_id(0) * per, nc1 = min(n, nc0 + per);
  const int HW = H * W, OHW = OH * OW;
  for (int o0 = 0; o0 < OHW; o0 += POOL_CHUNK) {
    int hs[POOL_CHUNK], ws[POOL_CHUNK], first[POOL_CHUNK];
    for (int k = 0; k < POOL_CHUNK; ++k) {
      const int o = min(o0 + k, OHW - 1);   // lanes past the plane repeat its last output, never stored
      const int oh = o / OW, ow = o - oh * OW;
      hs[k] = oh * P_SH - P_PH;
      ws[k] = ow * P_SW - P_PW;
      first[k] = (hs[k] < 0 ? hs[k] + (-hs[k] + P_DH - 1) / P_DH * P_DH : hs[k]) * W
               + (ws[k] < 0 ? ws[k] + (-ws[k] + P_DW - 1) / P_DW * P_DW : ws[k]);
    }
    const int count = min(POOL_CHUNK, OHW - o0);
    for (int nc = nc0; nc < nc1; ++nc) {
      __global const T *src = x + (long)nc * HW;
      T best[POOL_CHUNK];
      int at[POOL_CHUNK];
      for (int k = 0; k < POOL_CHUNK; ++k) {
        best[k] = -INFINITY;
        at[k] = first[k];
      }
      for (int i = 0; i < P_KH; ++i)
        for (int j = 0; j < P_KW; ++j)
          for (int k = 0; k < POOL_CHUNK; ++k) {
            const int h = hs[k] + i * P_DH, w = ws[k] + j * P_DW;
            const bool inside = (h >= 0) & (h < H) & (w >= 0) & (w < W);
            const int e = inside ? h * W + w : 0;
            const T v = src[e];
            const bool take = inside & ((v > best[k]) | (v != v));
            best[k] = take ? v : best[k];
            at[k] = take ? e : at[k];
          }
      __global T *dst = y + (long)nc * OHW + o0;
      __global int *pos = idx + (long)nc * OHW + o0;
      for (int k = 0; k < count; ++k) {
        dst[k] = best[k];
        pos[k] = at[k];
      }
    }
  }
}

// The gradient of a plane: zero, then each window tap (i, j) in max_backward's order adds the outputs
// whose maximum it was, so every input element sums its contributions as max_backward's gather does.
// Adding 0 where a tap was not the maximum leaves the sum's bits alone (it starts at +0 and is never
// -0), and keeps the inner loop free of branches, as in the forward. Windows that cannot overlap
// (the usual stride >= kernel) give each input at most one contribution, so there the order cannot
// matter and each output adds its gradient at its maximum's position directly.
<% disjoint = win is not None and (win[0] - 1) * win[6] < win[2] and (win[1] - 1) * win[7] < win[3] %>\
__kernel void max_backward_planes(__global const T *restrict g, __global const int *restrict idx,
                                  __global T *restrict dx, ${c.geometry()}, const int n, const int per)
{
  for (int nc = get_global_id(0) * per, last = min(n, nc + per); nc < last; ++nc) {
    __global const T *go = g + (long)nc * OH * OW;
    __global const int *pos = idx + (long)nc * OH * OW;
    __global T *d = dx + (long)nc * H * W;
    for (int e = 0; e < H * W; ++e) d[e] = (T)0;
% if disjoint:
    for (int o = 0; o < OH * OW; ++o) d[pos[o]] += go[o];
% else:
    for (int i = 0; i < P_KH; ++i)
        for (int j = 0; j < P_KW; ++j)
            for (int oh = 0; oh < OH; ++oh) {
                const int h = oh * P_SH - P_PH + i * P_DH;
                if (h < 0 || h >= H) continue;
                for (int ow = 0; ow < OW; ++ow) {
                    const int w = ow * P_SW - P_PW + j * P_DW;
                    const bool inside = w >= 0 & w < W;
                    const int e = h * W + (inside ? w : 0);
                    const int o = oh * OW + ow;
                    d[e] += (inside & pos[o] == e) ? go[o] : (T)0;
                }
            }
% endif
  }
}

__kernel void max_backward(__global const T *restrict g, __global const int *restrict idx,
                           __global T *restrict dx, ${c.geometry()}, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int w = gid % W;
    const int t = gid / W;
    const int h = t % H;
    const int nc = t / H;
    const int me = h * W + w;
    const long base = (long)nc * OH * OW;
    T s = (T)0;
    for (int i = 0; i < KH; ++i) {
        const int th = h + PH - i * DH;
        if (th < 0 || th % SH != 0 || th / SH >= OH) continue;
        const int oh = th / SH;
        for (int j = 0; j < KW; ++j) {
            const int tw = w + PW - j * DW;
            if (tw < 0 || tw % SW != 0 || tw / SW >= OW) continue;
            const long o = base + oh * OW + tw / SW;
            if (idx[o] == me) s += g[o];
        }
    }
    dx[gid] = s;
}

// max_backward's adjoint, for gradients of gradients: each output takes the input at the position
// max_forward kept, y[o] = x[plane(o), idx[o]] (with those positions fixed, max pooling is this gather).
__kernel void max_gather(__global const T *restrict x, __global const int *restrict idx,
                         __global T *restrict y, ${c.geometry()}, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    y[gid] = x[(long)(gid / (OH * OW)) * H * W + idx[gid]];
}

// The divisor of output (oh, ow) of avg pooling, and its window clipped to the input.
inline int avg_window(int oh, int ow, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                      int include_pad, int divisor, int *hs, int *he, int *ws, int *we)
{
    int h0 = oh * SH - PH, w0 = ow * SW - PW;
    int h1 = min(h0 + KH, H + PH), w1 = min(w0 + KW, W + PW);
    const int padded = (h1 - h0) * (w1 - w0);
    h0 = max(h0, 0);
    w0 = max(w0, 0);
    h1 = min(h1, H);
    w1 = min(w1, W);
    *hs = h0; *he = h1; *ws = w0; *we = w1;
    return divisor > 0 ? divisor : include_pad ? padded : (h1 - h0) * (w1 - w0);
}

__kernel void avg_forward(__global const T *restrict x, __global T *restrict y, ${c.geometry()},
                          const int include_pad, const int divisor, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int ow = gid % OW;
    const int t = gid / OW;
    const int oh = t % OH;
    const int nc = t / OH;
    int hs, he, ws, we;
    const int div = avg_window(oh, ow, H, W, KH, KW, SH, SW, PH, PW, include_pad, divisor, &hs, &he, &ws, &we);
    if (hs >= he || ws >= we) {     // only ceil_mode's last window can lie wholly in the padding
        y[gid] = (T)0;
        return;
    }
    __global const T *src = x + (long)nc * H * W;
    T s = (T)0;
    for (int h = hs; h < he; ++h)
        for (int w = ws; w < we; ++w)
            s += src[h * W + w];
    y[gid] = s / (T)div;
}

__kernel void avg_backward(__global const T *restrict g, __global T *restrict dx, ${c.geometry()},
                           const int include_pad, const int divisor, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int w = gid % W;
    const int t = gid / W;
    const int h = t % H;
    const int nc = t / H;
    const long base = (long)nc * OH * OW;
    T s = (T)0;
    for (int i = 0; i < KH; ++i) {
        const int th = h + PH - i;
        if (th < 0 || th % SH != 0 || th / SH >= OH) continue;
        const int oh = th / SH;
        for (int j = 0; j < KW; ++j) {
            const int tw = w + PW - j;
            if (tw < 0 || tw % SW != 0 || tw / SW >= OW) continue;
            const int ow = tw / SW;
            int hs, he, ws, we;
            const int div = avg_window(oh, ow, H, W, KH, KW, SH, SW, PH, PW, include_pad, divisor,
                                       &hs, &he, &ws, &we);
            s += g[base + oh * OW + ow] / (T)div;
        }
    }
    dx[gid] = s;
}

__kernel void adaptive_avg_forward(__global const T *restrict x, __global T *restrict y,
                                   const int H, const int W, const int OH, const int OW, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int ow = gid % OW;
    const int t = gid / OW;
    const int oh = t % OH;
    const int nc = t / OH;
    const int hs = (oh * H) / OH, he = ((oh + 1) * H + OH - 1) / OH;
    const int ws = (ow * W) / OW, we = ((ow + 1) * W + OW - 1) / OW;
    __global const T *src = x + (long)nc * H * W;
    T s = (T)0;
    for (int h = hs; h < he; ++h)
        for (int w = ws; w < we; ++w)
            s += src[h * W + w];
    y[gid] = s / (T)((he - hs) * (we - ws));
}

__kernel void adaptive_avg_backward(__global const T *restrict g, __global T *restrict dx,
                                    const int H, const int W, const int OH, const int OW, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int w = gid % W;
    const int t = gid / W;
    const int h = t % H;
    const int nc = t / H;
    const long base = (long)nc * OH * OW;
    // Outputs whose window holds h: oh in [floor(h*OH/H), ceil((h+1)*OH/H)); likewise ow.
    const int oh0 = (h * OH) / H, oh1 = min(OH, ((h + 1) * OH + H - 1) / H);
    const int ow0 = (w * OW) / W, ow1 = min(OW, ((w + 1) * OW + W - 1) / W);
    T s = (T)0;
    for (int oh = oh0; oh < oh1; ++oh) {
        const int hs = (oh * H) / OH, he = ((oh + 1) * H + OH - 1) / OH;
        if (h < hs || h >= he) continue;
        for (int ow = ow0; ow < ow1; ++ow) {
            const int ws = (ow * W) / OW, we = ((ow + 1) * W + OW - 1) / OW;
            if (w < ws || w >= we) continue;
            s += g[base + oh * OW + ow] / (T)((he - hs) * (we - ws));
        }
    }
    dx[gid] = s;
}

// adaptive_max: the first maximum (a NaN wins) of adaptive_avg's window, and its position h * W + w.
__kernel void adaptive_max_forward(__global const T *restrict x, __global T *restrict y, __global int *restrict idx,
                                   const int H, const int W, const int OH, const int OW, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int ow = gid % OW;
    const int t = gid / OW;
    const int oh = t % OH;
    const int nc = t / OH;
    const int hs = (oh * H) / OH, he = ((oh + 1) * H + OH - 1) / OH;
    const int ws = (ow * W) / OW, we = ((ow + 1) * W + OW - 1) / OW;
    __global const T *src = x + (long)nc * H * W;
    T best = -INFINITY;
    int at = hs * W + ws;
    for (int h = hs; h < he; ++h)
        for (int w = ws; w < we; ++w) {
            const T v = src[h * W + w];
            if (v > best || isnan(v)) {
                best = v;
                at = h * W + w;
            }
        }
    y[gid] = best;
    idx[gid] = at;
}

// adaptive_max_forward's gradient: each input sums g over the outputs whose window holds it and kept it.
__kernel void adaptive_max_backward(__global const T *restrict g, __global const int *restrict idx,
                                    __global T *restrict dx, ${c.geometry()}, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int w = gid % W;
    const int t = gid / W;
    const int h = t % H;
    const int nc = t / H;
    const int me = h * W + w;
    const long base = (long)nc * OH * OW;
    const int oh0 = (h * OH) / H, oh1 = min(OH, ((h + 1) * OH + H - 1) / H);
    const int ow0 = (w * OW) / W, ow1 = min(OW, ((w + 1) * OW + W - 1) / W);
    T s = (T)0;
    for (int oh = oh0; oh < oh1; ++oh)
        for (int ow = ow0; ow < ow1; ++ow) {
            const long o = base + oh * OW + ow;
            if (idx[o] == me) s += g[o];
        }
    dx[gid] = s;
}
