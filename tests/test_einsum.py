"""einsum against numpy (values) and finite differences (gradients), including diagonals, implicit
outputs, ellipses, broadcasting and three operands."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, einsum
from axonml_autograd.backward import check_gradients

RNG = np.random.default_rng(13)

CASES = [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("i,i->", [(17,), (17,)]),
         ("i,j->ij", [(3,), (4,)]), ("ij->ji", [(3, 4)]), ("ii->i", [(4, 4)]), ("ii", [(3, 3)]),
         ("ij->", [(3, 4)]), ("ij", [(3, 4)]), ("ji", [(3, 4)]), ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
         ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]), ("...ij,jk", [(2, 1, 3, 4), (4, 5)]),
         ("ijk,ikl,il->j", [(2, 3, 4), (2, 4, 5), (2, 5)]), ("ij,ij->i", [(3, 17), (3, 17)]),
         ("bij,jk->bik", [(1, 3, 4), (4, 2)]), ("iij->j", [(3, 3, 2)]), ("ij,kj->ik", [(3, 5), (1, 5)])]


@pytest.mark.parametrize("equation,shapes", CASES, ids=[c[0] for c in CASES])
def test_einsum_matches_numpy_and_its_gradients_match_finite_differences(equation, shapes, fp64):
    arrays = [RNG.standard_normal(s) for s in shapes]
    vs = [Variable(Tensor.from_numpy(a), requires_grad=True) for a in arrays]
    got = einsum(equation, *vs)
    want = np.einsum(equation, *arrays)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)
    check_gradients(lambda *xs: einsum(equation, *xs).pow(2.0).sum(), vs)


def test_einsum_of_tensors_gives_a_tensor_and_replays_under_capture():
    a, b = RNG.standard_normal((3, 4)).astype(np.float32), RNG.standard_normal((4, 2)).astype(np.float32)
    out = einsum("ij,jk->ik", Tensor.from_numpy(a), Tensor.from_numpy(b))
    assert isinstance(out, Tensor)
    np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-5)
    step = capture(lambda x, y: einsum("ij,jk", x, y))
    for _ in range(3):
        np.testing.assert_allclose(step(Tensor.from_numpy(a), Tensor.from_numpy(b)).numpy(), a @ b, rtol=1e-5)
    assert step.replays >= 1


@pytest.mark.parametrize("equation,shapes,match", [
    ("ij,jk->ik", [(3, 4)], "names 2 operands, got 1"),
    ("ij,jk->ik", [(3, 4), (5, 2)], "label 'j' has sizes 4 and 5"),
    ("ijk->i", [(3, 4)], r"operand 0 has shape \[3, 4\] but its term is 'ijk'"),
    ("ij->iq", [(3, 4)], "output label 'q' is in no operand"),
])
def test_bad_equations_are_named(equation, shapes, match):
    with pytest.raises(ValueError, match=match):
        einsum(equation, *[Variable(Tensor.zeros(list(s))) for s in shapes])
