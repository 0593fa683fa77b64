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
from .layers import (ELU, GELU, MLP, SELU, Dropout, Dropout2d, Embedding, EmbeddingBag, PReLU, Flatten, Hardtanh, Identity, LeakyReLU, Linear,
                     LogSigmoid, LogSoftmax, Mish, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh, Unflatten)
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss,
                   SmoothL1Loss)
from .module import (IncompatibleKeys, Module, ModuleDict, ModuleList, Parameter, ParameterDict, ParameterList,
                     Sequential, StateDictError)
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d, InstanceNorm2d, LayerNorm
from .conv import AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, MaxPool2d
from .attention import (MultiheadAttention, Transformer, TransformerDecoder, TransformerDecoderLayer,
                        TransformerEncoder, TransformerEncoderLayer)
from .resample import (AdaptiveMaxPool2d, AvgPool1d, CircularPad1d, CircularPad2d, Fold, MaxPool1d, PixelShuffle,
                       PixelUnshuffle, ReflectionPad1d, ReflectionPad2d, ReplicationPad1d, ReplicationPad2d, Unfold,
                       Upsample, UpsamplingBilinear2d, UpsamplingNearest2d)
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from . import utils

__all__ = ["Module", "Sequential", "ModuleList", "ModuleDict", "Parameter", "ParameterList", "ParameterDict", "StateDictError", "IncompatibleKeys",
           "Linear", "MLP", "Embedding", "EmbeddingBag", "Dropout", "Dropout2d", "PReLU", "Flatten", "Unflatten", "Identity",
           "ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "SiLU", "ELU", "SELU", "Softplus", "Mish", "Hardtanh",
           "LogSigmoid", "Softmax", "LogSoftmax",
           "LayerNorm", "BatchNorm1d", "BatchNorm2d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
           "Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "AdaptiveMaxPool2d", "MaxPool1d", "AvgPool1d", "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d",
           "PixelShuffle", "PixelUnshuffle", "Unfold", "Fold", "ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d",
           "ReplicationPad2d", "CircularPad1d", "CircularPad2d", "MultiheadAttention", "TransformerEncoderLayer",
           "TransformerEncoder", "TransformerDecoderLayer", "TransformerDecoder", "Transformer",
           "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "utils",
           "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "BCELoss",
           "BCEWithLogitsLoss", "KLDivLoss", "functional", "init"]
