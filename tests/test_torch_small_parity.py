"""The small torch spellings: varargs shapes on Tensors, index assignment, top-level function forms,
ag.func / ag.autograd, Tensors from hessian/jacobian, torch.save-style nested objects, printing,
cpu() and model.to(dtype)."""

import numpy as np
import pytest

import axonml_autograd as ag
from axonml_autograd import Tensor, Variable, no_grad
import axonml_autograd.nn as nn

torch = pytest.importorskip("torch")


def _t(a):
    return Tensor.from_numpy(np.asarray(a, dtype=np.float64))


def test_tensor_shape_methods_take_varargs_as_variables_do():
    a = np.arange(6.0).reshape(2, 3)
    t = _t(a)
    assert t.view(-1).shape == (6,) and t.reshape(3, 2).shape == (3, 2) and t.reshape([3, 2]).shape == (3, 2)
    np.testing.assert_array_equal(t.permute(1, 0).numpy(), a.T)
    np.testing.assert_array_equal(t.reshape(6, 1).expand(-1, 4).numpy(), np.broadcast_to(a.reshape(6, 1), (6, 4)))
    v = Variable(t)
    np.testing.assert_array_equal(v.reshape(6, 1).expand(-1, 4).numpy(), t.reshape(6, 1).expand(-1, 4).numpy())


@pytest.mark.parametrize("key,value", [
    (0, 9.0), ((slice(None), 1), -1.0), ((1, [0, 3]), 7.0), ((Ellipsis, 2), np.array([1.0, 2.0, 3.0])),
    ((slice(0, 3, 2), slice(1, None)), 5.0), (([2, 0, 2],), 4.0),
])
def test_index_assignment_on_a_tensor_matches_torch(key, value):
    a = np.arange(12.0).reshape(3, 4)
    t = _t(a)
    before = t.version
    t[key] = value
    ref = torch.tensor(a)
    ref[key] = torch.tensor(value) if isinstance(value, np.ndarray) else value
    np.testing.assert_array_equal(t.numpy(), ref.numpy())
    assert t.version > before


def test_mask_assignment_and_writes_through_a_view():
    a = np.random.default_rng(0).standard_normal((17, 5))
    t = _t(a)
    t[t > 0.5] = 0.0
    ref = a.copy()
    ref[ref > 0.5] = 0.0
    np.testing.assert_array_equal(t.numpy(), ref)
    tr = t.T                       # a view: the write lands in t
    tr[1, 3] = 42.0
    assert t.numpy()[3, 1] == 42.0


def test_index_assignment_inside_a_graph_is_differentiable_as_torchs():
    rng = np.random.default_rng(1)
    xa, wa = rng.standard_normal((3, 65)), rng.standard_normal(17)
    x, w = Variable(_t(xa), requires_grad=True), Variable(_t(wa), requires_grad=True)
    h = x * 2.0
    h[1, 3:20] = w.exp()
    (h * h).sum().backward()
    tx, tw = torch.tensor(xa, requires_grad=True), torch.tensor(wa, requires_grad=True)
    th = tx * 2.0
    th[1, 3:20] = tw.exp()
    (th * th).sum().backward()
    np.testing.assert_allclose(h.numpy(), th.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-14)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-14)


def test_index_assignment_refuses_a_leaf_that_requires_grad_and_works_under_no_grad():
    x = Variable(_t(np.zeros((2, 3))), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x[0] = 1.0
    with no_grad():
        x[0] = 1.0
    assert x.numpy()[0].tolist() == [1.0, 1.0, 1.0] and x.is_leaf
    with pytest.raises(ValueError, match=r"shapes \[4\] and \[3\] cannot be broadcast"):
        x.data()[0] = _t(np.ones(4))


@pytest.mark.parametrize("name,args", [("exp", ()), ("sum", (1,)), ("softmax", (-1,)), ("log_softmax", (0,)),
                                       ("mean", ()), ("tanh", ()), ("clamp", (-0.5, 0.5)), ("cumsum", (1,))])
def test_top_level_function_forms_match_torch(name, args):
    a = np.random.default_rng(2).standard_normal((3, 17))
    ours = getattr(ag, name)(_t(a), *args)
    want = getattr(torch, name)(torch.tensor(a), *args)
    assert isinstance(ours, Tensor)
    np.testing.assert_allclose(ours.numpy(), want.numpy(), rtol=1e-12, atol=1e-14)
    v = getattr(ag, name)(Variable(_t(a)), *args)
    assert isinstance(v, Variable)


def test_matmul_and_autograd_and_func_need_no_extra_import():
    a = np.random.default_rng(3).standard_normal((3, 4))
    np.testing.assert_allclose(ag.matmul(_t(a), _t(a.T)).numpy(), a @ a.T, rtol=1e-12)
    x = Variable(_t([1.0, 2.0]), requires_grad=True)
    (g,) = ag.autograd.grad((x * x * x).sum(), x)
    assert g.to_vec() == [3.0, 12.0]
    h = ag.func.hessian(lambda v: (v * v * v).sum(), x)
    j = ag.func.jacobian(lambda v: v * v, x)
    assert isinstance(h, Tensor) and isinstance(j, Tensor) and h.dtype == np.float64
    np.testing.assert_allclose(h.numpy(), np.diag([6.0, 12.0]))
    np.testing.assert_allclose(j.numpy(), np.diag([2.0, 4.0]))


def test_save_and_load_a_nested_checkpoint_resume_as_torch_does(tmp_path):
    from axonml_autograd.optim import Adam
    from axonml_autograd.optim.lr_scheduler import StepLR

    def make():
        m = nn.Linear(3, 2, seed=0, dtype="float64")
        o = Adam(m.parameters(), lr=0.1)
        return m, o, StepLR(o, step_size=2, gamma=0.5)

    def train(m, o, s, steps):
        for k in range(steps):
            o.zero_grad()
            (m(Variable(_t(np.full((4, 3), k + 1.0)))) ** 2).sum().backward()
            o.step()
            s.step()

    m, o, s = make()
    train(m, o, s, 3)
    path = tmp_path / "ck.npz"
    ag.save({"model": m.state_dict(), "optim": o.state_dict(), "sched": s.state_dict(), "epoch": 3,
             "note": "run 1", "dims": (3, 2)}, path)
    ck = ag.load(path)
    assert ck["epoch"] == 3 and ck["note"] == "run 1" and ck["dims"] == (3, 2)
    m2, o2, s2 = make()
    m2.load_state_dict(ck["model"])
    o2.load_state_dict(ck["optim"])
    s2.load_state_dict(ck["sched"])
    train(m, o, s, 2)
    train(m2, o2, s2, 2)
    np.testing.assert_array_equal(m.weight.numpy(), m2.weight.numpy())


def test_printing_shows_values_summarised_at_any_size():
    text = repr(Tensor.from_numpy(np.arange(5000, dtype=np.float32)))
    assert "0.000e+00, 1.000e+00" in text and "..." in text and "4.999e+03" in text and "shape=[5000]" in text


def test_cpu_gives_the_cpu_opencl_device_and_to_takes_a_positional_dtype():
    t = Tensor.zeros([2])
    assert t.cpu().device.kind == "cpu" if hasattr(t.device, "kind") else t.cpu() is not None
    m = nn.Linear(3, 2, seed=0).to(ag.float64)
    assert m.weight.dtype == np.float64 and m.bias.dtype == np.float64
    with pytest.raises(TypeError, match="two dtypes"):
        m.to(ag.float32, dtype=ag.float64)


def test_index_assignment_replays_under_capture():
    from axonml_autograd import capture
    rng = np.random.default_rng(4)
    w = Variable(_t(rng.standard_normal((3, 17))), requires_grad=True)
    cols = Tensor.from_numpy(np.array([16, 0, 5], np.int32))

    def step(x):
        w.zero_grad()
        h = w * x
        h[:, 1] = 0.0                      # a window
        h[1, cols] = h[0, cols] * 3.0      # positions from a device tensor: no upload
        loss = (h * h).sum()
        loss.backward()
        return loss

    f = capture(step)
    for k in range(3):
        x = _t(rng.standard_normal((3, 17)))
        got = f(x).item()
        g_got = w.grad.numpy().copy()
        want = step(x).item()
        np.testing.assert_array_equal(g_got, w.grad.numpy())
        assert got == want
    assert f.recordings == 1 and f.replays == 2
