"""Render Mako templates from ``cl_kernels/`` into OpenCL C, build once, keep the kernels.

A kernel is identified by ``(device, template, kernel name, template parameters)``. The first request
renders and builds; later ones are a dictionary lookup. Across processes the built binaries stay on
disk (pyopencl's cache, or the platform's own where pyopencl defers to it, as it does for PoCL's
``POCL_CACHE_DIR``), so a second process does not run the OpenCL compiler again.

>>> from axonml_autograd.device import default_device
>>> from axonml_autograd.kernels import get_kernel
>>> k = get_kernel(default_device(), "elementwise.cl.mako", "ew", ctype="float", rank=1,
...                kinds=("flat", "flat"), names=("a",), scalars=(), expr="a", types=())
>>> k.function_name
'ew'
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import pyopencl as cl
from mako.template import Template

from . import launch as _launch


class KernelBuildError(RuntimeError):
    """The OpenCL compiler rejected a rendered template; the message holds its log and the source path."""


def _template_dir() -> Path:
    # A source checkout uses its own templates, even when another checkout of the package is installed
    # in editable mode (the installed finder would otherwise answer for axonml_autograd.cl_kernels).
    source = Path(__file__).resolve().parent.parent / "cl_kernels"
    if (source / "matmul.cl.mako").is_file():
        return source
    try:
        from importlib.resources import files
        return Path(str(files("axonml_autograd.cl_kernels")))
    except (ModuleNotFoundError, TypeError):  # running from a source tree that was not installed
        return Path(__file__).resolve().parent.parent / "cl_kernels"


@lru_cache(maxsize=None)
def _template(name: str) -> Template:
    path = _template_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"kernel template {name!r} not found in {path.parent}")
    return Template(filename=str(path), strict_undefined=True)


# bool is stored as one byte per element (uchar: OpenCL kernels may not take bool pointers), always 0 or 1.
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int32): "int",
          np.dtype(np.int64): "long", np.dtype(np.bool_): "uchar"}


def ctype(dtype) -> str:
    """The OpenCL C type name of a numpy dtype."""
    return CTYPES[np.dtype(dtype)]


def render(template: str, **params) -> str:
    """The OpenCL C source of ``template`` rendered with ``params``."""
    return _template(template).render(**params)


_build_lock = threading.Lock()
_build_count = 0        # programs made in this process (compiled, or loaded from the binary cache)
_compile_count = 0      # of those, compiled from source


def _source_path(source: str) -> Path:
    # Rendered sources are written out so that a build error can point at a file with line numbers.
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "axonml_kernels" / f"{digest}.cl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return path


def binary_cache_dir() -> Optional[Path]:
    """Where built program binaries are kept between processes (None when AXONML_KERNEL_CACHE=0)."""
    setting = os.environ.get("AXONML_KERNEL_CACHE")
    if setting == "0":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "axonml_autograd" / "kernels"


def _binary_path(device, source: str, options) -> Optional[Path]:
    root = binary_cache_dir()
    if root is None:
        return None
    d = device.cl_device
    ident = "\0".join([d.platform.name, d.platform.version, d.name, d.driver_version, " ".join(options), source])
    return root / (hashlib.sha256(ident.encode()).hexdigest() + ".bin")


def _load_binary(device, path: Path, options):
    # A platform's own source cache (PoCL's, which pyopencl defers to) still preprocesses the source
    # to find its entry, ~40 ms a program; loading our own copy of the binary skips that.
    try:
        binary = path.read_bytes()
        return cl.Program(device.context, [device.cl_device], [binary]).build(options=list(options))
    except (OSError, cl.Error):
        return None  # missing, unreadable or refused (e.g. a driver update): compile again


def _store_binary(prog, path: Path):
    try:
        binary = prog.get_info(cl.program_info.BINARIES)[0]
        if not binary:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(binary)
        os.replace(tmp, path)   # atomic: a concurrent reader sees the old file or the whole new one
    except (OSError, cl.Error):
        pass  # the cache is an optimisation; a read-only home directory must not break a build


def build(device, source: str, options=()) -> cl.Program:
    """Build ``source`` for ``device``; raises :class:`KernelBuildError` with the build log."""
    global _build_count, _compile_count
    key = ("program", source, tuple(options))
    cache = device.kernel_cache
    prog = cache.get(key)
    if prog is not None:
        return prog
    with _build_lock:
        prog = cache.get(key)
        if prog is None:
            path = _binary_path(device, source, options)
            prog = _load_binary(device, path, options) if path is not None and path.exists() else None
            if prog is None:
                try:
                    prog = cl.Program(device.context, source).build(options=list(options))
                except cl.RuntimeError as e:
                    src_path = _source_path(source)
                    raise KernelBuildError(
                        f"OpenCL build failed on {device.name}; rendered source: {src_path}\n{e}") from e
                _compile_count += 1
                if path is not None:
                    _store_binary(prog, path)
            cache[key] = prog
            _build_count += 1
    return prog


def get_kernel(device, template: str, name: str, options=(), **params) -> cl.Kernel:
    """The built kernel ``name`` from ``template`` rendered with ``params`` (all hashable)."""
    key = (template, name, tuple(options), tuple(sorted(params.items())))
    knl = device.kernel_cache.get(key)
    if knl is None:
        knl = _kernel_of(device, key, render(template, **params), name, options)
    return knl


def source_kernel(device, source: str, name: str, options=()) -> cl.Kernel:
    """The built kernel ``name`` of OpenCL C ``source`` (a user's own, see ``custom.Kernel``), cached
    per device like the templates' kernels."""
    key = ("source", source, name, tuple(options))
    knl = device.kernel_cache.get(key)
    if knl is None:
        knl = _kernel_of(device, key, source, name, options)
    return knl


def _kernel_of(device, key, source, name, options) -> cl.Kernel:
    cache = device.kernel_cache
    prog = build(device, source, options)
    with _build_lock:   # two threads missing at once must still share one kernel object
        knl = cache.get(key)
        if knl is None:
            try:
                knl = cache[key] = getattr(prog, name)
            except (AttributeError, cl.Error) as e:
                raise ValueError(f"the program has no kernel named {name!r}") from e
        # A new kernel's first run is slow (the driver specialises it for the launch shape: ~0.1 s
        # on PoCL, in its worker thread). Hand the next launch to the device at once, so that work
        # overlaps the building of the programs that come after it instead of waiting for a flush.
        device.flush_at = 1
    return knl


def vector_width(device, dtype) -> int:
    """The vector width kernels use for ``dtype`` on ``device``: its preferred width as a power of two
    OpenCL has a type for (16 floats with AVX-512, 8 with AVX2); devices that report 0 or 1 still get
    4-wide so the compiler has something to work with."""
    cl_dev = device.cl_device
    width = (cl_dev.preferred_vector_width_double if np.dtype(dtype) == np.float64
             else cl_dev.preferred_vector_width_float)
    width = int(width or 1)
    return min(16, max(4, 1 << (width.bit_length() - 1)))


def round_up(n: int, multiple: int) -> int:
    return ((n + multiple - 1) // multiple) * multiple


def launch(device, kernel: cl.Kernel, global_size, local_size, *args, dynamic=False):
    """Enqueue ``kernel`` with ``args`` (buffers and numpy scalars) through the one launch path.

    Never waits; returns the command's argument list (see :func:`axonml_autograd.launch.kernel`).
    """
    return _launch.kernel(device, kernel, global_size, local_size, args, dynamic=dynamic)


def build_count() -> int:
    """How many programs this process has made (each a compile or a load from the binary cache)."""
    return _build_count


def compile_count() -> int:
    """How many programs this process has compiled from source (binary cache misses)."""
    return _compile_count


os.environ.setdefault("PYOPENCL_COMPILER_OUTPUT", "0")
