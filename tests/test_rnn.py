"""nn.RNN / LSTM / GRU and their cells against torch (float64, torch's weights loaded): outputs, final
states, and the gradients of every parameter, the input and the initial states; variable lengths
against torch's packed sequences; finite-difference gradchecks; a captured training step against
eager, bit for bit; errors."""

import numpy as np
import pytest

import axonml_autograd.nn as nn
from axonml_autograd import Tensor, Variable, capture
from axonml_autograd.backward import check_gradients, grad
from axonml_autograd.optim import SGD

IN, H, T, B = 3, 17, 5, 3
CLASSES = {"tanh": "RNN", "relu": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _v(a, requires_grad=False):
    return Variable(Tensor.from_numpy(np.ascontiguousarray(a)), requires_grad=requires_grad)


def _pair(torch, mode, cell=False, hidden=H, **kw):
    """A torch float64 module and ours with its weights."""
    name = CLASSES[mode] + ("Cell" if cell else "")
    extra = {"nonlinearity": mode} if mode in ("tanh", "relu") else {}
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(IN, hidden, **extra, **kw).double()
    ours = getattr(nn, name)(IN, hidden, **extra, **kw, dtype="float64", seed=1)
    missing = ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    assert not missing.missing_keys and not missing.unexpected_keys
    return ref, ours


def _states(out):
    """(output, [state, ...]) of a module's result."""
    y, hx = out
    return y, (list(hx) if isinstance(hx, tuple) else [hx])


def _compare(torch, ref, ours, x, hx=None, lengths=None, batch_first=False):
    rng = np.random.default_rng(7)
    tx = torch.tensor(x, requires_grad=True)
    ox = _v(x, True)
    thx = ohx = None
    if hx is not None:
        thx = [torch.tensor(h, requires_grad=True) for h in hx]
        ohx = [_v(h, True) for h in hx]
    if lengths is not None:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
        packed = pack_padded_sequence(tx, lengths, batch_first=batch_first, enforce_sorted=False)
        ty, tstates = _states(ref(packed, thx[0] if thx and len(thx) == 1 else tuple(thx) if thx else None))
        ty = pad_packed_sequence(ty, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])[0]
        y, states = _states(ours(ox, (ohx[0] if len(ohx) == 1 else tuple(ohx)) if ohx else None,
                                 lengths=lengths))
    else:
        ty, tstates = _states(ref(tx, thx[0] if thx and len(thx) == 1 else tuple(thx) if thx else None))
        y, states = _states(ours(ox, (ohx[0] if len(ohx) == 1 else tuple(ohx)) if ohx else None))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for s, ts in zip(states, tstates):
        np.testing.assert_allclose(s.numpy(), ts.detach().numpy(), rtol=1e-10, atol=1e-12)
    # A loss that weighs every output and state differently.
    weights = [rng.standard_normal(t.shape) for t in [ty] + list(tstates)]
    tloss = sum((t * torch.tensor(w)).sum() for t, w in zip([ty] + list(tstates), weights))
    loss = None
    for v, w in zip([y] + states, weights):
        term = (v * _v(w)).sum()
        loss = term if loss is None else loss + term
    tloss.backward()
    loss.backward()
    named = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad().numpy(), named[name].grad.numpy(), rtol=1e-9, atol=1e-11,
                                   err_msg=name)
    np.testing.assert_allclose(ox.grad().numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for o, t in zip(ohx or [], thx or []):
        np.testing.assert_allclose(o.grad().numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("mode", ["tanh", "relu", "lstm", "gru"])
def test_single_layer_matches_torch(mode):
    torch = pytest.importorskip("torch")
    ref, ours = _pair(torch, mode)
    _compare(torch, ref, ours, np.random.default_rng(0).standard_normal((T, B, IN)))


@pytest.mark.parametrize("mode", ["tanh", "relu", "lstm", "gru"])
def test_two_bidirectional_layers_batch_first_initial_states_match_torch(mode):
    torch = pytest.importorskip("torch")
    ref, ours = _pair(torch, mode, num_layers=2, bidirectional=True, batch_first=True)
    rng = np.random.default_rng(1)
    hx = [rng.standard_normal((4, B, H)) for _ in range(2 if mode == "lstm" else 1)]
    _compare(torch, ref, ours, rng.standard_normal((B, T, IN)), hx)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_no_bias_and_unbatched_input_match_torch(mode):
    torch = pytest.importorskip("torch")
    ref, ours = _pair(torch, mode, bias=False, num_layers=2)
    rng = np.random.default_rng(2)
    hx = [rng.standard_normal((2, H)) for _ in range(2 if mode == "lstm" else 1)]
    _compare(torch, ref, ours, rng.standard_normal((T, IN)), hx)


@pytest.mark.parametrize("mode", ["tanh", "relu", "lstm", "gru"])
def test_vector_path_hidden_8_with_lengths_matches_torch(mode):
    """H = 8: the CPU kernels work on vectors of units (H = 17 above runs them one unit at a time)."""
    torch = pytest.importorskip("torch")
    ref, ours = _pair(torch, mode, hidden=8, bidirectional=True)
    rng = np.random.default_rng(10)
    hx = [rng.standard_normal((2, B, 8)) for _ in range(2 if mode == "lstm" else 1)]
    _compare(torch, ref, ours, rng.standard_normal((T, B, IN)), hx, lengths=[3, 5, 1])


@pytest.mark.parametrize("mode", ["tanh", "lstm", "gru"])
def test_lengths_match_torch_packed_sequences(mode):
    torch = pytest.importorskip("torch")
    ref, ours = _pair(torch, mode, num_layers=2, bidirectional=True, batch_first=True)
    rng = np.random.default_rng(3)
    hx = [rng.standard_normal((4, B, H)) for _ in range(2 if mode == "lstm" else 1)]
    _compare(torch, ref, ours, rng.standard_normal((B, T, IN)), hx, lengths=[2, 5, 4], batch_first=True)


def test_pack_pad_round_trip_through_a_gru():
    torch = pytest.importorskip("torch")
    ref, ours = _pair(torch, "gru")
    rng = np.random.default_rng(4)
    seqs = [rng.standard_normal((n, IN)) for n in (4, 2, 3)]
    padded = nn.utils.rnn.pad_sequence([_v(s) for s in seqs])
    tpadded = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs])
    np.testing.assert_array_equal(padded.numpy(), tpadded.numpy())
    packed = nn.utils.rnn.pack_padded_sequence(padded, [4, 2, 3], enforce_sorted=False)
    out, h = ours(packed)
    out, lengths = nn.utils.rnn.pad_packed_sequence(out)
    tout, th = ref(torch.nn.utils.rnn.pack_padded_sequence(tpadded, [4, 2, 3], enforce_sorted=False))
    tout, tlengths = torch.nn.utils.rnn.pad_packed_sequence(tout)
    assert lengths == tlengths.tolist()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h.numpy(), th.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["tanh", "relu", "lstm", "gru"])
def test_cells_match_torch(mode):
    torch = pytest.importorskip("torch")
    ref, ours = _pair(torch, mode, cell=True)
    rng = np.random.default_rng(5)
    x, hx = rng.standard_normal((B, IN)), [rng.standard_normal((B, H)) for _ in range(2 if mode == "lstm" else 1)]
    tx, thx = torch.tensor(x, requires_grad=True), [torch.tensor(h, requires_grad=True) for h in hx]
    ox, ohx = _v(x, True), [_v(h, True) for h in hx]
    tout = ref(tx, tuple(thx) if mode == "lstm" else thx[0])
    out = ours(ox, tuple(ohx) if mode == "lstm" else ohx[0])
    touts, outs = (list(tout), list(out)) if mode == "lstm" else ([tout], [out])
    for o, t in zip(outs, touts):
        np.testing.assert_allclose(o.numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)
    sum((t * (k + 1)).sum() for k, t in enumerate(touts)).backward()
    loss = outs[0].sum() if len(outs) == 1 else outs[0].sum() + (outs[1] * 2).sum()
    loss.backward()
    named = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad().numpy(), named[name].grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ox.grad().numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for o, t in zip(ohx, thx):
        np.testing.assert_allclose(o.grad().numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-11)
    # unbatched: [in] -> [H]
    single = ours(_v(x[0]))
    assert (single[0] if mode == "lstm" else single).shape() == [H]


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_finite_difference_gradcheck(mode):
    cls = getattr(nn, CLASSES[mode])
    model = cls(2, 3, bidirectional=True, dtype="float64", seed=3)
    rng = np.random.default_rng(6)
    x = _v(rng.standard_normal((3, 2, 2)), True)
    h0 = _v(rng.standard_normal((2, 2, 3)), True)
    hx = (h0, _v(rng.standard_normal((2, 2, 3)), True)) if mode == "lstm" else h0
    names = [name for name, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    picked = [0, 1, 3, 5]   # weight_ih_l0, weight_hh_l0, bias_hh_l0, weight_hh_l0_reverse

    def f(x, *ps):
        for k, p in zip(picked, ps):
            setattr(model, names[k], p)
        out, states = model(x, hx)
        s = states[1] if mode == "lstm" else states
        return (out * out).sum() + (s * s).sum()

    assert check_gradients(f, [x] + [params[k] for k in picked], eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("mode", ["tanh", "relu", "lstm", "gru"])
def test_create_graph_gradient_equals_first_order_and_differentiates(mode):
    torch = pytest.importorskip("torch")
    ref, ours = _pair(torch, mode, hidden=4, bidirectional=True)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 2, IN))
    ox, tx = _v(x, True), torch.tensor(x, requires_grad=True)
    (gx,) = grad((ours(ox)[0] ** 2).sum(), ox, create_graph=True)
    (tgx,) = torch.autograd.grad((ref(tx)[0] ** 2).sum(), tx, create_graph=True)
    np.testing.assert_allclose(gx.numpy(), tgx.detach().numpy(), rtol=1e-9, atol=1e-11)
    for name in ("weight_hh_l0", "weight_hh_l0_reverse", "bias_ih_l0"):
        (gw,) = grad((gx * gx).sum(), getattr(ours, name), retain_graph=True)
        (tgw,) = torch.autograd.grad((tgx * tgx).sum(), getattr(ref, name), retain_graph=True)
        np.testing.assert_allclose(gw.numpy(), tgw.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("mode", ["tanh", "lstm", "gru"])
def test_create_graph_with_lengths_and_initial_state_matches_torch_packed(mode):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    ref, ours = _pair(torch, mode, hidden=4, bidirectional=True)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 3, IN))
    hx = [rng.standard_normal((2, 3, 4)) for _ in range(2 if mode == "lstm" else 1)]
    lengths = [2, 4, 1]
    ox, ohx = _v(x, True), [_v(h, True) for h in hx]
    tx, thx = torch.tensor(x, requires_grad=True), [torch.tensor(h, requires_grad=True) for h in hx]
    out, states = _states(ours(ox, tuple(ohx) if mode == "lstm" else ohx[0], lengths=lengths))
    tout, tstates = _states(ref(pack_padded_sequence(tx, lengths, enforce_sorted=False),
                                tuple(thx) if mode == "lstm" else thx[0]))
    tout = pad_packed_sequence(tout, total_length=4)[0]
    loss = (out ** 2).sum() + (states[-1] ** 2).sum()
    tloss = (tout ** 2).sum() + (tstates[-1] ** 2).sum()
    gx, gh = grad(loss, [ox, ohx[0]], create_graph=True)
    tgx, tgh = torch.autograd.grad(tloss, [tx, thx[0]], create_graph=True)
    np.testing.assert_allclose(gx.numpy(), tgx.detach().numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gh.numpy(), tgh.detach().numpy(), rtol=1e-9, atol=1e-11)
    (gw,) = grad((gx * gx).sum() + (gh * gh).sum(), ours.weight_hh_l0_reverse)
    (tgw,) = torch.autograd.grad((tgx * tgx).sum() + (tgh * tgh).sum(), ref.weight_hh_l0_reverse)
    np.testing.assert_allclose(gw.numpy(), tgw.numpy(), rtol=1e-8, atol=1e-10)


def test_captured_training_step_equals_eager_bit_for_bit():
    rng = np.random.default_rng(9)
    batches = [(_v(rng.standard_normal((B, T, IN)).astype(np.float32)),
                _v(rng.standard_normal((B, T, H)).astype(np.float32))) for _ in range(4)]

    def trainer():
        model = nn.LSTM(IN, H, num_layers=2, dropout=0.25, bidirectional=True, batch_first=True, seed=4)
        opt = SGD(list(model.parameters()), lr=0.05)

        def step(x, y):
            opt.zero_grad()
            out, (h, c) = model(x)
            loss = ((out.narrow(-1, 0, H) - y) ** 2).mean() + (c * c).mean()
            loss.backward()
            opt.step()
            return loss
        return model, step

    eager_model, eager = trainer()
    model, step = trainer()
    step = capture(step)
    from axonml_autograd.random import manual_seed
    for x, y in batches:
        manual_seed(11)
        a = eager(x, y).item()
        manual_seed(11)
        b = step(x, y).item()
        assert a == b
    for p, q in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    assert step.replays >= 2


def test_errors_name_the_shapes():
    lstm = nn.LSTM(3, 4, num_layers=2, seed=0)
    with pytest.raises(ValueError, match=r"input_size: expected 3, got 5 \(input shape \[6, 2, 5\]\)"):
        lstm(_v(np.zeros((6, 2, 5), np.float32)))
    bad = (_v(np.zeros((1, 2, 4), np.float32)), _v(np.zeros((2, 2, 4), np.float32)))
    with pytest.raises(ValueError, match=r"expected h_0 of shape \[2, 2, 4\], got \[1, 2, 4\]"):
        lstm(_v(np.zeros((6, 2, 3), np.float32)), bad)
    with pytest.raises(ValueError, match=r"expected c_0 of shape \[4\], got \[2, 4\]"):
        nn.LSTMCell(3, 4, seed=0)(_v(np.zeros(3, np.float32)), (_v(np.zeros(4, np.float32)),
                                                                _v(np.zeros((2, 4), np.float32))))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 6\]"):
        nn.GRU(3, 4, seed=0)(_v(np.zeros((6, 2, 3), np.float32)), lengths=[7, 2])


def test_state_dict_names_and_shapes_are_torch():
    torch = pytest.importorskip("torch")
    for cls, kw in ((nn.GRU, dict(num_layers=2, bidirectional=True)), (nn.LSTMCell, {})):
        ours = cls(3, 5, seed=0, **kw)
        ref = getattr(torch.nn, cls.__name__)(3, 5, **kw)
        assert [(k, list(v.shape())) for k, v in ours.state_dict().items()] == \
            [(k, list(v.shape)) for k, v in ref.state_dict().items()]
        bound = 1 / np.sqrt(5)
        assert all(np.abs(p.numpy()).max() <= bound for p in ours.parameters())



def test_dropout_between_layers_only_in_training():
    from axonml_autograd.random import manual_seed
    model = nn.GRU(IN, 6, num_layers=2, dropout=0.5, seed=6)
    plain = nn.GRU(IN, 6, num_layers=2, seed=6)   # the same weights (same seed), no dropout
    x = _v(np.random.default_rng(14).standard_normal((T, B, IN)).astype(np.float32))
    model.eval()
    np.testing.assert_array_equal(model(x)[0].numpy(), plain(x)[0].numpy())
    model.train()
    manual_seed(3)
    a = model(x)[0].numpy()
    manual_seed(3)
    b = model(x)[0].numpy()
    np.testing.assert_array_equal(a, b)                       # the device generator's draws
    assert not np.allclose(a, plain(x)[0].numpy())
    one_layer = nn.GRU(IN, 6, dropout=0.5, seed=6).train()    # nothing between layers to drop
    np.testing.assert_array_equal(one_layer(x)[0].numpy(), nn.GRU(IN, 6, seed=6)(x)[0].numpy())


def test_captured_step_with_device_lengths_equals_eager_with_host_lengths():
    rng = np.random.default_rng(15)
    batches = [(_v(rng.standard_normal((B, T, IN)).astype(np.float32)), lengths)
               for lengths in ([5, 2, 4], [1, 5, 3], [5, 5, 5], [2, 3, 1])]

    def trainer():
        model = nn.LSTM(IN, 8, bidirectional=True, batch_first=True, seed=7)
        opt = SGD(list(model.parameters()), lr=0.1)

        def step(x, lengths):
            opt.zero_grad()
            out, (h, c) = model(x, lengths=lengths)
            loss = (out * out).mean() + (h * c).sum()
            loss.backward()
            opt.step()
            return loss
        return model, step

    eager_model, eager = trainer()
    model, step = trainer()
    step = capture(step)
    for x, lengths in batches:
        assert eager(x, lengths).item() == step(x, Tensor.from_numpy(np.array(lengths, np.int32))).item()
    for p, q in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    assert step.recordings == 1 and step.replays == 3
    with pytest.raises(ValueError, match=r"int32 of shape \[3\]"):
        model(batches[0][0], lengths=Tensor.from_numpy(np.array([5, 2], np.int32)))


def test_pack_sequence_runs_as_torchs():
    torch = pytest.importorskip("torch")
    rnn_utils = nn.utils.rnn
    rng = np.random.default_rng(11)
    seqs = [rng.standard_normal((n, 3)) for n in (5, 3, 1)]
    lstm = nn.LSTM(3, 4, seed=2, dtype="float64")
    ref = torch.nn.LSTM(3, 4).double()
    ref.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in lstm.state_dict().items()})
    packed = rnn_utils.pack_sequence([Variable(Tensor.from_numpy(a)) for a in seqs])
    out, (h, _c) = lstm(packed)
    tout, (th, _tc) = ref(torch.nn.utils.rnn.pack_sequence([torch.from_numpy(a) for a in seqs]))
    np.testing.assert_allclose(h.numpy(), th.detach().numpy(), rtol=1e-10, atol=1e-12)
    padded, lengths = rnn_utils.pad_packed_sequence(out)
    tpadded, tlengths = torch.nn.utils.rnn.pad_packed_sequence(tout)
    np.testing.assert_allclose(padded.numpy(), tpadded.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert list(lengths) == tlengths.tolist()
