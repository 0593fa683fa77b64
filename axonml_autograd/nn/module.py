"""``Module`` and the containers ``Sequential``, ``ModuleList`` and ``ModuleDict``.

A module's parameters are the leaf Variables it holds, found in its attributes and in the lists,
tuples and dicts among them (sub-modules likewise), in the order the attributes were set; a Variable
reached twice is listed once. Buffers (``register_buffer``: running statistics and the like) are
Tensors that travel in ``state_dict()`` but are not trained.

>>> from axonml_autograd import Tensor, Variable
>>> from axonml_autograd.nn import Linear, ReLU, Sequential
>>> net = Sequential(Linear(4, 8, seed=0), ReLU(), Linear(8, 3, seed=1))
>>> [name for name, _ in net.named_parameters()]
['0.weight', '0.bias', '2.weight', '2.bias']
>>> net(Variable(Tensor.zeros([2, 4]))).shape()
[2, 3]
>>> print(net)
Sequential(
  (0): Linear(in_features=4, out_features=8, bias=True)
  (1): ReLU()
  (2): Linear(in_features=8, out_features=3, bias=True)
)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from ..elementwise_kernels import elementwise
from .. import launch
from ..grad_fn import record
from ..tensor import Tensor
from ..variable import RemovableHandle, Variable

__all__ = ["Module", "Sequential", "ModuleList", "ModuleDict", "Parameter", "StateDictError",
           "IncompatibleKeys"]

# Attributes a Module keeps for itself; never searched for parameters or sub-modules.
_INTERNAL = frozenset(("_buffers", "_non_persistent", "_forward_hooks", "_forward_pre_hooks",
                       "_backward_hooks", "training"))


def Parameter(data, requires_grad: bool = True) -> Variable:
    """A leaf Variable to train (torch's ``nn.Parameter``): ``Parameter(Tensor.zeros([3]))``."""
    if isinstance(data, Variable):
        data = data.data()
    return Variable(data, requires_grad=requires_grad)


def _shape_of(value) -> tuple:
    return tuple(value._shape) if isinstance(value, Tensor) else tuple(value.shape)


class StateDictError(RuntimeError):
    """``load_state_dict`` found names or shapes that do not fit; nothing was changed.

    ``missing``, ``unexpected`` (lists of names) and ``mismatched`` (name -> (given shape, expected
    shape)) hold the details.
    """

    def __init__(self, owner, missing, unexpected, mismatched):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), dict(mismatched)
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(self.missing))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(self.unexpected))
        for name, (got, want) in self.mismatched.items():
            parts.append(f"size mismatch for {name}: the state_dict has shape {list(got)}, the model "
                         f"{list(want)}")
        super().__init__(f"Error(s) in loading state_dict for {owner}: " + "; ".join(parts)
                         + ". Nothing was loaded.")


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns: the names it did not find and the names it did not use."""
    missing_keys: list
    unexpected_keys: list


def _walk(prefix, value, seen_ids):
    """(name, Variable | Module) for everything reachable through lists, tuples and dicts in ``value``."""
    if isinstance(value, (Variable, Module)):
        yield prefix, value
    elif isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            yield from _walk(f"{prefix}.{k}", item, seen_ids)
    elif isinstance(value, dict):
        for k, item in value.items():
            if isinstance(k, str):
                yield from _walk(f"{prefix}.{k}", item, seen_ids)


class Module:
    """Base class of layers and models: subclass it, set parameters and sub-modules as attributes in
    ``__init__``, write ``forward``; call the module to run it (hooks included)."""

    training = True

    def __init__(self):
        # Subclasses that forget super().__init__() still work: every method below creates these lazily.
        self._ensure()

    def _ensure(self):
        d = self.__dict__
        if "_buffers" not in d:
            d["_buffers"] = OrderedDict()
            d["_non_persistent"] = set()
            d["_forward_hooks"] = OrderedDict()
            d["_forward_pre_hooks"] = OrderedDict()
            d["_backward_hooks"] = OrderedDict()
            d.setdefault("training", type(self).training)
        return d

    # -- attributes: buffers live in their own table -------------------------------------------------
    def __getattr__(self, name):
        # Only called when normal lookup fails: a registered buffer, or a true AttributeError.
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            return buffers[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name, value):
        launch.module_state_epoch += 1
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"{type(self).__name__}: buffer {name!r} must be a Tensor or None, "
                                f"got {type(value).__name__}")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __delattr__(self, name):
        launch.module_state_epoch += 1
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            del buffers[name]
            self._non_persistent.discard(name)
        else:
            object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor, persistent: bool = True):
        """Keep ``tensor`` (a Tensor or None) as ``self.<name>``: saved in ``state_dict()`` (unless not
        ``persistent``) and moved by ``to()``, never trained."""
        self._ensure()
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"register_buffer: name must be a non-empty string without '.', got {name!r}")
        if isinstance(tensor, Variable):
            tensor = tensor.data()
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, got {type(tensor).__name__}")
        if name in self.__dict__:
            raise KeyError(f"register_buffer: attribute {name!r} already exists")
        self._buffers[name] = tensor
        launch.module_state_epoch += 1
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    # -- the tree --------------------------------------------------------------------------------------
    def _members(self):
        """(name, Variable | Module) held by this module itself, in attribute order."""
        seen = set()
        for name, value in vars(self).items():
            if name in _INTERNAL:
                continue
            for path, item in _walk(name, value, seen):
                if id(item) not in seen:
                    seen.add(id(item))
                    yield path, item

    def named_children(self):
        """(name, module) for the direct sub-modules (a list ``layers`` gives ``layers.0``, ...)."""
        for name, item in self._members():
            if isinstance(item, Module):
                yield name, item

    def children(self):
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix: str = "", _seen=None):
        """(name, module) for this module ("" at the top) and every module below it, each once."""
        seen = set() if _seen is None else _seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name, seen)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """(name, Variable) for every leaf Variable held here and (with ``recurse``) below, each once.

        Frozen ones (``requires_grad_(False)``) are listed too, as in torch: they are part of the model
        and of its ``state_dict()``.
        """
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, mod in modules:
            for name, item in mod._members():
                if isinstance(item, Variable) and item.is_leaf() and id(item) not in seen:
                    seen.add(id(item))
                    yield (f"{mod_name}.{name}" if mod_name else name), item

    def parameters(self, recurse: bool = True) -> list:
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, mod in modules:
            for name, buf in mod._ensure()["_buffers"].items():
                if buf is not None and id(buf) not in seen:
                    seen.add(id(buf))
                    yield (f"{mod_name}.{name}" if mod_name else name), buf

    def buffers(self, recurse: bool = True) -> list:
        return [b for _, b in self.named_buffers(recurse=recurse)]

    def apply(self, fn):
        """Call ``fn(module)`` on every sub-module and then on this one (torch's order); returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode (dropout drops, batch norm uses and updates batch statistics); returns self."""
        if not isinstance(mode, bool):
            raise TypeError(f"train: mode must be a bool, got {mode!r}")
        for m in self.modules():
            m._ensure()
            m.training = mode
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True):
        """Forget every parameter's gradient."""
        for p in self.parameters():
            p.zero_grad()

    # -- state ------------------------------------------------------------------------------------------
    def state_dict(self, prefix: str = "") -> "OrderedDict[str, Tensor]":
        """Parameters and persistent buffers by name, as Tensors sharing the module's storage.

        ``save(model.state_dict(), path)`` writes them; ``model.load_state_dict(load(path))`` reads back.
        """
        out = OrderedDict()
        for mod_name, mod in self.named_modules(prefix):
            for name, item in mod._members():
                if isinstance(item, Variable) and item.is_leaf():
                    key = f"{mod_name}.{name}" if mod_name else name
                    out.setdefault(key, item.data())
            for name, buf in mod._ensure()["_buffers"].items():
                if buf is not None and name not in mod._non_persistent:
                    out[f"{mod_name}.{name}" if mod_name else name] = buf
        return out

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy ``state_dict``'s values (Tensors, Variables, numpy arrays, or anything ``numpy.asarray``
        reads, such as a torch ``state_dict``'s tensors) into this module in place.

        Every entry is checked before anything is written: a missing or unexpected name (with
        ``strict``) or a shape that differs raises :class:`StateDictError` listing all of them, and
        the module is left as it was. Returns the missing and unexpected names.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a mapping of names to tensors, got "
                            f"{type(state_dict).__name__}")
        own = self.state_dict()
        given = {}
        for name, value in state_dict.items():
            if isinstance(value, Variable):
                value = value.data()
            if not isinstance(value, Tensor):
                try:
                    value = np.asarray(value)
                except Exception:   # noqa: BLE001 - anything numpy refuses is reported below
                    value = None
                if value is None or value.dtype == object or value.dtype.kind not in "biuf":
                    raise TypeError(f"load_state_dict: {name!r} is not a tensor or array of numbers")
            if name in own and own[name]._shape == () and _shape_of(value) == (1,):
                # A [1] counter saved before num_batches_tracked became torch's 0-d buffer.
                value = value.reshape([]) if isinstance(value, Tensor) else value.reshape(())
            given[name] = value
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        mismatched = {k: (_shape_of(given[k]), own[k]._shape)
                      for k in own if k in given and _shape_of(given[k]) != own[k]._shape}
        if mismatched or (strict and (missing or unexpected)):
            raise StateDictError(type(self).__name__, missing, unexpected, mismatched)
        # Make every source first (uploads, casts, device moves): a failure here changes nothing.
        sources = {}
        for k, dst in own.items():
            if k not in given or not dst.numel():
                continue
            src = given[k]
            if isinstance(src, Tensor):
                if src.device is not dst.device:
                    src = src.to(dst.device)
                src = src.astype(dst.dtype)
            else:
                if dst.dtype.kind == "i" and src.dtype.kind == "f":
                    raise TypeError(f"load_state_dict: {k!r} holds {src.dtype} values for an {dst.dtype} buffer")
                src = Tensor.from_numpy(src, dtype=dst.dtype, device=dst.device)
            sources[k] = src
        for k, src in sources.items():
            dst = own[k]
            elementwise("a", [src], out=dst.view(), op="load_state_dict")   # in place: references stay valid
        return IncompatibleKeys(missing, unexpected)

    def to(self, *args, device=None, dtype=None):
        """Move (or cast) every parameter and buffer, as torch's ``to``: ``to(device)``, ``to(dtype)``
        (``ag.float64``, ``"float64"``), ``to(device, dtype)`` and the keywords. Only floating-point
        tensors change dtype. The Variables stay the same objects, so an optimiser made before still
        holds them. Returns self."""
        from ..tensor import to_arguments
        tensors = [p._data for p in self.parameters()] + [b for b in self.buffers()]
        if not args and device is None and dtype is None:
            raise TypeError("to: expected a device, a dtype or both")
        like = tensors[0] if tensors else Tensor.zeros([0])
        dev, dtype = to_arguments(like, args, device, dtype, op=f"{type(self).__name__}.to")

        def convert(t: Tensor) -> Tensor:
            if dev is not None and t.device is not dev:
                t = t.to(dev)
            if dtype is not None and t.dtype.kind == "f":
                t = t.astype(dtype)
            return t

        for p in self.parameters():
            new = convert(p.data())
            if new is not p.data():
                p._data = new
                p._grad = None if p._grad is None else convert(p._grad)
        for mod in self.modules():
            for name, buf in list(mod._ensure()["_buffers"].items()):
                if buf is not None:
                    mod._buffers[name] = convert(buf)
        return self

    def cpu(self):
        """torch's ``cpu()``: every parameter and buffer on the CPU's OpenCL device."""
        from ..device import kind_device
        return self.to(kind_device("cpu", f"{type(self).__name__}.cpu()"))

    def cuda(self, device=None):
        """torch's ``cuda()``: every parameter and buffer on the first GPU OpenCL device."""
        from ..device import kind_device
        return self.to(kind_device("gpu", f"{type(self).__name__}.cuda()") if device is None else device)

    def float(self):
        return self.to(dtype="float32")

    def double(self):
        return self.to(dtype="float64")

    def half(self):
        """torch's ``half()``: every floating-point parameter and buffer to float16 (integer buffers, such
        as batch norm's ``num_batches_tracked``, stay). Its kernels then compute in float32 and round once.

        >>> from axonml_autograd import nn
        >>> nn.Linear(3, 2).half().weight.data().dtype
        dtype('float16')
        """
        return self.to(dtype="float16")

    def bfloat16(self):
        """torch's ``bfloat16()``: every floating-point parameter and buffer to bfloat16 (see :meth:`half`).

        >>> from axonml_autograd import nn
        >>> nn.Linear(3, 2).bfloat16().weight.data().dtype
        bfloat16
        """
        return self.to(dtype="bfloat16")

    # -- calling, and hooks ---------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        if launch.recording_threads:
            cap = launch.active_capture()
            if cap is not None:   # a replay is guarded by this module's mode and attributes
                cap.note_module(self)
        d = self._ensure()
        if not (d["_forward_pre_hooks"] or d["_forward_hooks"] or d["_backward_hooks"]):
            return self.forward(*args, **kwargs)
        for hook in list(d["_forward_pre_hooks"].values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        state = None
        if d["_backward_hooks"]:
            state = _BackwardHookState(self, args)
            args = state.wrap_inputs(args)
        out = self.forward(*args, **kwargs)
        for hook in list(d["_forward_hooks"].values()):
            result = hook(self, args, out)
            if result is not None:
                out = result
        if state is not None:
            out = state.wrap_outputs(out)
        return out

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """``hook(module, args)`` before ``forward``; a returned value (a tuple, or one value) replaces args."""
        return self._add_hook("_forward_pre_hooks", hook)

    def register_forward_hook(self, hook) -> RemovableHandle:
        """``hook(module, args, output)`` after ``forward``; a returned value replaces the output."""
        return self._add_hook("_forward_hooks", hook)

    def register_full_backward_hook(self, hook) -> RemovableHandle:
        """``hook(module, grad_input, grad_output)`` once backward has the gradients of the module's
        Variable inputs (tuples of Tensors, None where an input needs none); with one input that needs
        a gradient, a returned tuple replaces ``grad_input``."""
        return self._add_hook("_backward_hooks", hook)

    def _add_hook(self, table, hook):
        if not callable(hook):
            raise TypeError(f"{table.strip('_')[:-1]}: expected a callable, got {hook!r}")
        hooks = self._ensure()[table]
        key = object()
        hooks[key] = hook
        launch.module_state_epoch += 1
        return _DictHandle(hooks, key)

    # -- printing --------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = []
        for name, child in self.named_children():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


class _DictHandle(RemovableHandle):
    """A hook handle for a module's hook table (a dict keyed by the handle's own key)."""

    __slots__ = ()

    def remove(self):
        self._hooks.pop(self._fn, None)
        launch.module_state_epoch += 1


class _BackwardHookState:
    """Identity ops around one call of a module with full backward hooks: the outputs' node records
    ``grad_output``, the inputs' node calls the hooks with ``grad_input``."""

    def __init__(self, module, args):
        self.module = module
        self.n_inputs = len(args)
        self.grad_output = None
        self.grad_input = [None] * len(args)
        self.waiting = 0

    def wrap_inputs(self, args):
        wrapped = list(args)
        needs = [k for k, a in enumerate(args) if isinstance(a, Variable) and a.requires_grad()]
        self.waiting = len(needs)
        for k in needs:
            rule = lambda ctx, g, k=k: self._input_grad(k, g)   # noqa: E731 (g: a Variable under create_graph)
            wrapped[k] = record("BackwardHookFunctionBackward", args[k].data(), [args[k]], rule, vrule=rule)
        return tuple(wrapped)

    def wrap_outputs(self, out):
        single = isinstance(out, Variable)
        outs = [out] if single else list(out) if isinstance(out, (list, tuple)) else None
        if outs is None:
            return out
        self.grad_output = [None] * len(outs)

        def rule(k, g):
            self.grad_output[k] = g
            if self.waiting == 0:   # no input needs a gradient: torch calls the hooks with None
                self._call(tuple(self.grad_input))
            return g

        wrapped = [record("BackwardHookFunctionBackward", o.data(), [o], lambda ctx, g, k=k: rule(k, g),
                          vrule=lambda ctx, g, k=k: rule(k, g))
                   if isinstance(o, Variable) and o.requires_grad() else o for k, o in enumerate(outs)]
        return wrapped[0] if single else type(out)(wrapped)

    def _input_grad(self, k, g):
        self.grad_input[k] = g
        self.waiting -= 1
        if self.waiting > 0:
            return g
        result = self._call(tuple(self.grad_input))
        if result is None:
            return g
        result = tuple(result) if isinstance(result, (list, tuple)) else (result,)
        if len(result) != self.n_inputs:
            raise RuntimeError(f"backward hook of {type(self.module).__name__}: returned {len(result)} "
                               f"gradients for {self.n_inputs} inputs")
        if sum(1 for r in self.grad_input if r is not None) > 1:
            raise RuntimeError(f"backward hook of {type(self.module).__name__}: replacing grad_input is "
                               "supported for modules with one input that needs a gradient")
        new = result[k]
        if isinstance(g, Variable) and isinstance(new, Tensor):   # create_graph: a constant replacement
            new = Variable(new)
        if new is None or not isinstance(new, type(g)) or new.shape() != g.shape():
            raise RuntimeError(f"backward hook of {type(self.module).__name__}: the replacement gradient "
                               f"must be a {type(g).__name__} of shape {g.shape()}")
        return new

    def _call(self, grad_input):
        grad_output = tuple(self.grad_output or ())
        result = None
        for hook in list(self.module._backward_hooks.values()):
            r = hook(self.module, grad_input, grad_output)
            if r is not None:
                result = r
                grad_input = tuple(r) if isinstance(r, (list, tuple)) else (r,)
        return result


# ------------------------------------------------------------------------------------------------------
# Containers
# ------------------------------------------------------------------------------------------------------

def _check_module(value, owner):
    if not isinstance(value, Module):
        raise TypeError(f"{owner}: expected a Module, got {type(value).__name__}")
    return value


class ModuleList(Module):
    """A list of modules whose parameters the owner sees (``layers.0.weight``, ...).

    >>> from axonml_autograd.nn import Linear
    >>> layers = ModuleList([Linear(2, 2, seed=k) for k in range(3)])
    >>> len(layers), len(layers.parameters())
    (3, 6)
    """

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def _list(self):
        return [v for k, v in vars(self).items() if k not in _INTERNAL and k.isdigit()]

    def _reset(self, items):
        for k in [k for k in vars(self) if k.isdigit()]:
            object.__delattr__(self, k)
        for k, m in enumerate(items):
            object.__setattr__(self, str(k), m)

    def append(self, module):
        object.__setattr__(self, str(len(self)), _check_module(module, type(self).__name__))
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        items = self._list()
        items.insert(index, _check_module(module, type(self).__name__))
        self._reset(items)

    def __len__(self):
        return len(self._list())

    def __iter__(self):
        return iter(self._list())

    def __getitem__(self, index):
        items = self._list()
        if isinstance(index, slice):
            return type(self)(items[index])
        return items[index]

    def __setitem__(self, index, module):
        items = self._list()
        items[index] = _check_module(module, type(self).__name__)
        self._reset(items)

    def __delitem__(self, index):
        items = self._list()
        del items[index]
        self._reset(items)


class Sequential(ModuleList):
    """Modules applied one after another: ``Sequential(a, b)(x) == b(a(x))``; also from an OrderedDict
    of names to modules."""

    def __init__(self, *modules):
        Module.__init__(self)
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                if not isinstance(name, str) or not name:
                    raise TypeError(f"Sequential: names must be non-empty strings, got {name!r}")
                object.__setattr__(self, name, _check_module(m, "Sequential"))
        else:
            for m in modules:
                self.append(m)

    def _list(self):
        return [v for k, v in vars(self).items() if k not in _INTERNAL and isinstance(v, Module)]

    def __getitem__(self, index):
        items = self._list()
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    def forward(self, x):
        for m in self._list():
            x = m(x)
        return x


class _NamedEntries:
    """The mapping side of ModuleDict and ParameterDict: entries are attributes of type ``_entry``."""

    def _dict(self):
        return OrderedDict((k, v) for k, v in vars(self).items() if k not in _INTERNAL and isinstance(v, self._entry))

    def __getitem__(self, key):
        return self._dict()[key]

    def __delitem__(self, key):
        if key not in self._dict():
            raise KeyError(key)
        object.__delattr__(self, key)

    def __contains__(self, key):
        return key in self._dict()

    def __len__(self):
        return len(self._dict())

    def __iter__(self):
        return iter(self._dict())

    def keys(self):
        return self._dict().keys()

    def values(self):
        return self._dict().values()

    def items(self):
        return self._dict().items()


class ModuleDict(_NamedEntries, Module):
    """Modules by name (insertion order); ``d["enc"]``, ``d.items()``, names in ``state_dict`` as ``enc.weight``."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    _entry = Module

    def __setitem__(self, key, module):
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"ModuleDict: keys must be non-empty strings without '.', got {key!r}")
        object.__setattr__(self, key, _check_module(module, "ModuleDict"))

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for k, m in items:
            self[k] = m


class ParameterList(Module):
    """Parameters in a list (torch's ``ParameterList``): registered, named ``0``, ``1``, ... in
    ``state_dict`` (``plist.0`` inside a model); Tensors given are wrapped as Parameters.

    >>> from axonml_autograd import Tensor
    >>> ps = ParameterList([Parameter(Tensor.zeros([2])), Tensor.ones([3])])
    >>> [name for name, _ in ps.named_parameters()], len(ps)
    (['0', '1'], 2)
    """

    def __init__(self, values=None):
        super().__init__()
        for v in values or ():
            self.append(v)

    def _list(self):
        return [v for k, v in vars(self).items() if k not in _INTERNAL and k.isdigit()]

    @staticmethod
    def _param(value):
        if isinstance(value, Variable):
            return value
        if isinstance(value, Tensor):
            return Parameter(value)
        raise TypeError(f"ParameterList: expected a Parameter (Variable) or Tensor, got {type(value).__name__}")

    def append(self, value):
        object.__setattr__(self, str(len(self)), self._param(value))
        return self

    def extend(self, values):
        for v in values:
            self.append(v)
        return self

    def __len__(self):
        return len(self._list())

    def __iter__(self):
        return iter(self._list())

    def __getitem__(self, index):
        items = self._list()
        if isinstance(index, slice):
            return ParameterList(items[index])
        return items[index]

    def __setitem__(self, index, value):
        n = len(self)
        i = index + n if isinstance(index, int) and index < 0 else index
        if not isinstance(i, int) or not 0 <= i < n:
            raise IndexError(f"ParameterList: index {index} is out of range for {n} parameters")
        object.__setattr__(self, str(i), self._param(value))

    def extra_repr(self):
        return "\n".join(f"({k}): Parameter of shape {p.shape()}" for k, p in enumerate(self._list()))


class ParameterDict(_NamedEntries, Module):
    """Parameters by name (torch's ``ParameterDict``): registered, named by their keys in ``state_dict``.

    >>> from axonml_autograd import Tensor
    >>> pd = ParameterDict({"scale": Tensor.ones([1]), "shift": Tensor.zeros([1])})
    >>> sorted(pd.state_dict()), "scale" in pd
    (['scale', 'shift'], True)
    """

    def __init__(self, parameters=None):
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    _entry = Variable

    def __setitem__(self, key, value):
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"ParameterDict: keys must be non-empty strings without '.', got {key!r}")
        if key in type(self).__dict__ or hasattr(ParameterDict, key):
            raise KeyError(f"ParameterDict: key {key!r} would hide a method of ParameterDict")
        object.__setattr__(self, key, ParameterList._param(value))

    def get(self, key, default=None):
        return self._dict().get(key, default)

    def update(self, parameters):
        items = parameters.items() if hasattr(parameters, "items") else parameters
        for k, v in items:
            self[k] = v
