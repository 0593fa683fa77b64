"""``axonml-devices``: list the OpenCL platforms and devices, say which one the library picks, and
optionally measure each one.

Usage::

    axonml-devices                  # table of every platform and device; * marks the library's pick
    axonml-devices --json           # the same as one JSON array
    axonml-devices --bench          # plus matmul GFLOP/s, a+b GB/s and kernel launch latency
    axonml-devices --bench --quick  # smaller sizes, a few seconds per device
    axonml-devices --device 0:1     # only one device (any AXONML_DEVICE value works)

JSON shape
----------
One array. Every object has the same keys, so a consumer can iterate without checking which kind it is:

``platform`` (str), ``platform_index`` (int), ``device_index`` (int or null), ``selector`` (str or null:
the ``AXONML_DEVICE`` value that picks this device, e.g. ``"0:0"``), ``name``, ``vendor``, ``type``
(``"CPU"``, ``"GPU"``, ``"ACCELERATOR"``, ``"OTHER"``), ``compute_units``, ``global_mem``, ``local_mem``,
``max_alloc`` (bytes), ``max_work_group_size``, ``fp64``, ``fp16`` (bool), ``opencl_c_version``,
``driver_version`` (str), ``preferred_vector_width_float`` (int: what the device reports), ``target``
(null, or the validated device target that every kernel choice comes from: ``strategy``, ``vw_float``,
``vw_double``, ``widths_float``/``widths_double`` (the widths the probe saw work), ``work_group``,
``local_mem``, ``fp64``, ``fp16``, ``compute_units``, ``chunk``, ``items_per_unit``, ``flush_every``,
``origin`` (``"probed"``, ``"stored"`` or ``"default"``) and ``overrides`` (fields ``AXONML_TARGET``
set); see ``axonml_autograd.target``), ``selected`` (bool: the device the library uses when none is
named), and ``error`` (null, or a string saying what went wrong).

Three kinds of object share that shape:

* a working device: every field filled in, ``error`` null;
* a device that refuses a context (or whose info cannot be read): ``selector`` is set, ``error`` says
  why, and the info fields that could not be read are null;
* a platform with zero devices: ``device_index``, ``selector`` and every device field are null,
  ``selected`` is false and ``error`` says ``"no devices ..."``.

With ``--bench`` every object also has ``bench``: null for a platform entry, otherwise an object with
``matmul_n``, ``matmul_gflops``, ``matmul_ms``, ``matmul_error``, ``elementwise_n``, ``elementwise_gbps``,
``elementwise_ms``, ``elementwise_error``, ``launch_enqueue_us``, ``launch_roundtrip_us``, ``launch_op_us``,
``launch_error`` and ``error`` (the device could not be opened at all). A measurement that failed or
is unavailable (``axonml_autograd.matmul`` not importable) is null with its ``*_error`` set.

Problems that concern no single device (no OpenCL at all, an ``AXONML_DEVICE`` that matches nothing)
go to stderr; stdout stays valid JSON (``[]`` when there is nothing to list).

Exit status: 0 when the device in question (``--device``, else the library's pick) works; 1 when there
is no device, the selection rules match nothing, that device refuses a context, or a benchmark on it
failed (matmul merely being unavailable does not count); 2 for bad arguments or an unknown ``--device``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Optional

import numpy as np
import pyopencl as cl

from . import device as _device

INFO_FIELDS = ("name", "vendor", "type", "compute_units", "global_mem", "local_mem", "max_alloc",
               "max_work_group_size", "fp64", "fp16", "opencl_c_version", "driver_version")
TARGET_FIELDS = ("preferred_vector_width_float", "target")

# Sizes for --bench. The quick set exists so the test suite can run the real benchmark in seconds.
FULL = dict(matmul_n=512, elementwise_n=4 * 1024 * 1024, launches=200, repeats=5, budget_s=4.0)
QUICK = dict(matmul_n=128, elementwise_n=256 * 1024, launches=50, repeats=3, budget_s=1.0)

# A kernel that does almost nothing, so its timing is the cost of a launch and not of the work.
_NOOP_SOURCE = """
__kernel void axonml_noop(__global float *x)
{
    if (get_global_id(0) == 0) x[0] += 1.0f;
}
"""


# ------------------------------------------------------------------------------------------------------
# Collecting
# ------------------------------------------------------------------------------------------------------

def _describe_error(e: BaseException) -> str:
    # pyopencl errors print as "routine failed: CODE"; anything else gets its type, since a driver
    # can fail in ways that are not cl.Error and the message alone may be empty.
    if isinstance(e, cl.Error):
        return str(e) or type(e).__name__
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _platform_name(p, pi: int) -> str:
    try:
        return p.name.strip()
    except Exception:  # a listing tool must not die on one bad platform
        return f"platform {pi}"


def _blank_entry(platform: str, pi: int, di: Optional[int]) -> dict:
    entry = {"platform": platform, "platform_index": pi, "device_index": di,
             "selector": None if di is None else f"{pi}:{di}"}
    entry.update({k: None for k in INFO_FIELDS + TARGET_FIELDS})
    entry.update(selected=False, error=None)
    return entry


def _probe_context(cl_device) -> Optional[str]:
    """None when ``cl_device`` accepts a context, else why not."""
    try:
        cl.Context([cl_device])
    except Exception as e:  # drivers reject contexts with cl.Error, broken ones with anything else
        return f"refused a context: {_describe_error(e)}"
    return None


def _target_of(cl_device, info) -> dict:
    """The device's validated target (stored, or probed now) beside what the device reports."""
    from . import target as _target
    out = {"preferred_vector_width_float": int(cl_device.preferred_vector_width_float or 0)}
    try:
        out["target"] = _target.find(cl_device, info).as_dict()
    except Exception as e:   # a target that cannot be found is shown as missing, not a crash
        out["target"] = None
        out["target_error"] = _describe_error(e)
    return out


def selection():
    """``((platform_index, device_index) or None, why it was picked, error or None)``."""
    env = os.environ.get("AXONML_DEVICE")
    ctx = os.environ.get("PYOPENCL_CTX")
    if env:
        why = f"AXONML_DEVICE={env}"
    elif ctx:
        why = f"PYOPENCL_CTX={ctx}"
    else:
        why = "default rule: first GPU, else first CPU"
    try:
        return _device.resolve_selector(), why, None
    except _device.DeviceError as e:
        return None, why, str(e)
    except Exception as e:  # a bug in the selection code is still something to show, not a crash
        return None, why, _describe_error(e)


def collect(only: Optional[tuple] = None, probe: bool = True):
    """Every platform and device as JSON-ready dicts, and the selection as :func:`selection` gives it.

    ``only`` restricts the result to one ``(platform_index, device_index)``. ``probe`` creates (and drops)
    a context per device, which is how a device that refuses one is found before anyone relies on it.
    """
    entries = []
    for pi, p, devices in _device.platforms():
        pname = _platform_name(p, pi)
        if isinstance(devices, str) or not devices:
            # Some ICDs raise DEVICE_NOT_FOUND for an empty platform, others return an empty list.
            if only is None:
                entry = _blank_entry(pname, pi, None)
                entry["error"] = devices if isinstance(devices, str) else "no devices"
                entries.append(entry)
            continue
        for di, d in enumerate(devices):
            if only is not None and (pi, di) != tuple(only):
                continue
            entry = _blank_entry(pname, pi, di)
            try:
                info = _device.describe(d, pi, di)
            except Exception as e:
                entry["error"] = f"could not read device info: {_describe_error(e)}"
                entries.append(entry)
                continue
            entry["platform"] = info.platform
            entry.update({k: getattr(info, k) for k in INFO_FIELDS})
            if probe:
                entry["error"] = _probe_context(d)
                if entry["error"] is None and isinstance(d, cl.Device):
                    entry.update(_target_of(d, info))
            entries.append(entry)
    picked, why, sel_error = selection()
    for entry in entries:
        entry["selected"] = picked is not None and (entry["platform_index"], entry["device_index"]) == tuple(picked)
    return entries, (picked, why, sel_error)


# ------------------------------------------------------------------------------------------------------
# Benchmarking
# ------------------------------------------------------------------------------------------------------

def _median_seconds(fn, sync, repeats: int, budget_s: float) -> float:
    """Median wall time of ``fn(); sync()``; stops early once ``budget_s`` is spent (at least one run)."""
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats and (not times or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bench_matmul(dev, n: int, repeats: int, budget_s: float):
    from .tensor import Tensor
    try:
        from .matmul import matmul
    except ImportError as e:
        return None, None, f"unavailable ({e})"
    rng = np.random.default_rng(0)
    a_host = rng.random((n, n), dtype=np.float32)
    b_host = rng.random((n, n), dtype=np.float32)
    a = Tensor.from_numpy(a_host, device=dev)
    b = Tensor.from_numpy(b_host, device=dev)
    # The warm-up run pays for the kernel build, and its result is checked: a fast wrong kernel
    # must not show up as a good number.
    got = matmul(a, b).numpy()
    want = a_host.astype(np.float64) @ b_host.astype(np.float64)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-3):
        err = float(np.max(np.abs(got - want))) if got.shape == want.shape else f"shape {list(got.shape)}"
        return None, None, f"wrong result (max abs error {err} against numpy)"
    sec = _median_seconds(lambda: matmul(a, b), dev.synchronize, repeats, budget_s)
    return 2.0 * n ** 3 / sec / 1e9, sec * 1e3, None


def _bench_elementwise(dev, n: int, repeats: int, budget_s: float):
    from .tensor import Tensor
    rng = np.random.default_rng(1)
    a_host = rng.random(n, dtype=np.float32)
    b_host = rng.random(n, dtype=np.float32)
    a = Tensor.from_numpy(a_host, device=dev)
    b = Tensor.from_numpy(b_host, device=dev)
    if not np.allclose((a + b).numpy(), a_host + b_host, rtol=1e-6, atol=0):
        return None, None, "wrong result for a + b"
    sec = _median_seconds(lambda: a + b, dev.synchronize, repeats, budget_s)
    return 3 * 4 * n / sec / 1e9, sec * 1e3, None  # two reads and one write of float32


def _bench_launch(dev, launches: int, repeats: int):
    """Median µs to enqueue a tiny kernel, to enqueue it and wait, and to run a 1-element ``a + b``."""
    from . import kernels
    from .tensor import Tensor
    # cl.Kernel rather than attribute access: the program is cached per device and pyopencl warns
    # when one program hands out the same kernel twice.
    knl = cl.Kernel(kernels.build(dev, _NOOP_SOURCE), "axonml_noop")
    x = Tensor.zeros((1,), device=dev)
    for _ in range(10):
        kernels.launch(dev, knl, (1,), None, x.buffer)
    dev.synchronize()

    # Enqueue cost is measured over batches because one enqueue is near the timer's resolution.
    per_enqueue = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(launches):
            kernels.launch(dev, knl, (1,), None, x.buffer)
        dev.flush()   # launches are handed to the driver in batches: count the hand-over too
        per_enqueue.append((time.perf_counter() - t0) / launches)
        dev.synchronize()

    round_trips = []
    for _ in range(launches):
        t0 = time.perf_counter()
        kernels.launch(dev, knl, (1,), None, x.buffer)
        dev.synchronize()
        round_trips.append(time.perf_counter() - t0)

    # The library's own per-op overhead: Python, kernel lookup, allocation from the pool, enqueue.
    y = Tensor.ones((1,), device=dev)
    x + y
    dev.synchronize()
    per_op = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(launches):
            x + y
        per_op.append((time.perf_counter() - t0) / launches)
        dev.synchronize()
    us = 1e6
    return statistics.median(per_enqueue) * us, statistics.median(round_trips) * us, statistics.median(per_op) * us


def bench_device(selector: str, sizes: dict, progress=None) -> dict:
    """Benchmark one device; every failure lands in the result instead of propagating."""
    result = {"matmul_n": sizes["matmul_n"], "matmul_gflops": None, "matmul_ms": None, "matmul_error": None,
              "elementwise_n": sizes["elementwise_n"], "elementwise_gbps": None, "elementwise_ms": None,
              "elementwise_error": None, "launch_enqueue_us": None, "launch_roundtrip_us": None,
              "launch_op_us": None, "launch_error": None, "error": None}
    progress = progress or (lambda what, steps=1: None)
    try:
        dev = _device.get_device(selector)
    except Exception as e:
        result["error"] = _describe_error(e)
        progress(f"cannot open the device: {result['error']}", steps=3)
        return result

    progress(f"matmul {sizes['matmul_n']}")
    try:
        result["matmul_gflops"], result["matmul_ms"], result["matmul_error"] = _bench_matmul(
            dev, sizes["matmul_n"], sizes["repeats"], sizes["budget_s"])
    except Exception as e:
        result["matmul_error"] = _describe_error(e)

    progress(f"a+b {_count(sizes['elementwise_n'])}")
    try:
        result["elementwise_gbps"], result["elementwise_ms"], result["elementwise_error"] = _bench_elementwise(
            dev, sizes["elementwise_n"], sizes["repeats"], sizes["budget_s"])
    except Exception as e:
        result["elementwise_error"] = _describe_error(e)

    progress(f"launch latency x{sizes['launches']}")
    try:
        result["launch_enqueue_us"], result["launch_roundtrip_us"], result["launch_op_us"] = _bench_launch(
            dev, sizes["launches"], sizes["repeats"])
    except Exception as e:
        result["launch_error"] = _describe_error(e)

    # A zero or infinite figure would mean the timer failed, not that the device is that fast;
    # JSON cannot carry inf or nan either.
    for key, err in (("matmul_gflops", "matmul_error"), ("elementwise_gbps", "elementwise_error"),
                     ("launch_enqueue_us", "launch_error"), ("launch_roundtrip_us", "launch_error"),
                     ("launch_op_us", "launch_error")):
        v = result[key]
        if v is not None and not (math.isfinite(v) and v > 0):
            result[key] = None
            result[err] = result[err] or f"{key} measured as {v}"
    return result


def bench_failed(b: Optional[dict]) -> bool:
    """True when a benchmark really failed; matmul missing from this checkout is not a failure."""
    if b is None:
        return False
    matmul_bad = b["matmul_error"] is not None and not b["matmul_error"].startswith("unavailable")
    return bool(b["error"] or matmul_bad or b["elementwise_error"] or b["launch_error"])


# ------------------------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------------------------

def human_bytes(n: Optional[int]) -> str:
    """``3291832320`` -> ``"3.1 GiB"``, ``524288`` -> ``"512 KiB"``."""
    if n is None:
        return "?"
    value, unit = float(n), "B"
    for next_unit in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, next_unit
    text = f"{value:.1f}".removesuffix(".0") if unit != "B" else str(int(value))
    return f"{text} {unit}"


def _count(n: int) -> str:
    for div, suffix in ((1 << 20, "M"), (1 << 10, "K")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


def _yes_no(v) -> str:
    return "?" if v is None else ("yes" if v else "no")


def _num(v, fmt="{:.1f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _grid(header, rows) -> list:
    widths = [max(len(str(r[k])) for r in [header] + rows) for k in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]


def render_table(entries, sel, benches=None) -> str:
    picked, why, sel_error = sel
    header = ("", "AXONML_DEVICE", "name", "vendor", "type", "CUs", "global", "local", "max alloc",
              "max WG", "fp64", "fp16", "OpenCL C")
    rows, row_platform = [], []
    for e in entries:
        if e["selector"] is None:
            continue
        rows.append(("*" if e["selected"] else ("!" if e["error"] else ""), e["selector"], e["name"] or "?",
                     e["vendor"] or "?", e["type"] or "?", _num(e["compute_units"], "{}"),
                     human_bytes(e["global_mem"]), human_bytes(e["local_mem"]), human_bytes(e["max_alloc"]),
                     _num(e["max_work_group_size"], "{}"), _yes_no(e["fp64"]), _yes_no(e["fp16"]),
                     e["opencl_c_version"] or "?"))
        row_platform.append(e["platform_index"])
    # Columns are sized over every platform at once so the groups line up under one header.
    lines_all = _grid(header, rows)
    out = []
    by_platform = {}
    for line, pi in zip(lines_all[1:], row_platform):
        by_platform.setdefault(pi, []).append(line)
    for e in entries:
        pi = e["platform_index"]
        if e["selector"] is None:
            out.append(f"platform {pi}: {e['platform']} -- {e['error']}")
        elif pi in by_platform:
            n = len(by_platform[pi])
            out.append(f"platform {pi}: {e['platform']} ({n} device{'s' if n != 1 else ''})")
            out.append("  " + lines_all[0])
            out.extend("  " + line for line in by_platform.pop(pi))

    out.append("")
    if picked is not None:
        chosen = next((e for e in entries if e["selected"]), None)
        name = f" {chosen['name']}" if chosen and chosen["name"] else ""
        out.append(f"* = the device the library uses: {picked[0]}:{picked[1]}{name} ({why})")
    else:
        out.append(f"no device is selected ({why}): {sel_error}")
    example = next((e for e in entries if e["selector"] and not e["selected"]), None) or \
        next(e for e in entries if e["selector"])
    out.append(f"pick a device with AXONML_DEVICE=<its AXONML_DEVICE column> (e.g. AXONML_DEVICE={example['selector']}) "
               "or a case-insensitive name substring")

    errors = [e for e in entries if e["error"]]
    if errors:
        out.append("")
        out.append("errors:")
        for e in errors:
            where = f"device {e['selector']} {e['name'] or ''}".rstrip() if e["selector"] else \
                f"platform {e['platform_index']} {e['platform']}"
            out.append(f"  {where}: {e['error']}")

    targets = [e for e in entries if e.get("target")]
    if targets:
        out.append("")
        out.append("device targets (what kernels use: probed once, see axonml_autograd.target; "
                   "AXONML_TARGET overrides):")
        for e in targets:
            t = e["target"]
            reported = e["preferred_vector_width_float"]
            note = f" (the device reports {reported})" if reported and reported != t["vw_float"] else ""
            out.append(f"  {e['selector']} {e['name']}: {t['strategy']} strategy; vectors float {t['vw_float']}"
                       f"{note}, double {t['vw_double']}; work-group {t['work_group']}; local memory "
                       f"{human_bytes(t['local_mem'])}; fp64 {_yes_no(t['fp64'])}; fp16 {_yes_no(t['fp16'])}"
                       f" [{t['origin']}{'; overridden: ' + ', '.join(t['overrides']) if t['overrides'] else ''}]")

    if benches is not None:
        out.append("")
        out.extend(_render_bench(entries, benches))
    return "\n".join(out)


def _render_bench(entries, benches) -> list:
    benched = [e for e in entries if e["selector"] in benches]
    if not benched:
        return ["benchmark: no device to measure"]
    b0 = benches[benched[0]["selector"]]
    header = ("", "AXONML_DEVICE", "name", f"matmul {b0['matmul_n']} GFLOP/s",
              f"a+b {_count(b0['elementwise_n'])} GB/s", "enqueue us", "round trip us", "a+b op us")
    rows, notes = [], []
    for e in benched:
        b = benches[e["selector"]]
        rows.append(("*" if e["selected"] else "", e["selector"], e["name"] or "?", _num(b["matmul_gflops"]),
                     _num(b["elementwise_gbps"]), _num(b["launch_enqueue_us"]), _num(b["launch_roundtrip_us"]),
                     _num(b["launch_op_us"])))
        for key in ("error", "matmul_error", "elementwise_error", "launch_error"):
            if b[key]:
                what = key.removesuffix("_error").removesuffix("error") or "device"
                notes.append(f"  {e['selector']} {what}: {b[key]}")
    lines = ["benchmark (float32, median of a few runs after a warm-up):"]
    lines += ["  " + line for line in _grid(header, rows)]
    if notes:
        lines += ["", "benchmark notes:"] + notes
    return lines


# ------------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="axonml-devices",
                                description="List OpenCL platforms and devices and the one axonml-autograd uses.")
    p.add_argument("--json", action="store_true", help="print one JSON array instead of a table")
    p.add_argument("--bench", action="store_true",
                   help="measure matmul GFLOP/s, elementwise GB/s and kernel launch latency per device")
    p.add_argument("--quick", action="store_true", help="with --bench: small sizes (a few seconds per device)")
    p.add_argument("--device", metavar="SEL",
                   help="only this device (an AXONML_DEVICE value: 0:1, or a name substring)")
    return p


def _any_device() -> bool:
    try:
        return any(not isinstance(ds, str) and ds for _pi, _p, ds in _device.platforms())
    except Exception:
        return False


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    emit = lambda text: print(text, flush=True)
    warn = lambda text: print(text, file=sys.stderr, flush=True)

    only = None
    if args.device is not None:
        try:
            only = _device.resolve_selector(args.device)
        except _device.DeviceError as e:
            warn(f"axonml-devices: --device {args.device}: {e}")
            return 2 if _any_device() else 1
        except Exception as e:
            warn(f"axonml-devices: cannot list OpenCL devices: {_describe_error(e)}")
            return 1

    try:
        entries, sel = collect(only)
    except Exception as e:  # e.g. a platform query that fails in a way device.platforms() does not expect
        warn(f"axonml-devices: cannot list OpenCL devices: {_describe_error(e)}")
        if args.json:
            emit("[]")
        return 1
    picked, why, sel_error = sel
    has_devices = any(e["selector"] is not None for e in entries)

    benches = None
    if args.bench and has_devices:
        sizes = QUICK if args.quick else FULL
        targets = [e for e in entries if e["selector"] is not None]
        total, step = 3 * len(targets), [0]
        benches = {}
        for e in targets:
            def progress(what, steps=1, e=e):
                step[0] += steps
                warn(f"[{step[0]}/{total}] {e['selector']} {e['name'] or ''}: {what}...")
            benches[e["selector"]] = bench_device(e["selector"], sizes, progress)

    if args.json:
        if args.bench:
            for e in entries:
                e["bench"] = (benches or {}).get(e["selector"])
        emit(json.dumps(entries, indent=2, allow_nan=False))
    elif has_devices:
        emit(render_table(entries, sel, benches))
    else:
        for e in entries:
            emit(f"platform {e['platform_index']}: {e['platform']} -- {e['error']}")

    if not has_devices:
        warn(f"axonml-devices: no OpenCL device found; {_device.INSTALL_HINT}")
        return 1
    if only is not None:
        target = next((e for e in entries if e["selector"] is not None), None)
    else:
        if picked is None:
            if args.json:
                warn(f"axonml-devices: no device is selected ({why}): {sel_error}")
            return 1
        target = next((e for e in entries if e["selected"]), None)
    if target is None or target["error"]:
        if args.json and target is not None:
            warn(f"axonml-devices: device {target['selector']}: {target['error']}")
        return 1
    if benches is not None and bench_failed(benches.get(target["selector"])):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
