## Selection by integer indices along one axis, and its gradient without atomics.
##
## The tensor is seen as [outer, R, inner] (the indexed axis in the middle) and the result as
## [outer, K, inner]. mode "select": one index list idx[K] for every (outer, inner) position
## (index_select, x[..., idx, ...]); mode "gather": an index per result element, idx[outer, K, inner].
## A negative index counts from the end. An index outside [-R, R) (only a device tensor can hold one;
## lists are checked on the host) reads nothing out of bounds: the element comes out NaN (0 for
## integer tensors).
##
## `rows`: CPUs take a whole row of `inner` elements per work-item, GPUs one element.
## backward: each input element sums, in index order, the gradients of the result elements that took
## it: a fixed order, so the result is the same bit for bit at every run, unlike atomic adds. It
## costs K reads per input element: fine for embeddings and row selections of moderate K.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}\

% if mode == "select":
#define IDX(o, k, i) WRAP(idx[k])
% else:
#define IDX(o, k, i) WRAP(idx[((long)(o) * K + (k)) * inner + (i)])
% endif
// A negative index counts from the end, as in torch; one still outside [0, R) after that reads nothing.
#define WRAP(j) ((j) < 0 ? (j) + R : (j))
% if ctype in ("float", "double"):
#define BAD ((T)NAN)
% else:
#define BAD ((T)0)
% endif

% if rows:
## CPUs: one work-item per row of `inner` contiguous elements (a plain loop the compiler vectorises).
__kernel void forward(__global const T *x, __global const int *idx, __global T *out,
                      const int R, const int K, const int inner, const int n)
{
    const int row = get_global_id(0);          // (o, k)
    if (row >= n) return;
    const int k = row % K;
    const int o = row / K;
    __global T *dst = out + (long)row * inner;
% if mode == "select":
    const int j = WRAP(idx[k]);
    if (j >= 0 && j < R) {
        __global const T *src = x + ((long)o * R + j) * inner;
        for (int i = 0; i < inner; ++i) dst[i] = src[i];
    } else {
        for (int i = 0; i < inner; ++i) dst[i] = BAD;
    }
% else:
    for (int i = 0; i < inner; ++i) {
        const int j = IDX(o, k, i);
        dst[i] = (j >= 0 && j < R) ? x[((long)o * R + j) * inner + i] : BAD;
    }
% endif
}

__kernel void backward(__global const T *g, __global const int *idx, __global T *gx,
                       const int R, const int K, const int inner, const int n)
{
    const int row = get_global_id(0);          // (o, r)
    if (row >= n) return;
    const int r = row % R;
    const int o = row / R;
    __global T *dst = gx + (long)row * inner;
    for (int i = 0; i < inner; ++i) dst[i] = 0;
    for (int k = 0; k < K; ++k) {
        __global const T *src = g + ((long)o * K + k) * inner;
% if mode == "select":
        if (WRAP(idx[k]) == r)
            for (int i = 0; i < inner; ++i) dst[i] += src[i];
% else:
        for (int i = 0; i < inner; ++i)
            if (IDX(o, k, i) == r) dst[i] += src[i];
% endif
    }
}
% else:
## GPUs: one work-item per element, neighbours on neighbouring addresses.
__kernel void forward(__global const T *x, __global const int *idx, __global T *out,
                      const int R, const int K, const int inner, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int i = gid % inner;
    const int k = (gid / inner) % K;
    const int o = gid / (inner * K);
    const int j = IDX(o, k, i);
    out[gid] = (j >= 0 && j < R) ? x[((long)o * R + j) * inner + i] : BAD;
}

__kernel void backward(__global const T *g, __global const int *idx, __global T *gx,
                       const int R, const int K, const int inner, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int i = gid % inner;
    const int r = (gid / inner) % R;
    const int o = gid / (inner * R);
    T s = 0;
    for (int k = 0; k < K; ++k)
        if (IDX(o, k, i) == r) s += g[((long)o * K + k) * inner + i];
    gx[gid] = s;
}
% endif
