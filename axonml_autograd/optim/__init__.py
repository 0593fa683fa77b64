"""Optimisers that update parameters on the device: :class:`SGD`, :class:`Adam`, :class:`AdamW`,
:class:`RMSprop` and :class:`Adagrad`; learning-rate schedules in :mod:`.lr_scheduler`.

Each step launches one small kernel that advances the step counts, then one fused kernel per
parameter (``cl_kernels/optim.cl.mako``) that reads the parameter, its gradient and its state and
writes them back in place. The state (momentum buffers,
moments) lives on the device next to the parameter, and so do the step counts and learning rates
the kernels read (``device_state.py``), so a captured step replays with nothing rewritten.
``step()`` never reads from the device or waits for it.

The update rules are PyTorch's (``torch.optim``, single-tensor code path), so a model trained here
follows the same trajectory as the same model trained with PyTorch, up to rounding.

>>> from axonml_autograd import Tensor, Variable
>>> w = Variable(Tensor.from_vec([1.0, -2.0], [2]), requires_grad=True)
>>> opt = SGD([w], lr=0.1)
>>> (w * w).sum().backward()
>>> opt.step()
>>> [round(v, 4) for v in w.to_vec()]
[0.8, -1.6]
"""

from __future__ import annotations

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]

from . import lr_scheduler  # noqa: E402  (it names Optimizer, so it comes after it)
