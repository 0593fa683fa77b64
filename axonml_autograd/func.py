"""Function transforms in the style of ``torch.autograd.functional``: ``vjp`` and ``jacobian``.

They differentiate once (gradients of gradients, and so ``jvp``/``hvp``/``hessian``, need
``create_graph``, which is not there yet: those raise ``NotImplementedError``).

>>> from axonml_autograd import Tensor, Variable
>>> from axonml_autograd.func import jacobian
>>> x = Variable(Tensor.from_vec([1.0, 2.0], [2], dtype="float64"))
>>> jacobian(lambda v: v * v, x).tolist()
[[2.0, 0.0], [0.0, 4.0]]
"""

from __future__ import annotations

import numpy as np

from .backward import grad
from .tensor import Tensor
from .variable import Variable

__all__ = ["vjp", "jacobian", "jvp", "hvp", "vhp", "hessian"]


def _inputs(inputs):
    single = isinstance(inputs, (Variable, Tensor))
    xs = [inputs] if single else list(inputs)
    return single, [Variable(x.data() if isinstance(x, Variable) else x, requires_grad=True) for x in xs]


def vjp(func, inputs, v=None):
    """``(func(inputs), v^T J)``: the output, and the vector-Jacobian product per input (``v`` may be
    omitted for a one-element output)."""
    single, xs = _inputs(inputs)
    out = func(*xs)
    gs = grad(out, xs, grad_outputs=v, allow_unused=True)
    gs = tuple(Tensor.zeros(x._data._shape, x.dtype, x.device) if g is None else g for g, x in zip(gs, xs))
    return out.detach(), (gs[0] if single else gs)


def jacobian(func, inputs):
    """d func(inputs) / d inputs as numpy arrays of shape ``output shape + input shape`` (one backward
    per output element; for inspection and tests, as torch's)."""
    single, xs = _inputs(inputs)
    out = func(*xs)
    n = out.numel()
    rows = [np.zeros((n,) + tuple(x.shape())) for x in xs]
    for j in range(n):
        onehot = np.zeros(n)
        onehot[j] = 1.0
        v = Tensor.from_numpy(onehot.reshape(out.shape()), dtype=out.dtype, device=out.device)
        for k, g in enumerate(grad(out, xs, grad_outputs=v, retain_graph=j + 1 < n, allow_unused=True)):
            if g is not None:
                rows[k][j] = g.numpy()
    jac = [r.reshape(tuple(out.shape()) + tuple(x.shape())) for r, x in zip(rows, xs)]
    return jac[0] if single else tuple(jac)


def _needs_create_graph(name):
    def transform(*args, **kwargs):
        raise NotImplementedError(f"{name}: needs gradients of gradients (create_graph=True), not supported yet")
    transform.__name__ = name
    return transform


jvp = _needs_create_graph("jvp")
hvp = _needs_create_graph("hvp")
vhp = _needs_create_graph("vhp")
hessian = _needs_create_graph("hessian")
