## Running sums and products along one axis of a tensor seen as [outer, R, inner].
##
## One work-item per (outer, inner) column walks its R elements in order (backwards when `reverse`),
## so every result is folded in a fixed order and is the same bit for bit at every run.
## `exclusive`: element r gets the fold of the elements before it (the identity for the first).
## Parameters: ctype, op ("sum" | "prod"), reverse, exclusive.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}\

__kernel void scan(__global const T *x, __global T *out, const int R, const int inner, const int n)
{
    const int col = get_global_id(0);          // (o, i)
    if (col >= n) return;
    const int i = col % inner;
    const int o = col / inner;
    const long base = (long)o * R * inner + i;
    T acc = ${"0" if op == "sum" else "1"};
% if reverse:
    for (int r = R - 1; r >= 0; --r) {
% else:
    for (int r = 0; r < R; ++r) {
% endif
        const long at = base + (long)r * inner;
% if exclusive:
        const T v = x[at];
        out[at] = acc;
        acc ${"+=" if op == "sum" else "*="} v;
% else:
        acc ${"+=" if op == "sum" else "*="} x[at];
        out[at] = acc;
% endif
    }
}

## cumprod's gradient, without dividing by x (exact where x is 0): for y = cumprod(x),
## dL/dx_r = (x_0 ... x_{r-1}) * S_r with S_r = g_r + x_{r+1} S_{r+1} (S_{R-1} = g_{R-1}), walked backwards.
__kernel void cumprod_grad(__global const T *g, __global const T *x, __global T *out, const int R,
                           const int inner, const int n)
{
    const int col = get_global_id(0);
    if (col >= n) return;
    const int i = col % inner;
    const int o = col / inner;
    const long base = (long)o * R * inner + i;
    T s = 0;
    for (int r = R - 1; r >= 0; --r) {
        const long at = base + (long)r * inner;
        s = g[at] + (r + 1 < R ? x[at + inner] : (T)0) * s;
        out[at] = s;
    }
    T before = 1;
    for (int r = 0; r < R; ++r) {
        const long at = base + (long)r * inner;
        out[at] *= before;
        before *= x[at];
    }
}
