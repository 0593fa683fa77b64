## Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
## 1, 2, 3", SC'11). Work-item b turns counter (b + offset) under key (seed) into four 32-bit words and
## writes the elements of block b: 4 per block for float, 2 for double (a double takes two words).
## The generator core is integer-only (32-bit multiplies, mul_hi, xor), so one seed gives the same bits
## on every device; only the float conversion of a normal (log, sqrt, sin, cos) may differ in the last
## ulp between devices. No 64-bit integers are used, so devices without full ulong support work too.
##
## Template parameters (nothing else, so new shapes, seeds or offsets never recompile):
##   ctype: "float" or "double"
##   dist:  "uniform" (out = a + (b - a) * u, u in [0, 1)) or "normal" (out = a + b * z, z ~ N(0, 1))
##   from_state: the key and the stream position come from a device generator's state buffer
##          (seed_lo, seed_hi, offset_lo, offset_hi), plus a fixed offset; the position is advanced
##          after the fill by advance_counters (counters.cl.mako), so a captured replay draws the
##          next numbers with no argument rewritten. Otherwise seed and offset are scalars.
<%
    per_block = 4 if ctype == "float" else 2
%>
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype)}\

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// One Philox round: two 32x32->64 multiplies, the high halves mixed with the other words and the key.
inline uint4 philox_round(const uint4 c, const uint k0, const uint k1)
{
    const uint hi0 = mul_hi(PHILOX_M0, c.x), lo0 = PHILOX_M0 * c.x;
    const uint hi1 = mul_hi(PHILOX_M1, c.z), lo1 = PHILOX_M1 * c.z;
    return (uint4)(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
}

inline uint4 philox4x32_10(uint4 c, uint k0, uint k1)
{
    // Ten rounds, the key bumped by the Weyl constants between rounds (wrapping 32-bit adds).
    for (int r = 0; r < 10; ++r) {
        if (r > 0) { k0 += PHILOX_W0; k1 += PHILOX_W1; }
        c = philox_round(c, k0, k1);
    }
    return c;
}

% if ctype == "float":
// 24 random bits are exactly a float's precision: u = k * 2^-24, k in [0, 2^24).
inline T unit_open_high(const uint x) { return (T)(x >> 8) * 0x1.0p-24f; }
// (k + 1) * 2^-24 lies in (0, 1], so log() of it is finite.
inline T unit_open_low(const uint x) { return (T)((x >> 8) + 1u) * 0x1.0p-24f; }
#define TWO_PI 6.28318530717958647692f
% else:
// 27 + 26 = 53 bits, a double's precision; every step is exact in double arithmetic.
inline T bits53(const uint x, const uint y) { return (T)(x >> 5) * 67108864.0 + (T)(y >> 6); }
inline T unit_open_high(const uint x, const uint y) { return bits53(x, y) * 0x1.0p-53; }
inline T unit_open_low(const uint x, const uint y) { return (bits53(x, y) + 1.0) * 0x1.0p-53; }
#define TWO_PI 6.28318530717958647692
% endif

% if from_state:
__kernel void philox_fill(__global T *out, const int n, __global const uint *state,
                          const uint add_lo, const uint add_hi,
                          const T a, const T b)
{
    const uint block = get_global_id(0);
    const uint first = block * ${per_block}u;
    if (first >= (uint)n) return;

    const uint seed_lo = state[0], seed_hi = state[1];
    const uint offset_lo = state[2] + add_lo;
    const uint offset_hi = state[3] + add_hi + (offset_lo < add_lo ? 1u : 0u);
% else:
__kernel void philox_fill(__global T *out, const int n,
                          const uint seed_lo, const uint seed_hi,
                          const uint offset_lo, const uint offset_hi,
                          const T a, const T b)
{
    const uint block = get_global_id(0);
    const uint first = block * ${per_block}u;
    if (first >= (uint)n) return;
% endif

    // The 64-bit counter (offset + block) as two words with a carry.
    const uint ctr_lo = offset_lo + block;
    const uint ctr_hi = offset_hi + (ctr_lo < block ? 1u : 0u);
    const uint4 w = philox4x32_10((uint4)(ctr_lo, ctr_hi, 0u, 0u), seed_lo, seed_hi);

    T v[${per_block}];
% if dist == "uniform":
  % if ctype == "float":
    v[0] = unit_open_high(w.x);
    v[1] = unit_open_high(w.y);
    v[2] = unit_open_high(w.z);
    v[3] = unit_open_high(w.w);
  % else:
    v[0] = unit_open_high(w.x, w.y);
    v[1] = unit_open_high(w.z, w.w);
  % endif
    // Rounding of a + (b - a) * u can reach b; the largest value below b keeps the range half-open.
    const T span = b - a;
    const T top = b > a ? nextafter(b, a) : a;
    for (int k = 0; k < ${per_block}; ++k)
        v[k] = fmin(a + span * v[k], top);
% else:
    // Box-Muller on pairs (u1 in (0, 1], u2 in [0, 1)): two independent standard normals per pair.
  % if ctype == "float":
    for (int k = 0; k < 2; ++k) {
        const uint x = k == 0 ? w.x : w.z, y = k == 0 ? w.y : w.w;
        const T r = sqrt(-2.0f * log(unit_open_low(x)));
        const T theta = TWO_PI * unit_open_high(y);
        v[2 * k] = r * cos(theta);
        v[2 * k + 1] = r * sin(theta);
    }
  % else:
    {
        const T r = sqrt(-2.0 * log(unit_open_low(w.x, w.y)));
        const T theta = TWO_PI * unit_open_high(w.z, w.w);
        v[0] = r * cos(theta);
        v[1] = r * sin(theta);
    }
  % endif
    for (int k = 0; k < ${per_block}; ++k)
        v[k] = a + b * v[k];
% endif
    for (int k = 0; k < ${per_block}; ++k)
        if (first + k < (uint)n) out[first + k] = v[k];
}
