"""matmul against numpy, for both kernel strategies (PoCL runs either), float32 and float64."""

import itertools

import numpy as np
import pytest

from axonml_autograd import Tensor, default_device
from axonml_autograd.matmul import matmul, plan_info

STRATEGIES = ["blocked", "tiled"]
DTYPES = [np.float32, np.float64]


def _skip_if_no_dtype(dtype):
    if np.dtype(dtype) == np.float64 and not default_device().fp64:
        pytest.skip(f"device {default_device().name} has no cl_khr_fp64")


def _close(got, want, dtype, k):
    # float32 sums of k products of O(1) numbers drift with k; scale the tolerance by the magnitude.
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    tol = (1e-5 * max(1, k) ** 0.5 + 1e-5) * scale if np.dtype(dtype) == np.float32 else 1e-12 * max(1, k) * scale
    assert got.shape == want.shape
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


SHAPES = [(1, 1, 1), (3, 17, 65), (129, 65, 17), (65, 1, 129), (17, 129, 3), (1, 65, 17), (33, 48, 40)]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)),
                         ids=["nn", "nt", "tn", "tt"])
def test_2d_shapes_and_transposes(strategy, dtype, trans_a, trans_b):
    _skip_if_no_dtype(dtype)
    rng = np.random.default_rng(1)
    for m, n, k in SHAPES:
        a = _rand(rng, (k, m) if trans_a else (m, k), dtype)
        b = _rand(rng, (n, k) if trans_b else (k, n), dtype)
        want = (a.T if trans_a else a) @ (b.T if trans_b else b)
        got = matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), trans_a, trans_b, strategy=strategy).numpy()
        _close(got, want, dtype, k)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_larger_square_float32(strategy):
    rng = np.random.default_rng(2)
    a, b = _rand(rng, (129, 129), np.float32), _rand(rng, (129, 129), np.float32)
    _close(matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), strategy=strategy).numpy(), a @ b, np.float32, 129)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("a_shape,b_shape", [
    ((4, 3, 5), (4, 5, 2)),            # plain batch
    ((2, 1, 3, 4), (5, 4, 6)),         # broadcast batch dims on both sides
    ((3, 7, 5), (5, 9)),               # matrix shared by every batch
    ((7, 5), (3, 5, 9)),
    ((2, 1, 3, 4, 5), (1, 3, 1, 5, 2)),  # three broadcast axes: more than the kernel's (hi, lo) split
    ((1, 17, 65), (1, 65, 3)),
])
def test_batched_and_broadcast(strategy, a_shape, b_shape):
    rng = np.random.default_rng(3)
    a, b = _rand(rng, a_shape, np.float32), _rand(rng, b_shape, np.float32)
    got = matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), strategy=strategy).numpy()
    _close(got, np.matmul(a, b), np.float32, a_shape[-1])


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("trans_a,trans_b", [(True, False), (False, True), (True, True)])
def test_batched_transposes(strategy, trans_a, trans_b):
    dtype = np.float64 if default_device().fp64 else np.float32
    rng = np.random.default_rng(4)
    a_op, b_op = _rand(rng, (3, 1, 6, 17), dtype), _rand(rng, (4, 17, 9), dtype)   # [3,4,6,9] result
    a = np.ascontiguousarray(np.swapaxes(a_op, -1, -2)) if trans_a else a_op
    b = np.ascontiguousarray(np.swapaxes(b_op, -1, -2)) if trans_b else b_op
    got = matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), trans_a, trans_b, strategy=strategy).numpy()
    _close(got, np.matmul(a_op, b_op), dtype, 17)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("a_shape,b_shape", [
    ((5,), (5, 3)), ((4, 5), (5,)), ((5,), (5,)), ((5,), (2, 5, 3)), ((2, 4, 5), (5,)), ((1,), (1,)),
])
def test_vector_operands(strategy, a_shape, b_shape):
    rng = np.random.default_rng(5)
    a, b = _rand(rng, a_shape, np.float32), _rand(rng, b_shape, np.float32)
    got = matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), strategy=strategy).numpy()
    _close(got, np.matmul(a, b), np.float32, a_shape[-1])


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("a_shape,b_shape", [
    ((0, 4), (4, 3)), ((3, 4), (4, 0)), ((3, 0), (0, 5)), ((0, 3, 4), (4, 2)), ((0,), (0,)), ((2, 0), (0,)),
])
def test_zero_sizes(strategy, a_shape, b_shape):
    a, b = np.ones(a_shape, np.float32), np.ones(b_shape, np.float32)
    got = matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), strategy=strategy).numpy()
    want = np.matmul(a, b)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)   # K = 0 gives zeros, not whatever the buffer held


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_out_argument_and_operator(strategy, monkeypatch):
    monkeypatch.setenv("AXONML_MATMUL", strategy)
    rng = np.random.default_rng(6)
    a, b = _rand(rng, (6, 7), np.float32), _rand(rng, (7, 5), np.float32)
    out = Tensor((6, 5), "float32")
    version = out.version
    res = matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), out=out)
    assert res is out and out.version > version
    _close(out.numpy(), a @ b, np.float32, 7)
    _close((Tensor.from_numpy(a) @ Tensor.from_numpy(b)).numpy(), a @ b, np.float32, 7)
    assert plan_info(default_device())["strategy"] == strategy


def test_env_var_and_keyword_pick_the_strategy(monkeypatch):
    dev = default_device()
    monkeypatch.setenv("AXONML_MATMUL", "tiled")
    assert plan_info(dev)["strategy"] == "tiled"
    assert plan_info(dev, strategy="blocked")["strategy"] == "blocked"
    monkeypatch.delenv("AXONML_MATMUL")
    assert plan_info(dev)["strategy"] == ("tiled" if dev.target.is_gpu else "blocked")
    with pytest.raises(ValueError, match="strategy"):
        matmul(Tensor.ones((2, 2)), Tensor.ones((2, 2)), strategy="magic")


def test_tile_parameters_fit_the_device():
    dev = default_device()
    info = plan_info(dev, strategy="tiled")
    side = info["ts"] // info["wpt"]
    assert info["local"] == (side, side, 1)
    assert side * side <= dev.target.work_group <= dev.max_work_group_size
    assert 2 * info["tsk"] * (info["ts"] + 1) * 4 <= dev.target.local_mem <= dev.local_mem


def test_inner_dimension_error_names_both_shapes():
    with pytest.raises(ValueError) as e:
        matmul(Tensor.ones((2, 3)), Tensor.ones((4, 5)))
    assert "(2, 3)" in str(e.value) and "(4, 5)" in str(e.value) and "inner dimensions differ" in str(e.value)
    # With transposes the message still shows the shapes as given, and says which flags were set.
    with pytest.raises(ValueError, match=r"\(2, 3\) @ \(5, 4\) \(trans_a=True, trans_b=True\)"):
        matmul(Tensor.ones((2, 3)), Tensor.ones((5, 4)), trans_a=True, trans_b=True)


def test_batch_mismatch_and_scalar_errors():
    with pytest.raises(ValueError) as e:
        matmul(Tensor.ones((2, 3, 4)), Tensor.ones((3, 4, 5)))
    assert "(2, 3, 4)" in str(e.value) and "(3, 4, 5)" in str(e.value)
    with pytest.raises(ValueError, match=r"\(\).*\(3,\)"):
        matmul(Tensor.scalar(1.0), Tensor.ones((3,)))


def test_dtype_and_out_errors():
    if default_device().fp64:
        with pytest.raises(TypeError, match="float32.*float64"):
            matmul(Tensor.ones((2, 2)), Tensor.ones((2, 2), dtype="float64"))
    with pytest.raises(TypeError, match="int32"):
        matmul(Tensor.ones((2, 2), dtype="int32"), Tensor.ones((2, 2), dtype="int32"))
    with pytest.raises(ValueError, match="out"):
        matmul(Tensor.ones((2, 3)), Tensor.ones((3, 4)), out=Tensor.ones((2, 3)))


def test_new_shapes_do_not_rebuild():
    from axonml_autograd import kernels
    rng = np.random.default_rng(7)
    for strategy in STRATEGIES:
        matmul(Tensor.ones((2, 3, 4)), Tensor.ones((4, 5)), strategy=strategy).numpy()
        before = kernels.build_count()
        for batch, m, n, k in [(1, 5, 7, 9), (6, 3, 2, 31), (11, 40, 1, 2)]:
            a, b = _rand(rng, (batch, m, k), np.float32), _rand(rng, (k, n), np.float32)
            _close(matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), strategy=strategy).numpy(),
                   a @ b, np.float32, k)
        assert kernels.build_count() == before


# -- blocked strategy: every configuration the chooser can pick must be correct ----------------------

from axonml_autograd import matmul as matmul_module  # noqa: E402
from axonml_autograd.matmul import BlockedConfig  # noqa: E402

BLOCKED_CONFIGS = [
    BlockedConfig(16, 4, 128),     # large macro blocks
    BlockedConfig(1, 1, 7),        # one micro-tile per work-item, K not a multiple of KC
    BlockedConfig(3, 2, 16),       # macro blocks not dividing the panel counts
    BlockedConfig(2, 3, 1),        # one k per slice: C reloaded every k
    BlockedConfig(64, 1, 100000),  # KC past the kernel's panel: clipped to it
]


@pytest.fixture
def forced_config(monkeypatch):
    def force(cfg):
        monkeypatch.setattr(matmul_module, "_forced_config", cfg)
    return force


@pytest.mark.parametrize("cfg", BLOCKED_CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)),
                         ids=["nn", "nt", "tn", "tt"])
def test_blocked_forced_configs(forced_config, cfg, trans_a, trans_b):
    forced_config(cfg)
    rng = np.random.default_rng(8)
    # Edges in every direction; N a multiple of NR, one vector wide or less (the narrow micro-tile:
    # N = 10 as in an MLP's last layer) or in between; K around the slice.
    for m, n, k in [(13, 32, 37), (6, 16, 16), (29, 48, 300), (7, 33, 5), (1, 64, 1), (50, 17, 64),
                    (19, 10, 130), (9, 8, 3), (17, 1, 129), (10, 20, 12)]:
        a = _rand(rng, (k, m) if trans_a else (m, k), np.float32)
        b = _rand(rng, (n, k) if trans_b else (k, n), np.float32)
        want = (a.T if trans_a else a) @ (b.T if trans_b else b)
        got = matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), trans_a, trans_b, strategy="blocked").numpy()
        _close(got, want, np.float32, k)


@pytest.mark.parametrize("cfg", BLOCKED_CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_blocked_forced_configs_batched(forced_config, cfg):
    forced_config(cfg)
    rng = np.random.default_rng(9)
    for a_shape, b_shape in [((3, 13, 40), (3, 40, 32)), ((2, 1, 7, 9), (4, 9, 16)), ((5, 19, 33), (33, 48)),
                             ((2, 1, 3, 4, 5), (1, 3, 1, 5, 16))]:
        a, b = _rand(rng, a_shape, np.float32), _rand(rng, b_shape, np.float32)
        got = matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), strategy="blocked").numpy()
        _close(got, np.matmul(a, b), np.float32, a_shape[-1])


def test_blocked_float64_forced_configs(forced_config):
    _skip_if_no_dtype(np.float64)
    rng = np.random.default_rng(10)
    for cfg in BLOCKED_CONFIGS:
        forced_config(cfg)
        a, b = _rand(rng, (23, 300), np.float64), _rand(rng, (300, 24), np.float64)
        _close(matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), strategy="blocked").numpy(), a @ b,
               np.float64, 300)


def test_blocked_default_configs_are_sane():
    dev = default_device()
    plan = matmul_module._plan(dev, np.dtype(np.float32), "blocked", False, False)
    p = plan.params
    assert p["kc_max"] * p["nr"] * 4 <= dev.local_mem      # the kernel's B panel fits local memory
    for m, n, k in [(256, 256, 256), (2048, 2048, 2048), (1, 1, 1), (300, 17, 1000), (5, 64, 3000),
                    (128, 256, 784), (784, 256, 128), (128, 10, 256)]:
        cfg = matmul_module._blocked_config(plan, m, n, k, 1)
        assert cfg.mcp >= 1 and cfg.ncp >= 1 and 1 <= cfg.kc <= min(max(k, 1), p["kc_max"])
        pm, pn = -(-m // p["mr"]), -(-n // p["nr"])
        assert cfg.mcp <= pm and cfg.ncp <= pn
        items = -(-pm // cfg.mcp) * -(-pn // cfg.ncp)
        # As many work-items as asked for, unless C has fewer micro-tiles than that.
        assert items >= min(pm * pn, plan.items_per_cu * plan.compute_units)
    # A forced configuration is used as given, but KC never exceeds the kernel's panel.
    matmul_module._forced_config = BlockedConfig(4, 4, 100000)
    try:
        assert matmul_module._blocked_config(plan, 10, 17, 1000, 1) == (4, 4, p["kc_max"])
    finally:
        matmul_module._forced_config = None


MLP_SHAPES = [((128, 784), (784, 256), False, False), ((128, 256), (256, 10), False, False),
              ((128, 10), (256, 10), False, True), ((128, 256), (128, 10), True, False),
              ((128, 784), (128, 256), True, False)]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("a_shape,b_shape,trans_a,trans_b", MLP_SHAPES,
                         ids=["x@W0", "h@W1", "g@W1T", "hT@g", "xT@g"])
def test_mlp_shapes_against_float64(strategy, a_shape, b_shape, trans_a, trans_b):
    # The matmuls of a 784-256-10 MLP step (forward and both weight gradients), checked in float64.
    rng = np.random.default_rng(12)
    a, b = _rand(rng, a_shape, np.float32), _rand(rng, b_shape, np.float32)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    got = matmul(Tensor.from_numpy(a), Tensor.from_numpy(b), trans_a, trans_b, strategy=strategy).numpy()
    k = a_shape[0] if trans_a else a_shape[1]
    _close(got, want, np.float32, k)


def test_repeated_signature_fast_path(monkeypatch):
    # The second call of a signature takes the cached launcher; results and strategy switches must hold.
    rng = np.random.default_rng(11)
    a, b = _rand(rng, (2, 9, 20), np.float32), _rand(rng, (20, 32), np.float32)
    ta, tb = Tensor.from_numpy(a), Tensor.from_numpy(b)
    for strategy in ("blocked", "tiled"):
        monkeypatch.setenv("AXONML_MATMUL", strategy)
        for _ in range(3):
            _close(matmul(ta, tb).numpy(), np.matmul(a, b), np.float32, 20)
    b2 = _rand(rng, (20, 32), np.float32)
    _close(matmul(ta, Tensor.from_numpy(b2)).numpy(), np.matmul(a, b2), np.float32, 20)
