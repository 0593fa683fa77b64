"""distributions.Categorical and Normal against torch.distributions in float64: values and gradients of
log_prob, entropy and rsample (with the same noise), finite-difference checks, and sample statistics."""

import math

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, check_gradients, manual_seed
from axonml_autograd.device import default_device
from axonml_autograd.distributions import Categorical, Normal

pytestmark = pytest.mark.skipif(not default_device().fp64, reason="device lacks cl_khr_fp64")
RNG = np.random.default_rng(3)


def _v(a):
    return Variable(Tensor.from_numpy(np.asarray(a, np.float64)), requires_grad=True)


def _both(a):
    torch = pytest.importorskip("torch")
    return _v(a), torch.tensor(np.asarray(a, np.float64), requires_grad=True)


def _check(ours, theirs, leaves, tleaves, weights):
    """Values equal, and the gradients of sum(weights * value) reach the parameters as torch's do."""
    import torch
    np.testing.assert_allclose(ours.data().numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    (ours * Variable(Tensor.from_numpy(weights))).sum().backward()
    (theirs * torch.tensor(weights)).sum().backward()
    for a, b in zip(leaves, tleaves):
        np.testing.assert_allclose(a.grad().numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_categorical_log_prob_and_entropy_match_torch(kind):
    torch = pytest.importorskip("torch")
    raw = RNG.uniform(0.1, 2.0, (3, 5)) if kind == "probs" else RNG.normal(size=(3, 5))
    ours_p, torch_p = _both(raw)
    d, td = Categorical(**{kind: ours_p}), torch.distributions.Categorical(**{kind: torch_p})
    np.testing.assert_allclose(d.probs.data().numpy(), td.probs.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(d.logits.data().numpy(), td.logits.detach().numpy(), rtol=1e-12, atol=1e-14)
    value = RNG.integers(0, 5, (4, 3))
    lp = d.log_prob(Tensor.from_numpy(value.astype(np.int32), dtype="int32"))
    tlp = td.log_prob(torch.tensor(value))
    assert lp.shape() == [4, 3]
    _check(lp, tlp, [ours_p], [torch_p], RNG.normal(size=(4, 3)))

    ours_p, torch_p = _both(raw)
    d, td = Categorical(**{kind: ours_p}), torch.distributions.Categorical(**{kind: torch_p})
    _check(d.entropy(), td.entropy(), [ours_p], [torch_p], RNG.normal(size=3))


def test_categorical_with_zero_probability_and_gradcheck():
    torch = pytest.importorskip("torch")
    raw = np.array([[0.0, 1.0, 3.0], [2.0, 2.0, 0.5]])
    ours_p, torch_p = _both(raw)
    d, td = Categorical(probs=ours_p), torch.distributions.Categorical(probs=torch_p)
    _check(d.entropy(), td.entropy(), [ours_p], [torch_p], np.array([1.0, -2.0]))
    logits = _v(RNG.normal(size=(2, 4)))
    idx = Tensor.from_vec([3, 0], [2], dtype="int32")
    assert check_gradients(lambda l: Categorical(logits=l).log_prob(idx), [logits])
    assert check_gradients(lambda l: Categorical(logits=l).entropy(), [logits])


def test_categorical_sample_frequencies_and_shape():
    p = np.array([[0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]])
    d = Categorical(probs=Tensor.from_numpy(p * 7.0))
    s = d.sample([5000, 2], seed=4)
    assert s.shape() == [5000, 2, 2] and s.dtype == np.int32
    got = s.numpy().reshape(-1, 2)
    for r in range(2):
        np.testing.assert_allclose(np.bincount(got[:, r], minlength=4) / len(got), p[r], atol=0.02)
    assert Categorical(logits=Tensor.zeros([6])).sample().shape() == []
    manual_seed(2)
    a = d.sample([8]).numpy()
    manual_seed(2)
    np.testing.assert_array_equal(a, d.sample([8]).numpy())


def test_normal_log_prob_entropy_rsample_match_torch():
    torch = pytest.importorskip("torch")
    loc, tloc = _both(RNG.normal(size=3))
    scale, tscale = _both(RNG.uniform(0.5, 2.0, (2, 1)))
    d, td = Normal(loc, scale), torch.distributions.Normal(tloc, tscale)
    assert d.batch_shape == list(td.batch_shape) == [2, 3]
    x = RNG.normal(size=(4, 2, 3))
    _check(d.log_prob(Tensor.from_numpy(x)), td.log_prob(torch.tensor(x)), [loc, scale], [tloc, tscale],
           RNG.normal(size=(4, 2, 3)))

    loc, tloc = _both(RNG.normal(size=3))
    scale, tscale = _both(RNG.uniform(0.5, 2.0, (2, 1)))
    d, td = Normal(loc, scale), torch.distributions.Normal(tloc, tscale)
    _check(d.entropy(), td.entropy(), [scale], [tscale], RNG.normal(size=(2, 3)))

    loc, tloc = _both(RNG.normal(size=3))
    scale, tscale = _both(RNG.uniform(0.5, 2.0, (2, 1)))
    d = Normal(loc, scale)
    r = d.rsample([5], seed=9)
    eps = Tensor.randn([5, 2, 3], seed=9, dtype="float64").numpy()
    _check(r, tloc + tscale * torch.tensor(eps), [loc, scale], [tloc, tscale], RNG.normal(size=(5, 2, 3)))
    assert d.sample([5]).requires_grad() is False


def test_normal_gradcheck_and_statistics():
    loc, scale = _v([0.3, -1.0]), _v([1.5, 0.7])
    x = Tensor.from_numpy(RNG.normal(size=(3, 2)))
    assert check_gradients(lambda m, s: Normal(m, s).log_prob(x), [loc, scale])
    assert check_gradients(lambda m, s: Normal(m, s).rsample([3], seed=5), [loc, scale])
    s = Normal(Tensor.from_vec([2.0], [1]), 0.5).sample([20000], seed=1).data().numpy()
    assert abs(s.mean() - 2.0) < 0.02 and abs(s.std() - 0.5) < 0.02
    assert abs(Normal(0.0, 1.0).entropy().item() - (0.5 + 0.5 * math.log(2 * math.pi))) < 1e-6


def test_errors():
    with pytest.raises(ValueError, match="exactly one of probs or logits"):
        Categorical()
    with pytest.raises(ValueError, match="exactly one of probs or logits"):
        Categorical(probs=Tensor.ones([2]), logits=Tensor.ones([2]))
    with pytest.raises(TypeError, match="integer category indices"):
        Categorical(probs=Tensor.ones([2])).log_prob(Tensor.ones([1]))
    with pytest.raises(ValueError, match="Categorical.log_prob"):
        Categorical(probs=Tensor.ones([3, 2])).log_prob(Tensor.zeros([4], "int32"))
    with pytest.raises(TypeError, match="Normal loc"):
        Normal("a", 1.0)
