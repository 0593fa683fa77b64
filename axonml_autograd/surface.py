"""The public surface made from the registry: Tensor and Variable methods, nn.functional entries and the
nn activation modules, each with its signature and a docstring that shows the row's maths.

Methods are written out as source and compiled once at import, so ``help(Variable.softplus)`` shows
``softplus(self, beta=1.0, threshold=20.0)`` and a call costs one Python frame on its way to the op:
no closure, no ``**kwargs`` walk. A Tensor gets the same ops without a graph (the array layer's
``pointwise``), and every other Variable op that makes sense without a gradient (``t.index_select``,
``t.softmax(1)``, ``t.mT``) as a method that runs it on a Variable that records nothing. This is the one
place methods are attached; ``tensor.py`` imports nothing above it.

>>> from axonml_autograd import Tensor, Variable
>>> Tensor.from_vec([-1.0, 2.0], [2]).relu().to_vec()
[0.0, 2.0]
>>> Variable.softplus.__doc__.splitlines()[0]
'Elementwise softplus: ``x if x * beta > threshold else log1p(exp(x * beta)) / beta``.'
"""

from __future__ import annotations

import inspect
import numbers
import os

import numpy as np

from . import pointwise as P
from .functions import compare
from .functions import indexing
from .functions import pointwise as F
from .registry import rows
from .tensor import Tensor
from .shapes import as_float
from .variable import Variable, _operand

# Written by hand (clamp's integer bounds, gelu's approximate=, pow's integer exponents) or internal
# forms of another method (gelu_tanh), so no generated method.
_NOT_METHODS = frozenset({"clamp", "gelu", "gelu_tanh", "add", "sub", "mul", "div", "pow", "neg", "floordiv"})


def _doc(spec) -> str:
    rules = "; ".join(f"d/d{n}: ``{r}``" for n, r in zip(spec.inputs, spec.gradient))
    params = "".join(f"\n    {n}: default {d!r}" for n, d, _k in spec.scalars)
    return (f"Elementwise {spec.name}: ``{spec.forward}``.\n\n    Gradient ({rules}), torch's conventions at "
            f"kinks.{params}\n    Defined by the registry row ``registry.OPS[{spec.name!r}]``.")


def _source(spec, layer: str) -> str:
    """One method's source: ``layer`` is "tensor" (no graph) or "variable"."""
    params = "".join(f", {n}={d!r}" for n, d, _k in spec.scalars)
    scalars = "".join(f", {k}=_number({n}, '{spec.name}: {n}')" for n, _d, k in spec.scalars)
    if spec.arity == 1:
        call = "_t_unary" if layer == "tensor" else "_v_unary"
        return f"def {spec.name}(self{params}):\n    return {call}({spec.name!r}, self{scalars})\n"
    call = "_t_binary" if layer == "tensor" else "_v_binary"
    return f"def {spec.name}(self, other):\n    return {call}({spec.name!r}, self, other)\n"


def _t_binary(name, x, other):
    if isinstance(other, Variable):
        other = other._data
    if isinstance(other, Tensor):
        return P.binary(name, x, other)
    value = as_float(other, name)
    return P.binary(name, x, Tensor.full((), value, x.dtype if x.dtype.kind == "f" else "float32", x.device))


def _v_binary(name, v, other):
    return F.binary(name, v, _operand(other, v, name))   # a number becomes a 0-d Variable of v's type


_NAMESPACE = {"_t_unary": P.unary, "_v_unary": F.unary, "_t_binary": _t_binary, "_v_binary": _v_binary,
              "_number": as_float}


def _generated(name) -> str:
    """The file name of generated code: inside the package, so anomaly mode's user frame skips it."""
    return os.path.join(os.path.dirname(__file__), f"<registry {name}>")


def _make(spec, layer):
    space = dict(_NAMESPACE)
    exec(compile(_source(spec, layer), _generated(spec.name), "exec"), space)
    fn = space[spec.name]
    fn.__doc__ = _doc(spec)
    fn.__qualname__ = f"{'Tensor' if layer == 'tensor' else 'Variable'}.{spec.name}"
    return fn


def method_rows():
    return [s for s in rows() if s.kind != "loss" and s.name not in _NOT_METHODS]


def attach_registry_methods():
    for spec in method_rows():
        setattr(Variable, spec.name, _make(spec, "variable"))
        setattr(Tensor, spec.name, _make(spec, "tensor"))


# -- Tensor versions of the other Variable ops -------------------------------------------------------------
# Autograd's own business has no Tensor form.
_AUTOGRAD_ONLY = frozenset({"backward", "grad", "grad_fn", "grad_variable", "accumulate_grad", "set_grad",
                            "zero_grad", "register_hook", "register_post_accumulate_grad_hook", "retain_grad",
                            "requires_grad", "requires_grad_", "is_leaf", "detach", "data", "set_data", "new",
                            "from_tensor"})


def _as_tensors(value):
    """A Variable op's result for a Tensor caller: Variables become their Tensors (tuples and lists too)."""
    if isinstance(value, Variable):
        return value._data
    if isinstance(value, tuple) and hasattr(value, "_fields"):   # (values, indices) of max/min
        return type(value)(*(_as_tensors(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_as_tensors(v) for v in value)
    return value


def _tensor_method(name, fn):
    def method(self, *args, **kwargs):
        args = [a._data if isinstance(a, Variable) else a for a in args]
        return _as_tensors(fn(Variable(self), *args, **kwargs))
    method.__name__, method.__qualname__, method.__doc__ = name, f"Tensor.{name}", fn.__doc__
    try:
        method.__signature__ = inspect.signature(fn)   # help() shows the Variable method's parameters
    except (TypeError, ValueError):
        pass
    return method


def attach_tensor_forms():
    """Each public Variable op that Tensor lacks, as a Tensor method (or property) without a graph."""
    for name, attr in inspect.getmembers(Variable):
        if name.startswith("_") or name in _AUTOGRAD_ONLY or name in Tensor.__dict__ or hasattr(Tensor, name):
            continue
        static = inspect.getattr_static(Variable, name)
        if isinstance(static, property):
            getter = static.fget
            setattr(Tensor, name, property(lambda self, _g=getter: _as_tensors(_g(Variable(self))),
                                           doc=static.__doc__))
        elif callable(attr) and not isinstance(static, (staticmethod, classmethod)):
            setattr(Tensor, name, _tensor_method(name, attr))


# -- nn.functional entries and nn modules of the activation rows -------------------------------------------
def functional_source(spec) -> str:
    params = "".join(f", {n}={d!r}" for n, d, _k in spec.scalars)
    args = ", ".join(n for n, _d, _k in spec.scalars)
    return (f"def {spec.name}(input{params}):\n"
            f"    return _var(input, {spec.name!r}).{spec.name}({args})\n")


def functional_entries(var) -> dict:
    """``nn.functional`` functions of the activation rows; ``var(x, op)`` turns an input into a Variable."""
    out = {}
    for spec in rows("activation"):
        if spec.name in _NOT_METHODS:
            continue
        space = {"_var": var}
        exec(compile(functional_source(spec), _generated(f"F.{spec.name}"), "exec"), space)
        fn = space[spec.name]
        fn.__doc__ = f"torch's ``F.{spec.name}``. " + _doc(spec)
        out[spec.name] = fn
    return out


# -- Tensor arithmetic, comparisons and masks ----------------------------------------------------------------
def _tensor_binary(self, other, name, reverse=False):
    if isinstance(other, Tensor):
        return P.binary(name, *((other, self) if reverse else (self, other)))
    if isinstance(other, (bool, np.bool_)):
        other = int(other)   # 0 or 1, as in torch (x * True)
    if isinstance(other, numbers.Real):
        # Whole Python ints stay exact (an int64 tensor plus 2**60 must not go through a float).
        value = int(other) if isinstance(other, numbers.Integral) and self.dtype.kind != "f" \
            else as_float(other, name)
        return P.scalar_op(name, self, value, reverse)
    return NotImplemented


_DUNDERS = {"add": "add", "sub": "sub", "mul": "mul", "truediv": "div", "pow": "pow", "floordiv": "floordiv",
            "mod": "remainder"}


def attach_tensor_arithmetic():
    def dunder(name, reverse):
        return lambda self, other: _tensor_binary(self, other, name, reverse)
    for op, name in _DUNDERS.items():
        setattr(Tensor, f"__{op}__", dunder(name, False))
        setattr(Tensor, f"__r{op}__", dunder(name, True))
    Tensor.__neg__ = lambda self: P.unary("neg", self)
    Tensor.__abs__ = lambda self: P.unary("abs", self)
    Tensor.__getitem__ = lambda self, key: Variable(self)[key]._data   # torch's indexing (functions/indexing.py)
    Tensor.__setitem__ = indexing.setitem_tensor
    Variable.__setitem__ = lambda self, key, value: indexing.setitem(self, key, value)

    def apply(self, name) -> Tensor:
        """A one-input registry op by name, e.g. ``t.apply("exp")``."""
        unary = sorted(s.name for s in rows() if s.arity == 1 and s.kind != "loss" and not s.scalars)
        if name not in unary:
            raise ValueError(f"apply: unknown unary op {name!r}; expected one of {unary}")
        return P.unary(name, self)
    Tensor.apply = apply


def attach_masks():
    """Comparisons and masks (functions/compare.py) on Tensors and Variables: bool tensors, no gradient."""
    def method(fn, op, unwrap=False):
        if unwrap:
            return lambda self, *args, **kwargs: fn(op, self._data, *args, **kwargs)
        return lambda self, *args, **kwargs: fn(op, self, *args, **kwargs)
    for op in ("isnan", "isinf", "isfinite", "logical_not"):
        setattr(Tensor, op, method(compare.test, op))
    for op in ("logical_and", "logical_or"):
        setattr(Tensor, op, method(compare.logical, op))
    for op in ("any", "all"):
        setattr(Tensor, op, method(compare.any_all, op))
    for op, dunder in compare.DUNDERS.items():
        for cls, unwrap in ((Tensor, False), (Variable, True)):
            setattr(cls, op, method(compare.compare, op, unwrap))
            setattr(cls, dunder, method(compare.compare, op, unwrap))
    for op in ("and", "or", "xor", "not"):
        def bit(self, other=None, _op=op):
            if isinstance(self, Variable):
                self = self._data
            return compare.bitwise(_op, self, other._data if isinstance(other, Variable) else other)
        for cls in (Tensor, Variable):
            setattr(cls, f"bitwise_{op}", bit)
            setattr(cls, "__invert__" if op == "not" else f"__{op}__", bit)
            if op != "not":
                setattr(cls, f"__r{op}__", bit)


def attach_all():
    attach_tensor_arithmetic()
    attach_masks()
    attach_registry_methods()
    attach_tensor_forms()


# torch's function forms (ag.exp(x), ag.sum(x, 1), ag.softmax(x, -1), ag.matmul(a, b)): every registry
# op with a method, and these structural ones, each calling the method of its first argument, so a
# Tensor gives a Tensor and a Variable a Variable, with the method's arguments and checks.
TOP_LEVEL_OPS = ("sum", "mean", "prod", "max", "min", "amax", "amin", "argmax", "argmin", "std", "var",
                 "logsumexp", "cumsum", "cumprod", "softmax", "log_softmax", "mm", "bmm", "dot", "outer",
                 "reshape", "transpose", "permute", "flatten", "unflatten", "squeeze", "unsqueeze", "flip",
                 "roll", "tril", "triu", "diagonal", "narrow", "norm", "sort", "argsort", "topk", "clamp",
                 "clip", "add", "sub", "mul", "div", "pow", "neg", "masked_fill", "isclose", "allclose",
                 "isnan", "isinf", "isfinite", "logical_and", "logical_or", "logical_not", "any", "all",
                 "gather", "index_select", "scatter_add", "split", "chunk", "t", "numel", "matmul")


def _function_form(name):
    def fn(input, *args, **kwargs):
        method = getattr(input, name, None)
        if method is None or not isinstance(input, (Tensor, Variable)):
            raise TypeError(f"{name}: expected a Tensor or Variable as the first argument, got {type(input).__name__}")
        return method(*args, **kwargs)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"torch's ``{name}(input, ...)``: ``input.{name}(...)`` on a Tensor or a Variable."
    return fn


def top_level_functions(taken) -> dict:
    """The function forms not already defined at the top level (``taken``: its names; the submodule
    ``matmul`` gives way to the function, as torch's ``matmul``: import the module by its full name)."""
    taken = set(taken) - {"matmul"}
    names = [spec.name for spec in method_rows()] + list(TOP_LEVEL_OPS)
    return {n: _function_form(n) for n in dict.fromkeys(names)
            if n not in taken and (hasattr(Tensor, n) or hasattr(Variable, n))}
