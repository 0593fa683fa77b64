## Selection by integer indices along one axis, and its gradient without atomics.
##
## The tensor is seen as [outer, R, inner] (the indexed axis in the middle) and the result as
## [outer, K, inner]. mode "select": one index list idx[K] for every (outer, inner) position
## (index_select, x[..., idx, ...]); mode "gather": an index per result element, idx[outer, K, inner].
## An index outside [0, R) (only a device tensor can hold one; lists are checked on the host) reads
## nothing out of bounds: the element comes out NaN (0 for integer tensors).
##
## backward: each input element sums, in index order, the gradients of the result elements that took
## it: a fixed order, so the result is the same bit for bit at every run, unlike atomic adds. It
## costs K reads per input element: fine for embeddings and row selections of moderate K.
% if ctype == "double":
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
% endif
typedef ${ctype} T;

% if mode == "select":
#define IDX(o, k, i) idx[k]
% else:
#define IDX(o, k, i) idx[((o) * K + (k)) * inner + (i)]
% endif

__kernel void forward(__global const T *x, __global const int *idx, __global T *out,
                      const int R, const int K, const int inner, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int i = gid % inner;
    const int k = (gid / inner) % K;
    const int o = gid / (inner * K);
    const int j = IDX(o, k, i);
% if ctype in ("float", "double"):
    out[gid] = (j >= 0 && j < R) ? x[((long)o * R + j) * inner + i] : (T)NAN;
% else:
    out[gid] = (j >= 0 && j < R) ? x[((long)o * R + j) * inner + i] : (T)0;
% endif
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
