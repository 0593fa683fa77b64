## The 16-bit float conversions shared by the templates that read or write float16/bfloat16 storage
## (kernels.py HALF_TEMPLATES: elementwise, reduce), imported by those that need them (float16 bits to
## float, h2f_, is common.mako's h2f, which matmul shares):
##
##     <%namespace name="h" file="half.mako"/>\
##
## float16 is read and written either with OpenCL's vload_half/vstore_half_rte (GPUs) or, where those
## are slow out-of-line calls (PoCL's CPUs), by the integer arithmetic below (half_io="bits"); bfloat16
## is always its raw bits in a ushort. Each def writes its functions where it is called and nothing else,
## so a template that does not call them renders as before.

## float to bfloat16 bits, rounded to nearest even (scalar).
<%def name="bf16_rne()">\

// float to bfloat16 bits, rounded to nearest even; a NaN stays a (quiet) NaN of the same sign.
inline ushort bf16_rne_(float f)
{
    const uint u = as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u);
    return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
</%def>

## float to float16 bits, rounded to nearest even (scalar).
<%def name="f2h()">\

// float to float16 bits, rounded to nearest even: NaN stays a (quiet) NaN, from 65520 up is inf,
// below 2**-14 the subnormals: adding 0.5f rounds the value to a multiple of 2**-24 (0.5's ulp), to
// even, and the count of those is what is left above 0.5's bits (float32 subnormals give 0 either way).
inline ushort f2h_(float f)
{
    const uint u = as_uint(f);
    const uint s = (u >> 16) & 0x8000u;
    const uint a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (ushort)(s | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (ushort)(s | 0x7c00u);
    if (a >= 0x38800000u) return (ushort)(s | ((a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13));
    return (ushort)(s | (as_uint(as_float(a) + 0.5f) - 0x3f000000u));
}
</%def>

## Whether the vector conversions below may use x86's F16C instructions: F16C_ defined to 1 where the
## compiler targets a CPU that has them and offers their builtins (PoCL on x86; elsewhere the
## integer code, same bits). `vw`: the vector width (F16C converts 4 or 8 lanes).
<%def name="f16c_check(vw)">\
% if vw in (4, 8):

// x86 CPUs with F16C convert ${vw} float16 at a time in one instruction each way (vcvtph2ps, and
// vcvtps2ph with round to nearest even): the same bits as the integer code, in a few times fewer
// instructions, which is what keeps a 16-bit loop memory-bound rather than bound by its conversions.
#if defined(__F16C__) && defined(__has_builtin)
#if __has_builtin(__builtin_ia32_vcvtph2ps${"256" if vw == 8 else ""}) && __has_builtin(__builtin_ia32_vcvtps2ph${"256" if vw == 8 else ""})
#define F16C_ 1
#endif
#endif
% endif
</%def>

## The vector forms of the conversions, `vw` lanes at a time, for CPUs: the scalar h2f_ (common.mako),
## f2h_ and bf16_rne_ above with their branches as bit blends (the same bits; PoCL's select() is a slow call).
## float16 takes, in this order: F16C's instructions (PoCL on x86); vload_half/vstore_half_rte where the
## compiler has cl_khr_fp16 (Intel's CPU runtime, whose builtins are inline and fast: there the integer
## code is the slow one); else the integer code. All three give the same 16-bit results (checked over
## every float16 and millions of floats); a float16 signalling NaN read by the first two is quieted in
## float, which the 16-bit store does anyway. `which`: the functions wanted, from "blend" (needed by
## the others but bf2f), "bf2f", "f2bf", "h2f", "f2h".
<%def name="vector_conversions(vw, which)">\
<%
    U, F, S = f"uint{vw}", f"float{vw}", f"ushort{vw}"
    f16c = vw in (4, 8) and ("h2f" in which or "f2h" in which)
%>\
% if f16c:
${f16c_check(vw)}\
% endif
% if "blend" in which:
inline ${U} blend_(const ${U} a, const ${U} b, const int${vw} c)
{
    const ${U} m = as_${U}(c);   // a comparison's lanes: all ones where true
    return (a & ~m) | (b & m);
}
% endif
% if "bf2f" in which:
inline ${F} bf2f_v(const ${S} b) { return as_${F}(convert_${U}(b) << 16); }
% endif
% if "f2bf" in which:
inline ${S} f2bf_v(const ${F} f)
{
    const ${U} u = as_${U}(f);
    const ${U} r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return convert_${S}(blend_(r, (u >> 16) | 0x40u, (u & 0x7fffffffu) > 0x7f800000u));
}
% endif
% if "h2f" in which:
inline ${F} h2f_v(const ${S} h16)
{
  % if f16c:
#if defined(F16C_)
    % if vw == 8:
    return __builtin_ia32_vcvtph2ps256(as_short8(h16));
    % else:
    return __builtin_ia32_vcvtph2ps((short8)(as_short4(h16), (short4)0));
    % endif
#elif defined(cl_khr_fp16)
  % else:
#if defined(cl_khr_fp16)
  % endif
    return vload_half${vw}(0, (const __private half *)&h16);
#else
    const ${U} h = convert_${U}(h16);
    const ${U} em = h & 0x7fffu;
    ${U} f = blend_((em << 13) + 0x38000000u, as_${U}(convert_${F}(as_int${vw}(em)) * 0x1p-24f), em < 0x400u);
    f = blend_(f, (em << 13) | 0x7f800000u, em >= 0x7c00u);
    return as_${F}(f | ((h & 0x8000u) << 16));
#endif
}
% endif
% if "f2h" in which:
inline ${S} f2h_v(const ${F} f)
{
  % if f16c:
#if defined(F16C_)
    % if vw == 8:
    return as_ushort8(__builtin_ia32_vcvtps2ph256(f, 0));
    % else:
    const short8 r = __builtin_ia32_vcvtps2ph(f, 0);   // 4 results in the low half
    return as_ushort4(r.lo);
    % endif
#elif defined(cl_khr_fp16)
  % else:
#if defined(cl_khr_fp16)
  % endif
    ${S} h;
    vstore_half${vw}_rte(f, 0, (__private half *)&h);
    return h;
#else
    const ${U} u = as_${U}(f);
    const ${U} a = u & 0x7fffffffu;
    ${U} r = blend_((a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13,
                    as_${U}(as_${F}(a) + 0.5f) - 0x3f000000u, a < 0x38800000u);
    r = blend_(r, (${U})0x7c00u, a >= 0x477ff000u);
    r = blend_(r, 0x7e00u | ((a >> 13) & 0x3ffu), a > 0x7f800000u);
    return convert_${S}(((u >> 16) & 0x8000u) | r);
#endif
}
% endif
</%def>
