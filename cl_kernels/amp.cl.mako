## The gradient scaler's kernels (GradScaler in amp.py). The scale, the growth tracker and the found-inf
## flag live in one-element device buffers, so that unscaling, the skip of a step and the scale update
## all happen on the device: a scaled training step reads nothing back and can be captured.
##
## Template parameters:
##   ctype: the gradient's element type, "float" or "double" (16-bit gradients run on float32 copies)
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}

// g *= 1 / scale over the `chunk` elements of each work-item, and found_inf = 1 when any element was
// not finite. Every work-item that finds one writes the same 1.0f, so the writes need no order.
__kernel void unscale_check(__global T *g, __global const float *scale, __global float *found_inf,
                            const int n, const int chunk)
{
    const T inv = (T)(1.0f / scale[0]);
    const int start = get_global_id(0) * chunk;
    const int end = min(n, start + chunk);
    int bad = 0;
    for (int i = start; i < end; ++i) {
        const T v = g[i];
        bad |= !isfinite(v);
        g[i] = v * inv;
    }
    if (bad) found_inf[0] = 1.0f;
}

// torch's scale update, by one work-item: after a step with an inf or a NaN, scale *= backoff and the
// run of good steps restarts; after growth_interval good steps in a row, scale *= growth (kept only if
// finite) and the run restarts.
__kernel void update_scale(__global float *scale, __global int *growth_tracker, __global const float *found_inf,
                           const float growth_factor, const float backoff_factor, const int growth_interval)
{
    if (get_global_id(0) != 0) return;
    if (found_inf[0] != 0.0f) {
        scale[0] *= backoff_factor;
        growth_tracker[0] = 0;
        return;
    }
    const int good = growth_tracker[0] + 1;
    if (good == growth_interval) {
        const float grown = scale[0] * growth_factor;
        if (isfinite(grown)) scale[0] = grown;
        growth_tracker[0] = 0;
    } else {
        growth_tracker[0] = good;
    }
}
