"""Building models: ``Module`` and containers, layers, normalisation, losses; ``nn.functional`` as ``F``.

``Linear`` follows the crate's example, ``y = x @ W + b`` with ``W`` of shape ``[in, out]``
(``F.linear`` takes torch's ``[out, in]``); everything else takes PyTorch's shapes and options.

>>> from axonml_autograd import Tensor, Variable
>>> import axonml_autograd.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> [name for name, _ in model.named_parameters()]
['0.weight', '0.bias', '2.weight', '2.bias']
>>> model(Variable(Tensor.zeros([2, 4]))).shape()
[2, 3]
"""

from __future__ import annotations

from . import functional
from .. import init   # nn.init.xavier_uniform_(...), as in torch
from .layers import (ELU, GELU, MLP, SELU, Dropout, Embedding, Flatten, Hardtanh, Identity, LeakyReLU, Linear,
                     LogSigmoid, LogSoftmax, Mish, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh, Unflatten)
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss,
                   SmoothL1Loss)
from .module import IncompatibleKeys, Module, ModuleDict, ModuleList, Parameter, Sequential, StateDictError
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from .conv import AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, MaxPool2d
from .attention import MultiheadAttention, TransformerEncoderLayer
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from . import utils

__all__ = ["Module", "Sequential", "ModuleList", "ModuleDict", "Parameter", "StateDictError", "IncompatibleKeys",
           "Linear", "MLP", "Embedding", "Dropout", "Flatten", "Unflatten", "Identity",
           "ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "SiLU", "ELU", "SELU", "Softplus", "Mish", "Hardtanh",
           "LogSigmoid", "Softmax", "LogSoftmax",
           "LayerNorm", "BatchNorm1d", "BatchNorm2d", "GroupNorm",
           "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "MultiheadAttention", "TransformerEncoderLayer",
           "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "utils",
           "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "BCELoss",
           "BCEWithLogitsLoss", "KLDivLoss", "functional", "init"]
