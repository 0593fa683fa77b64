"""Function transforms in the style of ``torch.autograd.functional``: ``vjp``, ``jvp``, ``vhp``, ``hvp``,
``jacobian`` and ``hessian``.

Each takes a function of Variables that returns one Variable, and the inputs (a Variable or Tensor,
or a tuple of them). ``vjp``/``jvp``/``vhp``/``hvp`` return ``(output, result)`` with the output
detached and the result a Tensor per input (a Variable that is part of the inputs' graph with
``create_graph=True``); ``jacobian`` and ``hessian`` return numpy arrays (one backward per row, for
inspection and tests). ``jvp`` uses the double-vjp trick (the vjp is linear in its vector, so
differentiating it by that vector gives J v), ``hvp`` the double-backward trick, as torch does.
``strict=True`` (torch's check that the output depends on the inputs) is not supported: an input
the output does not use gets zeros.

>>> from axonml_autograd import Tensor, Variable
>>> from axonml_autograd.func import hessian, hvp, jacobian, jvp
>>> x = Variable(Tensor.from_vec([1.0, 2.0], [2], dtype="float64"))
>>> jacobian(lambda v: v * v, x).tolist()
[[2.0, 0.0], [0.0, 4.0]]
>>> jvp(lambda v: v * v, x, Tensor.from_vec([1.0, 1.0], [2], dtype="float64"))[1].to_vec()
[2.0, 4.0]
>>> hessian(lambda v: (v * v * v).sum(), x).tolist()
[[6.0, 0.0], [0.0, 12.0]]
>>> hvp(lambda v: (v * v * v).sum(), x, Tensor.from_vec([1.0, 0.0], [2], dtype="float64"))[1].to_vec()
[6.0, 0.0]
"""

from __future__ import annotations

import numpy as np

from .backward import grad
from .tensor import Tensor
from .variable import Variable

__all__ = ["vjp", "jacobian", "jvp", "hvp", "vhp", "hessian"]


def _inputs(inputs, create_graph=False):
    """Leaves to differentiate by: fresh ones, or with create_graph the inputs themselves where they
    require grad (so that the result stays part of their graph)."""
    single = isinstance(inputs, (Variable, Tensor))
    xs = [inputs] if single else list(inputs)
    for k, x in enumerate(xs):
        if not isinstance(x, (Variable, Tensor)):
            raise TypeError(f"inputs: entry {k} must be a Variable or Tensor, got {type(x).__name__}")
    return single, [x if create_graph and isinstance(x, Variable) and x.requires_grad() else
                    Variable(x.data() if isinstance(x, Variable) else x, requires_grad=True) for x in xs]


def _vectors(v, xs, what, op):
    """``v`` as one Variable per entry of ``xs`` (shapes checked); None only for one-element entries."""
    vs = [v] if not isinstance(v, (list, tuple)) else list(v)
    if v is None:
        if any(x.numel() != 1 for x in xs):
            raise ValueError(f"{op}: v can be omitted only when every {what} has one element")
        return [Variable(Tensor.ones(x.data()._shape, x.dtype, x.device)) for x in xs]
    if len(vs) != len(xs):
        raise ValueError(f"{op}: {len(vs)} vectors in v for {len(xs)} {what}s")
    out = []
    for k, (u, x) in enumerate(zip(vs, xs)):
        u = u if isinstance(u, Variable) else Variable(u) if isinstance(u, Tensor) else None
        if u is None:
            raise TypeError(f"{op}: v must hold Variables or Tensors")
        if u.shape() != x.shape():
            raise ValueError(f"{op}: v[{k}] has shape {u.shape()} but the {what} has shape {x.shape()}")
        out.append(u)
    return out


def _check_strict(strict, op):
    if strict:
        raise NotImplementedError(f"{op}: strict=True is not supported (unused inputs get zeros)")


def _finish(gs, xs, create_graph, single):
    """Zeros for the inputs not reached; Tensors unless create_graph."""
    out = []
    for g, x in zip(gs, xs):
        if g is None:
            g = Variable(Tensor.zeros(x.data()._shape, x.dtype, x.device))
        out.append(g if create_graph else (g.data() if isinstance(g, Variable) else g))
    return out[0] if single else tuple(out)


def _scalar_output(out, op):
    if not isinstance(out, Variable):
        raise TypeError(f"{op}: the function must return a Variable, got {type(out).__name__}")
    if out.numel() != 1:
        raise ValueError(f"{op}: the function must return one element, got shape {out.shape()}")


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T J)``: the output, and the vector-Jacobian product per input (``v`` may be
    omitted for a one-element output)."""
    _check_strict(strict, "vjp")
    single, xs = _inputs(inputs, create_graph)
    out = func(*xs)
    if not out.requires_grad():
        return out.detach(), _finish([None] * len(xs), xs, create_graph, single)
    gs = grad(out, xs, grad_outputs=v, allow_unused=True, create_graph=create_graph)
    return (out if create_graph else out.detach()), _finish(gs, xs, create_graph, single)


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), J v)``: the Jacobian-vector product (forward-mode's answer) by the double-vjp
    trick: ``u -> u^T J`` is linear in ``u``, and its vjp with ``v`` is ``J v``. ``v`` may be omitted
    when every input has one element."""
    _check_strict(strict, "jvp")
    single, xs = _inputs(inputs, create_graph)
    vs = _vectors(v, xs, "input", "jvp")
    out = func(*xs)
    zeros = Variable(Tensor.zeros(out.data()._shape, out.dtype, out.device))
    if not out.requires_grad():
        return out.detach(), (zeros if create_graph else zeros.data())
    u = Variable(Tensor.zeros(out.data()._shape, out.dtype, out.device), requires_grad=True)
    gs = grad(out, xs, grad_outputs=u, create_graph=True, allow_unused=True)
    used = [(g, w) for g, w in zip(gs, vs) if g is not None and g.requires_grad()]
    if not used:
        return out.detach(), (zeros if create_graph else zeros.data())
    (jv,) = grad([g for g, _ in used], [u], grad_outputs=[w for _, w in used], create_graph=create_graph,
                 allow_unused=True)
    jv = zeros if jv is None else jv
    return (out if create_graph else out.detach()), (jv if create_graph else jv.data() if isinstance(jv, Variable)
                                                     else jv)


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), v^T H)`` for a function with one output element: the gradient's vjp with ``v``."""
    _check_strict(strict, "vhp")
    single, xs = _inputs(inputs, create_graph)
    vs = _vectors(v, xs, "input", "vhp")
    out = func(*xs)
    _scalar_output(out, "vhp")
    if not out.requires_grad():
        return out.detach(), _finish([None] * len(xs), xs, create_graph, single)
    gs = grad(out, xs, create_graph=True, allow_unused=True)
    used = [(g, w) for g, w in zip(gs, vs) if g is not None and g.requires_grad()]
    if not used:
        return out.detach(), _finish([None] * len(xs), xs, create_graph, single)
    hs = grad([g for g, _ in used], xs, grad_outputs=[w for _, w in used], create_graph=create_graph,
              allow_unused=True)
    return (out if create_graph else out.detach()), _finish(hs, xs, create_graph, single)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """``(func(inputs), H v)`` for a function with one output element, by the double-backward trick
    (``u -> H^T u`` is linear in ``u``; its vjp with ``v`` is ``H v``): equal to ``vhp`` for a
    function twice continuously differentiable, where the Hessian is symmetric."""
    _check_strict(strict, "hvp")
    single, xs = _inputs(inputs, create_graph)
    vs = _vectors(v, xs, "input", "hvp")
    out = func(*xs)
    _scalar_output(out, "hvp")
    if not out.requires_grad():
        return out.detach(), _finish([None] * len(xs), xs, create_graph, single)
    gs = grad(out, xs, create_graph=True, allow_unused=True)
    pairs = [(g, k) for k, g in enumerate(gs) if g is not None and g.requires_grad()]
    if not pairs:
        return out.detach(), _finish([None] * len(xs), xs, create_graph, single)
    us = [Variable(Tensor.zeros(x.data()._shape, x.dtype, x.device), requires_grad=True) for x in xs]
    # H^T u as a function of the dummy u, then its vjp with v: H v.
    hu = grad([g for g, _ in pairs], xs, grad_outputs=[us[k] for _, k in pairs], create_graph=True,
              allow_unused=True)
    used = [(h, w) for h, w in zip(hu, vs) if h is not None and h.requires_grad()]
    if not used:
        return out.detach(), _finish([None] * len(xs), xs, create_graph, single)
    hv = grad([h for h, _ in used], us, grad_outputs=[w for _, w in used], create_graph=create_graph,
              allow_unused=True)
    return (out if create_graph else out.detach()), _finish(hv, xs, create_graph, single)


def jacobian(func, inputs):
    """d func(inputs) / d inputs as Tensors of shape ``output shape + input shape``, in the inputs'
    dtype and device (one backward per output element; for inspection and tests, as torch's)."""
    single, xs = _inputs(inputs)
    out = func(*xs)
    n = out.numel()
    rows = [np.zeros((n,) + tuple(x.shape())) for x in xs]
    for j in range(n if out.requires_grad() else 0):
        onehot = np.zeros(n)
        onehot[j] = 1.0
        v = Tensor.from_numpy(onehot.reshape(out.shape()), dtype=out.dtype, device=out.device)
        for k, g in enumerate(grad(out, xs, grad_outputs=v, retain_graph=j + 1 < n, allow_unused=True)):
            if g is not None:
                rows[k][j] = g.numpy()
    jac = [Tensor.from_numpy(r.reshape(tuple(out.shape()) + tuple(x.shape())), dtype=x.dtype, device=x.device)
           for r, x in zip(rows, xs)]
    return jac[0] if single else tuple(jac)


def hessian(func, inputs):
    """The second derivatives of a one-element ``func`` as Tensors: for one input a Tensor of shape
    ``input shape + input shape``, for several a tuple of tuples, ``[i][j]`` of shape
    ``shape_i + shape_j`` (the Jacobian of the gradient, one backward per gradient element)."""
    single, xs = _inputs(inputs)
    out = func(*xs)
    _scalar_output(out, "hessian")
    blocks = [[np.zeros(tuple(a.shape()) + tuple(b.shape())) for b in xs] for a in xs]
    gs = grad(out, xs, create_graph=True, allow_unused=True) if out.requires_grad() else [None] * len(xs)
    for i, g in enumerate(gs):
        if g is None or not g.requires_grad():
            continue
        n = g.numel()
        flat = [blocks[i][j].reshape((n,) + tuple(xs[j].shape())) for j in range(len(xs))]
        for r in range(n):
            onehot = np.zeros(n)
            onehot[r] = 1.0
            v = Tensor.from_numpy(onehot.reshape(g.shape()), dtype=g.dtype, device=g.device)
            for j, h in enumerate(grad(g, xs, grad_outputs=v, retain_graph=True, allow_unused=True)):
                if h is not None:
                    flat[j][r] = h.numpy()
        for j in range(len(xs)):
            blocks[i][j] = flat[j].reshape(blocks[i][j].shape)
    blocks = [[Tensor.from_numpy(b, dtype=xs[i].dtype, device=xs[i].device) for b in row] for i, row in enumerate(blocks)]
    return blocks[0][0] if single else tuple(tuple(row) for row in blocks)
