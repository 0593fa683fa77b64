"""Render Mako templates from ``cl_kernels/`` into OpenCL C, build once, keep the kernels.

A kernel is identified by ``(device, template, kernel name, template parameters)``. The first request
renders and builds; later ones are a dictionary lookup. Across processes the built binaries stay on
disk (our own checked binary cache, see ``binary_cache_dir``), so a second process does not run the
OpenCL compiler again. Every build is checked (:func:`build`), and a kernel family that has choices
falls back through :func:`first_that_builds`; the choices themselves come from ``device.target``.

>>> from axonml_autograd.device import default_device
>>> from axonml_autograd.kernels import get_kernel
>>> k = get_kernel(default_device(), "elementwise.cl.mako", "ew", ctype="float", rank=1,
...                kinds=("flat", "flat"), names=("a",), scalars=(), expr="a", types=())
>>> k.function_name
'ew'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import pyopencl as cl
from mako.lookup import TemplateLookup
from mako.template import Template

from . import launch as _launch
from .dtypes import bfloat16 as _bfloat16


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
def _lookup() -> TemplateLookup:
    # Templates import the shared preamble (cl_kernels/common.mako) by file name: a lookup finds it
    # next to them, in a source checkout and in an installed package alike.
    return TemplateLookup(directories=[str(_template_dir())], strict_undefined=True)


@lru_cache(maxsize=None)
def _template(name: str) -> Template:
    path = _template_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"kernel template {name!r} not found in {path.parent}")
    return _lookup().get_template(name)


COMMON = "common.mako"


def template_source(name: str) -> str:
    """The text a rendering of ``name`` depends on: the template and the shared preamble it imports
    (for keys of what was measured or probed with it, so that a change to either measures again)."""
    return _template(name).source + _template(COMMON).source


# bool is stored as one byte per element (uchar: OpenCL kernels may not take bool pointers), always 0 or 1.
# The 16-bit floats are storage types only: "half" is float16 in memory (read with vload_half, written
# with vstore_half_rte, no cl_khr_fp16 needed) and "bf16" bfloat16's raw bits (a ushort). Kernels compute
# on them in float; the elementwise template and the reduce template's sums read and write them, matmul
# reads them, and so does the softmax template's cross-entropy, writing their gradient (HALF_TEMPLATES;
# conversions in common.mako and cl_kernels/half.mako). The other ops run
# their float32 kernels on float32 copies and round once (float32_working_copies below, or an astype at
# the op's entry); a template still asked to build for a 16-bit type is refused with a TypeError naming
# the op (get_kernel): the recurrent kernels so far.
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int32): "int",
          np.dtype(np.int64): "long", np.dtype(np.bool_): "uchar", np.dtype(np.float16): "half"}
HALF_CTYPES = {"half": "float16", "bf16": "bfloat16"}
HALF_TEMPLATES = ("elementwise.cl.mako", "matmul.cl.mako", "reduce.cl.mako", "softmax.cl.mako")


def ctype(dtype) -> str:
    """The OpenCL C type name of a numpy dtype (or of bfloat16: "bf16", its bits as a ushort)."""
    if dtype is _bfloat16:
        return "bf16"
    return CTYPES[np.dtype(dtype)]


def _refuse_half(template, params):
    """A TypeError for a kernel template that has no 16-bit form yet, asked for one."""
    if template in HALF_TEMPLATES:
        return
    for v in params.values():
        for t in (v if isinstance(v, tuple) else (v,)):
            if isinstance(t, str) and t in HALF_CTYPES:
                op = template.split(".")[0]
                raise TypeError(f"{op}: {HALF_CTYPES[t]} tensors are not supported by {op} yet (16-bit "
                                "tensors work with elementwise ops, reductions, softmax, matmul, conv, pools, "
                                "norms, losses, indexing and sorting so far); convert with .float() first")


def float32_working_copies(dtype, args: dict):
    """For a launch in a 16-bit float ``dtype``: (float32, ``args`` with each 16-bit Tensor replaced by a
    float32 copy, the originals by name); for any other dtype (dtype, args, None). After launching the
    float32 kernel, :func:`write_back` rounds what it wrote into the 16-bit tensors, once. This is how
    the templates without a 16-bit form (conv, pools, norms...) run on float16/bfloat16 tensors."""
    if dtype.itemsize != 2 or dtype.kind != "f":
        return dtype, args, None
    from .tensor import Tensor   # (the array layer imports kernels)
    originals = {k: v for k, v in args.items() if isinstance(v, Tensor) and v.dtype == dtype}
    copies = dict(args, **{k: v.astype("float32") for k, v in originals.items()})
    return np.dtype(np.float32), copies, originals


def write_back(kernel, copies: dict, originals) -> None:
    """Round the float32 copies the kernel wrote (its non-const buffers) into their 16-bit originals."""
    if not originals:
        return
    for p in signature(kernel).params:
        if p.kind == "buffer" and not p.const and p.name in originals:
            originals[p.name].copy_(copies[p.name])


def render(template: str, **params) -> str:
    """The OpenCL C source of ``template`` rendered with ``params``."""
    return _template(template).render(**params)


_build_lock = threading.Lock()
_build_count = 0        # programs made in this process (compiled, or loaded from the binary cache)
_compile_count = 0      # of those, compiled from source


def source_dir() -> Path:
    """A private directory (mode 0700, under the user's cache directory) for the rendered sources of
    failed builds, so that an error can point at a file with line numbers."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "axonml_autograd" / "failed_sources"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)   # mkdir's mode is masked by umask, and an older directory may be wider
    return path


def _source_path(source: str) -> Optional[Path]:
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    try:
        path = source_dir() / f"{digest}.cl"
        # Written afresh each time (never through a link another user could have planted).
        fd = os.open(path.with_suffix(f".{os.getpid()}.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(path.with_suffix(f".{os.getpid()}.tmp"), path)
        return path
    except OSError:
        return None   # the error still carries the build log


def binary_cache_dir() -> Optional[Path]:
    """Where built program binaries are kept between processes (None when AXONML_KERNEL_CACHE is 0, off,
    false, no or none: such a word is a switch, not a directory to create)."""
    setting = os.environ.get("AXONML_KERNEL_CACHE")
    if setting is not None and setting.strip().lower() in ("0", "off", "false", "no", "none"):
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "axonml_autograd" / "kernels"


def read_store(path: Optional[Path]) -> dict:
    """A JSON store beside the kernel binaries (device targets, tuned choices), or {} when there is
    none (``path`` None: caching is off) or it is missing, unreadable or half-written by a crash."""
    try:
        return json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}


def write_store(path: Optional[Path], entries: dict):
    """Replace the JSON store at ``path`` atomically; a read-only cache directory costs a
    re-measurement next time, nothing else."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def _binary_path(device, source: str, options) -> Optional[Path]:
    root = binary_cache_dir()
    if root is None:
        return None
    d = device.cl_device
    ident = "\0".join([d.platform.name, d.platform.version, d.name, d.driver_version, " ".join(options), source])
    return root / (hashlib.sha256(ident.encode()).hexdigest() + ".bin")


def _options(options) -> bytes:
    return " ".join(options).encode()


def _log(device, prog) -> str:
    try:
        return (prog.get_build_info(device.cl_device, cl.program_build_info.LOG) or "").strip()
    except (cl.Error, RuntimeError):
        return "<no build log>"


def _kernel_names(prog) -> set:
    try:
        return {n for n in prog.get_info(cl.program_info.KERNEL_NAMES).split(";") if n}
    except (cl.Error, RuntimeError):
        return set()


def _quiet(build):
    # pyopencl turns any build log into a CompilerWarning, and some drivers (Intel's) always write
    # one: a build that succeeded must not warn (under ``python -W error`` every op would fail).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cl.CompilerWarning)
        return build()


def _load_binary(device, path: Path, options, names):
    # A platform's own source cache (PoCL's) still preprocesses the source to find its entry, ~40 ms
    # a program; loading our own copy of the binary skips that. A binary is checked as a build is:
    # one without the kernels asked for (stored by an older version, or refused by a new driver) is
    # deleted and the source compiled again.
    try:
        binary = path.read_bytes()
        prog = cl._cl._Program(device.context, [device.cl_device], [binary])
        _quiet(lambda: prog.build(_options(options), [device.cl_device]))
    except (OSError, cl.Error, RuntimeError):
        prog = None
    if prog is None or not names <= _kernel_names(prog):
        try:
            path.unlink()
        except OSError:
            pass
        return None
    return prog


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


def _what(template, params) -> str:
    if template is None:
        return "source"
    shown = ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()) if k != "expr" and len(repr(v)) < 60)
    return f"{template}({shown})"


def build(device, source: str, options=(), names=(), what: Optional[str] = None) -> cl.Program:
    """Build ``source`` for ``device`` and check it holds the kernels ``names``.

    A build is accepted only when the compiler succeeded *and* the program holds every kernel asked
    for (a driver may "succeed" with an empty program). Otherwise :class:`KernelBuildError` names
    ``what`` was built, the device, the missing kernels and the build log; nothing of a failed build is
    kept, in memory or in the binary cache. pyopencl's own binary cache is not used (a binary it
    stored may be refused after a driver change, and it fails with a KeyError then): ours is checked.
    """
    global _build_count, _compile_count
    names = set(names)
    key = ("program", source, tuple(options))
    cache = device.kernel_cache
    prog = cache.get(key)
    if prog is not None and names <= _kernel_names(prog):
        return prog
    what = what or "source"
    with _build_lock:
        prog = cache.get(key)
        if prog is None:
            path = _binary_path(device, source, options)
            prog = _load_binary(device, path, options, names) if path is not None and path.exists() else None
            if prog is None:
                prog = cl._cl._Program(device.context, source)
                try:
                    _quiet(lambda: prog.build(_options(options), [device.cl_device]))
                except (cl.Error, RuntimeError) as e:
                    raise _build_error(device, what, source, f"the compiler failed:\n{e}") from e
                _compile_count += 1
                missing = names - _kernel_names(prog)
                if missing or not _kernel_names(prog):
                    raise _build_error(device, what, source,
                                       f"the build succeeded but the program holds no kernel "
                                       f"{', '.join(sorted(missing)) or '(none at all)'}; "
                                       f"build log:\n{_log(device, prog) or '(empty)'}")
                if path is not None:
                    _store_binary(prog, path)
            prog = cache[key] = cl.Program(prog)   # pyopencl's wrapper: kernels as attributes
            _build_count += 1
    missing = names - _kernel_names(prog)
    if missing:
        raise _build_error(device, what, source, f"the program holds no kernel {', '.join(sorted(missing))}")
    return prog


def _build_error(device, what, source, why) -> "KernelBuildError":
    path = _source_path(source)
    where = f"; rendered source: {path}" if path is not None else ""
    return KernelBuildError(f"kernel build of {what} failed on {device.name} ({device.info.platform}, "
                            f"{device.target.describe()}){where}\n{why}")


def get_kernel(device, template: str, name: str, options=(), local: int = 0, **params) -> cl.Kernel:
    """The built kernel ``name`` from ``template`` rendered with ``params`` (all hashable).

    ``local``: the work-group size it will be launched with; a kernel the device allows fewer
    work-items (registers, local memory) raises :class:`KernelBuildError`, as a failed build does.
    """
    key = (template, name, tuple(options), tuple(sorted(params.items())))
    knl = device.kernel_cache.get(key)
    if knl is None:
        _refuse_half(template, params)
        _check_width(device, template, params)
        knl = _kernel_of(device, key, render(template, **params), name, options, _what(template, params))
    if local > 1:
        allowed = kernel_work_group_size(device, knl)
        if allowed < local:
            raise KernelBuildError(f"kernel {_what(template, params)} on {device.name}: launched with "
                                   f"{local} work-items but the device allows this kernel {allowed}")
    return knl


def _check_width(device, template, params):
    # A width the target's probe saw fail is refused before it reaches the compiler: some drivers do
    # not survive such a build (PoCL 3 aborts at exit after an empty "successful" one).
    width = params.get("vw") or params.get("vector")
    ct = params.get("ctype")
    if width and ct in ("float", "double") and not device.target.builds_width(ct == "double" and np.float64 or np.float32, width):
        seen = device.target.widths_double if ct == "double" else device.target.widths_float
        raise KernelBuildError(f"kernel build of {_what(template, params)} refused on {device.name}: "
                               f"{width}-wide {ct} vectors did not build and run right in the target's probe "
                               f"(working widths: {', '.join(map(str, seen))})")


def fit_local(device, knl, wanted: int) -> int:
    """``wanted`` work-items per group, or fewer (a power of two) where this built kernel allows fewer:
    the fallback of kernels whose local size is a launch choice, not a template constant."""
    allowed = min(wanted, kernel_work_group_size(device, knl)) if wanted > 1 else wanted
    return 1 << (max(1, allowed).bit_length() - 1)


def kernel_work_group_size(device, knl) -> int:
    """``CL_KERNEL_WORK_GROUP_SIZE``: how many work-items this built kernel may have on ``device``."""
    key = ("wg", id(knl))
    size = device.kernel_cache.get(key)
    if size is None:
        size = device.kernel_cache[key] = int(knl.get_work_group_info(
            cl.kernel_work_group_info.WORK_GROUP_SIZE, device.cl_device))
    return size


def source_kernel(device, source: str, name: str, options=()) -> cl.Kernel:
    """The built kernel ``name`` of OpenCL C ``source`` (a user's own, see ``custom.Kernel``), cached
    per device like the templates' kernels."""
    key = ("source", source, name, tuple(options))
    knl = device.kernel_cache.get(key)
    if knl is None:
        knl = _kernel_of(device, key, source, name, options, f"kernel {name!r}")
    return knl


def _kernel_of(device, key, source, name, options, what) -> cl.Kernel:
    cache = device.kernel_cache
    prog = build(device, source, options, names=(name,), what=what)
    with _build_lock:   # two threads missing at once must still share one kernel object
        knl = cache.get(key)
        if knl is None:
            knl = cache[key] = cl.Kernel(prog, name)
            knl._axonml_source = source   # its signature is parsed from it when first bound by name
        # A new kernel's first run is slow (the driver specialises it for the launch shape: ~0.1 s
        # on PoCL, in its worker thread). Hand the next launch to the device at once, so that work
        # overlaps the building of the programs that come after it instead of waiting for a flush.
        device.flush_at = 1
    return knl


class KernelFallbackWarning(UserWarning):
    """A kernel family's first choice did not build on a device; a narrower or simpler one is used."""


def first_that_builds(device, family: str, candidates, make, quiet: bool = False):
    """``make(candidate)`` for the first of ``candidates`` that builds on ``device``: the one fallback
    path of every kernel family (matmul blocked at the target's width, narrower widths, then tiled;
    norms and softmax rows narrower; elementwise and fusion scalar).

    A candidate that raised :class:`KernelBuildError` is remembered per device, so it is not tried
    again in this process; the first fallback of a family is reported once with a
    :class:`KernelFallbackWarning` naming what was chosen (not when ``quiet``: a fallback that is part
    of the design, such as an expression with no vector form). Candidates must be hashable.
    """
    failed = device.failed_builds
    errors = []
    for i, candidate in enumerate(candidates):
        if (family, candidate) in failed:
            errors.append(failed[(family, candidate)])
            continue
        try:
            result = make(candidate)
        except KernelBuildError as e:
            failed[(family, candidate)] = e
            errors.append(e)
            continue
        if i and not quiet and (family, "warned") not in failed:
            failed[(family, "warned")] = True
            first = str(errors[0]).splitlines()[0] if errors else ""
            warnings.warn(f"{family}: {_brief(candidates[0])} does not build on {device.name}, using "
                          f"{_brief(candidate)} ({first})", KernelFallbackWarning, stacklevel=3)
        return result
    raise KernelBuildError(f"{family}: no candidate builds on {device.name} "
                           f"(tried {', '.join(map(_brief, candidates))}); first error: "
                           + (str(errors[0]) if errors else "none"))


def warn_fallback(device, family: str, fallback: str, error) -> None:
    """Report once per device and family that ``family`` did not build and ``fallback`` is used instead
    (a :class:`KernelFallbackWarning`, as :func:`first_that_builds` reports its own fallbacks)."""
    key = (family, "warned")
    if key not in device.failed_builds:
        device.failed_builds[key] = True
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        warnings.warn(f"{family}: does not build on {device.name}, using {fallback} ({first})",
                      KernelFallbackWarning, stacklevel=3)


def _brief(candidate) -> str:
    if isinstance(candidate, tuple) and all(isinstance(c, tuple) and len(c) == 2 for c in candidate):
        return "{" + ", ".join(f"{k}={v}" for k, v in candidate) + "}"
    return repr(candidate)


def round_up(n: int, multiple: int) -> int:
    return ((n + multiple - 1) // multiple) * multiple


def launch(device, kernel: cl.Kernel, global_size, local_size, *args, **named):
    """Enqueue ``kernel`` through the one launch path, its arguments given by name (``named``: see
    :func:`bind`) or, for a kernel of no template (a test's, a tool's), in order (``args``: buffers
    and numpy scalars).

    Never waits (see :func:`axonml_autograd.launch.kernel`).
    """
    if named:
        if args:
            raise TypeError(f"kernel {kernel.function_name}: arguments go by name or in order, not both")
        _launch.kernel(device, kernel, global_size, local_size, signature(kernel).bind(named), packed=True)
    else:
        _launch.kernel(device, kernel, global_size, local_size, args)


# -- signatures: arguments by name ------------------------------------------------------------------
# A kernel declares its arguments once, in its OpenCL signature; callers name them and the signature
# puts them in order, packs each scalar to the declared C type and checks that each buffer holds
# the declared element type. The parse is done once per (source, kernel) and kept on the kernel
# object, so a launch costs a dictionary look-up and one C-level pack per scalar.

# Scalar parameter types: the numpy type a value becomes, and its struct format (native order: the
# device reads kernel arguments as the host lays them out, as numpy's tobytes does).
SCALAR_TYPES = {"float": np.float32, "double": np.float64, "int": np.int32, "uint": np.uint32, "long": np.int64,
                "ulong": np.uint64, "char": np.int8, "uchar": np.uint8, "short": np.int16, "ushort": np.uint16}
_FORMATS = {"float": "=f", "double": "=d", "int": "=i", "uint": "=I", "long": "=q", "ulong": "=Q", "char": "=b",
            "uchar": "=B", "short": "=h", "ushort": "=H"}
_QUALIFIERS = {"__global", "global", "__constant", "constant", "const", "restrict", "__restrict",
               "volatile", "__private", "private", "unsigned", "__local", "local", "*"}


class Param:
    """One kernel parameter: ``kind`` is "buffer" (a __global or __constant pointer), "local" (a
    __local pointer: its size in bytes is the argument) or "scalar"; ``ctype`` the scalar or pointee
    type with typedefs resolved (``T`` -> "float"); ``const``: a buffer the kernel only reads."""

    __slots__ = ("name", "kind", "ctype", "const")

    def __init__(self, name, kind, ctype, const):
        self.name, self.kind, self.ctype, self.const = name, kind, ctype, const

    def __repr__(self):
        star = " *" if self.kind != "scalar" else " "
        return f"{'__local ' if self.kind == 'local' else ''}{'const ' if self.const else ''}{self.ctype}{star}{self.name}"


def _strip_comments(source: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", source, flags=re.S)


@lru_cache(maxsize=None)
def parse_signature(source: str, name: str) -> "Signature":
    """The parameters of ``__kernel void name(...)`` in OpenCL C ``source``, typedefs resolved.

    >>> parse_signature("typedef float T; __kernel void f(__global T *y, const long n) {}", "f").params
    [float *y, const long n]
    """
    text = _strip_comments(source)
    m = re.search(r"(?:\b__kernel|\bkernel)\b[^;{]*?\bvoid\s+" + re.escape(name) + r"\s*\(", text)
    if m is None:
        raise ValueError(f"kernel {name!r}: no `__kernel void {name}(...)` in the source")
    depth, end = 1, m.end()
    while depth and end < len(text):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        end += 1
    typedefs = dict((alias, base) for base, alias in
                    re.findall(r"\btypedef\s+((?:unsigned\s+)?\w+)\s+(\w+)\s*;", text))
    params = []
    for k, decl in enumerate(p.strip() for p in text[m.end():end - 1].split(",")):
        if not decl or decl == "void":
            continue
        words = re.findall(r"[A-Za-z_]\w*|\*", decl)
        types = [w for w in words[:-1] if w not in _QUALIFIERS]
        ctype = types[0] if types else "int"
        for _ in range(8):   # typedef chains (T -> float)
            ctype = typedefs.get(ctype, ctype)
        if ctype.startswith("unsigned "):
            ctype = "u" + ctype.split()[1]
        if "unsigned" in words and ctype in ("int", "long", "char", "short"):
            ctype = "u" + ctype
        const = "const" in words or "__constant" in words or "constant" in words
        if "*" in words:
            local = "__local" in words or "local" in words
            params.append(Param(words[-1], "local" if local else "buffer", ctype, const))
        elif ctype in SCALAR_TYPES:
            params.append(Param(words[-1], "scalar", ctype, True))
        else:
            raise ValueError(f"kernel {name!r}: parameter {k} ({decl!r}) has a type that cannot be passed "
                             f"(scalars: {', '.join(SCALAR_TYPES)}; or a pointer)")
    return Signature(name, params)


# What a buffer parameter accepts, by pointee: tensors of that element type. A 32- or 64-bit
# integer pointee takes either signedness (the device state tables are int32 tensors of uint words).
_POINTEES = {"float": ("float32",), "double": ("float64",), "int": ("int32", "uint32"),
             "uint": ("uint32", "int32"), "long": ("int64", "uint64"), "ulong": ("uint64", "int64"),
             "char": ("int8", "uint8", "bool"), "uchar": ("uint8", "bool", "int8"), "short": ("int16", "uint16"),
             "ushort": ("uint16", "int16", "float16", "bfloat16"),   # 16-bit floats as their bits
             "half": ("float16",)}


def _pointee_dtype(name):
    return _bfloat16 if name == "bfloat16" else np.dtype(name)


class Signature:
    """A kernel's parameters in order, and how each named value becomes its argument.

    :meth:`bind` turns ``{name: value}`` into the positional argument list: a Tensor (its element type
    checked against the pointer's) or a ``pyopencl.Buffer`` for a buffer, a number for a scalar
    (packed to the declared type: a ``long`` takes any int64), a byte count for a ``__local``
    pointer. A name the kernel does not declare may be given as None: an optional argument that
    this rendering of the template left out (a layer norm without weight).
    """

    def __init__(self, name: str, params):
        self.name = name
        self.params = list(params)
        self.index = {p.name: i for i, p in enumerate(self.params)}
        if len(self.index) != len(self.params):
            raise ValueError(f"kernel {name!r}: two parameters share a name")
        self._packers = [(p.name, self._packer(p)) for p in self.params]

    def __repr__(self):
        return f"{self.name}({', '.join(map(repr, self.params))})"

    def _packer(self, p):
        if p.kind == "scalar":
            return struct.Struct(_FORMATS[p.ctype]).pack   # C-level; a wrong value raises, see _slow_bind
        if p.kind == "local":
            return _local_bytes
        Buffer = cl.Buffer
        accepted = frozenset(_pointee_dtype(d) for d in _POINTEES.get(p.ctype, ()))

        def pack(v):
            if v.__class__ is Buffer:
                return v
            if v.dtype not in accepted:   # not a Tensor (AttributeError) or the wrong one: _slow_bind says
                raise TypeError
            return v.buffer
        return pack

    def bind(self, values: dict) -> list:
        """The argument list of ``values`` (``{parameter name: value}``), in the kernel's order."""
        try:
            args = [pack(values[name]) for name, pack in self._packers]
        except Exception:   # a missing name, a wrong kind, a number that does not fit: find and say which
            args = self._slow_bind(values)
        if len(values) != len(args):
            self._check_extra(values)
        return args

    def partial(self, values: dict, later) -> "callable":
        """A function of the values of the parameters named in ``later`` (in that order) giving the
        whole argument list, every other one bound now from ``values``: for a launch whose scalars
        are fixed when its plan is made and whose buffers change from call to call (matmul)."""
        later = tuple(later)
        for n in later:
            if n not in self.index:
                raise TypeError(f"kernel {self.name}: no parameter {n!r} to bind later; it takes "
                                f"{', '.join(self.index)}")
        template = self.bind({**values, **{n: _Later for n in later}})
        slots = [(self.index[n], self._packers[self.index[n]][1]) for n in later]

        def fill(*late):
            args = template.copy()
            try:
                for (i, pack), v in zip(slots, late):
                    args[i] = pack(v)
            except Exception:
                self._slow_bind({**values, **dict(zip(later, late))})   # raises with the reason
                raise
            return args
        return fill

    def _check_extra(self, values):
        extra = [n for n, v in values.items() if n not in self.index and v is not None]
        if extra:
            raise TypeError(f"kernel {self.name}: no parameter {extra[0]!r}; it takes {', '.join(self.index)}")

    def _slow_bind(self, values) -> list:
        """:meth:`bind` checking each value on its own: the reason for a failure, naming the kernel
        and the argument; and the rarer values the fast path leaves out (a float beyond float32
        becomes inf, as numpy makes it; an integral float for an integer)."""
        args = []
        for p, (name, pack) in zip(self.params, self._packers):
            if name not in values or values[name] is None:
                raise TypeError(f"kernel {self.name}: missing argument {name!r} ({p!r})")
            v = values[name]
            if v is _Later:
                args.append(None)
                continue
            if p.kind == "buffer":
                args.append(self._buffer(p, v))
            elif p.kind == "local":
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                    raise TypeError(f"kernel {self.name}: argument {name!r} ({p!r}) is __local; give its "
                                    f"size in bytes, got {v!r}")
                args.append(cl.LocalMemory(int(v)))
            else:
                args.append(self._scalar(p, v, pack))
        return args

    def _buffer(self, p, v):
        if isinstance(v, cl.MemoryObjectHolder):
            return v
        dtype = getattr(v, "dtype", None)
        if dtype is None or not hasattr(v, "buffer"):
            raise TypeError(f"kernel {self.name}: argument {p.name!r} ({p!r}) is a pointer; give a Tensor "
                            f"or a Buffer, got {type(v).__name__}")
        if dtype.name in _POINTEES.get(p.ctype, ()):
            return v.buffer
        raise TypeError(f"kernel {self.name}: argument {p.name!r} ({p!r}) points to {p.ctype}; got a "
                        f"{dtype} tensor")

    def _scalar(self, p, v, pack):
        dt = np.dtype(SCALAR_TYPES[p.ctype])
        if isinstance(v, (bool, np.bool_)) and dt.kind in "iu":
            v = int(v)
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
            raise TypeError(f"kernel {self.name}: argument {p.name!r} ({p!r}) is a scalar; give a number, "
                            f"got {type(v).__name__}")
        if dt.kind in "iu":
            if isinstance(v, (float, np.floating)) and not float(v).is_integer():
                raise TypeError(f"kernel {self.name}: argument {p.name!r} ({p!r}) is an integer; got {v!r}")
            info = np.iinfo(dt)
            if not info.min <= int(v) <= info.max:
                raise ValueError(f"kernel {self.name}: argument {p.name!r} ({p!r}) holds "
                                 f"[{info.min}, {info.max}]; {v!r} does not fit")
            return pack(int(v))
        try:
            return pack(v)
        except OverflowError:
            with np.errstate(over="ignore"):
                return dt.type(v).tobytes()   # beyond the type's range: inf, as numpy converts it


class _Later:
    """A placeholder for an argument that :meth:`Signature.partial` fills at each launch."""


def _local_bytes(v):
    if v.__class__ is not int or v <= 0:
        raise TypeError
    return cl.LocalMemory(v)


def signature(kernel) -> Signature:
    """The :class:`Signature` of a kernel built by :func:`get_kernel` or :func:`source_kernel`
    (parsed from its source on first use, then kept on the kernel object)."""
    try:
        return kernel._axonml_signature
    except AttributeError:
        pass
    source = getattr(kernel, "_axonml_source", None)
    if source is None:
        try:
            source = kernel.program.get_info(cl.program_info.SOURCE)
        except (cl.Error, RuntimeError):
            source = ""
        if not source:
            raise ValueError(f"kernel {kernel.function_name}: its source is unknown (built outside kernels.py "
                             "from a binary); pass its arguments in order")
    sig = kernel._axonml_signature = parse_signature(source, kernel.function_name)
    return sig


def bind(kernel, values: dict) -> list:
    """The positional argument list of ``kernel`` (a built kernel or a :class:`Signature`) from
    ``values`` by parameter name: scalars packed to their declared C type, buffers checked against
    their pointee type. A missing or unknown name, or a value of the wrong kind, raises an error that
    names the kernel and the argument.

    >>> from axonml_autograd.device import default_device
    >>> knl = get_kernel(default_device(), "scan.cl.mako", "scan", ctype="float", op="sum", reverse=False,
    ...                  exclusive=False)
    >>> signature(knl)
    scan(const float *x, float *out, const int R, const int inner, const int n)
    >>> bind(knl, dict(n=7, inner=1, R=7, out=None, x=None))
    Traceback (most recent call last):
    ...
    TypeError: kernel scan: missing argument 'x' (const float *x)
    """
    sig = kernel if isinstance(kernel, Signature) else signature(kernel)
    return sig.bind(values)


def build_count() -> int:
    """How many programs this process has made (each a compile or a load from the binary cache)."""
    return _build_count


def compile_count() -> int:
    """How many programs this process has compiled from source (binary cache misses)."""
    return _compile_count


