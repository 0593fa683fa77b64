## float32 erf and erfc written out in arithmetic and exp, for devices whose builtins are slow library
## calls: PoCL's CPU erf/erfc cost ~7 exps an element and never vectorise, which made GELU (x Phi(x),
## torch's default) the slowest op of a transformer step. The device target chooses (target.py
## `own_erf`: the probe times both and checks these against the builtins); the elementwise and fused
## templates include them for float kernels whose expression names erf or erfc, and in each loop call
## the functions of that loop's width (the builtins' names may be macros, so they are renamed, not redefined):
##
##     <%namespace name="erf" file="erf.mako"/>\
##     ${erf.functions(vw)}           (before the kernel: the scalar forms, and the vw-wide ones)
##     ${erf.rename(expr, w)}         (the expression over T (w 1) or w-wide TV values)
##
## The method (coefficients fitted for this project by weighted least squares in float64):
##   erfc(z), z >= 0:  t exp(-z^2 + Q(t)), t = 1 / (1 + z/2), Q a polynomial of degree 9 (relative error
##                     of the fit 5e-8 up to z = 10, where erfc underflows). z^2 is split as zh^2 (exact:
##                     zh keeps z's top 12 bits) + (z - zh)(z + zh), each in its own exp, so the tail keeps
##                     its digits: a rounded z^2 of 50 would cost 40 ulps.
##   erf(x), |x| < 0.85: x S(x^2), S of degree 6 (relative error 4e-10); beyond, +-(1 - erfc(|x|)).
##   erfc(x), x < 0: 2 - erfc(-x).
## Within 6 ulps of the exact values over float32 (OpenCL allows erf and erfc 16); NaN stays NaN,
## erf(+-inf) = +-1, erfc(inf) = 0, erfc(-inf) = 2. float64 kernels keep the builtins.
<%!
    import re

    CALL = re.compile(r"(?<![A-Za-z0-9_])(erfc?)(\s*\()")
    Q = ("-1.2654414f", "0.99849254f", "0.38789928f", "0.028359396f", "0.020189047f", "-0.11677415f",
         "-0.6512649f", "1.1224135f", "-0.6660685f", "0.14219524f")
    S = ("1.1283792f", "-0.37612638f", "0.11283755f", "-0.026863007f", "0.0052108024f", "-0.00082640344f",
         "8.932948e-05f")

    def horner(coefficients, t):
        s = coefficients[-1]
        for c in coefficients[-2::-1]:
            s = f"{s} * {t} + {c}"
            s = f"({s})"
        return s
%>\
<%def name="functions(vw)">\
% for w in sorted({1, vw}):
<%
    F, U = ("float", "uint") if w == 1 else (f"float{w}", f"uint{w}")
%>
inline ${F} erfc_pos${w}_(const ${F} x)
{
    // |x| past 11 as 11, where the result underflows to 0 as erfc's does (inf - inf would be NaN); a NaN
    // stays itself.
    const ${F} z = fabs(x) > 11.0f ? 11.0f : fabs(x);
    const ${F} t = 1.0f / (1.0f + 0.5f * z);
    const ${F} zh = as_${F}(as_${U}(z) & (${U})0xfffff000u);
    return t * exp(-zh * zh) * exp(-(z - zh) * (z + zh) + ${horner(Q, "t")});
}

inline ${F} erf${w}_(const ${F} x)
{
    const ${F} u = x * x;
    const ${F} small = x * ${horner(S, "u")};
    return fabs(x) < 0.85f ? small : copysign(1.0f - erfc_pos${w}_(x), x);
}

inline ${F} erfc${w}_(const ${F} x)
{
    const ${F} e = erfc_pos${w}_(x);
    return x < 0.0f ? 2.0f - e : e;
}
% endfor
</%def>\
<%def name="rename(expr, w)"><%
    return CALL.sub(lambda m: f"{m.group(1)}{w}_{m.group(2)}", expr)
%></%def>\
