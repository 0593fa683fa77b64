"""Saving and loading named tensors (and an optimiser's state) as ``.npz`` files.

The functions live in ``checkpoint.py`` for the crate's sake (and that module also holds gradient
checkpointing); this is their PyTorch-style home, and ``axonml_autograd.save`` / ``load`` are the same
functions.

>>> import os, tempfile
>>> from axonml_autograd import Tensor, Variable, save, load
>>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
>>> save(path, {"w": Variable(Tensor.from_vec([1.0, 2.0], [2]))})
>>> load(path)["w"].tolist()
[1.0, 2.0]
>>> from axonml_autograd.nn import Linear
>>> layer = Linear(2, 1, seed=0)
>>> save(layer.state_dict(), path)              # torch.save's order works too
>>> layer.load_state_dict(load(path))
IncompatibleKeys(missing_keys=[], unexpected_keys=[])
"""

from .checkpoint import Checkpoint, CheckpointError, CheckpointMismatchError, load, load_into, read, save

__all__ = ["save", "load", "load_into", "read", "Checkpoint", "CheckpointError", "CheckpointMismatchError"]
