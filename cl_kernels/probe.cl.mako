## The device target's probes (target.py). Each is built and run on its own, and its numbers checked:
## a build that "succeeds" may still hold no kernel or compute garbage (PoCL reporting AVX-512 widths
## that its LLVM cannot lower), so the target keeps only what was seen to work.
<%namespace name="c" file="common.mako"/>\
<%namespace name="erf" file="erf.mako"/>\
${c.preamble(ctype, vector=vw)}\
% if which == "vector":

// out[r, :] = sum_k b[k, r] * a[k, :] for four rows r, ${vw} columns per work-item: the register-blocked
// multiply-add of the blocked matmul, plus the vector builtins the row kernels use (fmax, exp, isnan).
__kernel void probe_vector(__global const T *a, __global const T *b, __global T *out,
                           const int n_vec, const int k_len)
{
    const int i = get_global_id(0);
    TV acc0 = (TV)(0), acc1 = (TV)(0), acc2 = (TV)(0), acc3 = (TV)(0);
    TV top = (TV)(-1);
    for (int k = 0; k < k_len; ++k) {
        const TV x = VLOAD(k * n_vec + i, a);
        acc0 = fma(x, (TV)(b[4 * k + 0]), acc0);
        acc1 = fma(x, (TV)(b[4 * k + 1]), acc1);
        acc2 = mad(x, (TV)(b[4 * k + 2]), acc2);
        acc3 += x * (TV)(b[4 * k + 3]);
        top = fmax(top, x);
    }
    // exp(0) == 1 exactly and isnan is false: the sums stay exact small integers when the builtins work.
    acc3 += exp(top - top) - (TV)(1);
    acc3 = isnan(acc3) ? (TV)(-7) : acc3;
    VSTORE(acc0, i, out);
    VSTORE(acc1, n_vec + i, out);
    VSTORE(acc2, 2 * n_vec + i, out);
    VSTORE(acc3, 3 * n_vec + i, out);
}
% elif which == "sub_buffers":

// Read from a plain buffer, written through a sub-buffer (restrict pointers, a one-item work-group, as
// the CPU kernels are): whether a capture may pack its temporaries at offsets of one buffer.
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void probe_sub_buffers(__global const float *restrict a, __global float *restrict b)
{
    const int i = get_global_id(0);
    b[i] = 2.0f * a[i];
}
% elif which == "erf":

// erf and erfc of x: the device's builtins, and the functions written out in erf.mako, which the
// target chooses where they are correct and clearly faster (PoCL's CPU builtins are library calls).
// Each work-item a run of `chunk` vectors, as the CPU elementwise kernels walk theirs (1 on GPUs).
__kernel void probe_erf_builtin(__global const T *x, __global T *out, const int n_vec, const int chunk)
{
    const int end = min(n_vec, ((int)get_global_id(0) + 1) * chunk);
    for (int i = get_global_id(0) * chunk; i < end; ++i) {
        const TV v = VLOAD(i, x);
        VSTORE(erf(v), i, out);
        VSTORE(erfc(v), n_vec + i, out);
    }
}
${erf.functions(vw)}
__kernel void probe_erf_own(__global const T *x, __global T *out, const int n_vec, const int chunk)
{
    const int end = min(n_vec, ((int)get_global_id(0) + 1) * chunk);
    for (int i = get_global_id(0) * chunk; i < end; ++i) {
        const TV v = VLOAD(i, x);
        VSTORE(${erf.rename("erf(v)", vw)}, i, out);
        VSTORE(${erf.rename("erfc(v)", vw)}, n_vec + i, out);
    }
}
% else:

// A tree sum in local memory with barriers, as the GPU-strategy reductions do: the kernel's own
// CL_KERNEL_WORK_GROUP_SIZE says how many work-items such a kernel may really have.
__kernel void probe_local(__global const float *x, __global float *out, __local float *scratch)
{
    const int l = get_local_id(0), n = get_local_size(0);
    scratch[l] = x[get_global_id(0)];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = n / 2; s > 0; s >>= 1) {
        if (l < s) scratch[l] += scratch[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0) out[get_group_id(0)] = scratch[0];
}
% endif
