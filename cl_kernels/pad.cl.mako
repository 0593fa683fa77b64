## The non-constant pad modes (reflect, replicate, circular), forward and backward, one element per
## work-item.
##
## Padding works on one axis per launch: x[P, N, Q] -> y[P, OUT, Q] with `before` elements added in front
## (negative: cropped) and OUT - N - before behind. Output o reads index src(o) of the axis (`mode`:
## reflect, replicate or circular); backward sums, for input index i, the outputs with src(o) == i: at
## most three single outputs (reflect: a pad is smaller than the axis), one run (replicate's edges) or
## every M-th output (circular). Circular mode wraps, as torch, the part of the axis that a negative pad
## leaves: the M indices from C0 on (elsewhere C0 = 0, M = N).
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}\

// The axis index that output o of a padded axis reads.
inline int pad_src(int o, int N, int before, int C0, int M)
{
    const int i = o - before;
% if mode == "reflect":
    return i < 0 ? -i : i >= N ? 2 * (N - 1) - i : i;
% elif mode == "replicate":
    return clamp(i, 0, N - 1);
% else:
    return C0 + ((i % M) + M) % M;
% endif
}

__kernel void pad_forward(__global const T *restrict x, __global T *restrict y, const int N, const int Q,
                          const int OUT, const int before, const int C0, const int M, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int q = gid % Q;
    const int t = gid / Q;
    const int o = t % OUT;
    const int p = t / OUT;
    y[gid] = x[((long)p * N + pad_src(o, N, before, C0, M)) * Q + q];
}

__kernel void pad_backward(__global const T *restrict g, __global T *restrict dx, const int N, const int Q,
                           const int OUT, const int before, const int C0, const int M, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int q = gid % Q;
    const int t = gid / Q;
    const int i = t % N;
    const int p = t / N;
    __global const T *src = g + (long)p * OUT * Q + q;
    T s = (T)0;
% if mode == "replicate":
    const int lo = max(0, i == 0 ? 0 : before + i);
    const int hi = min(OUT, i == N - 1 ? OUT : before + i + 1);
    for (int o = lo; o < hi; ++o) s += src[(long)o * Q];
% elif mode == "circular":
    // Every M-th output from the first that reads i (none when i was cropped away).
    if (i >= C0 && i < C0 + M)
        for (int o = ((before + i - C0) % M + M) % M; o < OUT; o += M) s += src[(long)o * Q];
% else:
    const int cand[3] = {before - i, before + i, before + 2 * (N - 1) - i};
    for (int k = 0; k < 3; ++k) {
        const int o = cand[k];
        if (o < 0 || o >= OUT || pad_src(o, N, before, C0, M) != i) continue;
        if ((k > 0 && o == cand[0]) || (k > 1 && o == cand[1])) continue;   // counted already
        s += src[(long)o * Q];
    }
% endif
    dx[gid] = s;
}
