## Convolution as an implicit GEMM for CPUs: no column matrix, the products read a zero-padded copy of
## the input (xp [images, groups, Cg, HP, WP], `pad_planes`) through two index tables:
## kernel tap t = (c, i, j) at output position p = (oh, ow) reads xp at tap(t) + pos(p) in its image and
## group, where
##     tap(t) = c * HP*WP + i * DH * WP + j * DW,     pos(p) = oh * SH * WP + ow * SW,
## so im2col's matrix is B(t, p) = xp[tap(t) + pos(p)] and never exists. Both tables are computed in the
## kernel (once per k slice or column panel), so nothing is uploaded.
##
## `conv_gemm` is matmul.cl.mako's "blocked" product (macro blocks of MR x NV-vector micro-tiles whose
## accumulators stay in registers over a k slice; the slice's NR columns of the right operand copied
## into a k-major panel in local memory first), in two modes:
##
##   fwd    y[n, g] (M = out channels x positions) = W[g] (M x K taps) @ B. With stride 1 each vector
##          of B is read in place (`direct`): the output's own positions, a vector that runs past a
##          row's end blending in the next row's start, read `gap` = WP - OW further on; or (rows
##          shorter than a vector) positions on the padded input's grid, p' = oh * WP + ow (CW = WP),
##          each panel one contiguous run of xp, the columns with ow >= OW computed and dropped when C
##          is stored. With a stride each panel is gathered into local memory. The input gradient of
##          a stride-1 convolution is this mode too: the padded upstream gradient convolved with the
##          flipped weight.
##   wgrad  dW[g]^T (M = K taps x out channels) = sum over images of B (taps x positions) @ g[n, g]^T:
##          the left operand's rows are read in place, row r of tap t at xp + tap(t), column k at
##          pos(k) from a table shared by the rows; the panel is the upstream gradient's rows, copied
##          transposed. A work-item sums a run of images into its own partial result.
##
## Parameters: ctype, mr, nr, vw, kc_max, kt_max (offset tables), mode ("fwd" | "wgrad"), direct.
<%namespace name="c" file="common.mako"/>\
${c.preamble(ctype, vector=vw)}
<%
    nv = nr // vw
    wgrad = mode == "wgrad"
    direct = context.get("direct", False)
    hexd = "0123456789abcdef"

    def lane(v, l):
        """Lane l of vector expression v (vw == 1: v itself)."""
        return v if vw == 1 else f"{v}.s{hexd[l]}"

    def IMIN_ROW(r):
        """Row r of the micro-tile, clamped to the rows of C (rows past M are read and dropped)."""
        return f"IMIN({r}, rows - 1)"

    itype = "long" if ctype == "double" else "int"
    ti = itype if vw == 1 else f"{itype}{vw}"

    def ivec(items):
        """A TI (the integer vector of TV's shape) of these scalar expressions."""
        return items[0] if vw == 1 else f"({ti})(" + ", ".join(items) + ")"

    def blend(a, b, m):
        """The lanes of TV a, those set in TI mask m taken from TV b instead."""
        return f"as_{ctype}{vw}((as_{ti}({a}) & ~{m}) | (as_{ti}({b}) & {m}))"

    def vec(items):
        """A TV of these scalar expressions."""
        return items[0] if vw == 1 else "(TV)(" + ", ".join(items) + ")"
%>
// TV at any element boundary: a plain load or store, not an out-of-line vload/vstore call on PoCL.
typedef TV __attribute__((aligned(sizeof(T)))) TVU;
typedef ${ti} TI;      // TV's lanes as integers (masks)

// min() is an out-of-line call on PoCL; this is not.
#define IMIN(a, b) ((a) < (b) ? (a) : (b))

// Offset of kernel tap t = (c, i, j) in a padded image group, and of column p = (p / CW, p % CW).
inline int tap_off(const int t, const int KH, const int KW, const int HPWP, const int WP, const int DH, const int DW)
{
    const int j = t % KW, ci = t / KW;
    return (ci / KH) * HPWP + (ci % KH) * DH * WP + j * DW;
}

inline int pos_off(const int p, const int CW, const int WP, const int SH, const int SW)
{
    return (p / CW) * SH * WP + (p % CW) * SW;
}

<%def name="kloop(mt, direct_b, mixed=False)">
## The k loop of one micro-tile: B from the panel, or (direct_b: consecutive positions, fwd) read in
## place from the padded input, unaligned vectors at bx + koff[k]; (mixed: a vector's lanes past an
## output row's end come from `gap` further on: two loads and a blend by the panel's lane masks).
% if direct_b and mixed:
                    for (int k = 0; k < kn; ++k) {
                        __global const T *bk = xb + koff[k];
% for v in range(nv):
                        const TV b${v} = ${blend(f"*(__global const TVU *)(bk + bo{v})", f"*(__global const TVU *)(bk + bo{v} + gap)", f"lm{v}")};
% endfor
                        const int ak = k;
% elif direct_b:
                    __global const T *bx = xb + noff[0];
                    for (int k = 0; k < kn; ++k) {
                        __global const T *bk = bx + koff[k];
% for v in range(nv):
                        const TV b${v} = *(__global const TVU *)(bk + ${v * vw});
% endfor
                        const int ak = k;
% else:
                    __local const TV *pb = panel;
                    for (int k = 0; k < kn; ++k) {
% if wgrad:
                        const int ak = koff[k];
% else:
                        const int ak = k;
% endif
% for v in range(nv):
                        const TV b${v} = pb[${v}];
% endfor
                        pb += ${nv};
% endif
% for r in range(mt):
                        {
                            const TV av = (TV)(a${r}[ak]);
  % for v in range(nv):
                            c${r}_${v} += av * b${v};
  % endfor
                        }
% endfor
                    }
</%def>

<%def name="micro(mt)">
                    const bool whole = c_vec && dense && rows == ${mt};
                    __global T *cc = c + (size_t)m0 * ldc;
% if wgrad:
% for r in range(mt):
                    __global const T *a${r} = xb + toff[m0 - pm0 * ${mr} + IMIN(${r}, rows - 1)];
% endfor
% else:
                    __global const T *pa = wb + (size_t)m0 * K + k0;
% for r in range(mt):
                    __global const T *a${r} = pa + (size_t)IMIN(${r}, rows - 1) * K;
% endfor
% endif
% for r in range(mt):
                    TV ${", ".join(f"c{r}_{v}" for v in range(nv))};
% endfor
                    if (first) {
% for r in range(mt):
                        {
                            const TV z = has_bias ? (TV)(bias_g[m0 + IMIN(${r}, rows - 1)]) : (TV)0;
                            ${" ".join(f"c{r}_{v} = z;" for v in range(nv))}
                        }
% endfor
                    } else if (whole) {
% for r in range(mt):
  % for v in range(nv):
                        c${r}_${v} = *(__global const TV *)(cc + ${r} * (size_t)ldc + cix[0] + ${v * vw});
  % endfor
% endfor
                    } else {
                        // Vector by vector where its columns are kept and consecutive, else lane by lane.
% for v in range(nv):
                        if (cix[${v * vw}] >= 0 && cix[${v * vw + vw - 1}] - cix[${v * vw}] == ${vw - 1}) {
  % for r in range(mt):
                            c${r}_${v} = *(__global const TVU *)(cc + ${IMIN_ROW(r)} * (size_t)ldc + cix[${v * vw}]);
  % endfor
                        } else {
  % for r in range(mt):
                            {
                                __global const T *cr = cc + ${IMIN_ROW(r)} * (size_t)ldc;
                                c${r}_${v} = ${vec([f"(cix[{v * vw + l}] >= 0 ? cr[cix[{v * vw + l}]] : (T)0)" for l in range(vw)])};
                            }
  % endfor
                        }
% endfor
                    }

% if direct and not wgrad and vw > 1:
                    if (contig && mixed) {
${kloop(mt, True, True)}
                    } else if (contig) {
${kloop(mt, True)}
                    } else {
${kloop(mt, False)}
                    }
% elif direct and not wgrad:
                    if (contig) {
${kloop(mt, True)}
                    } else {
${kloop(mt, False)}
                    }
% else:
${kloop(mt, False)}
% endif

                    if (whole) {
% for r in range(mt):
  % for v in range(nv):
                        *(__global TV *)(cc + ${r} * (size_t)ldc + cix[0] + ${v * vw}) = c${r}_${v};
  % endfor
% endfor
                    } else {
                        // Vector by vector where its columns are kept and consecutive, else lane by lane.
% for v in range(nv):
                        if (cix[${v * vw}] >= 0 && cix[${v * vw + vw - 1}] - cix[${v * vw}] == ${vw - 1}) {
  % for r in range(mt):
                            if (${r} < rows) *(__global TVU *)(cc + ${r} * (size_t)ldc + cix[${v * vw}]) = c${r}_${v};
  % endfor
                        } else {
  % for r in range(mt):
                            if (${r} < rows) {
                                __global T *cr = cc + ${r} * (size_t)ldc;
    % for l in range(vw):
                                if (cix[${v * vw + l}] >= 0) cr[cix[${v * vw + l}]] = ${lane(f"c{r}_{v}", l)};
    % endfor
                            }
  % endfor
                        }
% endfor
                    }
</%def>

// Work-item (gid0, gid1, s * G + g): micro-tiles pm in [mcp*gid0, +mcp), pn in [ncp*gid1, +ncp) of C
// for group g, summed over images n in [s*images, (s+1)*images) (fwd: images = 1). Image n's operands
// start at w_base + n*w_img + g*w_grp (fwd: the weight, M x K; wgrad: the upstream gradient, N x K) and
// xp + n*x_img + g*x_grp; C at c + s*c_img + g*c_grp, rows ldc apart. `bias` (with has_bias, fwd) is
// added to row m of C: bias[g*M + m].
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void conv_gemm(__global const T *restrict w_base, __global const T *restrict x_base,
               __global T *restrict c_base, __global const T *restrict bias,
               const int M, const int N, const int K, const int ldc, const int G, const int images, const int NIMG,
               const long w_img, const long w_grp, const long x_img, const long x_grp,
               const long c_img, const long c_grp,
               const int KH, const int KW, const int HPWP, const int WP, const int DH, const int DW,
               const int CW, const int OW, const int SH, const int SW,
               const int mcp, const int ncp, const int kc, const int has_bias, const int flat,
               const int gap)
{
    __local TV panel[${kc_max * nv}];    // kc <= ${kc_max} (the host's promise)
    __local T *panel_t = (__local T *)panel;
    __local int koff[${kt_max}];      // kc <= ${kt_max}, and <= ${kc_max} where a panel is copied
    const int s = get_global_id(2) / G, g = get_global_id(2) % G;
    const int n_first = s * images, n_last = IMIN(NIMG, n_first + images);
    __global T *c = c_base + s * c_img + g * c_grp;
    const int pm0 = get_global_id(0) * mcp, pm1 = IMIN((M + ${mr - 1}) / ${mr}, pm0 + mcp);
    const int pn0 = get_global_id(1) * ncp, pn1 = IMIN((N + ${nr - 1}) / ${nr}, pn0 + ncp);
    const bool c_vec = ldc % ${vw} == 0 && (size_t)(c - c_base) % ${vw} == 0;
    __global const T *bias_g = bias + g * M;
% if wgrad:
    // The tap offsets of this work-item's rows (mcp * MR <= ${kt_max}: the host's promise).
    __local int toff[${kt_max}];
    {
        const int m_lo = pm0 * ${mr}, m_hi = IMIN(M, pm1 * ${mr});
        int j = m_lo % KW, t = m_lo / KW;
        int i = t % KH, cc = t / KH;
        for (int m = m_lo; m < m_hi; ++m) {
            toff[m - m_lo] = cc * HPWP + i * DH * WP + j * DW;
            if (++j == KW) { j = 0; if (++i == KH) { i = 0; ++cc; } }
        }
    }
% endif

    for (int img = n_first; img < n_last; ++img) {
        __global const T *wb = w_base + img * w_img + g * w_grp;
        __global const T *xb = x_base + img * x_img + g * x_grp;
        for (int k0 = 0; k0 < K; k0 += kc) {
            const int kn = IMIN(kc, K - k0);
            const bool first = k0 == 0 && img == n_first;
            // The slice's offsets, walked with counters (a division per entry costs as much as the
            // multiplies of a few k steps).
% if wgrad:
            {
                int oh = k0 / CW, ow = k0 % CW;
                for (int k = 0; k < kn; ++k) {
                    koff[k] = oh * SH * WP + ow * SW;
                    if (++ow == CW) { ow = 0; ++oh; }
                }
            }
% else:
            {
                int j = k0 % KW, t = k0 / KW;
                int i = t % KH, cc = t / KH;
                for (int k = 0; k < kn; ++k) {
                    koff[k] = cc * HPWP + i * DH * WP + j * DW;
                    if (++j == KW) { j = 0; if (++i == KH) { i = 0; ++cc; } }
                }
            }
% endif
            for (int pn = pn0; pn < pn1; ++pn) {
                const int n0 = pn * ${nr};
                const int cols = IMIN(${nr}, N - n0);
                // Where C's columns go: cix[j] (-1: dropped).
                int cix[${nr}];
% if wgrad:
                // The panel: rows n0.. of the upstream gradient, k contiguous, scattered k-major.
                for (int j = 0; j < ${nr}; ++j) {
                    cix[j] = j < cols ? n0 + j : -1;
                    __global const T *src = wb + (size_t)(n0 + IMIN(j, cols - 1)) * K + k0;
                    if (j < cols)
                        for (int k = 0; k < kn; ++k) panel_t[k * ${nr} + j] = src[k];
                    else
                        for (int k = 0; k < kn; ++k) panel_t[k * ${nr} + j] = (T)0;
                }
% else:
                int noff[${nr}];
                {
                    int oh = n0 / CW, ow = n0 % CW;     // column n0 + j, walked (one division per panel)
                    for (int j = 0; j < ${nr}; ++j) {
                        noff[j] = oh * SH * WP + ow * SW;
                        cix[j] = j < cols && ow < OW ? oh * OW + ow : -1;
                        if (++ow == CW) { ow = 0; ++oh; }     // (past N too: read, then dropped)
                    }
                }
% if direct and vw > 1:
                // gap > 0 (stride 1, the output's own positions, rows at least a vector long): a vector
                // whose positions run past an output row's end takes those lanes from gap further on
                // (the next row of xp); its lanes in lm<v>.
% for v in range(nv):
                const int bo${v} = noff[${v * vw}];
                const TI lm${v} = ${ivec([f"(noff[{v * vw + l}] != bo{v} + {l} ? -1 : 0)" for l in range(vw)])};
% endfor
                // (a vector that starts a new row breaks the panel's run too: then each vector at its own bo)
                const bool mixed = gap > 0 && (${" || ".join(f"noff[{v * vw + vw - 1}] != bo0 + {v * vw + vw - 1}" for v in range(nv))});
% endif
                // (flat: every panel's positions are consecutive (the padded grid's, or whole output rows
                // of panels), the buffer long enough for a last panel past N: all read in place.)
                const bool contig = flat || (cols == ${nr} && noff[${nr - 1}] - noff[0] == ${nr - 1});
% if direct:
                if (contig) {
                    // Read in place by the micro-tiles (direct): no panel.
                } else
% endif
                if (contig) {
                    // Consecutive positions: one contiguous run of NR per k.
                    for (int k = 0; k < kn; ++k) {
                        __global const T *src = xb + koff[k] + noff[0];
                        for (int j = 0; j < ${nr}; ++j)
                            panel_t[k * ${nr} + j] = src[j];
                    }
                } else {
                    for (int j = 0; j < ${nr}; ++j) {
                        __global const T *src = xb + noff[j];
                        if (j < cols)
                            for (int k = 0; k < kn; ++k) panel_t[k * ${nr} + j] = src[koff[k]];
                        else
                            for (int k = 0; k < kn; ++k) panel_t[k * ${nr} + j] = (T)0;
                    }
                }
% endif
                // Whole-vector C access: all NR columns kept, consecutive and vector aligned.
                const bool dense = cols == ${nr} && cix[0] >= 0 && cix[${nr - 1}] - cix[0] == ${nr - 1}
                                   && cix[0] % ${vw} == 0;

                for (int pm = pm0; pm < pm1; ++pm) {
                    const int m0 = pm * ${mr};
                    const int rows = IMIN(${mr}, M - m0);
                    // (A last row block of fewer than MR rows computes MR, clamped, and stores its own:
                    // narrower micro-tiles for it measured slower, the kernel's code grown 3x.)
${micro(mr)}
                }
            }
        }
    }
}

// y[p, r, s] = x[p, r - top, s - left] inside x, else 0: planes [H, W] placed in [HO, WO] planes
// (a negative top/left crops). Work-item gid pads rows [r0, r0 + RB) of plane gid / blocks (few,
// long-running work-items: PoCL's cost per work-group is that of copying a few rows). `pad_planes_sum`
// also writes the sum of x over its rows to sums[gid] (each row's in 4 running sums, then added, the
// rows in order: a fixed order), for a bias gradient with no second pass over x.
<%def name="pad_kernel(name, sums)">
__kernel void ${name}(__global const T *restrict x, __global T *restrict y,
% if sums:
                      __global T *restrict sums,
% endif
                      const int H, const int W, const int HO, const int WO, const int top, const int left,
                      const int RB, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int blocks = (HO + RB - 1) / RB;
    const int p = gid / blocks, ro0 = (gid % blocks) * RB, ro1 = IMIN(HO, ro0 + RB);
    const int lo = clamp(left, 0, WO), hi = clamp(left + W, lo, WO);
% if sums:
    T total = (T)0;
% endif
    for (int ro = ro0; ro < ro1; ++ro) {
        const int r = ro - top;
        __global T *dst = y + ((long)p * HO + ro) * WO;
        if (r < 0 || r >= H) {
            for (int s = 0; s < WO; ++s) dst[s] = (T)0;
            continue;
        }
        __global const T *src = x + ((long)p * H + r) * W - left;
        for (int s = 0; s < lo; ++s) dst[s] = (T)0;
        for (int s = lo; s < hi; ++s) dst[s] = src[s];
        for (int s = hi; s < WO; ++s) dst[s] = (T)0;
% if sums:
        // The whole row of x, cropped columns included.
        __global const T *row = src + left;
        T a0 = (T)0, a1 = (T)0, a2 = (T)0, a3 = (T)0;
        int s = 0;
        for (; s + 4 <= W; s += 4) {
            a0 += row[s]; a1 += row[s + 1]; a2 += row[s + 2]; a3 += row[s + 3];
        }
        for (; s < W; ++s) a0 += row[s];
        total += (a0 + a1) + (a2 + a3);
% endif
    }
% if sums:
    sums[gid] = total;
% endif
}
</%def>
${pad_kernel("pad_planes", False)}
${pad_kernel("pad_planes_sum", True)}

// The weight of the input gradient as a convolution: wf[g, c, o, i, j] = w[g*Og + o, c, KH-1-i, KW-1-j]
// (w: [G*Og, Cg, KH, KW]); one element per work-item.
__kernel void flip_weight(__global const T *restrict w, __global T *restrict wf, const int Og, const int Cg,
                          const int KK, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    int t = gid;
    const int ij = t % KK; t /= KK;
    const int o = t % Og; t /= Og;
    const int cc = t % Cg;
    const int g = t / Cg;
    wf[gid] = w[(((long)g * Og + o) * Cg + cc) * KK + (KK - 1 - ij)];
}

// The weight gradient from the weight-gradient products' partials part[runs, G, K, Og] (dW^T per run):
// dw[g, o, k] = sum over runs, in order, of part[r, g, k, o]. One element per work-item.
__kernel void sum_runs(__global const T *restrict part, __global T *restrict dw, const int runs, const int K,
                       const int Og, const int n)
{
    const int gid = get_global_id(0);
    if (gid >= n) return;
    const int k = gid % K, t = gid / K;
    const int o = t % Og, g = t / Og;
    __global const T *p = part + ((long)g * K + k) * Og + o;
    const long step = (long)n;          // one run: G * K * Og elements
    T total = p[0];
    for (int r = 1; r < runs; ++r) total += p[r * step];
    dw[gid] = total;
}
