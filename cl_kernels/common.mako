## What every kernel template shares, imported once at its top:
##
##     <%namespace name="c" file="common.mako"/>\
##     ${c.preamble(ctype, vector=vw)}
##
## Two kinds of defs live here. Some write OpenCL where they are called (`preamble`, `geometry`, and
## `tree_fold`, used as a tag around its body). Others return a piece of OpenCL as a string, for the
## Python blocks that build a template's loops (`lanes`, `hsum`); they write nothing.
## Changing anything here changes the source of every kernel, so every program builds again once.

## The start of every program with an element type: the fp64 extension when a double is used,
## `T` (the element type), `L(x)` (a literal of T: `L(0.5)` is 0.5f for float), and with `vector`
## > 0 the vector type `TV` of that many T with its `VLOAD(i, p)`/`VSTORE(v, i, p)` (vloadn/vstoren;
## for a width of 1, `TV` is T and they read and write p[i], so a template needs no scalar copy of
## its vector loop). `fp64`: whether some other type than T is double (mixed elementwise operands).
<%def name="preamble(ctype, vector=0, fp64=False)">\
% if ctype == "double" or fp64:
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
% endif
% if ctype == "half":
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
% endif
typedef ${ctype} T;
% if ctype == "float":
#define L(x) x##f
% else:
#define L(x) x
% endif
% if vector == 1:
typedef T TV;
#define VLOAD(i, p) ((p)[i])
#define VSTORE(v, i, p) ((p)[i] = (v))
% elif vector:
typedef ${ctype}${vector} TV;
#define VLOAD vload${vector}
#define VSTORE vstore${vector}
% endif
</%def>

## The lane names of a vector of `vw` elements (s0 .. sf), for folds written out lane by lane.
<%def name="lanes(vw)"><%
    return [f"s{'0123456789abcdef'[k]}" for k in range(vw)]
%></%def>

## The horizontal sum of vector `v`, its lanes added left to right: "(v.s0 + v.s1 + ...)".
<%def name="hsum(v, vw)"><%
    return "(" + " + ".join(f"{v}.{lane}" for lane in lanes(vw)) + ")"
%></%def>

## A work-group's `size` partial results, one per work-item `lid` in local memory, folded into
## element 0 along a fixed tree: round by round, the first h work-items fold element lid + h into
## lid (the tag's body, given `h`), halving h each time. The order depends only on `size`, so the
## result does not depend on timing. Starts with the barrier that makes the partial results
## visible and ends with one, so element 0 may be read by every work-item after it.
##     <%c:tree_fold size="${local_size}" args="h">part[lid] += part[lid + ${h}];</%c:tree_fold>
<%def name="tree_fold(size)">\
    barrier(CLK_LOCAL_MEM_FENCE);
% for h in [2 ** k for k in reversed(range(size.bit_length() - 1))]:
<%  body = capture(caller.body, h).strip() %>\
  % if "\n" in body:
    if (lid < ${h}) {
        ${body}
    }
  % else:
    if (lid < ${h}) { ${body} }
  % endif
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
</%def>

## The 2-D window geometry of the convolution and pooling kernels, as parameters: input H x W,
## output OH x OW, kernel KH x KW, stride, top/left padding and dilation (SH, SW, PH, PW, DH, DW).
## The host binds them by these names (functions/conv.py, GEOMETRY).
<%def name="geometry()">\
const int H, const int W, const int OH, const int OW, const int KH, const int KW, \
const int SH, const int SW, const int PH, const int PW, const int DH, const int DW\
</%def>

## float16 bits (a ushort) to float by integer arithmetic, `h2f_(h)`: for CPUs, where PoCL's vload_half is
## an out-of-line call. Shared by the elementwise and matmul templates.
<%def name="h2f()">\
// float16 bits to float, exactly: subnormals through an integer (no float32 subnormal, so a device
// that flushes those still gets them right), inf and NaN (payload kept) by their exponent.
inline float h2f_(ushort h)
{
    const uint em = h & 0x7fffu;
    float f = em < 0x400u ? (float)em * 0x1p-24f : as_float((em << 13) + 0x38000000u);
    if (em >= 0x7c00u) f = as_float((em << 13) | 0x7f800000u);
    return as_float(as_uint(f) | ((uint)(h & 0x8000u) << 16));
}
</%def>
