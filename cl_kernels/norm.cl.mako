## Layer norm and batch norm, forward and backward, one kernel each way (see functions/norm.py).
## layer_norm: x is [rows, cols], each row normalised over its cols, with an optional per-column weight
## and bias. The forward saves each row's mean and 1/std. The backward writes dx row by row and, for the
## weight and bias, each row block's column sums of g * xhat and g into partial_w[block, cols] and
## partial_b[block, cols] (a column belongs to one work-item, so no two write it); the caller sums the
## blocks (a column reduction of each).
## batch_norm: x is [N, C, S] (S the spatial size, 1 for [N, C]); channel c's statistics run over N*S
## values. Training uses the batch's mean and biased variance and updates the running statistics in
## place (momentum, unbiased variance, as torch); eval uses the running statistics.
## strategy "serial" (CPUs): a work-item per row (block, channel), loops over contiguous runs done
## ${vw} elements at a time in vector registers, the tail one by one.
## strategy "local" (GPUs): a work-group of ${local_size} work-items per row (block, channel), combined
## in local memory along a fixed tree. Every sum is folded in an order fixed by the shape alone.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype, vector=vw)}\
% if context.get("aligned", False):
// Every row starts on a vector boundary (the caller's promise: cols a multiple of vw, buffers from
// their start), so vectors are read and written through pointers: PoCL leaves vloadn/vstoren as calls.
#undef VLOAD
#undef VSTORE
#define VLOAD(i, p) (*(__global const TV *)((p) + (i) * ${vw}))
#define VSTORE(v, i, p) (*(__global TV *)((p) + (i) * ${vw}) = (v))
% endif
<%
    UNROLL = 4
    def row_sums(sums, init, body, start="0", cols="cols", var="c"):
        """OpenCL that sets T scalars `sums` to the row sums of the vector expressions `body(c)` (one per
        sum), with UNROLL independent accumulators each, then the vector remainder and the scalar tail
        (`var` names the column, `cols` the length)
        (`init` gives each scalar's tail term for column c). Fixed order: it depends on cols only."""
        lines = []
        for name in sums:
            lines.append("TV " + ", ".join(f"{name}_v{u} = (TV)(0)" for u in range(UNROLL)) + ";")
        lines.append(f"int {var}_ = {start};")
        lines.append(f"for (; {var}_ + {UNROLL * vw} <= {cols}; {var}_ += {UNROLL * vw}) {{")
        for u in range(UNROLL):
            lines.append(f"    {{ const int {var} = {var}_ + " + str(u * vw) + "; " +
                         " ".join(f"{name}_v{u} += {expr};" for name, expr in zip(sums, body(var))) + " }")
        lines.append("}")
        lines.append(f"for (; {var}_ + {vw} <= {cols}; {var}_ += {vw}) {{ const int {var} = {var}_; " +
                     " ".join(f"{name}_v0 += {expr};" for name, expr in zip(sums, body(var))) + " }")
        for name in sums:
            total = " + ".join(f"{name}_v{u}" for u in range(UNROLL))
            lines.append(f"T {name} = {c.hsum('(' + total + ')', vw)};")
        lines.append(f"for (; {var}_ < {cols}; ++{var}_) {{ const int {var} = {var}_; " +
                     " ".join(f"{name} += {expr};" for name, expr in zip(sums, init(var))) + " }")
        return "\n    ".join(lines)
%>
% if kind == "layer_norm":
__kernel
% if strategy == "local":
__attribute__((reqd_work_group_size(${local_size}, 1, 1)))
% endif
void forward(__global const T *x,
% if has_weight:
             __global const T *w,
% endif
% if has_bias:
             __global const T *b,
% endif
             __global T *y, __global T *mean_out, __global T *rstd_out, const T eps,
             const int rows, const int cols, const int per_block)
{
% if strategy == "serial":
    // A block of rows per work-item: a few dozen work-groups rather than one per row, whose
    // scheduling PoCL pays for one by one.
    const int r0 = get_global_id(0) * per_block;
    const int r1 = min(rows, r0 + per_block);
    for (int r = r0; r < r1; ++r) {
    __global const T *xr = x + (size_t)r * cols;
    __global T *yr = y + (size_t)r * cols;
    T mean, var, corr;
    const int vend = cols - cols % ${vw};
    {
    ${row_sums(["s"], lambda c: [f"xr[{c}]"], lambda c: [f"VLOAD(0, xr + {c})"])}
    mean = s / (T)cols;
    }
    {
    // The corrected two-pass sums (as batch_norm's): d = x - mean with the rounded mean, sum d is its
    // error times cols, taken out of both the variance and the normalised values.
    ${row_sums(["ss", "sd"], lambda c: [f"(xr[{c}] - mean) * (xr[{c}] - mean)", f"(xr[{c}] - mean)"],
               lambda c: [f"(VLOAD(0, xr + {c}) - mean) * (VLOAD(0, xr + {c}) - mean)", f"(VLOAD(0, xr + {c}) - mean)"])}
    corr = sd / (T)cols;
    var = ss - sd * corr;
    }
    const T rstd = (T)1 / sqrt(var / (T)cols + eps);
    for (int c = 0; c < vend; c += ${vw}) {
        TV v = ((VLOAD(0, xr + c) - mean) - corr) * rstd;
  % if has_weight:
        v *= VLOAD(0, w + c);
  % endif
  % if has_bias:
        v += VLOAD(0, b + c);
  % endif
        VSTORE(v, 0, yr + c);
    }
    for (int c = vend; c < cols; ++c) {
        T v = ((xr[c] - mean) - corr) * rstd;
  % if has_weight:
        v *= w[c];
  % endif
  % if has_bias:
        v += b[c];
  % endif
        yr[c] = v;
    }
    mean_out[r] = mean + corr;
    rstd_out[r] = rstd;
    }
% else:
    __local T part[${local_size}];
    const int r = get_group_id(0);
    const int lid = get_local_id(0);
    __global const T *xr = x + (size_t)r * cols;
    __global T *yr = y + (size_t)r * cols;
    T s = 0;
    for (int c = lid; c < cols; c += ${local_size}) s += xr[c];
    part[lid] = s;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    const T mean = part[0] / (T)cols;
    barrier(CLK_LOCAL_MEM_FENCE);
    T sd = 0;
    for (int c = lid; c < cols; c += ${local_size}) sd += xr[c] - mean;
    part[lid] = sd;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    const T corr = part[0] / (T)cols;   // the rounded mean's error (see the serial form)
    barrier(CLK_LOCAL_MEM_FENCE);
    T ss = 0;
    for (int c = lid; c < cols; c += ${local_size}) { const T d = (xr[c] - mean) - corr; ss += d * d; }
    part[lid] = ss;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    const T rstd = (T)1 / sqrt(part[0] / (T)cols + eps);
    for (int c = lid; c < cols; c += ${local_size}) {
        T v = ((xr[c] - mean) - corr) * rstd;
  % if has_weight:
        v *= w[c];
  % endif
  % if has_bias:
        v += b[c];
  % endif
        yr[c] = v;
    }
    if (lid == 0) { mean_out[r] = mean + corr; rstd_out[r] = rstd; }
% endif
}

## Rows [blk * per_block, ...) of g, x: dx, and (when affine) partial_w[blk][0..cols) = sum g * xhat,
## partial_b[blk][0..cols) = sum g.
__kernel
% if strategy == "local":
__attribute__((reqd_work_group_size(${local_size}, 1, 1)))
% endif
void backward(__global const T *g, __global const T *x, __global const T *mean_in, __global const T *rstd_in,
% if has_weight:
              __global const T *w,
% endif
% if affine:
              __global T *partial_w, __global T *partial_b,
% endif
              __global T *dx, const int rows, const int cols, const int per_block)
{
% if strategy == "serial":
    const int blk = get_global_id(0);
    const int r0 = blk * per_block;
    if (r0 >= rows) return;
    const int r1 = min(rows, r0 + per_block);
    const int vend = cols - cols % ${vw};
  % if affine:
    __global T *pw = partial_w + (size_t)blk * cols;
    __global T *pb = partial_b + (size_t)blk * cols;
    for (int c = 0; c < cols; ++c) { pw[c] = 0; pb[c] = 0; }
  % endif
    const T inv_n = (T)1 / (T)cols;
<%
    # With 512-bit vectors (AVX-512: 32 vector registers) rows go 4 at a time: their column sums for the
    # weight and bias gradients are added to the block's partials in one read-modify-write per column
    # instead of one per row (that traffic cost as much as the rest of the kernel on the Xeon). With
    # 16 registers (AVX2 and narrower) the 4 rows' means, scales and sums no longer fit and spill: one
    # row at a time is twice as fast there (backward of [4096, 768] on a 2-core EPYC: 0.57-0.68 against
    # 1.09-1.24 ms). The partials see the rows in the same order either way, so the same bits. A
    # shorter last group takes the rows one by one. (The width stands in for the register file, as in
    # matmul.py. It is not the whole story: Intel's runtime on the same EPYC, which has AVX-512 and
    # whose target takes 16 floats, ran one row at a time 25% faster too, 0.81-0.88 against 1.14 ms;
    # the 4-row gain was measured with PoCL on a Xeon.)
    RB = 4 if affine and vw * (8 if ctype == "double" else 4) >= 64 else 1
    def gw_v(k, c):
        return f"VLOAD(0, gr{k} + {c}) * VLOAD(0, w + {c})" if has_weight else f"VLOAD(0, gr{k} + {c})"
    def gw_s(k, c):
        return f"gr{k}[{c}] * w[{c}]" if has_weight else f"gr{k}[{c}]"
%>
<%def name="rows_at(count, first)">
  % for k in range(count):
        __global const T *gr${k} = g + (size_t)(${first} + ${k}) * cols;
        __global const T *xr${k} = x + (size_t)(${first} + ${k}) * cols;
        __global T *dr${k} = dx + (size_t)(${first} + ${k}) * cols;
        const T mean${k} = mean_in[${first} + ${k}], rstd${k} = rstd_in[${first} + ${k}];
        T m1_${k}, m2_${k};
        {
        ${row_sums(["s1", "s2"], lambda c, k=k: [gw_s(k, c), f"{gw_s(k, c)} * (xr{k}[{c}] - mean{k}) * rstd{k}"],
                   lambda c, k=k: [gw_v(k, c), f"{gw_v(k, c)} * ((VLOAD(0, xr{k} + {c}) - mean{k}) * rstd{k})"])}
        m1_${k} = s1 * inv_n; m2_${k} = s2 * inv_n;
        }
  % endfor
        for (int c = 0; c < vend; c += ${vw}) {
  % if affine:
            TV accw = VLOAD(0, pw + c), accb = VLOAD(0, pb + c);
  % endif
  % for k in range(count):
            {
                const TV gv = VLOAD(0, gr${k} + c);
    % if has_weight:
                const TV gw = gv * VLOAD(0, w + c);
    % else:
                const TV gw = gv;
    % endif
                const TV xh = (VLOAD(0, xr${k} + c) - mean${k}) * rstd${k};
                VSTORE(rstd${k} * (gw - m1_${k} - xh * m2_${k}), 0, dr${k} + c);
    % if affine:
                accw += gv * xh;
                accb += gv;
    % endif
            }
  % endfor
  % if affine:
            VSTORE(accw, 0, pw + c);
            VSTORE(accb, 0, pb + c);
  % endif
        }
        for (int c = vend; c < cols; ++c) {
  % if affine:
            T accw = pw[c], accb = pb[c];
  % endif
  % for k in range(count):
            {
                const T gv = gr${k}[c];
    % if has_weight:
                const T gw = gv * w[c];
    % else:
                const T gw = gv;
    % endif
                const T xh = (xr${k}[c] - mean${k}) * rstd${k};
                dr${k}[c] = rstd${k} * (gw - m1_${k} - xh * m2_${k});
    % if affine:
                accw += gv * xh;
                accb += gv;
    % endif
            }
  % endfor
  % if affine:
            pw[c] = accw;
            pb[c] = accb;
  % endif
        }
</%def>
    int r = r0;
    for (; r + ${RB} <= r1; r += ${RB}) {
${rows_at(RB, "r")}
    }
  % if RB > 1:
    for (; r < r1; ++r) {
${rows_at(1, "r")}
    }
  % endif
% else:
    __local T p1[${local_size}];
    __local T p2[${local_size}];
    const int blk = get_group_id(0);
    const int lid = get_local_id(0);
    const int r0 = blk * per_block;
    const int r1 = min(rows, r0 + per_block);
  % if affine:
    __global T *pw = partial_w + (size_t)blk * cols;
    __global T *pb = partial_b + (size_t)blk * cols;
    for (int c = lid; c < cols; c += ${local_size}) { pw[c] = 0; pb[c] = 0; }
  % endif
    const T inv_n = (T)1 / (T)cols;
    for (int r = r0; r < r1; ++r) {
        __global const T *gr = g + (size_t)r * cols;
        __global const T *xr = x + (size_t)r * cols;
        __global T *dr = dx + (size_t)r * cols;
        const T mean = mean_in[r], rstd = rstd_in[r];
        T s1 = 0, s2 = 0;
        for (int c = lid; c < cols; c += ${local_size}) {
  % if has_weight:
            const T gw = gr[c] * w[c];
  % else:
            const T gw = gr[c];
  % endif
            s1 += gw;
            s2 += gw * (xr[c] - mean) * rstd;
        }
        p1[lid] = s1;
        p2[lid] = s2;
<%c:tree_fold size="${local_size}" args="h">p1[lid] += p1[lid + ${h}]; p2[lid] += p2[lid + ${h}];</%c:tree_fold>\
        const T m1 = p1[0] * inv_n, m2 = p2[0] * inv_n;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int c = lid; c < cols; c += ${local_size}) {
            const T gv = gr[c];
  % if has_weight:
            const T gw = gv * w[c];
  % else:
            const T gw = gv;
  % endif
            const T xh = (xr[c] - mean) * rstd;
            dr[c] = rstd * (gw - m1 - xh * m2);
  % if affine:
            pw[c] += gv * xh;
            pb[c] += gv;
  % endif
        }
    }
% endif
}
% else:
## batch_norm. Element (n, c, s) of x lives at (n * C + c) * S + s.
__kernel
% if strategy == "local":
__attribute__((reqd_work_group_size(${local_size}, 1, 1)))
% endif
void forward(__global const T *x,
% if has_weight:
             __global const T *w,
% endif
% if has_bias:
             __global const T *b,
% endif
% if has_running:
             __global T *running_mean, __global T *running_var,
  % if cumulative:
             __global const long *batches,
  % endif
% endif
             __global T *y, __global T *mean_out, __global T *invstd_out, const T eps, const T momentum,
             const int N, const int C, const int S)
{
<%
    # One loop over channel c's N*S values; `body` sees the value's index in `i`.
    def each(body):
        if strategy == "serial":
            return (f"for (int n = 0; n < N; ++n) {{ const size_t base = ((size_t)n * C + c) * S; "
                    f"for (int s = 0; s < S; ++s) {{ const size_t i = base + s; {body} }} }}")
        return (f"for (int k = lid; k < M; k += {local_size}) {{ const int n = k / S, s = k - n * S; "
                f"const size_t i = ((size_t)n * C + c) * S + s; {body} }}")
%>
% if strategy == "serial":
    const int c = get_global_id(0);
    if (c >= C) return;
% else:
    __local T part[${local_size}];
    const int c = get_group_id(0);
    const int lid = get_local_id(0);
% endif
    const int M = N * S;
% if training:
    // Sums of x - K, K the channel's first value (0 if it is not finite): the shift removes the
    // cancellation a large mean causes (float32 at mean 1e3 or 1e4). Serial: a vector partial sum
    // per sample n (blocked summation). Then the corrected two-pass variance (sum d^2 - (sum d)^2 / M)
    // over d = x - K - off, which takes out the error left in off to first order.
    const T K0 = x[(size_t)c * S];
    const T K = isfinite(K0) ? K0 : (T)0;
  % if strategy == "serial":
    T s1 = 0;
    for (int n = 0; n < N; ++n) {
        __global const T *xs = x + ((size_t)n * C + c) * S;
        {
        ${row_sums(["p"], lambda j: [f"xs[{j}] - K"], lambda j: [f"VLOAD(0, xs + {j}) - K"], cols="S", var="j")}
        s1 += p;
        }
    }
  % else:
    T s1 = 0;
    ${each("s1 += x[i] - K;")}
    part[lid] = s1;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    s1 = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
  % endif
    const T off = s1 / (T)M;
    const T mean = K + off;
  % if strategy == "serial":
    T s2 = 0, sd = 0;
    for (int n = 0; n < N; ++n) {
        __global const T *xs = x + ((size_t)n * C + c) * S;
        {
        ${row_sums(["p2", "pd"], lambda j: [f"((xs[{j}] - K) - off) * ((xs[{j}] - K) - off)", f"(xs[{j}] - K) - off"],
                   lambda j: [f"((VLOAD(0, xs + {j}) - K) - off) * ((VLOAD(0, xs + {j}) - K) - off)",
                              f"(VLOAD(0, xs + {j}) - K) - off"], cols="S", var="j")}
        s2 += p2;
        sd += pd;
        }
    }
  % else:
    T s2 = 0, sd = 0;
    ${each("const T d = (x[i] - K) - off; s2 += d * d; sd += d;")}
    part[lid] = s2;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    s2 = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    part[lid] = sd;
<%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>\
    sd = part[0];
  % endif
    const T dev2 = max(s2 - sd * (sd / (T)M), (T)0);
    const T var = dev2 / (T)M;
    const T invstd = (T)1 / sqrt(var + eps);
    // The output's deviations: x - K - off keeps the digits a rounded mean loses when the mean is
    // large against the spread (x - K is then exact); otherwise x - mean rounds once, not twice.
    const int far_ = fabs(mean) > (T)0.25 * sqrt(var);
    const T Ko = far_ ? K : mean, offo = far_ ? off : (T)0;
  % if has_running:
  % if strategy == "local":
    if (lid == 0) {
  % endif
  % if cumulative:
    const T f = (T)1 / (T)batches[0];
  % else:
    const T f = momentum;
  % endif
    running_mean[c] = ((T)1 - f) * running_mean[c] + f * mean;
    running_var[c] = ((T)1 - f) * running_var[c] + f * (M > 1 ? dev2 / (T)(M - 1) : (T)NAN);
  % if strategy == "local":
    }
  % endif
  % endif
% else:
    const T mean = running_mean[c];
    const T Ko = mean, offo = 0;
    const T invstd = (T)1 / sqrt(running_var[c] + eps);
% endif
% if has_weight:
    const T scale = invstd * w[c];
% else:
    const T scale = invstd;
% endif
% if has_bias:
    const T shift = b[c];
% else:
    const T shift = 0;
% endif
    // (x - mean) * scale, not x * scale - mean * scale, which cancels when the mean is large.
    ${each("y[i] = ((x[i] - Ko) - offo) * scale + shift;")}
% if strategy == "local":
    if (lid == 0) { mean_out[c] = mean; invstd_out[c] = invstd; }
% else:
    mean_out[c] = mean;
    invstd_out[c] = invstd;
% endif
}

## dx, and dweight[c] = sum g * xhat, dbias[c] = sum g (training: with the batch statistics' terms).
__kernel
% if strategy == "local":
__attribute__((reqd_work_group_size(${local_size}, 1, 1)))
% endif
void backward(__global const T *g, __global const T *x, __global const T *mean_in, __global const T *invstd_in,
% if has_weight:
              __global const T *w,
% endif
              __global T *dx, __global T *dw, __global T *db, const int N, const int C, const int S)
{
% if strategy == "serial":
    const int c = get_global_id(0);
    if (c >= C) return;
% else:
    __local T p1[${local_size}];
    __local T p2[${local_size}];
    const int c = get_group_id(0);
    const int lid = get_local_id(0);
% endif
    const int M = N * S;
    const T mean = mean_in[c], invstd = invstd_in[c];
    T sg = 0, sgx = 0;
    ${each("const T gv = g[i]; sg += gv; sgx += gv * (x[i] - mean);")}
% if strategy == "local":
    p1[lid] = sg;
    p2[lid] = sgx;
<%c:tree_fold size="${local_size}" args="h">p1[lid] += p1[lid + ${h}]; p2[lid] += p2[lid + ${h}];</%c:tree_fold>\
    sg = p1[0];
    sgx = p2[0];
% endif
    sgx *= invstd;
% if strategy == "local":
    if (lid == 0) { dw[c] = sgx; db[c] = sg; }
% else:
    dw[c] = sgx;
    db[c] = sg;
% endif
% if has_weight:
    const T kscale = invstd * w[c];
% else:
    const T kscale = invstd;
% endif
% if training:
    const T m1 = sg / (T)M, m2 = sgx / (T)M;
    ${each("dx[i] = kscale * (g[i] - m1 - (x[i] - mean) * invstd * m2);")}
% else:
    ${each("dx[i] = kscale * g[i];")}
% endif
}
% endif
