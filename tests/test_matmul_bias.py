"""The bias added by the product's own kernel (torch's addmm, which F.linear uses): the bits of the
product followed by a separate add, on both matmul strategies, with transposes, batches and shapes that
are not multiples of a tile; F.linear's gradients through it in float64; bad biases refused by name."""

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import Tensor, Variable
from axonml_autograd.backward import check_gradients
from axonml_autograd.elementwise_kernels import elementwise
from axonml_autograd.matmul import matmul
from axonml_autograd.nn import functional as F

RNG = np.random.default_rng(31)


def _t(*shape, dtype=np.float32):
    return Tensor.from_numpy(RNG.standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("strategy", ["blocked", "tiled"])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 17, 5), (17, 65, 3), (65, 3, 129), (129, 700, 17)])
def test_the_bias_gives_the_bits_of_a_separate_add(strategy, M, K, N):
    for ta, tb in ((False, False), (True, False), (False, True)):
        a = _t(*((K, M) if ta else (M, K)))
        b = _t(*((N, K) if tb else (K, N)))
        bias = _t(N)
        got = matmul(a, b, ta, tb, strategy=strategy, bias=bias).numpy()
        plain = matmul(a, b, ta, tb, strategy=strategy)
        want = elementwise("a + b", [plain, bias.reshape([1, N])]).numpy()
        np.testing.assert_array_equal(got, want)
        ref = (a.numpy().T if ta else a.numpy()).astype(np.float64) @ (b.numpy().T if tb else b.numpy()) \
            + bias.numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.sqrt(K))


def test_batched_products_add_the_bias_to_every_matrix():
    a, b, bias = _t(3, 2, 17, 9), _t(9, 33), _t(33)
    got = matmul(a, b, bias=bias).numpy()
    want = elementwise("a + b", [matmul(a, b), bias.reshape([1, 1, 1, 33])]).numpy()
    np.testing.assert_array_equal(got, want)


def test_linear_with_a_bias_is_one_launch_and_its_gradients_are_right(fp64, monkeypatch):
    from axonml_autograd import launch
    x = Variable(_t(5, 19, dtype=np.float64), requires_grad=True)
    w = Variable(_t(3, 19, dtype=np.float64), requires_grad=True)
    bias = Variable(_t(3, dtype=np.float64), requires_grad=True)
    launches = []
    real = launch.kernel
    monkeypatch.setattr(launch, "kernel", lambda *a, **k: (launches.append(a[1]), real(*a, **k))[1])
    y = F.linear(x, w, bias)
    monkeypatch.setattr(launch, "kernel", real)
    assert len(launches) == 1   # the product, its bias included
    np.testing.assert_allclose(y.numpy(), x.numpy() @ w.numpy().T + bias.numpy(), rtol=1e-12)
    assert check_gradients(lambda x, w, b: F.linear(x, w, b), [x, w, bias], atol=1e-7, rtol=1e-6)
    # Leading dims; and second derivatives: the gradient itself, differentiated (create_graph).
    x3 = Variable(_t(2, 3, 19, dtype=np.float64), requires_grad=True)
    assert check_gradients(lambda x, w, b: F.linear(x, w, b).tanh(), [x3, w, bias], atol=1e-7, rtol=1e-6)

    torch = pytest.importorskip("torch")
    for v in (x, w, bias):
        v.zero_grad()
    (gw,) = ag.autograd.grad((F.linear(x, w, bias).tanh() ** 2).sum(), [w], create_graph=True)
    (gw * gw).sum().backward()
    tx, tw, tb = (torch.from_numpy(v.numpy()).requires_grad_() for v in (x, w, bias))
    (tgw,) = torch.autograd.grad((torch.nn.functional.linear(tx, tw, tb).tanh() ** 2).sum(), [tw], create_graph=True)
    (tgw * tgw).sum().backward()
    for ours, theirs in ((x, tx), (w, tw), (bias, tb)):
        np.testing.assert_allclose(ours.grad().numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_bad_biases_are_refused_by_name():
    a, b = _t(4, 3), _t(3, 5)
    with pytest.raises(ValueError, match=r"bias must be a float32 tensor of shape \[5\]"):
        matmul(a, b, bias=_t(4))
    with pytest.raises(ValueError, match="bias must be"):
        matmul(a, b, bias=_t(5, dtype=np.float64))
    with pytest.raises(TypeError, match="bias"):
        matmul(a.astype(ag.bfloat16), b.astype(ag.bfloat16), bias=_t(5))
