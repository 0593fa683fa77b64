## Matrix multiply, C[b] = op(A[b]) @ op(B[b]), for every batch b, in two forms chosen by `strategy`:
##
##   "tiled"    the GPU form: a work-group stages TS x TSK tiles of A and B in local memory and each
##              work-item accumulates a WPT x WPT block of C in registers.
##   "blocked"  the CPU form (GotoBLAS-like): `matmul_blocked` gives each work-item a macro block of
##              C, MCP x NCP micro-tiles of MR x NR, and walks it one KC slice of k at a time, so the
##              KC x NR slice of B that the MCP micro-tiles of a column share stays in L1 and the
##              MR*MCP x KC block of A stays in L2. A micro-tile's accumulators live in vector
##              registers for one slice and go through C between slices. Operands are read through
##              stride arguments, either in place or after `pack_a` / `pack_b` copied them into
##              k-major panels (contiguous streams, zero padding, transposes absorbed); the host
##              decides which per call. PoCL runs a work-group as a loop on one thread, so local
##              memory buys nothing there, and the macro block is one work-item with explicit loops.
##
## Shapes, strides and batch sizes are kernel arguments, so a new shape or batch size never triggers a
## compile. The template is specialised only on the element type, the strategy, the tile sizes and, for
## "tiled", the transpose flags. "blocked" needs no transpose flags: the packing kernels and the
## operand reads go through stride arguments, so one program serves all four combinations, and the
## block sizes (MCP, NCP, KC) are arguments too, so tuning them never compiles anything.
##
## Batching: get_global_id(2) is the output batch index; it is split as (hi, lo) = (b / nb_lo, b % nb_lo)
## and each operand has its own element stride for hi and lo, 0 where that operand is broadcast.
##
## Parameters: ctype ("float" | "double"), strategy, trans_a, trans_b, ts, tsk, wpt (tiled),
## mr, nr, vw, pack_k (blocked).
<%
    T = ctype
    TV = f"{ctype}{vw}"
%>
% if T == "double":
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
% endif
typedef ${T} T;

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
    __global const T *restrict a_base,
    __global const T *restrict b_base,
    __global T *restrict c_base,
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
    __global const T *a = a_base + off_a + hi * sa_hi + lo * sa_lo;
    __global const T *b = b_base + off_b + hi * sb_hi + lo * sb_lo;
    __global T *c = c_base + off_c + (size_t)batch * M * N;

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
            As[kk][mm] = (gm < M && gk < K) ? A_AT(gm, gk) : (T)0;
        }
        for (int l = tid; l < ${ts * tsk}; l += ${nthreads}) {
% if trans_b:
            const int nn = l / ${tsk}, kk = l % ${tsk};
% else:
            const int kk = l / ${ts}, nn = l % ${ts};
% endif
            const int gn = n0 + nn, gk = k0 + kk;
            Bs[kk][nn] = (gn < N && gk < K) ? B_AT(gk, gn) : (T)0;
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
                c[(size_t)m * N + n] = acc[i][j];
        }
    }
}

% elif strategy == "blocked":
<%
    nv = nr // vw           # vectors per accumulator row
%>
% for which, width in (("a", mr), ("b", nr)):
// dst[panel p][k][w] = src(row p*${width} + w, column k), rows past `rows` as 0: ${"A in MR-row" if which == "a" else "B^T in NR-row"}
// panels. The source element (i, k) of batch q is at src[q*src_batch + i*s_row + k*s_k], so the
// transposes are just other strides. One work-item copies a run of ${pack_k} k values of one panel,
// with the inner loop along whichever source axis is contiguous: per work-item loops keep PoCL from
// vectorising across work-items into gathers, and a contiguous inner loop reads each source cache
// line once instead of once per panel row.
__kernel void pack_${which}(
    __global const T *restrict src,
    __global T *restrict dst,
    const int rows, const int K,
    const int s_row, const int s_k, const int src_batch)
{
    const int p = get_global_id(0);
    const int k0 = get_global_id(1) * ${pack_k};
    const int q = get_global_id(2);
    const int k1 = min(K, k0 + ${pack_k});
    const int panels = (rows + ${width - 1}) / ${width};
    __global const T *s = src + (size_t)q * src_batch + (size_t)p * ${width} * s_row;
    __global T *d = dst + ((size_t)q * panels + p) * K * ${width};
    const int valid = min(${width}, rows - p * ${width});
    if (valid == ${width} && s_row == 1) {
        // Panel rows adjacent in memory (B, or A^T): each k is one contiguous run of ${width}.
        for (int k = k0; k < k1; ++k)
            for (int w = 0; w < ${width}; ++w)
                d[k * ${width} + w] = s[k * s_k + w];
    } else if (s_k == 1) {
        // k contiguous (A, or B^T): copy row by row, scattering into the panel (which is in L1).
        for (int w = 0; w < valid; ++w)
            for (int k = k0; k < k1; ++k)
                d[k * ${width} + w] = s[(size_t)w * s_row + k];
        for (int w = valid; w < ${width}; ++w)
            for (int k = k0; k < k1; ++k)
                d[k * ${width} + w] = (T)0;
    } else {
        for (int k = k0; k < k1; ++k)
            for (int w = 0; w < ${width}; ++w)
                d[k * ${width} + w] = w < valid ? s[(size_t)k * s_k + (size_t)w * s_row] : (T)0;
    }
}

% endfor
// One work-item: the macro block of C made of micro-tiles (pm, pn), pm in [mcp*gid0, +mcp) and pn in
// [ncp*gid1, +ncp) (clipped to C), of batch get_global_id(2). Loop order, outermost first: k slices
// of kc, column panels, row panels; so one KC x NR slice of B is reused by the mcp micro-tiles of its
// column while it is in L1, and the mcp*MR x kc block of A by the ncp columns while it is in L2.
//
// Operand addressing (element strides, so in-place and packed operands read alike):
//   A(pm*MR + r, k) at a + pm*a_panel + r*a_row + k*a_k. Only ever read one scalar at a time
//     (broadcast), so any layout works; rows past M are clamped to a valid row, the store drops them.
//   B(k, pn*NR + j) at b + pn*b_panel + k*b_k + j. Read as ${nv} aligned ${TV} vectors, so the host
//     passes B in place only when rows are vector aligned and N is a multiple of NR; otherwise packed
//     (zero padded panels, no bounds checks needed).
// The k loop is plain `acc += a * b` over pointer-cast vector loads: on PoCL that is what LLVM turns
// into packed FMAs, while vload/mad/fma builtins stay out-of-line calls.
__kernel void matmul_blocked(
    __global const T *restrict a_base,
    __global const T *restrict b_base,
    __global T *restrict c_base,
    const int M, const int N, const int K,
    const int a_panel, const int a_row, const int a_k,
    const int b_panel, const int b_k,
    const int mcp, const int ncp, const int kc,
    const int nb_lo,
    const long sa_hi, const long sa_lo,
    const long sb_hi, const long sb_lo,
    const long off_a, const long off_b, const long off_c)
{
    const int batch = get_global_id(2);
    const int hi = batch / nb_lo, lo = batch % nb_lo;
    __global const T *a = a_base + off_a + hi * sa_hi + lo * sa_lo;
    __global const T *b = b_base + off_b + hi * sb_hi + lo * sb_lo;
    __global T *c = c_base + off_c + (size_t)batch * M * N;
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
            __global const T *b_slice = b + (size_t)pn * b_panel + (size_t)k0 * b_k;
            for (int pm = pm0; pm < pm1; ++pm) {
                const int m0 = pm * ${mr};
                const int rows = min(${mr}, M - m0);
                const bool whole = c_vec && rows == ${mr} && cols == ${nr};
                __global T *cc = c + (size_t)m0 * N + n0;
                __global const T *pa = a + (size_t)pm * a_panel + (size_t)k0 * a_k;
% for r in range(mr):
                __global const T *a${r} = pa + (size_t)min(${r}, rows - 1) * a_row;
% endfor
% for r in range(mr):
                ${TV} ${", ".join(f"c{r}_{v}" for v in range(nv))};
% endfor
                if (k0 == 0) {
% for r in range(mr):
                    ${" ".join(f"c{r}_{v} = 0;" for v in range(nv))}
% endfor
                } else if (whole) {
% for r in range(mr):
  % for v in range(nv):
                    c${r}_${v} = *(__global const ${TV} *)(cc + ${r} * (size_t)N + ${v * vw});
  % endfor
% endfor
                } else {
                    // An edge or unaligned tile resumes element by element (once per k slice).
                    T row[${nr}];
% for r in range(mr):
                    for (int j = 0; j < ${nr}; ++j)
                        row[j] = (${r} < rows && j < cols) ? cc[${r} * (size_t)N + j] : (T)0;
  % for v in range(nv):
                    c${r}_${v} = vload${vw}(${v}, row);
  % endfor
% endfor
                }

                __global const T *pb = b_slice;
                for (int k = 0, ak = 0; k < kn; ++k, ak += a_k) {
% for v in range(nv):
                    const ${TV} b${v} = *(__global const ${TV} *)(pb + ${v * vw});
% endfor
% for r in range(mr):
                    {
                        const ${TV} av = (${TV})(a${r}[ak]);
  % for v in range(nv):
                        c${r}_${v} += av * b${v};
  % endfor
                    }
% endfor
                    pb += b_k;
                }

                if (whole) {
% for r in range(mr):
  % for v in range(nv):
                    *(__global ${TV} *)(cc + ${r} * (size_t)N + ${v * vw}) = c${r}_${v};
  % endfor
% endfor
                } else {
                    T row[${nr}];
% for r in range(mr):
                    if (${r} < rows) {
  % for v in range(nv):
                        vstore${vw}(c${r}_${v}, ${v}, row);
  % endfor
                        for (int j = 0; j < cols; ++j)
                            cc[${r} * (size_t)N + j] = row[j];
                    }
% endfor
                }
            }
        }
    }
}
% endif
