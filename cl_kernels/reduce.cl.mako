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
##
## 16-bit floats (a sum only; kernels.py): `in_ctype` "half" (float16) or "bf16" (bfloat16's bits) reads
## the 16-bit tensor itself into the float accumulators, and `out_ctype` of the same kind writes the
## result rounded once to nearest even (as torch: accumulated in float32, the result in the input's
## type). float16 is converted with vload_half/vstore_half_rte, or with half_io="bits" (CPUs) by integer
## arithmetic, 8 at a time by F16C where the CPU has it (half.mako).
<%
    I = context.get("itype", "int")
    IN = "T" if context.get("in_ctype", ctype) == ctype else context.get("in_ctype")
    OUT = context.get("out_ctype", "T")
    long_ = I == "long"
    half_in, half_out = IN in ("half", "bf16"), OUT in ("half", "bf16")
    bits = context.get("half_io", "builtin") == "bits"
    # Float sums are blocked and compensated (below); integer sums are exact, and max needs neither.
    blocked = op == "sum" and ctype in ("float", "double") and (IN == "T" or half_in)
    def pointee(t):
        # The element type of a buffer of type t: 16-bit floats as their bits (ushort), except float16
        # read or written by the builtins.
        return "ushort" if t == "bf16" or (t == "half" and bits) else t
    INP, OUTP = pointee(IN), pointee(OUT)
    def ld(p, i):
        # Element i of input pointer p, as T.
        if IN == "half":
            return f"h2f_({p}[{i}])" if bits else f"vload_half({i}, {p})"
        if IN == "bf16":
            return f"as_float((uint){p}[{i}] << 16)"
        return f"{p}[{i}]"
    def st(p, i, v):
        # The statement that writes value v to element i of output pointer p.
        if OUT == "half":
            return f"{p}[{i}] = f2h_({v})" if bits else f"vstore_half_rte({v}, {i}, {p})"
        if OUT == "bf16":
            return f"{p}[{i}] = bf16_rne_({v})"
        return f"{p}[{i}] = {v}"
%>\
<%namespace name="c" file="common.mako"/>\
<%namespace name="h" file="half.mako"/>\
${c.preamble(ctype)}
% if IN == "half" and bits:

${c.h2f()}\
% endif
% if OUT == "half" and bits:
${h.f2h()}\
% endif
% if OUT == "bf16":
${h.bf16_rne()}\
% endif
% if half_in and strategy == "serial":
<%
    # A plain row's 16-bit elements are read 8 at a time, as a float8: gathered from 8 scalar reads,
    # which the compiler merges into one unaligned vector load (PoCL's vload8 is an out-of-line call).
    # (The serial strategy reads float16 as bits: half_io="bits", rows.py.)
    load8 = "bf2f_v" if IN == "bf16" else "h2f_v"
    which = ("bf2f",) if IN == "bf16" else ("blend", "h2f")
%>\
${h.vector_conversions(8, which)}\
% endif

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
__kernel void reduce(__global const ${INP} *x, const ${I} x_off,
                     __global ${OUTP} *out,
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
    __global const ${INP} *base = x + x_off + (o * R) * inner;
    __global ${OUTP} *dst = out + (o * P + p) * inner;
% if not with_index:
    if (inner == 1) {
        T acc[8];
    % if blocked:
        // A float sum in blocks of 64 (8 accumulators of 8 adds each), the blocks' sums added with
        // Kahan's compensation: the rounding error stays that of ~12 adds however long the row is
        // (a plain running sum's grows with its length; torch's cascade sum's with its logarithm).
        T total = (T)0, comp = (T)0;
        for (${I} b0 = r0; b0 < r1; b0 += 64) {
    % if half_in:
            // The same sums in the same order, the 8 accumulators as the lanes of a float8 and their
            // fold (4, 2, 1) as vector halves: no out-of-line min() and no array in memory per block,
            // which left the loop bound by its arithmetic rather than by memory.
            const ${I} b1 = r1 - b0 < 64 ? r1 : b0 + 64;
            float8 acc8 = (float8)(0.0f);
            ${I} r = b0;
            for (; r + 8 <= b1; r += 8) {
                __global const ${INP} *q = base + r;
                acc8 += ${load8}((ushort8)(${", ".join(f"q[{j}]" for j in range(8))}));
            }
            for (; r < b1; ++r) acc8.s0 += ${ld("base", "r")};
            const float4 acc4 = acc8.lo + acc8.hi;
            const float2 acc2 = acc4.lo + acc4.hi;
            const T y = (acc2.s0 + acc2.s1) - comp;
    % else:
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
    % endif
            const T t = total + y;
            comp = (t - t == (T)0) ? (t - total) - y : (T)0;   // an inf total stays inf, not NaN
            total = t;
        }
        ${st("dst", "0", "total * scale")};
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
                __global const ${INP} *row = base + r * inner + i0;
    % if half_in and inner_block % 8 == 0:
                // 8 columns converted at a time (as a plain row's elements above)
        % for k in range(0, inner_block, 8):
                const float8 v${k} = ${load8}((ushort8)(${", ".join(f"row[{k + j}]" for j in range(8))}));
            % for j, lane in enumerate(c.lanes(8)):
                acc[${k + j}] += v${k}.${lane};
            % endfor
        % endfor
    % else:
                for (int j = 0; j < ${inner_block}; ++j) acc[j] += ${ld("row", "j")};
    % endif
            }
        } else {
            for (${I} r = b0; r < b1; ++r) {
                __global const ${INP} *row = base + r * inner + i0;
                for (int j = 0; j < width; ++j) acc[j] += ${ld("row", "j")};
            }
        }
        for (int j = 0; j < ${inner_block}; ++j) {
            const T y = acc[j] - comp[j];
            const T t = total[j] + y;
            comp[j] = (t - t == (T)0) ? (t - total[j]) - y : (T)0;
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
        ${st("dst", "i0 + j", "acc[j] * scale")};
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
void reduce(__global const ${INP} *x, const ${I} x_off,
            __global ${OUTP} *out,
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
    __global const ${INP} *row = x + x_off + (o * R) * inner + i;

    T acc = IDENTITY;
% if with_index:
    int best = 0x7fffffff;
% endif
    for (${I} r = p * chunk + lid; r < r_end; r += ${local_size}) {
        const T v = ${ld("row", "r * inner")};
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
        ${st("out", "at", "acc_l[0] * scale")};
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
