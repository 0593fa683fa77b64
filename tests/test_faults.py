"""Faults: refused allocations, compiler errors, failed optimiser steps and a crash in the middle of save."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyopencl as cl
import pytest

from axonml_autograd import DeviceMemoryError, KernelBuildError, Tensor, Variable, kernels
from axonml_autograd.serialization import load, read, save
from axonml_autograd.optim import SGD, Adam

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _refusal():
    record = cl._cl._ErrorRecord("clCreateBuffer", cl.status_code.MEM_OBJECT_ALLOCATION_FAILURE, "simulated")
    return cl.MemoryError(record)


class RefusingBuffer:
    """Stands in for cl.Buffer: refuses the first ``failures`` allocations, then allocates for real."""

    def __init__(self, failures):
        self.failures, self.calls, self.real = failures, 0, cl.Buffer

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise _refusal()
        return self.real(*args, **kwargs)


def _fill_pool(device, nbytes=4 * 7919):
    # Only one buffer, of an odd size, dropped at once: it waits in the pool's free list, and no other
    # size is there to satisfy the allocation under test without asking the driver.
    device.empty_cache()
    Tensor.empty([nbytes // 4], "float32", device)
    assert device.pool.held_bytes > 0


# -- allocation --------------------------------------------------------------------------------------

def test_refused_allocation_is_retried_once_after_the_pool_releases_what_it_holds(device, monkeypatch):
    _fill_pool(device)
    fake = RefusingBuffer(failures=1)
    monkeypatch.setattr(cl, "Buffer", fake)
    t = Tensor.zeros([5003], "float32", device)        # a size the pool does not hold
    assert fake.calls == 2
    assert device.pool.held_bytes == 0
    monkeypatch.undo()
    assert t.to_vec() == [0.0] * 5003


def test_allocation_refused_twice_raises_naming_size_device_and_limits(device, monkeypatch):
    _fill_pool(device)
    fake = RefusingBuffer(failures=2)
    monkeypatch.setattr(cl, "Buffer", fake)
    in_use = device.pool.in_use_bytes
    with pytest.raises(DeviceMemoryError) as err:
        Tensor.empty([6007], "float32", device)       # a size the pool does not hold
    assert fake.calls == 2
    msg = str(err.value)
    assert "cannot allocate 24028 bytes" in msg
    assert device.name in msg
    assert f"global memory {device.global_mem} bytes" in msg and f"max allocation {device.max_alloc} bytes" in msg
    assert "MEM_OBJECT_ALLOCATION_FAILURE" in msg
    assert device.pool.held_bytes == 0 and device.pool.in_use_bytes == in_use   # nothing leaked


def test_allocation_larger_than_the_device_maximum_is_refused_before_asking_the_driver(device, monkeypatch):
    n = device.max_alloc // 4 + 64
    if n > 2**31 - 1:
        pytest.skip("the device's maximum allocation exceeds the int32 element limit")
    fake = RefusingBuffer(failures=0)
    monkeypatch.setattr(cl, "Buffer", fake)
    with pytest.raises(DeviceMemoryError, match=rf"maximum single allocation of {device.max_alloc} bytes"):
        Tensor.empty([n], "float32", device)
    assert fake.calls == 0


def test_device_memory_error_is_a_memory_error():
    assert issubclass(DeviceMemoryError, MemoryError)


# -- kernel builds -----------------------------------------------------------------------------------

def test_kernel_build_failure_raises_with_the_compiler_log_and_the_source_path(device):
    source = "__kernel void broken(__global float *x) { x[0] = not_declared_anywhere; }\n"
    with pytest.raises(KernelBuildError) as err:
        kernels.build(device, source)
    msg = str(err.value)
    assert device.name in msg
    assert "not_declared_anywhere" in msg            # the compiler's own diagnostic
    path = msg.split("rendered source: ", 1)[1].splitlines()[0]
    with open(path) as f:
        assert f.read() == source
    assert isinstance(err.value, RuntimeError)
    # A failed build is not cached as a success: asking again fails again.
    with pytest.raises(KernelBuildError):
        kernels.build(device, source)


# -- optimiser steps ---------------------------------------------------------------------------------

def _model(n=4):
    params = [Variable(Tensor.from_vec([float(k + 1), -float(k)], [2]), requires_grad=True) for k in range(n)]
    for p in params:
        (p * p).sum().backward()
    return params


def _snapshot(params, opt):
    sd = opt.state_dict()
    return [p.to_vec() for p in params], {i: {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                             for k, v in st.items()} for i, st in sd["state"].items()}


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda ps: Adam(ps, lr=0.1)],
                         ids=["sgd", "adam"])
def test_a_bad_gradient_on_the_last_parameter_updates_nothing(make):
    params = _model()
    opt = make(params)
    opt.step()
    before = _snapshot(params, opt)
    params[-1].set_grad(None)
    params[-1]._grad = Tensor.zeros([3])            # bypasses set_grad's check, as a buggy caller might
    with pytest.raises(ValueError, match=r"gradient \(float32 \[3\]\) does not match its parameter"):
        opt.step()
    assert _snapshot(params, opt) == before


@pytest.mark.parametrize("multi", [False, True], ids=["launch_per_parameter", "one_launch"])
def test_a_device_error_mid_step_marks_the_optimizer_invalid_until_a_reload(monkeypatch, multi):
    params = _model()
    opt = Adam(params, lr=0.1)
    if not multi:
        opt._multi_kernel = None   # one launch per parameter: the error strikes half-way through them
    opt.step()
    good = opt.state_dict()
    good_params = [p.to_vec() for p in params]

    real, calls = kernels.launch, []

    def failing_launch(*args, **kwargs):
        calls.append(1)
        # The step's first launch advances the step counts, then one per parameter, or one for all four.
        if len(calls) == (4 if not multi else 2):
            raise _refusal()
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "launch", failing_launch)
    done = 2 if not multi else 0
    with pytest.raises(RuntimeError, match=rf"step failed: MemoryError while updating parameter {done} of 4 "
                                           rf"\(shape \[2\]\); {done} were already updated") as err:
        opt.step()
    assert isinstance(err.value.__cause__, cl.MemoryError)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="optimizer state is invalid after a failed step"):
        opt.step()

    # The recovery the message asks for: reload parameters and state, then training goes on exactly
    # as if the failed step had never happened.
    for p, values in zip(params, good_params):
        p.set_data(Tensor.from_vec(values, [2]))
    opt.load_state_dict(good)
    opt.step()
    reference = _model()
    ref_opt = Adam(reference, lr=0.1)
    ref_opt.step()
    ref_opt.step()
    assert [p.to_vec() for p in params] == [p.to_vec() for p in reference]


def test_a_failed_closure_changes_nothing():
    params = _model(2)
    opt = SGD(params, lr=0.1)
    before = [p.to_vec() for p in params]

    def closure():
        raise ValueError("user code failed")

    with pytest.raises(ValueError, match="user code failed"):
        opt.step(closure)
    assert [p.to_vec() for p in params] == before
    opt.step()                                       # not marked invalid: nothing had been launched


# -- atomic save -------------------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from axonml_autograd.serialization import save

    real = np.lib.format.write_array
    calls = []

    def stalling_write(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            # Half of the second entry is written: report and wait for the parent's SIGKILL.
            fp.write(b"\\x00" * 4096)
            print("MID-SAVE", flush=True)
            time.sleep(120)
        return real(fp, array, *args, **kwargs)

    np.lib.format.write_array = stalling_write
    save(sys.argv[1], {"w": np.full(50_000, 2.0, np.float32), "b": np.full(7, 2.0, np.float32)},
         metadata={"epoch": 2})
    print("SAVED", flush=True)
""")


def test_killing_a_process_in_the_middle_of_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "model.npz"
    save(path, {"w": np.full(50_000, 1.0, np.float32), "b": np.full(7, 1.0, np.float32)}, metadata={"epoch": 1})
    before = path.read_bytes()

    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, env=env,
                             text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "MID-SAVE"
        temps = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
        assert len(temps) == 1                      # the new archive is being written beside the old one
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert path.read_bytes() == before
    ckpt = read(path)
    assert ckpt.metadata["epoch"] == 1
    assert np.array_equal(ckpt.tensors["w"], np.full(50_000, 1.0, np.float32))


def test_an_exception_during_save_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save(path, {"w": np.ones(3, np.float32)})

    def failing_write(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save(path, {"w": np.zeros(3, np.float32)})
    monkeypatch.undo()
    assert load(path)["w"].tolist() == [1.0, 1.0, 1.0]
    assert os.listdir(tmp_path) == ["model.npz"]
