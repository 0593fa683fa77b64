"""Kernel rendering, the in-process build cache, build errors and the on-disk cache across processes."""

import doctest
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from axonml_autograd import Tensor, kernels, launch
from axonml_autograd.device import Device, default_device
from axonml_autograd.kernels import KernelBuildError

DEV = default_device()


def ew_params(expr, rank=1, kinds=("flat", "flat")):
    return dict(ctype="float", rank=rank, kinds=kinds, names=("a",), scalars=(), expr=expr, types=())


def unique_expr():
    # A constant nobody else uses, so the first request really builds.
    return f"a + L({uuid.uuid4().int % 10**6}.0)"


def test_a_kernel_requested_twice_is_built_once():
    params = ew_params(unique_expr())
    before = kernels.build_count()
    k1 = kernels.get_kernel(DEV, "elementwise.cl.mako", "ew", **params)
    assert kernels.build_count() == before + 1
    k2 = kernels.get_kernel(DEV, "elementwise.cl.mako", "ew", **params)
    assert k2 is k1
    assert kernels.build_count() == before + 1


def test_build_of_the_same_source_is_cached_and_options_are_part_of_the_key():
    src = kernels.render("elementwise.cl.mako", **ew_params(unique_expr()))
    before = kernels.build_count()
    p1 = kernels.build(DEV, src)
    p2 = kernels.build(DEV, src, ())
    assert p1 is p2 and kernels.build_count() == before + 1
    p3 = kernels.build(DEV, src, ("-cl-fast-relaxed-math",))
    assert p3 is not p1 and kernels.build_count() == before + 2


def test_new_shapes_do_not_rebuild():
    # Shapes are kernel arguments, so once a layout (rank after merging axes, which operands are
    # strided) is built any size reuses it. Size 1 would collapse to another rank, hence n >= 2.
    Tensor.ones([5]) * Tensor.ones([5])
    Tensor.ones([3, 1]) * Tensor.ones([3, 4])
    Tensor.ones([2000]).sum()
    Tensor.ones([7]).sum()
    before = kernels.build_count()
    for n in (2, 17, 129, 1000):
        (Tensor.ones([n]) * Tensor.ones([n])).numpy()
        (Tensor.ones([n, 1]) * Tensor.ones([n, 3])).numpy()
    for n in (3, 65, 500):
        Tensor.ones([n]).sum().numpy()
    for n in (600, 5000, 100_000):
        Tensor.ones([n]).sum().numpy()
    assert kernels.build_count() == before


def test_kernel_caches_are_per_device():
    other = Device(DEV.info.platform_index, DEV.info.device_index)
    params = ew_params(unique_expr())
    k1 = kernels.get_kernel(DEV, "elementwise.cl.mako", "ew", **params)
    before = kernels.build_count()
    k2 = kernels.get_kernel(other, "elementwise.cl.mako", "ew", **params)
    assert k2 is not k1 and kernels.build_count() == before + 1
    assert k2.context == other.context


def test_build_error_carries_the_log_and_the_rendered_source_path():
    source = "bad source"
    with pytest.raises(KernelBuildError) as exc:
        kernels.build(DEV, source, ())
    msg = str(exc.value)
    assert isinstance(exc.value, RuntimeError)
    assert DEV.name in msg
    # The compiler's log: PoCL/clang says which token it choked on.
    assert "error" in msg.lower() and "bad" in msg
    path = Path(msg.split("rendered source: ", 1)[1].split()[0])
    assert path.suffix == ".cl" and path.read_text() == source


def test_build_error_from_a_template_with_a_syntax_error():
    src = kernels.render("elementwise.cl.mako", **ew_params("a +* )"))
    before = kernels.build_count()
    with pytest.raises(KernelBuildError, match="rendered source: .*\\.cl"):
        kernels.build(DEV, src)
    assert kernels.build_count() == before
    # A failed build is not cached as a success: asking again fails again.
    with pytest.raises(KernelBuildError):
        kernels.build(DEV, src)


def test_missing_template_and_missing_parameter():
    with pytest.raises(FileNotFoundError, match="no_such.cl.mako"):
        kernels.render("no_such.cl.mako")
    with pytest.raises(NameError):
        kernels.render("elementwise.cl.mako", ctype="float")


def test_module_docstring_example_runs():
    # The example a reader copies first must work as written.
    result = doctest.testmod(kernels, verbose=False)
    assert result.failed == 0


def test_ctype_and_round_up():
    assert kernels.ctype(np.float32) == "float"
    assert kernels.ctype("float64") == "double"
    assert kernels.ctype(np.int32) == "int"
    assert [kernels.round_up(n, 256) for n in (0, 1, 256, 257)] == [0, 256, 256, 512]


def test_launch_is_deferred_until_a_read_and_then_visible():
    # A kernel of our own, so the test does not depend on any template's argument list.
    prog = kernels.build(DEV, """
        __kernel void put(__global float *out, const float value, const int n) {
            const int i = get_global_id(0);
            if (i < n) out[i] = value * (float)i;
        }""")
    t = Tensor.zeros([300])
    launch.flush(DEV)
    kernels.launch(DEV, prog.put, (kernels.round_up(300, 64),), (64,), t.buffer, np.float32(0.5),
                   np.int32(300))
    assert launch.pending_count(DEV) == 1      # waits in the pending list, in order
    np.testing.assert_array_equal(t.numpy(), 0.5 * np.arange(300, dtype=np.float32))
    assert launch.pending_count(DEV) == 0      # the read flushed it first


# -- across processes -------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from axonml_autograd import Tensor, kernels
    from axonml_autograd.elementwise_kernels import elementwise
    a = Tensor.from_numpy([[1.0, 2.0, 3.0]])
    b = Tensor.from_numpy([[1.0], [2.0]])
    t1 = time.perf_counter()
    # Timed up to the result, because PoCL finishes compiling a kernel at its first launch: one
    # broadcasting elementwise kernel (its expression unique to this test run) and one reduction.
    s = elementwise(sys.argv[1], [a, b]).sum(axis=1).numpy()
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "builds": kernels.build_count(),
                      "result": s.tolist()}))
""")


def run_child(tmp_path, expr):
    env = dict(os.environ)
    # Fresh caches for both layers that may hold binaries: PoCL's own kernel cache (pyopencl leaves
    # caching to PoCL) and pyopencl's binary cache under XDG_CACHE_HOME (used on other platforms).
    env["POCL_CACHE_DIR"] = str(tmp_path / "pocl")
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env.pop("PYOPENCL_NO_CACHE", None)
    env.pop("POCL_KERNEL_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, expr], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_does_not_recompile(tmp_path):
    expr = f"a * b + L({uuid.uuid4().int % 10**6}.0)"
    first = run_child(tmp_path, expr)
    cached = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size > 0]
    second = run_child(tmp_path, expr)
    if second["build_s"] >= 0.5 * first["build_s"]:
        # One retry absorbs a scheduling hiccup on a busy 2-core machine.
        second = min(second, run_child(tmp_path, expr), key=lambda r: r["build_s"])
    print(f"\ncross-process build: first {first['build_s']:.3f} s, second {second['build_s']:.3f} s "
          f"(imports {first['import_s']:.2f} s / {second['import_s']:.2f} s; "
          f"{len(cached)} cache files, {DEV.info.platform})")
    assert first["result"] == second["result"]
    # Both processes ask for the same programs; only the second finds them on disk.
    assert first["builds"] == second["builds"] >= 2
    assert cached, "the first process left no compiled kernels on disk"
    assert second["build_s"] < 0.5 * first["build_s"]


@pytest.mark.parametrize("word", ["0", "off", "OFF", "false", "no", "none"])
def test_a_kernel_cache_switched_off_is_no_directory(monkeypatch, word, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AXONML_KERNEL_CACHE", word)
    assert kernels.binary_cache_dir() is None
    monkeypatch.setenv("AXONML_KERNEL_CACHE", str(tmp_path / "kc"))
    assert kernels.binary_cache_dir() == tmp_path / "kc"
