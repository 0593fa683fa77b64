"""Shared fixtures: the device under test (AXONML_DEVICE picks it) and a counter of host round trips."""

import contextlib
import os
import sys

import numpy as np
import pyopencl as cl
import pytest

from axonml_autograd import default_device


@pytest.fixture(scope="session")
def device():
    return default_device()


@pytest.fixture(scope="module")
def gpu_like(device):
    """The same hardware as a second Device object whose target takes the GPU strategy, so the GPU
    launch strategies (one element per work-item, a work-group per row, local-memory reductions, tiled
    matmul) run here too. Its kernel and plan caches are its own: the GPU-shaped launches do not mix
    with the rest of the suite."""
    from axonml_autograd.device import Device
    return Device(device.info.platform_index, device.info.device_index, target={"strategy": "gpu"})


@pytest.fixture(scope="module")
def mpiexec():
    """Open MPI's launcher from the venv (the mpi extra), or a skip saying how to get it."""
    pytest.importorskip("mpi4py")
    path = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no mpiexec next to {sys.executable} (pip install 'axonml-autograd[mpi]')")
    return path


@pytest.fixture
def fp64(device):
    if not device.fp64:
        pytest.skip(f"{device.name} has no cl_khr_fp64")
    return np.float64


class HostTraffic:
    """Counts device->host reads and every wait for the device while active."""

    def __init__(self):
        self.reads = 0
        self.waits = 0


@contextlib.contextmanager
def _count_host_traffic(monkeypatch):
    traffic = HostTraffic()
    copy, finish, wait = cl.enqueue_copy, cl.CommandQueue.finish, cl.Event.wait

    def counting_copy(queue, dest, src, *args, **kwargs):
        if isinstance(src, cl.MemoryObjectHolder) and not isinstance(dest, cl.MemoryObjectHolder):
            traffic.reads += 1
        if kwargs.get("is_blocking", True) and not isinstance(dest, cl.MemoryObjectHolder):
            traffic.waits += 1
        return copy(queue, dest, src, *args, **kwargs)

    def counting_finish(self):
        traffic.waits += 1
        return finish(self)

    def counting_wait(self):
        traffic.waits += 1
        return wait(self)

    monkeypatch.setattr(cl, "enqueue_copy", counting_copy)
    monkeypatch.setattr(cl.CommandQueue, "finish", counting_finish)
    monkeypatch.setattr(cl.Event, "wait", counting_wait)
    yield traffic


@pytest.fixture
def host_traffic(monkeypatch):
    """``with host_traffic() as t: ...`` then assert ``t.reads == 0 and t.waits == 0``."""
    return lambda: _count_host_traffic(monkeypatch)
