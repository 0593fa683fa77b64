## Softmax and log-softmax along the last axis of a [rows, cols] tensor, forward and backward, one
## pass per row instead of a max, an exp, a sum and a normalisation kernel each. op "cross_entropy"
## fuses log-softmax with picking each row's target: the forward writes each row's loss and its
## log-sum-exp, the backward g * scale * (softmax - onehot) from the logits and that log-sum-exp.
## A target equal to ignore_index gives its row loss 0, weight 0 and gradient 0; any other target outside
## [0, cols) makes its row's loss NaN (its weight counting 1) and its gradient 0. Options (template flags): class `weighted`
## (weight[target] scales a row, and its weight is what a mean divides by), label `smoothing`
## ((1 - eps) of the target's loss plus eps / cols of every class's, weighted), `nll` (the input is
## already log-probabilities: no softmax), `count` (the forward writes each row's weight first and the
## losses after them, [2, rows], for the mean's denominator), `g_rows` (a gradient per row, for reduction="none") and
## `has_den` (the backward divides by den[0], that denominator), `xtype` (cross_entropy only: "half" or
## "bf16" logits, read as they are and computed in float; the backward writes their gradient in that
## type, rounded once to nearest even; float16 as bits on CPUs, `half_io` "bits", as the reduce template).
## strategy "serial" (CPUs): one work-item per row, plain loops in a fixed order.
## strategy "local" (GPUs): one work-group of ${local_size} work-items per row, combined in local
## memory along a fixed tree. Either way the result does not depend on timing.
<%namespace name="c" file="common.mako"/>\
<%namespace name="h" file="half.mako"/>\
## CPUs: the row loops go vw elements at a time (TV), where the vector exp is several times the scalar's speed.
${c.preamble(ctype, vector=vw if strategy == "serial" else 0)}\
<%
    X = context.get("xtype", "T")
    bits = context.get("half_io", "builtin") == "bits"
    XP = "T" if X == "T" else "ushort" if X == "bf16" or bits else "half"   # the logits' pointee
    def xl(p, i):
        # Element i of logits pointer p, as T.
        if X == "half":
            return f"h2f_({p}[{i}])" if bits else f"vload_half({i}, {p})"
        if X == "bf16":
            return f"as_float((uint){p}[{i}] << 16)"
        return f"{p}[{i}]"
    def xs(p, i, v):
        # The statement writing v to element i of the logits' gradient p.
        if X == "half":
            return f"{p}[{i}] = f2h_({v})" if bits else f"vstore_half_rte({v}, {i}, {p})"
        if X == "bf16":
            return f"{p}[{i}] = bf16_rne_({v})"
        return f"{p}[{i}] = {v}"
    def xvl(p):
        # vw logits from p on, as TV.
        if X == "T" or vw == 1:
            return f"VLOAD(0, {p})" if X == "T" else xl(f"({p})", 0)
        return f"{'bf2f_v' if X == 'bf16' else 'h2f_v'}(vload{vw}(0, {p}))"
    def xvs(p, v):
        # The statement writing TV v to the vw gradients from p on.
        if X == "T" or vw == 1:
            return f"VSTORE({v}, 0, {p})" if X == "T" else xs(f"({p})", 0, v)
        return f"vstore{vw}({'f2bf_v' if X == 'bf16' else 'f2h_v'}({v}), 0, {p})"
%>\
% if X == "half" and bits:
${c.h2f()}\
${h.f2h()}\
% endif
% if X == "bf16":
${h.bf16_rne()}\
% endif
% if X != "T" and strategy == "serial" and vw > 1:
${h.vector_conversions(vw, ("blend", "bf2f", "f2bf") if X == "bf16" else ("blend", "h2f", "f2h"))}\
% endif
% if op == "cross_entropy":
% if weighted:
#define W(c) weight[c]
% else:
#define W(c) ((T)1)
% endif
% if g_rows:
#define G(r) g[r]
% else:
#define G(r) g[0]
% endif
% endif
<%
    def row_max(v, m):   # NaN wins, as in numpy
        return f"{m} = ({v} > {m} || {v} != {v}) ? {v} : {m};"
    lanes = c.lanes(vw)
    def vmax(x, m):
        """OpenCL setting T `m` to the max of row `x` (NaN wins): vectors of ${vw}, then the tail."""
        return "\n    ".join([
            f"TV mv_ = (TV)(-INFINITY); VI nan_ = (VI)(0); int c_ = 0;",
            f"for (; c_ + {vw} <= cols; c_ += {vw}) {{ const TV v_ = {xvl(x + ' + c_')}; mv_ = fmax(mv_, v_); nan_ |= isnan(v_); }}",
            f"T {m} = -INFINITY;",
            "".join(f"{m} = fmax({m}, mv_.{l}); " for l in lanes),
            "int anynan_ = 0;",
            "".join(f"anynan_ |= nan_.{l}; " for l in lanes),
            f"if (anynan_) {m} = NAN;",
            f"for (; c_ < cols; ++c_) {{ const T v = {xl(x, 'c_')}; {row_max('v', m)} }}"])
    def vexpsum(x, m, s):
        """OpenCL setting T `s` to the sum of exp(x - m) over row `x`: two vector accumulators, then the tail
        (a fixed order, set by cols alone)."""
        return "\n    ".join([
            f"TV s0_ = (TV)(0), s1_ = (TV)(0); int e_ = 0;",
            f"for (; e_ + {2 * vw} <= cols; e_ += {2 * vw}) {{ s0_ += exp({xvl(x + ' + e_')} - {m}); "
            f"s1_ += exp({xvl(x + ' + e_ + ' + str(vw))} - {m}); }}",
            f"for (; e_ + {vw} <= cols; e_ += {vw}) s0_ += exp({xvl(x + ' + e_')} - {m});",
            f"s0_ += s1_;",
            f"T {s} = {c.hsum('s0_', vw)};",
            f"for (; e_ < cols; ++e_) {s} += exp({xl(x, 'e_')} - {m});"])
%>
% if strategy == "serial":
// isnan of a vector: a vector of ints of the element's width.
% if ctype == "double":
typedef long${vw} VI;
% else:
typedef int${vw} VI;
% endif
% if op == "cross_entropy":
__kernel void forward(__global const ${XP} *x, __global const int *target,
% if weighted:
                      __global const T *weight,
% endif
                      __global T *lse, __global T *loss, const int ignore_index, const T smooth,
                      const int rows, const int cols)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const ${XP} *xr = x + r * cols;
    const int t = target[r];
    const int ignored = t == ignore_index;
    const int valid = !ignored && t >= 0 && t < cols;
% if nll:
    const T l = 0;
% else:
    ${vmax("xr", "m")}
    ${vexpsum("xr", "m", "s")}
    const T l = m + log(s);
    lse[r] = l;
% endif
    const T wt = ignored ? (T)0 : (valid ? W(t) : (T)1);
    T row = ignored ? (T)0 : (valid ? wt * (l - ${xl('xr', 't')}) : (T)NAN);
% if smoothing:
    T sw = 0, swx = 0;
    for (int c = 0; c < cols; ++c) { const T wc = W(c); sw += wc; swx += wc * ${xl('xr', 'c')}; }
    row = ignored ? (T)0 : ((T)1 - smooth) * row + smooth / (T)cols * (l * sw - swx);
% endif
% if count:
    loss[r] = wt;
    loss[rows + r] = row;
% else:
    loss[r] = row;
% endif
}

__kernel void backward(__global const T *g, __global const ${XP} *x, __global const int *target,
% if weighted:
                       __global const T *weight,
% endif
                       __global const T *lse,
% if has_den:
                       __global const T *den,
% endif
                       __global ${XP} *gx, const T scale, const int ignore_index, const T smooth,
                       const int rows, const int cols)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const ${XP} *xr = x + r * cols;
    __global ${XP} *out = gx + r * cols;
    const int t = target[r];
    const int valid = t != ignore_index && t >= 0 && t < cols;
% if has_den:
    const T gs = valid ? G(r) * scale / den[0] : (T)0;
% else:
    const T gs = valid ? G(r) * scale : (T)0;
% endif
    const T wt = valid ? W(t) : (T)0;
% if nll:
    for (int c = 0; c < cols; ++c) ${xs('out', 'c', 'c == t ? -gs * wt : (T)0')};
% else:
    const T l = lse[r];
  % if smoothing:
    T sw = 0;
    for (int c = 0; c < cols; ++c) sw += W(c);
    const T a = gs * ((T)1 - smooth) * wt, e = gs * smooth / (T)cols;
    for (int c = 0; c < cols; ++c) {
        const T p = exp(${xl('xr', 'c')} - l);
        ${xs('out', 'c', 'a * (p - (c == t ? (T)1 : (T)0)) + e * (sw * p - W(c))')};
    }
  % else:
    const T a = gs * wt;
    int c = 0;
    for (; c + ${vw} <= cols; c += ${vw}) ${xvs('out + c', 'a * exp(' + xvl('xr + c') + ' - l)')};
    for (; c < cols; ++c) ${xs('out', 'c', 'a * exp(' + xl('xr', 'c') + ' - l)')};
    if (valid) ${xs('out', 't', 'a * (exp(' + xl('xr', 't') + ' - l) - (T)1)')};   // the target's element, as the scalar formula
  % endif
% endif
}
% else:
__kernel void forward(__global const T *x, __global T *y, const int rows, const int cols)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const T *xr = x + r * cols;
    __global T *yr = y + r * cols;
    ${vmax("xr", "m")}
    ${vexpsum("xr", "m", "s")}
    int c = 0;
  % if op == "softmax":
    const T inv = (T)1 / s;
    for (; c + ${vw} <= cols; c += ${vw}) VSTORE(exp(VLOAD(0, xr + c) - m) * inv, 0, yr + c);
    for (; c < cols; ++c) yr[c] = exp(xr[c] - m) * inv;
  % else:
    const T shift = m + log(s);
    for (; c + ${vw} <= cols; c += ${vw}) VSTORE(VLOAD(0, xr + c) - shift, 0, yr + c);
    for (; c < cols; ++c) yr[c] = xr[c] - shift;
  % endif
}

__kernel void backward(__global const T *g, __global const T *y, __global T *gx, const int rows,
                       const int cols)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const T *gr = g + r * cols;
    __global const T *yr = y + r * cols;
    __global T *out = gx + r * cols;
    TV sv = (TV)(0);
    int c = 0;
  % if op == "softmax":
    for (; c + ${vw} <= cols; c += ${vw}) sv += VLOAD(0, gr + c) * VLOAD(0, yr + c);
    T s = ${c.hsum("sv", vw)};
    for (; c < cols; ++c) s += gr[c] * yr[c];
    for (c = 0; c + ${vw} <= cols; c += ${vw}) VSTORE(VLOAD(0, yr + c) * (VLOAD(0, gr + c) - s), 0, out + c);
    for (; c < cols; ++c) out[c] = yr[c] * (gr[c] - s);
  % else:
    for (; c + ${vw} <= cols; c += ${vw}) sv += VLOAD(0, gr + c);
    T s = ${c.hsum("sv", vw)};
    for (; c < cols; ++c) s += gr[c];
    for (c = 0; c + ${vw} <= cols; c += ${vw}) VSTORE(VLOAD(0, gr + c) - exp(VLOAD(0, yr + c)) * s, 0, out + c);
    for (; c < cols; ++c) out[c] = gr[c] - exp(yr[c]) * s;
  % endif
}
% endif
% else:
% if op == "cross_entropy":
__kernel __attribute__((reqd_work_group_size(${local_size}, 1, 1)))
void forward(__global const ${XP} *x, __global const int *target,
% if weighted:
             __global const T *weight,
% endif
             __global T *lse, __global T *loss, const int ignore_index, const T smooth,
             const int rows, const int cols)
{
    __local T part[${local_size}];
    __local T part2[${local_size}];
    const int r = get_group_id(0);
    const int lid = get_local_id(0);
    __global const ${XP} *xr = x + r * cols;
    const int t = target[r];
    const int ignored = t == ignore_index;
    const int valid = !ignored && t >= 0 && t < cols;
% if nll:
    const T l = 0;
% else:
    T m = -INFINITY;
    for (int c = lid; c < cols; c += ${local_size}) { const T v = ${xl('xr', 'c')}; ${row_max("v", "m")} }
    part[lid] = m;
<%c:tree_fold size="${local_size}" args="h">const T a = part[lid], b = part[lid + ${h}]; part[lid] = (b > a || b != b) ? b : a;</%c:tree_fold>\
    m = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    T s = 0;
    for (int c = lid; c < cols; c += ${local_size}) s += exp(${xl('xr', 'c')} - m);
    part[lid] = s;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    const T l = m + log(part[0]);
% endif
% if smoothing:
    barrier(CLK_LOCAL_MEM_FENCE);
    T sw = 0, swx = 0;
    for (int c = lid; c < cols; c += ${local_size}) { const T wc = W(c); sw += wc; swx += wc * ${xl('xr', 'c')}; }
    part[lid] = sw;
    part2[lid] = swx;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}]; part2[lid] += part2[lid + ${h}];</%c:tree_fold>\
% endif
    if (lid == 0) {
        const T wt = ignored ? (T)0 : (valid ? W(t) : (T)1);
        T row = ignored ? (T)0 : (valid ? wt * (l - ${xl('xr', 't')}) : (T)NAN);
% if smoothing:
        row = ignored ? (T)0 : ((T)1 - smooth) * row + smooth / (T)cols * (l * part[0] - part2[0]);
% endif
% if not nll:
        lse[r] = l;
% endif
% if count:
        loss[r] = wt;
        loss[rows + r] = row;
% else:
        loss[r] = row;
% endif
    }
}

__kernel __attribute__((reqd_work_group_size(${local_size}, 1, 1)))
void backward(__global const T *g, __global const ${XP} *x, __global const int *target,
% if weighted:
              __global const T *weight,
% endif
              __global const T *lse,
% if has_den:
              __global const T *den,
% endif
              __global ${XP} *gx, const T scale, const int ignore_index, const T smooth,
              const int rows, const int cols)
{
    const int r = get_group_id(0);
    const int lid = get_local_id(0);
    __global const ${XP} *xr = x + r * cols;
    __global ${XP} *out = gx + r * cols;
    const int t = target[r];
    const int valid = t != ignore_index && t >= 0 && t < cols;
% if has_den:
    const T gs = valid ? G(r) * scale / den[0] : (T)0;
% else:
    const T gs = valid ? G(r) * scale : (T)0;
% endif
    const T wt = valid ? W(t) : (T)0;
% if nll:
    for (int c = lid; c < cols; c += ${local_size}) ${xs('out', 'c', 'c == t ? -gs * wt : (T)0')};
% else:
    const T l = lse[r];
  % if smoothing:
    __local T part[${local_size}];
    T sw = 0;
    for (int c = lid; c < cols; c += ${local_size}) sw += W(c);
    part[lid] = sw;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    sw = part[0];
    const T a = gs * ((T)1 - smooth) * wt, e = gs * smooth / (T)cols;
    for (int c = lid; c < cols; c += ${local_size}) {
        const T p = exp(${xl('xr', 'c')} - l);
        ${xs('out', 'c', 'a * (p - (c == t ? (T)1 : (T)0)) + e * (sw * p - W(c))')};
    }
  % else:
    const T a = gs * wt;
    for (int c = lid; c < cols; c += ${local_size}) ${xs('out', 'c', 'a * (exp(' + xl('xr', 'c') + ' - l) - (c == t ? (T)1 : (T)0))')};
  % endif
% endif
}
% else:
__kernel __attribute__((reqd_work_group_size(${local_size}, 1, 1)))
void forward(__global const T *x, __global T *y, const int rows, const int cols)
{
    __local T part[${local_size}];
    const int r = get_group_id(0);
    const int lid = get_local_id(0);
    __global const T *xr = x + r * cols;
    __global T *yr = y + r * cols;
    T m = -INFINITY;
    for (int c = lid; c < cols; c += ${local_size}) { const T v = xr[c]; ${row_max("v", "m")} }
    part[lid] = m;
<%c:tree_fold size="${local_size}" args="h">const T a = part[lid], b = part[lid + ${h}]; part[lid] = (b > a || b != b) ? b : a;</%c:tree_fold>\
    m = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    T s = 0;
    for (int c = lid; c < cols; c += ${local_size}) s += exp(xr[c] - m);
    part[lid] = s;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    s = part[0];
  % if op == "softmax":
    const T inv = (T)1 / s;
    for (int c = lid; c < cols; c += ${local_size}) yr[c] = exp(xr[c] - m) * inv;
  % else:
    const T shift = m + log(s);
    for (int c = lid; c < cols; c += ${local_size}) yr[c] = xr[c] - shift;
  % endif
}

__kernel __attribute__((reqd_work_group_size(${local_size}, 1, 1)))
void backward(__global const T *g, __global const T *y, __global T *gx, const int rows, const int cols)
{
    __local T part[${local_size}];
    const int r = get_group_id(0);
    const int lid = get_local_id(0);
    __global const T *gr = g + r * cols;
    __global const T *yr = y + r * cols;
    __global T *out = gx + r * cols;
    T s = 0;
  % if op == "softmax":
    for (int c = lid; c < cols; c += ${local_size}) s += gr[c] * yr[c];
  % else:
    for (int c = lid; c < cols; c += ${local_size}) s += gr[c];
  % endif
    part[lid] = s;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    s = part[0];
  % if op == "softmax":
    for (int c = lid; c < cols; c += ${local_size}) out[c] = yr[c] * (gr[c] - s);
  % else:
    for (int c = lid; c < cols; c += ${local_size}) out[c] = gr[c] - exp(yr[c]) * s;
  % endif
}
% endif
% endif
