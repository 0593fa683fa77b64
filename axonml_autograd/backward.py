"""The backward pass, and finite-difference gradient checking.

``backward(output)`` runs the graph's nodes rank by rank (see ``graph.py``): each node gets the sum of
its consumers' contributions, summed on the device, and enqueues its backward kernels. Nothing here
waits for the device or reads from it; the kernels run in the device queue's order.

>>> from axonml_autograd import Tensor, Variable
>>> from axonml_autograd.backward import numerical_gradient, gradcheck
>>> x = Variable(Tensor.from_vec([2.0, 3.0], [2]), requires_grad=True)
>>> numerical = numerical_gradient(lambda v: v.pow(2.0).sum(), x, 1e-5)
>>> x.pow(2.0).sum().backward()
>>> gradcheck(x.grad(), numerical, 1e-3, 1e-3)
True
"""

from __future__ import annotations

import threading

import numpy as np

from . import amp, anomaly
from . import tensor as T
from . import pointwise as P
from .grad_fn import AccumulateGrad
from .graph import consumer_counts
from .no_grad import enable_grad, no_grad
from .tensor import Tensor


def backward(output, grad_output=None, retain_graph=None, create_graph=False):
    """Accumulate d(output)/d(leaf) into every leaf that requires grad.

    ``grad_output`` (a Tensor or Variable of the output's shape) is required unless the output has one
    element. Unless ``retain_graph`` (which defaults to ``create_graph``), the graph's saved tensors are
    released afterwards. With ``create_graph=True`` the gradients are computed with Variable ops, so
    they form a graph of their own: a leaf's ``grad_variable()`` can then be differentiated again
    (``grad()`` still gives its data as a Tensor).
    """
    if retain_graph is None:
        retain_graph = create_graph
    if create_graph:
        grad = _root_grad_variable(output, grad_output, "backward")
    else:
        grad = _root_grad(output, grad_output, "backward")
    data = output._data

    # Anomaly mode is the one case where backward reads the device: each gradient, as it is made.
    check = anomaly.is_anomaly_enabled()
    if check:
        anomaly.check_root(grad._data if create_graph else grad)
    root = output._node()
    stack = _callback_stack()
    stack.append([])
    try:
        run(root, grad, retain_graph, check, caller_owns_root=grad_output is not None, create_graph=create_graph)
        T.launch.flush(data.device)   # the step's kernels go to the device now, back to back
    finally:
        callbacks = stack.pop()
    for fn in callbacks:
        fn()


# -- "backward finished" callbacks ------------------------------------------------------------------------
# A hook that starts work during backward (a data-parallel wrapper reducing gradient buckets) needs
# a place to finish it before backward() returns, so that the caller sees the finished gradients.
# Per thread, and a stack because a backward may run inside another (a hook calling backward()).
_tls = threading.local()


def _callback_stack() -> list:
    stack = getattr(_tls, "callbacks", None)
    if stack is None:
        stack = _tls.callbacks = []
    return stack


def queue_callback(fn):
    """Run ``fn()`` once when the ``backward()`` now running in this thread has finished.

    PyTorch's ``Variable._execution_engine.queue_callback``: call it from a hook during backward.
    The callbacks run in the order they were queued, after every gradient has been accumulated (and
    not at all if backward raised). Raises RuntimeError outside backward.

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.backward import queue_callback
    >>> x = Variable(Tensor.from_vec([1.0], [1]), requires_grad=True)
    >>> seen = []
    >>> _ = x.register_post_accumulate_grad_hook(lambda v: queue_callback(lambda: seen.append(v.grad().to_vec())))
    >>> (x * 3.0).sum().backward()
    >>> seen
    [[3.0]]
    """
    if not callable(fn):
        raise TypeError(f"queue_callback: expected a callable, got {fn!r}")
    stack = _callback_stack()
    if not stack:
        raise RuntimeError("queue_callback: no backward() is running in this thread; call it from a hook")
    stack[-1].append(fn)


def _root_grad(output, grad_output, op) -> Tensor:
    """The gradient backward starts from: ones for a one-element output, else ``grad_output``, checked."""
    from .variable import Variable

    if not isinstance(output, Variable):
        raise TypeError(f"{op}: expected a Variable, got {type(output).__name__}")
    if not output._requires_grad:
        raise RuntimeError(f"{op}: the output does not require grad and has no grad_fn; make an input "
                           "Variable(..., requires_grad=True) and compute outside no_grad")
    data = output._data
    arg = "grad_outputs" if op == "grad" else "grad_output"   # each function's own argument name
    if grad_output is None:
        if data.numel() != 1:
            raise RuntimeError(f"{op}: the output has shape {data.shape()}; a gradient can be created "
                               f"implicitly only for one-element outputs, so pass {arg}")
        return Tensor.ones(data._shape, data.dtype, data.device)
    grad = grad_output._data if isinstance(grad_output, Variable) else grad_output
    if not isinstance(grad, Tensor):
        raise TypeError(f"{op}: {arg} must be a Tensor or Variable, got {type(grad).__name__}")
    if grad._shape != data._shape:
        raise ValueError(f"{op}: {arg} has shape {grad.shape()} but the output has shape {data.shape()}")
    if grad.device is not data.device:
        raise ValueError(f"{op}: {arg} is on another device than the output")
    return grad if grad.dtype == data.dtype else grad.astype(data.dtype)


def _root_grad_variable(output, grad_output, op):
    """``_root_grad`` for create_graph: a Variable, kept connected when ``grad_output`` is one."""
    from .variable import Variable

    g = _root_grad(output, grad_output, op)
    if isinstance(grad_output, Variable) and grad_output._data is g:
        return grad_output
    return Variable(g)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """d(outputs)/d(inputs), one per input, like ``torch.autograd.grad``.

    No ``.grad()`` changes. ``outputs`` and ``inputs`` are a Variable or a sequence of them; an input the
    outputs do not depend on gives None with ``allow_unused=True`` and raises otherwise. The graph is
    released unless ``retain_graph`` (which defaults to ``create_graph``).

    The gradients are Tensors, or with ``create_graph=True`` Variables that are part of a graph
    (every op's backward written with Variable ops), so they can be differentiated again, to any
    order; ``grad_outputs`` given as Variables that require grad are part of that graph too.

    >>> from axonml_autograd import Tensor, Variable, grad
    >>> x = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
    >>> grad((x * x).sum(), x)[0].to_vec(), x.grad
    ([2.0, 4.0], None)
    >>> (g,) = grad((x * x * x).sum(), x, create_graph=True)     # 3x^2, as a Variable
    >>> grad(g.sum(), x)[0].to_vec()                             # 6x
    [6.0, 12.0]
    """
    from .variable import Variable

    if retain_graph is None:
        retain_graph = create_graph
    outs = [outputs] if isinstance(outputs, Variable) else list(outputs)
    ins = [inputs] if isinstance(inputs, Variable) else list(inputs)
    gos = [None] * len(outs) if grad_outputs is None else \
        [grad_outputs] if not isinstance(grad_outputs, (list, tuple)) else list(grad_outputs)
    if len(gos) != len(outs):
        raise ValueError(f"grad: {len(gos)} grad_outputs for {len(outs)} outputs")
    for k, v in enumerate(ins):
        if not isinstance(v, Variable) or not v._requires_grad:
            raise RuntimeError(f"grad: input {k} is not a Variable that requires grad")
    nodes = [v._node() for v in ins]   # a leaf's accumulator, or the op that made a non-leaf
    collect = {node: [] for node in nodes}
    for k, (out, go) in enumerate(zip(outs, gos)):
        g = _root_grad_variable(out, go, "grad") if create_graph else _root_grad(out, go, "grad")
        keep = bool(retain_graph) or k + 1 < len(outs)
        run(out._node(), g, keep, anomaly.is_anomaly_enabled(), caller_owns_root=go is not None,
            accumulate=False, collect=collect, create_graph=create_graph)
        T.launch.flush(out._data.device)
    result = []
    for k, (v, node) in enumerate(zip(ins, nodes)):
        parts = collect[node]
        if not parts:
            if not allow_unused:
                raise RuntimeError(f"grad: input {k} (shape {v.shape()}) was not used to compute the outputs; "
                                   "pass allow_unused=True to get None for it")
            result.append(None)
            continue
        if create_graph:
            total = parts[0]
            for p in parts[1:]:
                total = total + p
        else:
            total = parts[0] if len(parts) == 1 else parts[0].clone()
            for p in parts[1:]:
                total = P.binary("add", total, p)
        result.append(total)
    return tuple(result)


def _run_hooks(hooks, g, what):
    """Each hook on ``g`` (a Tensor, or with create_graph a Variable); what one returns replaces ``g``."""
    graph = g.__class__ is not Tensor
    shape = g._data._shape if graph else g._shape
    for hook in list(hooks):
        replaced = hook(g)
        if replaced is not None:
            r = replaced._data if hasattr(replaced, "_data") else replaced
            if not isinstance(r, Tensor) or r._shape != shape:
                raise RuntimeError(f"{what}: a gradient hook returned {type(replaced).__name__} "
                                   f"{getattr(r, 'shape', lambda: '')()}; expected a tensor of shape {list(shape)}")
            if graph:   # keep a returned Variable's graph; a Tensor is a constant
                g = replaced if hasattr(replaced, "_data") else g.__class__(r)
            else:
                g = r
    return g


def run(root, grad, retain_graph=False, check=False, caller_owns_root=False, accumulate=True, collect=None,
        create_graph=False):
    """The engine: each node of ``root``'s graph once, in rank order (see graph.py), in one pass.

    A node runs when all its consumers have run: ``waiting`` counts the consumers not yet done, and
    ``ready`` grows rank by rank as the counts reach zero (the reading order of the list is the rank
    order). A leaf keeps its first gradient without a copy when no other leaf received that buffer
    and it is not the caller's ``grad_output`` (owned buffers are tracked by storage).

    Hooks run on a node's gradient before its rule (a leaf's before and after accumulation).
    ``collect`` (node -> [gradient]) receives the gradients of the given nodes; with
    ``accumulate=False`` no leaf's ``.grad`` changes (``grad()``).

    With ``create_graph`` the gradients are Variables (``grad`` is one): each node runs its
    differentiable rule under grad mode, so every gradient made here is recorded in a new graph.
    """
    if amp.regions and amp.current() is not None:   # backward inside an autocast region: gradients keep the dtypes forward chose
        with amp.suspended():
            return run(root, grad, retain_graph, check, caller_owns_root, accumulate, collect, create_graph)
    if create_graph:
        with enable_grad():
            return _run(root, grad, retain_graph, check, caller_owns_root, accumulate, collect, True)
    return _run(root, grad, retain_graph, check, caller_owns_root, accumulate, collect, False)


def _run(root, grad, retain_graph, check, caller_owns_root, accumulate, collect, create_graph):
    waiting = consumer_counts(root)
    pending = {root: grad}
    given = set() if not caller_owns_root or create_graph else {id(grad._storage)}
    ready = [root]
    i = 0
    while i < len(ready):
        node = ready[i]
        i += 1
        g = pending.pop(node, None)
        nxt_nodes = node._next
        if g is not None:
            if node.hooks:
                g = _run_hooks(node.hooks, g, node._name)
            if collect is not None and node in collect:
                collect[node].append(g)
            if node.__class__ is AccumulateGrad:
                var = node.variable
                if var._hooks:
                    g = _run_hooks(var._hooks, g, "AccumulateGrad")
                if accumulate:
                    if create_graph:
                        var._accumulate_grad_variable(g)
                    else:
                        sid = id(g._storage)
                        var.accumulate_grad(g, owned=sid not in given)
                        given.add(sid)
                    for hook in list(var._post_hooks or ()):
                        hook(var)
            else:
                if node._released:
                    node.saved_tensors   # raises the retain_graph error
                grads = node._rule(node, g) if not create_graph else node.differentiable_rule()(node, g)
                if grads.__class__ is not tuple:
                    grads = (grads,)
                if node.input_dtypes is not None:
                    grads = _input_dtypes(grads, node.input_dtypes, create_graph)
                for k, (nxt, contribution) in enumerate(zip(nxt_nodes, grads)):
                    if nxt is None or contribution is None:
                        continue
                    if check:
                        anomaly.check_gradient(node, k, contribution if not create_graph else contribution._data)
                    earlier = pending.get(nxt)
                    if earlier is None:
                        pending[nxt] = contribution
                    elif create_graph:
                        pending[nxt] = earlier + contribution
                    else:
                        pending[nxt] = P.binary("add", earlier, contribution)
        for nxt in nxt_nodes:
            if nxt is not None:
                left = waiting[nxt] - 1
                waiting[nxt] = left
                if not left:
                    ready.append(nxt)
        if not retain_graph:
            node.release()


def _input_dtypes(grads, dtypes, create_graph):
    """Each gradient in its input's dtype (an op of mixed dtypes: a float16 product added to a float32
    residual sends the product a float16 gradient), as torch's engine casts them."""
    out = []
    for g, dt in zip(grads, dtypes):
        if g is not None and dt is not None and g.dtype != dt and dt.kind == "f":
            g = g.to(dt) if create_graph else g.astype(dt)
        out.append(g)
    return tuple(out)


# ------------------------------------------------------------------------------------------------------
# Finite differences (debugging tools: these read the device on purpose)
# ------------------------------------------------------------------------------------------------------

def _check_dtype(device):
    return np.float64 if device.fp64 else np.float32


def _evaluate(func, arrays, device, dtype):
    """``func`` on constant Variables made from host arrays; the output summed, as a float."""
    from .variable import Variable

    with no_grad():
        out = func(*[Variable(Tensor.from_numpy(a, dtype=dtype, device=device)) for a in arrays])
    return out.data().numpy().astype(np.float64)


def numerical_gradient(func, x, eps=1e-5) -> Tensor:
    """d(sum of func(x))/dx by central differences, evaluated in float64 where the device has it.

    ``func`` takes a Variable and returns a Variable; the result has ``x``'s shape and dtype.
    """
    data = x.data()
    device = data.device
    work = _check_dtype(device)
    base = data.numpy().astype(work)
    flat = base.reshape(-1)
    grad = np.zeros(flat.size, dtype=np.float64)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        plus = _evaluate(func, [base], device, work).sum()
        flat[i] = keep - eps
        minus = _evaluate(func, [base], device, work).sum()
        flat[i] = keep
        grad[i] = (plus - minus) / (2 * eps)
    return Tensor.from_numpy(grad.reshape(base.shape), dtype=data.dtype, device=device)


def gradcheck(analytical, numerical, rtol=1e-3, atol=1e-3) -> bool:
    """True when ``|analytical - numerical| <= atol + rtol * |numerical|`` everywhere (shapes must match)."""
    a = analytical.numpy().astype(np.float64) if isinstance(analytical, Tensor) else np.asarray(analytical)
    n = numerical.numpy().astype(np.float64) if isinstance(numerical, Tensor) else np.asarray(numerical)
    if a.shape != n.shape:
        return False
    return bool(np.all(np.abs(a - n) <= atol + rtol * np.abs(n)))


class GradcheckError(AssertionError):
    """An analytical gradient disagrees with finite differences."""


def check_gradients(func, inputs, eps=1e-6, atol=1e-5, rtol=1e-3) -> bool:
    """Compare the whole Jacobian of ``func(*inputs)`` from backward against central differences.

    Raises :class:`GradcheckError` naming the input and the worst element; returns True otherwise.
    Run it in float64: with float32 the finite differences themselves are too coarse.
    """
    inputs = list(inputs)
    device = inputs[0].data().device
    work = _check_dtype(device)
    return _compare_jacobians(func, inputs, eps, atol, rtol,
                              lambda arrays: _evaluate(func, arrays, device, work), [f"input {k}" for k in
                                                                                      range(len(inputs))])


def _compare_jacobians(func, inputs, eps, atol, rtol, evaluate, labels) -> bool:
    """Backward's Jacobian of ``func(*inputs)`` against central differences of ``evaluate(arrays)``."""
    device = inputs[0].data().device
    work = _check_dtype(device)
    arrays = [v.data().numpy().astype(work) for v in inputs]
    out = func(*inputs)
    out_shape = out.shape()
    n_out = int(np.prod(out_shape))
    wanted = [k for k, v in enumerate(inputs) if v.requires_grad()]

    analytical = {k: np.zeros((n_out, arrays[k].size)) for k in wanted}
    for j in range(n_out if out.requires_grad() else 0):   # an output that needs no grad: all zeros
        for k in wanted:
            inputs[k].zero_grad()
        onehot = np.zeros(n_out, dtype=out.data().dtype)
        onehot[j] = 1
        out.backward(Tensor.from_numpy(onehot.reshape(out_shape), device=device), retain_graph=True)
        for k in wanted:
            g = inputs[k]._grad
            if g is not None:
                if g.shape() != list(arrays[k].shape):
                    raise GradcheckError(f"{labels[k]}: gradient has shape {g.shape()}, expected "
                                         f"{list(arrays[k].shape)}")
                analytical[k][j] = g.numpy().reshape(-1)
    for k in wanted:
        inputs[k].zero_grad()

    for k in wanted:
        numerical = np.zeros((n_out, arrays[k].size))
        flat = arrays[k].reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + eps
            plus = evaluate(arrays).reshape(-1)
            flat[i] = keep - eps
            minus = evaluate(arrays).reshape(-1)
            flat[i] = keep
            numerical[:, i] = (plus - minus) / (2 * eps)
        err = np.abs(analytical[k] - numerical) - (atol + rtol * np.abs(numerical))
        bad = ~(err <= 0)
        if bad.any():
            j, i = np.unravel_index(np.argmax(np.where(np.isnan(err), np.inf, err)), err.shape)
            raise GradcheckError(
                f"{labels[k]} (shape {list(arrays[k].shape)}): d output[{j}] / d input[{i}] is "
                f"{float(analytical[k][j, i])!r} from backward but {float(numerical[j, i])!r} by finite differences "
                f"({int(bad.sum())} of {bad.size} Jacobian entries differ beyond atol={atol}, rtol={rtol})")
    return True


def gradgradcheck(func, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0) -> bool:
    """Check second derivatives: the gradient that ``create_graph=True`` builds, differentiated by
    backward, against central differences of that gradient (as ``torch.autograd.gradgradcheck``).

    The function checked is ``(inputs, v) -> grad(func(*inputs), inputs, v, create_graph=True)``, with
    ``v`` (``grad_outputs``, or fixed random numbers of the output's shape) an input too, so the
    derivatives of the first-order gradient in both the inputs and the incoming gradient are compared.
    Raises :class:`GradcheckError` naming the input (``grad_output`` for ``v``) and the worst element;
    returns True otherwise. Run it in float64.

    >>> from axonml_autograd import Tensor, Variable, gradgradcheck
    >>> x = Variable(Tensor.from_vec([0.5, -1.0, 2.0], [3], dtype="float64"), requires_grad=True)
    >>> gradgradcheck(lambda v: v.tanh() * v, [x])
    True
    """
    from .variable import Variable

    inputs = list(inputs)
    device = inputs[0].data().device
    work = _check_dtype(device)
    flags = [v.requires_grad() for v in inputs]
    wanted = [k for k, f in enumerate(flags) if f]
    if not wanted:
        raise ValueError("gradgradcheck: no input requires grad")
    out = func(*inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        v_array = rng.uniform(0.5, 1.5, out.shape()) * rng.choice([-1.0, 1.0], out.shape())
    else:
        v_array = (grad_outputs.data() if isinstance(grad_outputs, Variable) else grad_outputs).numpy()
    v = Variable(Tensor.from_numpy(np.asarray(v_array, dtype=work).reshape(out.shape()), dtype=out.dtype,
                                   device=device), requires_grad=True)

    def first(*args):
        xs, go = list(args[:-1]), args[-1]
        o = func(*xs)
        gs = grad(o, [xs[k] for k in wanted], grad_outputs=go, create_graph=True, allow_unused=True)
        flat = [(g if g is not None else Variable(Tensor.zeros(xs[k].data()._shape, xs[k].dtype, device)))
                .reshape([-1]) for g, k in zip(gs, wanted)]
        return Variable.cat(flat, 0)

    def evaluate(arrays):
        vs = [Variable(Tensor.from_numpy(a, dtype=work, device=device), requires_grad=f)
              for a, f in zip(arrays, flags + [True])]
        return first(*vs).data().numpy().astype(np.float64)

    # The create_graph gradients' values first: the derivatives below are those of whatever the
    # differentiable rules compute, so their values must be backward's (already checked by gradcheck).
    built = first(*inputs, v).data().numpy()
    plain = grad(func(*inputs), [inputs[k] for k in wanted], grad_outputs=v.data(), allow_unused=True)
    start = 0
    for k, g in zip(wanted, plain):
        n = inputs[k].numel()
        want = np.zeros(n) if g is None else g.numpy().reshape(-1)
        got = built[start:start + n]
        start += n
        bad = ~(np.abs(got - want) <= atol + rtol * np.abs(want))
        if bad.any():
            i = int(np.argmax(bad))
            raise GradcheckError(f"input {k}: the create_graph=True gradient [{i}] is {float(got[i])!r} but "
                                 f"backward gives {float(want[i])!r} ({int(bad.sum())} of {n} elements differ)")
    labels = [f"input {k}" for k in range(len(inputs))] + ["grad_output"]
    return _compare_jacobians(first, inputs + [v], eps, atol, rtol, evaluate, labels)


__all__ = ["backward", "grad", "queue_callback", "numerical_gradient", "gradcheck", "check_gradients", "gradgradcheck",
           "GradcheckError", "Variable"]


def __getattr__(name):
    if name == "Variable":  # the crate's examples import Variable next to these
        from .variable import Variable
        return Variable
    raise AttributeError(name)
