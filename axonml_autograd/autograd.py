"""torch's ``torch.autograd`` names in one place: ``ag.autograd.grad``, ``backward``, ``Function``,
``gradcheck``, ``gradgradcheck`` and ``functional`` (``jacobian``, ``hessian``, ``vjp``, ...).

>>> import axonml_autograd as ag
>>> x = ag.Variable(ag.Tensor.from_vec([3.0], [1]), requires_grad=True)
>>> ag.autograd.grad((x * x).sum(), x)[0].to_vec()
[6.0]
"""

from . import func as functional
from .backward import backward, grad, gradcheck, gradgradcheck
from .custom import Function

__all__ = ["grad", "backward", "Function", "gradcheck", "gradgradcheck", "functional"]
