"""The op registry: one row per pointwise op, holding everything about it in one place.

A row (:class:`OpSpec`) gives the op's forward and one gradient rule per input, both in the language of
``expr.py`` (rendered to OpenCL for the eager kernels, evaluated on Variables for ``create_graph``), its
exact integer form and its form on two bools where it has them, its scalar parameters, and what the
generated tests need: a numpy reference and a domain where the op is smooth. Methods of ``Tensor`` and
``Variable``, ``nn.functional`` entries and ``nn`` activation modules are made from these rows
(``surface.py``), and ``tests/test_registry.py`` checks every row against its reference, its gradient
against finite differences and its second derivative, so a new op is one row here.

Names in a rule: ``x`` the input of a unary op, ``a`` and ``b`` a binary op's, ``y`` the output, ``g``
the incoming gradient, and the row's scalar parameters by their kernel names. Integer forms are OpenCL
with ``{I}`` for the integer type and ``{U}`` for its unsigned twin (wrapping is defined there).

>>> OPS["sin"].gradient
('g * cos(x)',)
>>> [op.name for op in rows("activation")][:3]
['relu', 'leaky_relu', 'sigmoid']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import expr


@dataclass(frozen=True)
class OpSpec:
    name: str
    forward: str                     # over x (unary) or a, b (binary) and the scalars
    gradient: tuple                  # one rule per input; "0" for none
    kind: str = "maths"              # "arithmetic", "maths" or "activation"
    scalars: tuple = ()              # (argument name, default, kernel name) of each Python-number parameter
    int_form: Optional[str] = None   # integers stay integers with this OpenCL; None: promoted to float32
    bool_form: Optional[str] = None  # bool op bool stays bool with this; None: refused (binary ops)
    reference: Optional[Callable] = None   # numpy, for the generated tests
    domain: tuple = (-2.0, 2.0)      # where the op and its gradient are smooth
    away_from: tuple = ()            # points the test inputs keep 0.2 away from (kinks, poles)
    torch: Optional[str] = None      # torch's function of the same maths, for the differential tests
    doc: str = ""
    differentiable: bool = True
    module: Optional[str] = None     # the nn module class made from an activation row
    operands: tuple = ()             # the input names, when not x (unary) or a, b (binary)

    @property
    def arity(self) -> int:
        return len(self.gradient)

    @property
    def inputs(self) -> tuple:
        return self.operands or (("x",) if self.arity == 1 else ("a", "b"))

    @property
    def kernel_scalars(self) -> tuple:
        return tuple(k for _n, _d, k in self.scalars)

    @property
    def opencl(self) -> str:
        return expr.render(self.forward)

    def node_name(self, form: str = "") -> str:
        """``"mul"`` -> ``"MulBackward"``; a scalar form ``"mul_scalar"`` -> ``"MulScalarBackward"``."""
        return "".join(p.capitalize() for p in (self.name + form).split("_")) + "Backward"


OPS: dict = {}


def op(name, forward, *gradient, **fields):
    OPS[name] = OpSpec(name, forward, tuple(gradient), **fields)


def rows(kind=None) -> list:
    return [o for o in OPS.values() if kind is None or o.kind == kind]


def _param(name, default, kernel=None):
    return (name, default, kernel or name)


def _np_erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


# sigmoid'(t) = a / (1 + a)^2 with a = exp(-|t|): never overflows, and exactly 0 where the curve saturates
# (1 - tanh^2 would keep PoCL's last-bit rounding of tanh).
def _bell(a):
    return f"{a} / ((1 + {a}) * (1 + {a}))"


def _bell_of(t):
    """sigmoid'(t) as _bell(exp(-|t|)), written without |t| so that every derivative is right at t = 0 too
    (abs has no second derivative there); NaN stays NaN."""
    return (f"({_bell(f'exp(-max({t}, 0))')} if {t} > 0 else "
            f"({_bell(f'exp(min({t}, 0))')} if {t} <= 0 else {t}))")


_LN2, _LN10, _2_SQRT_PI = "0.6931471805599453", "2.302585092994046", "1.1283791670955126"
_GELU_INNER = "0.7978845608028654 * (x + 0.044715 * x * x * x)"   # k (x + 0.044715 x^3), k = sqrt(2 / pi)
_GELU_A = f"exp(-2 * abs({_GELU_INNER}))"
_SOFTPLUS = "(x if x > 20 else log1p(exp(x)))"   # torch's threshold
_INT_WRAP = "({I})(({U})a {op} ({U})b)"
_REMAINDER = "fmod(a, b) + b if (fmod(a, b) != 0 and ((fmod(a, b) < 0) != (b < 0))) else fmod(a, b)"


# -- arithmetic: + - * / ** and friends; Python numbers on either side become the scalar forms -------------
op("add", "a + b", "g", "g", kind="arithmetic", int_form=_INT_WRAP.replace("{op}", "+"),
   bool_form="(a != 0) || (b != 0)", reference=np.add, torch="add")
op("sub", "a - b", "g", "-g", kind="arithmetic", int_form=_INT_WRAP.replace("{op}", "-"),
   reference=np.subtract, torch="sub")
op("mul", "a * b", "g * b", "g * a", kind="arithmetic", int_form=_INT_WRAP.replace("{op}", "*"),
   bool_form="(a != 0) && (b != 0)", reference=np.multiply, torch="mul")
op("div", "a / b", "g / b", "-g * a / (b * b)", kind="arithmetic", reference=np.divide, torch="div",
   away_from=(0.0,))
# torch's conventions at 0: no gradient through a zero exponent, none to b where a is 0 and b >= 0. The
# log of a is taken of 1 there, so the branch not taken stays finite for the next order.
_SAFE_BASE = "(1 if (a == 0 and b >= 0) else a)"
op("pow", "pow(a, b)", "0 if b == 0 else g * b * pow(a, b - 1)",
   f"0 if (a == 0 and b >= 0) else g * pow({_SAFE_BASE}, b) * log({_SAFE_BASE})", kind="arithmetic",
   int_form="({I})ipow_((long)a, (long)b)", reference=np.power, domain=(0.5, 2.0), torch="pow")
# NaN wins, as in numpy and torch (fmax would drop it); a tie splits the gradient, as torch's.
op("maximum", "a if (a > b or isnan(a)) else b", "g * 0.5 if a == b else (0 if a < b else g)",
   "g * 0.5 if a == b else (0 if a > b else g)", kind="arithmetic", int_form="max(({I})a, ({I})b)",
   bool_form="(a != 0) || (b != 0)", reference=np.maximum, torch="maximum")
op("minimum", "a if (a < b or isnan(a)) else b", "g * 0.5 if a == b else (0 if a > b else g)",
   "g * 0.5 if a == b else (0 if a < b else g)", kind="arithmetic", int_form="min(({I})a, ({I})b)",
   bool_form="(a != 0) && (b != 0)", reference=np.minimum, torch="minimum")
_ATAN2_DEN = "(1 if (a == 0 and b == 0) else a * a + b * b)"
op("atan2", "atan2(a, b)", f"0 if (a == 0 and b == 0) else g * b / {_ATAN2_DEN}",
   f"0 if (a == 0 and b == 0) else -g * a / {_ATAN2_DEN}", reference=np.arctan2, torch="atan2")
op("fmod", "fmod(a, b)", "g", "-g * trunc(a / b)", reference=np.fmod, torch="fmod", away_from=(0.0,))
# Python's and torch's remainder (the sign of the divisor). d/db is -g times Python's a // b, which is
# -1 (not -0) for 0.5 // -inf.
op("remainder", _REMAINDER, "g",
   "-g * (a / b if b == 0 else (a - fmod(a, b)) / b - (1 if (fmod(a, b) != 0 and ((b < 0) != (fmod(a, b) < 0))) "
   "else 0))", kind="arithmetic",
   int_form="(b == 0 || b == -1) ? ({I})0 : ((a % b != 0 && ((a % b < 0) != (b < 0))) ? ({I})(a % b + b) : "
            "({I})(a % b))", reference=np.remainder, torch="remainder", away_from=(0.0,))
# Integer division as Python's: x // 0 == 0 (numpy's), MIN // -1 wraps to MIN.
op("floordiv", "floor(a / b)", "0", "0", kind="arithmetic", differentiable=False,
   int_form="b == 0 ? ({I})0 : (b == -1 ? ({I})(({U})0 - ({U})a) : ({I})(a / b - (a % b != 0 && ((a < 0) != (b < 0)))))",
   reference=np.floor_divide, torch="floor_divide", away_from=(0.0,))

# Added as the README's "Adding an op to the library" shows: one row each, tested by tests/test_registry.py.
op("hypot", "hypot(a, b)", "g * a / y", "g * b / y", reference=np.hypot, torch="hypot", away_from=(0.0,))

# -- one-input maths ----------------------------------------------------------------------------------------
op("neg", "-x", "-g", kind="arithmetic", int_form="({I})(({U})0 - ({U})x)", reference=np.negative, torch="neg")
op("abs", "abs(x)", "g if x > 0 else (-g if x < 0 else 0)", int_form="({I})(x < 0 ? ({U})0 - ({U})x : ({U})x)",
   reference=np.abs, torch="abs", away_from=(0.0,))
op("exp", "exp(x)", "g * y", reference=np.exp, torch="exp")
op("log", "log(x)", "g / x", reference=np.log, domain=(0.1, 3.0), torch="log")
op("sqrt", "sqrt(x)", "g * 0.5 / y", reference=np.sqrt, domain=(0.1, 3.0), torch="sqrt")
op("sin", "sin(x)", "g * cos(x)", reference=np.sin, torch="sin")
op("cos", "cos(x)", "-g * sin(x)", reference=np.cos, torch="cos")
op("tan", "tan(x)", "g * (1 + y * y)", reference=np.tan, domain=(-1.2, 1.2), torch="tan")
op("asin", "asin(x)", "g / sqrt(1 - x * x)", reference=np.arcsin, domain=(-0.9, 0.9), torch="asin")
op("acos", "acos(x)", "-g / sqrt(1 - x * x)", reference=np.arccos, domain=(-0.9, 0.9), torch="acos")
op("atan", "atan(x)", "g / (1 + x * x)", reference=np.arctan, torch="atan")
op("sinh", "sinh(x)", "g * cosh(x)", reference=np.sinh, torch="sinh")
op("cosh", "cosh(x)", "g * sinh(x)", reference=np.cosh, torch="cosh")
op("asinh", "asinh(x)", "g / sqrt(x * x + 1)", reference=np.arcsinh, torch="asinh")
op("atanh", "atanh(x)", "g / (1 - x * x)", reference=np.arctanh, domain=(-0.9, 0.9), torch="atanh")
op("erf", "erf(x)", f"g * {_2_SQRT_PI} * exp(-x * x)", reference=_np_erf, torch="erf")
op("erfc", "erfc(x)", f"-g * {_2_SQRT_PI} * exp(-x * x)", reference=lambda x: 1.0 - _np_erf(x), torch="erfc")
op("log1p", "log1p(x)", "g / (1 + x)", reference=np.log1p, domain=(-0.9, 3.0), torch="log1p")
op("expm1", "expm1(x)", "g * (y + 1)", reference=np.expm1, torch="expm1")
op("log2", "log2(x)", f"g / (x * {_LN2})", reference=np.log2, domain=(0.1, 3.0), torch="log2")
op("log10", "log10(x)", f"g / (x * {_LN10})", reference=np.log10, domain=(0.1, 3.0), torch="log10")
op("exp2", "exp2(x)", f"g * y * {_LN2}", reference=np.exp2, torch="exp2")
# Outside [0, 1] torch's gradient is NaN, as the log's argument is negative there.
op("logit", "log(x / (1 - x))", "g / (x * (1 - x)) if (x >= 0 and x <= 1) else nan", reference=lambda x: np.log(x / (1 - x)), domain=(0.05, 0.95),
   torch="logit")
op("rsqrt", "rsqrt(x)", "-0.5 * g * y * y * y", reference=lambda x: 1.0 / np.sqrt(x), domain=(0.1, 3.0),
   torch="rsqrt")
op("reciprocal", "1 / x", "-g * y * y", reference=np.reciprocal, away_from=(0.0,), torch="reciprocal")
op("square", "x * x", "2 * g * x", int_form="({I})(({U})x * ({U})x)", reference=np.square, torch="square")
# Step functions: gradient 0, as torch's. sign(NaN) is 0, as torch.sign.
op("sign", "1.0 if x > 0 else (-1.0 if x < 0 else 0.0)", "0", int_form="({I})((x > 0) - (x < 0))",
   reference=lambda x: np.nan_to_num(np.sign(x)), torch="sign", away_from=(0.0,))
op("floor", "floor(x)", "0", reference=np.floor, torch="floor")
op("ceil", "ceil(x)", "0", reference=np.ceil, torch="ceil")
op("round", "round(x)", "0", reference=np.round, torch="round")   # half to even, as torch.round
op("trunc", "trunc(x)", "0", reference=np.trunc, torch="trunc")
op("clamp", "x if x != x else min(max(x, lo), hi)", "g if (x >= lo and x <= hi) else 0",
   scalars=(_param("min", None, "lo"), _param("max", None, "hi")),
   reference=lambda x, lo, hi: np.clip(x, lo, hi), torch="clamp")

# -- activations (also nn.functional entries and nn modules) ------------------------------------------------
# At NaN every forward gives NaN, as torch's do, and the gradients at NaN are torch's (relu's passes g).
op("relu", "x if (x > 0 or x != x) else 0", "0 if x <= 0 else g", kind="activation", module="ReLU",
   int_form="x > 0 ? ({I})x : ({I})0", reference=lambda x: np.maximum(x, 0), torch="relu", away_from=(0.0,))
op("leaky_relu", "x if x > 0 else slope * x", "g if x > 0 else slope * g", kind="activation", module="LeakyReLU",
   scalars=(_param("negative_slope", 0.01, "slope"),), reference=lambda x, s: np.where(x > 0, x, s * x),
   torch="nn.functional.leaky_relu", away_from=(0.0,))
op("sigmoid", "1 / (1 + exp(-x))", f"g * {_bell_of('x')}", kind="activation", module="Sigmoid",
   reference=lambda x: 1 / (1 + np.exp(-x)), torch="sigmoid")
op("tanh", "tanh(x)", f"g * 4 * {_bell_of('2 * x')}", kind="activation", module="Tanh",
   reference=np.tanh, torch="tanh")
# gelu with erf (torch's default): x * Phi(x), Phi written with erfc so its left tail keeps its digits.
op("gelu", "0.5 * x * erfc(-x * 0.7071067811865476)",
   "g * (0.5 * erfc(-x * 0.7071067811865476) + x * 0.3989422804014327 * exp(-0.5 * x * x))", kind="activation",
   module="GELU", reference=lambda x: 0.5 * x * (1 + _np_erf(x / math.sqrt(2))), torch="nn.functional.gelu")
# The tanh approximation as x * sigmoid(2u); the product x * a(...) * u' is 0 where a is (u' alone overflows).
op("gelu_tanh", f"x / (1 + exp(-2 * ({_GELU_INNER})))",
   f"g * (1 / (1 + exp(-2 * ({_GELU_INNER}))) + (2 * x * {_bell(_GELU_A)} * 0.7978845608028654 * "
   f"(1 + 0.134145 * x * x) if {_GELU_A} > 0 else 0))", kind="activation",
   reference=lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))))
op("silu", "x / (1 + exp(-x))", "g * (1 / (1 + exp(-x))) * (1 + x * (1 - 1 / (1 + exp(-x))))",
   kind="activation", module="SiLU", reference=lambda x: x / (1 + np.exp(-x)), torch="nn.functional.silu")
op("softplus", "x if x * beta > threshold else log1p(exp(x * beta)) / beta",
   "g if x * beta > threshold else g / (1 + exp(-x * beta))", kind="activation", module="Softplus",
   scalars=(_param("beta", 1.0), _param("threshold", 20.0)),
   reference=lambda x, beta, t: np.where(x * beta > t, x, np.log1p(np.exp(x * beta)) / beta),
   torch="nn.functional.softplus")
# exp of min(x, 0): the side not taken stays finite for the next order.
op("elu", "x if x > 0 else alpha * expm1(x)", "g * alpha * exp(min(x, 0)) if x <= 0 else g", kind="activation",
   module="ELU", scalars=(_param("alpha", 1.0),), reference=lambda x, a: np.where(x > 0, x, a * np.expm1(x)),
   torch="nn.functional.elu", away_from=(0.0,))
op("selu", "1.0507009873554805 * x if x > 0 else 1.7580993408473766 * expm1(x)",
   "1.7580993408473766 * g * exp(min(x, 0)) if x <= 0 else 1.0507009873554805 * g", kind="activation",
   module="SELU", reference=lambda x: np.where(x > 0, 1.0507009873554805 * x, 1.7580993408473766 * np.expm1(x)),
   torch="nn.functional.selu", away_from=(0.0,))
# mish = x tanh(softplus(x)); sech^2 of softplus in the a / (1 + a)^2 form, exactly 0 when saturated.
op("mish", f"x * tanh({_SOFTPLUS})",
   f"g * (tanh({_SOFTPLUS}) + x / (1 + exp(-x)) * 4 * {_bell(f'exp(-2 * {_SOFTPLUS})')})", kind="activation",
   module="Mish", reference=lambda x: x * np.tanh(np.log1p(np.exp(x))), torch="nn.functional.mish")
op("hardtanh", "x if x != x else min(max(x, lo), hi)", "0 if (x <= lo or x >= hi) else g", kind="activation",
   module="Hardtanh", scalars=(_param("min_val", -1.0, "lo"), _param("max_val", 1.0, "hi")),
   reference=lambda x, lo, hi: np.clip(x, lo, hi), torch="nn.functional.hardtanh", away_from=(-1.0, 1.0))
op("logsigmoid", "min(x, 0) - log1p(exp(-abs(x)))", "g / (1 + exp(x))", kind="activation", module="LogSigmoid",
   reference=lambda x: -np.logaddexp(0, -x), torch="nn.functional.logsigmoid")

# -- pointwise losses, before their reduction (x the input, t the target) -----------------------------------
_LOSS = dict(kind="loss", operands=("x", "t"))
op("mse_loss", "(x - t) * (x - t)", "2 * g * (x - t)", "-2 * g * (x - t)", **_LOSS,
   reference=lambda x, t: (x - t) ** 2)
# torch's sign at 0 (and NaN): no gradient.
op("l1_loss", "abs(x - t)", "g if (x - t) > 0 else (-g if (x - t) < 0 else 0)",
   "-g if (x - t) > 0 else (g if (x - t) < 0 else 0)", **_LOSS, reference=lambda x, t: np.abs(x - t),
   away_from=(0.0,))
# t log t - t x, with 0 log 0 = 0 (torch's xlogy) and NaN for a negative target; the log of a target that
# is not positive is taken of 1, so the branch not taken stays finite for the next order.
op("kl_div", "(t * log(t) if t > 0 else (0 if t == 0 else nan)) - t * x", "-g * t",
   "g * (log(t if t > 0 else 1) + 1 - x) if t > 0 else 0", **_LOSS, domain=(0.1, 2.0),
   reference=lambda x, t: t * np.log(t) - t * x)
op("kl_div_log_target", "exp(t) * (t - x)", "-g * exp(t)", "g * exp(t) * (t - x + 1)", **_LOSS,
   reference=lambda x, t: np.exp(t) * (t - x))
op("smooth_l1", "0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta",
   "g * x / beta if (abs(x) < beta or x != x) else (g if x > 0 else (-g if x < 0 else 0))", kind="loss",
   scalars=(_param("beta", 1.0),), reference=lambda x, b: np.where(np.abs(x) < b, 0.5 * x * x / b, np.abs(x) - 0.5 * b),
   away_from=(-1.0, 1.0))

