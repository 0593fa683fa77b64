## Reduce a tensor viewed as [outer, R, inner] over R, in parts.
## Work-group g produces out[o, p, i]: it folds elements r in [p*chunk, min(R, (p+1)*chunk)) of row (o, i)
## with its ${local_size} work-items, then combines their partial results in local memory along a fixed
## tree, so the result does not depend on timing. With P > 1 parts the caller runs a second pass over P.
## op: "sum" (scaled by `scale`, which makes a mean) or "max"; with_index also produces the index of the
## first maximum (read from in_idx on a second pass).
% if ctype == "double":
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
% endif
typedef ${ctype} T;

% if op == "sum":
#define IDENTITY ((T)0)
% else:
#define IDENTITY (-INFINITY)
% endif

__kernel __attribute__((reqd_work_group_size(${local_size}, 1, 1)))
void reduce(__global const T *in, const int in_off,
            __global T *out,
% if with_index:
            __global const int *in_idx, __global int *out_idx,
% endif
            const int R, const int inner, const int chunk, const int P, const T scale)
{
    __local T acc_l[${local_size}];
% if with_index:
    __local int idx_l[${local_size}];
% endif
    const int lid = get_local_id(0);
    const int g = get_group_id(0);
    const int i = g % inner;
    const int p = (g / inner) % P;
    const int o = g / (inner * P);
    const int r_end = min(R, (p + 1) * chunk);
    __global const T *row = in + in_off + (o * R) * inner + i;

    T acc = IDENTITY;
% if with_index:
    int best = 0x7fffffff;
% endif
    for (int r = p * chunk + lid; r < r_end; r += ${local_size}) {
        const T v = row[r * inner];
% if op == "sum":
        acc += v;
% elif with_index:
    % if has_in_idx:
        const int at = in_idx[(o * R + r) * inner + i];
    % else:
        const int at = r;
    % endif
        if (v > acc || (isnan(v) && !isnan(acc)) || best == 0x7fffffff) { acc = v; best = at; }
% else:
        acc = (v > acc || isnan(v)) ? v : acc;
% endif
    }
    acc_l[lid] = acc;
% if with_index:
    idx_l[lid] = best;
% endif
    barrier(CLK_LOCAL_MEM_FENCE);
% for half in [2 ** k for k in reversed(range(local_size.bit_length() - 1))]:
    if (lid < ${half}) {
    % if op == "sum":
        acc_l[lid] += acc_l[lid + ${half}];
    % elif with_index:
        const T a = acc_l[lid], b = acc_l[lid + ${half}];
        const int ia = idx_l[lid], ib = idx_l[lid + ${half}];
        // Keep the first maximum: compare values, then indices on ties; NaN wins like numpy.
        const int take_b = ib != 0x7fffffff && (ia == 0x7fffffff || b > a || (isnan(b) && !isnan(a))
                           || ((b == a || (isnan(a) && isnan(b))) && ib < ia));
        if (take_b) { acc_l[lid] = b; idx_l[lid] = ib; }
    % else:
        const T a = acc_l[lid], b = acc_l[lid + ${half}];
        acc_l[lid] = (b > a || isnan(b)) ? b : a;
    % endif
    }
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
    if (lid == 0) {
        const int at = (o * P + p) * inner + i;
% if op == "sum":
        out[at] = acc_l[0] * scale;
% else:
        out[at] = acc_l[0];
% endif
% if with_index:
        out_idx[at] = idx_l[0];
% endif
    }
}
