"""vjp and jacobian against hand-derived derivatives; jvp, vhp, hvp and hessian against torch.autograd.functional
and finite differences (float64); serialization and the top-level save/load are the checkpoint functions."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, grad, load, save, serialization
from axonml_autograd.func import hessian, hvp, jacobian, jvp, vhp, vjp


def _x():
    return Variable(Tensor.from_vec([0.5, -1.0, 2.0], [3], dtype="float64"))


def test_jacobian_of_an_elementwise_and_a_mixing_function():
    xs = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(jacobian(lambda v: v.exp(), _x()), np.diag(np.exp(xs)), rtol=1e-12)
    w = np.arange(6.0).reshape(3, 2)
    got = jacobian(lambda v: v.matmul(Variable(Tensor.from_numpy(w))), _x())
    np.testing.assert_allclose(got, w.T, rtol=1e-12)
    a, b = jacobian(lambda u, v: u * v, (_x(), _x()))
    np.testing.assert_allclose(a, np.diag(xs), rtol=1e-12)


def test_vjp_returns_the_output_and_v_transposed_times_the_jacobian():
    v = Tensor.from_vec([1.0, 2.0, 3.0], [3], dtype="float64")
    out, g = vjp(lambda u: u * u, _x(), v)
    np.testing.assert_allclose(out.numpy(), [0.25, 1.0, 4.0])
    np.testing.assert_allclose(g.numpy(), [1.0, -4.0, 12.0])


def _fd_jacobian(f, x, eps=1e-6):
    """Central differences of a numpy function's output by its input (output shape + input shape)."""
    x = np.array(x, dtype=np.float64)
    cols = []
    for i in range(x.size):
        d = np.zeros(x.size)
        d[i] = eps
        cols.append((f(x + d.reshape(x.shape)) - f(x - d.reshape(x.shape))) / (2 * eps))
    out = np.stack(cols, -1)
    return out.reshape(out.shape[:-1] + x.shape)


def _v(a):
    return Variable(Tensor.from_numpy(np.asarray(a, dtype=np.float64), dtype="float64"))


def _loss(u, w):       # a function of two inputs with mixed second derivatives
    return ((u @ w).tanh() * u.sum()).sum() + (w * w * w).sum()


U, W = np.array([[0.3, -1.2, 0.8]]), np.array([[0.5, -0.25], [1.0, 0.7], [-0.4, 0.2]])


def test_jvp_and_vjp_against_torch_and_finite_differences():
    torch = pytest.importorskip("torch")
    f = lambda u, w: (u @ w).sin() * 2.0           # noqa: E731
    vu, vw = np.array([[1.0, 0.5, -2.0]]), np.array([[0.1, 0.2], [0.3, -0.4], [0.5, 0.6]])
    out, (ju) = jvp(f, (_v(U), _v(W)), (_v(vu), _v(vw)))
    tout, tj = torch.autograd.functional.jvp(lambda a, b: (a @ b).sin() * 2.0, (torch.tensor(U), torch.tensor(W)),
                                             (torch.tensor(vu), torch.tensor(vw)))
    np.testing.assert_allclose(out.numpy(), tout.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ju.numpy(), tj.numpy(), rtol=1e-12)
    # J v by finite differences along v.
    eps = 1e-6
    fd = (np.sin((U + eps * vu) @ (W + eps * vw)) - np.sin((U - eps * vu) @ (W - eps * vw))) / eps
    np.testing.assert_allclose(ju.numpy(), fd, rtol=1e-7)


def test_hvp_vhp_and_hessian_against_torch_and_finite_differences_of_the_gradient():
    torch = pytest.importorskip("torch")
    vu, vw = np.array([[1.0, 0.5, -2.0]]), np.array([[0.1, 0.2], [0.3, -0.4], [0.5, 0.6]])
    tf = lambda a, b: ((a @ b).tanh() * a.sum()).sum() + (b * b * b).sum()   # noqa: E731
    targs, tvs = (torch.tensor(U), torch.tensor(W)), (torch.tensor(vu), torch.tensor(vw))
    _, th = torch.autograd.functional.hvp(tf, targs, tvs)
    _, tvh = torch.autograd.functional.vhp(tf, targs, tvs)
    tH = torch.autograd.functional.hessian(tf, targs)
    out, hv = hvp(_loss, (_v(U), _v(W)), (_v(vu), _v(vw)))
    _, vh = vhp(_loss, (_v(U), _v(W)), (_v(vu), _v(vw)))
    H = hessian(_loss, (_v(U), _v(W)))
    np.testing.assert_allclose(out.item(), tf(*targs).item(), rtol=1e-12)
    for ours, theirs in zip(hv + vh, th + tvh):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(H[i][j], tH[i][j].numpy(), rtol=1e-10, atol=1e-12)

    # The Hessian's w-w block by central differences of the first-order gradient (one backward each).
    def grad_w(w):
        wv = Variable(Tensor.from_numpy(w, dtype="float64"), requires_grad=True)
        return grad(_loss(_v(U), wv), wv)[0].numpy()
    np.testing.assert_allclose(H[1][1], _fd_jacobian(grad_w, W), rtol=1e-6, atol=1e-8)


def test_hessian_of_one_input_and_the_options():
    xs = np.array([0.5, -1.0, 2.0])
    H = hessian(lambda v: (v * v * v).sum() + v.prod(), _x())
    want = np.diag(6 * xs) + np.array([[0, xs[2], xs[1]], [xs[2], 0, xs[0]], [xs[1], xs[0], 0]])
    np.testing.assert_allclose(H, want, rtol=1e-12)
    # create_graph=True: the product stays part of the inputs' graph (here d/dx of sum(H v) = 6 v).
    x = Variable(Tensor.from_vec([0.5, -1.0, 2.0], [3], dtype="float64"), requires_grad=True)
    v = Tensor.from_vec([1.0, 1.0, 2.0], [3], dtype="float64")
    _, hv = hvp(lambda u: (u * u * u * u).sum(), x, v, create_graph=True)
    np.testing.assert_allclose(hv.numpy(), 12 * xs ** 2 * [1.0, 1.0, 2.0], rtol=1e-12)
    np.testing.assert_allclose(grad(hv.sum(), x)[0].numpy(), 24 * xs * [1.0, 1.0, 2.0], rtol=1e-12)
    with pytest.raises(NotImplementedError, match="strict=True"):
        jvp(lambda u: u * 2.0, _x(), _x(), strict=True)
    with pytest.raises(ValueError, match="hessian: the function must return one element"):
        hessian(lambda u: u * u, _x())
    with pytest.raises(ValueError, match=r"hvp: v\[0\] has shape \[2\] but the input has shape \[3\]"):
        hvp(lambda u: u.sum(), _x(), Tensor.from_vec([1.0, 2.0], [2], dtype="float64"))
    # An input the function does not use gets zeros; a linear function a zero Hessian-vector product.
    _, (h0, h1) = hvp(lambda a, b: (a * a).sum(), (_x(), _x()), (_x(), _x()))
    np.testing.assert_allclose(h0.numpy(), 2 * xs)
    np.testing.assert_allclose(h1.numpy(), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(hvp(lambda a: a.sum() * 3.0, _x(), _x())[1].numpy(), [0.0, 0.0, 0.0])


def test_serialization_holds_the_npz_functions_and_their_old_checkpoint_paths_still_work(tmp_path):
    """serialization.py is the .npz files' home (torch.save/load); checkpoint.py is gradient
    checkpointing (torch.utils.checkpoint) and still answers to the file functions' old names."""
    from axonml_autograd import checkpoint
    from axonml_autograd.checkpoint import checkpoint as checkpoint_fn
    assert save is serialization.save and load is serialization.load
    for name in serialization.__all__:
        assert getattr(checkpoint, name) is getattr(serialization, name), name
    assert checkpoint.__all__ == ["checkpoint"] and checkpoint_fn.__module__ == "axonml_autograd.checkpoint"
    assert not hasattr(serialization, "checkpoint")
    save(tmp_path / "a.npz", {"w": _x()})
    np.testing.assert_array_equal(load(tmp_path / "a.npz")["w"], [0.5, -1.0, 2.0])
