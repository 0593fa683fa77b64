"""The matmul tuner measures only when asked, keeps its choice on disk, and never changes results."""

import json

import numpy as np
import pytest

from axonml_autograd import Tensor, tuning
from axonml_autograd import matmul as mm
from axonml_autograd.device import Device


@pytest.fixture
def fresh(device, tmp_path, monkeypatch):
    """A new Device object (its own plans) and an empty tuning store in a temporary directory."""
    monkeypatch.setenv("AXONML_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv("AXONML_MATMUL", raising=False)
    monkeypatch.delenv("AXONML_TUNE", raising=False)
    monkeypatch.setattr(tuning, "_memory", {})
    return Device(device.info.platform_index, device.info.device_index)


def _check(dev, plan, m=65, n=17, k=129):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    c = Tensor((m, n), "float32", dev)
    launch = (mm._tiled_launcher(dev, plan, m, n, k, [], [0, 0], [0, 0], [0, 0], 1, 1) if plan.strategy == "tiled"
              else mm._blocked_launcher(dev, plan, m, n, k, False, False, [], [0, 0], [0, 0], [0, 0], 1, 1))
    launch(Tensor.from_numpy(a, device=dev), Tensor.from_numpy(b, device=dev), c)
    np.testing.assert_allclose(c.numpy(), a @ b, rtol=1e-4, atol=1e-4)


def test_a_cold_first_call_does_not_measure(fresh, tmp_path, monkeypatch):
    # No stored choice and no AXONML_TUNE=1: the static choice, no timing runs, nothing written.
    monkeypatch.setattr(tuning, "measure", lambda *a: pytest.fail("measured on a cold first call"))
    plan = mm._make_plan(fresh, np.dtype(np.float32), "blocked", False, False, auto=True)
    assert plan.items_per_cu == mm.BLOCKED_ITEMS_CANDIDATES[0]
    tiled = mm._make_plan(fresh, np.dtype(np.float32), "tiled", False, False, auto=True)
    assert tuple(tiled.params[k] for k in ("ts", "tsk", "wpt")) in mm.TILED_CANDIDATES
    assert not (tmp_path / "tuning.json").exists()


def test_blocked_choice_is_measured_once_and_stored(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("AXONML_TUNE", "1")
    plan = mm._make_plan(fresh, np.dtype(np.float32), "blocked", False, False, auto=True)
    assert plan.items_per_cu in mm.BLOCKED_ITEMS_CANDIDATES
    stored = json.loads((tmp_path / "tuning.json").read_text())
    (entries,) = stored.values()
    assert list(entries.values()) == [plan.items_per_cu]
    _check(fresh, plan)


def test_a_stored_choice_is_read_back_without_measuring(fresh, monkeypatch):
    tuning.store(fresh, mm._tuning_name("blocked", "float"), 4)
    monkeypatch.setattr(tuning, "_memory", {})     # as a new process would start

    def no_measuring(*args):
        raise AssertionError("measured although a choice was stored")

    monkeypatch.setattr(tuning, "measure", no_measuring)
    assert mm._make_plan(fresh, np.dtype(np.float32), "blocked", False, False, auto=True).items_per_cu == 4


def test_tuning_off_takes_the_static_choice(fresh, monkeypatch):
    monkeypatch.setenv("AXONML_TUNE", "0")
    monkeypatch.setattr(tuning, "measure", lambda *a: pytest.fail("measured with AXONML_TUNE=0"))
    plan = mm._make_plan(fresh, np.dtype(np.float32), "blocked", False, False, auto=True)
    assert plan.items_per_cu == mm.BLOCKED_ITEMS_CANDIDATES[0]


def test_tune_measures_stores_and_is_used(fresh, tmp_path):
    info = mm.tune(fresh)
    (entries,) = json.loads((tmp_path / "tuning.json").read_text()).values()
    assert info["strategy"] == "blocked" and list(entries.values()) == [info["items_per_cu"]]
    # The next plan (as in a new process) reads the stored choice back.
    assert mm._make_plan(fresh, np.dtype(np.float32), "blocked", False, False, auto=True).items_per_cu == \
        info["items_per_cu"]


def test_a_corrupt_store_is_ignored_and_rewritten(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("AXONML_TUNE", "1")
    (tmp_path / "tuning.json").write_text("{not json")
    plan = mm._make_plan(fresh, np.dtype(np.float32), "blocked", False, False, auto=True)
    assert plan.items_per_cu in mm.BLOCKED_ITEMS_CANDIDATES
    assert json.loads((tmp_path / "tuning.json").read_text())


def test_tiled_tuner_picks_a_fitting_tile_and_stores_it(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("AXONML_TUNE", "1")
    monkeypatch.setattr(mm, "TILED_CANDIDATES", ((16, 16, 2), (8, 8, 1)))
    plan = mm._make_plan(fresh, np.dtype(np.float32), "tiled", False, False, auto=True)
    chosen = [plan.params["ts"], plan.params["tsk"], plan.params["wpt"]]
    assert chosen in ([16, 16, 2], [8, 8, 1])
    (entries,) = json.loads((tmp_path / "tuning.json").read_text()).values()
    assert list(entries.values()) == [chosen]
    _check(fresh, plan)


@pytest.mark.parametrize("tile", mm.TILED_CANDIDATES, ids=lambda t: "x".join(map(str, t)))
def test_every_tile_the_tuner_can_pick_matches_numpy(fresh, monkeypatch, tile):
    monkeypatch.setenv("AXONML_TUNE", "1")
    monkeypatch.setattr(mm, "TILED_CANDIDATES", (tile,))
    try:
        plan = mm._make_plan(fresh, np.dtype(np.float32), "tiled", False, False, auto=True)
    except RuntimeError as e:
        pytest.skip(f"tile {tile} does not fit this device: {e}")
    _check(fresh, plan)


@pytest.mark.parametrize("items", mm.BLOCKED_ITEMS_CANDIDATES)
def test_every_blocked_choice_matches_numpy(fresh, items):
    plan = mm._make_plan(fresh, np.dtype(np.float32), "blocked", False, False)
    plan.items_per_cu = items
    _check(fresh, plan, m=129, n=65, k=257)
