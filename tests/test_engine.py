"""The backward engine and grad modes: ranks, diamonds, deep chains, skipped nodes, accumulation,
retain_graph, node names, detach/requires_grad_, thread-local grad modes and their guards, inference
mode's strictness, no host traffic in forward + backward, and clear errors for bad inputs."""

import dataclasses
import gc
import threading
import weakref

import numpy as np
import pytest

from axonml_autograd import (DeviceError, EnableGradGuard, InferenceModeGuard, NoGradGuard, Tensor, Variable,
                             enable_grad, inference_mode, is_grad_enabled, is_inference_mode, no_grad)
from axonml_autograd.backward import backward
from axonml_autograd.device import Device
from axonml_autograd.graph import consumer_counts, topological_ranks


def var(values, shape=None, requires_grad=False, dtype="float32"):
    arr = np.asarray(values, dtype=np.float64)
    if shape is not None:
        arr = arr.reshape(shape)
    return Variable(Tensor.from_numpy(arr, dtype=dtype), requires_grad)


def all_nodes(root):
    return list(consumer_counts(root))


def spy_on_rules(root, log):
    """Wrap every reachable node's backward rule so that each call is logged as (node, gradient)."""
    for node in all_nodes(root):
        rule = node._rule
        if rule is None:  # AccumulateGrad
            continue

        def logged(ctx, g, rule=rule, node=node):
            log.append((node, g.numpy()))
            return rule(ctx, g)
        node._rule = logged


# ------------------------------------------------------------------------------------------------------
# Ranks and the scheduler
# ------------------------------------------------------------------------------------------------------

def test_topological_ranks_put_every_node_after_all_its_consumers():
    x = var([0.5, 1.0], requires_grad=True)
    y = x.exp()
    z = (y + y.tanh().mul_scalar(2.0)).mul_var(x).sum()   # x and y both used twice, at different depths
    ranks = topological_ranks(z.grad_fn)
    rank_of = {}
    for r, nodes in enumerate(ranks):
        for n in nodes:
            assert n not in rank_of, f"{n} appears twice"
            rank_of[n] = r
    assert set(rank_of) == set(all_nodes(z.grad_fn))
    assert ranks[0] == [z.grad_fn]
    for n in rank_of:
        for nxt in n.next_functions():
            if nxt is not None:
                assert rank_of[nxt] > rank_of[n], f"{nxt.name()} must come after its consumer {n.name()}"
    # The leaf's node comes last: it is the farthest from the output.
    assert [n.name() for n in ranks[-1]] == ["AccumulateGrad"]


def test_topological_ranks_of_a_simple_chain_name_each_op():
    x = var([1.0], requires_grad=True)
    y = (x * 2.0).exp().sum()
    assert [[n.name() for n in rank] for rank in topological_ranks(y.grad_fn)] == \
        [["SumBackward"], ["ExpBackward"], ["MulScalarBackward"], ["AccumulateGrad"]]


def test_backward_runs_nodes_in_rank_order_each_once_with_all_contributions_summed():
    x = var([0.3, -0.7, 1.1], requires_grad=True, dtype="float64")
    y = x.exp()                                   # consumed by a short and a long branch
    long_branch = y.tanh().tanh().tanh()
    z = (y + long_branch).sum()
    log = []
    spy_on_rules(z.grad_fn, log)
    z.backward()
    names = [n.name() for n, _g in log]
    assert len(log) == len(set(n for n, _g in log)), f"a node ran twice: {names}"
    order = [n for rank in topological_ranks(z.grad_fn) for n in rank if n._rule is not None]
    assert [n for n, _g in log] == order
    # ExpBackward ran once, with the sum of both branches' contributions.
    (g_exp,) = [g for n, g in log if n is y.grad_fn]
    xv = np.array([0.3, -0.7, 1.1])
    t1 = np.tanh(np.exp(xv))
    t2 = np.tanh(t1)
    d_long = (1 - np.tanh(t2) ** 2) * (1 - t2 ** 2) * (1 - t1 ** 2)
    np.testing.assert_allclose(g_exp, 1 + d_long, rtol=1e-12)
    np.testing.assert_allclose(x.grad().numpy(), (1 + d_long) * np.exp(xv), rtol=1e-12)


def test_diamond_leaf_used_by_two_branches_gets_the_summed_gradient_once():
    x = var([0.5, -1.0, 2.0], requires_grad=True, dtype="float64")
    calls = []
    original = Variable.accumulate_grad

    def counting(self, g, **kwargs):
        calls.append(self)
        return original(self, g, **kwargs)

    Variable.accumulate_grad = counting
    try:
        loss = (x.exp() + x.mul_scalar(2.0)).sum()
        loss.backward()
    finally:
        Variable.accumulate_grad = original
    assert calls == [x], "the leaf's gradient must be summed before it is accumulated, once"
    np.testing.assert_allclose(x.grad().numpy(), np.exp([0.5, -1.0, 2.0]) + 2.0, rtol=1e-12)


def test_leaf_used_many_times_gets_the_sum():
    x = var([1.5, -2.0], requires_grad=True, dtype="float64")
    loss = (x * x * x + x + x).sum()         # 3x^2 + 2
    loss.backward()
    np.testing.assert_allclose(x.grad().numpy(), 3 * np.array([1.5, -2.0]) ** 2 + 2, rtol=1e-12)


def test_ten_thousand_op_chain_backward_is_iterative_and_correct():
    x = var([1.0, 2.0], requires_grad=True, dtype="float64")
    y = x
    n = 10_000
    for _ in range(n):
        y = y.mul_scalar(1.0001)
    y.sum().backward()
    np.testing.assert_allclose(x.grad().numpy(), [1.0001 ** n] * 2, rtol=1e-9)
    assert len(topological_ranks(y.grad_fn)) == n + 1
    del y
    gc.collect()  # tearing the chain down must not recurse either


def test_long_chain_with_retain_graph_twice():
    x = var([0.5], requires_grad=True, dtype="float64")
    y = x
    for k in range(3_000):
        y = y.add_scalar(1.0) if k % 2 else y.mul_scalar(1.0)
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad().numpy(), [2.0])


def test_inputs_that_do_not_require_grad_get_no_gradient_and_no_node():
    x = var([1.0, 2.0], requires_grad=True)
    c = var([3.0, 4.0])
    k = c.exp()                       # constant branch: no node recorded
    assert not k.requires_grad() and k.grad_fn is None
    loss = (x * k + c).sum()
    mul = loss.grad_fn.next_functions()[0].next_functions()[0]
    assert mul.name() == "MulBackward"
    assert mul.next_functions()[1] is None
    assert mul.needs_input_grad == (True, False)
    add = loss.grad_fn.next_functions()[0]
    assert add.next_functions()[1] is None
    loss.backward()
    assert c.grad is None and k.grad is None
    np.testing.assert_allclose(x.grad().to_vec(), np.exp([3.0, 4.0]), rtol=1e-6)


def test_a_rule_is_not_asked_for_gradients_nobody_needs():
    # The MulBackward rule sees needs_input_grad and returns None for the constant side; a rule that
    # returned a gradient anyway would be filtered. Either way only x's node runs.
    x = var([2.0], requires_grad=True)
    c = var([5.0])
    out = (c * x).sum()
    log = []
    spy_on_rules(out.grad_fn, log)
    out.backward()
    assert sorted(n.name() for n, _g in log) == ["MulBackward", "SumBackward"]
    assert x.grad().to_vec() == [5.0]


def test_backward_with_an_explicit_gradient_for_a_non_scalar_output():
    x = var([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2.0
    y.backward(Tensor.from_vec([1.0, 0.5, -1.0], [3]))
    assert x.grad().to_vec() == [2.0, 1.0, -2.0]
    x.zero_grad()
    z = x * 3.0
    backward(z, Variable(Tensor.from_vec([1.0, 1.0, 1.0], [3])))
    assert x.grad().to_vec() == [3.0, 3.0, 3.0]


def test_backward_on_a_one_element_leaf_accumulates_one():
    x = var([4.0], requires_grad=True)
    x.backward()
    assert x.grad().to_vec() == [1.0]


def test_grad_is_kept_only_for_leaves():
    x = var([1.0, 2.0], requires_grad=True)
    h = x * 2.0
    h.sum().backward()
    assert h.grad is None
    assert x.grad().to_vec() == [2.0, 2.0]


# ------------------------------------------------------------------------------------------------------
# Accumulation, retain_graph, released graphs
# ------------------------------------------------------------------------------------------------------

def test_gradients_accumulate_across_backward_calls_until_zero_grad():
    w = var([1.0, -1.0], requires_grad=True)
    for k in range(1, 4):
        (w * w).sum().backward()
        np.testing.assert_allclose(w.grad().to_vec(), [2.0 * k, -2.0 * k])
    w.zero_grad()
    assert w.grad is None
    (w * 5.0).sum().backward()
    assert w.grad().to_vec() == [5.0, 5.0]


def test_retain_graph_allows_a_second_backward_and_accumulates():
    x = var([3.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    assert x.grad().to_vec() == [6.0]
    y.backward(retain_graph=True)
    assert x.grad().to_vec() == [12.0]
    y.backward()
    assert x.grad().to_vec() == [18.0]
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        y.backward()


def test_second_backward_without_retain_graph_raises_mentioning_retain_graph():
    x = var([3.0, 1.0], requires_grad=True)
    y = x.exp().sum()
    y.backward()
    before = x.grad().to_vec()
    with pytest.raises(RuntimeError) as info:
        y.backward()
    assert "retain_graph=True" in str(info.value)
    assert "second time" in str(info.value)
    assert x.grad().to_vec() == before


def test_second_backward_raises_even_when_nothing_was_saved():
    x = var([3.0, 1.0], requires_grad=True)
    y = (x + 1.0).sum()      # SumBackward and AddScalarBackward save no tensor
    y.backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        y.backward()


def test_saved_tensors_are_released_after_backward_and_kept_with_retain_graph():
    def build():
        x = var([0.1, 0.2, 0.3], requires_grad=True)
        h = x.exp()
        loss = (h * h).sum()
        ref = weakref.ref(h.data())
        return x, loss, ref

    x, loss, ref = build()
    gc.collect()
    assert ref() is not None, "MulBackward must hold its saved operand until backward"
    loss.backward(retain_graph=True)
    gc.collect()
    assert ref() is not None, "retain_graph=True keeps the saved tensors"
    loss.backward()
    gc.collect()
    assert ref() is None, "after backward the graph's saved tensors are released"


def test_partial_graph_shared_by_two_outputs_second_backward_through_released_part_raises():
    x = var([1.0, 2.0], requires_grad=True)
    h = x.exp()
    a = h.sum()
    b = (h * 2.0).sum()
    a.backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        b.backward()


# ------------------------------------------------------------------------------------------------------
# Nodes, detach, requires_grad_
# ------------------------------------------------------------------------------------------------------

def test_grad_fn_names_and_next_functions():
    a = var([1.0, -2.0], requires_grad=True)
    b = var([3.0, 4.0], requires_grad=True)
    c = var([1.0, 1.0])
    z = (a * b + c).relu().sum()
    assert z.grad_fn.name() == "SumBackward"
    (relu,) = z.grad_fn.next_functions()
    assert relu.name() == "ReluBackward"
    (add,) = relu.next_functions()
    assert add.name() == "AddBackward"
    mul, none = add.next_functions()
    assert none is None
    assert mul.name() == "MulBackward"
    acc_a, acc_b = mul.next_functions()
    assert acc_a.name() == acc_b.name() == "AccumulateGrad"
    assert acc_a.variable is a and acc_b.variable is b
    # A leaf has one node, whichever graph uses it.
    assert (a * a).grad_fn.next_functions() == (acc_a, acc_a)
    assert a.grad_fn is None and a.is_leaf
    assert not z.is_leaf


def test_op_names_cover_each_family():
    x = var([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    names = {
        "AddScalarBackward": x + 1.0, "SubBackward": x - x, "DivBackward": x / x, "NegBackward": -x,
        "PowBackward": x.pow(2.0), "LogBackward": x.log(), "SigmoidBackward": x.sigmoid(),
        "SoftmaxBackward": x.softmax(1), "LogSoftmaxBackward": x.log_softmax(1),
        "MeanBackward": x.mean(), "SumDimBackward": x.sum_dim(0), "MaxDimBackward": x.max_dim(1),
        "MatmulBackward": x @ x, "TransposeBackward": x.transpose(0, 1), "ReshapeBackward": x.reshape([4]),
        "NarrowBackward": x.narrow(0, 0, 1), "CatBackward": Variable.cat([x, x], 0),
        "ExpandBackward": x.expand([3, 2, 2]),
    }
    for name, v in names.items():
        assert v.grad_fn.name() == name


def test_detach_shares_data_but_cuts_the_graph():
    x = var([2.0, 3.0], requires_grad=True)
    d = x.detach()
    assert d.is_leaf and not d.requires_grad() and d.grad_fn is None
    assert d.data().buffer is x.data().buffer
    (d * x).sum().backward()
    assert x.grad().to_vec() == [2.0, 3.0]    # d counted as a constant, not 2x
    assert d.grad is None


def test_detach_of_a_non_leaf():
    x = var([2.0], requires_grad=True)
    h = x * x
    (h.detach() * x).sum().backward()
    assert x.grad().to_vec() == [4.0]


def test_requires_grad_flag_turns_tracking_on_and_off_for_leaves():
    v = var([1.0, 2.0])
    assert v.requires_grad_() is v
    assert v.requires_grad()
    y = (v * 3.0).sum()
    assert y.requires_grad()
    y.backward()
    assert v.grad().to_vec() == [3.0, 3.0]
    v.requires_grad_(False)
    assert not (v * 3.0).requires_grad()


def test_requires_grad_flag_on_a_non_leaf_raises():
    x = var([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        (x * 2.0).requires_grad_(False)


def test_result_requires_grad_iff_grad_mode_on_and_an_input_requires_grad():
    a = var([1.0], requires_grad=True)
    c = var([2.0])
    assert (a + c).requires_grad()
    assert (c + a).requires_grad()
    assert not (c + c).requires_grad()
    with no_grad():
        assert not (a + c).requires_grad()
        assert (a + c).grad_fn is None
        with enable_grad():
            assert (a + c).requires_grad()


# ------------------------------------------------------------------------------------------------------
# Grad modes
# ------------------------------------------------------------------------------------------------------

def test_grad_mode_is_thread_local_no_grad_in_a_thread_does_not_affect_another():
    x = var([1.0], requires_grad=True)
    entered, checked = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with no_grad():
            seen["worker_enabled"] = is_grad_enabled()
            seen["worker_tracks"] = (x * 2.0).requires_grad()
            entered.set()
            checked.wait(10)
        seen["worker_after"] = is_grad_enabled()

    t = threading.Thread(target=worker)
    t.start()
    assert entered.wait(10)
    main_enabled = is_grad_enabled()
    main_tracks = (x * 2.0).requires_grad()
    checked.set()
    t.join(10)
    assert not t.is_alive()
    assert main_enabled and main_tracks
    assert seen == {"worker_enabled": False, "worker_tracks": False, "worker_after": True}


def test_a_new_thread_starts_with_grad_enabled_even_inside_no_grad_and_inference_mode():
    seen = []

    def worker():
        seen.append((is_grad_enabled(), is_inference_mode()))

    with inference_mode():
        t = threading.Thread(target=worker)
        t.start()
        t.join(10)
    assert seen == [(True, False)]


def test_inference_mode_in_a_thread_leaves_the_main_thread_alone():
    entered, checked = threading.Event(), threading.Event()

    def worker():
        with inference_mode():
            entered.set()
            checked.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    assert entered.wait(10)
    try:
        assert is_grad_enabled() and not is_inference_mode()
    finally:
        checked.set()
        t.join(10)


def test_modes_as_context_managers_restore_the_previous_mode_even_on_error():
    with no_grad():
        assert not is_grad_enabled()
        with enable_grad():
            assert is_grad_enabled()
            with inference_mode():
                assert not is_grad_enabled() and is_inference_mode()
            assert is_grad_enabled() and not is_inference_mode()
        assert not is_grad_enabled()
    assert is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with inference_mode():
            1 / 0
    assert is_grad_enabled() and not is_inference_mode()


def test_modes_take_a_callable_and_return_its_result():
    x = var([1.0, -2.0], requires_grad=True)
    y = no_grad(lambda: x.relu())
    assert not y.requires_grad()
    assert enable_grad(lambda: is_grad_enabled()) is True
    assert no_grad(lambda: enable_grad(lambda: (x * 2.0).requires_grad())) is True
    assert inference_mode(lambda: (is_grad_enabled(), is_inference_mode())) == (False, True)
    assert is_grad_enabled() and not is_inference_mode()


def test_modes_as_decorators():
    x = var([1.0, 2.0], requires_grad=True)

    @no_grad()
    def predict(v, scale=1.0):
        """Doc."""
        return v * scale

    @enable_grad()
    def train_step(v):
        return v * 2.0

    @inference_mode()
    def serve(v):
        return v * 3.0, is_inference_mode()

    assert predict.__name__ == "predict" and predict.__doc__ == "Doc."
    assert not predict(x, scale=2.0).requires_grad()
    assert is_grad_enabled()
    with no_grad():
        assert train_step(x).requires_grad()
        assert not is_grad_enabled()
    y, inside = serve(x)
    assert inside and not y.requires_grad()
    assert not is_inference_mode()
    # A decorated function can be called many times; each call gets its own mode.
    assert not predict(x).requires_grad() and not predict(x).requires_grad()


def test_guards_with_exit_as_in_the_crate():
    g = NoGradGuard()
    assert not is_grad_enabled()
    e = EnableGradGuard()
    assert is_grad_enabled()
    e.exit()
    assert not is_grad_enabled()
    g.exit()
    assert is_grad_enabled()
    g.exit()                      # a second exit is harmless
    assert is_grad_enabled()

    i = InferenceModeGuard()
    assert not is_grad_enabled() and is_inference_mode()
    i.exit()
    assert is_grad_enabled() and not is_inference_mode()


def test_guards_as_context_managers():
    with NoGradGuard() as g:
        assert isinstance(g, NoGradGuard)
        assert not is_grad_enabled()
        with EnableGradGuard():
            assert is_grad_enabled()
        assert not is_grad_enabled()
    assert is_grad_enabled()
    with InferenceModeGuard():
        assert is_inference_mode() and not is_grad_enabled()
    assert not is_inference_mode() and is_grad_enabled()


def test_inference_mode_results_cannot_join_a_recording_graph():
    w = var([1.0, 2.0], requires_grad=True)
    with inference_mode():
        y = w * 2.0
        assert not y.requires_grad()
        z = y * 3.0                        # using it inside inference mode is fine
    with pytest.raises(RuntimeError) as info:
        (y * w).sum()
    assert "inference_mode" in str(info.value)
    with pytest.raises(RuntimeError, match="inference_mode"):
        w.add_var(z)
    with pytest.raises(RuntimeError, match="inference_mode"):
        Variable.cat([w, y], 0)
    # Without recording (no input requires grad, or no_grad) it may still be used.
    assert not (y * 2.0).requires_grad()
    with no_grad():
        assert not (y * w).requires_grad()


def test_no_grad_results_can_join_a_graph_later():
    w = var([1.0, 2.0], requires_grad=True)
    with no_grad():
        y = w * 2.0
    (y * w).sum().backward()
    assert w.grad().to_vec() == [2.0, 4.0]


def test_inference_result_made_to_require_grad_still_cannot_join_a_graph():
    w = var([1.0, 2.0], requires_grad=True)
    y = inference_mode(lambda: w * 2.0)
    try:
        y.requires_grad_(True)
    except RuntimeError as e:      # refusing here is also a clear error
        assert "inference" in str(e)
        return
    with pytest.raises(RuntimeError, match="inference_mode"):
        (y * 2.0).sum()


# ------------------------------------------------------------------------------------------------------
# No host traffic in forward + backward
# ------------------------------------------------------------------------------------------------------

def test_mlp_forward_and_backward_never_read_or_wait(host_traffic):
    rng = np.random.default_rng(7)
    xs, w1s, b1s = rng.normal(size=(4, 5)), rng.normal(size=(5, 8)) * 0.5, rng.normal(size=8) * 0.1
    w2s, b2s = rng.normal(size=(8, 3)) * 0.5, rng.normal(size=3) * 0.1
    labels = np.array([0, 2, 1, 2], np.int32)
    x = var(xs)
    W1, b1, W2, b2 = (var(a, requires_grad=True) for a in (w1s, b1s, w2s, b2s))
    targets = Tensor.from_numpy(labels, dtype="int32")

    with host_traffic() as traffic:
        loss = (x @ W1 + b1).relu().matmul(W2).add_var(b2).cross_entropy(targets)
        loss.backward()
    assert traffic.reads == 0, "forward + backward read from the device"
    assert traffic.waits == 0, "forward + backward waited for the device"

    # The values are right, too (numpy backprop by hand).
    pre = xs @ w1s + b1s
    h = np.maximum(pre, 0)
    logits = h @ w2s + b2s
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(labels)
    np.testing.assert_allclose(loss.item(), -np.mean(np.log(p[np.arange(n), labels])), rtol=1e-5)
    dlogits = p.copy()
    dlogits[np.arange(n), labels] -= 1
    dlogits /= n
    dh = dlogits @ w2s.T * (pre > 0)
    np.testing.assert_allclose(W2.grad().numpy(), h.T @ dlogits, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b2.grad().numpy(), dlogits.sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(W1.grad().numpy(), xs.T @ dh, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b1.grad().numpy(), dh.sum(0), rtol=1e-4, atol=1e-6)


def test_host_traffic_fixture_does_count_a_read(host_traffic):
    x = var([1.0, 2.0])
    with host_traffic() as traffic:
        x.to_vec()
    assert traffic.reads == 1 and traffic.waits >= 1


# ------------------------------------------------------------------------------------------------------
# Bad inputs: clear Python exceptions
# ------------------------------------------------------------------------------------------------------

def test_shape_mismatch_names_both_shapes():
    a = var(np.zeros((3, 4)), requires_grad=True)
    b = var(np.zeros((2, 5)), requires_grad=True)
    for op in (lambda: a + b, lambda: a.sub_var(b), lambda: a * b, lambda: a.div(b)):
        with pytest.raises(ValueError) as info:
            op()
        assert "[3, 4]" in str(info.value) and "[2, 5]" in str(info.value)


def test_matmul_inner_dimension_mismatch_names_both_shapes():
    a = var(np.zeros((2, 3)), requires_grad=True)
    b = var(np.zeros((4, 5)), requires_grad=True)
    with pytest.raises(ValueError) as info:
        a.matmul(b)
    msg = str(info.value)
    assert "(2, 3)" in msg and "(4, 5)" in msg


def test_loss_shape_mismatch_names_both_shapes():
    p = var(np.zeros((3,)), requires_grad=True)
    t = var(np.zeros((4,)))
    for op in (p.mse_loss, p.l1_loss, p.smooth_l1_loss, p.binary_cross_entropy):
        with pytest.raises(ValueError) as info:
            op(t)
        assert "[3]" in str(info.value) and "[4]" in str(info.value)


def test_cross_entropy_bad_targets():
    logits = var(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(IndexError, match="out of range"):
        logits.cross_entropy([0, 3])
    with pytest.raises(ValueError, match="2 class indices"):
        logits.cross_entropy([0, 1, 2])
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        var(np.zeros(3), requires_grad=True).cross_entropy([0])


def test_non_scalar_backward_asks_for_a_gradient():
    x = var([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError) as info:
        y.backward()
    msg = str(info.value)
    assert "[2]" in msg and "grad_output" in msg and "one-element" in msg
    assert x.grad is None


def test_backward_with_a_gradient_of_the_wrong_shape_names_both_shapes():
    x = var([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2.0
    with pytest.raises(ValueError) as info:
        y.backward(Tensor.from_vec([1.0, 1.0], [2]))
    assert "[2]" in str(info.value) and "[3]" in str(info.value)


def test_backward_on_a_variable_that_does_not_require_grad():
    x = var([1.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        x.backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        no_grad(lambda: var([1.0], requires_grad=True) * 2.0).backward()


def test_set_grad_of_the_wrong_shape():
    x = var([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError) as info:
        x.set_grad(Tensor.zeros([3]))
    assert "[3]" in str(info.value) and "[2]" in str(info.value)
    with pytest.raises(TypeError):
        x.accumulate_grad([1.0, 2.0])


def test_variable_constructor_type_errors():
    with pytest.raises(TypeError, match="Tensor"):
        Variable([1.0, 2.0], True)
    with pytest.raises(TypeError, match="floating-point"):
        Variable(Tensor.from_numpy(np.array([1, 2], np.int32), dtype="int32"), True)
    with pytest.raises(TypeError):
        var([1.0]).pow("2")


def test_float64_on_a_device_without_fp64_names_the_device(device, monkeypatch):
    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, fp64=False))
    assert not device.fp64
    with pytest.raises(DeviceError) as info:
        Tensor.from_numpy(np.zeros(3), dtype="float64", device=device)
    assert device.name in str(info.value) and "float64" in str(info.value)
    with pytest.raises(DeviceError, match="fp64"):
        Tensor.zeros([2], dtype="float64", device=device)
    # float32 still works
    assert Tensor.from_numpy(np.zeros(3), dtype="float32", device=device).to_vec() == [0.0] * 3


@pytest.fixture(scope="module")
def second_device():
    from axonml_autograd import default_device
    d = default_device()
    return Device(d.info.platform_index, d.info.device_index)


def test_mixing_devices_raises_for_binary_ops_matmul_and_cat(device, second_device):
    assert second_device is not device
    a = Variable(Tensor.from_vec([1.0, 2.0], [2], device=device), True)
    b = Variable(Tensor.from_vec([3.0, 4.0], [2], device=second_device), True)
    assert (b * 2.0).to_vec() == [6.0, 8.0]      # each device works on its own
    for op in (lambda: a + b, lambda: a.mul_var(b), lambda: b - a):
        with pytest.raises(ValueError, match="different devices"):
            op()
    with pytest.raises(ValueError, match="different devices"):
        a.reshape([1, 2]).matmul(b.reshape([2, 1]))
    with pytest.raises(ValueError, match="different devices"):
        Variable.cat([a, b], 0)


def test_mixing_devices_in_backward_grad_output(device, second_device):
    a = Variable(Tensor.from_vec([1.0, 2.0], [2], device=device), True)
    y = a * 2.0
    with pytest.raises(ValueError, match="another device"):
        y.backward(Tensor.from_vec([1.0, 1.0], [2], device=second_device))


def test_mixing_devices_in_set_grad_and_accumulate_grad(device, second_device):
    # A leaf's gradient must live on the leaf's device; otherwise the next accumulation or optimiser
    # step fails far from the cause.
    a = Variable(Tensor.from_vec([1.0, 2.0], [2], device=device), True)
    g = Tensor.from_vec([1.0, 1.0], [2], device=second_device)
    with pytest.raises(ValueError, match="device"):
        a.accumulate_grad(g)
    with pytest.raises(ValueError, match="device"):
        a.set_grad(g)
