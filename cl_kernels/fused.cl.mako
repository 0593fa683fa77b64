## Several elementwise launches of a capture fused into one kernel (see fusion.py).
##
## Every step is one of the recorded launches: the same expression, over the same element, in the
## same order, with each operand read from its buffer or, when an earlier step of the group wrote
## that buffer, from the register holding what it wrote. Each buffer is stored once, with its last
## value. A work-item walks `chunk` elements like the elementwise kernel (`vector` > 0: that many
## at a time, then the tail one by one), so every element takes the path it took unfused and the
## results are the same bit for bit.
##
## Parameters: ctype, vector (0 or the width), nbuf (buffers b0..), nscal (scalars s0..), steps: one
## (out buffer, ((name, source), ...), ((scalar name, scalar index), ...), expression) per launch, a
## source being ("b", k) for buffer k or ("v", i) for the value step i computed.
<%namespace name="c" file="common.mako"/>\
<%namespace name="erf" file="erf.mako"/>\
${c.preamble(ctype, vector=vector)}\
<% own_erf = context.get("own_erf", False) %>\
% if own_erf:
${erf.functions(vector or 1)}\
% endif
<%
    last = {}
    for i, (out, _ops, _sc, _e) in enumerate(steps):
        last[out] = i
%>
<%def name="steps_for(V, load, store, cast, w)">
% for i, (out, operands, scalar_map, expr) in enumerate(steps):
        ${V} v${i};
        {
  % for name, (kind, k) in operands:
            const ${V} ${name} = ${f"v{k}" if kind == "v" else load(k)};
  % endfor
  % for name, k in scalar_map:
            const T ${name} = s${k};
  % endfor
            v${i} = ${cast}(${erf.rename(expr, w) if context.get("own_erf", False) else expr});
        }
  % if last[out] == i:
        ${store(out, f"v{i}")};
  % endif
% endfor
</%def>

__kernel void fused(
% for k in range(nbuf):
    __global T *b${k},
% endfor
% for k in range(nscal):
    const T s${k},
% endfor
    const int n, const int chunk)
{
    const int start = get_global_id(0) * chunk;
    const int end = min(n, start + chunk);
    int gid = start;
% if vector:
    for (; gid + ${vector} <= end; gid += ${vector}) {
${steps_for("TV", lambda k: f"*(__global const TV *)(b{k} + gid)", lambda k, v: f"*(__global TV *)(b{k} + gid) = {v}", "", vector)}
    }
% endif
    for (; gid < end; ++gid) {
${steps_for("T", lambda k: f"b{k}[gid]", lambda k, v: f"b{k}[gid] = {v}", "(T)", 1)}
    }
}
