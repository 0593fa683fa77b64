"""What a PyTorch user tried first and found missing or different (each pinned against numpy or torch)."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable

X = np.array([[3.0, -1.0, 3.0, 0.5], [2.0, 7.0, -4.0, 7.0], [0.0, 0.0, -9.0, 1.0]])


def test_max_and_min_along_a_dim_have_values_and_indices_fields_on_variables_and_tensors():
    for x in (Variable(Tensor.from_numpy(X)), Tensor.from_numpy(X)):
        r = x.max(1)
        np.testing.assert_array_equal(r.values.numpy(), X.max(1))
        np.testing.assert_array_equal(r.indices.numpy(), X.argmax(1))
        values, indices = x.min(dim=0, keepdim=True)      # still unpacks as a pair
        np.testing.assert_array_equal(values.numpy(), X.min(0, keepdims=True))
        np.testing.assert_array_equal(indices.numpy(), X.argmin(0)[None])
        assert isinstance(r.values, type(x))


def test_tensor_reductions_take_torchs_dim_keyword_tuples_and_no_dim_for_argmax():
    t = Tensor.from_numpy(X)
    np.testing.assert_array_equal(t.sum(dim=1).numpy(), X.sum(1))
    np.testing.assert_allclose(t.mean(dim=(0, 1), keepdim=True).numpy(), X.mean((0, 1), keepdims=True))
    np.testing.assert_array_equal(t.sum((0, 1)).numpy(), X.sum((0, 1)))
    assert t.argmax().item() == X.argmax() and t.argmax(keepdim=True).shape() == [1, 1]
    assert t.argmax(dim=-1).to_vec() == X.argmax(-1).tolist()
    assert t.max().item() == 7.0
    with pytest.raises(TypeError, match="sum: give axis or dim"):
        t.sum(axis=0, dim=0)


def test_max_along_a_dim_of_a_tensor_is_captured_and_replayed():
    from axonml_autograd import capture
    f = capture(lambda t: t.max(dim=1).values * 2.0)
    for k in range(3):
        x = np.random.default_rng(k).normal(size=(5, 17))
        np.testing.assert_allclose(f(Tensor.from_numpy(x)).numpy(), 2 * x.max(1))
    assert f.replays == 2


def test_float_int_and_tolist_read_like_torch():
    torch = pytest.importorskip("torch")
    for x in (Tensor.from_numpy(np.array([2.5])), Variable(Tensor.from_numpy(np.array(7, dtype=np.int64)))):
        ref = torch.tensor(x.numpy())
        assert float(x) == float(ref) and int(x) == int(ref)
    t = Tensor.from_numpy(X)
    assert t.tolist() == torch.tensor(X).tolist() and Variable(t).tolist() == X.tolist()
    assert Tensor.from_numpy(np.array(3.0)).tolist() == 3.0
    with pytest.raises(ValueError, match="item: only a one-element"):
        float(t)


@pytest.mark.parametrize("method,dtype", [("float", np.float32), ("double", np.float64), ("long", np.int64),
                                          ("int", np.int32), ("bool", np.bool_)])
def test_dtype_casts_match_torch(method, dtype):
    torch = pytest.importorskip("torch")
    a = np.array([[-1.75, 0.0, 2.5], [3.0, -0.0, 1e-3]])
    want = getattr(torch.tensor(a), method)().numpy()
    for x in (Tensor.from_numpy(a), Variable(Tensor.from_numpy(a))):
        for got in (getattr(x, method)(), x.to(dtype), x.to(np.dtype(dtype).name)):
            assert isinstance(got, type(x)) and got.dtype == dtype
            np.testing.assert_array_equal(got.numpy(), want)


def test_float_casts_carry_the_gradient_back_in_the_source_dtype_and_integer_ones_none():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).normal(size=(3, 17))
    x = Variable(Tensor.from_numpy(a), requires_grad=True)
    y = x.float()
    assert y.requires_grad() and y.dtype == np.float32
    (y * y.double().float()).sum().backward()
    xt = torch.tensor(a, requires_grad=True)
    (xt.float() * xt.float().double().float()).sum().backward()
    assert x.grad().dtype == np.float64
    np.testing.assert_array_equal(x.grad().numpy(), xt.grad.numpy())
    assert not x.long().requires_grad() and x.double() is x
    with pytest.raises(TypeError, match="to: dtype"):
        x.to("complex64")


def test_a_cast_is_captured_and_replayed():
    from axonml_autograd import capture
    f = capture(lambda t: (t.double() * 2.0).long())
    for k in range(3):
        x = np.random.default_rng(k).normal(size=(65,)).astype(np.float32) * 10
        np.testing.assert_array_equal(f(Tensor.from_numpy(x)).numpy(), (x.astype(np.float64) * 2).astype(np.int64))
    assert f.replays == 2


def test_tensor_max_keeps_numpys_axis_keyword_for_the_values_alone():
    t = Tensor.from_numpy(X)
    np.testing.assert_array_equal(t.max(axis=1, keepdim=True).numpy(), X.max(1, keepdims=True))
    with pytest.raises(TypeError, match="max: give axis or dim"):
        t.max(1, axis=1)


class _Mul(__import__("axonml_autograd").Function):
    """a * b whose backward returns gradients of the broadcast shape, as torch allows."""
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        from axonml_autograd import elementwise
        return elementwise("a * b", a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * b, g * a     # Variables under create_graph, Tensors otherwise: both broadcast


@pytest.mark.parametrize("sa,sb", [((3, 4), (4,)), ((3, 1), (1, 17)), ((2, 3, 4), (3, 1)), ((1,), (65,))])
def test_function_gradients_of_the_broadcast_shape_are_summed_back_like_torch(sa, sb):
    torch = pytest.importorskip("torch")
    from axonml_autograd import grad
    rng = np.random.default_rng(0)
    an, bn = rng.normal(size=sa), rng.normal(size=sb)
    a, b = (Variable(Tensor.from_numpy(v), requires_grad=True) for v in (an, bn))
    out = _Mul.apply(a, b)
    out.pow(2.0).sum().backward()
    at, bt = (torch.tensor(v, requires_grad=True) for v in (an, bn))
    (at * bt).pow(2).sum().backward()
    np.testing.assert_allclose(a.grad().numpy(), at.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.grad().numpy(), bt.grad.numpy(), rtol=1e-12)
    # and differentiated again: the sum back to the input's shape is part of the graph
    a2, b2 = (Variable(Tensor.from_numpy(v), requires_grad=True) for v in (an, bn))
    (gb,) = grad(_Mul.apply(a2, b2).pow(2.0).sum(), [b2], create_graph=True)
    (gbt,) = torch.autograd.grad((at * bt).pow(2).sum(), [bt], create_graph=True)
    (gb * gb).sum().backward()
    (gbt * gbt).sum().backward()
    at.grad = None
    np.testing.assert_allclose(gb.numpy(), gbt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(a2.grad().numpy(), torch.autograd.grad((torch.autograd.grad(
        (at * bt).pow(2).sum(), [bt], create_graph=True)[0] ** 2).sum(), [at])[0].numpy(), rtol=1e-10)


class _FirstOnly(__import__("axonml_autograd").Function):
    @staticmethod
    def forward(ctx, a, b):
        from axonml_autograd import elementwise
        return elementwise("a", a)

    @staticmethod
    def backward(ctx, g):
        return g, g


def test_function_gradient_that_does_not_broadcast_to_the_input_still_raises():
    a = Variable(Tensor.from_numpy(np.ones((3, 4))), requires_grad=True)
    b = Variable(Tensor.from_numpy(np.ones(5)), requires_grad=True)
    with pytest.raises(ValueError, match=r"_FirstOnly.backward: gradient 1 has shape \[3, 4\], but input 1 has shape \[5\]"):
        _FirstOnly.apply(a, b).sum().backward()


def test_torch_aliases_give_torchs_values_and_gradients():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=s) for s in ((3, 17), (17, 5), (2, 5, 3), (2, 4, 3))]

    def run(a, b, c, d):
        return [a.mm(b), c.bmm(d.transpose(1, 2).contiguous()), a.view_as(b.T[:3]), a.reshape_as(b.T[:3]).clamp_min(-0.5),
                a.clamp_max(0.25).neg(), b.negative().clone() * 2, a.T.contiguous()]

    ours = [Variable(Tensor.from_numpy(v), requires_grad=True) for v in arrays]
    ref = [torch.tensor(v, requires_grad=True) for v in arrays]
    got, want = run(*ours), run(*ref)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.detach().numpy(), rtol=1e-12, atol=1e-15)
    sum(((g * g).sum() for g in got), Variable(Tensor.zeros([], "float64"))).backward()
    sum((w * w).sum() for w in want).backward()
    for o, r in zip(ours, ref):
        np.testing.assert_allclose(o.grad().numpy(), r.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert not ours[0].T.is_contiguous() and ours[0].T.contiguous().is_contiguous()
    assert ours[0].contiguous() is ours[0]


def test_mm_and_bmm_refuse_other_ranks_naming_the_op():
    a = Variable(Tensor.zeros([2, 3, 4]))
    with pytest.raises(ValueError, match=r"mm: expected 2-D operands, got shapes \[2, 3, 4\]"):
        a.mm(a)
    with pytest.raises(ValueError, match=r"bmm: expected 3-D operands"):
        a.bmm(Tensor.zeros([4, 5]))
    with pytest.raises(ValueError, match=r"bmm: batch sizes differ"):
        a.bmm(Tensor.zeros([1, 4, 5]))


def test_backward_takes_torchs_gradient_keyword_and_grad_names_grad_outputs():
    from axonml_autograd import grad
    x = Variable(Tensor.from_numpy(np.arange(3.0)), requires_grad=True)
    (x * x).backward(gradient=Tensor.from_numpy(np.array([1.0, 0.5, 2.0])))
    assert x.grad().to_vec() == [0.0, 1.0, 8.0]
    with pytest.raises(RuntimeError, match="so pass grad_outputs$"):
        grad(x * x, x)
    with pytest.raises(RuntimeError, match="so pass grad_output$"):
        (x * x).backward()
    with pytest.raises(TypeError, match="backward: give grad_output or gradient"):
        (x * x).backward(Tensor.ones([3], "float64"), gradient=Tensor.ones([3], "float64"))


def test_clone_is_captured_and_replayed():
    from axonml_autograd import capture
    f = capture(lambda t: Variable(t).T.clone() * 3.0)
    for k in range(3):
        x = np.random.default_rng(k).normal(size=(3, 17)).astype(np.float32)
        np.testing.assert_allclose(f(Tensor.from_numpy(x)).numpy(), 3 * x.T, rtol=1e-6)
    assert f.replays == 2
