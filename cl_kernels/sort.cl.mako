## Sorting rows: a stable merge sort of each row's indices by their keys, one work-item per row (rows
## are independent; the merge passes are serial, O(n log n) per row). Keys compare as torch sorts them:
## NaN is the largest value, equal keys keep their order (stable), descending reverses the order of
## unequal keys only. Writes the permutation idx (sorted position -> original index) and its inverse.
## `tmp` is scratch of the same size as idx; the passes alternate between the two buffers.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}\

% if ctype in ("float", "double"):
#define ISNAN(v) ((v) != (v))
% else:
#define ISNAN(v) 0
% endif
% if descending:
// "a goes before b": a larger, or a NaN where b is not.
#define BEFORE(a, b) ((ISNAN(a) && !ISNAN(b)) || (!ISNAN(b) && (a) > (b)))
% else:
#define BEFORE(a, b) ((!ISNAN(a) && ISNAN(b)) || (!ISNAN(a) && (a) < (b)))
% endif

__kernel void argsort(__global const T *x, __global int *idx, __global int *tmp, __global int *inv,
                      const int rows, const int n)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const T *key = x + (long)r * n;
    __global int *a = idx + (long)r * n;
    __global int *b = tmp + (long)r * n;
    for (int i = 0; i < n; ++i) a[i] = i;
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            const int mid = min(lo + width, n), hi = min(lo + 2 * width, n);
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                // Take from the right run only when its key goes strictly before: stable.
                if (BEFORE(key[a[j]], key[a[i]])) b[k++] = a[j++];
                else b[k++] = a[i++];
            }
            while (i < mid) b[k++] = a[i++];
            while (j < hi) b[k++] = a[j++];
        }
        __global int *t = a; a = b; b = t;
    }
    __global int *out = idx + (long)r * n;
    __global int *rinv = inv + (long)r * n;
    for (int i = 0; i < n; ++i) {
        const int v = a[i];
        out[i] = v;          // a may be the scratch buffer after an odd number of passes
        rinv[v] = i;
    }
}
