"""OpenCL platform/device choice, one context and queue per device, capabilities and a buffer pool.

The device is picked lazily and never by prompting::

    AXONML_DEVICE=0:1 python train.py          # platform:device indices (a bare "0" is "0:0")
    AXONML_DEVICE=epyc python train.py         # a case-insensitive substring of the device's names
    AXONML_DEVICE=pocl:epyc python train.py    # platform name : device name
    AXONML_DEVICE=intel: python train.py       # the one device of the platform whose name has "intel"

then ``PYOPENCL_CTX`` as pyopencl parses it, then the first GPU, then the first CPU device. The same
selectors work in ``get_device``, ``Tensor(..., device=)`` and ``.to()``.

A selector without a colon is searched for in each device's platform name and vendor, its own name,
vendor and version, and its type (``cpu``, ``gpu``). With a colon it is ``platform:device``: each
side is an index when it is all digits, else a substring of the platform's name and vendor (left)
or of the device's name, vendor, version and type (right); an empty side matches anything.
(A selector whose colon form matches nothing is tried once more as a plain substring, for
device names that contain a colon, such as ``gfx90a:sramecc+:xnack-``.) A name must match exactly
one device: the same CPU under two runtimes (PoCL and Intel's) matches twice, and such a selector
is refused with a :class:`DeviceError` that lists the matches with their index selectors.

>>> from axonml_autograd.device import default_device
>>> dev = default_device()
>>> dev.max_work_group_size >= 1
True
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyopencl as cl

from . import launch
from . import target as _target

INSTALL_HINT = 'install an OpenCL platform, for example: pip install "pyopencl[pocl]"'


SUPPORTED_DTYPES = ("float32", "float64", "int32", "int64", "bool", "float16", "bfloat16")


class DeviceError(RuntimeError):
    """No usable OpenCL device, or a device that cannot do what was asked."""


class DeviceMemoryError(MemoryError):
    """The device refused an allocation, even after the buffer pool released what it held."""


@dataclass(frozen=True)
class DeviceInfo:
    """The facts about one OpenCL device, readable without creating a context."""

    platform_index: int
    device_index: int
    platform: str
    name: str
    vendor: str
    type: str
    compute_units: int
    global_mem: int
    local_mem: int
    max_alloc: int
    max_work_group_size: int
    fp64: bool
    fp16: bool
    opencl_c_version: str
    driver_version: str

    @property
    def selector(self) -> str:
        """The ``AXONML_DEVICE`` value that picks this device."""
        return f"{self.platform_index}:{self.device_index}"


def _device_type_name(cl_device) -> str:
    t = cl_device.type
    for flag, name in ((cl.device_type.GPU, "GPU"), (cl.device_type.CPU, "CPU"),
                       (cl.device_type.ACCELERATOR, "ACCELERATOR")):
        if t & flag:
            return name
    return "OTHER"


def describe(cl_device, platform_index: int, device_index: int) -> DeviceInfo:
    ext = cl_device.extensions.split()
    return DeviceInfo(
        platform_index=platform_index,
        device_index=device_index,
        platform=cl_device.platform.name.strip(),
        name=cl_device.name.strip(),
        vendor=cl_device.vendor.strip(),
        type=_device_type_name(cl_device),
        compute_units=int(cl_device.max_compute_units),
        global_mem=int(cl_device.global_mem_size),
        local_mem=int(cl_device.local_mem_size),
        max_alloc=int(cl_device.max_mem_alloc_size),
        max_work_group_size=int(cl_device.max_work_group_size),
        fp64="cl_khr_fp64" in ext or bool(getattr(cl_device, "double_fp_config", 0)),
        fp16="cl_khr_fp16" in ext,
        opencl_c_version=cl_device.opencl_c_version.strip(),
        driver_version=cl_device.driver_version.strip(),
    )


def platforms():
    """``[(platform_index, cl.Platform, [cl.Device] or an error string)]`` for every platform found."""
    try:
        found = cl.get_platforms()
    except cl.Error:  # the ICD loader reports "no platforms" as an error
        found = []
    result = []
    for pi, p in enumerate(found):
        try:
            result.append((pi, p, list(p.get_devices())))
        except cl.Error as e:  # a platform with zero devices raises DEVICE_NOT_FOUND
            result.append((pi, p, f"no devices ({e})"))
    return result


def all_device_infos():
    """Every device of every platform, as :class:`DeviceInfo`."""
    infos = []
    for pi, _p, devices in platforms():
        if isinstance(devices, str):
            continue
        for di, d in enumerate(devices):
            infos.append(describe(d, pi, di))
    return infos


def _parse_index_selector(text: str):
    """``(platform, device)`` for ``"0:1"``, ``"0:"`` or ``"0"``; None for any other form (``":1"``,
    device 1 of any platform, is a name-style selector: see :func:`resolve_selector`)."""
    parts = text.split(":")
    if len(parts) not in (1, 2) or not all(part.strip().isdigit() for part in parts if part.strip()):
        return None
    if not parts[0].strip() and len(parts) == 2 and parts[1].strip():
        return None
    nums = [int(part) for part in parts if part.strip()]
    return (nums[0], nums[1] if len(nums) > 1 else 0) if nums else None


def _pick_part(part: str, names) -> Optional[int]:
    """pyopencl's rule for one PYOPENCL_CTX part: empty is 0, an in-range number is an index, else a
    case-insensitive name substring."""
    part = part.strip()
    if not part:
        return 0 if names else None
    if part.isdigit() and int(part) < len(names):
        return int(part)
    return next((i for i, n in enumerate(names) if part.lower() in n.lower()), None)


def _platform_text(platform) -> str:
    return f"{platform.name} {platform.vendor}".lower()


def _device_text(d) -> str:
    # PoCL says "pocl" only in its platform vendor and device version strings.
    return f"{d.name} {d.vendor} {d.version} {_device_type_name(d)}".lower()


def _part_matches(part: str, index: int, text: str) -> bool:
    """One side of a ``platform:device`` selector: empty matches all, digits an index, else a substring."""
    part = part.strip()
    if not part:
        return True
    if part.isdigit():
        return int(part) == index
    return part.lower() in text


def _match_by_name(text: str, candidates) -> list:
    """The ``(pi, di, d)`` of ``candidates`` that a name selector (with or without a colon) matches."""
    plain = [c for c in candidates
             if text.lower() in f"{_platform_text(c[2].platform)} {_device_text(c[2])}"]
    if ":" not in text:
        return plain
    plat_part, _, dev_part = text.partition(":")
    both = [(pi, di, d) for pi, di, d in candidates
            if _part_matches(plat_part, pi, _platform_text(d.platform)) and _part_matches(dev_part, di, _device_text(d))]
    return both or plain


def _listing(candidates) -> str:
    return ", ".join(f"{pi}:{di} {d.name.strip()} ({d.platform.name.strip()})" for pi, di, d in candidates)


def resolve_selector(selector: Optional[str] = None, _source: str = "device selector"):
    """Return ``(platform_index, device_index)`` for a selector, or by the default rules when None.

    See the module docstring for the selector forms; a name that matches several devices raises.
    """
    candidates = [(pi, di, d) for pi, _p, ds in platforms() if not isinstance(ds, str)
                  for di, d in enumerate(ds)]
    if not candidates:
        raise DeviceError(f"no OpenCL device found; {INSTALL_HINT}")
    if selector is not None:
        text = str(selector).strip()
        idx = _parse_index_selector(text)
        if idx is not None:
            for pi, di, _d in candidates:
                if (pi, di) == idx:
                    return pi, di
            raise DeviceError(f"{_source} {text!r}: device {idx[0]}:{idx[1]} does not exist; available: "
                              + ", ".join(f"{pi}:{di} {d.name.strip()}" for pi, di, d in candidates))
        found = _match_by_name(text, candidates)
        if len(found) == 1:
            return found[0][:2]
        if not found:
            raise DeviceError(f"{_source} {text!r}: no device matches; available: "
                              + ", ".join(f"{pi}:{di} {d.name.strip()}" for pi, di, d in candidates))
        raise DeviceError(
            f"{_source} {text!r} is ambiguous: it matches {len(found)} devices: {_listing(found)}; "
            "name one with a more specific name, as 'platform:device' names (for example 'pocl:epyc' or "
            f"'intel:'), or by its index (for example '{found[0][0]}:{found[0][1]}')")
    env = os.environ.get("AXONML_DEVICE")
    if env:
        return resolve_selector(env, "AXONML_DEVICE")
    ctx_env = os.environ.get("PYOPENCL_CTX")
    if ctx_env:
        # pyopencl's own syntax: "platform[:device]" with indices or name substrings.
        plat_part, _, dev_part = ctx_env.partition(":")
        plats = platforms()
        pi = _pick_part(plat_part, [p.name for _pi, p, _ds in plats])
        ds = plats[pi][2] if pi is not None else None
        if ds and not isinstance(ds, str):
            di = _pick_part(dev_part, [d.name for d in ds])
            if di is not None:
                return pi, di
        raise DeviceError(f"PYOPENCL_CTX={ctx_env!r} matches no device")
    for wanted in (cl.device_type.GPU, cl.device_type.CPU):
        for pi, di, d in candidates:
            if d.type & wanted:
                return pi, di
    return candidates[0][:2]


class BufferPool:
    """Keeps freed device buffers by size for reuse, so a training loop stops allocating after warm-up.

    Reuse is safe without events because every kernel of a device goes through one in-order queue: a
    buffer handed out again is only written by commands enqueued after those that read it.
    """

    def __init__(self, device: "Device", limit_bytes: int):
        self.device = device
        self.limit_bytes = limit_bytes
        self._free: dict[int, list] = {}  # size -> buffers; sizes round up to 256 bytes (never 0,
                                          # which OpenCL refuses) so near-equal sizes share buffers
        self.held_bytes = 0       # bytes sitting in the free lists
        self.in_use_bytes = 0     # bytes handed out and not yet returned
        self.peak_bytes = 0       # high-water mark of in_use_bytes
        self._lock = threading.Lock()

    def allocate(self, nbytes: int):
        """``(buffer, size)``: a buffer of at least ``nbytes`` and the size to hand back to release()."""
        size = max(256, (nbytes + 255) & ~255)
        with self._lock:
            bucket = self._free.get(size)
            if bucket:
                self.held_bytes -= size
                self.in_use_bytes = in_use = self.in_use_bytes + size
                if in_use > self.peak_bytes:
                    self.peak_bytes = in_use
                return bucket.pop(), size
        info = self.device.info
        if size > info.max_alloc:
            raise DeviceMemoryError(
                f"cannot allocate {nbytes} bytes on {info.name}: larger than the device's maximum "
                f"single allocation of {info.max_alloc} bytes (global memory {info.global_mem} bytes)")
        try:
            buf = cl.Buffer(self.device.context, cl.mem_flags.READ_WRITE, size)
        except (cl.MemoryError, cl.Error):
            self.empty()
            try:
                buf = cl.Buffer(self.device.context, cl.mem_flags.READ_WRITE, size)
            except (cl.MemoryError, cl.Error) as e:
                raise DeviceMemoryError(
                    f"cannot allocate {nbytes} bytes on {info.name} (global memory {info.global_mem} "
                    f"bytes, max allocation {info.max_alloc} bytes, {self.in_use_bytes} bytes in use): {e}"
                ) from e
        with self._lock:
            self.in_use_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.in_use_bytes)
        return buf, size

    def release(self, buf, size: int):
        with self._lock:
            self.in_use_bytes -= size
            if self.held_bytes + size <= self.limit_bytes:
                self._free.setdefault(size, []).append(buf)
                self.held_bytes += size
                return
        # A pending command may still name it: the next flush releases it after enqueueing them.
        self.device._graveyard.append(buf)

    def empty(self):
        """Give every cached buffer back to the driver."""
        launch.flush(self.device)   # pending commands may name buffers in the free lists
        with self._lock:
            for bucket in self._free.values():
                for buf in bucket:
                    buf.release()
            self._free.clear()
            self.held_bytes = 0


class Device:
    """One OpenCL device with its context, in-order queue, capabilities and buffer pool.

    Use :func:`get_device` rather than the constructor, so that one device has one object.
    """

    def __init__(self, platform_index: int, device_index: int, target: Optional[dict] = None):
        plats = platforms()
        devices = plats[platform_index][2]
        if isinstance(devices, str):
            raise DeviceError(f"platform {platform_index} has {devices}")
        self.cl_device = devices[device_index]
        self.info = describe(self.cl_device, platform_index, device_index)
        self._dtypes = {}   # check_dtype's answers, by what it was asked
        try:
            self.context = cl.Context([self.cl_device])
        except cl.Error as e:
            raise DeviceError(f"device {self.info.selector} {self.info.name} refused a context: {e}") from e
        self._queue = cl.CommandQueue(self.context)
        # Every kernel choice comes from here (target.py): probed once per device and driver, stored
        # beside the kernel binaries, then AXONML_TARGET and the ``target`` overrides on top.
        self.target = _target.find(self.cl_device, self.info, target)
        self.failed_builds: dict = {}   # kernels.first_that_builds: candidates that did not build here
        # launch.py's state: commands not yet handed to the driver (in order), buffers to release
        # after them, upload events in flight, and the lock that serialises setting kernel
        # arguments and enqueueing (clSetKernelArg on a shared kernel object is not thread-safe).
        self._pending = collections.deque()
        self._graveyard: list = []
        self._uploads: list = []
        self.launch_lock = threading.RLock()
        # Pending commands are flushed at this count (and at every read, backward end, optimiser
        # step and synchronize). A GPU gets them sooner: its enqueue is cheap and it idles meanwhile.
        self.flush_every = self.target.flush_every
        self.flush_at = self.flush_every   # lowered to 1 for the launch after a new kernel (kernels.py)
        self.pool = BufferPool(self, limit_bytes=self.info.global_mem // 4)
        self.kernel_cache: dict = {}   # filled by kernels.py

    @property
    def queue(self) -> cl.CommandQueue:
        """The device's in-order queue, after handing it every pending command (see launch.py)."""
        launch.flush(self)
        return self._queue

    def flush(self):
        """Hand pending commands to the driver now (they run in the background; nothing waits)."""
        launch.flush(self)

    # Capabilities, named as the issue and the device query tool name them.
    name = property(lambda self: self.info.name)
    vendor = property(lambda self: self.info.vendor)
    type = property(lambda self: self.info.type)
    compute_units = property(lambda self: self.info.compute_units)
    global_mem = property(lambda self: self.info.global_mem)
    local_mem = property(lambda self: self.info.local_mem)
    max_alloc = property(lambda self: self.info.max_alloc)
    max_work_group_size = property(lambda self: self.info.max_work_group_size)
    # What kernels may use: the target's (an emulated target may take fp64 away).
    fp64 = property(lambda self: self.target.fp64 and self.info.fp64)
    fp16 = property(lambda self: self.target.fp16 and self.info.fp16)
    opencl_c_version = property(lambda self: self.info.opencl_c_version)
    selector = property(lambda self: self.info.selector)

    def supports(self, dtype) -> bool:
        dt = np.dtype(dtype)
        if dt == np.float64:
            return self.fp64
        return dt in (np.dtype(np.float32), np.dtype(np.int32))

    def check_dtype(self, dtype) -> np.dtype:
        """The numpy dtype for ``dtype``; raises naming this device if it cannot compute in it."""
        try:
            dt = self._dtypes[dtype]   # every tensor made checks one: remember the answers
            if dt.char != "d" or self.fp64:
                return dt
        except (KeyError, TypeError):
            pass
        dt = self._check_dtype(dtype)
        try:
            self._dtypes[dtype] = dt
        except TypeError:   # unhashable: not remembered
            pass
        return dt

    def _check_dtype(self, dtype) -> np.dtype:
        from .dtypes import resolve
        bf = resolve(dtype)
        if bf is not None:
            return bf   # bfloat16 (numpy has none): see dtypes.py
        try:
            dt = np.dtype(dtype)
        except TypeError as e:
            raise TypeError(f"dtype: expected one of {', '.join(SUPPORTED_DTYPES)}, got {dtype!r}") from e
        if dt.name not in SUPPORTED_DTYPES:
            raise TypeError(f"dtype: {dt} is not supported; use one of {', '.join(SUPPORTED_DTYPES)}")
        if dt == np.float64 and not self.fp64:
            why = ("its target turns fp64 off (AXONML_TARGET)" if self.info.fp64
                   else "it lacks cl_khr_fp64")
            raise DeviceError(f"float64 is not available on device {self.info.name} ({self.selector}): {why}")
        return dt

    def synchronize(self):
        """Wait until every command enqueued on this device has finished (for timing and tests)."""
        launch.synchronize(self)

    def empty_cache(self):
        """Release the buffers the pool holds for reuse."""
        self.pool.empty()

    def memory_stats(self) -> dict:
        p = self.pool
        return {"in_use_bytes": p.in_use_bytes, "pool_bytes": p.held_bytes, "peak_bytes": p.peak_bytes}

    def __repr__(self):
        return f"Device({self.selector} {self.info.name!r}, {self.info.type}, {self.info.platform!r})"


_devices: dict = {}
_devices_lock = threading.Lock()
_default: Optional[Device] = None


def get_device(selector=None) -> Device:
    """The :class:`Device` for a selector (``"0:1"``, ``"pocl"``, a Device) or the default device."""
    global _default
    if isinstance(selector, Device):
        return selector
    if selector is None and _default is not None:
        return _default
    key = resolve_selector(selector)
    with _devices_lock:
        dev = _devices.get(key)
        if dev is None:
            dev = _devices[key] = Device(*key)
        if selector is None:
            _default = dev
    return dev


def kind_device(kind: str, op: str) -> Device:
    """The first OpenCL device of ``kind`` ("cpu" or "gpu"): torch's ``.cpu()`` and ``.cuda()``.

    Tensors always live on an OpenCL device; ``.cpu()`` is the CPU's OpenCL device (PoCL, Intel's
    runtime), not host memory, so it fails clearly where the machine has none."""
    try:
        return get_device(kind)
    except DeviceError:
        host = ("; to read values on the host use .numpy() or .to_vec()" if kind == "cpu" else "")
        raise DeviceError(f"{op}: no {kind.upper()} OpenCL device on this machine (tensors live on OpenCL "
                          f"devices; `axonml-devices` lists them){host}") from None


def default_device() -> Device:
    """The device the library uses when none is named (chosen on first use)."""
    return get_device(None)


def set_default_device(selector) -> Device:
    """Make ``selector`` the default device for tensors created without ``device=``."""
    global _default
    _default = get_device(selector)
    return _default


def empty_cache(device=None):
    """Release the buffers the pool of ``device`` (default: every device in use) keeps for reuse."""
    for dev in ([get_device(device)] if device is not None else list(_devices.values())):
        dev.empty_cache()
