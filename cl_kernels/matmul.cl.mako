## Matrix multiply, C[b] = op(A[b]) @ op(B[b]), for every batch b, in two forms chosen by `strategy`:
##
##   "tiled"    the GPU form: a work-group stages TS x TSK tiles of A and B in local memory and each
##              work-item accumulates a WPT x WPT block of C in registers.
##   "blocked"  the CPU form (GotoBLAS-like): `matmul_blocked` gives each work-item a macro block of
##              C, MCP x NCP micro-tiles of MR x NR, and walks it one KC slice of k at a time. For
##              each slice and column panel it copies the KC x NR slice of B into a k-major buffer in
##              local memory (zero padded, any layout of B), which the MCP micro-tiles of that column
##              then read from L1; the MR*MCP x KC block of A stays in L2 and is read in place as
##              broadcast scalars (A or A^T, through strides). A micro-tile's accumulators live in
##              vector registers for one slice and go through C between slices. PoCL runs a
##              work-group as a loop on one thread, so the work-group is one work-item and the macro
##              block is explicit loops.
##
## Shapes, strides and batch sizes are kernel arguments, so a new shape or batch size never triggers a
## compile. The template is specialised only on the element type, the strategy, the tile sizes and, for
## "tiled", the transpose flags. "blocked" needs no transpose flags: operands are read through stride
## arguments, so one program serves all four combinations, and the block sizes (MCP, NCP, KC <= KC_MAX)
## are arguments too, so choosing them never compiles anything.
##
## Batching: get_global_id(2) is the output batch index; it is split as (hi, lo) = (b / nb_lo, b % nb_lo)
## and each operand has its own element stride for hi and lo, 0 where that operand is broadcast.
##
## 16-bit operands (`intype`): A and B are read as their 16-bit bits (a ushort) and converted to float
## where they are loaded (into the tiles, the B panel, the A broadcasts), so no float32 copy of them is
## made; C is float32, accumulated there, and rounded to 16 bits once by the caller.
##
## A 16-bit C (`outtype`, with intype) is written rounded from the float32 accumulators: the tiled form
## keeps them in registers for all of K; the blocked form only when K is one slice (the host's promise:
## kc = K), so that C is never read back; no float32 C is allocated then.
##
## Bias (torch's addmm, for F.linear): with `has_bias` set, C = op(A) op(B) + bias[n], the bias added to
## the finished sum where C is last written (after the last k slice), as a separate add would: the same
## bits, without a launch and a pass over C of its own. `bias` is an argument of every launch, of C's
## type (C's own buffer when has_bias is 0: it is not read then); a 16-bit C never takes one (the
## caller adds it in its rounding pass).
##
## Parameters: ctype ("float" | "double"), strategy, trans_a, trans_b, ts, tsk, wpt (tiled),
## mr, nr, vw, kc_max (blocked), and optionally intype and outtype ("bf16" | "half_bits" | "half").
<%namespace name="c" file="common.mako"/>\
<%!
    def rd(x, intype):
        """The load of 16-bit element `x` as a float (`x` itself without intype)."""
        return {"bf16": f"as_float((uint)({x}) << 16)", "half_bits": f"h2f_({x})",
                "half": f"vload_half(0, &({x}))"}.get(intype, x)

    def wr(ptr, index, value, outtype):
        """The statement storing float `value` at ptr[index], rounded to 16 bits with outtype."""
        if outtype == "half":
            return f"vstore_half_rte({value}, {index}, {ptr})"
        conv = {"bf16": "bf16_rne_", "half_bits": "f2h_"}.get(outtype)
        return f"{ptr}[{index}] = {conv}({value})" if conv else f"{ptr}[{index}] = {value}"

    def out_type(outtype):
        return "ushort" if outtype in ("bf16", "half_bits") else "half" if outtype == "half" else "T"
%>\
<%
    intype = context.get("intype")
    outtype = context.get("outtype")
    # The operands' element type (T without intype), and C's.
    TI = "ushort" if intype in ("bf16", "half_bits") else "half" if intype == "half" else "T"
    TO = out_type(outtype)
%>\
<%namespace name="h" file="half.mako"/>\
## The blocked form's accumulators are vectors (TV) of vw elements; the tiled form has none.
${c.preamble(ctype, vector=vw if strategy == "blocked" else 0)}
% if intype == "half_bits":
${c.h2f()}
% endif
% if outtype == "bf16":
${h.bf16_rne()}
% elif outtype == "half_bits":
${h.f2h()}
% endif

% if strategy == "tiled":
<%
    rt = ts // wpt          # work-items along each side of the tile
    nthreads = rt * rt
%>
## A is [M, K] row-major, or [K, M] when trans_a; B is [K, N], or [N, K] when trans_b.
% if trans_a:
#define A_AT(m, k) a[(size_t)(k) * M + (m)]
% else:
#define A_AT(m, k) a[(size_t)(m) * K + (k)]
% endif
% if trans_b:
#define B_AT(k, n) b[(size_t)(n) * K + (k)]
% else:
#define B_AT(k, n) b[(size_t)(k) * N + (n)]
% endif

__kernel __attribute__((reqd_work_group_size(${rt}, ${rt}, 1)))
void matmul_tiled(
    __global const ${TI} *restrict a_base,
    __global const ${TI} *restrict b_base,
    __global ${TO} *restrict c_base,
    __global const ${TO} *bias,
    const int has_bias,
    const int M, const int N, const int K,
    const int nb_lo,
    const long sa_hi, const long sa_lo,
    const long sb_hi, const long sb_lo,
    const long off_a, const long off_b, const long off_c)
{
    const int tx = get_local_id(0);          // along N: neighbouring work-items touch neighbouring columns
    const int ty = get_local_id(1);          // along M
    const int tid = ty * ${rt} + tx;
    const int m0 = get_group_id(1) * ${ts};
    const int n0 = get_group_id(0) * ${ts};
    const int batch = get_global_id(2);
    const int hi = batch / nb_lo, lo = batch % nb_lo;
    __global const ${TI} *a = a_base + off_a + hi * sa_hi + lo * sa_lo;
    __global const ${TI} *b = b_base + off_b + hi * sb_hi + lo * sb_lo;
    __global ${TO} *c = c_base + off_c + (size_t)batch * M * N;

    // k-major tiles, so the inner loop reads a row of each; the +1 keeps the transposing stores of
    // the loads below from landing in one bank.
    __local T As[${tsk}][${ts} + 1];
    __local T Bs[${tsk}][${ts} + 1];

    T acc[${wpt}][${wpt}];
    for (int i = 0; i < ${wpt}; ++i)
        for (int j = 0; j < ${wpt}; ++j)
            acc[i][j] = (T)0;

    for (int k0 = 0; k0 < K; k0 += ${tsk}) {
        // Cooperative loads, each walking the operand's contiguous axis with consecutive work-items
        // (coalesced); out-of-range elements are stored as 0 so the product loop needs no bounds.
        for (int l = tid; l < ${ts * tsk}; l += ${nthreads}) {
% if trans_a:
            const int kk = l / ${ts}, mm = l % ${ts};
% else:
            const int mm = l / ${tsk}, kk = l % ${tsk};
% endif
            const int gm = m0 + mm, gk = k0 + kk;
            As[kk][mm] = (gm < M && gk < K) ? ${rd("A_AT(gm, gk)", intype)} : (T)0;
        }
        for (int l = tid; l < ${ts * tsk}; l += ${nthreads}) {
% if trans_b:
            const int nn = l / ${tsk}, kk = l % ${tsk};
% else:
            const int kk = l / ${ts}, nn = l % ${ts};
% endif
            const int gn = n0 + nn, gk = k0 + kk;
            Bs[kk][nn] = (gn < N && gk < K) ? ${rd("B_AT(gk, gn)", intype)} : (T)0;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        for (int kk = 0; kk < ${tsk}; ++kk) {
            T bv[${wpt}];
            for (int j = 0; j < ${wpt}; ++j)
                bv[j] = Bs[kk][tx + j * ${rt}];
            for (int i = 0; i < ${wpt}; ++i) {
                const T av = As[kk][ty + i * ${rt}];
                for (int j = 0; j < ${wpt}; ++j)
                    acc[i][j] += av * bv[j];
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    // Rows and columns strided by the work-group side, so a row of work-items writes adjacent columns.
    for (int i = 0; i < ${wpt}; ++i) {
        const int m = m0 + ty + i * ${rt};
        if (m >= M) break;
        for (int j = 0; j < ${wpt}; ++j) {
            const int n = n0 + tx + j * ${rt};
            if (n < N)
                ${wr("c", "(size_t)m * N + n", "acc[i][j]" if outtype else "(has_bias ? acc[i][j] + bias[n] : acc[i][j])", outtype)};
        }
    }
}

% elif strategy == "blocked":
<%
    nv = nr // vw           # vectors per accumulator row
%>
<%def name="micro_tile(nva)">
## One MR x (nva vectors) micro-tile: accumulators in registers for one k slice, through C between
## slices. `nva` < NV is the narrow form, for a column panel with at most nva*VW valid columns (N = 10
## would otherwise spend two thirds of its multiplies on padding).
% for r in range(mr):
                    TV ${", ".join(f"c{r}_{v}" for v in range(nva))};
% endfor
% if context.get("outtype"):
                    {   // one k slice (kc = K): C is only written
% for r in range(mr):
                        ${" ".join(f"c{r}_{v} = 0;" for v in range(nva))}
% endfor
% else:
                    if (k0 == 0) {
% for r in range(mr):
                        ${" ".join(f"c{r}_{v} = 0;" for v in range(nva))}
% endfor
% if nva == nv:
                    } else if (whole) {
  % for r in range(mr):
    % for v in range(nva):
                        c${r}_${v} = *(__global const TV *)(cc + ${r} * (size_t)N + ${v * vw});
    % endfor
  % endfor
% endif
                    } else {
                        // An edge or unaligned tile resumes element by element (once per k slice),
                        // through a private copy: one loop nest, not one loop per row.
                        T tile[${mr * nva * vw}];
                        for (int r = 0; r < ${mr}; ++r)
                            for (int j = 0; j < ${nva * vw}; ++j)
                                tile[r * ${nva * vw} + j] = (r < rows && j < cols) ? cc[r * (size_t)N + j] : (T)0;
% for r in range(mr):
  % for v in range(nva):
                        c${r}_${v} = VLOAD(${r * nva + v}, tile);
  % endfor
% endfor
% endif
                    }

                    __local const TV *pb = panel;
                    for (int k = 0, ak = 0; k < kn; ++k, ak += a_k) {
% for v in range(nva):
                        const TV b${v} = pb[${v}];
% endfor
% for r in range(mr):
                        {
                            const TV av = (TV)(${rd(f"a{r}[ak]", context.get("intype"))});
  % for v in range(nva):
                            c${r}_${v} += av * b${v};
  % endfor
                        }
% endfor
                        pb += ${nv};
                    }
% if not context.get("outtype"):
                    if (has_bias && k0 + kn >= K) {
                        // The sum is complete: add the bias of each column (0 past N, never stored).
                        T bt[${nva * vw}];
                        for (int j = 0; j < ${nva * vw}; ++j)
                            bt[j] = j < cols ? bias[n0 + j] : (T)0;
  % for v in range(nva):
                        {
                            const TV bv = VLOAD(${v}, bt);
                            ${" ".join(f"c{r}_{v} += bv;" for r in range(mr))}
                        }
  % endfor
                    }
% endif

% if nva == nv and not context.get("outtype"):
                    if (whole) {
  % for r in range(mr):
    % for v in range(nva):
                        *(__global TV *)(cc + ${r} * (size_t)N + ${v * vw}) = c${r}_${v};
    % endfor
  % endfor
                    } else
% endif
                    {
                        T tile[${mr * nva * vw}];
% for r in range(mr):
  % for v in range(nva):
                        VSTORE(c${r}_${v}, ${r * nva + v}, tile);
  % endfor
% endfor
                        for (int r = 0; r < rows; ++r)
                            for (int j = 0; j < cols; ++j)
                                ${wr("cc", "r * (size_t)N + j", f"tile[r * {nva * vw} + j]", context.get("outtype"))};
                    }
</%def>
// One work-item (the work-group is one work-item: PoCL runs a work-group as a loop on one thread, so
// the macro block is explicit loops instead): the micro-tiles (pm, pn) of C with pm in
// [mcp*gid0, +mcp) and pn in [ncp*gid1, +ncp) (clipped to C), of batch get_global_id(2). Loop order,
// outermost first: k slices of kc, column panels, row panels.
//
// For each (k slice, column panel) the work-item first copies B(k0.., n0..n0+NR) into `panel`, k-major
// and zero padded past N; the mcp micro-tiles of the column then read it from there (in L1) as aligned
// vectors. Copying here rather than in a separate packing kernel costs no launch, no scratch buffer
// and no second pass over B, reads B in any layout (B^T is just other strides: b_k = 1, b_n = K), and
// keeps a power-of-two row stride of B from crowding the L1 sets. Each B element is copied once per
// row block (mcp*MR rows), which the host keeps large.
//
// A(m, k) is at a + m*a_row + k*a_k and only ever read one scalar at a time (broadcast), so A and A^T
// are both read in place; rows past M are clamped to a valid row and their results dropped.
// The k loop is plain `acc += a * b` over vectors: on PoCL that is what LLVM turns into packed FMAs,
// while vload/mad/fma builtins stay out-of-line calls.
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void matmul_blocked(
    __global const ${TI} *restrict a_base,
    __global const ${TI} *restrict b_base,
    __global ${TO} *restrict c_base,
    __global const ${TO} *bias,
    const int has_bias,
    const int M, const int N, const int K,
    const int a_row, const int a_k,
    const int b_k, const int b_n,
    const int mcp, const int ncp, const int kc,
    const int nb_lo,
    const long sa_hi, const long sa_lo,
    const long sb_hi, const long sb_lo,
    const long off_a, const long off_b, const long off_c)
{
    __local TV panel[${kc_max * nv}];   // kc <= ${kc_max} (the host's promise)
    __local T *panel_t = (__local T *)panel;
    const int batch = get_global_id(2);
    const int hi = batch / nb_lo, lo = batch % nb_lo;
    __global const ${TI} *a = a_base + off_a + hi * sa_hi + lo * sa_lo;
    __global const ${TI} *b = b_base + off_b + hi * sb_hi + lo * sb_lo;
    __global ${TO} *c = c_base + off_c + (size_t)batch * M * N;
    const int pm0 = get_global_id(0) * mcp, pm1 = min((M + ${mr - 1}) / ${mr}, pm0 + mcp);
    const int pn0 = get_global_id(1) * ncp, pn1 = min((N + ${nr - 1}) / ${nr}, pn0 + ncp);
    // Whole-vector C access needs every row of C vector aligned: N a multiple of the vector width and
    // the batch offset too.
    const bool c_vec = N % ${vw} == 0 && (size_t)(c - c_base) % ${vw} == 0;

    for (int k0 = 0; k0 < K; k0 += kc) {
        const int kn = min(kc, K - k0);
        for (int pn = pn0; pn < pn1; ++pn) {
            const int n0 = pn * ${nr};
            const int cols = min(${nr}, N - n0);
            __global const ${TI} *bs = b + (size_t)k0 * b_k + (size_t)n0 * b_n;
            if (b_n == 1 && cols == ${nr}) {
                // Rows of B: each k is one contiguous run of NR.
                for (int k = 0; k < kn; ++k)
                    for (int j = 0; j < ${nr}; ++j)
                        panel_t[k * ${nr} + j] = ${rd("bs[(size_t)k * b_k + j]", intype)};
            } else if (b_k == 1) {
                // B^T: k is contiguous, so walk it in the inner loop and scatter into the panel.
                for (int j = 0; j < cols; ++j)
                    for (int k = 0; k < kn; ++k)
                        panel_t[k * ${nr} + j] = ${rd("bs[(size_t)j * b_n + k]", intype)};
                for (int k = 0; k < kn; ++k)
                    for (int j = cols; j < ${nr}; ++j)
                        panel_t[k * ${nr} + j] = (T)0;
            } else {
                for (int k = 0; k < kn; ++k)
                    for (int j = 0; j < ${nr}; ++j)
                        panel_t[k * ${nr} + j] = j < cols ? ${rd("bs[(size_t)k * b_k + (size_t)j * b_n]", intype)} : (T)0;
            }

            for (int pm = pm0; pm < pm1; ++pm) {
                const int m0 = pm * ${mr};
                const int rows = min(${mr}, M - m0);
                const bool whole = c_vec && rows == ${mr} && cols == ${nr};
                __global ${TO} *cc = c + (size_t)m0 * N + n0;
                __global const ${TI} *pa = a + (size_t)m0 * a_row + (size_t)k0 * a_k;
% for r in range(mr):
                __global const ${TI} *a${r} = pa + (size_t)min(${r}, rows - 1) * a_row;
% endfor
% if nv > 1:
                if (cols <= ${vw}) {
${micro_tile(1)}
                } else {
${micro_tile(nv)}
                }
% else:
                {
${micro_tile(nv)}
                }
% endif
            }
        }
    }
}
% endif
