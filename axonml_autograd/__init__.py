"""axonml-autograd: reverse-mode automatic differentiation on OpenCL devices.

>>> from axonml_autograd import Tensor, Variable
>>> x = Variable(Tensor.from_vec([2.0, 3.0], [2]), requires_grad=True)
>>> loss = x.pow(2.0).sum()
>>> loss.backward()
>>> x.grad().to_vec()
[4.0, 6.0]
"""

from .device import Device, DeviceError, DeviceMemoryError, default_device, empty_cache, get_device, set_default_device
from .kernels import KernelBuildError
from .tensor import Tensor

__version__ = "0.1.0"
