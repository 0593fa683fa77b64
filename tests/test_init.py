"""Initialisers: fans as PyTorch computes them, bounds and spreads, seeds and reproducibility."""

import math

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, init
from axonml_autograd.nn import MLP, Linear


@pytest.mark.parametrize("shape,layout,fans", [
    ([30, 20], "torch", (20, 30)),              # nn.Linear weight [out, in]
    ([16, 3, 5, 5], "torch", (75, 400)),        # conv weight [out, in, kh, kw]
    ([20, 30], "in_out", (20, 30)),             # this package's Linear weight [in, out]
    ([3, 16, 5, 5], "in_out", (75, 400)),
])
def test_fan_in_and_fan_out(shape, layout, fans):
    assert init.calculate_fan_in_and_fan_out(Tensor.empty(shape), layout=layout) == fans
    assert init.calculate_fan_in_and_fan_out(shape, layout=layout) == fans


def test_fans_need_two_dimensions():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.calculate_fan_in_and_fan_out(Tensor.empty([5]))
    with pytest.raises(ValueError, match="layout"):
        init.calculate_fan_in_and_fan_out([2, 2], layout="nchw")


def test_gains_match_pytorch():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unsupported"):
        init.calculate_gain("softplus")


def _check_uniform(values, bound):
    assert values.min() >= -bound and values.max() <= bound
    # U(-b, b): std b / sqrt(3); with 40k samples the estimate is within about 1 %.
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert abs(values.mean()) < 0.02 * bound
    assert values.max() > 0.99 * bound and values.min() < -0.99 * bound


def test_xavier_uniform_bound_and_spread(device):
    w = Tensor.empty([200, 200])
    init.xavier_uniform_(w, gain=init.calculate_gain("tanh"), seed=5)
    _check_uniform(w.numpy(), 5 / 3 * math.sqrt(6 / 400))


@pytest.mark.parametrize("layout,fan", [("torch", 100), ("in_out", 400)])
def test_kaiming_uniform_uses_fan_in_of_layout(device, layout, fan):
    w = Variable(Tensor.empty([400, 100]), requires_grad=True)
    out = init.kaiming_uniform_(w, nonlinearity="relu", seed=1, layout=layout)
    assert out is w
    _check_uniform(w.numpy(), math.sqrt(3) * math.sqrt(2) / math.sqrt(fan))


def test_kaiming_fan_out_and_torch_linear_default(device):
    w = Tensor.empty([400, 100])
    init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu", seed=2)
    _check_uniform(w.numpy(), math.sqrt(6 / 400))
    init.kaiming_uniform_(w, a=math.sqrt(5), seed=2)          # torch.nn.Linear: bound 1/sqrt(fan_in)
    _check_uniform(w.numpy(), 1 / math.sqrt(100))
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(w, mode="fan_avg")


def test_normal_initialisers_spread(device):
    w = Tensor.empty([300, 200])
    init.kaiming_normal_(w, nonlinearity="relu", seed=3)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / 200), rel=0.03)
    init.xavier_normal_(w, seed=4)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / 500), rel=0.03)
    init.normal_(w, mean=2.0, std=0.5, seed=5)
    assert w.numpy().mean() == pytest.approx(2.0, abs=0.01)
    assert w.numpy().std() == pytest.approx(0.5, rel=0.03)


def test_uniform_constant_and_version(device):
    w = Variable(Tensor.zeros([1000]), requires_grad=True)
    v = w.data().version
    init.uniform_(w, -0.25, 0.75, seed=9)
    assert w.data().version > v
    a = w.numpy()
    assert a.min() >= -0.25 and a.max() < 0.75
    init.constant_(w, 3.0)
    assert set(w.numpy().tolist()) == {3.0}
    init.zeros_(w)
    assert not w.numpy().any()


def test_seeds_reproducible_and_sequence(device):
    a, b = Tensor.empty([64]), Tensor.empty([64])
    init.xavier_uniform_(a.reshape([8, 8]), seed=123)
    init.xavier_uniform_(b.reshape([8, 8]), seed=123)
    assert np.array_equal(a.numpy(), b.numpy())

    def draw_three():
        out = []
        for _ in range(3):
            t = Tensor.empty([16])
            init.normal_(t)
            out.append(t.numpy())
        return out

    init.manual_seed(42)
    first = draw_three()
    init.manual_seed(42)
    again = draw_three()
    init.manual_seed(43)
    other = draw_three()
    for x, y in zip(first, again):
        assert np.array_equal(x, y)
    assert not np.array_equal(first[0], first[1])        # successive draws differ
    assert not np.array_equal(first[0], other[0])        # another program seed differs


def test_linear_and_mlp_initialisation(device):
    layer = Linear(50, 20, seed=7)
    assert layer.weight.shape() == [20, 50] and layer.bias.shape() == [20]   # torch's [out, in]
    bound = 1 / math.sqrt(50)
    for p in (layer.weight, layer.bias):
        vals = p.numpy()
        assert vals.min() >= -bound and vals.max() <= bound
    again = Linear(50, 20, seed=7)
    assert np.array_equal(layer.weight.numpy(), again.weight.numpy())
    assert not np.array_equal(layer.weight.numpy()[:20, :20].reshape(-1)[:20], layer.bias.numpy())

    net = MLP([5, 7, 3], seed=1)
    names = [n for n, _ in net.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    assert not np.array_equal(MLP([5, 7, 3], seed=2).layers[0].weight.numpy(), net.layers[0].weight.numpy())


def test_initialiser_argument_errors(device):
    with pytest.raises(TypeError, match="Variable or Tensor"):
        init.uniform_(np.zeros(3))
    with pytest.raises(ValueError, match="seed"):
        init.uniform_(Tensor.empty([3]), seed=-1)
    with pytest.raises(ValueError, match="low must not exceed high"):
        init.uniform_(Tensor.empty([3]), 1.0, 0.0, seed=0)
