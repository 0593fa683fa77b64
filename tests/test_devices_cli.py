"""The device query tool (``axonml-devices``) and the device selection rules it reports."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pyopencl as cl
import pytest

from axonml_autograd import device
from axonml_autograd import devices_cli
from axonml_autograd.device import DeviceError

REQUIRED = {
    "platform": str, "name": str, "vendor": str, "type": str, "compute_units": int, "global_mem": int,
    "local_mem": int, "max_alloc": int, "max_work_group_size": int, "fp64": bool, "fp16": bool,
    "opencl_c_version": str, "selected": bool, "selector": str,
}
BENCH_NUMBERS = ("elementwise_gbps", "launch_enqueue_us", "launch_roundtrip_us", "launch_op_us")
REAL_CONTEXT = cl.Context


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    # The selection rules read these; a developer's shell must not change what the tests see.
    monkeypatch.delenv("AXONML_DEVICE", raising=False)
    monkeypatch.delenv("PYOPENCL_CTX", raising=False)


@pytest.fixture
def isolated_devices(monkeypatch):
    # Fake platforms change what (platform, device) indices mean; keep them out of the process-wide
    # device cache that other tests share.
    monkeypatch.setattr(device, "_devices", {})
    monkeypatch.setattr(device, "_default", None)


def run_cli(capsys, *args):
    rc = devices_cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def marked_rows(out):
    """Table rows (not the legend) that carry the selection mark."""
    return [l for l in out.splitlines() if re.match(r"^\s+\*\s+\d+:\d+\s", l)]


def real_platforms():
    return [(pi, p, ds) for pi, p, ds in device.platforms() if not isinstance(ds, str) and ds]


# ------------------------------------------------------------------------------------------------------
# Fakes: enough of pyopencl's Platform/Device for describe(), resolve_selector() and the CLI
# ------------------------------------------------------------------------------------------------------

class FakePlatform:
    def __init__(self, name, devices=(), raises=None):
        self.name, self.vendor, self._devices, self._raises = name, "Fake Corp", list(devices), raises

    def get_devices(self):
        if self._raises is not None:
            raise self._raises
        return list(self._devices)


class FakeDevice:
    def __init__(self, name, platform, kind=cl.device_type.CPU, refuses=False):
        self.name, self.platform, self.type, self.refuses = name, platform, kind, refuses
        self.vendor = "Fake Corp"
        self.max_compute_units = 8
        self.global_mem_size = 2 << 30
        self.local_mem_size = 64 << 10
        self.max_mem_alloc_size = 512 << 20
        self.max_work_group_size = 256
        self.extensions = "cl_khr_fp16"
        self.double_fp_config = 0
        self.opencl_c_version = "OpenCL C 1.2 fake"
        self.driver_version = "0.1"
        self.version = "OpenCL 1.2 fake"  # resolve_selector may search it once it looks beyond names


class UnreadableDevice(FakeDevice):
    @property
    def max_compute_units(self):
        raise cl.LogicError("clGetDeviceInfo failed: INVALID_VALUE")

    @max_compute_units.setter
    def max_compute_units(self, _value):
        pass


def fake_context(devices, *args, **kwargs):
    for d in devices:
        if isinstance(d, FakeDevice):
            if d.refuses:
                raise cl.RuntimeError("clCreateContext failed: DEVICE_NOT_AVAILABLE")
            return object()
    return REAL_CONTEXT(devices, *args, **kwargs)


@pytest.fixture
def fake_world(monkeypatch, isolated_devices):
    """The real platforms, then: one that raised DEVICE_NOT_FOUND, one with an empty device list, and one
    with a working fake CPU and a fake CPU that refuses a context."""
    real = real_platforms()
    n = len(real)
    raising = FakePlatform("Raising Platform")
    empty = FakePlatform("Empty Platform")
    mixed = FakePlatform("Mixed Platform")
    ok = FakeDevice("Fake Good CPU", mixed)
    bad = FakeDevice("Fake Broken CPU", mixed, refuses=True)
    mixed._devices = [ok, bad]
    world = real + [(n, raising, "no devices (clGetDeviceIDs failed: DEVICE_NOT_FOUND)"),
                    (n + 1, empty, []), (n + 2, mixed, [ok, bad])]
    monkeypatch.setattr(device, "platforms", lambda: world)
    monkeypatch.setattr(cl, "Context", fake_context)
    return types.SimpleNamespace(n=n, ok=f"{n + 2}:0", bad=f"{n + 2}:1", raising=n, empty=n + 1)


# ------------------------------------------------------------------------------------------------------
# Listing on the real device(s)
# ------------------------------------------------------------------------------------------------------

def test_json_has_every_required_key_with_correct_types(capsys):
    rc, out, _ = run_cli(capsys, "--json")
    assert rc == 0
    entries = json.loads(out)
    assert isinstance(entries, list)
    devices = [e for e in entries if e["selector"] is not None]
    assert len(devices) == sum(len(ds) for _pi, _p, ds in real_platforms())
    for e in devices:
        for key, typ in REQUIRED.items():
            assert key in e, key
            assert type(e[key]) is typ, (key, e[key])
        assert e["error"] is None
        assert e["selector"] == f"{e['platform_index']}:{e['device_index']}"
        assert e["compute_units"] >= 1 and e["max_work_group_size"] >= 1
        assert e["local_mem"] <= e["global_mem"] and 0 < e["max_alloc"] <= e["global_mem"]
        assert e["type"] in ("CPU", "GPU", "ACCELERATOR", "OTHER")


def test_json_values_agree_with_describe(capsys):
    _, out, _ = run_cli(capsys, "--json")
    by_selector = {e["selector"]: e for e in json.loads(out)}
    for info in device.all_device_infos():
        e = by_selector[info.selector]
        for field in dataclasses.fields(info):
            if field.name in e:
                assert e[field.name] == getattr(info, field.name), field.name


def test_exactly_one_selected_and_it_is_resolve_selectors_choice(capsys):
    _, out, _ = run_cli(capsys, "--json")
    selected = [e for e in json.loads(out) if e["selected"]]
    assert len(selected) == 1
    pi, di = device.resolve_selector()
    assert selected[0]["selector"] == f"{pi}:{di}"


def test_table_shows_every_device_with_selector_name_units_and_the_pick(capsys):
    rc, out, _ = run_cli(capsys)
    assert rc == 0
    pick = "%d:%d" % device.resolve_selector()
    for info in device.all_device_infos():
        line = next(l for l in out.splitlines() if f" {info.selector} " in l)
        assert info.name in line
        assert devices_cli.human_bytes(info.global_mem) in line
        assert devices_cli.human_bytes(info.local_mem) in line
        assert (line in marked_rows(out)) == (info.selector == pick)
        assert f"platform {info.platform_index}: {info.platform}" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("n, text", [(3291832320, "3.1 GiB"), (524288, "512 KiB"), (1 << 30, "1 GiB"),
                                     (1000, "1000 B"), (1536, "1.5 KiB"), (80 * (1 << 30), "80 GiB")])
def test_human_bytes(n, text):
    assert devices_cli.human_bytes(n) == text


def test_device_flag_restricts_output(capsys):
    info = device.all_device_infos()[0]
    rc, out, _ = run_cli(capsys, "--json", "--device", info.selector)
    assert rc == 0
    entries = json.loads(out)
    assert [e["selector"] for e in entries] == [info.selector]


def test_unknown_device_flag_is_a_usage_error_listing_devices(capsys):
    rc, out, err = run_cli(capsys, "--device", "no-such-device-xyz")
    assert rc == 2
    assert "no-such-device-xyz" in err
    assert device.all_device_infos()[0].selector in err
    assert "Traceback" not in out + err


def test_script_entry_runs_from_a_checkout():
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "scripts" / "axonml_devices.py"), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert any(e["selected"] for e in json.loads(proc.stdout))


# ------------------------------------------------------------------------------------------------------
# Selection changes and broken platforms/devices (fakes)
# ------------------------------------------------------------------------------------------------------

def test_axonml_device_changes_which_device_is_selected(capsys, monkeypatch, fake_world):
    _, out, _ = run_cli(capsys, "--json")
    default = [e["selector"] for e in json.loads(out) if e["selected"]]
    assert default == ["%d:%d" % device.resolve_selector()]
    assert default != [fake_world.ok]

    monkeypatch.setenv("AXONML_DEVICE", fake_world.ok)
    rc, out, _ = run_cli(capsys, "--json")
    assert rc == 0
    assert [e["selector"] for e in json.loads(out) if e["selected"]] == [fake_world.ok]

    monkeypatch.setenv("AXONML_DEVICE", "fake GOOD")  # name substring, any case
    rc, out, _ = run_cli(capsys)
    assert rc == 0
    marked = marked_rows(out)
    assert len(marked) == 1 and fake_world.ok in marked[0] and "Fake Good CPU" in marked[0]
    assert "AXONML_DEVICE=fake GOOD" in out


def test_empty_platforms_and_refusing_device_are_reported_in_json(capsys, fake_world):
    rc, out, _ = run_cli(capsys, "--json")
    assert rc == 0  # the library's own pick is a real, working device
    entries = json.loads(out)
    keys = set(entries[0])
    assert all(set(e) == keys for e in entries), "every object should have the same keys"
    by_platform = {e["platform_index"]: e for e in entries if e["selector"] is None}
    assert "DEVICE_NOT_FOUND" in by_platform[fake_world.raising]["error"]
    assert by_platform[fake_world.raising]["platform"] == "Raising Platform"
    assert by_platform[fake_world.empty]["error"] == "no devices"
    for e in by_platform.values():
        assert e["device_index"] is None and e["name"] is None and e["selected"] is False
    by_selector = {e["selector"]: e for e in entries if e["selector"]}
    assert by_selector[fake_world.ok]["error"] is None
    assert by_selector[fake_world.ok]["fp16"] is True and by_selector[fake_world.ok]["fp64"] is False
    broken = by_selector[fake_world.bad]
    assert "refused a context" in broken["error"] and "DEVICE_NOT_AVAILABLE" in broken["error"]
    assert broken["name"] == "Fake Broken CPU" and broken["compute_units"] == 8


def test_empty_platforms_and_refusing_device_are_reported_in_table(capsys, fake_world):
    rc, out, _ = run_cli(capsys)
    assert rc == 0
    assert f"platform {fake_world.raising}: Raising Platform -- no devices" in out
    assert f"platform {fake_world.empty}: Empty Platform -- no devices" in out
    errors = out[out.index("errors:"):]
    assert f"device {fake_world.bad} Fake Broken CPU: refused a context" in errors
    assert "Raising Platform" in errors and "Empty Platform" in errors
    assert fake_world.ok not in errors
    broken_row = next(l for l in out.splitlines() if f" {fake_world.bad} " in l and "Fake Broken CPU" in l)
    assert broken_row.lstrip().startswith("!")


def test_picked_device_refusing_a_context_fails_without_traceback(capsys, monkeypatch, fake_world):
    monkeypatch.setenv("AXONML_DEVICE", fake_world.bad)
    rc, out, err = run_cli(capsys, "--json")
    assert rc == 1
    selected = [e for e in json.loads(out) if e["selected"]]
    assert [e["selector"] for e in selected] == [fake_world.bad]
    assert "refused a context" in err


def test_unreadable_device_info_is_reported(capsys, monkeypatch, isolated_devices):
    real = real_platforms()
    plat = FakePlatform("Odd Platform")
    plat._devices = [UnreadableDevice("Odd", plat)]
    monkeypatch.setattr(device, "platforms", lambda: real + [(len(real), plat, plat._devices)])
    monkeypatch.setattr(cl, "Context", fake_context)
    # The CLI reads device info itself; resolve_selector only needs names, so the real pick stands.
    rc, out, _ = run_cli(capsys, "--json")
    assert rc == 0
    odd = next(e for e in json.loads(out) if e["selector"] == f"{len(real)}:0")
    assert "could not read device info" in odd["error"] and "INVALID_VALUE" in odd["error"]
    assert odd["compute_units"] is None


def test_unknown_axonml_device_lists_devices_and_selects_none(capsys, monkeypatch):
    monkeypatch.setenv("AXONML_DEVICE", "no-such-device-xyz")
    rc, out, _ = run_cli(capsys)
    assert rc == 1
    assert "no device is selected (AXONML_DEVICE=no-such-device-xyz)" in out
    assert not marked_rows(out)
    rc, out, err = run_cli(capsys, "--json")
    assert rc == 1
    entries = json.loads(out)
    assert entries and not any(e["selected"] for e in entries)
    assert "no-such-device-xyz" in err


@pytest.mark.parametrize("how", ["empty", "raises"])
def test_no_opencl_at_all_prints_install_hint(capsys, monkeypatch, isolated_devices, how):
    if how == "empty":
        monkeypatch.setattr(cl, "get_platforms", lambda: [])
    else:
        def no_icd():
            raise cl.LogicError("clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR")
        monkeypatch.setattr(cl, "get_platforms", no_icd)
    rc, out, err = run_cli(capsys)
    assert rc == 1
    assert 'pip install "pyopencl[pocl]"' in err
    assert "Traceback" not in out + err
    rc, out, err = run_cli(capsys, "--json")
    assert rc == 1 and json.loads(out) == []
    rc, out, err = run_cli(capsys, "--bench", "--quick")
    assert rc == 1 and 'pip install "pyopencl[pocl]"' in err


# ------------------------------------------------------------------------------------------------------
# --bench
# ------------------------------------------------------------------------------------------------------

def assert_positive_finite(value, what):
    assert isinstance(value, float) and math.isfinite(value) and value > 0, (what, value)


def test_bench_json_gives_positive_finite_numbers(capsys):
    info = device.get_device().info
    rc, out, err = run_cli(capsys, "--bench", "--quick", "--json", "--device", info.selector)
    assert rc == 0, err
    (entry,) = json.loads(out)
    b = entry["bench"]
    assert b["error"] is None
    for key in BENCH_NUMBERS:
        assert_positive_finite(b[key], key)
    assert b["elementwise_n"] == devices_cli.QUICK["elementwise_n"]
    try:
        import axonml_autograd.matmul  # noqa: F401
    except ImportError:
        assert b["matmul_gflops"] is None and b["matmul_error"].startswith("unavailable")
    else:
        assert b["matmul_error"] is None
        assert_positive_finite(b["matmul_gflops"], "matmul_gflops")
    assert "[1/3]" in err and "[3/3]" in err and "matmul" in err


def test_bench_table_has_a_row_per_device(capsys):
    info = device.get_device().info
    rc, out, _ = run_cli(capsys, "--bench", "--quick", "--device", info.selector)
    assert rc == 0
    bench = out[out.index("benchmark"):]
    row = next(l for l in bench.splitlines() if f" {info.selector} " in l)
    assert info.name in row and "GFLOP/s" in bench and "GB/s" in bench


def test_bench_reports_missing_matmul_as_unavailable(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "axonml_autograd.matmul", None)  # makes the import fail
    rc, out, _ = run_cli(capsys, "--bench", "--quick", "--json", "--device", "0:0")
    assert rc == 0  # an unwritten module is not a broken device
    b = json.loads(out)[0]["bench"]
    assert b["matmul_gflops"] is None and b["matmul_error"].startswith("unavailable")
    assert_positive_finite(b["elementwise_gbps"], "elementwise_gbps")
    rc, out, _ = run_cli(capsys, "--bench", "--quick", "--device", "0:0")
    assert "n/a" in out and "matmul: unavailable" in out


def _fake_matmul_module(fn):
    mod = types.ModuleType("axonml_autograd.matmul")
    mod.matmul = fn
    return mod


def test_bench_times_the_matmul_it_imports_and_rejects_a_wrong_one(capsys, monkeypatch):
    from axonml_autograd import Tensor
    calls = []

    def host_matmul(a, b, trans_a=False, trans_b=False):
        calls.append((a.shape(), b.shape()))
        return Tensor.from_numpy(a.numpy() @ b.numpy(), device=a.device)

    monkeypatch.setitem(sys.modules, "axonml_autograd.matmul", _fake_matmul_module(host_matmul))
    rc, out, _ = run_cli(capsys, "--bench", "--quick", "--json", "--device", "0:0")
    assert rc == 0
    b = json.loads(out)[0]["bench"]
    n = devices_cli.QUICK["matmul_n"]
    assert calls and calls[0] == ([n, n], [n, n])
    assert_positive_finite(b["matmul_gflops"], "matmul_gflops")

    monkeypatch.setitem(sys.modules, "axonml_autograd.matmul",
                        _fake_matmul_module(lambda a, b, **kw: a + b))
    rc, out, _ = run_cli(capsys, "--bench", "--quick", "--json", "--device", "0:0")
    assert rc == 1  # a wrong kernel on the device in question is a failure
    b = json.loads(out)[0]["bench"]
    assert b["matmul_gflops"] is None and "wrong result" in b["matmul_error"]
    assert_positive_finite(b["elementwise_gbps"], "elementwise_gbps")


def test_one_failing_device_does_not_stop_the_bench_of_others(capsys, monkeypatch, fake_world):
    monkeypatch.setattr(devices_cli, "QUICK", dict(devices_cli.QUICK, matmul_n=32, elementwise_n=4096,
                                                   launches=5, repeats=1))
    rc, out, err = run_cli(capsys, "--bench", "--quick", "--json")
    assert rc == 0, err  # the library's pick is a real device, and it measured fine
    entries = json.loads(out)
    by_selector = {e["selector"]: e for e in entries if e["selector"]}
    # Neither fake can run a kernel: one refuses a context, the other's "context" is not a real one.
    assert "refused a context" in by_selector[fake_world.bad]["bench"]["error"]
    assert by_selector[fake_world.ok]["bench"]["error"]
    real = [e for e in by_selector.values() if e["platform_index"] < fake_world.n]
    assert real
    for e in real:
        assert e["bench"]["error"] is None
        assert_positive_finite(e["bench"]["elementwise_gbps"], "elementwise_gbps")
    assert [e["bench"] for e in entries if e["selector"] is None] == [None, None]
    total = 3 * len(by_selector)
    assert f"[{total}/{total}]" in err  # the progress count runs to the end despite the failures


# ------------------------------------------------------------------------------------------------------
# device.py: selection rules, caching, capabilities
# ------------------------------------------------------------------------------------------------------

def test_index_selectors():
    assert device.resolve_selector("0:0") == (0, 0)
    assert device.resolve_selector(" 0 ") == (0, 0)  # a bare platform index means its first device


def test_name_substring_is_case_insensitive():
    info = device.all_device_infos()[0]
    # Platform and device names joined, so the same CPU under two implementations stays one match.
    needle = f"{info.platform[:6]}:{info.name[2:8]}".swapcase()
    pick = "%d:%d" % device.resolve_selector(needle)
    assert pick == info.selector


def test_pocl_substring_selects_the_pocl_device():
    infos = [i for i in device.all_device_infos() if i.platform == "Portable Computing Language"]
    if not infos:
        pytest.skip("no PoCL device here")
    assert "%d:%d" % device.resolve_selector("POCL") == infos[0].selector


@pytest.mark.parametrize("selector", ["no-such-device-xyz", "7:3"])
def test_unknown_selector_lists_available_devices(selector):
    with pytest.raises(DeviceError) as e:
        device.resolve_selector(selector)
    msg = str(e.value)
    assert selector in msg and "available" in msg
    for info in device.all_device_infos():
        assert f"{info.selector} {info.name}" in msg


def test_pyopencl_ctx_is_honoured_when_axonml_device_is_unset(monkeypatch, fake_world):
    pi = fake_world.n + 2
    monkeypatch.setenv("PYOPENCL_CTX", str(pi))
    assert device.resolve_selector() == (pi, 0)
    monkeypatch.setenv("PYOPENCL_CTX", f"{pi}:1")
    assert device.resolve_selector() == (pi, 1)
    monkeypatch.setenv("PYOPENCL_CTX", "mixed:broken")  # pyopencl's name-substring form
    assert device.resolve_selector() == (pi, 1)
    monkeypatch.setenv("AXONML_DEVICE", "0:0")  # AXONML_DEVICE wins
    assert device.resolve_selector() == (0, 0)
    monkeypatch.delenv("AXONML_DEVICE")
    monkeypatch.setenv("PYOPENCL_CTX", "no-such-platform")
    with pytest.raises(DeviceError, match="PYOPENCL_CTX"):
        device.resolve_selector()


def test_pyopencl_ctx_numeric_part_is_an_index(monkeypatch, isolated_devices):
    plat = FakePlatform("Fake GPUs")
    plat._devices = [FakeDevice("GeForce GTX 1080", plat, cl.device_type.GPU),
                     FakeDevice("GeForce RTX 3090", plat, cl.device_type.GPU)]
    monkeypatch.setattr(device, "platforms", lambda: [(0, plat, plat._devices)])
    monkeypatch.setenv("PYOPENCL_CTX", "0:1")
    assert device.resolve_selector() == (0, 1)


def test_platform_whose_get_devices_raises_is_listed_as_no_devices(monkeypatch, isolated_devices):
    real = [p for _pi, p, _ds in real_platforms()]
    broken = FakePlatform("Broken", raises=cl.RuntimeError("clGetDeviceIDs failed: DEVICE_NOT_FOUND"))
    monkeypatch.setattr(cl, "get_platforms", lambda: real + [broken])
    listed = device.platforms()
    assert isinstance(listed[-1][2], str) and "no devices" in listed[-1][2]


def test_get_device_returns_one_object_per_device():
    info = device.all_device_infos()[0]
    a = device.get_device(info.selector)
    assert device.get_device(info.selector) is a
    assert device.get_device(f"{info.platform}:{info.name}".upper()) is a
    assert device.get_device(a) is a
    if "%d:%d" % device.resolve_selector() == info.selector:
        assert device.get_device() is a


def test_check_dtype_names_the_device_when_fp64_is_missing(monkeypatch):
    # A device without fp64, as an emulated target makes one (the real device may have it).
    dev = device.Device(0, 0, target={"fp64": False})
    assert not dev.supports("float64")
    with pytest.raises(DeviceError) as e:
        dev.check_dtype("float64")
    assert dev.name in str(e.value) and "float64" in str(e.value) and "0:0" in str(e.value)
    assert dev.check_dtype("float32") == np.float32
    from axonml_autograd import Tensor
    with pytest.raises(DeviceError, match="float64"):
        Tensor.zeros([2], dtype="float64", device=dev)


@pytest.mark.parametrize("how", ["empty", "raises"])
def test_no_platform_raises_device_error_with_install_hint(monkeypatch, isolated_devices, how):
    if how == "empty":
        monkeypatch.setattr(cl, "get_platforms", lambda: [])
    else:
        def no_icd():
            raise cl.LogicError("clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR")
        monkeypatch.setattr(cl, "get_platforms", no_icd)
    for call in (device.resolve_selector, device.get_device, device.default_device):
        with pytest.raises(DeviceError, match=r'pip install "pyopencl\[pocl\]"'):
            call()
