## Random permutations on the device: sort random keys, carrying each element's index along.
##
## `keys` turns 2n uniform floats from the Philox generator (random.py) into n 48-bit keys (two
## 24-bit halves: each float is k * 2^-24 exactly, so the conversion is exact) and pads the arrays to
## a power of two `size` with keys that sort last. `bitonic_step` is one compare-exchange pass of a
## bitonic sorting network; the host launches the log2(size) * (log2(size) + 1) / 2 passes in order.
## Ties between keys (rare: 48 bits) are broken by the index, so the order is total and the result
## the same on every device. Only 32-bit integers are used (no ulong), as in philox.cl.mako.
##
## Why a sorting network: every pass is data-parallel with a fixed pattern (no atomics, no
## host-side decisions), so it needs no device read and replays under capture; a Fisher-Yates
## shuffle is sequential. Work per epoch is O(n log^2 n), a few milliseconds for 10^5 samples.
## No template parameters: one build serves every size, seed and epoch.

__kernel void keys(__global const float *u, __global uint *hi, __global uint *lo, __global int *idx,
                   const int n, const int size)
{
    const int i = get_global_id(0);
    if (i >= size) return;
    if (i < n) {
        hi[i] = (uint)(u[2 * i] * 16777216.0f);
        lo[i] = (uint)(u[2 * i + 1] * 16777216.0f);
    } else {                       // above every 24-bit key, and their indices above every real one
        hi[i] = 0xffffffffu;
        lo[i] = 0xffffffffu;
    }
    idx[i] = i;
}

// Whether (h1, l1, i1) comes after (h2, l2, i2).
inline int after(const uint h1, const uint l1, const int i1, const uint h2, const uint l2, const int i2)
{
    return h1 != h2 ? h1 > h2 : (l1 != l2 ? l1 > l2 : i1 > i2);
}

// One pass of the network for block size k and distance j: work-item t handles the pair (i, i + j)
// where i has bit j clear; pairs inside an ascending block (i & k == 0) are put in order, the others
// in reverse order.
__kernel void bitonic_step(__global uint *hi, __global uint *lo, __global int *idx,
                           const int j, const int k, const int pairs)
{
    const int t = get_global_id(0);
    if (t >= pairs) return;
    const int i = (t / j) * 2 * j + (t % j);
    const int l = i + j;
    const uint hi_i = hi[i], lo_i = lo[i], hi_l = hi[l], lo_l = lo[l];
    const int idx_i = idx[i], idx_l = idx[l];
    const int ascending = (i & k) == 0;
    if (after(hi_i, lo_i, idx_i, hi_l, lo_l, idx_l) == ascending) {
        hi[i] = hi_l; lo[i] = lo_l; idx[i] = idx_l;
        hi[l] = hi_i; lo[l] = lo_i; idx[l] = idx_i;
    }
}
