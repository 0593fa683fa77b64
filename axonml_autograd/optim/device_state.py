"""What an optimiser step reads that changes from step to step, kept in device buffers.

A captured step replays its recorded kernels with nothing rewritten (PyTorch's ``capturable``
optimisers, tinygrad's optimiser tensors), so the per-step values live where the kernels read them:

* **step counts**: one table per optimiser and device, two 32-bit words (a 64-bit count) per
  parameter, the parameter's index in ``Optimizer.parameters()`` its slot. A step first advances the
  slots of the parameters it updates with one small kernel (``counters.cl.mako``; one launch per
  contiguous run of slots, a single one when every parameter has a gradient), then each parameter's
  kernel reads its count. Per parameter, not per group, because counts differ within a group:
  a parameter without a gradient is skipped and does not count the step, as in PyTorch.
* **rates**: per parameter group (and device and dtype), the learning rate and what the family
  derives from it alone (AdamW's ``1 - lr * wd``), computed by the host in double. Setting
  ``group["lr"]`` (a scheduler, ``opt.lr = x``, a reload) writes the buffer at once with a fill on
  the device's stream: in eager mode it lands before the next step's kernels; outside a capture it
  lands before the next replay's commands, since both go through the one in-order stream. A
  fill made while a captured function runs is part of the recording (the function set that rate).

Nothing here reads the device during a step; :class:`StepCount` reads it when asked (a state dict).
"""

from __future__ import annotations

import weakref

import numpy as np

from .. import kernels, launch
from ..elementwise_kernels import _local_size
from ..tensor import Tensor

_COUNTERS = "counters.cl.mako"


class Group(dict):
    """A parameter group (a dict, as PyTorch's) whose device-resident values follow host writes."""

    def _owner(self):
        ref = self.__dict__.get("_owner_ref")
        return ref() if ref is not None else None

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        owner = self._owner()
        if owner is not None and key in owner._rate_keys:
            owner._write_rates(self)

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        owner = self._owner()
        if owner is not None:
            owner._write_rates(self)

    def __reduce__(self):
        # Copied or pickled, a group is the plain dict it stands for (its buffers stay with the optimiser).
        return dict, (dict(self),)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]


def make_group(owner, values: dict) -> Group:
    group = Group(values)
    group.__dict__["_owner_ref"] = weakref.ref(owner)
    group.__dict__["_rates"] = {}       # (device, dtype) -> Tensor of the family's rate values
    group.__dict__["_written"] = None   # the rate values last written to those buffers
    return group


class StepCount:
    """A parameter's step count as ``state[p]["step"]``: an int on demand, read from the device."""

    __slots__ = ("_opt", "_device", "_slot")

    def __init__(self, opt, device, slot):
        self._opt, self._device, self._slot = opt, device, slot

    def __int__(self):
        return read_counts(self._opt._step_tables[self._device])[self._slot]

    __index__ = __int__

    def __eq__(self, other):   # (and so unhashable: the count changes)
        return int(self) == other

    def __repr__(self):
        return str(int(self))


def read_counts(table: Tensor) -> list:
    words = table.numpy().view(np.uint32).astype(np.int64)
    return [int(c) for c in words[0::2] + (words[1::2] << 32)]


def new_table(device, slots: int, old: Tensor = None, counts=None) -> Tensor:
    """A step table of ``slots`` slots: zeros, then ``old``'s slots copied in, or ``counts`` uploaded.
    Set-up, not a step: never recorded by a capture (callers pause recording)."""
    if counts is not None:
        words = np.zeros(2 * slots, np.uint32)
        for slot, count in counts.items():
            words[2 * slot], words[2 * slot + 1] = count & 0xFFFFFFFF, count >> 32
        return Tensor.from_numpy(words.view(np.int32), dtype="int32", device=device)
    table = Tensor.zeros([2 * slots], "int32", device)
    if old is not None and old.numel():
        launch.copy(device, table.buffer, old.buffer, old.numel() * 4)
    return table


def advance(device, table: Tensor, slots, found_inf: Tensor = None) -> None:
    """Add one to the counts of ``slots`` (sorted, distinct): one launch per contiguous run. With
    ``found_inf`` (GradScaler.step), only where that device flag is 0."""
    skip = {} if found_inf is None else {"found_inf": found_inf}
    knl = kernels.get_kernel(device, _COUNTERS, "advance_counters_unless" if skip else "advance_counters")
    local = kernels.fit_local(device, knl, _local_size(device))
    start = 0
    while start < len(slots):
        end = start + 1
        while end < len(slots) and slots[end] == slots[end - 1] + 1:
            end += 1
        count = end - start
        kernels.launch(device, knl, (kernels.round_up(count, local),), (local,), counters=table,
                       first=slots[start], count=count, add_lo=1, add_hi=0, **skip)
        start = end


def rate_buffer(group: Group, values, device, dtype) -> Tensor:
    """The group's rate buffer for ``(device, dtype)``, made and filled on first use (set-up)."""
    buf = group._rates.get((device, dtype))
    if buf is None:
        buf = group._rates[(device, dtype)] = Tensor._wrap((_pattern_len(len(values)),), dtype, device)
        fill_rates(buf, values)
    return buf


def fill_rates(buf: Tensor, values) -> None:
    pattern = np.zeros(buf.numel(), buf.dtype)
    pattern[:len(values)] = values
    launch.fill(buf.device, buf.buffer, pattern, pattern.nbytes)


def _pattern_len(n: int) -> int:
    # A fill pattern is a power of two bytes long: pad the values to a power-of-two count.
    return 1 << max(0, n - 1).bit_length()
