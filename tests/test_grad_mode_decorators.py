"""no_grad / enable_grad / inference_mode as bare decorators, called decorators, the crate's closure
form and ``.run``: the rule in no_grad.py's docstring, and the mode staying per thread and per step."""

import functools
import threading

import pytest

from axonml_autograd import Tensor, Variable, enable_grad, inference_mode, is_grad_enabled, is_inference_mode, no_grad

MODES = [no_grad, enable_grad, inference_mode]


def _x():
    return Variable(Tensor.from_vec([1.0, -2.0], [2]), requires_grad=True)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.__name__)
def test_a_bare_decorator_does_not_call_the_function_when_it_decorates(mode):
    calls = []

    @mode
    def f(a, b=1, *, c=2):
        """f's doc."""
        calls.append((a, b, c))
        return a + b + c

    assert calls == []
    assert f.__name__ == "f" and f.__doc__ == "f's doc." and callable(f)
    assert f(1, c=5) == 7 and calls == [(1, 1, 5)]


def test_a_bare_no_grad_decorator_turns_grad_off_inside_and_restores_it_after():
    x = _x()
    seen = []

    @no_grad
    def predict(v):
        seen.append(is_grad_enabled())
        return v.relu()

    assert is_grad_enabled()
    y = predict(x)
    assert seen == [False] and not y.requires_grad() and y.grad_fn is None
    assert is_grad_enabled() and (x * 2.0).requires_grad()

    @no_grad
    def fails():
        raise KeyError("inside")

    with pytest.raises(KeyError):
        fails()
    assert is_grad_enabled()


def test_bare_enable_grad_and_inference_mode_set_their_modes_and_restore_the_callers():
    @enable_grad
    def tracked(v):
        return (v * 2.0).requires_grad(), is_grad_enabled()

    @inference_mode
    def inferring():
        return is_grad_enabled(), is_inference_mode()

    x = _x()
    with no_grad():
        assert tracked(x) == (True, True)
        assert not is_grad_enabled()
    assert inferring() == (False, True)
    assert is_grad_enabled() and not is_inference_mode()


def test_called_decorator_and_a_named_function_both_wrap_as_torch_does():
    calls = []

    def body():
        calls.append(is_grad_enabled())
        return 42

    wrapped = no_grad(body)               # torch.no_grad(f): a wrapper, nothing runs yet
    also = no_grad()(body)
    assert calls == [] and callable(wrapped) and wrapped is not body
    assert wrapped() == 42 and also() == 42 and calls == [False, False]
    assert no_grad(functools.partial(body))() == 42 and calls[-1] is False


def test_the_crates_closure_form_runs_a_lambda_without_arguments_now_and_run_takes_anything():
    x = _x()
    assert not no_grad(lambda: x.relu()).requires_grad()
    assert no_grad(lambda k=3: (k, is_grad_enabled())) == (3, False)   # callable with no arguments: run
    assert inference_mode(lambda: is_inference_mode()) is True
    double = no_grad(lambda v: (v * 2.0, is_grad_enabled()))         # needs an argument: a wrapper
    y, grad_on = double(x)
    assert not y.requires_grad() and grad_on is False and is_grad_enabled()

    class Model:
        def evaluate(self):
            return is_grad_enabled()

    assert no_grad.run(Model().evaluate) is False
    assert enable_grad.run(lambda: is_grad_enabled()) is True
    assert no_grad.run(functools.partial(max, 1, 2)) == 2


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.__name__)
def test_something_not_callable_raises_naming_the_mode(mode):
    with pytest.raises(TypeError, match=mode.__name__):
        mode(3)
    with pytest.raises(TypeError, match=mode.__name__ + ".run"):
        mode.run("not a function")


def test_a_bare_decorated_function_changes_only_its_own_threads_mode():
    inside, release = threading.Event(), threading.Event()
    seen = {}

    main = threading.get_ident()

    @no_grad
    def worker():
        assert threading.get_ident() != main
        seen["worker"] = is_grad_enabled()
        inside.set()
        release.wait(10)
        seen["worker after"] = is_grad_enabled()

    t = threading.Thread(target=worker)
    t.start()
    assert inside.wait(10)
    seen["main while worker runs"] = is_grad_enabled()   # the worker is inside no_grad right now
    release.set()
    t.join(10)
    assert not t.is_alive() and "worker after" in seen

    def other_thread():
        seen["other"] = is_grad_enabled()

    with no_grad():
        u = threading.Thread(target=other_thread)
        u.start()
        u.join(10)
    assert seen == {"worker": False, "worker after": False, "main while worker runs": True, "other": True}


def test_a_decorated_generator_runs_each_step_in_the_mode_and_the_consumer_outside_it():
    @no_grad
    def steps(n):
        got = []
        for _ in range(n):
            got.append((yield is_grad_enabled()))
        return got

    gen = steps(3)
    assert is_grad_enabled()                 # making the generator runs nothing
    assert next(gen) is False
    assert is_grad_enabled()                 # between steps, the consumer's mode
    assert gen.send("a") is False and is_grad_enabled()
    assert gen.send("b") is False
    with pytest.raises(StopIteration) as stop:
        gen.send("c")
    assert stop.value.value == ["a", "b", "c"] and is_grad_enabled()

    def drive():
        return (yield from steps(2))

    d = drive()
    assert [next(d), d.send(1)] == [False, False]
    with pytest.raises(StopIteration) as stop:
        d.send(2)
    assert stop.value.value == [1, 2] and is_grad_enabled()


def test_a_decorated_generator_sees_throw_and_close_in_the_mode():
    seen = []

    @inference_mode
    def gen():
        try:
            yield 1
        except ValueError:
            seen.append(("throw", is_grad_enabled(), is_inference_mode()))
            yield 2
        finally:
            seen.append(("finally", is_grad_enabled(), is_inference_mode()))

    g = gen()
    assert next(g) == 1
    assert g.throw(ValueError("x")) == 2
    g.close()
    assert seen == [("throw", False, True), ("finally", False, True)]
    assert is_grad_enabled() and not is_inference_mode()
