"""The device target (probed once, stored, overridable) and checked builds with one fallback path."""

import dataclasses
import json
import os
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np

import pytest

from axonml_autograd import Tensor, kernels, target
from axonml_autograd.device import Device, default_device
from axonml_autograd.kernels import KernelBuildError, KernelFallbackWarning
from axonml_autograd.matmul import plan_info

ROOT = Path(__file__).resolve().parent.parent


def _same_hardware(device, **overrides):
    return Device(device.info.platform_index, device.info.device_index, target=overrides)


@pytest.fixture(autouse=True)
def no_environment_target(monkeypatch):
    # These tests pin the mechanism itself: they make their own targets, whatever AXONML_TARGET the
    # run emulates (make test-matrix).
    monkeypatch.delenv("AXONML_TARGET", raising=False)


@pytest.fixture
def plain(device):
    """The device under test with its probed target, no overrides."""
    return _same_hardware(device)


# -- the probe ---------------------------------------------------------------------------------------

def test_probed_widths_build_and_the_chosen_width_is_among_them(device, plain):
    t = plain.target
    assert t.vw_float in t.widths_float and t.vw_float in target.WIDTHS
    assert t.widths_float == tuple(sorted(t.widths_float, reverse=True)) and 1 in t.widths_float
    if device.info.fp64:
        assert t.vw_double in t.widths_double
    # Every width the target calls working really builds a vectorised kernel and gives numpy's answer.
    from axonml_autograd.rows import softmax_rows
    x = np.random.default_rng(0).standard_normal((5, 37)).astype(np.float32)
    e = np.exp(x - x.max(1, keepdims=True))
    for vw in [w for w in t.widths_float if w >= 2]:
        dev = _same_hardware(device, vw_float=vw)
        with warnings.catch_warnings():
            warnings.simplefilter("error", KernelFallbackWarning)   # no width the probe kept falls back
            got = softmax_rows(Tensor.from_numpy(x, device=dev)).numpy()
            prod = Tensor.from_numpy(x, device=dev).matmul(Tensor.from_numpy(x.T.copy(), device=dev)).numpy()
        np.testing.assert_allclose(got, e / e.sum(1, keepdims=True), rtol=1e-5)
        np.testing.assert_allclose(prod, x @ x.T, rtol=1e-5, atol=1e-5)
        assert plan_info(dev)["vw"] == vw


def test_work_group_is_what_a_local_memory_kernel_may_have(device, plain):
    t = plain.target
    assert 1 <= t.work_group <= device.max_work_group_size
    assert t.work_group & (t.work_group - 1) == 0
    assert t.local_mem == device.local_mem and t.compute_units == device.compute_units


def test_the_target_is_stored_and_read_back(device, tmp_path, monkeypatch):
    monkeypatch.setenv("AXONML_KERNEL_CACHE", str(tmp_path))
    probed = target.find(device.cl_device, device.info)
    assert probed.origin == "probed"
    stored = json.loads((tmp_path / "targets.json").read_text())
    key = target.device_key(device.cl_device)
    assert device.info.driver_version in key and list(stored) == [key]
    again = target.find(device.cl_device, device.info)
    assert again.origin == "stored"
    assert (again.vw_float, again.widths_float, again.work_group) == (probed.vw_float, probed.widths_float,
                                                                     probed.work_group)


def test_a_probe_that_cannot_run_leaves_a_cautious_target_that_is_not_stored(device, tmp_path, monkeypatch):
    monkeypatch.setenv("AXONML_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(target.sys, "executable", str(tmp_path / "no-such-python"))
    t = target.find(device.cl_device, device.info)
    assert t.origin == "default" and t.vw_float == 4 and not (tmp_path / "targets.json").exists()


# -- overrides ---------------------------------------------------------------------------------------

def test_axonml_target_parses_typed_fields():
    assert target.parse_overrides("strategy=GPU, work_group=64;local_mem=16384,fp64=0,vw_float=4") == {
        "strategy": "gpu", "work_group": 64, "local_mem": 16384, "fp64": False, "vw_float": 4}
    assert target.parse_overrides("") == {}


@pytest.mark.parametrize("text,match", [("warp=32", "field among"), ("strategy=tpu", "strategy"),
                                        ("work_group=lots", "integer"), ("vw_float=3", "one of"),
                                        ("fp64=maybe", "0 or 1"), ("local_mem=0", "positive")])
def test_axonml_target_names_a_bad_field_or_value(text, match):
    with pytest.raises(ValueError, match=match):
        target.parse_overrides(text)


def test_overrides_only_narrow_the_hardware(device, plain):
    t = _same_hardware(device, work_group=1 << 20, local_mem=1 << 40, strategy="gpu").target
    assert t.work_group == plain.target.work_group and t.local_mem == plain.target.local_mem
    assert t.strategy == "gpu" and t.flush_every == 8
    assert set(t.overrides) >= {"work_group", "local_mem", "strategy"}
    no64 = _same_hardware(device, fp64=False).target
    assert not no64.fp64 and no64.vw_double == 0
    # sub_buffers is what the probe saw: an override may turn it off, never on.
    assert _same_hardware(device, sub_buffers=False).target.sub_buffers is False
    off = dataclasses.replace(plain.target, sub_buffers=False)
    assert target.apply_overrides(off, {"sub_buffers": True}).sub_buffers is False


def test_environment_overrides_apply_to_new_devices(device, monkeypatch):
    monkeypatch.setenv("AXONML_TARGET", "strategy=gpu,work_group=64,local_mem=16384")
    dev = _same_hardware(device)
    assert (dev.target.strategy, dev.target.work_group, dev.target.local_mem) == ("gpu", 64, 16384)
    info = plan_info(dev, strategy="tiled")
    side = info["ts"] // info["wpt"]
    assert side * side <= 64 and 2 * info["tsk"] * (info["ts"] + 1) * 4 <= 16384
    a = np.random.default_rng(1).standard_normal((65, 17)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((17, 129)).astype(np.float32)
    got = Tensor.from_numpy(a, device=dev).matmul(Tensor.from_numpy(b, device=dev)).numpy()
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)


def test_emulated_device_without_fp64_refuses_float64_naming_the_target(device):
    from axonml_autograd.device import DeviceError
    dev = _same_hardware(device, fp64=False)
    with pytest.raises(DeviceError, match="float64 is not available.*" + ("AXONML_TARGET" if device.info.fp64 else "")):
        Tensor.zeros([3], dtype="float64", device=dev)


# -- checked builds ----------------------------------------------------------------------------------

def test_a_build_without_the_kernel_asked_for_raises_and_is_not_cached(device, monkeypatch):
    src = "__kernel void present(__global float *x) { x[0] = 1.0f; }\n"
    with pytest.raises(KernelBuildError, match="holds no kernel absent") as e:
        kernels.build(device, src + "// variant a\n", names=("absent",), what="probe_test.cl.mako(vw=16)")
    assert "probe_test.cl.mako(vw=16)" in str(e.value) and device.name in str(e.value)


def test_an_empty_successful_build_raises_naming_template_parameters_and_device(device, monkeypatch):
    # What PoCL does with vectors its LLVM cannot lower: the compiler says yes, the program is empty.
    monkeypatch.setattr(kernels, "_kernel_names", lambda prog: set())
    dev = _same_hardware(device)
    with pytest.raises(KernelBuildError) as e:
        kernels.get_kernel(dev, "elementwise.cl.mako", "ew", ctype="float", rank=1, kinds=("flat", "flat"),
                           names=("a",), scalars=(), expr="a + L(0.5)", types=())
    msg = str(e.value)
    assert "elementwise.cl.mako(" in msg and "ctype='float'" in msg and dev.name in msg
    assert "holds no kernel" in msg and "build log" in msg


def test_a_cached_binary_without_the_kernel_is_deleted_and_rebuilt(device, tmp_path, monkeypatch):
    monkeypatch.setenv("AXONML_KERNEL_CACHE", str(tmp_path))
    wanted = "__kernel void wanted(__global float *x) { x[get_global_id(0)] = 7.0f; }\n"
    other = "__kernel void other(__global float *x) { x[0] = 0.0f; }\n"
    dev = _same_hardware(device)
    kernels.build(dev, other, names=("other",))
    other_bin = kernels._binary_path(dev, other, ())
    path = kernels._binary_path(dev, wanted, ())
    path.write_bytes(other_bin.read_bytes())      # a binary that holds the wrong kernels
    knl = kernels.source_kernel(dev, wanted, "wanted")
    assert knl.function_name == "wanted"
    fresh = Device(device.info.platform_index, device.info.device_index)
    assert "wanted" in kernels._kernel_names(kernels._load_binary(fresh, path, (), {"wanted"}))


def test_a_successful_build_does_not_warn_even_with_a_log(device):
    src = '#warning "a log that is not an error"\n__kernel void logged(__global float *x) { x[0] = 2.0f; }\n'
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        knl = kernels.source_kernel(_same_hardware(device), src, "logged")
    assert knl.function_name == "logged"


def test_failed_sources_go_to_a_private_directory(device):
    with pytest.raises(KernelBuildError) as e:
        kernels.build(device, "this is not OpenCL C", what="bad")
    path = Path(str(e.value).split("rendered source: ", 1)[1].split()[0])
    assert path.read_text() == "this is not OpenCL C"
    mode = stat.S_IMODE(path.parent.stat().st_mode)
    assert mode == 0o700 and path.parent.stat().st_uid == os.getuid()
    assert not str(path).startswith("/tmp/axonml_kernels")


# -- first_that_builds ---------------------------------------------------------------------------------

def test_first_that_builds_falls_back_warns_once_and_remembers_failures(device):
    dev = _same_hardware(device)
    tried = []

    def make(c):
        tried.append(c)
        if c > 4:
            raise KernelBuildError(f"width {c} does not build (simulated)")
        return f"kernel at {c}"

    with pytest.warns(KernelFallbackWarning, match="16 does not build.*using 4"):
        assert kernels.first_that_builds(dev, "family", [16, 8, 4, 2], make) == "kernel at 4"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.first_that_builds(dev, "family", [16, 8, 4, 2], make) == "kernel at 4"
    assert tried == [16, 8, 4, 4]     # failures are not retried
    with pytest.raises(KernelBuildError, match="no candidate builds.*tried 16, 8"):
        kernels.first_that_builds(dev, "family", [16, 8], make)


def test_empty_programs_at_the_widest_width_fall_back_to_narrower_kernels(device, monkeypatch, tmp_path):
    """Every vectorised family (matmul, softmax rows, norms, elementwise) gives numpy's answers when
    its widest build yields no kernel, and says so once per family."""
    monkeypatch.setenv("AXONML_KERNEL_CACHE", str(tmp_path))   # built from source, not loaded
    dev = _same_hardware(device, vw_float=8)
    real = kernels._kernel_names
    monkeypatch.setattr(kernels, "_kernel_names",
                        lambda prog: set() if "float8" in prog.get_info(kernels.cl.program_info.SOURCE) else real(prog))
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((17, 65)).astype(np.float32), rng.standard_normal((65, 3)).astype(np.float32)
    with pytest.warns(KernelFallbackWarning) as record:
        got = Tensor.from_numpy(a, device=dev).matmul(Tensor.from_numpy(b, device=dev)).numpy()
        ln = Tensor.from_numpy(a, device=dev)
        from axonml_autograd.rows import softmax_rows
        sm = softmax_rows(ln).numpy()
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)
    e = np.exp(a - a.max(1, keepdims=True))
    np.testing.assert_allclose(sm, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    families = sorted(str(w.message).split(":")[0] for w in record)
    assert len(families) == len(set(families)) and any(f.startswith("matmul") for f in families)
    assert plan_info(dev)["vw"] == 4


def test_a_width_that_cannot_build_falls_back_and_the_process_exits_0(tmp_path):
    """The acceptance run: an emulated target asks for 16-wide floats. Where the probe saw them fail
    (PoCL on a CPU without AVX-512 in its LLVM), the library never hands them to the compiler: every
    family falls back with one warning, nothing bad is cached, and the process ends with status 0."""
    script = textwrap.dedent("""
        import warnings, numpy as np
        import axonml_autograd as ag
        from axonml_autograd.rows import softmax_rows
        dev = ag.default_device()
        rng = np.random.default_rng(0)
        a = rng.standard_normal((33, 65)).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                c = ag.Tensor.from_numpy(a).matmul(ag.Tensor.from_numpy(a.T.copy())).numpy()
                s = softmax_rows(ag.Tensor.from_numpy(a)).numpy()
        assert np.allclose(c, a @ a.T, rtol=1e-4, atol=1e-4)
        e = np.exp(a - a.max(1, keepdims=True)); assert np.allclose(s, e / e.sum(1, keepdims=True), atol=1e-6)
        fallbacks = [str(w.message) for w in caught if issubclass(w.category, ag.kernels.KernelFallbackWarning)]
        print("BUILDS16", 16 in dev.target.widths_float, "FALLBACKS", len(fallbacks))
        for f in fallbacks: print("W", f.splitlines()[0])
    """)
    env = dict(os.environ, AXONML_TARGET="vw_float=16", AXONML_KERNEL_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("BUILDS16"))
    builds16, n = line.split()[1] == "True", int(line.split()[3])
    if not builds16:
        assert n >= 1 and len({l.split(":")[0] for l in done.stdout.splitlines() if l.startswith("W ")}) == n
    # Whatever was cached loads back with its kernels.
    for binary in (tmp_path / "cache").glob("*.bin"):
        assert binary.stat().st_size > 0


def test_kernels_that_allow_fewer_work_items_fall_back_to_smaller_work_groups(device, monkeypatch, tmp_path):
    """A GPU whose register-hungry kernels allow 64 work-items although the device says 1024: the
    tree reductions, softmax and norm rows take smaller work-groups and still give numpy's answers."""
    from axonml_autograd.nn import functional as F
    from axonml_autograd.rows import reduce, softmax_rows
    monkeypatch.setenv("AXONML_KERNEL_CACHE", str(tmp_path))
    dev = _same_hardware(device, strategy="gpu", work_group=1024)
    launched = []
    real_wg, real_launch = kernels.kernel_work_group_size, kernels.launch
    monkeypatch.setattr(kernels, "kernel_work_group_size", lambda d, k: min(64, real_wg(d, k)))

    def recording_launch(d, knl, global_size, local_size, *args, **kw):
        launched.append(local_size[0])
        return real_launch(d, knl, global_size, local_size, *args, **kw)

    monkeypatch.setattr(kernels, "launch", recording_launch)
    x = np.random.default_rng(4).standard_normal((5, 3001)).astype(np.float32)
    with pytest.warns(KernelFallbackWarning):
        s = reduce(Tensor.from_numpy(x, device=dev), "sum", 1).numpy()
        sm = softmax_rows(Tensor.from_numpy(x, device=dev)).numpy()
        ln = F.layer_norm(ag_variable(x, dev), [3001]).data().numpy()
    np.testing.assert_allclose(s, x.astype(np.float64).sum(1), rtol=1e-4, atol=1e-3)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(sm, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-8)
    mu, sd = x.mean(1, keepdims=True), x.std(1, keepdims=True)
    np.testing.assert_allclose(ln, (x - mu) / np.sqrt(sd ** 2 + 1e-5), rtol=1e-4, atol=1e-4)
    assert launched and max(launched) <= 64


def ag_variable(x, dev):
    from axonml_autograd import Variable
    return Variable(Tensor.from_numpy(x, device=dev))
