"""nn.MultiheadAttention against torch's with the same weights (its state_dict loads as it is), in
float64: outputs, averaged and per-head weights, masks, batch_first, gradients of the input and of
every parameter."""

import numpy as np
import pytest

import axonml_autograd.nn as nn
from axonml_autograd import Tensor, Variable

RNG = np.random.default_rng(8)


def _pair(E, H, batch_first, bias=True):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first).double()
    ours = nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first, dtype="float64", seed=0)
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    return torch, ref, ours


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "causal_bool", "float_and_padding"])
def test_matches_torch_outputs_weights_and_gradients(batch_first, masks, fp64):
    E, H, N, L, S = 12, 3, 2, 5, 7
    torch, ref, ours = _pair(E, H, batch_first)
    shape_q, shape_kv = ((N, L, E), (N, S, E)) if batch_first else ((L, N, E), (S, N, E))
    q, kv = RNG.standard_normal(shape_q), RNG.standard_normal(shape_kv)
    kwargs_t, kwargs_o = {}, {}
    if masks == "causal_bool":
        m = np.triu(np.ones((L, S), bool), 1)
        kwargs_t["attn_mask"], kwargs_o["attn_mask"] = torch.from_numpy(m), Tensor.from_numpy(m)
    elif masks == "float_and_padding":
        m, pad = RNG.standard_normal((L, S)), np.zeros((N, S), bool)
        pad[1, -2:] = True
        kwargs_t.update(attn_mask=torch.from_numpy(m), key_padding_mask=torch.from_numpy(pad))
        kwargs_o.update(attn_mask=Tensor.from_numpy(m), key_padding_mask=Tensor.from_numpy(pad))
    tq, tkv = torch.tensor(q, requires_grad=True), torch.tensor(kv, requires_grad=True)
    t_out, t_w = ref(tq, tkv, tkv, **kwargs_t)
    vq, vkv = Variable(Tensor.from_numpy(q), requires_grad=True), Variable(Tensor.from_numpy(kv), requires_grad=True)
    o_out, o_w = ours(vq, vkv, vkv, **kwargs_o)
    np.testing.assert_allclose(o_out.numpy(), t_out.detach().numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(o_w.numpy(), t_w.detach().numpy(), rtol=1e-11, atol=1e-12)
    g = RNG.standard_normal(t_out.shape)
    t_out.backward(torch.from_numpy(g))
    o_out.backward(Tensor.from_numpy(g))
    np.testing.assert_allclose(vq.grad().numpy(), tq.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(vkv.grad().numpy(), tkv.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ours.named_parameters():
        tp = dict(ref.named_parameters())[name]
        np.testing.assert_allclose(p.grad().numpy(), tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("need_weights", [True, False])
def test_self_attention_takes_one_packed_projection_with_torchs_results_and_gradients(batch_first, need_weights,
                                                                                      fp64):
    """One Variable as query, key and value: q, k and v come out of one product (torch's packed path)."""
    E, H, N, L = 12, 3, 2, 17
    torch, ref, ours = _pair(E, H, batch_first)
    x = RNG.standard_normal((N, L, E) if batch_first else (L, N, E))
    m = np.triu(np.ones((L, L), bool), 1)
    tx = torch.tensor(x, requires_grad=True)
    t_out, _ = ref(tx, tx, tx, attn_mask=torch.from_numpy(m), need_weights=need_weights)
    vx = Variable(Tensor.from_numpy(x), requires_grad=True)
    o_out, _ = ours(vx, vx, vx, attn_mask=Tensor.from_numpy(m), need_weights=need_weights)
    np.testing.assert_allclose(o_out.numpy(), t_out.detach().numpy(), rtol=1e-11, atol=1e-12)
    g = RNG.standard_normal(t_out.shape)
    t_out.backward(torch.from_numpy(g))
    o_out.backward(Tensor.from_numpy(g))
    np.testing.assert_allclose(vx.grad().numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ours.named_parameters():
        tp = dict(ref.named_parameters())[name]
        np.testing.assert_allclose(p.grad().numpy(), tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_per_head_weights_and_no_weights(fp64):
    torch, ref, ours = _pair(8, 2, True, bias=False)
    x = RNG.standard_normal((3, 4, 8))
    _, t_w = ref(*(torch.from_numpy(x),) * 3, average_attn_weights=False)
    out, w = ours(*(Variable(Tensor.from_numpy(x)),) * 3, average_attn_weights=False)
    np.testing.assert_allclose(w.numpy(), t_w.detach().numpy(), rtol=1e-11, atol=1e-12)
    assert ours(*(Variable(Tensor.from_numpy(x)),) * 3, need_weights=False)[1] is None


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="embed_dim 10 must be a positive multiple of num_heads 3"):
        nn.MultiheadAttention(10, 3)
    m = nn.MultiheadAttention(8, 2, batch_first=True, seed=0)
    with pytest.raises(ValueError, match="query of width 6, expected embed_dim 8"):
        x = Variable(Tensor.zeros([2, 3, 6]))
        m(x, x, x)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_layer_matches_torch(norm_first, activation, fp64):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    ref = torch.nn.TransformerEncoderLayer(12, 3, dim_feedforward=20, dropout=0.0, activation=activation,
                                           batch_first=True, norm_first=norm_first).double()
    ours = nn.TransformerEncoderLayer(12, 3, dim_feedforward=20, dropout=0.0, activation=activation,
                                      batch_first=True, norm_first=norm_first, dtype="float64", seed=0)
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x = RNG.standard_normal((2, 5, 12))
    mask = np.triu(np.ones((5, 5), bool), 1)
    pad = np.zeros((2, 5), bool)
    pad[0, -1] = True
    tx = torch.tensor(x, requires_grad=True)
    t_out = ref(tx, src_mask=torch.from_numpy(mask), src_key_padding_mask=torch.from_numpy(pad))
    vx = Variable(Tensor.from_numpy(x), requires_grad=True)
    o_out = ours(vx, src_mask=Tensor.from_numpy(mask), src_key_padding_mask=Tensor.from_numpy(pad))
    np.testing.assert_allclose(o_out.numpy(), t_out.detach().numpy(), rtol=1e-10, atol=1e-11)
    g = RNG.standard_normal(x.shape)
    t_out.backward(torch.from_numpy(g))
    o_out.backward(Tensor.from_numpy(g))
    np.testing.assert_allclose(vx.grad().numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad().numpy(), grads[name].grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


def test_multihead_attention_replays_under_capture():
    from axonml_autograd import capture
    m = nn.MultiheadAttention(8, 2, batch_first=True, seed=0, dtype="float64")
    mask = Tensor.from_numpy(np.triu(np.ones((4, 4), bool), 1))

    @capture
    def attend(x):
        v = Variable(x)
        return m(v, v, v, attn_mask=mask)[0]

    for _ in range(3):
        x = Tensor.from_numpy(RNG.standard_normal((2, 4, 8)))
        v = Variable(x)
        np.testing.assert_array_equal(attend(x).numpy(), m(v, v, v, attn_mask=mask)[0].numpy())
    assert attend.replays >= 1
