"""``Variable``: a device tensor that records the ops applied to it, for ``backward()``.

>>> from axonml_autograd import Tensor, Variable
>>> a = Variable(Tensor.from_vec([2.0], [1]), requires_grad=True)
>>> b = Variable(Tensor.from_vec([3.0], [1]), requires_grad=True)
>>> loss = (a * b).pow(2.0).sum()
>>> loss.backward()
>>> a.grad().to_vec(), b.grad().to_vec()
([36.0], [24.0])
"""

from __future__ import annotations

import weakref
from typing import Optional

from . import pointwise as P
from . import tensor as T
from .elementwise_kernels import elementwise
from . import variable_ops
from .grad_fn import AccumulateGrad, GradientFunction
from .attribute_values import FALSE, TRUE, Size, as_size, dim
from .tensor import Tensor
from .sampling import SamplingMethods
from .variable_ops import RemovableHandle, VariableOps, _note_leaf
from .variable_ops import _operand, as_variable  # noqa: F401  (imported from here by nn, functions and the package)


class Variable(VariableOps, SamplingMethods):
    """A tensor with gradient tracking: ``Variable(tensor, requires_grad=False)``."""

    # _grad_var (set only by backward(create_graph=True), read with getattr so that recording an op does
    # not pay for it): the graph-connected gradient whose data ``_grad`` is.
    __slots__ = ("_data", "_requires_grad", "_grad", "_grad_fn", "_accumulator", "_inference", "_hooks",
                 "_post_hooks", "_grad_var", "__weakref__")

    def __init__(self, data: Tensor, requires_grad: bool = False):
        if isinstance(data, Variable):
            data = data._data
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable: expected a Tensor, got {type(data).__name__}")
        if not isinstance(requires_grad, (bool, int)) or isinstance(requires_grad, float):
            raise TypeError(f"Variable: requires_grad must be a bool, got {requires_grad!r}")
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"Variable: only floating-point tensors can require grad, got {data.dtype}")
        self._data = data
        self._requires_grad = bool(requires_grad)
        self._grad: Optional[Tensor] = None
        self._grad_fn: Optional[GradientFunction] = None
        self._accumulator = None
        self._inference = False
        self._hooks = self._post_hooks = None

    # -- copy and pickle (torch's rules) -----------------------------------------------------------
    def __deepcopy__(self, memo) -> "Variable":
        """A new leaf with a device copy of the data (and of ``.grad()``), the same ``requires_grad``.
        As in torch, only leaves can be deep-copied; hooks are not copied."""
        import copy
        if self._grad_fn is not None:
            raise RuntimeError("deepcopy: only Variables created explicitly by the user (graph leaves) support "
                               "the deepcopy protocol (as in torch); detach() first")
        new = Variable(copy.deepcopy(self._data, memo), self._requires_grad)
        memo[id(self)] = new
        if self._grad is not None:
            new._grad = copy.deepcopy(self._grad, memo)
        new._inference = self._inference
        return new

    def __reduce__(self):
        """Pickles as its Tensor (values and dtype) and ``requires_grad``; not its graph or gradient."""
        return _rebuild_variable, (self._data, self._requires_grad)

    # -- construction, as in the crate -------------------------------------------------------------
    @classmethod
    def new(cls, data: Tensor, requires_grad: bool = False) -> "Variable":
        return cls(data, requires_grad)

    @classmethod
    def from_tensor(cls, data: Tensor) -> "Variable":
        """A constant: a Variable that does not require grad."""
        return cls(data, False)

    @classmethod
    def _from_op(cls, data: Tensor, node: GradientFunction) -> "Variable":
        v = cls.__new__(cls)
        v._data, v._requires_grad, v._grad, v._grad_fn = data, True, None, node
        v._accumulator, v._inference = None, False
        v._hooks = v._post_hooks = None
        return v

    # -- facts --------------------------------------------------------------------------------------
    def data(self) -> Tensor:
        return self._data

    @property
    def shape(self) -> Size:
        """torch's ``x.shape``, a tuple-like :class:`Size`; ``x.shape()`` is the crate's list."""
        return as_size(self._data._shape)

    @property
    def ndim(self) -> int:
        """torch's ``x.ndim``; ``x.ndim()`` as the crate."""
        return dim(len(self._data._shape))

    def numel(self) -> int:
        return self._data.numel()

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def device(self):
        return self._data.device

    @property
    def requires_grad(self) -> bool:
        """torch's attribute, assignable (``p.requires_grad = False`` on a leaf); ``requires_grad()`` as
        the crate. A bool-like :class:`~axonml_autograd.attribute_values.Flag`."""
        return TRUE if self._requires_grad else FALSE

    @requires_grad.setter
    def requires_grad(self, flag):
        self.requires_grad_(flag)

    @property
    def is_leaf(self) -> bool:
        """torch's attribute; ``is_leaf()`` as the crate."""
        return TRUE if self._grad_fn is None else FALSE

    @property
    def grad_fn(self) -> Optional[GradientFunction]:
        """The node that made this Variable, None for a leaf (torch's attribute; calling a node returns it)."""
        return self._grad_fn

    def to_vec(self) -> list:
        return self._data.to_vec()

    def numpy(self):
        return self._data.numpy()

    def item(self) -> float:
        return self._data.item()

    def __repr__(self):
        extra = f", grad_fn=<{self._grad_fn.name()}>" if self._grad_fn else (
            ", requires_grad=True" if self._requires_grad else "")
        return f"Variable({self._data!r}{extra})"

    # -- gradients ----------------------------------------------------------------------------------
    @property
    def grad(self) -> Optional[Tensor]:
        """The accumulated gradient of a leaf (None before the first backward, and for non-leaves).

        torch's attribute: ``p.grad is None``, ``p.grad = None``, ``p.grad = tensor``; and the crate's
        method, since calling a Tensor returns it: ``p.grad().to_vec()``. Always a Tensor; after
        ``backward(create_graph=True)`` it is the data of ``grad_variable()``, the gradient as part of
        a graph (differentiate that one).
        """
        return self._grad

    @grad.setter
    def grad(self, value):
        if isinstance(value, Variable):
            value = value._data
        self.set_grad(value)

    def grad_variable(self) -> Optional["Variable"]:
        """The accumulated gradient as a Variable (PyTorch's ``x.grad``).

        After ``backward(create_graph=True)`` it is connected to the graph that computed it, so it can
        be differentiated (a gradient penalty, a Hessian-vector product); otherwise a constant wrapping
        ``grad()``. None when there is no gradient.

        >>> from axonml_autograd import Tensor, Variable
        >>> x = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
        >>> (x * x * x).sum().backward(create_graph=True)
        >>> x.grad().to_vec()                        # 3x^2
        [3.0, 12.0]
        >>> g = x.grad_variable()
        >>> x.zero_grad()
        >>> g.sum().backward()                       # d/dx of sum(3x^2) = 6x
        >>> x.grad().to_vec()
        [6.0, 12.0]
        """
        gv = getattr(self, "_grad_var", None)
        if gv is not None and gv._data is self._grad:
            return gv
        return None if self._grad is None else Variable(self._grad)

    def set_grad(self, grad: Optional[Tensor]):
        if grad is not None:
            self._check_grad(grad, "set_grad")
        if T.launch.recording_threads:
            _note_leaf(self, True)
        self._grad = grad
        self._grad_var = None

    def accumulate_grad(self, grad: Tensor, owned: bool = False):
        """Add ``grad`` to this Variable's gradient on the device.

        ``owned=True`` (the backward engine's promise that nothing else holds ``grad``'s buffer) lets
        a first gradient be kept as it is instead of copied.
        """
        self._check_grad(grad, "accumulate_grad")
        if T.launch.recording_threads:
            _note_leaf(self, False)
        if self._grad is None:
            if grad.dtype != self._data.dtype:
                self._grad = grad.astype(self._data.dtype)
            else:
                # Without the promise, a copy: the tensor may be shared with other consumers.
                self._grad = grad if owned else grad.clone()
        elif getattr(self, "_grad_var", None) is not None:
            # The gradient belongs to a graph (create_graph=True): adding in place would change a
            # tensor that graph may have saved, so the sum is a new tensor (and a constant).
            self._grad = P.binary("add", self._grad, grad)
            self._grad_var = None
        else:
            elementwise("a + b", [self._grad, grad], out=self._grad.view(), op="accumulate_grad")

    def _accumulate_grad_variable(self, grad: "Variable"):
        """backward(create_graph=True)'s accumulation: the new gradient is a Variable op of the old one
        and ``grad``, so the sum stays differentiable; ``grad()`` is its data."""
        self._check_grad(grad._data, "accumulate_grad")
        if T.launch.recording_threads:
            _note_leaf(self, False)
        if grad._data.dtype != self._data.dtype:
            # A cast would cut the graph, and the next order would be silently wrong.
            raise RuntimeError(f"backward(create_graph=True): the gradient of a {self._data.dtype} leaf came out "
                               f"{grad._data.dtype}; make the computation keep the leaf's dtype")
        prev = self.grad_variable()
        # A copy for the first one too: the engine's tensors may be shared with other leaves.
        total = grad * 1.0 if prev is None else prev + grad
        self._grad_var = total
        self._grad = total._data

    def _check_grad(self, grad, what):
        if not isinstance(grad, Tensor):
            raise TypeError(f"{what}: expected a Tensor, got {type(grad).__name__}")
        if grad._shape != self._data._shape:
            raise ValueError(f"{what}: gradient shape {grad.shape()} differs from the variable's shape {self.shape()}")
        if grad.dtype != self._data.dtype and what == "set_grad":
            raise TypeError(f"set_grad: the gradient is {grad.dtype}, the variable is {self._data.dtype}; "
                            "convert it with astype()")
        if grad.device is not self._data.device:
            raise ValueError(f"{what}: the gradient is on device {grad.device.selector} {grad.device.name}, not "
                             f"on the variable's device {self._data.device.selector}; move it with .to()")

    def set_data(self, tensor) -> "Variable":
        """Overwrite this Variable's values with ``tensor``'s, in place (the same device buffer).

        Everything that holds this Variable's data keeps seeing it, and the write bumps the data's
        version, so a graph that saved the old values refuses to backward instead of using the new ones.
        """
        src = tensor._data if isinstance(tensor, Variable) else tensor
        if not isinstance(src, Tensor):
            raise TypeError(f"set_data: tensor must be a Tensor or Variable, got {type(tensor).__name__}")
        dst = self._data
        if src._shape != dst._shape:
            raise ValueError(f"set_data: tensor has shape {src.shape()}, the variable has shape {dst.shape()}")
        if src.dtype != dst.dtype:
            raise TypeError(f"set_data: tensor has dtype {src.dtype}, the variable has dtype {dst.dtype}; "
                            "convert it with astype()")
        if src.device is not dst.device:
            raise ValueError(f"set_data: tensor is on device {src.device.selector} {src.device.name}, the "
                             f"variable on {dst.device.selector} {dst.device.name}; move it with .to()")
        if dst.numel():
            elementwise("a", [src], out=dst.view(), op="set_data")
        else:
            dst._version += 1
        return self

    # -- hooks ---------------------------------------------------------------------------------------
    def register_hook(self, fn) -> "RemovableHandle":
        """Run ``fn(grad)`` when this Variable's gradient is computed; a Tensor it returns replaces the
        gradient. Returns a handle whose ``remove()`` takes the hook off."""
        if not callable(fn):
            raise TypeError(f"register_hook: expected a callable, got {fn!r}")
        if not self._requires_grad:
            raise RuntimeError("register_hook: this Variable does not require grad, so no gradient reaches it")
        if self._grad_fn is not None:
            if self._grad_fn.hooks is None:
                self._grad_fn.hooks = []
            hooks = self._grad_fn.hooks
        else:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        hooks.append(fn)
        return RemovableHandle(hooks, fn)

    def register_post_accumulate_grad_hook(self, fn) -> "RemovableHandle":
        """For a leaf: run ``fn(variable)`` after backward has added to its ``.grad()`` (where a data-parallel
        wrapper starts reducing a bucket while the rest of backward goes on)."""
        if not callable(fn):
            raise TypeError(f"register_post_accumulate_grad_hook: expected a callable, got {fn!r}")
        if self._grad_fn is not None or not self._requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: only a leaf that requires grad has one")
        if self._post_hooks is None:
            self._post_hooks = []
        self._post_hooks.append(fn)
        return RemovableHandle(self._post_hooks, fn)

    def retain_grad(self):
        """Keep this non-leaf's gradient in ``.grad()`` after backward (summed over backward calls)."""
        if self._grad_fn is None:
            return   # a leaf keeps its gradient anyway
        ref = weakref.ref(self)

        def keep(g):
            v = ref()
            if v is not None:
                g = g._data if isinstance(g, Variable) else g   # with create_graph, a Variable
                v._grad = g.clone() if v._grad is None else P.binary("add", v._grad, g)

        self.register_hook(keep)

    def zero_grad(self):
        """Forget the accumulated gradient (the next backward starts from zero)."""
        if T.launch.recording_threads:
            _note_leaf(self, True)
        self._grad = None
        self._grad_var = None

    def detach(self) -> "Variable":
        """The same data, cut from the graph (shares the device buffer)."""
        return Variable(self._data, False)

    def requires_grad_(self, flag: bool = True) -> "Variable":
        if self._grad_fn is not None:
            raise RuntimeError("requires_grad_: only a leaf Variable's flag can be changed; use detach()")
        if flag and self._data.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only floating-point tensors can require grad, got {self._data.dtype}")
        self._requires_grad = bool(flag)
        T.launch.module_state_epoch += 1   # a capture's guards read it
        return self

    def _node(self) -> GradientFunction:
        """The graph node that receives this Variable's gradient."""
        if self._grad_fn is not None:
            return self._grad_fn
        node = self._accumulator() if self._accumulator is not None else None
        if node is None:
            node = AccumulateGrad(self)
            self._accumulator = weakref.ref(node)
        return node

    def backward(self, grad_output=None, retain_graph=None, create_graph: bool = False, *, gradient=None):
        """Compute gradients of this output for every leaf that requires grad (see ``backward.py``).

        ``retain_graph`` defaults to ``create_graph``; with ``create_graph=True`` the gradients are
        built from Variable ops, and a leaf's ``grad_variable()`` can be differentiated again.
        ``gradient=`` is torch's name for ``grad_output``.
        """
        from .backward import backward
        if gradient is not None:
            if grad_output is not None:
                raise TypeError("backward: give grad_output or gradient, not both")
            grad_output = gradient
        backward(self, grad_output, retain_graph, create_graph)


variable_ops.Variable = Variable


def _rebuild_variable(data, requires_grad) -> Variable:
    return Variable(data, requires_grad)
