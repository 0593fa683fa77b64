"""Device selectors by name, moving tensors and Variables between devices, shape-op errors that name
the op and the argument, and values too large for a dtype."""

from __future__ import annotations

import types

import numpy as np
import pyopencl as cl
import pytest

import axonml_autograd as ag
from axonml_autograd import Tensor, Variable, device
from axonml_autograd.device import Device, DeviceError


# ------------------------------------------------------------------------------------------------------
# Selecting a device by name (fake platforms: what resolve_selector reads of pyopencl's objects)
# ------------------------------------------------------------------------------------------------------

def _fake_platform(name, vendor):
    return types.SimpleNamespace(name=name, vendor=vendor)


def _fake_device(name, platform, vendor, version, kind=cl.device_type.CPU):
    return types.SimpleNamespace(name=name, platform=platform, vendor=vendor, version=version, type=kind)


@pytest.fixture
def two_runtimes(monkeypatch):
    """The same EPYC under PoCL (platform 0) and Intel's CPU runtime (platform 1), plus a GPU (platform 2)."""
    monkeypatch.delenv("AXONML_DEVICE", raising=False)
    monkeypatch.delenv("PYOPENCL_CTX", raising=False)
    pocl = _fake_platform("Portable Computing Language", "The pocl project")
    intel = _fake_platform("Intel(R) OpenCL", "Intel(R) Corporation")
    amd = _fake_platform("AMD Accelerated Parallel Processing", "Advanced Micro Devices, Inc.")
    world = [
        (0, pocl, [_fake_device("pthread-AMD EPYC 7763 64-Core Processor", pocl, "AuthenticAMD",
                                "OpenCL 3.0 PoCL HSTR: pthread-x86_64")]),
        (1, intel, [_fake_device("AMD EPYC 7763 64-Core Processor", intel, "Intel(R) Corporation",
                                 "OpenCL 3.0 (Build 0)")]),
        (2, amd, [_fake_device("gfx90a:sramecc+:xnack-", amd, "Advanced Micro Devices, Inc.",
                               "OpenCL 2.0", cl.device_type.GPU)]),
    ]
    monkeypatch.setattr(device, "platforms", lambda: world)
    return world


def test_ambiguous_device_name_is_refused_listing_each_match_and_its_selector(two_runtimes):
    with pytest.raises(DeviceError) as e:
        device.resolve_selector("amd epyc")
    msg = str(e.value)
    assert "'amd epyc'" in msg and "ambiguous" in msg and "matches 2 devices" in msg
    assert "0:0 pthread-AMD EPYC 7763 64-Core Processor (Portable Computing Language)" in msg
    assert "1:0 AMD EPYC 7763 64-Core Processor (Intel(R) OpenCL)" in msg
    assert "2:0" not in msg.split("; name one")[0]          # the GPU did not match
    assert "platform:device" in msg and "index" in msg       # how to be more specific


def test_ambiguous_axonml_device_is_refused_and_names_the_variable(two_runtimes, monkeypatch):
    monkeypatch.setenv("AXONML_DEVICE", "epyc")
    with pytest.raises(DeviceError, match=r"AXONML_DEVICE 'epyc' is ambiguous: it matches 2 devices"):
        device.resolve_selector()


def test_a_name_matching_one_device_still_selects_it(two_runtimes):
    assert device.resolve_selector("pthread") == (0, 0)
    assert device.resolve_selector("POCL") == (0, 0)        # in the platform vendor
    assert device.resolve_selector("gfx90a") == (2, 0)
    assert device.resolve_selector("gpu") == (2, 0)         # the device type is searched too


def test_platform_and_device_names_combine_with_a_colon(two_runtimes):
    assert device.resolve_selector("pocl:epyc") == (0, 0)
    assert device.resolve_selector("intel:epyc") == (1, 0)
    assert device.resolve_selector("Intel:") == (1, 0)      # an empty side matches any device
    assert device.resolve_selector("intel:0") == (1, 0)     # a side of digits is an index
    assert device.resolve_selector("1:epyc") == (1, 0)
    assert device.resolve_selector(":gfx") == (2, 0)
    assert device.resolve_selector("amd:") == (2, 0)        # the platform side reads only platform names


def test_platform_device_selector_that_is_still_ambiguous_is_refused(two_runtimes):
    with pytest.raises(DeviceError, match=r"':0' is ambiguous: it matches 3 devices"):
        device.resolve_selector(":0")
    with pytest.raises(DeviceError, match=r"':cpu' is ambiguous: it matches 2 devices"):
        device.resolve_selector(":cpu")


def test_device_name_with_a_colon_is_still_found_as_a_plain_substring(two_runtimes):
    assert device.resolve_selector("gfx90a:sramecc") == (2, 0)


def test_platform_device_selector_matching_nothing_lists_the_devices(two_runtimes):
    with pytest.raises(DeviceError) as e:
        device.resolve_selector("nvidia:epyc")
    msg = str(e.value)
    assert "'nvidia:epyc': no device matches; available:" in msg
    assert "0:0 pthread-AMD EPYC" in msg and "1:0 AMD EPYC" in msg and "2:0 gfx90a" in msg


def test_index_selectors_are_unchanged(two_runtimes):
    assert device.resolve_selector("1:0") == (1, 0)
    assert device.resolve_selector("2") == (2, 0)
    assert device.resolve_selector("1:") == (1, 0)
    with pytest.raises(DeviceError, match=r"'3:0': device 3:0 does not exist; available"):
        device.resolve_selector("3:0")
