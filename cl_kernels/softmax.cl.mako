## Softmax and log-softmax along the last axis of a [rows, cols] tensor, forward and backward, one
## pass per row instead of a max, an exp, a sum and a normalisation kernel each. op "cross_entropy"
## fuses log-softmax with picking each row's target: the forward writes each row's loss and its
## log-sum-exp, the backward g * scale * (softmax - onehot) from the logits and that log-sum-exp.
## A target outside [0, cols) makes its row's loss NaN and its gradient 0.
## strategy "serial" (CPUs): one work-item per row, plain loops in a fixed order.
## strategy "local" (GPUs): one work-group of ${local_size} work-items per row, combined in local
## memory along a fixed tree. Either way the result does not depend on timing.
% if ctype == "double":
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
% endif
typedef ${ctype} T;
<%
    def row_max(v, m):   # NaN wins, as in numpy
        return f"{m} = ({v} > {m} || {v} != {v}) ? {v} : {m};"
%>
% if strategy == "serial":
% if op == "cross_entropy":
__kernel void forward(__global const T *x, __global const int *target, __global T *lse, __global T *loss,
                      const int rows, const int cols)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const T *xr = x + r * cols;
    T m = -INFINITY;
    for (int c = 0; c < cols; ++c) { const T v = xr[c]; ${row_max("v", "m")} }
    T s = 0;
    for (int c = 0; c < cols; ++c) s += exp(xr[c] - m);
    const T l = m + log(s);
    const int t = target[r];
    lse[r] = l;
    loss[r] = (t < 0 || t >= cols) ? (T)NAN : l - xr[t];
}

__kernel void backward(__global const T *g, __global const T *x, __global const int *target,
                       __global const T *lse, __global T *gx, const T scale, const int rows, const int cols)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const T *xr = x + r * cols;
    __global T *out = gx + r * cols;
    const int t = target[r];
    const T gs = (t < 0 || t >= cols) ? (T)0 : g[0] * scale;
    const T l = lse[r];
    for (int c = 0; c < cols; ++c) out[c] = gs * (exp(xr[c] - l) - (c == t ? (T)1 : (T)0));
}
% else:
__kernel void forward(__global const T *x, __global T *y, const int rows, const int cols)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const T *xr = x + r * cols;
    __global T *yr = y + r * cols;
    T m = -INFINITY;
    for (int c = 0; c < cols; ++c) { const T v = xr[c]; ${row_max("v", "m")} }
    T s = 0;
  % if op == "softmax":
    for (int c = 0; c < cols; ++c) { const T e = exp(xr[c] - m); yr[c] = e; s += e; }
    const T inv = (T)1 / s;
    for (int c = 0; c < cols; ++c) yr[c] *= inv;
  % else:
    for (int c = 0; c < cols; ++c) s += exp(xr[c] - m);
    const T shift = m + log(s);
    for (int c = 0; c < cols; ++c) yr[c] = xr[c] - shift;
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
    T s = 0;
  % if op == "softmax":
    for (int c = 0; c < cols; ++c) s += gr[c] * yr[c];
    for (int c = 0; c < cols; ++c) out[c] = yr[c] * (gr[c] - s);
  % else:
    for (int c = 0; c < cols; ++c) s += gr[c];
    for (int c = 0; c < cols; ++c) out[c] = gr[c] - exp(yr[c]) * s;
  % endif
}
% endif
% else:
<%
    halves = [2 ** k for k in reversed(range(local_size.bit_length() - 1))]
%>
% if op == "cross_entropy":
__kernel __attribute__((reqd_work_group_size(${local_size}, 1, 1)))
void forward(__global const T *x, __global const int *target, __global T *lse, __global T *loss,
             const int rows, const int cols)
{
    __local T part[${local_size}];
    const int r = get_group_id(0);
    const int lid = get_local_id(0);
    __global const T *xr = x + r * cols;
    T m = -INFINITY;
    for (int c = lid; c < cols; c += ${local_size}) { const T v = xr[c]; ${row_max("v", "m")} }
    part[lid] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
% for h in halves:
    if (lid < ${h}) { const T a = part[lid], b = part[lid + ${h}]; part[lid] = (b > a || b != b) ? b : a; }
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
    m = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    T s = 0;
    for (int c = lid; c < cols; c += ${local_size}) s += exp(xr[c] - m);
    part[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
% for h in halves:
    if (lid < ${h}) part[lid] += part[lid + ${h}];
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
    if (lid == 0) {
        const T l = m + log(part[0]);
        const int t = target[r];
        lse[r] = l;
        loss[r] = (t < 0 || t >= cols) ? (T)NAN : l - xr[t];
    }
}

__kernel __attribute__((reqd_work_group_size(${local_size}, 1, 1)))
void backward(__global const T *g, __global const T *x, __global const int *target,
              __global const T *lse, __global T *gx, const T scale, const int rows, const int cols)
{
    const int r = get_group_id(0);
    const int lid = get_local_id(0);
    __global const T *xr = x + r * cols;
    __global T *out = gx + r * cols;
    const int t = target[r];
    const T gs = (t < 0 || t >= cols) ? (T)0 : g[0] * scale;
    const T l = lse[r];
    for (int c = lid; c < cols; c += ${local_size}) out[c] = gs * (exp(xr[c] - l) - (c == t ? (T)1 : (T)0));
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
    barrier(CLK_LOCAL_MEM_FENCE);
% for h in halves:
    if (lid < ${h}) { const T a = part[lid], b = part[lid + ${h}]; part[lid] = (b > a || b != b) ? b : a; }
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
    m = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    T s = 0;
    for (int c = lid; c < cols; c += ${local_size}) s += exp(xr[c] - m);
    part[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
% for h in halves:
    if (lid < ${h}) part[lid] += part[lid + ${h}];
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
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
    barrier(CLK_LOCAL_MEM_FENCE);
% for h in halves:
    if (lid < ${h}) part[lid] += part[lid + ${h}];
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
    s = part[0];
  % if op == "softmax":
    for (int c = lid; c < cols; c += ${local_size}) out[c] = yr[c] * (gr[c] - s);
  % else:
    for (int c = lid; c < cols; c += ${local_size}) out[c] = gr[c] - exp(yr[c]) * s;
  % endif
}
% endif
% endif
