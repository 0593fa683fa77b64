"""Gradient clipping and parameter vectors against torch.nn.utils in float64; clipping by norm makes no
host read and replays under capture."""

import math

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, kernels
from axonml_autograd.optim import SGD
from axonml_autograd.utils import clip_grad_norm_, clip_grad_value_, parameters_to_vector, vector_to_parameters

SHAPES = [(1,), (3,), (17, 5), (65,), (2, 3, 4)]


def with_grads(grads, dtype=np.float64, extra_without_grad=True):
    params = []
    for g in grads:
        p = Variable(Tensor.from_numpy(np.zeros(g.shape), dtype=dtype), requires_grad=True)
        p.set_grad(Tensor.from_numpy(g, dtype=dtype))
        params.append(p)
    if extra_without_grad:    # skipped, as torch skips parameters whose .grad is None
        params.insert(1, Variable(Tensor.from_numpy(np.zeros(4), dtype=dtype), requires_grad=True))
    return params


def torch_clip(torch, grads, max_norm, norm_type):
    ps = []
    for g in grads:
        p = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(g)
        ps.append(p)
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type, foreach=False)
    return float(total), [p.grad.numpy() for p in ps]


def some_grads(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.normal(size=s) for s in SHAPES]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, 0.5, math.inf], ids=str)
@pytest.mark.parametrize("max_norm", [0.3, 1e6], ids=["clips", "no-clip"])
def test_clip_grad_norm_matches_torch(fp64, norm_type, max_norm):
    torch = pytest.importorskip("torch")
    grads = some_grads()
    params = with_grads(grads)
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    want_total, want_grads = torch_clip(torch, grads, max_norm, norm_type)
    assert isinstance(total, Tensor) and total.shape() == [] and total.dtype == np.float64
    np.testing.assert_allclose(total.item(), want_total, rtol=1e-13)
    got = [p.grad().numpy() for p in params if p.grad is not None]
    for a, b in zip(got, want_grads):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-300)


def test_clip_grad_norm_closed_form_without_torch(fp64):
    grads = some_grads(seed=2)
    params = with_grads(grads)
    flat = np.concatenate([g.ravel() for g in grads])
    norm = np.sqrt((flat ** 2).sum())
    total = clip_grad_norm_(params, 1.0)
    np.testing.assert_allclose(total.item(), norm, rtol=1e-13)
    for p, g in zip([p for p in params if p.grad is not None], grads):
        np.testing.assert_allclose(p.grad().numpy(), g * (1.0 / (norm + 1e-6)), rtol=1e-13)


def test_nonfinite_gradients_follow_torch_and_error_if_nonfinite_raises(fp64):
    torch = pytest.importorskip("torch")
    for bad in (math.nan, math.inf):
        grads = some_grads()
        grads[2][0, 0] = bad
        params = with_grads(grads)
        total = clip_grad_norm_(params, 1.0)
        want_total, want_grads = torch_clip(torch, grads, 1.0, 2.0)
        np.testing.assert_equal(total.item(), want_total)
        for p, b in zip([p for p in params if p.grad is not None], want_grads):
            np.testing.assert_array_equal(p.grad().numpy(), b)
        with pytest.raises(RuntimeError, match="clip_grad_norm_: the total norm of order 2.0"):
            clip_grad_norm_(with_grads(grads), 1.0, error_if_nonfinite=True)


def test_clip_grad_norm_reads_nothing_and_never_rebuilds(device, host_traffic):
    grads = [g.astype(np.float32) for g in some_grads()]
    clip_grad_norm_(with_grads(grads, np.float32), 0.5)                      # builds the kernels
    params = with_grads(grads, np.float32)
    builds = kernels.build_count()
    with host_traffic() as traffic:
        totals = [clip_grad_norm_(params, m) for m in (0.5, 0.25, 2.0)]
    assert (traffic.reads, traffic.waits) == (0, 0)
    assert kernels.build_count() == builds
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    np.testing.assert_allclose(totals[0].item(), norm, rtol=1e-5)
    np.testing.assert_allclose(totals[1].item(), 0.5, rtol=1e-5)             # already clipped to 0.5
    np.testing.assert_allclose(totals[2].item(), 0.25, rtol=1e-5)


def test_clip_grad_norm_in_a_captured_step_equals_eager(device):
    rng = np.random.default_rng(1)
    xs = [Tensor.from_numpy(rng.normal(size=(6, 5)).astype(np.float32) * (1 + 3 * k)) for k in range(8)]

    def make():
        w = Variable(Tensor.from_numpy(np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3)), requires_grad=True)
        b = Variable(Tensor.zeros([3]), requires_grad=True)
        opt = SGD([w, b], lr=0.1)

        def step(x):
            opt.zero_grad()
            loss = (Variable(x).matmul(w) + b).pow(2.0).sum()
            loss.backward()
            norm = clip_grad_norm_([w, b], 1.0)
            opt.step()
            return loss, norm
        return w, b, step

    w, b, step = make()
    ew, eb, estep = make()
    step = capture(step)
    for x in xs:
        loss, norm = step(x)
        eloss, enorm = estep(x)
        assert (loss.item(), norm.item()) == (eloss.item(), enorm.item())
    assert step.replays >= len(xs) - 2
    np.testing.assert_array_equal(w.numpy(), ew.numpy())
    np.testing.assert_array_equal(b.numpy(), eb.numpy())


def test_clip_grad_value_matches_torch(fp64):
    torch = pytest.importorskip("torch")
    grads = some_grads(scale=2.0)
    grads[0][0] = math.nan
    params = with_grads(grads)
    clip_grad_value_(params, 0.7)
    tps = []
    for g in grads:
        p = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(g)
        tps.append(p)
    torch.nn.utils.clip_grad_value_(tps, 0.7)
    for p, t in zip([p for p in params if p.grad is not None], tps):
        np.testing.assert_array_equal(p.grad().numpy(), t.grad.numpy())


def test_clip_grad_value_closed_form(fp64):
    grads = some_grads(scale=3.0)
    params = with_grads(grads)
    clip_grad_value_(params, 1.5)
    for p, g in zip([p for p in params if p.grad is not None], grads):
        np.testing.assert_array_equal(p.grad().numpy(), np.clip(g, -1.5, 1.5))


def test_parameters_vector_round_trip_matches_torch(fp64):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    values = [rng.normal(size=s) for s in SHAPES]
    params = [Variable(Tensor.from_numpy(v), requires_grad=True) for v in values]
    vec = parameters_to_vector(params)
    want = torch.nn.utils.parameters_to_vector([torch.tensor(v) for v in values])
    np.testing.assert_array_equal(vec.numpy(), want.numpy())
    new = rng.normal(size=vec.numel())
    version = params[2].data().version
    vector_to_parameters(Tensor.from_numpy(new), params)
    tps = [torch.zeros(s, dtype=torch.float64) for s in SHAPES]
    torch.nn.utils.vector_to_parameters(torch.tensor(new), tps)
    for p, t in zip(params, tps):
        np.testing.assert_array_equal(p.numpy(), t.numpy())
    assert params[2].data().version > version        # an in-place change that backward can see


def test_bad_arguments_name_the_function():
    a = Variable(Tensor.zeros([3]), requires_grad=True)
    a.set_grad(Tensor.ones([3]))
    with pytest.raises(TypeError, match="clip_grad_norm_: parameter 0 is a Tensor"):
        clip_grad_norm_([Tensor.zeros([2])], 1.0)
    with pytest.raises(TypeError, match="clip_grad_norm_ max_norm"):
        clip_grad_norm_([a], "1")
    with pytest.raises(ValueError, match="clip_grad_norm_: norm_type must be a positive number"):
        clip_grad_norm_([a], 1.0, norm_type=0)
    with pytest.raises(ValueError, match="clip_grad_value_: clip_value must be >= 0"):
        clip_grad_value_([a], -1.0)
    with pytest.raises(ValueError, match="vector_to_parameters: vec has 2 elements, the parameters have 3"):
        vector_to_parameters(Tensor.zeros([2]), [a])
    with pytest.raises(ValueError, match="vector_to_parameters: vec must be 1-D"):
        vector_to_parameters(Tensor.zeros([3, 1]), [a])
    with pytest.raises(ValueError, match="parameters_to_vector: got no parameters"):
        parameters_to_vector([])
    b = Variable(Tensor.zeros([2]), requires_grad=True)
    assert clip_grad_norm_([b], 1.0).item() == 0.0       # no gradients at all: norm 0, as torch
