"""Per-device choices measured once and kept on disk, next to the kernel binaries.

A kernel family with several launch shapes (matmul's tile sizes on a GPU, its macro-block size on a
CPU) asks :func:`choose` for one. Measuring happens only when asked for (``AXONML_TUNE=1``, or a
caller passing ``measure=True`` such as ``matmul.tune()``): it times the candidates on a small
problem and stores the winner under the device's identity (platform, device, driver) and the kernel
source's hash, and later processes read it back without measuring. Otherwise a stored choice is
used when there is one and the first candidate (the static choice) when there is not, so a cold
process never spends seconds compiling and timing candidates before its first result.
``AXONML_TUNE=0`` takes the static choice even over a stored one. Every candidate must be correct:
tuning changes speed, never results.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .kernels import binary_cache_dir, read_store, write_store

_lock = threading.Lock()
_memory: dict = {}


def requested() -> bool:
    """Whether the environment asks for candidates to be measured (``AXONML_TUNE=1``)."""
    return os.environ.get("AXONML_TUNE") == "1"


def disabled() -> bool:
    """Whether the environment asks for the static choices only (``AXONML_TUNE=0``)."""
    return os.environ.get("AXONML_TUNE") == "0"


_STORE = "tuning.json"


def store_path() -> Optional[Path]:
    root = binary_cache_dir()
    return None if root is None else root / _STORE


def _device_key(device) -> str:
    d = device.cl_device
    return " | ".join([d.platform.name.strip(), d.name.strip(), d.driver_version.strip()])


def _read() -> dict:
    return read_store(store_path())


def _write(entries: dict):
    write_store(store_path(), entries)


def lookup(device, name: str):
    """The stored choice for ``name`` on ``device``, or None (always None under ``AXONML_TUNE=0``)."""
    if disabled():
        return None
    key = (_device_key(device), name)
    if key in _memory:
        return _memory[key]
    value = _read().get(key[0], {}).get(name)
    if value is not None:
        _memory[key] = value
    return value


def store(device, name: str, value):
    with _lock:
        _memory[(_device_key(device), name)] = value
        entries = _read()
        entries.setdefault(_device_key(device), {})[name] = value
        _write(entries)


def measure(candidates: Sequence, run: Callable, finish: Callable, rounds: int = 3):
    """The candidate whose ``run(candidate)`` (then ``finish()``) has the smallest median time.

    Candidates take turns, one call each per round after one warm-up call each, so a slow moment of
    a shared machine hurts all of them alike.
    """
    times = {i: [] for i in range(len(candidates))}
    for i, c in enumerate(candidates):
        run(c)
    finish()
    for _ in range(rounds):
        for i, c in enumerate(candidates):
            start = time.perf_counter()
            run(c)
            finish()
            times[i].append(time.perf_counter() - start)
    best = min(times, key=lambda i: statistics.median(times[i]))
    return candidates[best]


def same(candidate, stored) -> bool:
    """Whether a candidate is the stored value (JSON turns tuples into lists)."""
    if isinstance(candidate, (list, tuple)):
        return isinstance(stored, (list, tuple)) and list(candidate) == list(stored)
    return candidate == stored


def choose(device, name: str, candidates: Sequence, run: Callable, finish: Callable,
           now: Optional[bool] = None):
    """A stored choice for ``name`` if it is still a candidate; else, when measuring (``now``, by
    default the environment's ``AXONML_TUNE=1``), measure and store; else the first candidate.
    ``now=True`` measures even over a stored choice."""
    if now is None:
        now = requested()
    stored = None if now else lookup(device, name)
    if stored is not None:
        for c in candidates:
            if same(c, stored):
                return c
    if not now or disabled() or len(candidates) == 1:
        return candidates[0]
    best = measure(candidates, run, finish)
    store(device, name, list(best) if isinstance(best, tuple) else best)
    return best
