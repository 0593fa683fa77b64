"""Automatic mixed precision: inside ``autocast``, each listed op picks its own compute dtype.

Ops that gain from 16-bit arithmetic (matrix products, convolutions, attention) run in the region's
low dtype; ops whose results lose too much in 16 bits (exponentials, logs, powers, sums, softmax, norms
and the losses) run in float32; every other op runs in the dtype of its inputs, and a binary op of mixed
inputs promotes to the wider one, as it does outside a region. float64 is never changed. Weights stay
float32 (master weights): a float32 leaf that requires grad is cast once per region and the cast reused,
so a weight used by five products is converted once, and its gradient arrives in float32 through the
cast's own backward.

Two sets of lists, both torch's (1.x-2.x documentation of ``torch.autocast``):

- ``"gpu"`` (the default; also spelled ``"cuda"`` or ``"opencl"``): torch's CUDA lists, since GPUs are
  where 16-bit pays. One choice of ours: ``mean`` runs in float32 with ``sum`` (torch's CUDA list leaves
  ``mean`` in the input dtype; both accumulate in float32, only the result dtype differs).
- ``"cpu"``: torch's CPU lists, where softmax, norms, exp/log and sums stay in the low dtype and only the
  losses and ``prod`` go to float32. A transformer block or a CNN gives the dtypes torch's CPU autocast
  gives, which is what ``tests/test_autocast.py`` checks against torch.

Inside a listed op autocast is off (torch's dispatcher does the same), so an op built from other ops,
such as the composed attention, casts once at its entry. Backward never autocasts: gradients come back in
the dtype each forward op ran in. Regions are per thread, like ``no_grad``, and nest (an inner
``enabled=False`` turns casting off).

>>> import numpy as np
>>> import axonml_autograd as ag
>>> from axonml_autograd.nn import functional as F
>>> x = ag.Variable(ag.Tensor.from_numpy(np.ones((2, 3), np.float32)))
>>> w = ag.Variable(ag.Tensor.from_numpy(np.ones((4, 3), np.float32)), requires_grad=True)
>>> with ag.autocast(dtype=ag.bfloat16):
...     y = F.linear(x, w)
...     p = y.softmax(-1)
>>> y.dtype, p.dtype, w.dtype
(bfloat16, dtype('float32'), dtype('float32'))
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from .dtypes import bfloat16, float16, resolve
from .launch import active_capture

_state = threading.local()

# How many threads have an enabled region open right now. The checks on the op paths read this one
# global first, so code outside any region pays a single integer test per op.
regions = 0
_count_lock = threading.Lock()

_LOWER_COMMON = frozenset({
    "matmul", "linear", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "einsum", "prelu",
    "scaled_dot_product_attention"})
_LOSSES = frozenset({
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "nll_loss", "cross_entropy", "kl_div"})

LISTS = {
    "gpu": {
        "lower": _LOWER_COMMON,
        "float32": _LOSSES | frozenset({
            "exp", "expm1", "log", "log10", "log1p", "log2", "pow", "reciprocal", "rsqrt", "acos", "asin",
            "cosh", "sinh", "tan", "softplus", "softmax", "log_softmax", "layer_norm", "group_norm", "sum",
            "mean", "cumsum", "cumprod", "prod", "norm", "normalize", "cosine_similarity"}),
    },
    "cpu": {
        "lower": _LOWER_COMMON,
        "float32": _LOSSES | frozenset({"prod"}),
    },
}
_LIST_NAMES = {"gpu": "gpu", "cuda": "gpu", "opencl": "gpu", "cpu": "cpu"}
_DEFAULT_DTYPE = {"gpu": float16, "cpu": bfloat16}   # torch's defaults for CUDA and CPU


class _Region:
    """What an open region decided: its low dtype, its lists, and the weight casts made so far."""

    __slots__ = ("dtype", "lower", "float32", "cache")

    def __init__(self, dtype, lists, cache):
        self.dtype, self.lower, self.float32 = dtype, lists["lower"], lists["float32"]
        self.cache = cache   # id(leaf) -> (leaf, storage, version, capture, cast); None: caching off


def current():
    """The region this thread is in (None outside one, inside ``enabled=False`` and inside a listed op)."""
    return getattr(_state, "region", None) if regions else None


def is_autocast_enabled() -> bool:
    """True where ops autocast in this thread (torch's ``torch.is_autocast_enabled()``)."""
    return current() is not None


def get_autocast_dtype():
    """The low dtype of the region this thread is in, or None outside one."""
    r = current()
    return None if r is None else r.dtype


class autocast:
    """Run the listed ops of a block (or a decorated function) in ``dtype``, float16 or bfloat16.

    ``autocast(dtype=ag.bfloat16)``, or torch's spelling ``autocast("cuda", dtype=...)``: the first
    argument may name the op lists, ``"gpu"``/``"cuda"``/``"opencl"`` (the default) or ``"cpu"``.
    Without ``dtype`` the low dtype is torch's default for those lists (float16 for the GPU lists,
    bfloat16 for the CPU ones). ``cache_enabled=False`` casts a weight at every use.

    >>> import axonml_autograd as ag
    >>> @ag.autocast(dtype=ag.float16)
    ... def f(a, b):
    ...     return a @ b
    >>> a = ag.Variable(ag.Tensor.ones([2, 2]))
    >>> f(a, a).dtype, (a @ a).dtype
    (dtype('float16'), dtype('float32'))
    """

    def __init__(self, device_type=None, dtype=None, enabled=True, cache_enabled=True):
        if device_type is not None and not isinstance(device_type, str):
            dtype, device_type = device_type, None   # autocast(ag.bfloat16): the dtype given first
        lists = _LIST_NAMES.get(device_type or "gpu")
        if lists is None:
            raise ValueError(f"autocast: unknown device_type {device_type!r}; expected one of "
                             f"{sorted(_LIST_NAMES)}")
        low = _DEFAULT_DTYPE[lists] if dtype is None else _low_dtype(dtype)
        if low is None:
            raise ValueError(f"autocast: dtype must be float16 or bfloat16, got {dtype!r} (float32 and "
                             "float64 need no autocast; run the block without it)")
        self.lists, self.dtype, self.enabled, self.cache_enabled = lists, low, bool(enabled), bool(cache_enabled)
        self._saved = []

    def __enter__(self):
        outer = getattr(_state, "region", None)
        if self.enabled:
            # A nested region shares the outer one's casts when it keeps the dtype (torch's cache lives
            # until the outermost region closes).
            cache = (outer.cache if outer is not None and outer.dtype == self.dtype else {}) \
                if self.cache_enabled else None
            region = _Region(self.dtype, LISTS[self.lists], cache)
        else:
            region = None
        self._saved.append(outer)
        _state.region = region
        _count(outer, region)
        return self

    def __exit__(self, *exc):
        outer = self._saved.pop()
        inner = getattr(_state, "region", None)
        _state.region = outer
        _count(inner, outer)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with autocast(self.lists, self.dtype, self.enabled, self.cache_enabled):
                return fn(*args, **kwargs)
        return run


def _low_dtype(dtype):
    """float16 or bfloat16 for the ways of naming them; None for anything else."""
    if resolve(dtype) is not None:
        return bfloat16
    try:
        low = np.dtype(dtype)
    except TypeError:
        return None
    return float16 if low == float16 else None


def _count(before, after):
    """Keep ``regions`` the number of threads with a region on, as this thread goes from one to another."""
    global regions
    if (before is None) != (after is None):
        with _count_lock:
            regions += 1 if after is not None else -1


class suspended:
    """No autocasting in this thread for a block: the body of a listed op, and every backward pass.
    (``regions`` still counts the thread: it is only the hint that lets code outside regions skip the
    thread-local read.)"""

    __slots__ = ("_region", "_float32_result", "_outer_result")

    def __init__(self, float32_result=False):
        self._float32_result = float32_result

    def __enter__(self):
        self._region = getattr(_state, "region", None)
        self._outer_result = getattr(_state, "float32_result", False)
        _state.region = None
        _state.float32_result = self._float32_result
        return self

    def __exit__(self, *exc):
        _state.region = self._region
        _state.float32_result = self._outer_result
        return False


def op(name, reads_16bit=False):
    """Make ``fn`` the autocast entry of op ``name`` (a string, or a function of the call's arguments
    giving the name, for an entry that serves several ops): inside a region its floating inputs are cast
    as the region's lists say, and the body runs with autocast off.

    ``reads_16bit``: the op computes in float32 from 16-bit inputs itself (its kernels read them), so on
    the float32 list its 16-bit inputs are passed as they are, with :func:`float32_result` true for the
    body: the same values as on float32 copies (a 16-bit value widens exactly), without the copies held
    for the backward."""
    def wrap(fn):
        @functools.wraps(fn)
        def entry(*args, **kwargs):
            if regions:
                region = getattr(_state, "region", None)
                if region is not None:
                    op_name = name if isinstance(name, str) else name(*args, **kwargs)
                    target = _target(region, op_name)
                    if target is not None and reads_16bit and target == np.float32:
                        target = _HALF_TO_FLOAT32
                    if target is not None:
                        args = tuple(_cast(a, target, region) for a in args)
                        kwargs = {k: _cast(v, target, region) for k, v in kwargs.items()}
                    with suspended(float32_result=target is _HALF_TO_FLOAT32):
                        return fn(*args, **kwargs)
            return fn(*args, **kwargs)
        return entry
    return wrap


# A cast target of op(reads_16bit=True) on the float32 list: 16-bit inputs stay, others go to float32.
_HALF_TO_FLOAT32 = object()


def float32_result() -> bool:
    """Whether the running op is an ``op(reads_16bit=True)`` on the float32 list: its 16-bit inputs came
    as they are and its result is float32."""
    return getattr(_state, "float32_result", False)


def _target(region, name):
    if name in region.lower:
        return region.dtype
    if name in region.float32:
        return np.dtype(np.float32)
    return None


def pointwise(name, v):
    """A registry op's input inside a region: ``v`` as float32 where ``name`` is on the float32 list."""
    region = getattr(_state, "region", None)
    if region is None or name not in region.float32:
        return v
    return _cast(v, np.dtype(np.float32), region)


def _cast(value, dtype, region):
    """``value`` in ``dtype`` when it is a floating Tensor or Variable other than float64; anything else
    (integers, masks, numbers, float64) as it is."""
    from .tensor import Tensor
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype, region) for v in value)
    if isinstance(value, Tensor):
        x = value
    else:
        x = getattr(value, "_data", None)
        if not isinstance(x, Tensor):
            return value
    if dtype is _HALF_TO_FLOAT32:
        if x.dtype.itemsize == 2:
            return value
        dtype = np.dtype(np.float32)
    if x.dtype.kind != "f" or x.dtype == np.float64 or x.dtype == dtype:
        return value
    if x is value:
        return x.astype(dtype)
    if dtype != np.float32 and region.cache is not None and value.is_leaf and value.requires_grad:
        return _cached_cast(value, dtype, region.cache)
    return value.to(dtype)


def _cached_cast(leaf, dtype, cache):
    """A weight's low-dtype cast, made once per region. It is remade after the weight changes in place
    (an optimiser step inside the region), and inside a capture recording, so that the recording holds
    the cast kernel its replays must repeat."""
    from .no_grad import is_grad_enabled
    x = leaf._data
    storage, version, cap = x._storage, x._version, active_capture()
    hit = cache.get(id(leaf))
    if hit is not None and hit[1] is storage and hit[2] == version and hit[3] is cap and hit[4] == dtype \
            and (hit[5].requires_grad or not is_grad_enabled()):
        return hit[5]
    cast = leaf.to(dtype)
    cache[id(leaf)] = (leaf, storage, version, cap, dtype, cast)
    return cast


# -- the gradient scaler --------------------------------------------------------------------------------

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


class GradScaler:
    """torch's ``GradScaler``, with every decision on the device: a scaled step reads nothing back.

    ``scale(loss)`` multiplies the loss by the scale, so that small float16 gradients do not flush to
    zero; ``unscale_(opt)`` divides the gradients by it and sets a device flag if any is inf or NaN;
    ``step(opt)`` unscales if that was not done and runs the optimiser's kernels, which do nothing while
    the flag is set (the step counts, used by Adam's bias corrections, do not advance either, as torch
    never calls a skipped step); ``update()`` halves the scale (``backoff_factor``) after a skipped step
    and doubles it (``growth_factor``) after ``growth_interval`` good steps in a row. torch's ``step``
    reads the flag back to decide; here nothing waits, so the whole step can be captured.

    Differences from torch: ``step`` returns the optimiser's return value even when the step was
    skipped (torch returns None then; knowing would mean a read); ``get_scale()`` and ``state_dict()``
    read the device (call them outside the hot loop).

    >>> import numpy as np
    >>> import axonml_autograd as ag
    >>> w = ag.Variable(ag.Tensor.from_numpy(np.ones(3, np.float32)), requires_grad=True)
    >>> opt = ag.optim.SGD([w], lr=0.1)
    >>> scaler = ag.GradScaler(init_scale=1024.0)
    >>> scaler.scale((w * w).sum()).backward()
    >>> scaler.step(opt); scaler.update()
    >>> w.data().to_vec(), scaler.get_scale()
    ([0.800000011920929, 0.800000011920929, 0.800000011920929], 1024.0)
    """

    def __init__(self, device=None, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        # ``device`` is accepted for torch's GradScaler("cuda", ...); the scale lives on the loss's device.
        if not isinstance(device, (str, type(None))) and not hasattr(device, "target"):
            raise TypeError(f"GradScaler: device must be a device name or a Device, got {type(device).__name__}")
        if not float(init_scale) > 0:
            raise ValueError(f"GradScaler: init_scale must be > 0, got {init_scale}")
        if not float(growth_factor) > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1.0, got {growth_factor}")
        if not 0.0 < float(backoff_factor) < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be between 0 and 1, got {backoff_factor}")
        if int(growth_interval) != growth_interval or growth_interval <= 0:
            raise ValueError(f"GradScaler: growth_interval must be a positive integer, got {growth_interval}")
        self._enabled = bool(enabled)
        self._init_scale, self._init_tracker = float(init_scale), 0
        self._growth_factor, self._backoff_factor = float(growth_factor), float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._scale = self._growth_tracker = None   # one-element device buffers, made at the first scale()
        self._optimizers = {}   # id(optimizer) -> [stage, found_inf buffer]; stages restart at update()
        self._flags = {}        # id(optimizer) -> its found-inf buffer, kept so a capture sees one buffer

    def is_enabled(self) -> bool:
        return self._enabled

    def _buffers(self, device):
        from .launch import not_recording
        from .tensor import Tensor
        if self._scale is None:
            with not_recording():   # set-up, not part of a step that a capture replays
                self._scale = Tensor.full([], self._init_scale, "float32", device)
                self._growth_tracker = Tensor.full([], self._init_tracker, "int32", device)
        elif self._scale.device is not device:
            raise ValueError(f"GradScaler: the scale lives on {self._scale.device}, the loss on {device}")
        return self._scale

    def scale(self, outputs):
        """``outputs`` (a Variable, or a list/tuple/dict of them) times the current scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        if isinstance(outputs, dict):
            return {k: self.scale(v) for k, v in outputs.items()}
        data = getattr(outputs, "_data", None)
        if data is None or data.dtype.kind != "f":
            raise TypeError(f"GradScaler.scale: expected a floating Variable (the loss), got {outputs!r}")
        scale = self._buffers(data.device)
        return outputs * outputs.__class__(scale)

    def _entry(self, optimizer):
        return self._optimizers.setdefault(id(optimizer), [_READY, None])

    def unscale_(self, optimizer):
        """Divide ``optimizer``'s gradients by the scale in place and note on the device whether any is
        inf or NaN. Call it before ``clip_grad_norm_`` so that the clipping sees true gradients."""
        if not self._enabled:
            return
        entry = self._entry(optimizer)
        if entry[0] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update()")
        if entry[0] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step()")
        grads = [p._grad for p in optimizer.parameters() if p._grad is not None]
        for g in grads:
            if g.dtype == float16:
                raise ValueError("GradScaler.unscale_: attempting to unscale float16 gradients (the "
                                 "parameters are float16: keep float32 master weights and autocast)")
        if self._scale is None:
            raise RuntimeError("GradScaler.unscale_: scale() was never called, so there is no scale to undo")
        flag = self._flags.get(id(optimizer))
        if flag is None or flag.device is not self._scale.device:
            from .launch import not_recording
            from .tensor import Tensor
            with not_recording():
                flag = self._flags[id(optimizer)] = Tensor.zeros([], "float32", self._scale.device)
        flag.zero_()
        for g in grads:
            _unscale_check(g, self._scale, flag)
        entry[:] = [_UNSCALED, flag]

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step()`` unless this step's gradients hold an inf or a NaN, decided on the device
        (unscaling first if ``unscale_`` was not called)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs or args:
            raise RuntimeError("GradScaler.step: closure use is not supported (as torch's GradScaler)")
        entry = self._entry(optimizer)
        if entry[0] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update()")
        if entry[0] == _READY:
            self.unscale_(optimizer)
        optimizer._found_inf = entry[1]
        try:
            out = optimizer.step()
        finally:
            optimizer._found_inf = None
        entry[0] = _STEPPED
        return out

    def update(self, new_scale=None):
        """Set the scale for the next step: ``new_scale`` (a number or a one-element Tensor) if given,
        else torch's rule from this step's found-inf flags, on the device."""
        if not self._enabled:
            return
        from .tensor import Tensor
        if new_scale is not None:
            if self._scale is None:
                raise RuntimeError("GradScaler.update: scale() was never called")
            if isinstance(new_scale, Tensor) or hasattr(new_scale, "_data"):
                src = new_scale if isinstance(new_scale, Tensor) else new_scale._data
                if src.numel() != 1 or src.dtype != np.float32:
                    raise ValueError(f"GradScaler.update: new_scale must be one float32 element, got "
                                     f"{src.dtype} {src.shape()}")
                self._scale.copy_(src.reshape([]))
            else:
                self._scale.fill_(float(new_scale))
        else:
            flags = [flag for _stage, flag in self._optimizers.values() if flag is not None]
            if not flags:
                raise RuntimeError("GradScaler.update: no inf checks were recorded prior to update() "
                                   "(call step() or unscale_() first)")
            found = flags[0]
            for f in flags[1:]:
                found = found + f   # any optimizer's flag counts, as torch sums them
            _update_scale(self._scale, self._growth_tracker, found, self._growth_factor,
                          self._backoff_factor, self._growth_interval)
        self._optimizers = {}

    # -- the settings, the scale and the state dict (these read the device) -------------------------
    def get_scale(self) -> float:
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale.numpy())

    def get_growth_factor(self): return self._growth_factor
    def set_growth_factor(self, value): self._growth_factor = float(value)
    def get_backoff_factor(self): return self._backoff_factor
    def set_backoff_factor(self, value): self._backoff_factor = float(value)
    def get_growth_interval(self): return self._growth_interval
    def set_growth_interval(self, value): self._growth_interval = int(value)

    def _get_growth_tracker(self) -> int:
        return self._init_tracker if self._growth_tracker is None else int(self._growth_tracker.numpy())

    def state_dict(self) -> dict:
        """torch's keys: ``scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval`` and
        ``_growth_tracker`` (empty when disabled)."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict: dict):
        if not self._enabled:
            return
        if not state_dict:
            raise RuntimeError("GradScaler.load_state_dict: the state dict is empty (it came from a "
                               "disabled scaler)")
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} - set(state_dict)
        if missing:
            raise ValueError(f"GradScaler.load_state_dict: missing {sorted(missing)}")
        self._init_scale = float(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_tracker = int(state_dict["_growth_tracker"])
        if self._scale is not None:
            self._scale.fill_(self._init_scale)
            self._growth_tracker.fill_(self._init_tracker)


_AMP = "amp.cl.mako"


def _unscale_check(g, scale, found_inf):
    """``g /= scale`` in place, ``found_inf = 1`` if any element of ``g`` is not finite."""
    from . import kernels
    from .dtypes import compute_dtype
    from .elementwise_kernels import ew_launch_shape
    n = g.numel()
    if not n:
        return
    dev = g.device
    dtype, args, originals = kernels.float32_working_copies(g.dtype, {"g": g})
    knl = kernels.get_kernel(dev, _AMP, "unscale_check", ctype=kernels.ctype(compute_dtype(dtype)))
    chunk, global_size, local_size = ew_launch_shape(dev, n)
    kernels.launch(dev, knl, (global_size,), (local_size,), scale=scale, found_inf=found_inf, n=n, chunk=chunk,
                   **args)
    kernels.write_back(knl, args, originals)


def _update_scale(scale, tracker, found_inf, growth, backoff, interval):
    from . import kernels
    dev = scale.device
    knl = kernels.get_kernel(dev, _AMP, "update_scale", ctype="float")
    kernels.launch(dev, knl, (1,), (1,), scale=scale, growth_tracker=tracker, found_inf=found_inf,
                   growth_factor=growth, backoff_factor=backoff, growth_interval=interval)
