## One kernel for every elementwise op: out = expr(inputs..., scalars...).
## Each operand (out first, then the inputs) is either "flat" (element gid of a contiguous buffer) or
## "strided" (offset plus one stride per axis, 0 on a broadcast axis), so broadcasting, transposes,
## narrows and expands never materialise a copy. Shapes, strides and offsets are kernel arguments; the
## template is specialised only on types, rank, operand kinds and the expression.
## Each work-item handles `chunk` consecutive elements: 1 on GPUs (neighbouring work-items touch
## neighbouring addresses), long runs on CPUs (a plain loop the compiler vectorises).
<%
    operands = ("out",) + tuple(names)
    optypes = tuple(types) if types else (ctype,) * len(operands)
    int_names = tuple(context.get("int_scalars", ()))
%>
% if "double" in optypes:
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
% endif
typedef ${ctype} T;
% if ctype == "float":
#define L(x) x##f
% else:
#define L(x) x
% endif

__kernel void ew(
    __global ${optypes[0]} *out,
% for i, name in enumerate(names):
    __global const ${optypes[i + 1]} *in_${name},
% endfor
% for s in scalars:
    const T ${s},
% endfor
% for s in int_names:
    const int ${s},
% endfor
% for op, kind in zip(operands, kinds):
  % if kind == "strided":
    const int off_${op},
    % for k in range(rank):
    const int st_${op}_${k},
    % endfor
  % endif
% endfor
% for k in range(rank):
    const int size_${k},
% endfor
    const int n, const int chunk)
{
    const int start = get_global_id(0) * chunk;
    const int end = min(n, start + chunk);
    for (int gid = start; gid < end; ++gid) {
% for op, kind in zip(operands, kinds):
  % if kind == "strided":
        int at_${op} = off_${op};
  % else:
        const int at_${op} = gid;
  % endif
% endfor
% if "strided" in kinds:
        int rest = gid;
  % for k in reversed(range(rank)):
        {
            const int c = rest % size_${k};
            rest /= size_${k};
    % for op, kind in zip(operands, kinds):
      % if kind == "strided":
            at_${op} += c * st_${op}_${k};
      % endif
    % endfor
        }
  % endfor
% endif
% for i, name in enumerate(names):
        const ${optypes[i + 1]} ${name} = in_${name}[at_${name}];
% endfor
        out[at_out] = (${optypes[0]})(${expr});
    }
}
