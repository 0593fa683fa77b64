"""checkpoint(fn, *args): the same gradients as without it, random numbers reproduced at the
recomputation, and a 16-block MLP checkpointed per block peaks at at most half the device memory."""

import gc

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, default_device
from axonml_autograd.checkpoint import checkpoint
from axonml_autograd.random import manual_seed


def _blocks(n, width, seed=0):
    """n blocks of two Linear+ReLU layers each: (w1, b1, w2, b2)."""
    rng = np.random.default_rng(seed)

    def var(*shape, scale):
        return Variable(Tensor.from_numpy(rng.uniform(-scale, scale, shape).astype(np.float32)), True)
    return [(var(width, width, scale=0.2), var(width, scale=0.1), var(width, width, scale=0.2), var(width, scale=0.1))
            for _ in range(n)]


def _block(w1, b1, w2, b2):
    return lambda h: (h.matmul(w1).add_var(b1)).relu().matmul(w2).add_var(b2).relu() * 1.5


def _loss(blocks, x, use_checkpoint):
    h = x
    for params in blocks:
        h = checkpoint(_block(*params), h) if use_checkpoint else _block(*params)(h)
    return (h * h).mean()


def test_checkpointed_gradients_equal_the_plain_ones():
    x = Variable(Tensor.from_numpy(np.random.default_rng(1).standard_normal((9, 17)).astype(np.float32)))
    plain, ckpt = _blocks(3, 17), _blocks(3, 17)
    _loss(plain, x, False).backward()
    _loss(ckpt, x, True).backward()
    for ours, want in zip(ckpt, plain):
        for p, q in zip(ours, want):
            np.testing.assert_array_equal(p.grad().numpy(), q.grad().numpy())


def test_an_input_that_requires_grad_gets_its_gradient_through_the_segment():
    x = Variable(Tensor.from_vec([0.5, -1.0, 2.0], [3], dtype="float64"), requires_grad=True)
    checkpoint(lambda v: (v * v).exp(), x).sum().backward()
    xs = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(x.grad().numpy(), 2 * xs * np.exp(xs * xs), rtol=1e-12)


def test_a_dropout_mask_inside_the_segment_is_the_same_at_the_recomputation():
    w = Variable(Tensor.ones([64]), requires_grad=True)

    def dropped(v):
        mask = Variable(Tensor.rand([64]))
        return v * w * mask

    manual_seed(5)
    x = Variable(Tensor.ones([64]))
    checkpoint(dropped, x).sum().backward()
    manual_seed(5)
    want = Tensor.rand([64]).numpy()
    np.testing.assert_array_equal(w.grad().numpy(), want)     # d/dw sum(x w mask) = mask, the forward's


def test_sixteen_checkpointed_blocks_peak_at_half_the_memory_or_less():
    dev = default_device()
    blocks = _blocks(16, 128)      # 16 blocks of two layers, batch 1024: activations dominate
    x = Variable(Tensor.from_numpy(np.random.default_rng(2).standard_normal((1024, 128)).astype(np.float32)))

    def peak(use_checkpoint):
        for params in blocks:
            for p in params:
                p.zero_grad()
        gc.collect()
        dev.synchronize()
        dev.pool.peak_bytes = dev.pool.in_use_bytes
        start = dev.pool.in_use_bytes
        _loss(blocks, x, use_checkpoint).backward()
        dev.synchronize()
        return dev.pool.peak_bytes - start

    peak(False)
    peak(True)                 # warm both (kernels, pool)
    plain, ckpt = peak(False), peak(True)
    assert ckpt <= 0.5 * plain, (plain, ckpt)


def test_a_function_that_does_not_return_a_variable_is_refused():
    with pytest.raises(TypeError, match="checkpoint: the function must return a Variable"):
        checkpoint(lambda v: 3, Variable(Tensor.ones([2]), True))
