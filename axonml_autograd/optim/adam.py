"""Adam and AdamW (``torch.optim.Adam``/``AdamW``)."""

from __future__ import annotations

import math

from .optimizer import Optimizer, _number, _optim_kernel


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``); ``weight_decay`` is L2 added to the gradient.

    ``m = beta1 m + (1 - beta1) g``, ``v = beta2 v + (1 - beta2) g^2``,
    ``p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``, ``t`` counted per parameter.
    ``amsgrad=True`` uses the running maximum of ``v`` instead.
    """

    _state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _rate_keys = ("lr", "weight_decay")
    _reads_steps = True
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    def _check_group(self, g):
        kind = type(self).__name__
        g["lr"] = _number(g["lr"], f"{kind} lr")
        betas = g["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{kind}: betas must be a pair of numbers, got {betas!r}")
        g["betas"] = (_number(betas[0], f"{kind} beta1", 0.0, 1.0, True),
                      _number(betas[1], f"{kind} beta2", 0.0, 1.0, True))
        g["eps"] = _number(g["eps"], f"{kind} eps")
        g["weight_decay"] = _number(g["weight_decay"], f"{kind} weight_decay")
        g["amsgrad"] = bool(g["amsgrad"])
        return g

    def _needed_state(self, g):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if g["amsgrad"] else ())

    _multi_kernel = "adam_step"

    def _kernel(self, g, data, multi=0):
        return _optim_kernel(data, "adam_step", momentum=False, amsgrad=g["amsgrad"],
                             skip=self._found_inf is not None, multi=multi)

    def _arguments(self, g, data, state, fresh):
        beta1, beta2 = g["betas"]
        return dict({k: self._state_tensor(state, k, data) for k in self._needed_state(g)},
                    beta1=beta1, beta2=beta2, eps=g["eps"], l2=0.0 if self._decoupled else g["weight_decay"],
                    log_beta1=_log(beta1), log_beta2=_log(beta2))

    def _rate_values(self, g):
        # AdamW's decay depends on lr, so it travels with it (computed here in double, as lr is).
        return [float(g["lr"]), 1.0 - g["lr"] * g["weight_decay"] if self._decoupled else 1.0]


def _log(beta: float) -> float:
    # The kernel takes 1 - beta^t as -expm1(t log beta). beta = 0 (allowed) has no log; -100 gives
    # beta^t < 4e-44 for every t >= 1, which 1 - beta^t cannot tell from 0 in float or double.
    return max(math.log(beta), -100.0) if beta > 0 else -100.0


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``): ``p *= 1 - lr * wd`` before the update."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
