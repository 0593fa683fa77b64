"""Your own differentiable ops, written in OpenCL C: :func:`elementwise`, :class:`Function`, :class:`Kernel`.

``elementwise(expr, ...)`` is the engine's own elementwise kernel, public: an OpenCL C expression over
named inputs, broadcast like numpy, built once per expression and cached. ``Function`` pairs a forward
with a backward, as ``torch.autograd.Function`` does. ``Kernel`` compiles a whole OpenCL C kernel once
per device, for ops that are not elementwise. All three launch through the same path as the built-in
ops, so they run inside :func:`~axonml_autograd.capture` and never wait for the device.

A fused swish (``x * sigmoid(x)``): one kernel forward and one backward, where the composed version
launches two and four.

>>> from axonml_autograd import Function, Tensor, Variable, elementwise
>>> class Swish(Function):
...     @staticmethod
...     def forward(ctx, x):
...         ctx.save_for_backward(x)
...         return elementwise("x / (L(1.0) + exp(-x))", x=x)
...     @staticmethod
...     def backward(ctx, g):
...         (x,) = ctx.saved_tensors
...         return elementwise("g * (L(1.0) + exp(-x) * (L(1.0) + x)) / ((L(1.0) + exp(-x)) * (L(1.0) + exp(-x)))",
...                            g=g, x=x)
>>> x = Variable(Tensor.from_vec([-1.0, 0.0, 2.0], [3]), requires_grad=True)
>>> Swish.apply(x).sum().backward()
>>> [round(v, 4) for v in x.grad().to_vec()]
[0.0723, 0.5, 1.0908]
"""

from __future__ import annotations

import keyword
import numbers
import re

import numpy as np
import pyopencl as cl

from . import kernels
from .elementwise_kernels import _check_same_device
from .elementwise_kernels import elementwise as _elementwise   # this module's elementwise() is the public one
from .shapes import as_float
from .grad_fn import record
from .no_grad import enable_grad, is_grad_enabled, no_grad
from .functions import differentiable as dv
from .tensor import Tensor
from .rows import sum_to_shape

__all__ = ["elementwise", "Function", "FunctionCtx", "Kernel"]

# Names the elementwise template uses itself (see cl_kernels/elementwise.cl.mako) or that mean something
# in the expression (T is the float type, L() a literal of it, gid the element's index).
_RESERVED = {"n", "chunk", "gid", "out", "T", "L", "start", "end"}
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9]*$")


def _data(x):
    from .variable import Variable
    return x.data() if isinstance(x, Variable) else x


def elementwise(expr: str, *tensors, dtype=None, **named):
    """``expr`` evaluated elementwise over the inputs, in one kernel, with numpy broadcasting.

    Positional inputs are named ``a``, ``b``, ``c``... in ``expr``; keyword arguments that are Tensors or
    Variables are inputs under their own names, and keyword numbers are scalars of the float type (passed
    as kernel arguments: changing one never rebuilds). In ``expr``, ``T`` is the widest float type of the
    inputs and ``L(0.5)`` a literal of it; the result has that type unless ``dtype`` says otherwise.
    The result is a Tensor, or a Variable (with no gradient) when any input is a Variable: for a
    gradient, wrap the op in a :class:`Function`.

    >>> from axonml_autograd import Tensor
    >>> x, y = Tensor.from_vec([1.0, 2.0], [2]), Tensor.from_vec([10.0], [1])
    >>> elementwise("a * b + s", x, y, s=0.5).to_vec()
    [10.5, 20.5]
    """
    from .variable import Variable
    if not isinstance(expr, str) or not expr.strip():
        raise TypeError(f"elementwise: expr must be a non-empty OpenCL C expression, got {expr!r}")
    inputs, names, scalars = [], [], {}
    positional = "abcdefghijk"
    if len(tensors) > len(positional):
        raise ValueError(f"elementwise: at most {len(positional)} positional inputs, got {len(tensors)}")
    for k, t in enumerate(tensors):
        if not isinstance(t, (Tensor, Variable)):
            raise TypeError(f"elementwise: positional input {k} must be a Tensor or Variable, got "
                            f"{type(t).__name__} (pass numbers as keyword scalars)")
        inputs.append(t)
        names.append(positional[k])
    for name, value in named.items():
        if not _IDENT.match(name) or name in _RESERVED or keyword.iskeyword(name) or name in names:
            raise ValueError(f"elementwise: {name!r} cannot name an input or scalar (reserved, repeated or "
                             f"not a plain identifier; reserved: {sorted(_RESERVED)})")
        if isinstance(value, (Tensor, Variable)):
            inputs.append(value)
            names.append(name)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            scalars[name] = as_float(value, f"elementwise scalar {name}")
        else:
            raise TypeError(f"elementwise: {name} must be a Tensor, Variable or number, got {type(value).__name__}")
    if not inputs:
        raise ValueError("elementwise: expected at least one Tensor or Variable input")
    as_variable = any(isinstance(t, Variable) for t in inputs)
    datas = [_data(t) for t in inputs]
    out_dtype = None if dtype is None else datas[0].device.check_dtype(dtype)
    try:
        result = _elementwise(expr, datas, names=tuple(names), scalars=scalars, dtype=out_dtype,
                              op="elementwise")
    except kernels.KernelBuildError as e:
        raise kernels.KernelBuildError(f"elementwise: the expression {expr!r} does not compile:\n{e}") from e
    return Variable(result) if as_variable else result


class FunctionCtx:
    """The ``ctx`` of a :class:`Function`: ``save_for_backward``, ``saved_tensors``,
    ``needs_input_grad``, ``mark_non_differentiable``, and any attributes you set in ``forward``."""

    def __init__(self):
        self._to_save = ()
        self._non_differentiable = ()
        self._node = None
        self._saved_kinds = ()
        self._origins = ()       # per saved tensor: ("input", k), ("output", j) or None
        self._connected = None   # in a differentiable backward: the saved tensors as graph Variables
        self.needs_input_grad = ()

    def save_for_backward(self, *tensors):
        """Keep Tensors/Variables (or None) for backward. They are version-checked: writing one in place
        before backward raises there, as for the built-in ops."""
        from .variable import Variable
        for k, t in enumerate(tensors):
            if t is not None and not isinstance(t, (Tensor, Variable)):
                raise TypeError(f"save_for_backward: argument {k} must be a Tensor, Variable or None, "
                                f"got {type(t).__name__} (keep other values as ctx attributes)")
        self._to_save = tensors

    def mark_non_differentiable(self, *outputs):
        """Outputs that get no gradient (indices, masks)."""
        self._non_differentiable = outputs

    @property
    def saved_tensors(self) -> tuple:
        if self._node is None:   # still in forward
            return self._to_save
        from .variable import Variable
        data = self._node.saved_tensors   # raises after release, or when one was written in place
        if self._connected is not None:
            return self._connected
        return tuple(None if t is None else Variable(t) if kind else t for t, kind in zip(data, self._saved_kinds))


class Function:
    """A differentiable op of your own: subclass with ``forward(ctx, *args)`` and ``backward(ctx, *grads)``
    (static methods), call as ``MyOp.apply(*args)``.

    ``forward`` gets the arguments as given (Variables, Tensors, numbers) and runs without recording;
    it returns a Tensor or Variable, or a tuple of them. ``backward`` gets one gradient per output (a
    Variable; zeros for an output that got none) and returns one gradient per argument of forward
    (None where there is none). ``ctx.needs_input_grad`` says which are wanted.
    """

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError("Function: define forward(ctx, *args) as a staticmethod")

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError("Function: define backward(ctx, *grads) as a staticmethod")

    @classmethod
    def apply(cls, *args):
        from .variable import Variable
        ctx = FunctionCtx()
        grad_on = is_grad_enabled()
        var_inputs = [a if isinstance(a, Variable) else None for a in args]
        ctx.needs_input_grad = tuple(bool(grad_on and v is not None and v.requires_grad()) for v in var_inputs)
        with no_grad():
            outputs = cls.forward(ctx, *args)
        single = not isinstance(outputs, tuple)
        outs = (outputs,) if single else outputs
        for k, o in enumerate(outs):
            if not isinstance(o, (Tensor, Variable)):
                raise TypeError(f"{cls.__name__}.forward: output {k} must be a Tensor or Variable, "
                                f"got {type(o).__name__}")
        datas = [_data(o) for o in outs]
        skip = {id(o) for o in ctx._non_differentiable}
        differentiable = [k for k, (o, d) in enumerate(zip(outs, datas)) if id(o) not in skip and d.dtype.kind == "f"]
        saved = tuple(None if t is None else _data(t) for t in ctx._to_save)
        ctx._saved_kinds = tuple(isinstance(t, Variable) for t in ctx._to_save)
        ctx._origins = tuple(_origin(t, args, outs) for t in ctx._to_save)
        shapes = [None if v is None else v.data()._shape for v in var_inputs]
        name = f"{cls.__name__}Backward"
        results = []
        for k, d in enumerate(datas):
            if k in differentiable and any(ctx.needs_input_grad):
                rule, vrule = _rules(cls, ctx, k, datas, differentiable, shapes, len(args))
                results.append(record(name, d, var_inputs, rule, saved=saved, vrule=vrule))
            else:
                results.append(Variable(d))
        return results[0] if single else tuple(results)


def _origin(t, args, outs):
    for k, a in enumerate(args):
        if t is a:
            return ("input", k)
    for j, o in enumerate(outs):
        if t is o:
            return ("output", j)
    return None


def _rules(cls, ctx, k, datas, differentiable, shapes, n_args):
    """The backward of output ``k``, first-order and differentiable: ``cls.backward`` with this output's
    gradient and zeros for the others (a VJP is linear in the gradients, so the nodes of several
    outputs add up to one call). The differentiable rule runs it with grad mode on, the saved
    inputs and this output connected to the graph (``create_graph=True``)."""
    from .variable import Variable

    def run(node, g, connected):
        grads = []
        for j, d in enumerate(datas):
            if j == k:
                grads.append(g)
            elif j in differentiable:
                grads.append(Variable(Tensor.zeros(d._shape, d.dtype, d.device)))
            else:
                grads.append(None)
        ctx._node = node
        try:
            if connected:
                saved = node.saved_tensors
                ctx._connected = tuple(
                    None if t is None else
                    node.input(o[1], t) if o is not None and o[0] == "input" else
                    node.output(t) if o == ("output", k) else
                    Variable(t) if kind else t
                    for t, o, kind in zip(saved, ctx._origins, ctx._saved_kinds))
                with enable_grad():
                    return cls.backward(ctx, *grads)
            with no_grad():
                return cls.backward(ctx, *grads)
        finally:
            ctx._node = ctx._connected = None

    def rule(node, g):
        return check(node, run(node, Variable(g), False), as_data=True)

    def vrule(node, g):
        grads = check(node, run(node, g, True), as_data=False)
        # A VJP is linear in g and (for a non-linear op) depends on the saved inputs: a gradient that
        # is off the graph although they are on it was made by something not differentiable
        # (elementwise, a Kernel). Its derivative would silently be 0, so refuse.
        live = g.requires_grad() or any(getattr(t, "requires_grad", lambda: False)() for t in (ctx_saved(node) or ()))
        for j, r in enumerate(grads):
            if r is not None and live and not r.requires_grad():
                raise NotImplementedError(
                    f"{cls.__name__}.backward: gradient {j} is not differentiable (made with elementwise() or a "
                    "Kernel?), so create_graph=True cannot differentiate it again; write backward with Variable "
                    "ops, or as another Function, to differentiate it twice")
        return grads

    def ctx_saved(node):
        ctx._node = node
        try:
            return tuple(None if t is None else node.input(o[1], t) if o is not None and o[0] == "input" else None
                         for t, o in zip(node.saved_tensors, ctx._origins))
        finally:
            ctx._node = None

    def check(node, result, as_data):
        result = result if isinstance(result, tuple) else (result,)
        if len(result) != n_args:
            raise TypeError(f"{cls.__name__}.backward returned {len(result)} gradients; forward took {n_args} "
                            f"arguments, so it must return {n_args} (None for those without one)")
        out = []
        for j, (r, shape, need) in enumerate(zip(result, shapes, node.needs_input_grad)):
            if r is None or not need:
                out.append(None)
                continue
            if not isinstance(r, (Tensor, Variable)):
                raise TypeError(f"{cls.__name__}.backward: gradient {j} must be a Tensor, Variable or None, "
                                f"got {type(r).__name__}")
            if _data(r)._shape != shape:
                if not _expandable(shape, _data(r)._shape):
                    raise ValueError(f"{cls.__name__}.backward: gradient {j} has shape {list(_data(r)._shape)}, "
                                     f"but input {j} has shape {list(shape)}")
                # As torch: a gradient of the broadcast shape is summed back to the input's.
                r = sum_to_shape(_data(r), shape) if as_data else dv.sum_to(
                    r if isinstance(r, Variable) else Variable(r), shape)
            out.append(_data(r) if as_data else r if isinstance(r, Variable) else Variable(r))
        return tuple(out)

    return rule, vrule


def _expandable(shape, to) -> bool:
    """Whether ``shape`` broadcasts to ``to`` (numpy's rules)."""
    return len(shape) <= len(to) and all(s in (1, t) for s, t in zip(reversed(shape), reversed(to)))


# -- whole kernels -----------------------------------------------------------------------------------------

# What a Tensor behind a pointer must hold, by pointee (the kernel's own signature is parsed by
# kernels.parse_signature, which the library's launches bind by name through too).
_POINTEES = {"float": np.float32, "double": np.float64, "int": np.int32, "long": np.int64, "uchar": np.bool_}


class Kernel:
    """A kernel of your own in OpenCL C, built once per device (and kept in the kernel cache like ours).

    Call it as ``k(global_size, *args, local_size=None)``: Tensors or Variables for ``__global`` pointers
    (their element type is checked against the pointer's), Python numbers for scalars (converted to the
    parameter's type), and a byte count for a ``__local`` pointer. Buffers behind non-const pointers
    count as written (their version goes up, so a tensor saved for backward is not silently changed).
    Nothing waits: the launch is queued like any op, and is recorded by a capture.

    >>> from axonml_autograd import Kernel, Tensor
    >>> k = Kernel('''
    ... __kernel void axpy(__global float *y, __global const float *x, const float a, const int n) {
    ...     int i = get_global_id(0);
    ...     if (i < n) y[i] += a * x[i];
    ... }''', "axpy")
    >>> y, x = Tensor.from_vec([1.0, 2.0, 3.0], [3]), Tensor.from_vec([1.0, 1.0, 1.0], [3])
    >>> k(3, y, x, 2.0, 3)
    >>> y.to_vec()
    [3.0, 4.0, 5.0]
    """

    def __init__(self, source: str, name: str, options=()):
        if not isinstance(source, str) or not isinstance(name, str):
            raise TypeError("Kernel: expected the OpenCL C source and the kernel's name as strings")
        self.source, self.name, self.options = source, name, tuple(options)
        self.params = kernels.parse_signature(source, name).params

    def _kernel(self, device) -> cl.Kernel:
        # Built once per device, like ours (KernelBuildError with the compiler's log).
        return kernels.source_kernel(device, self.source, self.name, self.options)

    def __call__(self, global_size, *args, local_size=None, device=None):
        from .device import get_device
        if len(args) != len(self.params):
            raise TypeError(f"Kernel {self.name}: expected {len(self.params)} arguments "
                            f"({', '.join(p.name for p in self.params)}), got {len(args)}")
        gsize = (global_size,) if isinstance(global_size, numbers.Integral) else tuple(global_size)
        lsize = None if local_size is None else \
            (local_size,) if isinstance(local_size, numbers.Integral) else tuple(local_size)
        if not gsize or any(not isinstance(s, numbers.Integral) or s < 0 for s in gsize):
            raise ValueError(f"Kernel {self.name}: global_size must be non-negative ints, got {global_size!r}")
        if lsize is not None and (len(lsize) != len(gsize) or any(s <= 0 or g % s for g, s in zip(gsize, lsize))):
            raise ValueError(f"Kernel {self.name}: local_size {local_size!r} must divide global_size {global_size!r}")
        datas = [_data(a) for a in args]
        tensors = [d for d in datas if isinstance(d, Tensor)]
        dev = tensors[0].device if tensors else get_device(device)
        if tensors:
            _check_same_device(f"Kernel {self.name}", tensors)
        values, written = [], []
        for p, a in zip(self.params, datas):
            if p.kind == "buffer":
                if not isinstance(a, Tensor):
                    raise TypeError(f"Kernel {self.name}: {p.name} is a pointer; pass a Tensor or Variable, "
                                    f"got {type(a).__name__}")
                want = _POINTEES.get(p.ctype)
                if want is not None and a.dtype != np.dtype(want):
                    raise TypeError(f"Kernel {self.name}: {p.name} points to {p.ctype}, got a {a.dtype} tensor")
                values.append(a.buffer)
                if not p.const:
                    written.append(a)
            elif p.kind == "local":
                if not isinstance(a, numbers.Integral) or a <= 0:
                    raise TypeError(f"Kernel {self.name}: {p.name} is __local; pass its size in bytes, got {a!r}")
                values.append(cl.LocalMemory(int(a)))
            else:
                if isinstance(a, bool) or not isinstance(a, numbers.Real):
                    raise TypeError(f"Kernel {self.name}: {p.name} is a {p.ctype}; pass a number, got {a!r}")
                dt = np.dtype(kernels.SCALAR_TYPES[p.ctype])
                if dt.kind in "iu" and (not float(a).is_integer() or not np.iinfo(dt).min <= a <= np.iinfo(dt).max):
                    raise ValueError(f"Kernel {self.name}: {p.name} is a {p.ctype}; {a!r} does not fit")
                values.append(dt.type(a))
        if 0 in gsize:
            return None
        kernels.launch(dev, self._kernel(dev), gsize, lsize, *values)
        for t in written:
            t._version += 1
        return None
