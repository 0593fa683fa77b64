"""Uploads neither wait for the device nor let the caller's array change what was uploaded."""

import threading

import numpy as np
import pyopencl as cl

from axonml_autograd import Tensor


def test_from_numpy_returns_while_the_queue_is_stalled(device):
    # A user event holds the in-order queue: nothing after the marker can run until we release it.
    gate = cl.UserEvent(device.context)
    cl.enqueue_marker(device.queue, wait_for=[gate])
    done = threading.Event()
    made = []

    def upload():
        for k in range(20):   # more than the tracker keeps before pruning
            made.append(Tensor.from_numpy(np.full(1000, float(k), np.float32), device=device))
        done.set()

    worker = threading.Thread(target=upload, daemon=True)
    worker.start()
    returned_while_stalled = done.wait(timeout=10)
    gate.set_status(cl.command_execution_status.COMPLETE)   # always release the queue
    worker.join(timeout=30)
    assert returned_while_stalled, "from_numpy waited for queued device work"
    assert [t.numpy()[0] for t in made] == [float(k) for k in range(20)]


def test_changing_the_source_array_after_from_numpy_does_not_change_the_tensor(device):
    gate = cl.UserEvent(device.context)
    cl.enqueue_marker(device.queue, wait_for=[gate])   # the copy cannot have happened yet
    src = np.arange(5, dtype=np.float32)
    t = Tensor.from_numpy(src, device=device)
    src[:] = -1
    gate.set_status(cl.command_execution_status.COMPLETE)
    assert t.to_vec() == [0.0, 1.0, 2.0, 3.0, 4.0]
