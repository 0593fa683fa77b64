"""The ``GradientFunction`` contract: one graph node per recorded op.

A node knows its op's name, the nodes that produced its inputs (``next_functions()``), the tensors its
backward needs, and a backward rule ``rule(ctx, grad) -> (grad_input, ...)``. The rules live beside
their forwards in ``functions/``; this module only keeps them honest: saved tensors are released after
backward, a second backward through a released node raises, and a saved tensor that was modified in
place after it was saved is refused rather than used.

A node may also carry a *differentiable* rule ``vrule(ctx, g)``: the same gradient written with
Variable ops over a Variable ``g``, which ``backward(create_graph=True)`` runs instead so the gradient
is itself part of a graph. An op whose differentiable rule enqueues the kernels a hand-written one
would records only that rule (``rule=None``): first order runs it too, recording nothing (see
``_first_order``), so such a gradient is written once. The node keeps no input Variables for it:
``ctx.input(k, t)`` rebuilds input ``k`` from a saved tensor ``t`` and the node that produced that
input (``next_functions()[k]``), and ``ctx.output(t)`` turns the op's saved result into a Variable
whose gradient flows into this node.
"""

from __future__ import annotations

from typing import Callable, Sequence

from . import anomaly, launch
from .no_grad import is_inference_mode
from .no_grad import _state as _grad_state
from .tensor import Tensor

_Variable = None   # variable.py imports this module; bound on first use


class GradientFunction:
    """A recorded op: ``name()``, ``next_functions()`` and ``apply(grad)``."""

    __slots__ = ("_name", "_rule", "_vrule", "_saved", "_versions", "_next", "needs_input_grad", "attrs", "hooks",
                 "_released", "creation", "input_dtypes", "__weakref__")

    def __init__(self, name: str, rule: Callable, next_functions: Sequence, saved=(), attrs=None, vrule=None):
        self._name = name
        self._rule = rule if rule is not None or vrule is None else _first_order
        self._vrule = vrule    # the rule over Variables, for create_graph=True (None: first order only)
        # List comprehensions and direct storage reads: this runs once per recorded op.
        self._next = nxt = next_functions if next_functions.__class__ is tuple else tuple(next_functions)
        self.needs_input_grad = tuple([n is not None for n in nxt])
        self._saved = saved = saved if saved.__class__ is tuple else tuple(saved)
        self._versions = tuple([t._storage.version if t is not None else 0 for t in saved]) if saved else ()
        self.attrs = attrs or {}
        self.hooks = None      # Variable.register_hook on the op's result: run on its gradient
        self._released = False
        self.creation = None   # (file, line, code) of the user's call, recorded in anomaly mode
        # Set only for an op whose differentiable inputs are not all of its result's dtype (float16 +
        # float32 under autocast): the engine casts each input's gradient to that input's dtype, as torch.
        self.input_dtypes = None

    def __call__(self) -> "GradientFunction":
        # ``y.grad_fn`` (torch's attribute) is this node, and so is ``y.grad_fn()`` (the crate's call).
        return self

    def name(self) -> str:
        return self._name

    def next_functions(self) -> tuple:
        """The nodes of this op's inputs, in order; None for an input that needs no gradient."""
        return self._next

    @property
    def saved_tensors(self) -> tuple:
        if self._released:
            raise RuntimeError(
                f"{self._name}: trying to backward through the graph a second time (or to use saved "
                "tensors after they were freed). Pass retain_graph=True to the first backward() to keep them.")
        for t, v in zip(self._saved, self._versions):
            if t is not None and t._storage.version != v:
                raise RuntimeError(
                    f"{self._name}: a tensor it saved for backward was modified in place after the forward "
                    f"pass (version {t._version}, saved at version {v}); its gradient would be wrong")
        return self._saved

    def __getattr__(self, item):
        # Non-tensor facts of the forward (shapes, dims, scalars) read as attributes: ctx.dim.
        try:
            return self.attrs[item]
        except KeyError:
            raise AttributeError(item) from None

    def apply(self, grad: Tensor) -> tuple:
        """The gradients of the inputs, one per entry of ``next_functions()`` (None where not needed)."""
        if self._released:
            self.saved_tensors  # raises the retain_graph error
        grads = self._rule(self, grad)
        if not isinstance(grads, tuple):
            grads = (grads,)
        return tuple(g if need else None for g, need in zip(grads, self.needs_input_grad))

    def release(self):
        """Drop the saved tensors (after backward, unless retain_graph=True)."""
        self._saved = ()
        self._released = True

    # -- for differentiable rules (create_graph=True) ----------------------------------------------------
    def input(self, k: int, tensor: Tensor):
        """Input ``k`` of the op as a Variable holding ``tensor`` (a saved copy of that input's data),
        connected to the graph: its gradient flows to the node that produced input ``k``; a constant
        when that input needed no gradient."""
        global _Variable
        if _Variable is None:
            from .variable import Variable as _Variable
        nxt = self._next[k]
        if nxt is None:
            return _Variable(tensor)
        if nxt.__class__ is AccumulateGrad and nxt.variable._data is tensor:
            return nxt.variable   # the leaf itself
        return _Variable._from_op(tensor, nxt)

    def output(self, tensor: Tensor):
        """The op's result (saved as ``tensor``) as a Variable whose gradient flows into this node."""
        global _Variable
        if _Variable is None:
            from .variable import Variable as _Variable
        return _Variable._from_op(tensor, self)

    def differentiable_rule(self):
        """The rule over Variables, or a NotImplementedError naming the op when it has none."""
        if self._vrule is None:
            raise NotImplementedError(
                f"{self._name}: this op has no differentiable backward rule, so create_graph=True cannot "
                "build a graph through its gradient (differentiate it once, or compose it from other ops)")
        return self._vrule

    def __repr__(self):
        return f"<{self._name}>"


def _first_order(ctx, grad: Tensor):
    """A node's differentiable rule run for a first-order backward: on ``grad`` as a constant Variable,
    with grad mode off, so its ops record no node and keep nothing; the results' data are the gradients.

    The rule's ops would otherwise treat the wrapped gradient as a user's leaf: anomaly mode would read
    it back and a capture would note it for its replays. ``_grad_state.rule`` tells ``record()`` not to.
    """
    global _Variable
    if _Variable is None:
        from .variable import Variable as _Variable
    state = _grad_state
    grad_mode = getattr(state, "grad", True)
    in_rule = getattr(state, "rule", False)
    state.grad = False
    state.rule = True
    try:
        out = ctx._vrule(ctx, _constant(grad, False))
    finally:
        state.grad = grad_mode
        state.rule = in_rule
    if out.__class__ is tuple:
        return tuple([None if v is None else v._data for v in out])
    return None if out is None else out._data


def _constant(t: Tensor, inference: bool):
    """``Variable(t)`` without its argument checks (``t`` is an op's result): once per op in no_grad and
    in a first-order rule."""
    v = _Variable.__new__(_Variable)
    v._data, v._requires_grad, v._grad, v._grad_fn = t, False, None, None
    v._accumulator, v._inference, v._hooks, v._post_hooks = None, inference, None, None
    return v


class AccumulateGrad(GradientFunction):
    """The node of a leaf that requires grad: backward adds the incoming gradient to the leaf's grad."""

    __slots__ = ("variable",)

    def __init__(self, variable):
        super().__init__("AccumulateGrad", None, ())
        self.variable = variable

    def apply(self, grad: Tensor) -> tuple:
        self.variable.accumulate_grad(grad)
        return ()

    def release(self):
        pass  # a leaf's node is reused by every graph the leaf takes part in


def record(name: str, out: Tensor, inputs: Sequence, rule: Callable = None, saved=(), vrule=None, **attrs):
    """Wrap ``out`` in a Variable and, when grad mode records, attach a node for ``rule``.

    ``inputs`` are the op's Variable inputs (None for a constant); ``saved`` the tensors the rule reads
    back through ``ctx.saved_tensors``; keyword arguments become ``ctx.<name>`` in the rule. ``vrule``
    is the same rule over Variables (``vrule(ctx, g_variable)``), for gradients of gradients; without
    ``rule`` it serves first order too.
    """
    global _Variable
    if _Variable is None:
        from .variable import Variable as _Variable

    site = None
    if anomaly._active_threads and anomaly.is_anomaly_enabled() and not getattr(_grad_state, "rule", False):
        site = anomaly.user_frame()
        anomaly.check_inputs(name, inputs, site)
    if launch.recording_threads and not getattr(_grad_state, "rule", False):
        cap = launch.active_capture()
        if cap is not None:   # a replay checks that these leaves are still the ones it recorded
            for v in inputs:
                if v is not None and v._grad_fn is None:
                    cap.note_leaf(v, False)
    # Runs once per op: one plain loop over the inputs, and a direct read of the thread-local mode.
    if getattr(_grad_state, "grad", True):
        nxt = []
        recording = inference = mixed = False
        dtype = out.dtype
        for v in inputs:
            if v is None:
                nxt.append(None)
                continue
            if v._inference:
                inference = True
            if v._requires_grad:
                recording = True
                nxt.append(v._grad_fn or v._node())
                if v._data.dtype is not dtype:
                    mixed = True
            else:
                nxt.append(None)
        if recording:
            if inference:
                raise RuntimeError(f"{name}: an input was created in inference_mode and cannot be "
                                   "used in a graph that records gradients; clone it outside "
                                   "inference_mode or use no_grad instead")
            node = GradientFunction(name, rule, tuple(nxt), saved, attrs, vrule)
            node.creation = site
            if mixed:
                node.input_dtypes = tuple([None if v is None else v._data.dtype for v in inputs])
            return _Variable._from_op(out, node)
    if out.__class__ is Tensor:
        return _constant(out, getattr(_grad_state, "inference", False))
    result = _Variable(out)   # raises the TypeError for what is not a Tensor
    result._inference = is_inference_mode()
    return result
