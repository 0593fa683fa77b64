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


# ------------------------------------------------------------------------------------------------------
# Tensor.to / Variable.to: a device (any spelling), a dtype, or both
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dev():
    return ag.default_device()


@pytest.fixture(scope="module")
def twin(dev):
    """A second Device object for the same hardware: its own context, so moving to it is a real copy."""
    return Device(dev.info.platform_index, dev.info.device_index)


def _spellings(d):
    """The ways of naming device ``d`` that get_device maps to the same object."""
    return [d, d.selector, f"{d.info.platform_index}", f"{d.info.platform_index}:",
            d.info.platform_index if d.info.device_index == 0 else d.selector]


def test_tensor_to_the_selector_the_mixed_device_error_suggests_returns_the_tensor_itself(dev):
    t = Tensor.from_vec([1.0, 2.0, 3.0], [3])
    assert t.device is dev
    for spelling in _spellings(dev):
        assert t.to(spelling) is t, spelling
        assert t.to(device=spelling) is t, spelling
    assert t.to(dev, "float32") is t and t.to(t) is t


def test_tensor_to_another_device_object_copies_through_the_host(dev, twin):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = Tensor.from_numpy(a)
    moved = t.to(twin)
    assert moved.device is twin and moved.dtype == np.float32
    np.testing.assert_array_equal(moved.numpy(), a)
    back = moved.to(dev.selector)
    assert back.device is dev
    np.testing.assert_array_equal(back.numpy(), a)
    # a transposed view moves as what it shows
    np.testing.assert_array_equal(t.transpose(0, 1).to(twin).numpy(), a.T)


def test_tensor_to_device_and_dtype_together(dev, twin):
    t = Tensor.from_vec([1.5, -2.5, 3.0], [3])
    for got in (t.to(twin, "int32"), t.to(device=twin, dtype=np.int32), t.to(Tensor.zeros([1], "int32", twin))):
        assert got.device is twin and got.dtype == np.int32
        np.testing.assert_array_equal(got.numpy(), np.array([1.5, -2.5, 3.0], np.float32).astype(np.int32))
    assert t.to("int32").device is dev


def test_tensor_to_copy_true_gives_a_new_buffer(dev):
    t = Tensor.from_vec([1.0, 2.0], [2])
    c = t.to(dev, copy=True)
    assert c is not t and c._storage is not t._storage
    np.testing.assert_array_equal(c.numpy(), t.numpy())


@pytest.mark.parametrize("args,match", [
    (("no-such-device-xyz",), r"to: device selector 'no-such-device-xyz': no device matches"),
    ((1.5,), r"to: expected a device .* a dtype or a tensor, got 1.5"),
    (("float32", "float64"), r"to: two dtypes given"),
    (("complex64",), r"to: dtype"),
])
def test_tensor_to_refuses_what_is_neither_a_device_nor_a_dtype_naming_the_op(args, match):
    t = Tensor.from_vec([1.0], [1])
    for x in (t, Variable(t)):
        with pytest.raises((TypeError, DeviceError), match=match):
            x.to(*args)


def test_variable_to_the_same_device_in_any_spelling_is_the_variable_itself(dev):
    x = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
    for spelling in _spellings(dev):
        assert x.to(spelling) is x, spelling
    assert x.to(dev, "float32") is x and x.to(x) is x


@pytest.mark.parametrize("direction", ["default_to_twin", "twin_to_default"])
def test_variable_to_another_device_is_differentiable_and_the_gradient_lands_on_the_source_device(
        dev, twin, direction):
    src, dst = (dev, twin) if direction == "default_to_twin" else (twin, dev)
    a = np.array([[0.5, -1.0, 2.0], [1.5, 3.0, -0.25]], np.float32)
    w = np.array([[1.0, -2.0, 0.5], [0.25, 1.0, 4.0]], np.float32)
    x = Variable(Tensor.from_numpy(a, device=src), requires_grad=True)
    for spelling in (dst, dst.selector) if dst is dev else (dst,):
        y = x.to(spelling)
        assert y.device is dst and y.grad_fn is not None and y.grad_fn.name() == "ToCopyBackward"
        np.testing.assert_array_equal(y.numpy(), a)
        loss = (y * y * Variable(Tensor.from_numpy(w, device=dst))).sum()
        x.zero_grad()
        loss.backward()
        g = x.grad()
        assert g.device is src and g.dtype == np.float32
        np.testing.assert_allclose(g.numpy(), 2 * a * w, rtol=1e-6)


def test_variable_to_another_device_and_dtype_casts_the_gradient_back(dev, twin):
    if not twin.fp64:
        pytest.skip("no float64 on this device")
    a = np.array([1.0, -2.0, 0.5], np.float32)
    x = Variable(Tensor.from_numpy(a), requires_grad=True)
    y = x.to(twin, "float64")
    assert y.device is twin and y.dtype == np.float64
    (y * y * y).sum().backward()
    assert x.grad().device is dev and x.grad().dtype == np.float32
    np.testing.assert_allclose(x.grad().numpy(), 3 * a.astype(np.float64) ** 2, rtol=1e-6)


def test_variable_moved_between_devices_has_a_second_derivative(dev, twin):
    a = np.array([1.0, 2.0, -3.0], np.float32)
    x = Variable(Tensor.from_numpy(a, device=twin), requires_grad=True)
    y = x.to(dev)
    (g,) = ag.grad((y * y * y).sum(), x, create_graph=True)   # 3x^2, on x's device
    assert g.device is twin
    np.testing.assert_allclose(g.numpy(), 3 * a ** 2, rtol=1e-6)
    g.sum().backward()
    assert x.grad().device is twin
    np.testing.assert_allclose(x.grad().numpy(), 6 * a, rtol=1e-6)


def test_variable_to_dtype_keeps_working(dev):
    x = Variable(Tensor.from_vec([1.25, 2.75], [2]), requires_grad=True)
    i = x.to("int32")
    assert i.dtype == np.int32 and not i.requires_grad() and i.to_vec() == [1, 2]
    if dev.fp64:
        d = x.to(np.float64)
        assert d.grad_fn.name() == "ToCopyBackward"
        (d * d).sum().backward()
        assert x.grad().dtype == np.float32 and x.grad().to_vec() == [2.5, 5.5]


def test_integer_variable_moves_without_a_graph(dev, twin):
    i = Variable(Tensor.from_vec([1, 2, 3], [3], dtype="int64"))
    j = i.to(twin)
    assert j.device is twin and j.dtype == np.int64 and not j.requires_grad() and j.to_vec() == [1, 2, 3]


# ------------------------------------------------------------------------------------------------------
# Shape ops: errors name the op, the argument and the shape (as Tensor and as Variable)
# ------------------------------------------------------------------------------------------------------

def _both(t):
    return [t, Variable(t)]


def test_transpose_of_a_0d_tensor_accepts_dims_0_and_minus_1_as_a_no_op():
    for x in _both(Tensor.scalar(2.5)):
        for d0, d1 in ((0, 0), (-1, 0), (0, -1), (-1, -1)):
            y = x.transpose(d0, d1)
            assert y.shape() == [] and y.item() == 2.5
        assert x.swapaxes(0, -1).shape() == [] and x.t().shape() == [] and x.T.shape() == []


def test_transpose_of_a_0d_variable_passes_the_gradient_through():
    x = Variable(Tensor.scalar(3.0), requires_grad=True)
    (x.transpose(0, 0) * 2.0).backward()
    assert x.grad().item() == 2.0


SHAPE_ERRORS = [
    # (call on x, which x, error, message)
    (lambda x: x.transpose(0, 1), "0d", IndexError,
     r"^transpose dim1: 1 is out of range for a tensor of 0 dimensions, shape \[\] "
     r"\(expected to be in range of \[-1, 0\], but got 1\)$"),
    (lambda x: x.transpose(2, 0), "2x3", IndexError,
     r"^transpose dim0: 2 is out of range .* shape \[2, 3\] \(expected to be in range of \[-2, 1\], but got 2\)$"),
    (lambda x: x.swapdims(0, -3), "2x3", IndexError, r"^transpose dim1: -3 is out of range .* shape \[2, 3\]"),
    (lambda x: x.mT, "0d", ValueError, r"^mT: expected a matrix .* got shape \[\]$"),
    (lambda x: x.mT, "3", ValueError, r"^mT: expected a matrix .* got shape \[3\]$"),
    (lambda x: x.permute([0]), "2x3", ValueError, r"^permute: expected 2 dims for shape \[2, 3\], got \[0\] \(a permutation of its dims\)$"),
    (lambda x: x.permute([0, 1, 2]), "2x3", ValueError, r"^permute: expected 2 dims for shape \[2, 3\], got \[0, 1, 2\] \(a permutation"),
    (lambda x: x.permute([1, -1]), "2x3", ValueError, r"^permute: \[1, -1\] is not a permutation .* shape \[2, 3\]"),
    (lambda x: x.permute([0, 5]), "2x3", IndexError, r"^permute dim: 5 is out of range .* shape \[2, 3\]"),
    (lambda x: x.narrow(1, 2, 2), "2x3", IndexError, r"^narrow: start 2 \+ length 2 exceeds size 3 of dim 1 in shape \[2, 3\]$"),
    (lambda x: x.narrow(1, -4, 1), "2x3", IndexError,
     r"^narrow: start -4 is out of range for dim 1 of size 3 in shape \[2, 3\] \(expected to be in range of \[-3, 3\]\)$"),
    (lambda x: x.narrow(2, 0, 1), "2x3", IndexError, r"^narrow dim: 2 is out of range .* shape \[2, 3\]"),
    (lambda x: x.narrow(0, 0, 1), "0d", IndexError, r"^narrow: a 0-d tensor has no dimension to narrow$"),
    (lambda x: x.reshape([4, 2]), "2x3", ValueError, r"^reshape: cannot reshape \[2, 3\] \(6 elements\) to \[4, 2\]$"),
    (lambda x: x.reshape([-1, -1]), "2x3", ValueError, r"^reshape: only one dimension can be -1, got \[-1, -1\]$"),
    (lambda x: x.squeeze(2), "2x3", IndexError,
     r"^squeeze dim: 2 is out of range .* shape \[2, 3\] \(expected to be in range of \[-2, 1\], but got 2\)$"),
    (lambda x: x.squeeze(1), "0d", IndexError, r"^squeeze dim: 1 is out of range .* shape \[\]"),
    (lambda x: x.unsqueeze(3), "2x3", IndexError,
     r"^unsqueeze dim: 3 is out of range for a tensor of shape \[2, 3\] \(expected to be in range of \[-3, 2\], but got 3\)$"),
    (lambda x: x.unsqueeze(-2), "0d", IndexError,
     r"^unsqueeze dim: -2 is out of range for a tensor of shape \[\] \(expected to be in range of \[-1, 0\], but got -2\)$"),
    (lambda x: x.movedim(2, 0), "2x3", IndexError, r"^movedim source: 2 is out of range .* shape \[2, 3\]"),
    (lambda x: x.moveaxis(0, -3), "2x3", IndexError, r"^moveaxis destination: -3 is out of range .* shape \[2, 3\]"),
    (lambda x: x.movedim([0, 0], [0, 1]), "2x3", ValueError, r"^movedim: source \[0, 0\] repeats a dim of shape \[2, 3\]$"),
    (lambda x: x.movedim([0, 1], [1, -1]), "2x3", ValueError, r"^movedim: destination \[1, -1\] repeats a dim"),
    (lambda x: x.movedim([0, 1], [0]), "2x3", ValueError,
     r"^movedim: source \[0, 1\] \(2 dims\) and destination \[0\] \(1 dims\) must name as many dims, for shape \[2, 3\]$"),
    (lambda x: x.flatten(3), "2x3", IndexError, r"^flatten start_dim: 3 is out of range .* shape \[2, 3\]"),
    (lambda x: x.unflatten(1, (2, 2)), "2x3", ValueError,
     r"^unflatten: sizes \[2, 2\] do not multiply to the size 3 of dim 1 in shape \[2, 3\]$"),
]


@pytest.mark.parametrize("kind", ["Tensor", "Variable"])
@pytest.mark.parametrize("call,which,error,message", SHAPE_ERRORS)
def test_shape_op_errors_name_the_op_the_argument_and_the_shape(call, which, error, message, kind):
    t = {"0d": Tensor.scalar(1.0), "3": Tensor.zeros([3]), "2x3": Tensor.zeros([2, 3])}[which]
    x = t if kind == "Tensor" else Variable(t, requires_grad=True)
    with pytest.raises(error, match=message):
        call(x)


def test_narrow_counts_a_negative_start_from_the_end_as_torch():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    for x in _both(Tensor.from_numpy(a)):
        np.testing.assert_array_equal(x.narrow(1, -2, 2).numpy(), a[:, 1:3])
        np.testing.assert_array_equal(x.narrow(-1, -3, 1).numpy(), a[:, 0:1])


def test_movedim_matches_numpy_and_moves_the_gradient_back():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    w = np.random.default_rng(0).normal(size=(4, 2, 3)).astype(np.float32)
    for src, dst in ((2, 0), (-1, 0), ([0, 2], [2, 0]), ([0], [-1])):
        want = np.moveaxis(a, src, dst)
        for x in _both(Tensor.from_numpy(a)):
            np.testing.assert_array_equal(x.movedim(src, dst).numpy(), want)
            np.testing.assert_array_equal(x.moveaxis(src, dst).numpy(), want)
    x = Variable(Tensor.from_numpy(a), requires_grad=True)
    (x.movedim(2, 0) * Variable(Tensor.from_numpy(w))).sum().backward()
    np.testing.assert_array_equal(x.grad().numpy(), np.moveaxis(w, 0, 2))


# ------------------------------------------------------------------------------------------------------
# Values too large for the dtype: a ValueError naming the op and the value, never OverflowError
# ------------------------------------------------------------------------------------------------------

HUGE = 10 ** 400   # beyond float64 and every integer type

TOO_LARGE = [
    (lambda: Tensor.from_vec([HUGE], [1]), r"^from_vec: value 100000000000\.\.\. \(401 digits\) cannot be converted "
                                           r"to float32 without overflow"),
    (lambda: Tensor.from_vec([1.0, -HUGE], [2], dtype="float32"), r"^from_vec: value -10000000000\.\.\. \(402 digits\)"),
    (lambda: Tensor.from_vec([HUGE], [1], dtype="int64"), r"^from_vec: value 100000000000\.\.\. \(401 digits\) is not an int64"),
    (lambda: Tensor.from_vec([2 ** 63], [1], dtype="int64"), r"^from_vec: value 9223372036854775808 is not an int64"),
    (lambda: Tensor.from_vec([2 ** 31], [1], dtype="int32"), r"^from_vec: value 2147483648 is not an int32"),
    (lambda: Tensor.from_numpy([HUGE]), r"^from_numpy: value 100000000000\.\.\. \(401 digits\) is not an int64"),
    (lambda: Tensor.from_numpy([[1, 2], [3, -2 ** 64]]), r"^from_numpy: value -18446744073709551616 is not an int64"),
    (lambda: Tensor.from_numpy([HUGE], dtype="float32"), r"^from_numpy: value 100000000000\.\.\. \(401 digits\) "
                                                         r"cannot be converted to float32 without overflow"),
    (lambda: Tensor.from_numpy([0.5, HUGE]), r"^from_numpy: value 100000000000\.\.\. \(401 digits\) cannot be "
                                             r"converted to a float without overflow"),
    (lambda: ag.from_numpy([HUGE], dtype="int32"), r"^from_numpy: value 100000000000\.\.\. .* is not an int32"),
    (lambda: Tensor.full([2], HUGE), r"^full: 100000000000\.\.\. \(401 digits\) is beyond the range of a float"),
    (lambda: Tensor.full([2], HUGE, dtype="int64"), r"^full: value 100000000000\.\.\. \(401 digits\) is not an int64"),
    (lambda: Tensor.full([2], -HUGE, dtype="int32"), r"^full: value -10000000000\.\.\. \(402 digits\) is not an int32"),
    (lambda: Tensor.full([2], 2 ** 63, dtype="int64"), r"^full: value 9223372036854775808 is not an int64"),
    (lambda: Tensor.full([2], 1e39), r"^full: value 1e\+39 cannot be converted to float32 without overflow$"),
    (lambda: Tensor.full([2], -10 ** 39), r"^full: value -1e\+39 cannot be converted to float32 without overflow$"),
    (lambda: Tensor.full([0], HUGE, dtype="int64"), r"^full: value .* is not an int64"),   # even with no elements
    (lambda: ag.full([2], HUGE), r"^full: value 100000000000\.\.\. \(401 digits\) is not an int64"),
    (lambda: ag.full([2], HUGE, dtype="float32"), r"^full: 100000000000\.\.\. \(401 digits\) is beyond the range"),
    (lambda: Tensor.scalar(HUGE), r"^full: .* is beyond the range of a float"),
    (lambda: Tensor.zeros([2], "int64").fill_(HUGE), r"^fill: value .* is not an int64"),
]


@pytest.mark.parametrize("call,message", TOO_LARGE)
def test_a_value_too_large_for_the_dtype_is_a_value_error_naming_the_op(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_values_that_fit_are_accepted_and_stay_exact():
    # through float64, 2**62 + 1 lost its last bit
    assert Tensor.from_vec([2 ** 62 + 1, -2 ** 63], [2], dtype="int64").to_vec() == [2 ** 62 + 1, -2 ** 63]
    assert Tensor.full([1], 2 ** 63 - 1, dtype="int64").to_vec() == [2 ** 63 - 1]
    assert Tensor.full([1], -2 ** 31, dtype="int32").to_vec() == [-2 ** 31]
    # a Python int beyond int64 is a fine float64 (torch.tensor([2**70], dtype=torch.float64))
    if ag.default_device().fp64:
        assert Tensor.from_numpy([1, 2 ** 70], dtype="float64").to_vec() == [1.0, float(2 ** 70)]
    assert Tensor.from_vec([2 ** 70], [1]).to_vec() == [float(np.float32(2 ** 70))]
    assert Tensor.full([1], float(np.finfo(np.float32).max)).to_vec() == [float(np.finfo(np.float32).max)]
    assert Tensor.full([2], float("inf")).to_vec() == [float("inf")] * 2


def test_a_finite_float_beyond_float32_becomes_inf_when_copied_as_torch_tensor_does_without_a_warning():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Tensor.from_vec([1e39, -1e39], [2]).to_vec() == [float("inf"), float("-inf")]
        assert Tensor.from_numpy(np.array([1e39]), dtype="float32").to_vec() == [float("inf")]
