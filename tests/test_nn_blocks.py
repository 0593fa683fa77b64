"""Layers ported from torch.nn, against torch with torch's weights loaded (float64): TransformerEncoder,
TransformerDecoderLayer/Decoder, Transformer and its causal mask, InstanceNorm1d/2d, Dropout2d, PReLU,
EmbeddingBag, ParameterList/ParameterDict. Outputs, input and parameter gradients, odd sizes."""

import numpy as np
import pytest

import axonml_autograd.nn as nn
from axonml_autograd import Tensor, Variable, manual_seed
from axonml_autograd.optim import SGD

RNG = np.random.default_rng(17)


def _load(ours, ref):
    ours.load_state_dict(ref.state_dict())     # torch's tensors as they are (num_batches_tracked 0-d int64)


def _var(a):
    return Variable(Tensor.from_numpy(np.asarray(a, np.float64)), requires_grad=True)


def _compare(ours, ref, o_out, t_out, o_in=(), t_in=(), rtol=1e-9, atol=1e-11):
    """Values, then the gradients of sum(g * out) for the inputs and every parameter, by torch's names."""
    import torch
    np.testing.assert_allclose(o_out.data().numpy(), t_out.detach().numpy(), rtol=rtol, atol=atol)
    g = RNG.standard_normal(tuple(t_out.shape))
    t_out.backward(torch.from_numpy(g))
    o_out.backward(Tensor.from_numpy(g))
    for a, b in zip(o_in, t_in):
        np.testing.assert_allclose(a.grad().numpy(), b.grad.numpy(), rtol=rtol, atol=atol)
    theirs = dict(ref.named_parameters())
    ours_named = dict(ours.named_parameters())
    assert sorted(ours_named) == sorted(theirs)
    for name, p in ours_named.items():
        np.testing.assert_allclose(p.grad().numpy(), theirs[name].grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


# -- transformer blocks ------------------------------------------------------------------------------------

def test_transformer_encoder_stack_matches_torch(fp64):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(6, 2, dim_feedforward=7, dropout=0.0, batch_first=True)
    ref = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(6), enable_nested_tensor=False).double()
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(6, 2, 7, dropout=0.0, batch_first=True, seed=1,
                                                            dtype="float64"), 2, norm=nn.LayerNorm(6, dtype="float64"))
    assert ours.layers[0].linear1.weight is not ours.layers[1].linear1.weight      # deep copies
    np.testing.assert_array_equal(ours.layers[0].linear1.weight.data().numpy(),
                                  ours.layers[1].linear1.weight.data().numpy())
    _load(ours, ref)
    x = RNG.standard_normal((3, 5, 6))
    mask = np.triu(np.ones((5, 5), bool), 1)
    tx, vx = torch.tensor(x, requires_grad=True), _var(x)
    t_out = ref(tx, mask=torch.from_numpy(mask))
    o_out = ours(vx, mask=Tensor.from_numpy(mask))
    _compare(ours, ref, o_out, t_out, [vx], [tx])


@pytest.mark.parametrize("norm_first,activation,batch_first", [(False, "relu", False), (True, "gelu", True)])
def test_transformer_decoder_layer_matches_torch(norm_first, activation, batch_first, fp64):
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    ref = torch.nn.TransformerDecoderLayer(6, 3, dim_feedforward=5, dropout=0.0, activation=activation,
                                           batch_first=batch_first, norm_first=norm_first).double()
    ours = nn.TransformerDecoderLayer(6, 3, dim_feedforward=5, dropout=0.0, activation=activation,
                                      batch_first=batch_first, norm_first=norm_first, seed=0, dtype="float64")
    _load(ours, ref)
    N, T, S = 2, 4, 3
    tgt = RNG.standard_normal((N, T, 6) if batch_first else (T, N, 6))
    mem = RNG.standard_normal((N, S, 6) if batch_first else (S, N, 6))
    tgt_mask = torch.nn.Transformer.generate_square_subsequent_mask(T).double()
    pad = np.zeros((N, S), bool)
    pad[1, -1] = True
    tt, tm = torch.tensor(tgt, requires_grad=True), torch.tensor(mem, requires_grad=True)
    vt, vm = _var(tgt), _var(mem)
    t_out = ref(tt, tm, tgt_mask=tgt_mask, memory_key_padding_mask=torch.from_numpy(pad))
    o_out = ours(vt, vm, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T, dtype="float64"),
                 memory_key_padding_mask=Tensor.from_numpy(pad))
    _compare(ours, ref, o_out, t_out, [vt, vm], [tt, tm])


def test_transformer_decoder_and_full_transformer_match_torch(fp64):
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    ref = torch.nn.Transformer(d_model=6, nhead=2, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=5,
                               dropout=0.0).double()
    ours = nn.Transformer(d_model=6, nhead=2, num_encoder_layers=2, num_decoder_layers=1, dim_feedforward=5,
                          dropout=0.0, seed=0, dtype="float64")
    assert sorted(ours.state_dict()) == sorted(ref.state_dict())
    _load(ours, ref)
    src, tgt = RNG.standard_normal((5, 2, 6)), RNG.standard_normal((3, 2, 6))
    ts, tt = torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)
    vs, vt = _var(src), _var(tgt)
    t_out = ref(ts, tt, tgt_mask=ref.generate_square_subsequent_mask(3).double())
    o_out = ours(vs, vt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(3, dtype="float64"))
    _compare(ours, ref, o_out, t_out, [vs, vt], [ts, tt])
    with pytest.raises(RuntimeError, match="batch number of src and tgt"):
        ours(vs, _var(RNG.standard_normal((3, 4, 6))))


@pytest.mark.parametrize("sz", [1, 3, 17])
def test_square_subsequent_mask_is_torchs(sz):
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(nn.Transformer.generate_square_subsequent_mask(sz).numpy(),
                                  torch.nn.Transformer.generate_square_subsequent_mask(sz).numpy())


# -- InstanceNorm ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dims,affine,track", [(1, False, False), (1, True, True), (2, True, False), (2, False, True)])
def test_instance_norm_matches_torch(dims, affine, track, fp64):
    torch = pytest.importorskip("torch")
    cls, tcls = (nn.InstanceNorm1d, torch.nn.InstanceNorm1d) if dims == 1 else (nn.InstanceNorm2d, torch.nn.InstanceNorm2d)
    ref = tcls(3, affine=affine, track_running_stats=track).double()
    ours = cls(3, affine=affine, track_running_stats=track, dtype="float64")
    assert sorted(ours.state_dict()) == sorted(ref.state_dict())
    if affine:
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(RNG.uniform(0.5, 1.5, 3)))
            ref.bias.copy_(torch.from_numpy(RNG.standard_normal(3)))
    _load(ours, ref)
    shape = (2, 3, 5) if dims == 1 else (2, 3, 3, 5)
    x = RNG.standard_normal(shape) * 2 + 1
    tx, vx = torch.tensor(x, requires_grad=True), _var(x)
    out_t, out_o = ref(tx), ours(vx)
    if affine:
        _compare(ours, ref, out_o, out_t, [vx], [tx])
    else:
        np.testing.assert_allclose(out_o.numpy(), out_t.detach().numpy(), rtol=1e-9, atol=1e-11)
    for name, buf in ref.named_buffers():
        np.testing.assert_allclose(ours.state_dict()[name].numpy().reshape(buf.shape), buf.numpy(), rtol=1e-12,
                                   err_msg=name)
    ref.eval()
    ours.eval()
    x2 = RNG.standard_normal(shape)
    np.testing.assert_allclose(ours(_var(x2)).numpy(), ref(torch.from_numpy(x2)).detach().numpy(), rtol=1e-9,
                               atol=1e-11)
    unbatched = RNG.standard_normal(shape[1:])
    np.testing.assert_allclose(ours(_var(unbatched)).numpy(), ref(torch.from_numpy(unbatched)).detach().numpy(),
                               rtol=1e-9, atol=1e-11)


# -- Dropout2d, PReLU --------------------------------------------------------------------------------------

def test_dropout2d_drops_whole_channels():
    d = nn.Dropout2d(0.4)
    x = _var(RNG.uniform(1.0, 2.0, (40, 25, 3, 2)))
    manual_seed(4)
    y = d(x)
    out = y.numpy()
    kept = np.abs(out).reshape(40, 25, -1).min(-1) > 0
    dropped = np.abs(out).reshape(40, 25, -1).max(-1) == 0
    assert np.all(kept | dropped)                                         # a channel is all in or all out
    assert abs(dropped.mean() - 0.4) < 0.05
    np.testing.assert_allclose(out[kept], x.data().numpy()[kept] / 0.6, rtol=1e-12)
    y.sum().backward()
    np.testing.assert_allclose(x.grad().numpy(), np.where(out != 0, 1 / 0.6, 0.0), rtol=1e-12)
    three_d = d(_var(np.ones((4, 6, 5)))).numpy()
    assert np.all((three_d == 0).all(-1) | (three_d != 0).all(-1))
    d.eval()
    assert d(x) is x


@pytest.mark.parametrize("num", [1, 3])
def test_prelu_matches_torch(num, fp64):
    torch = pytest.importorskip("torch")
    ref, ours = torch.nn.PReLU(num).double(), nn.PReLU(num, dtype="float64")
    assert ours.weight.data().to_vec() == [0.25] * num
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(RNG.uniform(0.1, 0.5, num)))
    _load(ours, ref)
    x = RNG.standard_normal((4, 3, 5))
    x[0, 0, :2] = 0.0                                                     # torch's gradient at 0
    tx, vx = torch.tensor(x, requires_grad=True), _var(x)
    _compare(ours, ref, ours(vx), ref(tx), [vx], [tx])


# -- EmbeddingBag ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_with_offsets_matches_torch(mode, fp64):
    torch = pytest.importorskip("torch")
    ref = torch.nn.EmbeddingBag(11, 5, mode=mode).double()
    ours = nn.EmbeddingBag(11, 5, mode=mode, dtype="float64")
    _load(ours, ref)
    idx = np.array([3, 1, 4, 1, 5, 9, 2, 6, 10, 3], np.int64)
    offsets = np.array([0, 3, 3, 7], np.int64)                            # bag 1 is empty
    t_out = ref(torch.from_numpy(idx), torch.from_numpy(offsets))
    o_out = ours(Tensor.from_numpy(idx, dtype="int64"), Tensor.from_numpy(offsets, dtype="int64"))
    _compare(ours, ref, o_out, t_out)


def test_embedding_bag_2d_weights_padding_and_last_offset(fp64):
    torch = pytest.importorskip("torch")
    weight = RNG.standard_normal((7, 3))
    w_t, w_o = torch.tensor(weight, requires_grad=True), _var(weight)
    F_t = torch.nn.functional
    from axonml_autograd.nn import functional as F
    idx = np.array([[1, 2, 0], [4, 4, 6]])
    _check_pair(F.embedding_bag(idx.tolist(), w_o, mode="mean", padding_idx=0),
                F_t.embedding_bag(torch.from_numpy(idx), w_t, mode="mean", padding_idx=0), w_o, w_t)
    flat, offs = [2, 5, 5, 1, 3], [0, 2, 5]
    psw = RNG.standard_normal(5)
    p_t, p_o = torch.tensor(psw, requires_grad=True), _var(psw)
    _check_pair(F.embedding_bag(flat, w_o, offs, mode="sum", per_sample_weights=p_o, include_last_offset=True),
                F_t.embedding_bag(torch.tensor(flat), w_t, torch.tensor(offs), mode="sum", per_sample_weights=p_t,
                                  include_last_offset=True), w_o, w_t)
    np.testing.assert_allclose(p_o.grad().numpy(), p_t.grad.numpy(), rtol=1e-10)
    with pytest.raises(ValueError, match="offsets must be None for a 2-D input"):
        F.embedding_bag(idx.tolist(), w_o, [0, 1])
    with pytest.raises(NotImplementedError, match="per_sample_weights is only supported with mode='sum'"):
        F.embedding_bag(flat, w_o, [0], per_sample_weights=p_o)


def _check_pair(o, t, w_o, w_t):
    import torch
    np.testing.assert_allclose(o.numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = RNG.standard_normal(tuple(t.shape))
    o.backward(Tensor.from_numpy(g))
    t.backward(torch.from_numpy(g))
    np.testing.assert_allclose(w_o.grad().numpy(), w_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    w_o.zero_grad()
    w_t.grad = None


# -- ParameterList / ParameterDict -------------------------------------------------------------------------

def test_parameter_containers_register_and_name_as_torch():
    torch = pytest.importorskip("torch")

    class Ours(nn.Module):
        def __init__(self):
            super().__init__()
            self.plist = nn.ParameterList([Tensor.ones([2]), nn.Parameter(Tensor.zeros([3]))])
            self.pdict = nn.ParameterDict({"gain": Tensor.ones([1]), "shift": Tensor.zeros([2])})

        def forward(self, x):
            return (x * self.plist[0]).sum() + self.plist[1].sum() + self.pdict["gain"].sum() * 2

    class Theirs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.plist = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.zeros(3))])
            self.pdict = torch.nn.ParameterDict({"gain": torch.nn.Parameter(torch.ones(1)),
                                                 "shift": torch.nn.Parameter(torch.zeros(2))})

    ours, theirs = Ours(), Theirs()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    _load(ours, theirs)
    assert len(ours.plist) == 2 and "gain" in ours.pdict and len(list(ours.parameters())) == 4
    ours.plist.append(Tensor.ones([1]))
    assert "plist.2" in ours.state_dict()
    opt = SGD(ours.parameters(), lr=0.5)
    ours(Variable(Tensor.from_vec([1.0, 2.0], [2]))).backward()
    opt.step()
    assert ours.pdict["gain"].data().to_vec() == [0.0] and ours.plist[0].data().to_vec() == [0.5, 0.0]
    with pytest.raises(TypeError, match="expected a Parameter"):
        nn.ParameterList([1.0])
    with pytest.raises(KeyError, match="would hide a method"):
        nn.ParameterDict({"keys": Tensor.ones([1])})
