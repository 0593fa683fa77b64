## Reduce a tensor viewed as [outer, R, inner] over R, in parts, producing out[o, p, i] for each of P
## parts of R (P > 1 only for long reductions: the caller then runs a second pass over P).
## op: "sum" (scaled by `scale`, which makes a mean) or "max"; with_index also produces the index of the
## first maximum (read from in_idx on a second pass). Every output is folded in a fixed order, so results
## do not depend on timing.
##
## strategy "local" (GPUs): work-group g produces out[o, p, i]: it folds elements r in [p*chunk, min(R, (p+1)*chunk)) of row (o, i)
## with its ${local_size} work-items, then combines their partial results in local memory along a fixed
## tree, so the result does not depend on timing. With P > 1 parts the caller runs a second pass over P.
## op: "sum" (scaled by `scale`, which makes a mean) or "max"; with_index also produces the index of the
## first maximum (read from in_idx on a second pass).
##
## Positions and counts are of type `itype`: int by default, long for tensors past 2**31 - 1 elements;
## the long form also walks its rows in a loop (`groups` of them), so the launch stays small however
## many rows there are. `in_ctype` (a sum only) reads another element type than the accumulator's:
## a bool or int32 tensor summed in int64 without a widened copy.
<%
    I = context.get("itype", "int")
    IN = "T" if context.get("in_ctype", ctype) == ctype else context.get("in_ctype")
    long_ = I == "long"
    # Float sums are blocked and compensated (below); integer sums are exact, and max needs neither.
    blocked = op == "sum" and ctype in ("float", "double") and IN == "T"
%>\
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}

% if op == "sum":
#define IDENTITY ((T)0)
% elif ctype == "int":
#define IDENTITY INT_MIN
% elif ctype == "long":
#define IDENTITY LONG_MIN
% else:
#define IDENTITY (-INFINITY)
% endif
% if ctype in ("int", "long"):
#define IS_NAN(x) 0
% else:
#define IS_NAN(x) ((x) != (x))   // inline, where isnan() may be an out-of-line call
% endif


% if strategy == "serial":
<%
    def update(acc, best, value, at):
        if op == "sum":
            return f"{acc} += {value};"
        if with_index:
            return (f"{{ const T v = {value}; if (v > {acc} || (IS_NAN(v) && !IS_NAN({acc})) || {best} == 0x7fffffff)"
                    f" {{ {acc} = v; {best} = {at}; }} }}")
        return f"{{ const T v = {value}; {acc} = (v > {acc} || IS_NAN(v)) ? v : {acc}; }}"
    at = "in_idx[(o * R + r) * inner + i0 + j]" if has_in_idx else "r"
%>
## strategy "serial" (CPUs): one work-item folds a run of R for a block of ${inner_block} neighbouring
## inner positions, so the innermost loop walks contiguous memory and the compiler vectorises it; a
## plain row (inner == 1) uses eight interleaved accumulators for the same reason.
__kernel void reduce(__global const ${IN} *x, const ${I} x_off,
                     __global T *out,
% if with_index:
                     __global const int *in_idx, __global int *out_idx,
% endif
                     const ${I} R, const ${I} inner, const ${I} chunk, const ${I} P, const T scale${", const long groups" if long_ else ""})
{
    const ${I} nib = (inner + ${inner_block} - 1) / ${inner_block};
% if long_:
  for (long g = get_global_id(0); g < groups; g += get_global_size(0)) {
% else:
    const int g = get_global_id(0);
% endif
    const ${I} ib = g % nib;
    const ${I} p = (g / nib) % P;
    const ${I} o = g / (nib * P);
    const ${I} r0 = p * chunk;
    const ${I} r1 = min(R, r0 + chunk);
    __global const ${IN} *base = x + x_off + (o * R) * inner;
    __global T *dst = out + (o * P + p) * inner;
% if not with_index:
    if (inner == 1) {
        T acc[8];
    % if blocked:
        // A float sum in blocks of 64 (8 accumulators of 8 adds each), the blocks' sums added with
        // Kahan's compensation: the rounding error stays that of ~12 adds however long the row is
        // (a plain running sum's grows with its length; torch's cascade sum's with its logarithm).
        T total = (T)0, comp = (T)0;
        for (${I} b0 = r0; b0 < r1; b0 += 64) {
            const ${I} b1 = min(r1, b0 + 64);
            for (int j = 0; j < 8; ++j) acc[j] = (T)0;
            ${I} r = b0;
            for (; r + 8 <= b1; r += 8) {
                for (int j = 0; j < 8; ++j) acc[j] += base[r + j];
            }
            for (; r < b1; ++r) acc[0] += base[r];
            for (int step = 4; step >= 1; step /= 2)
                for (int j = 0; j < step; ++j) acc[j] += acc[j + step];
            const T y = acc[0] - comp;
            const T t = total + y;
            comp = (t - total) - y;
            total = t;
        }
        dst[0] = total * scale;
    % else:
        for (int j = 0; j < 8; ++j) acc[j] = IDENTITY;
        ${I} r = r0;
        for (; r + 8 <= r1; r += 8) {
            for (int j = 0; j < 8; ++j) ${update("acc[j]", None, "base[r + j]", None)}
        }
        for (; r < r1; ++r) ${update("acc[0]", None, "base[r]", None)}
        for (int step = 4; step >= 1; step /= 2)
            for (int j = 0; j < step; ++j) ${update("acc[j]", None, "acc[j + step]", None)}
        % if op == "sum":
        dst[0] = acc[0] * scale;
        % else:
        dst[0] = acc[0];
        % endif
    % endif
        ${"continue" if long_ else "return"};
    }
% endif
    const ${I} i0 = ib * ${inner_block};
    const int width = ${f"(int)min((long){inner_block}, inner - i0)" if long_ else f"min({inner_block}, inner - i0)"};
    T acc[${inner_block}];
% if with_index:
    int best[${inner_block}];
% endif
    for (int j = 0; j < ${inner_block}; ++j) {
        acc[j] = IDENTITY;
% if with_index:
        best[j] = 0x7fffffff;
% endif
    }
% if blocked:
    // Columns summed in blocks of 64 rows, the blocks' sums added with Kahan's compensation (as above).
    T total[${inner_block}], comp[${inner_block}];
    for (int j = 0; j < ${inner_block}; ++j) total[j] = comp[j] = (T)0;
    for (${I} b0 = r0; b0 < r1; b0 += 64) {
        const ${I} b1 = min(r1, b0 + 64);
        for (int j = 0; j < ${inner_block}; ++j) acc[j] = (T)0;
        if (width == ${inner_block}) {
            for (${I} r = b0; r < b1; ++r) {
                __global const ${IN} *row = base + r * inner + i0;
                for (int j = 0; j < ${inner_block}; ++j) acc[j] += row[j];
            }
        } else {
            for (${I} r = b0; r < b1; ++r) {
                __global const ${IN} *row = base + r * inner + i0;
                for (int j = 0; j < width; ++j) acc[j] += row[j];
            }
        }
        for (int j = 0; j < ${inner_block}; ++j) {
            const T y = acc[j] - comp[j];
            const T t = total[j] + y;
            comp[j] = (t - total[j]) - y;
            total[j] = t;
        }
    }
    for (int j = 0; j < ${inner_block}; ++j) acc[j] = total[j];
% else:
    if (width == ${inner_block}) {
        for (${I} r = r0; r < r1; ++r) {
            __global const ${IN} *row = base + r * inner + i0;
            for (int j = 0; j < ${inner_block}; ++j) ${update("acc[j]", "best[j]", "row[j]", at)}
        }
    } else {
        for (${I} r = r0; r < r1; ++r) {
            __global const ${IN} *row = base + r * inner + i0;
            for (int j = 0; j < width; ++j) ${update("acc[j]", "best[j]", "row[j]", at)}
        }
    }
% endif
    for (int j = 0; j < width; ++j) {
% if op == "sum":
        dst[i0 + j] = acc[j] * scale;
% else:
        dst[i0 + j] = acc[j];
% endif
% if with_index:
        out_idx[(o * P + p) * inner + i0 + j] = best[j];
% endif
    }
% if long_:
  }
% endif
}
% else:
__kernel __attribute__((reqd_work_group_size(${local_size}, 1, 1)))
void reduce(__global const ${IN} *x, const ${I} x_off,
            __global T *out,
% if with_index:
            __global const int *in_idx, __global int *out_idx,
% endif
            const ${I} R, const ${I} inner, const ${I} chunk, const ${I} P, const T scale${", const long groups" if long_ else ""})
{
    __local T acc_l[${local_size}];
% if with_index:
    __local int idx_l[${local_size}];
% endif
    const int lid = get_local_id(0);
% if long_:
  for (long g = get_group_id(0); g < groups; g += get_num_groups(0)) {
% else:
    const int g = get_group_id(0);
% endif
    const ${I} i = g % inner;
    const ${I} p = (g / inner) % P;
    const ${I} o = g / (inner * P);
    const ${I} r_end = min(R, (p + 1) * chunk);
    __global const ${IN} *row = x + x_off + (o * R) * inner + i;

    T acc = IDENTITY;
% if with_index:
    int best = 0x7fffffff;
% endif
    for (${I} r = p * chunk + lid; r < r_end; r += ${local_size}) {
        const T v = row[r * inner];
% if op == "sum":
        acc += v;
% elif with_index:
    % if has_in_idx:
        const int at = in_idx[(o * R + r) * inner + i];
    % else:
        const int at = r;
    % endif
        if (v > acc || (IS_NAN(v) && !IS_NAN(acc)) || best == 0x7fffffff) { acc = v; best = at; }
% else:
        acc = (v > acc || IS_NAN(v)) ? v : acc;
% endif
    }
    acc_l[lid] = acc;
% if with_index:
    idx_l[lid] = best;
% endif
<%c:tree_fold size="${local_size}" args="half">
    % if op == "sum":
        acc_l[lid] += acc_l[lid + ${half}];
    % elif with_index:
        const T a = acc_l[lid], b = acc_l[lid + ${half}];
        const int ia = idx_l[lid], ib = idx_l[lid + ${half}];
        // Keep the first maximum: compare values, then indices on ties; NaN wins like numpy.
        const int take_b = ib != 0x7fffffff && (ia == 0x7fffffff || b > a || (IS_NAN(b) && !IS_NAN(a))
                           || ((b == a || (IS_NAN(a) && IS_NAN(b))) && ib < ia));
        if (take_b) { acc_l[lid] = b; idx_l[lid] = ib; }
    % else:
        const T a = acc_l[lid], b = acc_l[lid + ${half}];
        acc_l[lid] = (b > a || IS_NAN(b)) ? b : a;
    % endif
</%c:tree_fold>\
    if (lid == 0) {
        const ${I} at = (o * P + p) * inner + i;
% if op == "sum":
        out[at] = acc_l[0] * scale;
% else:
        out[at] = acc_l[0];
% endif
% if with_index:
        out_idx[at] = idx_l[0];
% endif
    }
% if long_:
    barrier(CLK_LOCAL_MEM_FENCE);   // the next row's partial results overwrite acc_l
  }
% endif
}
% endif
