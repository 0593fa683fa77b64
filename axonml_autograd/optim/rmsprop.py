"""RMSprop (``torch.optim.RMSprop``)."""

from __future__ import annotations

from .optimizer import Optimizer, _number, _optim_kernel


class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``): divide the gradient by a running root mean square.

    ``g += wd * p``; ``v = alpha v + (1 - alpha) g^2``; ``centered=True`` also keeps
    ``m = lerp(m, g, 1 - alpha)`` and uses ``v - m^2``; ``avg = sqrt(.) + eps``; with ``momentum``
    ``b = momentum * b + g / avg`` and ``p -= lr * b``, else ``p -= lr * g / avg``. One fused kernel
    per parameter; the state (``square_avg``, ``grad_avg``, ``momentum_buffer``) stays on the device.

    >>> from axonml_autograd import Tensor, Variable
    >>> w = Variable(Tensor.from_vec([1.0, -1.0], [2]), requires_grad=True)
    >>> opt = RMSprop([w], lr=0.01, alpha=0.99)
    >>> (w * 3.0).sum().backward()
    >>> opt.step()                      # v = 0.01 * 9, so the step is lr * 3 / 0.3 = 0.1
    >>> [round(v, 4) for v in w.to_vec()]
    [0.9, -1.1]
    """

    _state_keys = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def _check_group(self, g):
        g["lr"] = _number(g["lr"], "RMSprop lr")
        g["alpha"] = _number(g["alpha"], "RMSprop alpha", 0.0, 1.0)
        g["eps"] = _number(g["eps"], "RMSprop eps")
        g["weight_decay"] = _number(g["weight_decay"], "RMSprop weight_decay")
        g["momentum"] = _number(g["momentum"], "RMSprop momentum")
        g["centered"] = bool(g["centered"])
        return g

    def _needed_state(self, g):
        return ("square_avg",) + (("grad_avg",) if g["centered"] else ()) + \
            (("momentum_buffer",) if g["momentum"] != 0 else ())

    def _kernel(self, g, data):
        return _optim_kernel(data, "rmsprop_step", momentum=g["momentum"] != 0, centered=g["centered"],
                             skip=self._found_inf is not None)

    def _arguments(self, g, data, state, fresh):
        return dict({k: self._state_tensor(state, k, data) for k in self._needed_state(g)}, alpha=g["alpha"],
                    eps=g["eps"], weight_decay=g["weight_decay"], mu=g["momentum"] if g["momentum"] != 0 else None)
