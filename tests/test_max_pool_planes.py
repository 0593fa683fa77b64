"""Max pooling's CPU kernels (runs of planes per work-item: row-at-a-time, flattened chunks, and the
scatter backward for windows that cannot overlap) give the bits, indices and gradients of the
one-element-per-work-item kernels the GPU strategy runs, in float32, with ties and NaNs.

Needs no torch: the element kernels are the reference here (tests/test_conv.py checks them, and the
plane kernels through them, against torch)."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable
import axonml_autograd.nn.functional as F

CASES = [
    # (input shape, kernel, stride, padding, dilation): output widths below and above a float vector,
    # windows that overlap (stride < kernel) and that cannot, padding and dilation.
    ((2, 3, 16, 16), 2, None, 0, 1),     # OW 8: a row per vector, disjoint windows (scatter backward)
    ((3, 5, 8, 8), 2, None, 0, 1),       # OW 4: flattened chunks
    ((1, 2, 17, 129), 2, None, 0, 1),    # OW 64 with a tail, odd H
    ((2, 3, 17, 17), 3, 2, 1, 1),        # overlapping windows, padding
    ((1, 3, 17, 9), (3, 2), (2, 1), (1, 1), (2, 1)),   # dilation, rectangular
    ((65, 1, 3, 3), 3, 1, 1, 1),         # many planes, OW 3, windows overlapping a lot
    ((1, 1, 1, 1), 1, None, 0, 1),
]


def _run(dev, x_h, g_h, k, s, p, d):
    x = Variable(Tensor.from_numpy(x_h, device=dev), requires_grad=True)
    y, idx = F.max_pool2d(x, k, s, p, d, return_indices=True)
    (y * Variable(Tensor.from_numpy(g_h, device=dev))).sum().backward()
    return y.numpy(), idx.numpy(), x.grad().numpy()


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_plane_kernels_equal_the_element_kernels_bit_for_bit(device, gpu_like, case):
    if device.target.is_gpu:
        pytest.skip("the plane kernels are the CPU strategy's")
    shape, k, s, p, d = case
    rng = np.random.default_rng(sum(shape))
    # Small integers give ties inside windows (the first maximum wins); a few NaNs win their windows.
    x_h = rng.integers(-3, 3, shape).astype(np.float32)
    x_h.flat[rng.choice(x_h.size, size=max(1, x_h.size // 50), replace=False)] = np.nan
    ref_y = F.max_pool2d(Variable(Tensor.from_numpy(x_h, device=gpu_like)), k, s, p, d).numpy()
    g_h = rng.standard_normal(ref_y.shape).astype(np.float32)
    ours = _run(device, x_h, g_h, k, s, p, d)
    theirs = _run(gpu_like, x_h, g_h, k, s, p, d)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))   # bits, NaNs included


def test_overlapping_windows_sum_every_contribution_in_the_gather_order(device):
    # Stride 1, kernel 2: an input that is the maximum of several windows gets their gradients summed.
    x_h = np.array([[[[0.0, 5.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]], dtype=np.float32)
    x = Variable(Tensor.from_numpy(x_h, device=device), requires_grad=True)
    y = F.max_pool2d(x, 2, 1)
    g = np.array([[[[1.0, 2.0], [4.0, 8.0]]]], dtype=np.float32)
    (y * Variable(Tensor.from_numpy(g, device=device))).sum().backward()
    want = np.zeros_like(x_h)
    want[0, 0, 0, 1] = 1.0 + 2.0          # the top two windows both pick the 5
    want[0, 0, 1, 0] = 4.0                # bottom-left: all zeros, the first position wins
    want[0, 0, 1, 1] = 8.0
    np.testing.assert_array_equal(x.grad().numpy(), want)
