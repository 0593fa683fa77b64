"""Layers that hold parameters and call ``nn.functional``: ``Linear``, ``Embedding``, ``Dropout``,
``Flatten``, ``Identity``, the activation modules, and the ``MLP`` of the examples.

``Linear`` is torch's: ``y = x @ W.T + b`` with ``W`` of shape ``[out, in]``, initialised as
``torch.nn.Linear``. (The crate's own example, ``x.matmul(w).add_var(b)`` with an ``[in, out]`` ``w``,
is plain Variable arithmetic and unchanged.)

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
from ..elementwise_kernels import elementwise
from ..registry import rows
from ..shapes import as_int
from ..tensor import Tensor, View
from ..variable import Variable
from . import functional as F
from .module import Module

__all__ = ["Linear", "Embedding", "EmbeddingBag", "Dropout", "Dropout2d", "PReLU", "Flatten", "Unflatten", "Identity", "MLP", "ReLU", "LeakyReLU",
           "GELU", "Tanh", "Sigmoid", "SiLU", "ELU", "SELU", "Softplus", "Mish", "Hardtanh", "LogSigmoid",
           "Softmax", "LogSoftmax"]


def _positive_int(value, what):
    v = as_int(value, what)
    if v < 0:
        raise ValueError(f"{what} must be non-negative, got {v}")
    return v


class Linear(Module):
    """``y = x @ weight.T + bias`` as torch's: weight ``[out_features, in_features]``, bias
    ``[out_features]``, both uniform in ``±1/sqrt(in_features)`` (torch's ``kaiming_uniform_(a=sqrt(5))``),
    so a torch ``state_dict`` loads as it is and ``nn.init`` reads the fans as torch does.

    >>> layer = Linear(3, 2, seed=0)
    >>> layer.weight.shape(), layer(Variable(Tensor.zeros([5, 3]))).shape()
    ([2, 3], [5, 2])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, seed=None,
                 dtype="float32", device=None):
        super().__init__()
        in_features = _positive_int(in_features, "Linear: in_features")
        out_features = _positive_int(out_features, "Linear: out_features")
        if seed is None:
            seed = init.next_seed()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Variable(Tensor.empty([out_features, in_features], dtype, device), requires_grad=True)
        if in_features and out_features:
            init.kaiming_uniform_(self.weight, a=math.sqrt(5), seed=init.derive_seed(seed, 0))
        self.bias = None
        if bias:
            self.bias = Variable(Tensor.zeros([out_features], dtype, device), requires_grad=True)
            if in_features and out_features:
                bound = 1.0 / math.sqrt(in_features)
                init.uniform_(self.bias, -bound, bound, seed=init.derive_seed(seed, 1))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Rows of a ``[num_embeddings, embedding_dim]`` weight, initialised ``N(0, 1)`` as torch's.

    With ``padding_idx`` that row starts at zero and never receives a gradient.

    >>> emb = Embedding(10, 3, padding_idx=0, seed=0)
    >>> emb([[0, 4]]).shape(), emb.weight.data().numpy()[0].tolist()
    ([1, 2, 3], [0.0, 0.0, 0.0])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, seed=None,
                 dtype="float32", device=None):
        super().__init__()
        self.num_embeddings = _positive_int(num_embeddings, "Embedding: num_embeddings")
        self.embedding_dim = _positive_int(embedding_dim, "Embedding: embedding_dim")
        if padding_idx is not None:
            padding_idx = as_int(padding_idx, "Embedding: padding_idx")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for "
                                 f"{self.num_embeddings} embeddings")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self.weight = Variable(Tensor.empty([self.num_embeddings, self.embedding_dim], dtype, device),
                               requires_grad=True)
        if self.weight.numel():
            init.normal_(self.weight, 0.0, 1.0, seed=seed)
        if padding_idx is not None and self.embedding_dim:
            row = self.weight.data().reshape([self.num_embeddings, self.embedding_dim])
            zero = Tensor.zeros([1, self.embedding_dim], dtype, device)
            elementwise("a", [zero], out=View(row, (1, self.embedding_dim), (self.embedding_dim, 1),
                                                 padding_idx * self.embedding_dim), op="embedding_padding")

    def forward(self, indices):
        return F.embedding(indices, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        extra = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{extra}"


class Dropout(Module):
    """Zero elements with probability ``p`` (a fresh mask from the device generator at every call,
    captured replays included), scaling the rest by ``1/(1-p)``; the identity in ``eval()`` mode."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = F._probability(p, "Dropout")

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout2d(Module):
    """Zero whole channels of ``[N, C, H, W]`` with probability ``p`` (torch's ``Dropout2d``; a 3-D input
    is read as ``[N, C, L]``, as torch does), scaling the rest by ``1/(1-p)``; the identity in ``eval()``."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        self.p = F._probability(p, "Dropout2d")

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class PReLU(Module):
    """torch's ``PReLU(num_parameters=1, init=0.25)``: ``max(0, x) + a * min(0, x)`` with a learned
    slope ``a`` (one, or one per channel of dim 1).

    >>> from axonml_autograd import Tensor, Variable
    >>> PReLU()(Variable(Tensor.from_vec([-2.0, 3.0], [2]))).to_vec()
    [-0.5, 3.0]
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype="float32", device=None):
        super().__init__()
        self.num_parameters = as_int(num_parameters, "PReLU: num_parameters")
        if self.num_parameters < 1:
            raise ValueError(f"PReLU: num_parameters must be positive, got {self.num_parameters}")
        self.weight = Variable(Tensor.full([self.num_parameters], float(init), dtype, device), requires_grad=True)

    def forward(self, x):
        return F.prelu(x, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class EmbeddingBag(Module):
    """torch's ``EmbeddingBag(num_embeddings, embedding_dim, mode="mean", include_last_offset=False,
    padding_idx=None)``: the sum, mean or max of each bag's embedding rows (``F.embedding_bag``);
    weight ``N(0, 1)``. ``forward(input, offsets=None, per_sample_weights=None)``.

    >>> bag = EmbeddingBag(10, 3, mode="sum", seed=0)
    >>> bag([1, 2, 4, 5, 4], offsets=[0, 2]).shape()
    [2, 3]
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, mode="mean", sparse=False, _weight=None, include_last_offset=False,
                 padding_idx=None, seed=None, dtype="float32", device=None):
        super().__init__()
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"EmbeddingBag: mode must be 'sum', 'mean' or 'max', got {mode!r}")
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise NotImplementedError("EmbeddingBag: max_norm, scale_grad_by_freq and sparse are not supported")
        self.num_embeddings = _positive_int(num_embeddings, "EmbeddingBag: num_embeddings")
        self.embedding_dim = _positive_int(embedding_dim, "EmbeddingBag: embedding_dim")
        self.mode, self.include_last_offset = mode, bool(include_last_offset)
        if padding_idx is not None:
            padding_idx = as_int(padding_idx, "EmbeddingBag: padding_idx")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"EmbeddingBag: padding_idx {padding_idx} is out of range for "
                                 f"{self.num_embeddings} embeddings")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        if _weight is not None:
            self.weight = Variable(_weight.data() if isinstance(_weight, Variable) else _weight, requires_grad=True)
        else:
            self.weight = Variable(Tensor.empty([self.num_embeddings, self.embedding_dim], dtype, device),
                                   requires_grad=True)
            if self.weight.numel():
                init.normal_(self.weight, 0.0, 1.0, seed=seed)
            if padding_idx is not None and self.embedding_dim:
                zero = Tensor.zeros([1, self.embedding_dim], dtype, device)
                elementwise("a", [zero], out=View(self.weight.data(), (1, self.embedding_dim), (self.embedding_dim, 1),
                                                     padding_idx * self.embedding_dim), op="embedding_padding")

    def forward(self, input, offsets=None, per_sample_weights=None):
        return F.embedding_bag(input, self.weight, offsets, mode=self.mode, per_sample_weights=per_sample_weights,
                               include_last_offset=self.include_last_offset, padding_idx=self.padding_idx)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}"


class Identity(Module):
    """Returns its input."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """Axes ``start_dim..end_dim`` merged into one (by default all but the batch axis)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = as_int(start_dim, "Flatten: start_dim"), as_int(end_dim, "Flatten: end_dim")

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Axis ``dim`` split into ``sizes``."""

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = as_int(dim, "Unflatten: dim"), tuple(unflattened_size)

    def forward(self, x):
        return x.unflatten(self.dim, self.unflattened_size)

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


# -- activation modules: a name, the Variable method it calls, and its options -------------------------

def _activation(name, method, doc, options=(), repr_keys=None):
    """A Module class calling ``x.<method>(**options)``; ``options`` are (name, default) pairs."""
    keys = [k for k, _ in options]

    def __init__(self, *args, **kwargs):
        Module.__init__(self)
        if len(args) > len(options):
            raise TypeError(f"{name}: takes at most {len(options)} positional arguments, got {len(args)}")
        values = dict(options)
        values.update(zip(keys, args))
        for k, v in kwargs.items():
            if k not in values:
                raise TypeError(f"{name}: unexpected argument {k!r}")
            values[k] = v
        for k in keys:
            setattr(self, k, values[k])

    def forward(self, x):
        return method(x, **{k: getattr(self, k) for k in keys})

    def extra_repr(self):
        shown = repr_keys if repr_keys is not None else keys
        return ", ".join(f"{k}={getattr(self, k)!r}" if isinstance(getattr(self, k), str)
                         else f"{k}={getattr(self, k)}" for k in shown)

    return type(name, (Module,), {"__init__": __init__, "forward": forward, "extra_repr": extra_repr,
                                  "__doc__": doc, "__module__": __name__})


def _registry_modules():
    """The activation modules of the registry's activation rows (``registry.OpSpec.module``)."""
    for spec in rows("activation"):
        if spec.module:
            options = tuple((n, d) for n, d, _k in spec.scalars)
            call = (lambda name: lambda x, **kw: getattr(x, name)(**kw))(spec.name)
            globals()[spec.module] = _activation(spec.module, call, f"torch's ``nn.{spec.module}``: "
                                                 f"``{spec.forward}`` elementwise.", options)


_registry_modules()
GELU = _activation("GELU", lambda x, approximate: x.gelu(approximate),
                   "``x * Phi(x)`` (``approximate='tanh'``: the tanh form).", (("approximate", "none"),))
Softmax = _activation("Softmax", lambda x, dim: x.softmax(-1 if dim is None else dim),
                      "softmax along ``dim``.", (("dim", None),))
LogSoftmax = _activation("LogSoftmax", lambda x, dim: x.log_softmax(-1 if dim is None else dim),
                         "log-softmax along ``dim``.", (("dim", None),))


_ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "silu", "leaky_relu")


class MLP(Module):
    """Linear layers of the given ``sizes`` with ``activation`` between them (none after the last)."""

    def __init__(self, sizes, activation="relu", seed=None, dtype="float32", device=None):
        super().__init__()
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

    def extra_repr(self):
        return f"activation={self.activation!r}"
