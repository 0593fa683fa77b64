## Fused scaled-dot-product attention (functions/attention.py): softmax(q k^T * scale + mask) v without
## the [L, S] score matrix, forward and backward, as FlashAttention computes it.
##
## Shapes (each a contiguous [BH, ., .] block per batch*head `bh`): q [L, D], k and v [S, D], o and dO
## [L, D]. The score loops read the other operand transposed and zero-padded to a multiple of the key
## block: kt and vt [D, Sp], qt and dot [D, Lp] (Sp, Lp multiples of BK = vw * NK), so a block of BK
## scores is NK vectors of vw lanes and every vector access is a plain, aligned pointer load (on PoCL
## vloadn stays an out-of-line call; see norm.cl.mako). The per-row logsumexp `lse` and the row sums
## `dsum` = rowsum(dO * O) are [BH, Lp]; padded rows hold lse = +inf and dsum = 0, so they give p = 0.
##
## A work-item owns R consecutive rows (queries in the forward and the dq kernel, keys in the dk/dv
## kernel) of one bh and keeps their accumulators in private vectors: acc[R][D / vw]. The forward walks
## the key blocks with the online softmax (running max m, running sum l, the accumulator rescaled once
## per block); backward recomputes p = exp(s - lse) and never writes scores. No atomics: every output
## element is written by one work-item in a fixed order, so results are deterministic.
##
## Masks: `causal` (torch's top-left alignment: query i sees keys j <= i, also when L != S), bounds
## (keys j >= S, queries i >= L), and an optional `mask` ("bool": 0 drops, "float": added) read through
## strides: element (bh, i, j) at moff + (bh / hn) * msb + (bh % hn) * msh + i * msi + j * msj (the
## broadcast axes have stride 0). A row with every key masked gives o = 0, lse = +inf and zero
## gradients (torch's result for such rows).
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype, vector=vw)}\
<%
    DV = D // vw
    BK = vw * NK
    lanes = c.lanes(vw) if vw > 1 else [None]
    def lane(v, k):
        return v if vw == 1 else f"{v}.{lanes[k]}"
    itype = "long" if ctype == "double" else "int"
%>
#define D ${D}
#define BK ${BK}
// Written as conditionals: on PoCL min/fmax/select stay out-of-line calls.
#define IMIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define LD(p) (*(__global const TV *)(p))
#define ST(v, p) (*(__global TV *)(p) = (v))
#define NEG_INF ((T)(-INFINITY))
% if vw == 1:
typedef ${itype} IV;
#define SEL(a, b, cond) ((cond) ? (b) : (a))
#define LANE_IDS ((IV)0)
% else:
typedef ${itype}${vw} IV;
#define SEL(a, b, cond) ((cond) ? (b) : (a))
#define LANE_IDS ((IV)(${", ".join(str(k) for k in range(vw))}))
typedef uint${vw} UV;
% endif
% if ctype == "float":
// exp for the probabilities, inline (PoCL's exp is an out-of-line call, and every call spills the score
// vectors): x = n ln2 + r with |r| <= ln2 / 2 (n rounded by the 1.5 * 2^23 trick; ln2 in two parts,
// 2839/4096 exact, so n ln2_hi is exact for every n that matters), e^r = 1 + r + r^2 P(r) with P of
// degree 5 fitted for this project (weighted least squares in float64: relative error 5e-11; within one
// ulp of exp over [-87, 88] in float32), times 2^n built in the exponent bits. Inputs below -87
// (masked scores: -inf) give 0; NaN stays NaN.
inline TV attn_exp(TV x)
{
    x = x > (TV)88.0f ? (TV)88.0f : x;
    const TV xc = x < (TV)-87.0f ? (TV)-87.0f : x;
    const TV t = xc * (TV)1.44269504088896341f + (TV)12582912.0f;
    const TV n = t - (TV)12582912.0f;
    TV r = xc - n * (TV)0.693115234375f;
    r = r - n * (TV)3.1946183e-05f;
    TV p = (TV)0.00019790597f;
    p = p * r + (TV)0.0013944657f;
    p = p * r + (TV)0.0083334967f;
    p = p * r + (TV)0.041666295f;
    p = p * r + (TV)0.16666666f;
    p = p * r + (TV)0.5f;
    p = p * (r * r) + r + (TV)1.0f;
    const IV e = (${"as_int" if vw == 1 else f"as_int{vw}"}(t) - (IV)0x4B400000 + (IV)127) << 23;
    p = p * ${"as_float" if vw == 1 else f"as_float{vw}"}(e);
    return x < (TV)-87.0f ? (TV)0.0f : p;
}
#define VEXP attn_exp
// The CPU backward keeps the library exp: inline there (unrolled or in a loop) measured 35% slower.
#define BEXP exp
% else:
#define VEXP exp
#define BEXP exp
% endif

<%def name="mask_args()">\
% if mask != "none":
 __global const ${"uchar" if mask == "bool" else "T"} *restrict mk, const int moff, const int msb, const int msh,
 const int hn, const int msi, const int msj,\
% endif
% if dropout:
 __global const uint *restrict rng, const uint thresh, const T rescale,\
% endif
</%def>
% if dropout:

// Dropout of the probabilities (after the softmax, as torch): element (bh, i, j) is kept, scaled by
// `rescale` = 1 / (1 - p), when its 32-bit word is >= thresh = p * 2^32. The words come from Philox4x32-10
// (as philox.cl.mako's generator: the same rounds and constants) keyed by the generator's seed, one
// block per 2 x 2 tile of (i, j): counter (offset_lo, offset_hi, bh * ceil(L / 2) + i / 2, j / 2 | 2^31),
// word 2 * (i & 1) + (j & 1). The top bit of the last word keeps these counters apart from the fills'
// (whose last two words are 0); the generator advances one block per call, so every call draws anew.
// Tiles of 2 x 2 serve both directions: lanes along j (forward, dq) and along i (dk/dv) both take two
// words per block. Every kernel recomputes the same words, so nothing of size [L, S] is stored.
inline uint4 attn_philox(uint4 c, uint k0, uint k1)
{
    for (int r = 0; r < 10; ++r) {
        if (r > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        const uint hi0 = mul_hi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
        const uint hi1 = mul_hi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
        c = (uint4)(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
    }
    return c;
}

// The kept-scale (rescale or 0) of element (i, j) of head bh.
inline T attn_keep(__global const uint *rng, const uint thresh, const T rescale, const int bh, const int L,
                   const int i, const int j)
{
    const uint4 w = attn_philox((uint4)(rng[2], rng[3], (uint)(bh * ((L + 1) >> 1) + (i >> 1)),
                                        (uint)(j >> 1) | 0x80000000u), rng[0], rng[1]);
    const uint x = (i & 1) ? ((j & 1) ? w.w : w.z) : ((j & 1) ? w.y : w.x);
    return x >= thresh ? rescale : (T)0;
}
% endif

## The scaled, masked scores of a vector: `x` holds the raw dot products of row `row` (scalar) against
## the vw lanes starting at `first`. `lanes_are` says whether the lanes are keys ("key": forward, dq) or
## queries ("query": dk/dv). Writes the result into `x`.
<%def name="masked(x, row, first, lanes_are)">\
<%
    if lanes_are == "key":
        qi, kj, lim = row, None, "S"
    else:
        qi, kj, lim = None, row, "L"
%>\
        {
            ${x} *= (TV)scale;
            const IV idx = (IV)(${first}) + LANE_IDS;
% if mask != "none":
            __global const ${"uchar" if mask == "bool" else "T"} *mrow = mk + mbase;
<%
    def elem(k):
        at = f"IMIN({first} + {k}, {lim} - 1)"
        if lanes_are == "key":
            return f"mrow[IMIN({row}, L - 1) * msi + {at} * msj]"
        return f"mrow[{at} * msi + IMIN({row}, S - 1) * msj]"
%>\
  % if mask == "float":
    % if vw == 1:
            ${x} += ${elem(0)};
    % else:
            ${x} += (TV)(${", ".join(elem(k) for k in range(vw))});
    % endif
  % else:
    % if vw == 1:
            ${x} = ${elem(0)} ? ${x} : NEG_INF;
    % else:
            ${x} = SEL(${x}, (TV)NEG_INF, (IV)(${", ".join(f"({elem(k)} ? 0 : -1)" for k in range(vw))}));
    % endif
  % endif
% endif
% if causal:
  % if lanes_are == "key":
            ${x} = SEL(${x}, (TV)NEG_INF, idx > (IV)(${row}));
  % else:
            ${x} = SEL(${x}, (TV)NEG_INF, (IV)(${row}) > idx);
  % endif
% endif
            ${x} = SEL(${x}, (TV)NEG_INF, idx >= (IV)(${lim}));
        }
</%def>

## The vectors v[R][NK] into a private scalar array name[R][BK], read back one element at a time.
<%def name="spill(name, v, into=None)">\
% if into is None:
        T ${name}[${R}][BK];
% endif
% for r in range(R):
  % for n in range(NK):
        *(TV *)(&${into or name}[${r}][${n * vw}]) = ${v}[${r}][${n}];
  % endfor
% endfor
</%def>

## `var` = the kept-scales (TV) of row `row` (a query for "key" lanes, a key for "query" lanes) at the vw
## lanes from `first`: lanes in pairs share a Philox block (first is even when vw > 1).
<%def name="keep(var, row, first, lanes_are)">\
<%
    if lanes_are == "key":
        args = lambda k: f"({row}), ({first}) + {k}"
    else:
        args = lambda k: f"({first}) + {k}, ({row})"
    one = lambda k: f"attn_keep(rng, thresh, rescale, bh, L, {args(k)})"
%>\
% if vw == 1:
        const TV ${var} = ${one(0)};
% elif ctype == "float":
        TV ${var};
        {   // the vw lanes' Philox blocks at once, on vectors of uint (the same words as attn_keep)
            const IV lid = (IV)(${first}) + LANE_IDS;
  % if lanes_are == "key":
            const int ii = ${row};
            const UV z0 = (UV)((uint)(bh * ((L + 1) >> 1) + (ii >> 1)));
            const UV w0 = as_uint${vw}(lid >> 1) | (UV)0x80000000u;
  % else:
            const int jj = ${row};
            const UV z0 = as_uint${vw}((IV)(bh * ((L + 1) >> 1)) + (lid >> 1));
            const UV w0 = (UV)((uint)(jj >> 1) | 0x80000000u);
  % endif
            UV x = (UV)rng[2], y = (UV)rng[3], z = z0, w = w0;
            uint k0 = rng[0], k1 = rng[1];
            for (int rr = 0; rr < 10; ++rr) {
                if (rr > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
                const UV hi0 = mul_hi((UV)0xD2511F53u, x), lo0 = (UV)0xD2511F53u * x;
                const UV hi1 = mul_hi((UV)0xCD9E8D57u, z), lo1 = (UV)0xCD9E8D57u * z;
                x = hi1 ^ y ^ (UV)k0; y = lo1; z = hi0 ^ w ^ (UV)k1; w = lo0;
            }
  % if lanes_are == "key":
            const IV jodd = (lid & (IV)1) != (IV)0;
            const UV word = (ii & 1) ? (jodd ? w : z) : (jodd ? y : x);
  % else:
            const IV iodd = (lid & (IV)1) != (IV)0;
            const UV word = (jj & 1) ? (iodd ? w : y) : (iodd ? z : x);
  % endif
            ${var} = (word >= (UV)thresh) ? (TV)rescale : (TV)0;
        }
% else:
        const TV ${var} = (TV)(${", ".join(one(k) for k in range(vw))});
% endif
</%def>

## The R rows of this work-item: `rows` of `n` (L or S) starting at r0, clamped for loads.
<%def name="row_pointers(name, base, n)">\
% for r in range(R):
    __global const T *${name}${r} = ${base} + (size_t)IMIN(r0 + ${r}, ${n} - 1) * D;
% endfor
</%def>

## `out` (a new scalar) = the largest lane of the vector `v`, folded in halves (log2(vw) steps, not vw - 1).
<%def name="hmax(v, out)">\
<%
    steps, w, prev = [], vw, v
    while w > 1:
        w //= 2
        steps.append((f"{ctype}{w}" if w > 1 else ctype, f"{out}_{w}", prev))
        prev = f"{out}_{w}"
%>\
% for ty, name, src in steps:
            const ${ty} ${name} = MAX(${src}.lo, ${src}.hi);
% endfor
            const T ${out} = ${prev};
</%def>

__kernel void attn_forward(__global const T *restrict q, __global const T *restrict kt, __global const T *restrict v,
                           __global T *restrict o, __global T *restrict lse,${mask_args()}
                           const int L, const int S, const int Lp, const int Sp, const T scale, const int blocks)
{
    // `blocks` consecutive row blocks per work-item (on PoCL each work-group costs a task of its own),
    // walked in groups of G blocks: a group's accumulators live in private memory while each key block
    // (BK keys of kt and v) passes over all its row blocks, so a key block is read from L2 once per
    // G * R rows and from L1 by the other row blocks of the group.
    const int bh = get_global_id(1);
    __global T *lrow = lse + (size_t)bh * Lp;
    const int rbeg = get_global_id(0) * blocks * ${R};
    const int rend = IMIN(Lp, rbeg + blocks * ${R});
% if mask != "none":
    const int mbase = moff + (bh / hn) * msb + (bh % hn) * msh;
% endif
    __global const T *qb = q + (size_t)bh * L * D;
    __global const T *ktb = kt + (size_t)bh * D * Sp;
    __global const T *vb = v + (size_t)bh * S * D;
    for (int g0 = rbeg; g0 < rend; g0 += ${G * R}) {
    // rows [g0, gend) of this group; those at or past L only get lse = +inf
    const int gend = IMIN(rend, g0 + ${G * R});
    if (g0 >= L) {
        for (int i = g0; i < gend; ++i) lrow[i] = (T)INFINITY;
        continue;
    }
    const int gn = (IMIN(gend, L) - g0 + ${R - 1}) / ${R};   // row blocks with a row below L
    TV acc[${G}][${R}][${DV}];
    T m[${G}][${R}];
    TV l[${G}][${R}];   // the running sums lane by lane (summed across lanes at the end)
    for (int gi = 0; gi < gn; ++gi) {
% for r in range(R):
        m[gi][${r}] = NEG_INF; l[gi][${r}] = (TV)0;
        for (int e = 0; e < ${DV}; ++e) acc[gi][${r}][e] = (TV)0;
% endfor
    }
% if causal:
    const int kend = IMIN(S, g0 + gn * ${R});
% else:
    const int kend = S;
% endif
    for (int kb = 0; kb < kend; kb += BK) {
    const int kn = IMIN(BK, S - kb);
    for (int gi = 0; gi < gn; ++gi) {
        const int r0 = g0 + gi * ${R};
% if causal:
        if (kb >= r0 + ${R}) continue;   // every key of this block is after every row of the block
% endif
${row_pointers("qr", "qb", "L")}
        TV s[${R}][${NK}];
% for n0 in range(0, NK, SC):
        // key vectors ${n0} .. ${n0 + SC - 1}: R x SC accumulators
  % for r in range(R):
    % for n in range(n0, n0 + SC):
        s[${r}][${n}] = (TV)0;
    % endfor
  % endfor
        for (int dd = 0; dd < D; ++dd) {
            __global const T *kd = ktb + (size_t)dd * Sp + kb;
  % for n in range(n0, n0 + SC):
            const TV k${n} = LD(kd + ${n * vw});
  % endfor
  % for r in range(R):
            { const T a = qr${r}[dd];
    % for n in range(n0, n0 + SC):
              s[${r}][${n}] += a * k${n};
    % endfor
            }
  % endfor
        }
% endfor
% for r in range(R):
        {
  % for n in range(NK):
${masked(f"s[{r}][{n}]", f"(r0 + {r})", f"kb + {n * vw}", "key")}\
  % endfor
            TV mv = s[${r}][0];
  % for n in range(1, NK):
            mv = MAX(mv, s[${r}][${n}]);
  % endfor
${hmax("mv", "mx")}\
            if (mx > m[gi][${r}]) {   // a new running max: rescale what was summed so far (exp(-inf) = 0 at first)
                const T alpha = exp(m[gi][${r}] - mx);
                l[gi][${r}] *= (TV)alpha;
                for (int e = 0; e < ${DV}; ++e) acc[gi][${r}][e] *= (TV)alpha;
                m[gi][${r}] = mx;
            }
            const T mu = m[gi][${r}] == NEG_INF ? (T)0 : m[gi][${r}];
  % for n in range(NK):
            s[${r}][${n}] = VEXP(s[${r}][${n}] - (TV)mu);
            l[gi][${r}] += s[${r}][${n}];
    % if dropout:
            {
${keep("kp", f"(r0 + {r})", f"kb + {n * vw}", "key")}\
            s[${r}][${n}] *= kp;
            }
    % endif
  % endfor
        }
% endfor
% if spill:
${spill("pp", "s")}\
        for (int e = 0; e < ${DV}; e += ${EC}) {
% for r in range(R):
  % for j in range(EC):
            TV a${r}_${j} = acc[gi][${r}][e + ${j}];
  % endfor
% endfor
            __global const T *vc = vb + (size_t)kb * D + e * ${vw};
            for (int cc = 0; cc < kn; ++cc) {
% for j in range(EC):
                const TV x${j} = LD(vc + (size_t)cc * D + ${j * vw});
% endfor
% for r in range(R):
                { const T w = pp[${r}][cc];
  % for j in range(EC):
                  a${r}_${j} += w * x${j};
  % endfor
                }
% endfor
            }
% for r in range(R):
  % for j in range(EC):
            acc[gi][${r}][e + ${j}] = a${r}_${j};
  % endfor
% endfor
        }
% else:
% for n in range(NK):
  % for k in range(vw):
        if (${n * vw + k} < kn) {
            __global const T *vr = vb + (size_t)(kb + ${n * vw + k}) * D;
            for (int e = 0; e < ${DV}; ++e) {
                const TV x = LD(vr + e * ${vw});
    % for r in range(R):
                acc[gi][${r}][e] += ${lane(f"s[{r}][{n}]", k)} * x;
    % endfor
            }
        }
  % endfor
% endfor
% endif
    }
    }
    for (int gi = 0; gi < gn; ++gi) {
        const int r0 = g0 + gi * ${R};
% for r in range(R):
        if (r0 + ${r} < L) {
            const T lsum = ${c.hsum(f"l[gi][{r}]", vw) if vw > 1 else f"l[gi][{r}]"};
            const T inv = lsum > (T)0 ? (T)1 / lsum : (T)0;
            __global T *orow = o + ((size_t)bh * L + r0 + ${r}) * D;
            for (int e = 0; e < ${DV}; ++e) ST(acc[gi][${r}][e] * (TV)inv, orow + e * ${vw});
            lrow[r0 + ${r}] = lsum > (T)0 ? m[gi][${r}] + log(lsum) : (T)INFINITY;
        }
% endfor
    }
    for (int i = L; i < gend; ++i) lrow[i] = (T)INFINITY;   // the padded rows of the group (g0 < L here)
    }
}

## A block of 16 rows (i0 .. i0 + 16, at most `lim`) of the [n, D] rows at `src` written transposed into
## the rows of `dst` (stride `st`) at columns i0 ..: each row read as vectors of vw lanes, each lane
## stored where it goes (no strided scalar loads); columns from `lim` to `i1` get zeros.
<%def name="transpose_block(src, dst, st, lim)">\
        if (il - i0 == 16) {
            for (int d0 = 0; d0 < D; d0 += ${vw}) {
% for i in range(16):
                const TV x${i} = LD(${src} + (size_t)(i0 + ${i}) * D + d0);
% endfor
% for k in range(vw):
                {
                    __global T *t = ${dst} + (size_t)(d0 + ${k}) * ${st} + i0;
  % for i in range(16):
                    t[${i}] = ${lane(f"x{i}", k)};
  % endfor
                }
% endfor
            }
        } else {
            for (int d = 0; d < D; ++d) {
                __global T *t = ${dst} + (size_t)d * ${st};
                for (int i = i0; i < il; ++i) t[i] = ${src}[(size_t)i * D + d];
            }
        }
        for (int d = 0; d < D; ++d)
            for (int i = il; i < i1; ++i) ${dst}[(size_t)d * ${st} + i] = (T)0;
</%def>

// Backward's preparation in one pass over blocks of 16 rows (bh, i0 .. i0 + 16) of q and dO:
// qt[bh, d, i] = q[bh, i, d] and dot[bh, d, i] = dO[bh, i, d] (transposed, 0 for L <= i < Lt) and
// dsum[bh, i] = sum_d dO[bh, i, d] * O[bh, i, d] (0 for L <= i < Lp). A block's rows stay in L1 while
// its columns are written.
__kernel void attn_prep(__global const T *restrict q, __global const T *restrict dout, __global const T *restrict o,
                        __global T *restrict qt, __global T *restrict dot, __global T *restrict dsum,
                        const int L, const int Lp, const int Lt, const int rows, const int total)
{
    const int nblk = (Lt + 15) / 16;
    const int g0 = get_global_id(0) * rows, g1 = IMIN(g0 + rows, total);
    for (int g = g0; g < g1; ++g) {
        const int bh = g / nblk, i0 = (g - bh * nblk) * 16;
        const int i1 = IMIN(i0 + 16, Lt), il = MAX(i0, IMIN(i1, L));
        __global const T *qb = q + (size_t)bh * L * D, *gb = dout + (size_t)bh * L * D, *ob = o + (size_t)bh * L * D;
        for (int i = i0; i < IMIN(i1, Lp); ++i) {
            TV acc = (TV)0;
            if (i < L)
                for (int e = 0; e < D; e += ${vw}) acc += LD(gb + (size_t)i * D + e) * LD(ob + (size_t)i * D + e);
            dsum[(size_t)bh * Lp + i] = ${c.hsum("acc", vw) if vw > 1 else "acc"};
        }
        __global T *qtb = qt + (size_t)bh * D * Lt, *dtb = dot + (size_t)bh * D * Lt;
${transpose_block("qb", "qtb", "Lt", "L")}\
${transpose_block("gb", "dtb", "Lt", "L")}\
    }
}

// dst[bh, d, j] = src[bh, j, d] for j < n, 0 for n <= j < np: the transposed, padded copy the score
// loops read. A work-item per `rows` blocks (bh, 16 consecutive j) of dst.
__kernel void attn_transpose(__global const T *restrict src, __global T *restrict dst, const int n, const int np,
                             const int rows, const int total)
{
    const int nblk = (np + 15) / 16;
    const int g0 = get_global_id(0) * rows, g1 = IMIN(g0 + rows, total);
    for (int g = g0; g < g1; ++g) {
        const int bh = g / nblk, i0 = (g - bh * nblk) * 16;
        const int i1 = IMIN(i0 + 16, np), il = MAX(i0, IMIN(i1, n));
        __global const T *sb = src + (size_t)bh * n * D;
        __global T *db = dst + (size_t)bh * D * np;
${transpose_block("sb", "db", "np", "n")}\
    }
}

// dq[i] = scale * sum_j p_ij (dp_ij - dsum_i) k_j, with p_ij = exp(s_ij - lse_i), dp_ij = dO_i . v_j.
__kernel void attn_backward_dq(__global const T *restrict q, __global const T *restrict kt,
                               __global const T *restrict vt, __global const T *restrict k,
                               __global const T *restrict dout, __global const T *restrict lse,
                               __global const T *restrict dsum, __global T *restrict dq,${mask_args()}
                               const int L, const int S, const int Lp, const int Sp, const T scale)
{
    const int bh = get_global_id(1);
    const int r0 = get_global_id(0) * ${R};
    if (r0 >= L) return;
% if mask != "none":
    const int mbase = moff + (bh / hn) * msb + (bh % hn) * msh;
% endif
    __global const T *qb = q + (size_t)bh * L * D;
    __global const T *gb = dout + (size_t)bh * L * D;
    __global const T *ktb = kt + (size_t)bh * D * Sp;
    __global const T *vtb = vt + (size_t)bh * D * Sp;
    __global const T *kb_ = k + (size_t)bh * S * D;
${row_pointers("qr", "qb", "L")}
${row_pointers("gr", "gb", "L")}
    T lr[${R}], dr[${R}];
% for r in range(R):
    lr[${r}] = lse[(size_t)bh * Lp + IMIN(r0 + ${r}, L - 1)];
    dr[${r}] = dsum[(size_t)bh * Lp + IMIN(r0 + ${r}, L - 1)];
% endfor
    TV acc[${R}][${DV}];
% for r in range(R):
    for (int e = 0; e < ${DV}; ++e) acc[${r}][e] = (TV)0;
% endfor
% if causal:
    const int kend = IMIN(S, r0 + ${R});
% else:
    const int kend = S;
% endif
    for (int kb = 0; kb < kend; kb += BK) {
        TV s[${R}][${NK}], dp[${R}][${NK}];
% for r in range(R):
  % for n in range(NK):
        s[${r}][${n}] = (TV)0; dp[${r}][${n}] = (TV)0;
  % endfor
% endfor
        for (int dd = 0; dd < D; ++dd) {
            __global const T *kd = ktb + (size_t)dd * Sp + kb;
            __global const T *vd = vtb + (size_t)dd * Sp + kb;
% for n in range(NK):
            const TV k${n} = LD(kd + ${n * vw}), v${n} = LD(vd + ${n * vw});
% endfor
% for r in range(R):
            { const T a = qr${r}[dd], g = gr${r}[dd];
  % for n in range(NK):
              s[${r}][${n}] += a * k${n};
              dp[${r}][${n}] += g * v${n};
  % endfor
            }
% endfor
        }
% for r in range(R):
  % for n in range(NK):
${masked(f"s[{r}][{n}]", f"(r0 + {r})", f"kb + {n * vw}", "key")}\
        s[${r}][${n}] = VEXP(s[${r}][${n}] - (TV)lr[${r}]);
    % if dropout:
        {
${keep("kp", f"(r0 + {r})", f"kb + {n * vw}", "key")}\
        dp[${r}][${n}] *= kp;
        }
    % endif
        s[${r}][${n}] = s[${r}][${n}] * (dp[${r}][${n}] - (TV)dr[${r}]);
  % endfor
% endfor
        const int kn = IMIN(BK, S - kb);
% if spill:
${spill("pp", "s")}\
        for (int e = 0; e < ${DV}; e += ${EC}) {
% for r in range(R):
  % for j in range(EC):
            TV a${r}_${j} = acc[${r}][e + ${j}];
  % endfor
% endfor
            __global const T *kc = kb_ + (size_t)kb * D + e * ${vw};
            for (int cc = 0; cc < kn; ++cc) {
% for j in range(EC):
                const TV x${j} = LD(kc + (size_t)cc * D + ${j * vw});
% endfor
% for r in range(R):
                { const T w = pp[${r}][cc];
  % for j in range(EC):
                  a${r}_${j} += w * x${j};
  % endfor
                }
% endfor
            }
% for r in range(R):
  % for j in range(EC):
            acc[${r}][e + ${j}] = a${r}_${j};
  % endfor
% endfor
        }
% else:
% for n in range(NK):
  % for kk in range(vw):
        if (${n * vw + kk} < kn) {
            __global const T *kr = kb_ + (size_t)(kb + ${n * vw + kk}) * D;
            for (int e = 0; e < ${DV}; ++e) {
                const TV x = LD(kr + e * ${vw});
    % for r in range(R):
                acc[${r}][e] += ${lane(f"s[{r}][{n}]", kk)} * x;
    % endfor
            }
        }
  % endfor
% endfor
% endif
    }
% for r in range(R):
    if (r0 + ${r} < L) {
        __global T *out = dq + ((size_t)bh * L + r0 + ${r}) * D;
        for (int e = 0; e < ${DV}; ++e) ST(acc[${r}][e] * (TV)scale, out + e * ${vw});
    }
% endfor
}

// dv[j] = sum_i p_ij dO_i and dk[j] = scale * sum_i p_ij (dp_ij - dsum_i) q_i, over the query blocks.
__kernel void attn_backward_dkv(__global const T *restrict qt, __global const T *restrict q,
                                __global const T *restrict k, __global const T *restrict v,
                                __global const T *restrict dot, __global const T *restrict dout,
                                __global const T *restrict lse, __global const T *restrict dsum,
                                __global T *restrict dk, __global T *restrict dv,${mask_args()}
% if with_dq:
                                __global T *restrict dqp, const int kchunk, const int nbh,
% endif
                                const int L, const int S, const int Lp, const int Sp, const int Lt,
                                const T scale)
{
    const int bh = get_global_id(1);
% if with_dq:
    // This work-item's keys [kstart, kstop); its share of dq goes to partial `chunk`.
    const int chunk = get_global_id(0);
    const int kstart = chunk * kchunk, kstop = IMIN(S, kstart + kchunk);
    __global T *dqb = dqp + ((size_t)chunk * nbh + bh) * L * D;
    const int qch = ${QC};
% else:
    const int kstart = get_global_id(0) * ${R}, kstop = IMIN(S, kstart + ${R});
    if (kstart >= S) return;
    const int qch = L;
% endif
% if mask != "none":
    const int mbase = moff + (bh / hn) * msb + (bh % hn) * msh;
% endif
    __global const T *qtb = qt + (size_t)bh * D * Lt;
    __global const T *dtb = dot + (size_t)bh * D * Lt;
    __global const T *qb = q + (size_t)bh * L * D;
    __global const T *gb = dout + (size_t)bh * L * D;
    __global const T *lb = lse + (size_t)bh * Lp;
    __global const T *db = dsum + (size_t)bh * Lp;
    __global const T *kbase = k + (size_t)bh * S * D;
    __global const T *vbase = v + (size_t)bh * S * D;
    // The queries in chunks of qch (CPUs: a chunk's q, dO (both layouts) and dq stay in L2 while the
    // key groups pass over them), the keys in groups of G blocks of R: a group's dk/dv accumulators live
    // in private memory while each block of BK queries (in L1) passes over all its key blocks. dk and
    // dv (zeroed by the host when several query chunks gather into them) are read and written once per
    // group and chunk.
% if with_dq and causal:
    // dq rows before the run's first query block (causal) get no share from this run: zeros
    for (int i = 0; i < IMIN(L, (kstart / BK) * BK); ++i)
        for (int e = 0; e < ${DV}; ++e) ST((TV)0, dqb + (size_t)i * D + e * ${vw});
% endif
    for (int qc0 = 0; qc0 < L; qc0 += qch)
    for (int g0 = kstart; g0 < kstop; g0 += ${G * R}) {
    const int gn = IMIN(${G}, (kstop - g0 + ${R - 1}) / ${R});
% if causal:
    const int qfirst = (g0 / BK) * BK;
% else:
    const int qfirst = 0;
% endif
    const int qstart = MAX(qfirst, qc0), qstop = IMIN(L, qc0 + qch);
% if with_dq:
    if (qstart >= qstop) {
        if (qc0 == 0 && qfirst >= L) {   // keys that no query sees (causal, S > L): zero gradients
            for (int r = g0; r < IMIN(kstop, g0 + gn * ${R}); ++r)
                for (int e = 0; e < ${DV}; ++e) {
                    ST((TV)0, dk + ((size_t)bh * S + r) * D + e * ${vw});
                    ST((TV)0, dv + ((size_t)bh * S + r) * D + e * ${vw});
                }
        }
        continue;
    }
    // dk and dv start from zero in the first query chunk this group sees, else from the earlier chunks'
    const int fresh = qfirst >= qc0;
% endif
    TV ak[${G}][${R}][${DV}], av[${G}][${R}][${DV}];
    for (int gi = 0; gi < gn; ++gi) {
        const int r0 = g0 + gi * ${R};
% for r in range(R):
  % if with_dq:
        {
            __global const T *ok = dk + ((size_t)bh * S + IMIN(r0 + ${r}, S - 1)) * D;
            __global const T *ov = dv + ((size_t)bh * S + IMIN(r0 + ${r}, S - 1)) * D;
            for (int e = 0; e < ${DV}; ++e) {
                ak[gi][${r}][e] = fresh ? (TV)0 : LD(ok + e * ${vw});
                av[gi][${r}][e] = fresh ? (TV)0 : LD(ov + e * ${vw});
            }
        }
  % else:
        for (int e = 0; e < ${DV}; ++e) { ak[gi][${r}][e] = (TV)0; av[gi][${r}][e] = (TV)0; }
  % endif
% endfor
    }
    for (int qb0 = qstart; qb0 < qstop; qb0 += BK) {
% if with_dq:
    T pdg[${G}][${R}][BK];   // ds of the group's key blocks for this query block (the dq pass reads them)
% endif
    for (int gi = 0; gi < gn; ++gi) {
        const int r0 = g0 + gi * ${R};
% if causal:
        if (qb0 + BK <= r0) continue;   // every query of the block is before every key of this block
% endif
${row_pointers("kr", "kbase", "S")}
${row_pointers("vr", "vbase", "S")}
% if with_dq:
        // CPUs: scores and dp of R keys x BK queries as two register-blocked products (keys broadcast,
        // queries along the vector lanes), p and ds through private arrays, then dv and dk a key row at
        // a time (EC accumulator vectors, the query rows' vectors read straight into the FMAs) and this
        // block's share of dq a query row at a time (the R weights broadcast, the key rows read).
        TV s[${R}][${NK}], dp[${R}][${NK}];
% for acc, src, rowp in (("s", "qtb", "kr"), ("dp", "dtb", "vr")):
  % for n0 in range(0, NK, SC):
    % for r in range(R):
      % for n in range(n0, n0 + SC):
        ${acc}[${r}][${n}] = (TV)0;
      % endfor
    % endfor
        for (int dd = 0; dd < D; ++dd) {
            __global const T *xd = ${src} + (size_t)dd * Lt + qb0;
    % for n in range(n0, n0 + SC):
            const TV x${n} = LD(xd + ${n * vw});
    % endfor
    % for r in range(R):
            { const T a = ${rowp}${r}[dd];
      % for n in range(n0, n0 + SC):
              ${acc}[${r}][${n}] += a * x${n};
      % endfor
            }
    % endfor
        }
  % endfor
% endfor
% for n in range(NK):
        const TV ls${n} = LD(lb + qb0 + ${n * vw}), ds${n} = LD(db + qb0 + ${n * vw});
% endfor
% for r in range(R):
  % for n in range(NK):
${masked(f"s[{r}][{n}]", f"(r0 + {r})", f"qb0 + {n * vw}", "query")}\
        s[${r}][${n}] = BEXP(s[${r}][${n}] - ls${n});
        if (r0 + ${r} >= S) s[${r}][${n}] = (TV)0;   // a clamped key row past S: no part in dq
    % if dropout:
        {
${keep("kp", f"(r0 + {r})", f"qb0 + {n * vw}", "query")}\
        dp[${r}][${n}] = s[${r}][${n}] * (dp[${r}][${n}] * kp - ds${n}) * (TV)scale;
        s[${r}][${n}] *= kp;
        }
    % else:
        dp[${r}][${n}] = s[${r}][${n}] * (dp[${r}][${n}] - ds${n}) * (TV)scale;
    % endif
  % endfor
% endfor
        const int qn = IMIN(BK, L - qb0);
${spill("pp", "s")}\
${spill("pd", "dp", "pdg[gi]")}\
        __global const T *gc = gb + (size_t)qb0 * D;
        __global const T *qc = qb + (size_t)qb0 * D;
% for r in range(R):
        for (int e = 0; e < ${DV}; e += ${EC}) {
  % for j in range(EC):
            TV a${j} = av[gi][${r}][e + ${j}];
  % endfor
            for (int cc = 0; cc < qn; ++cc) {
                const T w = pp[${r}][cc];
  % for j in range(EC):
                a${j} += w * LD(gc + (size_t)cc * D + (e + ${j}) * ${vw});
  % endfor
            }
  % for j in range(EC):
            av[gi][${r}][e + ${j}] = a${j};
  % endfor
  % for j in range(EC):
            a${j} = ak[gi][${r}][e + ${j}];
  % endfor
            for (int cc = 0; cc < qn; ++cc) {
                const T w = pdg[gi][${r}][cc];
  % for j in range(EC):
                a${j} += w * LD(qc + (size_t)cc * D + (e + ${j}) * ${vw});
  % endfor
            }
  % for j in range(EC):
            ak[gi][${r}][e + ${j}] = a${j};
  % endfor
        }
% endfor
% else:
        // GPUs: a work-item per key block, p and ds lane by lane (or through private arrays: spill)
            TV s[${R}][${NK}], dp[${R}][${NK}];
% for r in range(R):
      % for n in range(NK):
            s[${r}][${n}] = (TV)0; dp[${r}][${n}] = (TV)0;
      % endfor
% endfor
            for (int dd = 0; dd < D; ++dd) {
                __global const T *qd = qtb + (size_t)dd * Lt + qb0;
                __global const T *gd = dtb + (size_t)dd * Lt + qb0;
% for n in range(NK):
                const TV q${n} = LD(qd + ${n * vw}), g${n} = LD(gd + ${n * vw});
% endfor
% for r in range(R):
                { const T a = kr${r}[dd], b = vr${r}[dd];
      % for n in range(NK):
                  s[${r}][${n}] += a * q${n};
                  dp[${r}][${n}] += b * g${n};
      % endfor
                }
% endfor
            }
% for n in range(NK):
            const TV ls${n} = LD(lb + qb0 + ${n * vw}), ds${n} = LD(db + qb0 + ${n * vw});
% endfor
% for r in range(R):
      % for n in range(NK):
${masked(f"s[{r}][{n}]", f"(r0 + {r})", f"qb0 + {n * vw}", "query")}\
            s[${r}][${n}] = BEXP(s[${r}][${n}] - ls${n});
        % if dropout:
            {
${keep("kp", f"(r0 + {r})", f"qb0 + {n * vw}", "query")}\
            dp[${r}][${n}] = s[${r}][${n}] * (dp[${r}][${n}] * kp - ds${n}) * (TV)scale;
            s[${r}][${n}] *= kp;
            }
        % else:
            dp[${r}][${n}] = s[${r}][${n}] * (dp[${r}][${n}] - ds${n}) * (TV)scale;
        % endif
      % endfor
% endfor
            const int qn = IMIN(BK, L - qb0);
% if spill:
${spill("pp", "s")}\
${spill("pd", "dp")}\
            for (int e = 0; e < ${DV}; e += ${EC}) {
% for r in range(R):
      % for j in range(EC):
                TV a${r}_${j} = ak[gi][${r}][e + ${j}], b${r}_${j} = av[gi][${r}][e + ${j}];
      % endfor
% endfor
                __global const T *gc = gb + (size_t)qb0 * D + e * ${vw};
                __global const T *qc = qb + (size_t)qb0 * D + e * ${vw};
                for (int cc = 0; cc < qn; ++cc) {
% for j in range(EC):
                    const TV x${j} = LD(gc + (size_t)cc * D + ${j * vw}), y${j} = LD(qc + (size_t)cc * D + ${j * vw});
% endfor
% for r in range(R):
                    { const T wp = pp[${r}][cc], wd = pd[${r}][cc];
      % for j in range(EC):
                      b${r}_${j} += wp * x${j};
                      a${r}_${j} += wd * y${j};
      % endfor
                    }
% endfor
                }
% for r in range(R):
      % for j in range(EC):
                ak[gi][${r}][e + ${j}] = a${r}_${j}; av[gi][${r}][e + ${j}] = b${r}_${j};
      % endfor
% endfor
            }
% else:
% for n in range(NK):
      % for kk in range(vw):
            if (${n * vw + kk} < qn) {
                __global const T *grow = gb + (size_t)(qb0 + ${n * vw + kk}) * D;
                __global const T *qrow = qb + (size_t)(qb0 + ${n * vw + kk}) * D;
                for (int e = 0; e < ${DV}; ++e) {
                    const TV x = LD(grow + e * ${vw}), y = LD(qrow + e * ${vw});
        % for r in range(R):
                    av[gi][${r}][e] += ${lane(f"s[{r}][{n}]", kk)} * x;
                    ak[gi][${r}][e] += ${lane(f"dp[{r}][{n}]", kk)} * y;
        % endfor
                }
            }
      % endfor
% endfor
% endif
% endif
    }
% if with_dq:
    {   // this block's share of dq from all the group's keys, a query row at a time: z += ds * k, the
        // key rows' vectors read straight into the FMAs; the run's first group writes dq, later ones add
        const int qn = IMIN(BK, L - qb0);
        const int zfresh = g0 == kstart;
        for (int cc = 0; cc < qn; ++cc) {
            __global T *dqc = dqb + (size_t)(qb0 + cc) * D;
            for (int e = 0; e < ${DV}; e += ${EC}) {
% for j in range(EC):
                TV z${j} = zfresh ? (TV)0 : LD(dqc + (e + ${j}) * ${vw});
% endfor
                for (int gi = 0; gi < gn; ++gi) {
                    const int r0 = g0 + gi * ${R};
% if causal:
                    if (qb0 + BK <= r0) break;   // this and later key blocks: after every query of the block
% endif
% for r in range(R):
                    {
                        const T w = pdg[gi][${r}][cc];
                        __global const T *kk = kbase + (size_t)IMIN(r0 + ${r}, S - 1) * D + e * ${vw};
  % for j in range(EC):
                        z${j} += w * LD(kk + ${j * vw});
  % endfor
                    }
% endfor
                }
% for j in range(EC):
                ST(z${j}, dqc + (e + ${j}) * ${vw});
% endfor
            }
        }
    }
% endif
    }
    for (int gi = 0; gi < gn; ++gi) {
        const int r0 = g0 + gi * ${R};
% for r in range(R):
        if (r0 + ${r} < S) {
            __global T *ok = dk + ((size_t)bh * S + r0 + ${r}) * D;
            __global T *ov = dv + ((size_t)bh * S + r0 + ${r}) * D;
            for (int e = 0; e < ${DV}; ++e) {
                ST(ak[gi][${r}][e], ok + e * ${vw});
                ST(av[gi][${r}][e], ov + e * ${vw});
            }
        }
% endfor
    }
    }
}

% if dropout:

// The kept-scales as a matrix [BH, L, S] (for the differentiable rule only: create_graph=True).
__kernel void attn_dropout_mask(__global T *restrict out, __global const uint *restrict rng, const uint thresh,
                                const T rescale, const int L, const int S, const int rows)
{
    const int bh = get_global_id(1);
    const int i0 = get_global_id(0) * rows;
    for (int i = i0; i < IMIN(L, i0 + rows); ++i)
        for (int j = 0; j < S; ++j)
            out[((size_t)bh * L + i) * S + j] = attn_keep(rng, thresh, rescale, bh, L, i, j);
}
% endif
