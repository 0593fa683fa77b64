"""The ops of ``Variable``: arithmetic, in-place updates, reductions, linear algebra, shapes, losses, masks
and indexing, each a short method that calls its differentiable function in ``functions/``.

``Variable`` (``variable.py``) inherits them and keeps the autograd state: the gradient, its hooks and
``backward()``. The registry's pointwise ops (``x.sin()``, ``x.relu()``...) are attached by ``surface.py``.
"""

from __future__ import annotations

import numbers

from . import pointwise as P
from . import tensor as T
from .shapes import as_float, as_int, infer_shape, normalize_axis
from .functions import activation, compare, indexing, linalg, loss, reduction, sorting
from .functions import pointwise as F
from .functions import shape as shape_ops
from .tensor import Tensor

# The Variable class, bound by variable.py once it exists: the methods here make new Variables, and
# variable.py (which defines the class on top of this one) is the module that imports this one.
Variable = None


class VariableOps:
    """Mixed into ``Variable``; see the module's doc."""

    __slots__ = ()

    # -- arithmetic ---------------------------------------------------------------------------------
    def _binary(self, other, name):
        if isinstance(other, Variable):
            return F.binary(name, self, other)
        if isinstance(other, Tensor):
            return F.binary(name, self, Variable(other))
        if isinstance(other, numbers.Real):
            # A Python bool counts as 0 or 1, as in torch (x * True).
            return F.scalar(name, self, int(other) if isinstance(other, bool) else other)
        raise TypeError(f"{name}: expected a Variable, Tensor or number, got {type(other).__name__}")

    def add_var(self, other): return F.binary("add", self, _as_variable(other, "add_var"))
    def sub_var(self, other): return F.binary("sub", self, _as_variable(other, "sub_var"))
    def mul_var(self, other): return F.binary("mul", self, _as_variable(other, "mul_var"))
    def div_var(self, other): return F.binary("div", self, _as_variable(other, "div_var"))
    def neg_var(self): return F.unary("neg", self)
    def neg(self): return F.unary("neg", self)
    negative = neg

    def add(self, other): return self._binary(other, "add")
    def sub(self, other): return self._binary(other, "sub")
    def mul(self, other): return self._binary(other, "mul")
    def div(self, other): return self._binary(other, "div")

    def add_scalar(self, s): return F.scalar("add", self, _number(s, "add_scalar"))
    def sub_scalar(self, s): return F.scalar("sub", self, _number(s, "sub_scalar"))
    def mul_scalar(self, s): return F.scalar("mul", self, _number(s, "mul_scalar"))
    def div_scalar(self, s): return F.scalar("div", self, _number(s, "div_scalar"))

    __add__ = add
    __sub__ = sub
    __mul__ = mul
    __truediv__ = div
    __neg__ = neg_var

    def sort(self, dim=-1, descending=False, stable=True):
        """``(values, indices)`` sorted along ``dim`` (stable; NaN largest; int32 indices)."""
        return sorting.sort(self, dim, descending, stable)

    def argsort(self, dim=-1, descending=False, stable=True) -> Tensor:
        return sorting.argsort(self, dim, descending, stable)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        """The ``k`` largest (or smallest) along ``dim`` as ``(values, indices)``, in order."""
        return sorting.topk(self, k, dim, largest, sorted)

    def new_zeros(self, *size, dtype=None):
        """A Variable of zeros of ``size`` with this one's dtype and device (torch's ``new_zeros``)."""
        return Variable(Tensor.zeros(_varargs(size), dtype or self.dtype, self._data.device))

    def new_ones(self, *size, dtype=None):
        return Variable(Tensor.ones(_varargs(size), dtype or self.dtype, self._data.device))

    def new_full(self, size, fill_value, dtype=None):
        return Variable(Tensor.full(size, fill_value, dtype or self.dtype, self._data.device))

    def new_empty(self, *size, dtype=None):
        return Variable(Tensor.empty(_varargs(size), dtype or self.dtype, self._data.device))

    def masked_select(self, mask):
        """The elements (or rows, for a mask over the leading dims) where ``mask`` is True, in order, as
        ``x[mask]``. Reads the mask to the host: the result's length depends on it (as in torch)."""
        return indexing.masked_select(self, mask)

    def nonzero(self) -> Tensor:
        """torch's ``nonzero``: an int64 [count, ndim] Tensor of the non-zero positions (a host read)."""
        import numpy as np
        return Tensor.from_numpy(np.argwhere(self._data.numpy() != 0).astype(np.int64), device=self._data.device)

    def dot(self, other):
        """The inner product of two 1-D Variables (torch's ``dot``)."""
        o = _as_variable(other, "dot")
        if self.ndim() != 1 or o.ndim() != 1 or self.shape() != o.shape():
            raise ValueError(f"dot: expected two 1-D Variables of one length, got {self.shape()} and {o.shape()}")
        return (self * o).sum()

    def outer(self, other):
        """``self[:, None] * other[None, :]`` for 1-D Variables (torch's ``outer``)."""
        o = _as_variable(other, "outer")
        if self.ndim() != 1 or o.ndim() != 1:
            raise ValueError(f"outer: expected two 1-D Variables, got {self.shape()} and {o.shape()}")
        return self.unsqueeze(1) * o.unsqueeze(0)

    def roll(self, shifts, dims=None):
        """torch's ``roll``: elements shifted along ``dims`` (wrapping around); without ``dims`` the
        flattened Variable is rolled and the shape restored. Two narrows and a cat per dim: differentiable."""
        if dims is None:
            return self.reshape([-1]).roll(shifts, 0).reshape(self.shape())
        shifts = [shifts] if isinstance(shifts, numbers.Integral) else list(shifts)
        dims = [dims] if isinstance(dims, numbers.Integral) else list(dims)
        if len(shifts) != len(dims):
            raise ValueError(f"roll: {len(shifts)} shifts for {len(dims)} dims")
        out = self
        for s, d in zip(shifts, dims):
            d = normalize_axis(d, self.ndim(), "roll dim")
            n = self.shape()[d]
            k = as_int(s, "roll: shift") % n if n else 0
            if k:
                out = Variable.cat([out.narrow(d, n - k, k), out.narrow(d, 0, n - k)], d)
        return out

    def isclose(self, other, rtol=1e-5, atol=1e-8, equal_nan=False):
        """``|self - other| <= atol + rtol * |other|`` elementwise, as a bool tensor (torch's ``isclose``)."""
        return compare.isclose(self._data, other.data() if isinstance(other, Variable) else other, rtol, atol,
                               equal_nan)

    def allclose(self, other, rtol=1e-5, atol=1e-8, equal_nan=False) -> bool:
        """A Python bool (this reads the device): every element ``isclose``."""
        return bool(self.isclose(other, rtol, atol, equal_nan).all().item())

    # -- in place (torch's rules) -----------------------------------------------------------------
    # Under no_grad, or on a Variable that needs no gradient, the result is written into this
    # Variable's own buffer (the manual SGD idiom `with no_grad(): w -= lr * w.grad` updates w itself).
    # A leaf that requires grad refuses while grad mode is on, as in torch. Inside a graph (a result of
    # ops, grad mode on) the op runs out of place: the name is rebound, the gradients stay right.
    def _inplace(self, result_fn, op, rebind=True):
        from .no_grad import is_grad_enabled
        if self._requires_grad and is_grad_enabled():
            if self._grad_fn is None:
                raise RuntimeError(f"{op}: a leaf Variable that requires grad is being used in an in-place "
                                   "operation; wrap the update in `with no_grad():` (as in torch)")
            if not rebind:
                raise NotImplementedError(f"{op}: overwriting a result that is part of a graph is not "
                                          "supported; build the new value out of place")
            return result_fn()
        result = result_fn()
        self._data.copy_(result._data if isinstance(result, Variable) else result)
        return self

    def __iadd__(self, other): return self._inplace(lambda: self + other, "add_")
    def __isub__(self, other): return self._inplace(lambda: self - other, "sub_")
    def __imul__(self, other): return self._inplace(lambda: self * other, "mul_")
    def __itruediv__(self, other): return self._inplace(lambda: self / other, "div_")

    def add_(self, other, alpha=1):
        """In place (see ``__iadd__``): ``self += alpha * other``."""
        return self._inplace(lambda: self + (other * alpha if alpha != 1 else other), "add_")

    def sub_(self, other, alpha=1):
        return self._inplace(lambda: self - (other * alpha if alpha != 1 else other), "sub_")

    def mul_(self, other): return self._inplace(lambda: self * other, "mul_")
    def div_(self, other): return self._inplace(lambda: self / other, "div_")
    def clamp_(self, min=None, max=None): return self._inplace(lambda: self.clamp(min, max), "clamp_")

    def copy_(self, src):
        """Write ``src`` (Variable, Tensor or number; broadcast) into this Variable's buffer, in place."""
        return self._inplace(lambda: src.data() if isinstance(src, Variable) else src, "copy_", rebind=False)

    def fill_(self, value): return self._inplace(lambda: value, "fill_", rebind=False)
    def zero_(self): return self._inplace(lambda: 0, "zero_", rebind=False)

    def __radd__(self, other): return self._binary(other, "add")
    def __rmul__(self, other): return self._binary(other, "mul")

    def __rsub__(self, other):
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return F.scalar("sub", self, other, reverse=True)
        return _as_variable(other, "sub").sub_var(self)

    def __rtruediv__(self, other):
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return F.scalar("div", self, other, reverse=True)
        return _as_variable(other, "div").div_var(self)

    def pow(self, exponent):
        """``self ** exponent``: a number, or a Variable/Tensor (broadcasting; both sides differentiable)."""
        if isinstance(exponent, (Variable, Tensor)):
            return F.binary("pow", self, _as_variable(exponent, "pow"))
        if isinstance(exponent, numbers.Integral) and not isinstance(exponent, bool):
            return F.pow(self, int(exponent))   # integers to integer powers stay exact integers
        return F.pow(self, _number(exponent, "pow"))
    __pow__ = pow

    def __rpow__(self, base):
        """``base ** self`` for a number ``base`` (gradient ``base ** x * log(base)``)."""
        return F.scalar("pow", self, _number(base, "rpow"), reverse=True)

    def __floordiv__(self, other): return self._floor_or_mod(other, "floordiv", False)
    def __rfloordiv__(self, other): return self._floor_or_mod(other, "floordiv", True)
    def __mod__(self, other): return self._floor_or_mod(other, "remainder", False)
    def __rmod__(self, other): return self._floor_or_mod(other, "remainder", True)

    def _floor_or_mod(self, other, op, reverse):
        """``//`` and ``%`` as Python and torch: integers stay exact integers (no gradient); for floats
        ``a // b`` is ``floor(a / b)`` (gradient 0, as floor's) and ``a % b`` is :meth:`remainder`."""
        if isinstance(other, (Variable, Tensor)):
            o = _as_variable(other, op)
        elif isinstance(other, numbers.Real) and not isinstance(other, bool):
            if self._data.dtype.kind != "f" and isinstance(other, numbers.Integral):
                t = P.scalar_op(op, self._data, int(other), reverse)   # the exact integer scalar path
                return Variable(t)
            o = _operand(other, self, op)
        else:
            raise TypeError(f"{op}: expected a Variable, Tensor or number, got {type(other).__name__}")
        a, b = (o, self) if reverse else (self, o)
        if a._data.dtype.kind != "f" and b._data.dtype.kind != "f":
            return Variable(P.binary(op, a._data, b._data))
        return a.div(b).floor() if op == "floordiv" else a.remainder(b)


    def clamp(self, min=None, max=None): return F.clamp(self, min, max)
    def clamp_min(self, min): return F.clamp(self, min, None)
    def clamp_max(self, max): return F.clamp(self, None, max)

    # -- activations (the registry's rows are attached by surface.py) ---------------------------------
    def gelu(self, approximate="none"):
        """torch's gelu: ``x * Phi(x)`` with erf (``approximate="none"``) or the tanh approximation."""
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return F.unary("gelu" if approximate == "none" else "gelu_tanh", self)

    def softmax(self, dim=-1): return activation.softmax(self, dim)
    def log_softmax(self, dim=-1): return activation.log_softmax(self, dim)

    # -- reductions ---------------------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False):
        """The sum of everything (0-d), or over ``dim`` (an int or a tuple), as torch's ``sum``."""
        if dim is None and not keepdim:
            return reduction.sum_all(self)
        return reduction.reduce_dims(self, dim, keepdim, "sum")

    def mean(self, dim=None, keepdim=False):
        """The mean of everything (0-d), or over ``dim`` (an int or a tuple), as torch's ``mean``."""
        if dim is None and not keepdim:
            return reduction.mean_all(self)
        return reduction.reduce_dims(self, dim, keepdim, "mean")

    def max(self, dim=None, keepdim=False):
        """torch's ``max``: over everything a 0-d Variable; along ``dim`` ``(values, indices)``."""
        return reduction.extreme(self, dim, keepdim, "max")

    def min(self, dim=None, keepdim=False):
        """torch's ``min``: over everything a 0-d Variable; along ``dim`` ``(values, indices)``."""
        return reduction.extreme(self, dim, keepdim, "min")

    def var(self, dim=None, correction=1, keepdim=False):
        """torch's ``var`` (``correction=1``: unbiased; 0: population)."""
        return reduction.variance(self, dim, correction, keepdim)

    def std(self, dim=None, correction=1, keepdim=False):
        return reduction.variance(self, dim, correction, keepdim).sqrt()

    def cumsum(self, dim): return reduction.cumsum(self, dim)
    def cumprod(self, dim): return reduction.cumprod(self, dim)
    def prod(self, dim=None, keepdim=False): return reduction.prod(self, dim, keepdim)
    def amax(self, dim=None, keepdim=False): return reduction.amax(self, dim, keepdim, "amax")
    def amin(self, dim=None, keepdim=False): return reduction.amax(self, dim, keepdim, "amin")
    def logsumexp(self, dim, keepdim=False): return reduction.logsumexp(self, dim, keepdim)
    def norm(self, p=2, dim=None, keepdim=False): return reduction.norm(self, p, dim, keepdim)

    def where(self, condition, other):
        """``self`` where ``condition`` is non-zero, else ``other`` (a Variable, Tensor or number)."""
        return F.where(condition, self, _operand(other, self, "where"))

    def masked_fill(self, mask, value):
        """``value`` where ``mask`` is non-zero (broadcasting), else ``self``."""
        return F.where(mask, _operand(value, self, "masked_fill"), self)

    def argmax(self, dim=None, keepdim=False) -> Tensor:
        return reduction.arg_extreme(self._data, dim, keepdim, "argmax")

    def argmin(self, dim=None, keepdim=False) -> Tensor:
        return reduction.arg_extreme(self._data, dim, keepdim, "argmin")
    def sum_dim(self, dim, keepdim=False): return reduction.sum_dim(self, dim, keepdim)
    def mean_dim(self, dim, keepdim=False): return reduction.mean_dim(self, dim, keepdim)
    def var_dim(self, dim, keepdim=False): return reduction.var_dim(self, dim, keepdim)
    def max_dim(self, dim, keepdim=False): return reduction.max_dim(self, dim, keepdim)

    # -- linear algebra -----------------------------------------------------------------------------
    def matmul(self, other): return linalg.matmul(self, _as_variable(other, "matmul"))
    __matmul__ = matmul

    def __rmatmul__(self, other): return linalg.matmul(_as_variable(other, "matmul"), self)

    def mm(self, other):
        """torch's ``mm``: a matmul of two 2-D operands (no batching, no broadcasting)."""
        other = _as_variable(other, "mm")
        if self.ndim() != 2 or other.ndim() != 2:
            raise ValueError(f"mm: expected 2-D operands, got shapes {self.shape()} and {other.shape()}")
        return linalg.matmul(self, other)

    def bmm(self, other):
        """torch's ``bmm``: batched matmul of [b, n, k] and [b, k, m] (no broadcasting of the batch)."""
        other = _as_variable(other, "bmm")
        if self.ndim() != 3 or other.ndim() != 3:
            raise ValueError(f"bmm: expected 3-D operands, got shapes {self.shape()} and {other.shape()}")
        if self.shape()[0] != other.shape()[0]:
            raise ValueError(f"bmm: batch sizes differ: {self.shape()} and {other.shape()}")
        return linalg.matmul(self, other)

    # -- shapes -------------------------------------------------------------------------------------
    def reshape(self, *shape):
        """``reshape([2, -1])`` or torch's ``reshape(2, -1)``."""
        return shape_ops.reshape(self, _varargs(shape))

    def view(self, *shape): return shape_ops.reshape(self, _varargs(shape))
    def permute(self, *dims): return shape_ops.permute(self, _varargs(dims))

    @property
    def T(self):
        """The axes reversed (a transpose for 2-D), as torch's ``.T``."""
        return shape_ops.permute(self, list(reversed(range(self.ndim()))))

    @property
    def mT(self):
        """The last two axes swapped (a batch of transposes)."""
        if self.ndim() < 2:
            raise ValueError(f"mT: expected a matrix or a batch of matrices (at least 2 dimensions), "
                             f"got shape {self.shape()}")
        return shape_ops.transpose(self, -2, -1)

    def size(self, dim=None):
        """The shape as a list, or the size of axis ``dim`` (torch's ``size``)."""
        return self._data.size(dim)

    def dim(self) -> int:
        return self._data.ndim()

    def flip(self, *dims): return shape_ops.flip(self, _varargs(dims))
    def tril(self, diagonal=0): return shape_ops.triangle(self, diagonal, upper=False)
    def diagonal(self, offset=0, dim1=0, dim2=1): return shape_ops.diagonal(self, offset, dim1, dim2)
    def triu(self, diagonal=0): return shape_ops.triangle(self, diagonal, upper=True)
    def expand_as(self, other): return self.expand(_as_variable(other, "expand_as").shape())
    def view_as(self, other): return self.reshape(_as_variable(other, "view_as").shape())
    def reshape_as(self, other): return self.reshape(_as_variable(other, "reshape_as").shape())
    def is_contiguous(self) -> bool: return self._data.is_contiguous()

    def clone(self):
        """A copy in a new buffer, differentiable (torch's ``clone``; a view comes out contiguous)."""
        return shape_ops.clone(self)

    def contiguous(self):
        """Itself when its data is laid out contiguously, else a contiguous differentiable copy."""
        return self if self._data.is_contiguous() else shape_ops.clone(self)

    def unflatten(self, dim, sizes):
        shape = self.shape()
        d = normalize_axis(dim, len(shape), "unflatten dim", shape)
        sizes = [sizes] if isinstance(sizes, int) else list(sizes)
        try:
            new = list(infer_shape(sizes, shape[d]))
        except ValueError:
            raise ValueError(f"unflatten: sizes {sizes} do not multiply to the size {shape[d]} of dim {d} "
                             f"in shape {shape}") from None
        return self.reshape(shape[:d] + new + shape[d + 1:])

    def repeat(self, *sizes):
        """torch's ``repeat``: tile the data ``sizes[k]`` times along axis k (leading axes added as needed)."""
        sizes = [as_int(s, "repeat: size") for s in _varargs(sizes)]
        shape = self.shape()
        if len(sizes) < len(shape):
            raise ValueError(f"repeat: {len(sizes)} sizes for a tensor of {len(shape)} dims")
        shape = [1] * (len(sizes) - len(shape)) + shape
        spread = [v for s in shape for v in (1, s)]
        tiled = [v for r, s in zip(sizes, shape) for v in (r, s)]
        return self.reshape(spread).expand(tiled).reshape([r * s for r, s in zip(sizes, shape)])

    def split(self, split_size_or_sections, dim=0):
        """Pieces along ``dim``: of ``split_size`` each (the last may be shorter), or of the listed sizes."""
        size = self.shape()[normalize_axis(dim, self.ndim(), "split dim")]
        if isinstance(split_size_or_sections, (list, tuple)):
            sizes = [as_int(s, "split: section") for s in split_size_or_sections]
            if sum(sizes) != size:
                raise ValueError(f"split: sections {sizes} do not add up to the size {size} of dim {dim}")
        else:
            step = as_int(split_size_or_sections, "split: split_size")
            if step <= 0:
                raise ValueError(f"split: split_size must be positive, got {step}")
            sizes = [min(step, size - k) for k in range(0, size, step)] or [0]
        out, start = [], 0
        for s in sizes:
            out.append(self.narrow(dim, start, s))
            start += s
        return tuple(out)

    def chunk(self, chunks, dim=0):
        """torch's ``chunk``: at most ``chunks`` pieces of ``ceil(size / chunks)`` along ``dim``."""
        chunks = as_int(chunks, "chunk: chunks")
        if chunks <= 0:
            raise ValueError(f"chunk: chunks must be positive, got {chunks}")
        size = self.shape()[normalize_axis(dim, self.ndim(), "chunk dim")]
        return self.split(max(1, -(-size // chunks)), dim)
    def transpose(self, d0, d1): return shape_ops.transpose(self, d0, d1)
    def swapaxes(self, d0, d1): return shape_ops.transpose(self, d0, d1)
    def swapdims(self, d0, d1): return shape_ops.transpose(self, d0, d1)
    def movedim(self, source, destination): return shape_ops.movedim(self, source, destination)
    def moveaxis(self, source, destination): return shape_ops.movedim(self, source, destination, "moveaxis")
    def t(self): return shape_ops.transpose(self, -2, -1) if self.ndim() >= 2 else self
    def narrow(self, dim, start, length): return shape_ops.narrow(self, dim, start, length)
    def slice(self, ranges): return shape_ops.slice(self, ranges)
    def expand(self, *shape): return shape_ops.expand(self, _varargs(shape))
    def unsqueeze(self, dim): return shape_ops.unsqueeze(self, dim)
    def squeeze(self, dim=None): return shape_ops.squeeze(self, dim)
    def flatten(self, start_dim=0, end_dim=-1):
        """Axes ``start_dim..end_dim`` merged into one (all of them by default)."""
        shape = self.shape()
        if not shape:
            return shape_ops.reshape(self, [1])
        s = normalize_axis(start_dim, len(shape), "flatten start_dim", shape)
        e = normalize_axis(end_dim, len(shape), "flatten end_dim", shape)
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        merged = 1
        for k in range(s, e + 1):
            merged *= shape[k]
        return shape_ops.reshape(self, shape[:s] + [merged] + shape[e + 1:])

    @staticmethod
    def cat(variables, dim=0) -> "Variable":
        return shape_ops.cat([_as_variable(v, "cat") for v in variables], dim)

    @staticmethod
    def stack(variables, dim=0) -> "Variable":
        """Join along a new axis ``dim`` (every shape must be the same)."""
        vs = [_as_variable(v, "stack") for v in variables]
        if not vs:
            raise ValueError("stack: expected a non-empty list of Variables")
        for v in vs[1:]:
            if v.shape() != vs[0].shape():
                raise ValueError(f"stack: shapes {vs[0].shape()} and {v.shape()} differ")
        d = normalize_axis(dim, vs[0].ndim() + 1, "stack dim")
        return shape_ops.cat([v.unsqueeze(d) for v in vs], d)

    # -- losses -------------------------------------------------------------------------------------
    def mse_loss(self, target): return loss.mse_loss(self, _as_variable(target, "mse_loss"))
    def l1_loss(self, target): return loss.l1_loss(self, _as_variable(target, "l1_loss"))
    def smooth_l1_loss(self, target, beta=1.0):
        return loss.smooth_l1_loss(self, _as_variable(target, "smooth_l1_loss"), _number(beta, "smooth_l1_loss"))
    def binary_cross_entropy(self, target):
        return loss.binary_cross_entropy(self, _as_variable(target, "binary_cross_entropy"))
    def cross_entropy(self, targets): return loss.cross_entropy(self, targets)
    def nll_loss(self, targets): return loss.nll_loss(self, targets)

    # -- comparisons and masks (bool tensors, no gradient; see functions/compare.py) ---------------
    __hash__ = object.__hash__   # still usable as a dict key (optimiser state) with an elementwise ==

    def isnan(self): return compare.test("isnan", self._data)
    def isinf(self): return compare.test("isinf", self._data)
    def isfinite(self): return compare.test("isfinite", self._data)
    def logical_not(self): return compare.test("logical_not", self._data)
    def logical_and(self, other): return compare.logical("logical_and", self._data, other)
    def logical_or(self, other): return compare.logical("logical_or", self._data, other)
    def any(self, dim=None, keepdim=False): return compare.any_all("any", self._data, dim, keepdim)
    def all(self, dim=None, keepdim=False): return compare.any_all("all", self._data, dim, keepdim)

    # -- indexing and selection ---------------------------------------------------------------------
    def __getitem__(self, key):
        """torch's indexing: ints, slices (positive steps), None, ..., and one list / int32 Tensor axis."""
        return indexing.getitem(self, key)

    def index_select(self, dim, index): return indexing.index_select(self, dim, index)
    def gather(self, dim, index): return indexing.gather(self, dim, index)
    def scatter_add(self, dim, index, src):
        return indexing.scatter_add(self, dim, index, _as_variable(src, "scatter_add"))

    def __bool__(self):
        raise TypeError("the truth value of a Variable is ambiguous; compare its to_vec() instead")

    # torch's conversions: float(x)/int(x) read a one-element Variable (as item()), tolist() nests.
    def __float__(self): return float(self._data.item())
    def __int__(self): return int(self._data.item())
    def tolist(self): return self._data.tolist()

    # torch's dtype casts. Float to float keeps the graph (the gradient is cast back); integer and bool
    # results have none. Defined last in the class, as these names shadow the builtins in its body.
    def to(self, *args, device=None, dtype=None, copy=False):
        """This Variable on another device and/or in another dtype, as torch's ``to``: ``to(device)``,
        ``to(dtype)`` (``"float64"``, ``np.int64``...), ``to(device, dtype)``, ``to(other)``.

        Differentiable: the gradient goes back to this Variable's device and dtype (a cast to an
        integer or bool dtype has no graph). Returns ``self`` when nothing changes (unless ``copy``).
        """
        dev, dt = T.to_arguments(self._data, args, device, dtype)
        out = shape_ops.move(self, dev)
        if dt is not None:
            out = shape_ops.cast(out, dt)
        return shape_ops.clone(self) if copy and out is self else out

    def cpu(self):
        """torch's ``cpu()``: on the CPU's OpenCL device (differentiable, as ``to``)."""
        return self.to(T.kind_device("cpu", "cpu()"))

    def cuda(self, device=None):
        """torch's ``cuda()``: on the first GPU OpenCL device, or on ``device``."""
        return self.to(T.kind_device("gpu", "cuda()") if device is None else device)

    def type(self, dtype): return shape_ops.cast(self, dtype, "type")
    def float(self): return shape_ops.cast(self, "float32", "float")
    def double(self): return shape_ops.cast(self, "float64", "double")
    def half(self): return shape_ops.cast(self, "float16", "half")
    def bfloat16(self): return shape_ops.cast(self, "bfloat16", "bfloat16")
    def int(self): return shape_ops.cast(self, "int32", "int")
    def long(self): return shape_ops.cast(self, "int64", "long")
    def bool(self): return shape_ops.cast(self, "bool", "bool")

    def __len__(self):
        return len(self._data)


def _operand(other, like, op):
    """A Variable for the other side of a binary op: Variables and Tensors as they are, numbers as 0-d."""
    if isinstance(other, (Variable, Tensor)):
        return _as_variable(other, op)
    value = _number(other, op)
    return Variable(Tensor.full((), value, like.dtype if like.dtype.kind == "f" else "float32", like.device))


def _note_leaf(var, reset):
    cap = T.launch.active_capture()
    if cap is not None:
        cap.note_leaf(var, reset)


class RemovableHandle:
    """What ``register_hook`` returns: ``remove()`` takes the hook off (twice is harmless)."""

    __slots__ = ("_hooks", "_fn")

    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self):
        try:
            self._hooks.remove(self._fn)
        except ValueError:
            pass


from .shapes import varargs as _varargs  # noqa: E402


def as_variable(x, op, what="input") -> Variable:
    """``x`` (a Variable or a Tensor) as a Variable; a TypeError naming ``op`` and ``what`` otherwise."""
    if isinstance(x, Variable):
        return x
    if isinstance(x, Tensor):
        return Variable(x)
    raise TypeError(f"{op}: {what} must be a Variable or Tensor, got {type(x).__name__}")


def _as_variable(x, op) -> Variable:
    if isinstance(x, Variable):
        return x
    if isinstance(x, Tensor):
        return Variable(x)
    raise TypeError(f"{op}: expected a Variable or Tensor, got {type(x).__name__}")


def _number(x, op) -> float:
    return as_float(x, op)
