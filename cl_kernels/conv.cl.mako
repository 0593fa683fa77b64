## Convolution as im2col + matmul: the column matrix and its gradient.
##
## x is [N, C, H, W] (NCHW, contiguous). The column matrix is cols[N, C, KH, KW, OH, OW]: row
## (c, i, j) of image n holds, for every output position (oh, ow), the input element that kernel tap
## (i, j) of channel c sees there, x[n, c, oh*SH - PH + i*DH, ow*SW - PW + j*DW], or 0 in the padding.
## With groups, channel c belongs to group c / (C / groups), so cols is also [N, groups, K, OH*OW]
## with K = (C / groups) * KH * KW, the layout the batched matmul wants.
##
## im2col writes cols; col2im is its transpose, the input gradient dx from dcols. col2im is a gather:
## each input element sums, in the fixed order (i, j), the entries of dcols that copied it, so there
## are no atomics and the result is the same bit for bit at every run.
##
## Geometry (sizes, strides, padding, dilation) is all kernel arguments: one program per dtype and
## launch form. Padding is the top/left amount; a bottom/right excess (torch's padding="same" with an
## even kernel) only shows in OH/OW, which the host computes.
##
## `rows`: CPUs take whole rows (RB of them, all of a plane unless that leaves too few work-items) per
## work-item, loops the compiler vectorises; GPUs one element per work-item.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}\

// CPUs: work-item `gid` fills rows oh in [oh0, oh0 + RB) of plane (n, c, i, j) of cols; GPUs: one element.
__kernel void im2col(__global const T *restrict x_base, __global T *restrict cols, ${c.geometry()}, const int RB,
                     const long x_off, const int n)
{
    __global const T *x = x_base + x_off;          // the first image of this chunk of the batch
    const int gid = get_global_id(0);
    if (gid >= n) return;
% if rows:
    const int blocks = (OH + RB - 1) / RB;
    const int plane = gid / blocks;                 // ((n * C + c) * KH + i) * KW + j
    const int oh0 = (gid % blocks) * RB, oh1 = min(OH, oh0 + RB);
    const int ow0 = 0, ow1 = OW;
% else:
    const int plane = gid / (OH * OW);
    const int oh0 = (gid / OW) % OH, oh1 = oh0 + 1;
    const int ow0 = gid % OW, ow1 = ow0 + 1;
% endif
    const int j = plane % KW;
    const int i = (plane / KW) % KH;
    const int nc = plane / (KW * KH);
    __global const T *src = x + (long)nc * H * W;
    const int w0 = j * DW - PW;
    for (int oh = oh0; oh < oh1; ++oh) {
        __global T *dst = cols + ((long)plane * OH + oh) * OW;
        const int h = oh * SH - PH + i * DH;
        if (h < 0 || h >= H) {
            for (int ow = ow0; ow < ow1; ++ow) dst[ow] = (T)0;
            continue;
        }
        __global const T *row = src + h * W;
% if rows:
        if (SW == 1) {
            // Contiguous: zeros, a straight copy, zeros.
            const int lo = clamp(-w0, 0, OW), hi = clamp(W - w0, lo, OW);
            for (int ow = 0; ow < lo; ++ow) dst[ow] = (T)0;
            for (int ow = lo; ow < hi; ++ow) dst[ow] = row[w0 + ow];
            for (int ow = hi; ow < OW; ++ow) dst[ow] = (T)0;
            continue;
        }
% endif
        for (int ow = ow0; ow < ow1; ++ow) {
            const int w = w0 + ow * SW;
            dst[ow] = (w >= 0 && w < W) ? row[w] : (T)0;
        }
    }
}

// dx[n, c, h, w] = sum over taps (i, j) whose output position (oh, ow) reads (h, w) of
// dcols[n, c, i, j, oh, ow]: h = oh*SH - PH + i*DH, i.e. oh = (h + PH - i*DH) / SH when that divides.
// CPUs: work-item `gid` sums rows h in [h0, h0 + RB) of plane (n, c), tap by tap into dx (in L1);
// GPUs: one element, in a register. Either way the taps come in the order (i, j).
__kernel void col2im(__global const T *restrict dcols, __global T *restrict dx_base, ${c.geometry()}, const int RB,
                     const long dx_off, const int n)
{
    __global T *dx = dx_base + dx_off;             // the first image of this chunk of the batch
    const int gid = get_global_id(0);
    if (gid >= n) return;
% if rows:
    const int blocks = (H + RB - 1) / RB;
    const int nc = gid / blocks;
    const int h0 = (gid % blocks) * RB, h1 = min(H, h0 + RB);
    __global T *plane = dx + (long)nc * H * W;
    for (int h = h0; h < h1; ++h)
        for (int w = 0; w < W; ++w) plane[h * W + w] = (T)0;
% else:
    const int nc = gid / (H * W);
    const int h0 = (gid / W) % H, h1 = h0 + 1;
    const int w = gid % W;
    T s = (T)0;
% endif
    for (int i = 0; i < KH; ++i) {
        for (int j = 0; j < KW; ++j) {
            __global const T *tap = dcols + (((long)nc * KH + i) * KW + j) * OH * OW;
            const int w0 = j * DW - PW;      // input column of ow = 0
            for (int h = h0; h < h1; ++h) {
                const int th = h + PH - i * DH;
                if (th < 0 || th % SH != 0 || th / SH >= OH) continue;
                __global const T *src = tap + (th / SH) * OW;
% if rows:
                __global T *dst = plane + h * W;
                if (SW == 1) {
                    const int lo = clamp(w0, 0, W), hi = clamp(w0 + OW, lo, W);
                    for (int w = lo; w < hi; ++w) dst[w] += src[w - w0];
                } else {
                    for (int w = 0; w < W; ++w) {
                        const int tw = w - w0;
                        if (tw >= 0 && tw % SW == 0 && tw / SW < OW) dst[w] += src[tw / SW];
                    }
                }
% else:
                const int tw = w - w0;
                if (tw >= 0 && tw % SW == 0 && tw / SW < OW) s += src[tw / SW];
% endif
            }
        }
    }
% if not rows:
    dx[(long)nc * H * W + h0 * W + w] = s;
% endif
}
