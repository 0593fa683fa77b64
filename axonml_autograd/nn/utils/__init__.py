"""``nn.utils`` as in torch: gradient clipping and parameter vectors (from ``axonml_autograd.utils``),
and ``nn.utils.rnn`` for batches of sequences of different lengths."""

from ...utils import clip_grad_norm_, clip_grad_value_, parameters_to_vector, vector_to_parameters
from . import rnn

__all__ = ["clip_grad_norm_", "clip_grad_value_", "parameters_to_vector", "vector_to_parameters", "rnn"]
