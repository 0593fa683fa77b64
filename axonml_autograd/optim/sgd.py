"""Stochastic gradient descent (``torch.optim.SGD``)."""

from __future__ import annotations

from .optimizer import Optimizer, _number, _optim_kernel


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay.

    As ``torch.optim.SGD``: ``g += wd * p``; ``b = mu * b + (1 - dampening) * g`` (``b = g`` at the
    first step); ``g = g + mu * b`` with Nesterov, else ``g = b``; ``p -= lr * g``.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    _state_keys = ("momentum_buffer",)

    def _check_group(self, g):
        g["lr"] = _number(g["lr"], "SGD lr")
        g["momentum"] = _number(g["momentum"], "SGD momentum")
        g["dampening"] = _number(g["dampening"], "SGD dampening")
        g["weight_decay"] = _number(g["weight_decay"], "SGD weight_decay")
        g["nesterov"] = bool(g["nesterov"])
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")
        return g

    def _needed_state(self, g):
        return ("momentum_buffer",) if g["momentum"] != 0 else ()

    _multi_kernel = "sgd_step"

    def _kernel(self, g, data, multi=0):
        return _optim_kernel(data, "sgd_step", momentum=g["momentum"] != 0, amsgrad=False,
                             skip=self._found_inf is not None, multi=multi)

    def _arguments(self, g, data, state, fresh):
        if g["momentum"] != 0:
            return dict(momentum_buffer=self._state_tensor(state, "momentum_buffer", data),
                        weight_decay=g["weight_decay"], mu=g["momentum"], one_minus_dampening=1.0 - g["dampening"],
                        first_step=int(fresh), nesterov=int(g["nesterov"]))
        return dict(weight_decay=g["weight_decay"])
