"""Layers as functions (``import axonml_autograd.nn.functional as F``), PyTorch's argument order.

>>> from axonml_autograd import Tensor, Variable
>>> import axonml_autograd.nn.functional as F
>>> w = Variable(Tensor.from_vec([0.0, 1.0, 10.0, 11.0, 20.0, 21.0], [3, 2]), requires_grad=True)
>>> F.embedding([[2, 0]], w).to_vec()
[20.0, 21.0, 0.0, 1.0]
"""

from __future__ import annotations

from ..functions.conv import adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, max_pool2d
from ..functions.indexing import embedding

__all__ = ["embedding", "conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]
