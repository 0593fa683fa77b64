"""Checks that more than one test file makes of a captured step (imported with the tests folder on sys.path)."""

import numpy as np

from axonml_autograd import capture


def assert_replays_equal_eager(step, make_input, leaf, calls=3):
    """``capture(step)`` called ``calls`` times on fresh inputs from ``make_input()`` gives, bit for bit, the
    output and the gradient in ``leaf`` that the eager ``step`` gives on the same input; at least one
    call is a replay."""
    captured = capture(step)
    for _ in range(calls):
        x = make_input()
        leaf.zero_grad()
        got = captured(x).numpy()
        g_captured = leaf.grad().numpy()
        leaf.zero_grad()
        want = step(x).numpy()
        assert np.array_equal(got, want) and np.array_equal(g_captured, leaf.grad().numpy())
    assert captured.replays >= 1
