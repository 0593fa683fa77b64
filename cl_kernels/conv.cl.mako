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
## `rows`: CPUs take a whole row (all OW of one (n, c, i, j, oh), or all W of one (n, c, h)) per
## work-item, a loop the compiler vectorises; GPUs one element per work-item.
% if ctype == "double":
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
% endif
typedef ${ctype} T;

#define GEOMETRY const int H, const int W, const int OH, const int OW, const int KH, const int KW, \
                 const int SH, const int SW, const int PH, const int PW, const int DH, const int DW

__kernel void im2col(__global const T *restrict x, __global T *restrict cols, GEOMETRY, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
% if rows:
    const int row = gid, ow0 = 0, ow1 = OW;
% else:
    const int row = gid / OW, ow0 = gid % OW, ow1 = ow0 + 1;
% endif
    // row = (((n * C + c) * KH + i) * KW + j) * OH + oh
    const int oh = row % OH;
    int t = row / OH;
    const int j = t % KW;
    t /= KW;
    const int i = t % KH;
    const int nc = t / KH;
    __global T *dst = cols + (long)row * OW;
    const int h = oh * SH - PH + i * DH;
    if (h < 0 || h >= H) {
        for (int ow = ow0; ow < ow1; ++ow) dst[ow] = (T)0;
        return;
    }
    __global const T *src = x + ((long)nc * H + h) * W;
    const int w0 = j * DW - PW;
% if rows:
    if (SW == 1) {
        // Contiguous: zeros, a straight copy, zeros.
        const int lo = clamp(-w0, 0, OW), hi = clamp(W - w0, lo, OW);
        for (int ow = 0; ow < lo; ++ow) dst[ow] = (T)0;
        for (int ow = lo; ow < hi; ++ow) dst[ow] = src[w0 + ow];
        for (int ow = hi; ow < OW; ++ow) dst[ow] = (T)0;
        return;
    }
% endif
    for (int ow = ow0; ow < ow1; ++ow) {
        const int w = w0 + ow * SW;
        dst[ow] = (w >= 0 && w < W) ? src[w] : (T)0;
    }
}

// dx[n, c, h, w] = sum over taps (i, j) whose output position (oh, ow) reads (h, w) of
// dcols[n, c, i, j, oh, ow]: h = oh*SH - PH + i*DH, i.e. oh = (h + PH - i*DH) / SH when that divides.
__kernel void col2im(__global const T *restrict dcols, __global T *restrict dx, GEOMETRY, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
% if rows:
    const int row = gid;               // (n * C + c) * H + h
    __global T *dst = dx + (long)row * W;
    for (int w = 0; w < W; ++w) dst[w] = (T)0;
% else:
    const int row = gid / W, w = gid % W;
    T s = (T)0;
% endif
    const int h = row % H;
    const int nc = row / H;
    for (int i = 0; i < KH; ++i) {
        const int th = h + PH - i * DH;
        if (th < 0 || th % SH != 0 || th / SH >= OH) continue;
        const int oh = th / SH;
        for (int j = 0; j < KW; ++j) {
            __global const T *src = dcols + ((((long)nc * KH + i) * KW + j) * OH + oh) * OW;
            const int w0 = j * DW - PW;      // input column of ow = 0
% if rows:
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
% if not rows:
    dx[gid] = s;
% endif
}
