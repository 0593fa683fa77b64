"""Adagrad (``torch.optim.Adagrad``)."""

from __future__ import annotations

from .optimizer import Optimizer, _number, _optim_kernel
from ..tensor import Tensor


class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``): per-element rates from the sum of squared gradients.

    ``g += wd * p``; ``s += g^2`` (``s`` starts at ``initial_accumulator_value``);
    ``p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)``, ``t`` counted per parameter.

    >>> from axonml_autograd import Tensor, Variable
    >>> w = Variable(Tensor.from_vec([1.0, -1.0], [2]), requires_grad=True)
    >>> opt = Adagrad([w], lr=0.5)
    >>> (w * 2.0).sum().backward()
    >>> opt.step()                      # s = 4, so the step is lr * 2 / 2 = 0.5
    >>> [round(v, 4) for v in w.to_vec()]
    [0.5, -1.5]
    """

    _state_keys = ("sum",)
    _reads_steps = True

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    def _check_group(self, g):
        g["lr"] = _number(g["lr"], "Adagrad lr")
        g["lr_decay"] = _number(g["lr_decay"], "Adagrad lr_decay")
        g["weight_decay"] = _number(g["weight_decay"], "Adagrad weight_decay")
        g["initial_accumulator_value"] = _number(g["initial_accumulator_value"], "Adagrad initial_accumulator_value")
        g["eps"] = _number(g["eps"], "Adagrad eps")
        return g

    def _needed_state(self, g):
        return ("sum",)

    def _kernel(self, g, data):
        return _optim_kernel(data, "adagrad_step", skip=self._found_inf is not None)

    def _arguments(self, g, data, state, fresh):
        # A new sum is not filled: the kernel's first step reads initial_accumulator_value instead.
        s = state.get("sum")
        if s is None:
            s = state["sum"] = Tensor._wrap(data._shape, data.dtype, data.device)
        return dict(sum=s, lr_decay=g["lr_decay"], eps=g["eps"], weight_decay=g["weight_decay"],
                    init=g["initial_accumulator_value"], first_step=int(fresh))
