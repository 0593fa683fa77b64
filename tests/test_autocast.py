"""autocast: each listed op's compute dtype as torch's lists say, weights cast once per region, float32
master gradients, and the same results under capture and create_graph as with the casts written out."""

import threading

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import Tensor, Variable, autocast, capture
from axonml_autograd import nn
from axonml_autograd.nn import functional as F
from axonml_autograd.optim import SGD

F32 = np.dtype(np.float32)


def _v(a, grad=False):
    return Variable(Tensor.from_numpy(np.asarray(a)), requires_grad=grad)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- the GPU lists (default): torch's CUDA autocast lists, from torch's documentation -------------------

def test_gpu_lists_run_each_op_in_the_dtype_torch_cuda_lists_give():
    x, w, b = _v(_rand(4, 8)), _v(_rand(8, 8, seed=1), True), _v(_rand(8, seed=2), True)
    img, cw = _v(_rand(2, 3, 9, 9, seed=3)), _v(_rand(4, 3, 3, 3, seed=4), True)
    t = Tensor.from_numpy(np.array([1, 2, 3, 0], np.int64))
    with autocast(dtype=ag.float16):
        y = F.linear(x, w, b)
        c = F.conv2d(img, cw)
        got = {
            "linear": y, "matmul": x @ w, "bmm": _v(_rand(2, 3, 4)).bmm(_v(_rand(2, 4, 5))), "conv2d": c,
            "conv1d": F.conv1d(_v(_rand(2, 3, 9)), _v(_rand(4, 3, 3))),
            "sdpa": F.scaled_dot_product_attention(x[None], x[None], x[None]),
            "relu": y.relu(), "gelu": F.gelu(y), "tanh": y.tanh(), "max_pool": F.max_pool2d(c, 2),
            "batch_norm": F.batch_norm(c, Tensor.zeros([4]), Tensor.ones([4]), training=True),
            "softmax": y.softmax(-1), "log_softmax": y.log_softmax(-1), "exp": y.exp(), "log": y.abs().log(),
            "pow": y ** 3, "sum": y.sum(), "mean": y.mean(), "sum_dim": y.sum(0), "cumsum": y.cumsum(0),
            "layer_norm": F.layer_norm(y, (8,)), "group_norm": F.group_norm(c, 2),
            "cross_entropy": F.cross_entropy(y, t), "nll_loss": F.nll_loss(y.log_softmax(-1).half(), t),
            "mse_loss": F.mse_loss(y, x), "bce_with_logits": F.binary_cross_entropy_with_logits(y, x.sigmoid()),
            "binary_cross_entropy": F.binary_cross_entropy(y.sigmoid(), x.sigmoid()),
            "add_mixed": y + x, "mul_low": y * y,
        }
    low = {"linear", "matmul", "bmm", "conv2d", "conv1d", "sdpa", "relu", "gelu", "tanh", "max_pool",
           "batch_norm", "mul_low"}
    for name, v in got.items():
        want = ag.float16 if name in low else F32
        assert v.dtype == want, f"{name}: {v.dtype}, torch's CUDA lists give {want}"


def test_float64_stays_float64_and_integers_are_untouched():
    a = Variable(Tensor.from_numpy(np.ones((3, 3))), requires_grad=True)
    with autocast(dtype=ag.bfloat16):
        assert (a @ a).dtype == np.float64
        assert F.linear(a, a).softmax(-1).dtype == np.float64
        i = Tensor.from_numpy(np.arange(4, dtype=np.int64))
        assert Variable(i).sum().dtype == np.int64


@pytest.mark.parametrize("bad", [ag.float32 if hasattr(ag, "float32") else "float32", "float64", "int32", np.float64])
def test_a_dtype_other_than_float16_or_bfloat16_raises_value_error(bad):
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        autocast(dtype=bad)
    with pytest.raises(ValueError, match="device_type"):
        autocast("tpu")


# -- the CPU lists against torch's CPU autocast -----------------------------------------------------------

def _dtype_name(d):
    return str(d).replace("torch.", "")


def _hook_dtypes(model, out, torch_side):
    def hook(name):
        def run(_m, _inp, output):
            o = output[0] if isinstance(output, tuple) else output
            out[name] = _dtype_name(o.dtype)
        return run
    for name, m in model.named_modules():
        if name:
            m.register_forward_hook(hook(name))


class _Cnn(nn.Module):
    def __init__(self, torch_nn=None):
        super().__init__()
        M = torch_nn or nn
        self.c1, self.b1 = M.Conv2d(1, 6, 3, padding=1), M.BatchNorm2d(6)
        self.c2, self.b2 = M.Conv2d(6, 8, 3, padding=1), M.BatchNorm2d(8)
        self.fc = M.Linear(8 * 4 * 4, 10)


def _cnn_forward(m, x, Fn):
    x = Fn.max_pool2d(Fn.relu(m.b1(m.c1(x))), 2)
    x = Fn.max_pool2d(Fn.relu(m.b2(m.c2(x))), 2)
    return m.fc(x.reshape([x.shape[0], -1]))


def test_cpu_lists_give_torchs_dtypes_and_values_for_a_cnn():
    torch = pytest.importorskip("torch")

    class TorchCnn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.BatchNorm2d(6)
            self.c2, self.b2 = torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
            self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    torch.manual_seed(0)
    tm = TorchCnn()

    class OurCnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
            self.c2, self.b2 = nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.fc = nn.Linear(8 * 4 * 4, 10)

    om = OurCnn()
    om.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = _rand(5, 1, 16, 16, seed=9)
    y = np.array([1, 0, 3, 9, 4])
    theirs, ours = {}, {}
    _hook_dtypes(tm, theirs, True)
    _hook_dtypes(om, ours, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tl = torch.nn.functional.cross_entropy(_cnn_forward(tm, torch.tensor(x), torch.nn.functional), torch.tensor(y))
    tl.backward()
    with autocast("cpu", dtype=ag.bfloat16):
        ol = F.cross_entropy(_cnn_forward(om, _v(x), F), Tensor.from_numpy(y))
    ol.backward()
    assert ours == theirs and _dtype_name(ol.dtype) == _dtype_name(tl.dtype) == "float32"
    # bfloat16 has 8 significant bits: the two runs round at the same places, so they agree to a few of
    # its ulps (not bit for bit: the products accumulate in different orders).
    assert abs(ol.item() - tl.item()) <= 2e-2 * abs(tl.item())
    for name, p in tm.named_parameters():
        g = dict(om.named_parameters())[name].grad.numpy()
        assert g.dtype == np.float32
        if name in ("c1.bias", "c2.bias"):
            continue   # batch norm cancels a conv bias: its true gradient is 0, both sides hold rounding only
        want = p.grad.numpy()
        assert np.abs(g - want).max() <= 5e-2 * np.abs(want).max() + 1e-6, name


def test_cpu_lists_give_torchs_dtypes_for_a_transformer_block():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    tb = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    ob = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    ob.load_state_dict({k: v.detach().numpy() for k, v in tb.state_dict().items()})
    x = _rand(3, 7, 16, seed=4)
    theirs, ours = {}, {}
    _hook_dtypes(tb, theirs, True)
    _hook_dtypes(ob, ours, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ty = tb(torch.tensor(x, requires_grad=True))
    with autocast("cpu", dtype=ag.bfloat16):
        oy = ob(_v(x, True))
    assert _dtype_name(oy.dtype) == _dtype_name(ty.dtype)
    assert {k: v for k, v in ours.items() if k in theirs} == theirs
    want = ty.float().detach().numpy()
    assert np.abs(oy.float().numpy() - want).max() <= 5e-2 * np.abs(want).max()


# -- weights, threads, nesting ----------------------------------------------------------------------------

def _count_nodes(v, name):
    seen, stack, n = set(), [v.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        n += node.name() == name
        stack.extend(node.next_functions())
    return n


def test_a_weight_is_cast_once_per_region_and_again_after_it_changes():
    w = _v(_rand(5, 4), True)
    xs = [_v(_rand(3, 4, seed=k)) for k in range(3)]
    opt = SGD([w], lr=0.5)
    with autocast(dtype=ag.bfloat16):
        total = sum((F.linear(x, w).float().sum() for x in xs), _v(np.float32(0)))
        assert _count_nodes(total, "ToCopyBackward") == 1 + 3   # one cast of w, three casts back up
        total.backward()
        opt.step()
        after = F.linear(xs[0], w)
    want = ag.Tensor.from_numpy(w.data().numpy()).astype(ag.bfloat16)
    manual = F.linear(xs[0].bfloat16(), Variable(want))
    np.testing.assert_array_equal(after.float().numpy(), manual.float().numpy())
    assert w.grad.dtype == F32
    with autocast(dtype=ag.bfloat16, cache_enabled=False):
        total = F.linear(xs[0], w).sum() + F.linear(xs[1], w).sum()
        assert _count_nodes(total, "ToCopyBackward") == 2 + 2   # w at each use, and each sum to float32


def test_regions_are_per_thread_nest_and_decorate():
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        seen["other"] = (_v(_rand(2, 2)) @ _v(_rand(2, 2))).dtype
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with autocast(dtype=ag.bfloat16):
        inside.set()
        done.wait()
        a = _v(_rand(2, 2))
        assert (a @ a).dtype == ag.bfloat16
        with autocast(enabled=False):
            assert (a @ a).dtype == F32 and not ag.is_autocast_enabled()
        with autocast(dtype=ag.float16):
            assert (a @ a).dtype == ag.float16
        assert ag.get_autocast_dtype() == ag.bfloat16
    t.join()
    assert seen["other"] == F32 and not ag.is_autocast_enabled()

    @autocast(dtype=ag.float16)
    def f(u):
        return u @ u
    assert f(_v(_rand(2, 2))).dtype == ag.float16


# -- gradients: as with the casts written out, also under create_graph and capture ------------------------

def test_autocast_equals_the_casts_written_out_under_create_graph():
    x0, w0 = _rand(6, 5), _rand(3, 5, seed=1)

    def run(auto):
        x, w = _v(x0, True), _v(w0, True)
        if auto:
            with autocast(dtype=ag.bfloat16):
                y = F.linear(x, w).softmax(-1)
        else:
            y = F.linear(x.bfloat16(), w.bfloat16()).float().softmax(-1)
        (gx,) = ag.grad(y[:, 0].sum(), [x], create_graph=True)
        (gx * gx).sum().backward()
        return gx.numpy(), w.grad.numpy()

    for a, b in zip(run(True), run(False)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_captured_step_under_autocast_equals_eager_across_updates():
    batches = [(_v(_rand(8, 6, seed=k)), Tensor.from_numpy(np.arange(8) % 4)) for k in range(6)]

    def trainer():
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
        model.load_state_dict({k: np.full(v.shape, 0.1, np.float32) + 0.01 * np.arange(v.numel()).reshape(v.shape)
                               for k, v in model.state_dict().items()})
        opt = SGD(model.parameters(), lr=0.1)

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)   # autocast entered by the caller: the cache spans steps
            loss.backward()
            opt.step()
            return loss
        return model, step

    m_e, eager = trainer()
    m_c, step = trainer()
    step = capture(step)
    with autocast(dtype=ag.bfloat16):
        for x, y in batches:
            le, lc = eager(x, y), step(x, y)
            assert le.item() == lc.item()
    assert step.replays >= 3
    for (n, a), (_n, b) in zip(m_e.named_parameters(), m_c.named_parameters()):
        np.testing.assert_array_equal(a.data().numpy(), b.data().numpy(), err_msg=n)


def test_gradients_of_a_mixed_dtype_op_arrive_in_each_inputs_dtype():
    # A bfloat16 product added to a float32 residual: the add's gradient is float32, and the product's
    # backward needs it in bfloat16 (torch's engine casts it; so does ours).
    x = _v(_rand(4, 6), True)
    w = _v(_rand(6, 6, seed=1), True)
    with autocast(dtype=ag.bfloat16):
        h = F.linear(x, w)
        y = (x + h).relu().sum()
    assert h.dtype == ag.bfloat16 and y.dtype == F32
    y.backward()
    assert x.grad.dtype == F32 and w.grad.dtype == F32
    # The same graph with the casts written out gives the same bits.
    x2, w2 = _v(_rand(4, 6), True), _v(_rand(6, 6, seed=1), True)
    h2 = F.linear(x2.bfloat16(), w2.bfloat16())
    (x2 + h2).relu().sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), w2.grad.numpy())
    np.testing.assert_array_equal(x.grad.numpy(), x2.grad.numpy())
