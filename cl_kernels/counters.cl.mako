## Replay state kept on the device: 64-bit counters stored as (low, high) pairs of 32-bit words,
## advanced by the device itself so that a captured replay moves them on without any host patching.
## The optimisers keep one step count per parameter in a table (advance_counters over the slots of
## the parameters a step updates); the random generator keeps (seed, offset) and advances the offset
## by the blocks a draw used. No 64-bit integers: devices without full ulong support work too.
##
## The advance is a kernel of its own, launched once before the kernels that read the counters: in
## one kernel, a work-group could not know that every other one has read the old value before it
## writes the new one (OpenCL 1.2 has no grid-wide barrier).
##
## No template parameters: one build serves every dtype and every shape.

// counters[2 * (first + i)], counters[2 * (first + i) + 1] += (add_lo, add_hi) for i in [0, count).
inline void advance(__global uint *counters, const int first, const int count, const uint add_lo,
                    const uint add_hi)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    const int at = 2 * (first + i);
    const uint lo = counters[at] + add_lo;
    counters[at + 1] += add_hi + (lo < add_lo ? 1u : 0u);
    counters[at] = lo;
}

__kernel void advance_counters(__global uint *counters, const int first, const int count,
                               const uint add_lo, const uint add_hi)
{
    advance(counters, first, count, add_lo, add_hi);
}

// The same, unless the gradient scaler found an inf or a NaN this step: a step it skips must not
// count, or Adam's bias corrections would run ahead of torch's (which never calls the skipped step).
__kernel void advance_counters_unless(__global uint *counters, const int first, const int count,
                                      const uint add_lo, const uint add_hi, __global const float *found_inf)
{
    if (found_inf[0] != 0.0f) return;
    advance(counters, first, count, add_lo, add_hi);
}
