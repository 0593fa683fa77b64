"""Two small building blocks for the examples and tests: :class:`Linear` and :class:`MLP`.

``Linear`` follows the crate's example, ``y = x @ W + b`` with ``W`` of shape ``[in, out]``, and is
initialised like ``torch.nn.Linear`` (weight and bias uniform in ``±1/sqrt(in)``), the fans computed
for the ``[in, out]`` layout.

>>> from axonml_autograd import Tensor, Variable
>>> net = MLP([4, 8, 3], seed=0)
>>> [name for name, _ in net.named_parameters()]
['layers.0.weight', 'layers.0.bias', 'layers.1.weight', 'layers.1.bias']
>>> net(Variable(Tensor.zeros([2, 4]))).shape()
[2, 3]
"""

from __future__ import annotations

import math

from .. import init
from ..tensor import Tensor
from ..variable import Variable

__all__ = ["Module", "Linear", "MLP"]


class Module:
    """Parameters by name, gathered from attributes that are Variables or Modules (in definition order)."""

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, Variable) and value.requires_grad():
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(f"{prefix}{name}.")
            elif isinstance(value, (list, tuple)):
                for k, item in enumerate(value):
                    if isinstance(item, Module):
                        yield from item.named_parameters(f"{prefix}{name}.{k}.")

    def parameters(self) -> list:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def __call__(self, x):
        return self.forward(x)


class Linear(Module):
    """``y = x @ weight + bias``, weight ``[in_features, out_features]``, bias ``[out_features]``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, seed=None,
                 dtype="float32", device=None):
        if seed is None:
            seed = init.next_seed()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Variable(Tensor.empty([in_features, out_features], dtype, device), requires_grad=True)
        # torch.nn.Linear's choice: kaiming_uniform_(a=sqrt(5)), i.e. a bound of 1/sqrt(fan_in).
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), layout="in_out", seed=init.derive_seed(seed, 0))
        self.bias = None
        if bias:
            self.bias = Variable(Tensor.empty([out_features], dtype, device), requires_grad=True)
            bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound, seed=init.derive_seed(seed, 1))

    def forward(self, x):
        y = x.matmul(self.weight)
        return y.add_var(self.bias) if self.bias is not None else y

    def __repr__(self):
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None})"


_ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "silu", "leaky_relu")


class MLP(Module):
    """Linear layers of the given ``sizes`` with ``activation`` between them (none after the last)."""

    def __init__(self, sizes, activation="relu", seed=None, dtype="float32", device=None):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP: expected at least an input and an output size, got {sizes}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP: activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if seed is None:
            seed = init.next_seed()
        self.activation = activation
        self.layers = [Linear(a, b, seed=init.derive_seed(seed, k), dtype=dtype, device=device)
                       for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]

    def forward(self, x):
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k + 1 < len(self.layers):
                x = getattr(x, self.activation)()
        return x

    def __repr__(self):
        return "MLP(" + ", ".join(map(repr, self.layers)) + f", activation={self.activation!r})"

from .conv import AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, MaxPool2d  # noqa: E402  (needs Module above)
__all__ += ["Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
