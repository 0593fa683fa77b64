"""Random numbers without a seed are fresh at every call (also in captured replays); manual_seed
repeats a stream; a seed given explicitly still gives the same numbers everywhere."""

import numpy as np

from axonml_autograd import Tensor, Variable, capture
from axonml_autograd.random import manual_seed, uniform


def test_calls_without_a_seed_draw_fresh_numbers_and_manual_seed_repeats_them(device):
    manual_seed(123, device)
    a, b = Tensor.rand([1000], device=device).numpy(), Tensor.randn([999], device=device).numpy()
    c = Tensor.rand([1000], device=device).numpy()
    assert not np.array_equal(a, c)                           # a dropout mask made this way changes
    assert 0.0 <= a.min() and a.max() < 1.0 and abs(b.mean()) < 0.15
    manual_seed(123, device)
    np.testing.assert_array_equal(Tensor.rand([1000], device=device).numpy(), a)
    np.testing.assert_array_equal(Tensor.randn([999], device=device).numpy(), b)
    np.testing.assert_array_equal(Tensor.rand([1000], device=device).numpy(), c)


def test_an_explicit_seed_is_reproducible_and_does_not_advance_the_stream(device):
    manual_seed(7, device)
    first = Tensor.rand([64], device=device).numpy()
    manual_seed(7, device)
    np.testing.assert_array_equal(Tensor.rand([10], seed=5, device=device).numpy(),
                                  uniform([10], 5, device=device).numpy())
    np.testing.assert_array_equal(Tensor.rand([64], device=device).numpy(), first)


def test_a_captured_dropout_draws_a_new_mask_at_every_replay_like_eager_calls(device):
    x = Variable(Tensor.ones([256], device=device), requires_grad=True)

    def step():
        x.zero_grad()
        mask = Tensor.rand([256], device=device)
        y = x * Variable(mask) * 2.0
        y.sum().backward()
        return mask

    manual_seed(99, device)
    eager = [step().numpy() for _ in range(4)]
    manual_seed(99, device)
    f = capture(step)
    replayed = [f().numpy() for _ in range(4)]
    assert f.replays == 3
    for e, r in zip(eager, replayed):
        np.testing.assert_array_equal(r, e)
    assert not np.array_equal(replayed[1], replayed[2])
