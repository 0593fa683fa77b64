"""vjp and jacobian against hand-derived derivatives; the transforms that need create_graph say so;
serialization and the top-level save/load are the checkpoint functions."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, load, save, serialization
from axonml_autograd.func import hessian, hvp, jacobian, jvp, vjp


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


def test_the_second_order_transforms_say_what_they_need():
    for t in (jvp, hvp, hessian):
        with pytest.raises(NotImplementedError, match="create_graph=True"):
            t(lambda v: v.sum(), _x())


def test_serialization_is_the_checkpoint_module_under_pytorchs_name(tmp_path):
    from axonml_autograd import checkpoint
    assert serialization.save is checkpoint.save and save is checkpoint.save and load is checkpoint.load
    save(tmp_path / "a.npz", {"w": _x()})
    np.testing.assert_array_equal(load(tmp_path / "a.npz")["w"], [0.5, -1.0, 2.0])
