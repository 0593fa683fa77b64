"""A torch model's state_dict loads as it is, and layers keep torch's weight layout: Linear [out, in],
so F.linear, weight tying and nn.init's fans give torch's results."""

import math

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable
import axonml_autograd.nn as nn
import axonml_autograd.nn.functional as F
from axonml_autograd import init

torch = pytest.importorskip("torch")


class Ours(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 5)

    def forward(self, idx):
        h = self.emb(idx)                                   # [N, T, 8]
        h = self.bn(self.conv(h.permute(0, 2, 1))).relu().permute(0, 2, 1)
        a, _ = self.attn(h, h, h)
        return self.head(self.norm(h + a))


class Theirs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 8)
        self.conv = torch.nn.Conv1d(8, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm1d(8)
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, idx):
        h = self.emb(idx)
        h = self.bn(self.conv(h.permute(0, 2, 1))).relu().permute(0, 2, 1)
        a, _ = self.attn(h, h, h)
        return self.head(self.norm(h + a))


def test_a_torch_state_dict_loads_as_it_is_and_gives_torchs_outputs_and_gradients(device):
    torch.manual_seed(0)
    theirs = Theirs().double()
    idx = torch.randint(0, 11, (3, 7))
    theirs(idx)                                             # moves BN's running statistics
    ours = Ours().to("float64")
    ours.load_state_dict(theirs.state_dict())               # torch tensors, num_batches_tracked 0-d int64
    assert int(ours.bn.num_batches_tracked.item()) == 1 and ours.bn.num_batches_tracked.shape == ()
    for mode in ("train", "eval"):
        getattr(theirs, mode)(), getattr(ours, mode)()
        want = theirs(idx)
        got = ours(Tensor.from_numpy(idx.numpy().astype(np.int64)))
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-12)
    theirs.zero_grad()
    (theirs(idx) ** 2).sum().backward()
    (ours(Tensor.from_numpy(idx.numpy().astype(np.int64))) ** 2).sum().backward()
    named = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(named[name].grad.numpy(), p.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_a_square_torch_linear_loads_untransposed():
    torch.manual_seed(1)
    t = torch.nn.Linear(6, 6).double()
    ours = nn.Linear(6, 6, dtype="float64")
    ours.load_state_dict(t.state_dict())
    x = np.random.default_rng(0).standard_normal((4, 6))
    np.testing.assert_allclose(ours(Variable(Tensor.from_numpy(x))).numpy(),
                               t(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(F.linear(Variable(Tensor.from_numpy(x)), ours.weight).numpy(),
                               torch.nn.functional.linear(torch.tensor(x), t.weight).detach().numpy(), rtol=1e-12)


def test_weight_tying_shares_one_parameter_as_torch_does():
    emb, head = nn.Embedding(7, 7, seed=0, dtype="float64"), nn.Linear(7, 7, bias=False, seed=1, dtype="float64")
    head.weight = emb.weight                                # vocabulary == width: a transpose would not show
    idx = Tensor.from_numpy(np.array([[1, 4, 6]], np.int64))
    logits = head(emb(idx))
    w = emb.weight.numpy()
    np.testing.assert_allclose(logits.numpy()[0], w[[1, 4, 6]] @ w.T, rtol=1e-12)


@pytest.mark.parametrize("make,theirs", [
    (lambda: nn.Linear(1024, 16), lambda: torch.nn.Linear(1024, 16)),
    (lambda: nn.Linear(16, 1024), lambda: torch.nn.Linear(16, 1024)),
    (lambda: nn.Conv2d(8, 32, 3), lambda: torch.nn.Conv2d(8, 32, 3)),
    (lambda: nn.Conv1d(16, 4, 5), lambda: torch.nn.Conv1d(16, 4, 5)),
])
@pytest.mark.parametrize("how", ["kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_"])
def test_init_reads_every_layers_fans_as_torch(make, theirs, how):
    ours, ref = make(), theirs()
    getattr(init, how)(ours.weight, seed=3)
    with torch.no_grad():
        getattr(torch.nn.init, how)(ref.weight)
    fan_ours = init.calculate_fan_in_and_fan_out(ours.weight)
    assert fan_ours == torch.nn.init._calculate_fan_in_and_fan_out(ref.weight)
    # The spread is the fans' formula: the two samples' std agree to sampling error (>= 2048 draws).
    s_ours, s_ref = ours.weight.numpy().std(), ref.weight.detach().numpy().std()
    assert abs(s_ours / s_ref - 1) < 0.08, (s_ours, s_ref)


def test_default_linear_init_is_torchs_bound():
    lin = nn.Linear(1024, 16, seed=0)
    bound = 1 / math.sqrt(1024)
    w = lin.weight.numpy()
    assert lin.weight.shape == (16, 1024) and np.abs(w).max() <= bound and w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
