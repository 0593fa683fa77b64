"""The device target: every choice a kernel makes about a device, found once, checked, kept on disk.

Device reports are hints, and some are wrong: PoCL on an AVX-512 EPYC reports 16-wide floats while its
LLVM compiles for a CPU without AVX-512 (a float16 program then "builds" with no kernel in it); Intel's
CPU runtime reports width 1 although 16-wide vectors run fastest there. So the target *probes*: it
builds and runs a small kernel at vector widths 16, 8, 4, 2 and 1 and keeps the widest that builds,
holds its kernel and gives exact answers (timing it against the next narrower one, once), and builds a
local-memory kernel to learn how many work-items such a kernel may really have.

Every kernel family takes its choices from ``device.target`` and nowhere else:

=============  =========================================================================================
strategy       ``"cpu"``: a work-item per row or chunk, loops vectorised by hand; ``"gpu"``: a work-item per
               element, a work-group per row, tree reductions in local memory, tiled matmul
vw_float       vector width for float32 kernels (matmul blocking, softmax/norm rows, elementwise loops)
vw_double      the same for float64 (0 when the device has no fp64)
work_group     usable work-group size (power of two) of a kernel with local memory and barriers
local_mem      bytes of local memory a work-group may use
fp64, fp16     cl_khr_fp64 / cl_khr_fp16
compute_units  parallel units; CPU chunking aims at ``items_per_unit`` work-items each
chunk          least elements per work-item on the cpu strategy (long enough to vectorise)
sub_buffers    whether a kernel computes right given a sub-buffer beside a plain buffer (a capture then
               packs its temporaries at offsets of one buffer, capture.py)
own_erf        float32 erf/erfc from cl_kernels/erf.mako instead of the builtins: where the probe saw them
               within 8 ulps of the exact values and clearly faster (PoCL's CPU builtins are library calls)
flush_every    commands gathered before they are handed to the driver
=============  =========================================================================================

The probe runs the first time a device (platform, device, driver version) is used and its result is
stored in ``targets.json`` beside the kernel binaries, so later processes read it back.
``AXONML_TARGET`` overrides fields, for testing and for users who know better::

    AXONML_TARGET="strategy=gpu,work_group=64,local_mem=16384,vw_float=4,fp64=0" python train.py

An override may only narrow what the device has (``work_group`` and ``local_mem`` are capped at the
probed values, ``fp64``/``fp16``/``sub_buffers`` cannot be switched on); vector widths are taken as given, and a
width that does not build falls back to a narrower one with a warning (``kernels.first_that_builds``).

>>> from axonml_autograd.device import default_device
>>> t = default_device().target
>>> t.strategy in ("cpu", "gpu") and t.vw_float in (1, 2, 4, 8, 16)
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyopencl as cl

WIDTHS = (16, 8, 4, 2, 1)
# Changing the probe (or the fields) changes this, so stored targets are probed again.
PROBE_VERSION = 4


def _is_double(dtype) -> bool:
    """Whether ``dtype`` is float64 (bfloat16, which np.dtype does not read, is not)."""
    return getattr(dtype, "itemsize", 8) != 2 and np.dtype(dtype) == np.float64


@dataclass(frozen=True)
class Target:
    """What kernels may assume about one device (see the module docstring for the fields)."""

    strategy: str
    vw_float: int
    vw_double: int
    work_group: int
    local_mem: int
    fp64: bool
    fp16: bool
    compute_units: int
    sub_buffers: bool = False       # kernels may take sub-buffers beside plain buffers (capture's arena)
    own_erf: bool = False           # float32 erf/erfc written out (erf.mako) rather than the builtins
    widths_float: tuple = ()        # every float width the probe saw work (() when unprobed: no limit)
    widths_double: tuple = ()
    chunk: int = 4096
    items_per_unit: int = 8
    flush_every: int = 64
    origin: str = "probed"          # "probed", "stored" (read back from disk) or "default"
    overrides: tuple = ()           # the fields AXONML_TARGET (or the caller) set

    @property
    def is_gpu(self) -> bool:
        return self.strategy == "gpu"

    def vector_width(self, dtype) -> int:
        """The vector width for ``dtype`` (float32 or float64 kernels)."""
        return self.vw_double if _is_double(dtype) else self.vw_float

    def builds_width(self, dtype, width: int) -> bool:
        """Whether the probe saw ``width``-wide vectors of ``dtype`` build and compute right."""
        seen = self.widths_double if _is_double(dtype) else self.widths_float
        return not seen or width in seen

    def vector_widths(self, dtype, least: int = 2):
        """The target's width for ``dtype`` and every narrower power of two down to ``least``: the
        candidates a vectorised family tries in turn (``kernels.first_that_builds``)."""
        w, out = self.vector_width(dtype), []
        while w >= least:
            out.append(w)
            w //= 2
        return out or [least]

    def local_sizes(self, cap: int = 256):
        """:meth:`local_size` and every smaller power of two: the candidates of a kernel whose
        work-group size is a template constant, for a build that allows fewer work-items."""
        n = self.local_size(cap)
        return [n >> k for k in range(n.bit_length())]

    def local_size(self, cap: int = 256) -> int:
        """The largest power of two work-items, at most ``cap``, that a work-group may have."""
        n = max(1, min(cap, self.work_group))
        return 1 << (n.bit_length() - 1)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("overrides", "widths_float", "widths_double"):
            d[k] = list(d[k])
        return d

    def describe(self) -> str:
        """One line for tools and warnings."""
        text = (f"{self.strategy} strategy, vector width float {self.vw_float} / double {self.vw_double}, "
                f"work-group {self.work_group}, local memory {self.local_mem // 1024} KiB, "
                f"fp64 {'yes' if self.fp64 else 'no'}, fp16 {'yes' if self.fp16 else 'no'}")
        if self.overrides:
            text += f" (overridden: {', '.join(self.overrides)})"
        return text


FIELDS = {f.name: f.type for f in dataclasses.fields(Target)
          if f.name not in ("origin", "overrides", "widths_float", "widths_double")}


# ------------------------------------------------------------------------------------------------------
# Overrides
# ------------------------------------------------------------------------------------------------------

def parse_overrides(text: Optional[str]) -> dict:
    """``"strategy=gpu,work_group=64"`` as a dict of typed fields; raises naming a bad field or value."""
    out = {}
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in FIELDS:
            raise ValueError(f"AXONML_TARGET: expected field=value with a field among "
                             f"{', '.join(FIELDS)}, got {part!r}")
        out[key] = _convert(key, value)
    return out


def _convert(key, value):
    kind = FIELDS[key]
    if key == "strategy":
        value = str(value).lower()
        if value not in ("cpu", "gpu"):
            raise ValueError(f"AXONML_TARGET: strategy must be 'cpu' or 'gpu', got {value!r}")
        return value
    if kind in ("bool", bool):
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text not in ("0", "1", "true", "false", "yes", "no"):
            raise ValueError(f"AXONML_TARGET: {key} must be 0 or 1, got {value!r}")
        return text in ("1", "true", "yes")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"AXONML_TARGET: {key} must be an integer, got {value!r}") from None
    if key.startswith("vw_") and number not in WIDTHS + (0,):
        raise ValueError(f"AXONML_TARGET: {key} must be one of {WIDTHS}, got {number}")
    if number < 0 or (number == 0 and not key.startswith("vw_")):
        raise ValueError(f"AXONML_TARGET: {key} must be positive, got {number}")
    return number


def apply_overrides(target: Target, overrides: dict) -> Target:
    """``target`` with ``overrides`` applied; hardware limits may only be narrowed."""
    if not overrides:
        return target
    changes = {k: _convert(k, v) for k, v in overrides.items() if k in FIELDS}
    unknown = set(overrides) - set(FIELDS)
    if unknown:
        raise ValueError(f"target: unknown fields {sorted(unknown)}; fields are {', '.join(FIELDS)}")
    for key in ("work_group", "local_mem", "compute_units"):
        if key in changes:
            changes[key] = min(changes[key], getattr(target, key))
    for key in ("fp64", "fp16", "sub_buffers"):
        if key in changes:
            changes[key] = changes[key] and getattr(target, key)
    if not changes.get("fp64", target.fp64):
        changes["vw_double"] = 0
    if "strategy" in changes and "flush_every" not in changes:
        changes["flush_every"] = 64 if changes["strategy"] == "cpu" else 8
    return dataclasses.replace(target, overrides=tuple(sorted(set(target.overrides) | set(changes))), **changes)


# ------------------------------------------------------------------------------------------------------
# The probe
# ------------------------------------------------------------------------------------------------------

def _quiet_build(context, cl_device, source: str):
    """(program, None), or (None, why) when the build failed, holds no kernel, or the compiler warned:
    the probes are warning-free, so a warning is the compiler saying it cannot do what they ask
    (PoCL: "AVX vector return of type 'float16' without 'avx512f' enabled changes the ABI", after
    which the kernel may crash or spin). A log that is only chatter (Intel's never is empty) is fine."""
    try:
        prog = cl._cl._Program(context, source)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog.build(b"", [cl_device])
        names = prog.get_info(cl.program_info.KERNEL_NAMES)
        log = prog.get_build_info(cl_device, cl.program_build_info.LOG) or ""
    except (cl.Error, RuntimeError) as e:
        return None, f"build failed: {str(e)[:200]}"
    if not names:
        return None, "the program holds no kernel"
    if "warning" in log.lower():
        return None, "the compiler warned: " + log.strip().splitlines()[0][-200:]
    return prog, None


_PROBE_N_VEC, _PROBE_K, _ROUNDS = 4096, 64, 7


def _step_vector(context, queue, cl_device, ctype, vw) -> dict:
    """Build the vector probe at ``vw``, run it, check its numbers exactly, time it."""
    from .kernels import render
    dtype = np.float64 if ctype == "double" else np.float32
    prog, why = _quiet_build(context, cl_device, render("probe.cl.mako", which="vector", ctype=ctype, vw=vw))
    if prog is None:
        return {"ok": False, "why": why}
    rng = np.random.default_rng(0)
    host_a = rng.integers(0, 8, (_PROBE_K, _PROBE_N_VEC)).astype(dtype)
    host_b = rng.integers(0, 4, (_PROBE_K, 4)).astype(dtype)
    mf = cl.mem_flags
    a = cl.Buffer(context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=host_a)
    b = cl.Buffer(context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=host_b)
    out = np.empty((4, _PROBE_N_VEC), dtype)
    d_out = cl.Buffer(context, mf.WRITE_ONLY, out.nbytes)
    n_vec = _PROBE_N_VEC // vw
    knl = cl.Kernel(prog, "probe_vector")
    knl.set_args(a, b, d_out, np.int32(n_vec), np.int32(_PROBE_K))
    cl.enqueue_nd_range_kernel(queue, knl, (n_vec,), None)
    cl.enqueue_copy(queue, out, d_out)
    if not np.array_equal(out, host_b.T @ host_a):
        return {"ok": False, "why": "wrong numbers"}
    return {"ok": True, "seconds": _fastest_round(queue, knl, n_vec)}


def _fastest_round(queue, knl, size) -> float:
    """Seconds of the fastest of ``_ROUNDS`` rounds of four launches of ``knl`` over ``size`` work-items.
    Other work on the machine only ever adds time, so the best round is the closest to the kernel's own
    (a median taken while the machine was busy once kept 4 lanes on a CPU where 8 are faster)."""
    times = []
    for _ in range(_ROUNDS):
        start = time.perf_counter()
        for _rep in range(4):
            cl.enqueue_nd_range_kernel(queue, knl, (size,), None)
        queue.finish()
        times.append(time.perf_counter() - start)
    return min(times)


def _step_work_group(context, queue, cl_device) -> dict:
    """How many work-items a local-memory kernel may have (a power of two), checked by running a tree
    sum at that size."""
    from .kernels import render
    prog, why = _quiet_build(context, cl_device, render("probe.cl.mako", which="local", ctype="float", vw=1))
    if prog is None:
        return {"ok": False, "why": why}
    knl = cl.Kernel(prog, "probe_local")
    allowed = int(knl.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, cl_device))
    n = max(1, min(int(cl_device.max_work_group_size), allowed, 1024))
    n = 1 << (n.bit_length() - 1)
    mf = cl.mem_flags
    while n > 1:
        x = np.arange(2 * n, dtype=np.float32) % 13
        d_x = cl.Buffer(context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=x)
        d_out = cl.Buffer(context, mf.WRITE_ONLY, 8)
        out = np.empty(2, np.float32)
        try:
            knl.set_args(d_x, d_out, cl.LocalMemory(4 * n))
            cl.enqueue_nd_range_kernel(queue, knl, (2 * n,), (n,))
            cl.enqueue_copy(queue, out, d_out)
            if np.array_equal(out, x.reshape(2, n).sum(1)):
                return {"ok": True, "work_group": n}
        except cl.Error:
            pass
        n //= 2
    return {"ok": True, "work_group": 1}


def _step_sub_buffers(context, queue, cl_device) -> dict:
    """Whether a kernel given a plain buffer and a sub-buffer of another computes the right values (a
    driver may refuse the launch, or worse)."""
    from .kernels import render
    prog, why = _quiet_build(context, cl_device, render("probe.cl.mako", which="sub_buffers", ctype="float", vw=1))
    if prog is None:
        return {"ok": False, "why": why}
    align = max(256, int(cl_device.mem_base_addr_align) // 8)
    host = np.arange(64, dtype=np.float32)
    mf = cl.mem_flags
    plain = cl.Buffer(context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=host)
    parent = cl.Buffer(context, mf.READ_WRITE, 4 * align)
    sub = parent.get_sub_region(2 * align, host.nbytes)   # held: a kernel argument does not keep it alive
    knl = cl.Kernel(prog, "probe_sub_buffers")
    knl.set_args(plain, sub)
    cl.enqueue_nd_range_kernel(queue, knl, (64,), (1,))
    out = np.empty_like(host)
    cl.enqueue_copy(queue, out, sub)
    return {"ok": bool(np.array_equal(out, 2 * host))}


_PROBE_N_ERF = 1 << 16


def _step_erf(context, queue, cl_device) -> dict:
    """Whether the written-out float32 erf/erfc (erf.mako) should replace the builtins: within 8 ulps
    of the exact values (special values included) and at most 0.8x the builtins' time."""
    import math
    from .kernels import render
    gpu = bool(cl_device.type & cl.device_type.GPU)
    vw = 1 if gpu else 8   # as the kernels that call erf run: CPU loops 8 floats at a time (or 16: alike)
    prog, why = _quiet_build(context, cl_device, render("probe.cl.mako", which="erf", ctype="float", vw=vw))
    if prog is None:
        return {"ok": False, "why": why}
    x = np.concatenate([np.linspace(-10, 10, _PROBE_N_ERF - 8, dtype=np.float32),
                        np.array([0.0, -0.0, 1e-30, -1e-30, np.inf, -np.inf, np.nan, 0.849], np.float32)])
    exact = np.array([[math.erf(v) for v in x.astype(np.float64)], [math.erfc(v) for v in x.astype(np.float64)]])
    mf = cl.mem_flags
    d_x = cl.Buffer(context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=x)
    d_out = cl.Buffer(context, mf.WRITE_ONLY, 2 * x.nbytes)
    n_vec = len(x) // vw
    items = n_vec if gpu else max(1, int(cl_device.max_compute_units)) * Target.items_per_unit
    chunk = -(-n_vec // items)
    seconds = {}
    for name in ("builtin", "own"):
        knl = cl.Kernel(prog, f"probe_erf_{name}")
        knl.set_args(d_x, d_out, np.int32(n_vec), np.int32(chunk))
        cl.enqueue_nd_range_kernel(queue, knl, (items,), None)
        out = np.empty((2, len(x)), np.float32)
        cl.enqueue_copy(queue, out, d_out)
        if name == "own":
            nan = np.isnan(exact)
            spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
            ulps = np.abs(out.astype(np.float64) - exact)[~nan] / spacing[~nan]
            if not (np.array_equal(np.isnan(out), nan) and ulps.max() <= 8):
                return {"ok": True, "own_erf": False, "why": "the written-out erf is off on this device"}
        seconds[name] = _fastest_round(queue, knl, items)
    return {"ok": True, "own_erf": seconds["own"] < 0.8 * seconds["builtin"], **seconds}


def _steps(ctypes, widths) -> list:
    # Narrow widths first: they are safe, and a wide one that crashes its process then loses nothing.
    return [f"{ct}:{w}" for ct in ctypes for w in sorted(widths)]


def probe(info, step_timeout: float = 20.0) -> Target:
    """Probe the device ``info`` describes, in child processes.

    In children, because a probe is expected to fail on some devices, and some drivers do not
    survive that: PoCL 3 with LLVM 14 keeps the IR of an empty "successful" build and aborts when its
    LLVM context is released (``still have references to IRs``), and running a kernel it built at a
    width its LLVM cannot lower may crash or spin. A child reports each step as it finishes; one that
    dies or hangs (``step_timeout`` seconds without a report) marks the step it was on as failed, and
    a new child goes on with the rest. The library itself then never builds a width the probe saw
    fail.
    """
    ctypes = ("float", "double") if info.fp64 else ("float",)
    # 4, 8 and 16 first (every vector unit has 128 bits); 2 and 1 only where 4 failed.
    # One child per dtype, side by side: builds dominate, and they use a core each.
    batches = [_steps(["float"], (4, 8, 16)) + ["work_group", "sub_buffers", "erf"]] + \
        [_steps([ct], (4, 8, 16)) for ct in ctypes[1:]]
    results = {}
    with ThreadPoolExecutor(len(batches)) as pool:
        for part in pool.map(lambda steps: _run_steps(info, steps, step_timeout), batches):
            results.update(part)
    narrow = [ct for ct in ctypes if not results.get(f"{ct}:4", {}).get("ok")]
    if narrow:
        results.update(_run_steps(info, _steps(narrow, (1, 2)), step_timeout))
    for ct in ctypes:
        if results.get(f"{ct}:4", {}).get("ok"):
            results[f"{ct}:2"] = results[f"{ct}:1"] = {"ok": True, "seconds": float("inf")}
    if "work_group" not in results or not any(r.get("ok") for r in results.values()):
        # No child ran at all: a cautious target from the device's report, not stored.
        return _from_report(info, vw_float=4, vw_double=2 if info.fp64 else 0,
                            work_group=min(256, int(info.max_work_group_size)), origin="default")
    vw_float, widths_float = _choose_width(results, "float")
    vw_double, widths_double = _choose_width(results, "double") if info.fp64 else (0, ())
    work_group = int(results["work_group"].get("work_group", 1))
    return _from_report(info, vw_float=vw_float, vw_double=vw_double, work_group=work_group,
                        widths_float=widths_float, widths_double=widths_double,
                        sub_buffers=bool(results.get("sub_buffers", {}).get("ok")),
                        own_erf=bool(results.get("erf", {}).get("own_erf")))


def _run_steps(info, steps, step_timeout) -> dict:
    """Run probe ``steps`` in children until each has a result (see :func:`probe`)."""
    results, children = {}, 0
    while len(results) < len(steps) and children < len(steps):
        todo = [s for s in steps if s not in results]
        children += 1
        cmd = [sys.executable, "-c", "from axonml_autograd.target import _child; _child()",
               str(info.platform_index), str(info.device_index), *todo]
        try:
            # Not a rank of the caller's MPI job: the launcher's variables stay behind.
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
            with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                  cwd=str(Path(__file__).resolve().parent.parent)) as child:
                timer = threading.Timer(step_timeout, child.kill)
                timer.start()
                try:
                    for line in child.stdout:
                        timer.cancel()
                        timer = threading.Timer(step_timeout, child.kill)
                        timer.start()
                        try:
                            record = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(record, dict) and record.get("step") in todo:
                            results[record["step"]] = record
                finally:
                    timer.cancel()
                    child.kill()
        except OSError:
            break
        unfinished = [s for s in todo if s not in results]
        if unfinished:   # the child died (or hung) on its first unfinished step
            results[unfinished[0]] = {"ok": False, "why": "the probe process died or hung"}
    return results


def _choose_width(results, ctype):
    """(width, working widths): the widest that works, unless the next narrower working one is
    clearly faster (the machines are noisy: a narrower width must win by 15 %)."""
    good = [(w, results[f"{ctype}:{w}"]["seconds"]) for w in WIDTHS if results.get(f"{ctype}:{w}", {}).get("ok")]
    if not good:
        return 1, (1,)
    best, best_time = good[0]
    if len(good) > 1 and good[1][1] < 0.85 * best_time:
        best = good[1][0]
    return best, tuple(w for w, _ in good)


def _from_report(info, origin="probed", **probed) -> Target:
    cpu = info.type == "CPU"
    return Target(strategy="cpu" if cpu else "gpu", local_mem=int(info.local_mem), fp64=bool(info.fp64),
                  fp16=bool(info.fp16), compute_units=max(1, int(info.compute_units)),
                  flush_every=64 if cpu else 8, origin=origin, **probed)


def _child():
    """A probe process: runs the steps named on its command line, printing one JSON line per step,
    and leaves without releasing the driver (see :func:`probe`)."""
    pi, di, steps = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    cl_device = cl.get_platforms()[pi].get_devices()[di]
    context = cl.Context([cl_device])
    queue = cl.CommandQueue(context)
    for step in steps:
        try:
            if step == "work_group":
                record = _step_work_group(context, queue, cl_device)
            elif step == "sub_buffers":
                record = _step_sub_buffers(context, queue, cl_device)
            elif step == "erf":
                record = _step_erf(context, queue, cl_device)
            else:
                ctype, width = step.split(":")
                record = _step_vector(context, queue, cl_device, ctype, int(width))
        except (cl.Error, RuntimeError, ValueError) as e:
            record = {"ok": False, "why": str(e)[:200]}
        record["step"] = step
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
    os._exit(0)


# ------------------------------------------------------------------------------------------------------
# Stored targets
# ------------------------------------------------------------------------------------------------------

_lock = threading.Lock()


def store_path() -> Optional[Path]:
    from .kernels import binary_cache_dir
    root = binary_cache_dir()
    return None if root is None else root / _STORE


def device_key(cl_device) -> str:
    """The identity a stored target belongs to: platform, device, driver and the probe's version."""
    from .kernels import template_source
    probe_hash = hashlib.sha1(template_source("probe.cl.mako").encode()).hexdigest()[:8]
    p = cl_device.platform
    return " | ".join([p.name.strip(), p.version.strip(), cl_device.name.strip(),
                       cl_device.driver_version.strip(), f"probe {PROBE_VERSION}.{probe_hash}"])


_STORE = "targets.json"


def _write(key: str, target: Target):
    from .kernels import read_store, write_store
    record = target.as_dict()
    record.pop("origin"), record.pop("overrides")   # what was probed, not how it was overridden
    entries = read_store(store_path())
    entries[key] = record
    write_store(store_path(), entries)


def _from_record(record: dict) -> Optional[Target]:
    try:
        return Target(**{k: record[k] for k in FIELDS if k in record}, origin="stored",
                      widths_float=tuple(record["widths_float"]), widths_double=tuple(record["widths_double"]))
    except (TypeError, KeyError):
        return None


def find(cl_device, info, overrides: Optional[dict] = None, reprobe: bool = False) -> Target:
    """The target of ``cl_device``: stored, else probed (and stored); then ``AXONML_TARGET`` and
    ``overrides`` applied on top."""
    key = device_key(cl_device)
    with _lock:
        from .kernels import read_store
        target = None if reprobe else _from_record(read_store(store_path()).get(key, {}))
        if target is None:
            target = probe(info)
            if target.origin == "probed":
                _write(key, target)
    env = parse_overrides(os.environ.get("AXONML_TARGET"))
    env.update(overrides or {})
    return apply_overrides(target, env)

