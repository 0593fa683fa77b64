"""The one path by which commands reach a device: kernel launches, fills, copies, uploads and reads.

A command is data: a tuple naming what to enqueue and with which arguments. Eager mode appends it
to the device's pending list and hands the list to the driver in batches; a capture (``capture.py``)
also keeps it, to replay later without the Python that made it. Everything the library enqueues
goes through the functions here, so this module is where ordering, thread safety and capture are
decided, and where a launch counter or profiler hooks in.

Why batches: on a CPU device each enqueue wakes the driver's worker threads, which then compete
with Python for the same cores. Launches that arrive back to back share one wake-up; launches each
separated by ~10 us of Python paid ~10 us more each on PoCL (measured: 22 us vs 10 us per tiny
kernel with 5 us of Python between). Nothing is lost by waiting: results only leave the device
through :func:`read`, which flushes first, and the pending list keeps the program's order, so the
in-order queue sees exactly the sequence it would have seen.

Anyone who enqueues on ``device.queue`` themselves gets the queue after a flush (``Device.queue``
flushes), so their commands run after ours.

>>> from axonml_autograd import Tensor
>>> from axonml_autograd.launch import pending_count
>>> t = Tensor.ones([3]) * 2.0          # enqueued, maybe not yet handed to the driver
>>> t.to_vec()                          # a read flushes first
[2.0, 2.0, 2.0]
>>> pending_count(t.device)
0
"""

from __future__ import annotations

import threading

import numpy as np
import pyopencl as cl

# Command tags. A command is (tag, device, ...) followed by what that tag needs.
KERNEL = 0   # (KERNEL, device, kernel, global_size, local_size, args): args[i] is argument i
FILL = 1     # (FILL, device, buffer, pattern, nbytes)
COPY = 2     # (COPY, device, dst, src, nbytes)
UPLOAD = 3   # (UPLOAD, device, buffer, host_array)
READY = 4    # (READY, device, kernel, global_size, local_size): a kernel object with every argument set
FUSABLE = 5  # (FUSABLE, device, kernel, global_size, local_size, args, plan): a KERNEL command that
             # flush-time fusion may join with its neighbours (``plan``: the elementwise plan, fusion.py)


class CaptureError(RuntimeError):
    """A captured function did something a replay could not repeat (a host read, an upload, ...)."""


# -- capture hook ---------------------------------------------------------------------------------------
# How many threads are recording a capture right now; while 0 the launch functions skip the
# thread-local look-up altogether.
recording_threads = 0
# Bumped by every change to what a capture's module guards read (a module attribute set or deleted, a
# buffer or hook added or removed, a parameter's requires_grad): while it stands still since a
# recording was checked, the replay need not compare the modules' state again.
module_state_epoch = 0
_tls = threading.local()
_count_lock = threading.Lock()


def active_capture():
    """The capture recording in this thread, or None."""
    return getattr(_tls, "capture", None) if recording_threads else None


def set_active_capture(cap):
    """Make ``cap`` (or None) the recording of this thread; returns the previous one."""
    global recording_threads
    previous = getattr(_tls, "capture", None)
    if (previous is None) != (cap is None):
        with _count_lock:
            recording_threads += 1 if cap is not None else -1
    _tls.capture = cap
    return previous


class not_recording:
    """Enqueue without recording inside a capture: work a replay must not repeat (tuning, set-up)."""

    def __enter__(self):
        self._saved = set_active_capture(None)
        return self

    def __exit__(self, *exc):
        set_active_capture(self._saved)
        return False


# -- enqueueing ---------------------------------------------------------------------------------------

def _pack(value):
    # Packed bytes are set with no inspection (~0.1 us); pyopencl inspects a numpy scalar (~7 us).
    if isinstance(value, np.generic):
        return value.tobytes()
    return value


def kernel(device, knl, global_size, local_size, args, packed=False, preset=(), fusable=None):
    """Enqueue ``knl`` with ``args`` (argument i is ``args[i]``: a buffer, bytes or a numpy scalar).

    Arguments past ``len(args)`` keep the values already set on ``knl``: a launch plan sets its shape
    arguments once on a kernel object of its own, and names them in ``preset`` (``(index, bytes)``
    pairs) so that a capture can copy them. ``packed=True`` says every scalar is already bytes.

    A capture records the launch as a kernel object of its own with every argument set, so a replay
    only enqueues it: nothing in a recorded launch changes between replays. What must change from one
    replay to the next (an optimiser's step count and rates, the random generator's position) lives
    in device buffers that the kernels read and advance.
    ``fusable``: the elementwise plan of a launch that a capture may fuse with its neighbours.
    """
    if not packed:
        args = [_pack(a) for a in args]
    if recording_threads:
        cap = getattr(_tls, "capture", None)
        if cap is not None:
            # A copy: a launch plan may refill the same list for its next launch.
            source = (KERNEL, device, knl, global_size, local_size, list(args))
            cap.record(_ready(source, preset), None if fusable is None else (fusable, args), (source, preset))
    pending = device._pending
    if fusable is None:
        pending.append((KERNEL, device, knl, global_size, local_size, args))
    else:   # flush-time fusion may join it with its neighbours (fusion.enqueue_batch)
        pending.append((FUSABLE, device, knl, global_size, local_size, args, fusable))
    if len(pending) >= device.flush_at:
        flush(device)
    return args


def fill(device, buffer, pattern, nbytes):
    """Set ``nbytes`` of ``buffer`` to repetitions of ``pattern`` (a numpy scalar, or an array of a
    power-of-two size up to 128 bytes: the optimiser rates, the generator state): the driver's fill."""
    _submit(device, (FILL, device, buffer, pattern, nbytes))


def copy(device, dst, src, nbytes):
    """Copy ``nbytes`` from buffer ``src`` to buffer ``dst`` on the device."""
    _submit(device, (COPY, device, dst, src, nbytes))


def upload(device, buffer, host):
    """Copy the C-contiguous array ``host`` (which the caller must not change) into ``buffer``."""
    if recording_threads and getattr(_tls, "capture", None) is not None:
        raise CaptureError("capture: the function uploads host data to the device (from_numpy, from_vec, "
                           "a list of targets...); a replay would upload the same values again. Pass "
                           "the data as an argument of the captured function, as a Tensor")
    _submit(device, (UPLOAD, device, buffer, host, host.nbytes))


def read(device, host, buffer):
    """Copy ``buffer`` into the numpy array ``host``; waits for every command before it."""
    cap = active_capture()
    if cap is not None:
        raise CaptureError("capture: the function reads the device (to_vec, numpy, item, repr, anomaly "
                           "mode); a replay runs no Python, so it cannot repeat a read. Return the "
                           "tensor from the captured function and read it after the call")
    flush(device)
    cl.enqueue_copy(device._queue, host, buffer, is_blocking=True)


def read_async(device, host, buffer):
    """Start copying ``buffer`` into ``host`` and return the copy's ``pyopencl.Event`` without waiting.

    The copy runs after every command before it (the queue is in order). ``host`` must stay alive and
    unread until the event completes (``event.wait()``, or a status of COMPLETE). Used by
    ``distributed.DistributedDataParallel``: a gradient bucket leaves the device while the rest of
    backward is still being enqueued.
    """
    cap = active_capture()
    if cap is not None:
        raise CaptureError("capture: the function reads the device (a data-parallel gradient reduction); "
                           "a replay runs no Python, so it cannot repeat a read. Capture the steps "
                           "before and after the reduction separately, or run the step eagerly")
    flush(device)
    return cl.enqueue_copy(device._queue, host, buffer, is_blocking=False)


def _submit(device, cmd):
    if recording_threads:
        cap = getattr(_tls, "capture", None)
        if cap is not None:
            cap.record(cmd)
    pending = device._pending
    pending.append(cmd)
    if len(pending) >= device.flush_at:
        flush(device)


def _ready(cmd, preset):
    """A KERNEL command as a READY one: a new kernel object holding every argument."""
    _, device, knl, gsize, lsize, args = cmd
    own = cl.Kernel(knl.program, knl.function_name)
    set_bytes = getattr(own, "_set_arg_buf", None) or _bytes_setter(own)
    for i, v in preset:
        set_bytes(i, v)
    for i, v in enumerate(args):
        if v.__class__ is bytes:
            set_bytes(i, v)
        else:
            own.set_arg(i, v)
    return (READY, device, own, gsize, lsize)


def pending_count(device) -> int:
    """How many commands wait in ``device``'s pending list (for tests and tools)."""
    return len(device._pending)


def flush(device):
    """Hand every pending command of ``device`` to the driver, in order. Never waits for the device."""
    pending = device._pending
    if not pending and not device._graveyard:
        device.flush_at = device.flush_every
        return
    with device.launch_lock:
        # popleft is atomic: a thread appending meanwhile has its command taken by this loop or the next.
        popleft = pending.popleft
        if len(pending) > 1 and fusion.eager_enabled():
            # Runs of fusable elementwise launches go to the driver as one fused kernel each.
            while pending:
                batch = []
                take = batch.append
                try:
                    while True:
                        take(popleft())
                except IndexError:
                    pass
                fusion.enqueue_batch(device, batch)
        while pending:
            try:
                cmd = popleft()
            except IndexError:
                break
            enqueue(cmd)
        graveyard = device._graveyard
        while graveyard:
            graveyard.pop().release()   # the driver frees it once the commands that use it are done
        device.flush_at = device.flush_every


def enqueue(cmd):
    """Hand one command to the driver now (callers hold the device's launch lock)."""
    tag = cmd[0]
    if tag == READY:
        cl.enqueue_nd_range_kernel(cmd[1]._queue, cmd[2], cmd[3], cmd[4])
    elif tag == KERNEL or tag == FUSABLE:
        device, knl, gsize, lsize, args = cmd[1:6]
        set_arg = knl.set_arg
        set_bytes = getattr(knl, "_set_arg_buf", None) or _bytes_setter(knl)
        for i, v in enumerate(args):
            if v.__class__ is bytes:
                set_bytes(i, v)
            else:
                set_arg(i, v)
        cl.enqueue_nd_range_kernel(device._queue, knl, gsize, lsize)
    elif tag == FILL:
        _, device, buffer, pattern, nbytes = cmd
        cl.enqueue_fill_buffer(device._queue, buffer, pattern, 0, nbytes)
    elif tag == COPY:
        _, device, dst, src, nbytes = cmd
        cl.enqueue_copy(device._queue, dst, src, byte_count=nbytes)
    else:
        _, device, buffer, host, _nbytes = cmd
        _track_upload(device, cl.enqueue_copy(device._queue, buffer, host, is_blocking=False))


def _track_upload(device, event):
    """Hold a non-blocking upload's event until the device has done it.

    pyopencl's event for a non-blocking copy keeps the host array alive, and dropping it waits for the
    copy: dropped at once, every upload would wait for all the work queued before it. Completed
    events are let go on later uploads, by a status query that never blocks.
    """
    pending = device._uploads
    pending.append(event)
    if len(pending) > 8:
        complete = cl.command_execution_status.COMPLETE
        pending[:] = [e for e in pending if e.command_execution_status != complete]


def synchronize(device):
    """Flush, then wait until the device has run everything (for timing, tests and reads)."""
    flush(device)
    device._queue.finish()


def _bytes_setter(knl):
    # pyopencl without the private byte setter: scalars go in as numpy byte arrays instead.
    return lambda index, value: knl.set_arg(index, np.frombuffer(value, dtype=np.uint8))


from . import fusion  # noqa: E402  (fusion uses this module's names at call time, not at import)
