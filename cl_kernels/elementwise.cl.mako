## One kernel for every elementwise op: out = expr(inputs..., scalars...).
## Each operand (out first, then the inputs) is either "flat" (element gid of a contiguous buffer) or
## "strided" (offset plus one stride per axis, 0 on a broadcast axis), so broadcasting, transposes,
## narrows and expands never materialise a copy. Shapes, strides and offsets are kernel arguments; the
## template is specialised only on types, rank, operand kinds and the expression. Operand names must
## not end in an underscore (the loop's own variables do).
## Each work-item handles `chunk` consecutive elements: 1 on GPUs (neighbouring work-items touch
## neighbouring addresses), long runs on CPUs (a plain loop the compiler vectorises).
## Counts, strides, offsets and positions are of type `itype`: int (the default, and what every tensor
## below 2**31 elements uses) or long, for tensors and views that reach past 2**31 - 1 elements.
## 16-bit floats are storage types (kernels.py): an operand of type "half" (float16) is read with
## vload_half and written with vstore_half_rte, one of type "bf16" (bfloat16's bits in a ushort) is
## read by a shift into a float's upper half and written rounded to nearest even (bf16_rne_); the
## expression itself computes in T (float, or double beside a float64 operand; a double result is
## rounded to float first, then to 16 bits, as torch converts). With half_io="bits"
## (CPUs, where PoCL's vload_half/vstore_half_rte are calls ~15x slower than the arithmetic) float16 is
## converted by integer arithmetic instead (h2f_, f2h_): the same values bit for bit, NaN and inf
## kept, ties to even, subnormals exact (checked against numpy over every float32).
<%
    operands = ("out",) + tuple(names)
    optypes = tuple(types) if types else (ctype,) * len(operands)
    int_names = tuple(context.get("int_scalars", ()))
    # The index type: int while the tensors fit in 32 bits (the default), long beyond.
    I = context.get("itype", "int")
    # Float operands are read as T, the widest float type: float32 op float64 computes in double, and
    # builtins like fmod(a, b) are not ambiguous between their float and double forms.
    loadtypes = tuple(ctype if t in ("float", "double", "half", "bf16") else t for t in optypes[1:])
    def store(value):
        # A bool result (stored as uchar) is 1 for any non-zero value, as a cast to bool is in C.
        return f"(uchar)({value} != 0)" if optypes[0] == "uchar" else f"({optypes[0]}){value}"
    bits = context.get("half_io", "builtin") == "bits"
    def put(index, value):
        # The statement that writes `value` to out[index].
        if optypes[0] == "half" and bits:
            return f"out[{index}] = f2h_((float){value})"
        if optypes[0] == "half":
            return f"vstore_half_rte((float){value}, {index}, out)"   # double through float, as torch
        if optypes[0] == "bf16":
            return f"out[{index}] = bf16_rne_((float){value})"
        return f"out[{index}] = {store(value)}"
    def get(i, name, index):
        # Input `name` (the i-th) at `index`.
        t = optypes[i + 1]
        if t == "half" and bits:
            return f"h2f_(in_{name}[{index}])"
        if t == "half":
            return f"vload_half({index}, in_{name})"
        if t == "bf16":
            return f"as_float((uint)in_{name}[{index}] << 16)"
        return f"in_{name}[{index}]"
    def pointee(t):
        return "ushort" if t == "bf16" or (t == "half" and bits) else t
%>
<%namespace name="c" file="common.mako"/>\
<%namespace name="h" file="half.mako"/>\
<%namespace name="erf" file="erf.mako"/>\
${c.preamble(ctype, vector=context.get("vector", 0), fp64="double" in optypes)}\
<%
    own_erf = context.get("own_erf", False)
    def ex(w=1):
        # The expression over values of width w: with own_erf, erf/erfc call erf.mako's functions.
        return erf.rename(expr, w) if own_erf else expr
%>\
% if own_erf:
${erf.functions(context.get("vector", 0) or 1)}\
% endif
% if "bf16" in optypes[:1]:
${h.bf16_rne()}\
% endif
% if bits and "half" in optypes[1:]:

${c.h2f()}\
% endif
% if bits and "half" in optypes[:1]:
${h.f2h()}\
% endif
% if context.get("vector", 0) and optypes[0] in ("half", "bf16"):
<%
    vw = context["vector"]
%>
// The CPU vector loop's 16-bit loads and stores, ${vw} lanes at a time: the scalar h2f_/f2h_ and
  % if optypes[0] == "half":
// bf16_rne_ above with their branches as bit blends (the same bits; PoCL's select() is a slow call),
// or F16C's instructions where the CPU has them (half.mako).
  % else:
// bf16_rne_ above with their branches as bit blends (the same bits; PoCL's select() is a slow call).
  % endif
${h.vector_conversions(vw, ("blend", "bf2f", "f2bf") if optypes[0] == "bf16" else ("blend", "h2f", "f2h"))}\
% endif
% if "ipow_" in expr:

// Integer powers as torch computes them: exact, wrapping on overflow (unsigned arithmetic, where
// OpenCL C defines it); a negative exponent gives what integer division would (1, +-1 or 0).
inline long ipow_(long a, long e)
{
    if (e < 0) return a == 1 ? 1 : (a == -1 ? ((e & 1) ? -1 : 1) : 0);
    ulong r = 1, b = (ulong)a;
    while (e > 0) { if (e & 1) r *= b; b *= b; e >>= 1; }
    return (long)r;
}
% endif

__kernel void ew(
    __global ${pointee(optypes[0])} *out,
% for i, name in enumerate(names):
    __global const ${pointee(optypes[i + 1])} *in_${name},
% endfor
% for s in scalars:
    const T ${s},
% endfor
% for s in int_names:
    const int ${s},
% endfor
% for s in context.get("long_scalars", ()):
    const long ${s},
% endfor
% for op, kind in zip(operands, kinds):
  % if kind == "strided":
    const ${I} off_${op},
    % for k in range(rank):
    const ${I} st_${op}_${k},
    % endfor
  % endif
% endfor
% for k in range(rank):
    const ${I} size_${k},
% endfor
    const ${I} n, const ${I} chunk)
{
    const ${I} start = get_global_id(0) * chunk;
    const ${I} end = min(n, start + chunk);
% if "strided" not in kinds:
<% vw = context.get("vector", 0) %>
    ${I} gid = start;
  % if vw:
    // CPU runs of contiguous operands, ${vw} elements at a time: math builtins (exp, tanh, ...) have
    // vector versions, but a scalar loop calls the scalar ones. Runs start at multiples of the chunk,
    // so the vector loads are aligned; the tail is done one element at a time.
    for (; gid + ${vw} <= end; gid += ${vw}) {
    % for i, name in enumerate(names):
      % if optypes[i + 1] in ("half", "bf16"):
        const TV ${name} = ${"h2f_v" if optypes[i + 1] == "half" else "bf2f_v"}(*(__global const ushort${vw} *)(in_${name} + gid));
      % else:
        const TV ${name} = *(__global const TV *)(in_${name} + gid);
      % endif
    % endfor
    % if optypes[0] in ("half", "bf16"):
        *(__global ushort${vw} *)(out + gid) = ${"f2h_v" if optypes[0] == "half" else "f2bf_v"}(${ex(vw)});
    % else:
        *(__global TV *)(out + gid) = ${ex(vw)};
    % endif
    }
  % endif
    for (; gid < end; ++gid) {
  % for i, name in enumerate(names):
        const ${loadtypes[i]} ${name} = ${get(i, name, "gid")};
  % endfor
        ${put("gid", "(" + ex() + ")")};
    }
% else:
<%
    last = rank - 1
    steps = dict(zip(operands, context.get("inner") or ("s",) * len(operands)))
    def at(op, kind):
        if kind != "strided":
            return "flat_"
        if steps[op] == "1":
            return f"base_{op} + col_"
        if steps[op] == "0":
            return f"base_{op}"
        return f"base_{op} + col_ * st_{op}_{last}"
%>
    // Walk the run row by row: the coordinates above the last axis (div/mod) are worked out once per
    // row, and along a row each operand moves by its last-axis stride (1, 0 or general), which keeps
    // the inner loop free of divisions.
    ${I} flat_ = start;
    while (flat_ < end) {
        ${I} col_ = flat_ % size_${last};
        ${I} rest_ = flat_ / size_${last};
  % for op, kind in zip(operands, kinds):
    % if kind == "strided":
        ${I} base_${op} = off_${op};
    % endif
  % endfor
  % for k in reversed(range(last)):
        {
            const ${I} c_ = rest_ % size_${k};
            rest_ /= size_${k};
    % for op, kind in zip(operands, kinds):
      % if kind == "strided":
            base_${op} += c_ * st_${op}_${k};
      % endif
    % endfor
        }
  % endfor
        const ${I} stop_ = min(size_${last}, col_ + (end - flat_));
        for (; col_ < stop_; ++col_, ++flat_) {
            const ${I} gid = flat_;
  % for i, (name, kind) in enumerate(zip(names, kinds[1:])):
            const ${loadtypes[i]} ${name} = ${get(i, name, at(name, kind))};
  % endfor
            ${put(at("out", kinds[0]), "(" + ex() + ")")};
        }
    }
% endif
}
