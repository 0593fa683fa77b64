"""scripts/bench.py runs end to end and writes the JSON it promises (two cheap rows only)."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "bench.py"


def _positive_finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_bench_quick_add_chain_writes_json(tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--rows", "add,chain", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"bench.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "ratio" in proc.stdout and "add" in proc.stdout and "chain" in proc.stdout

    doc = json.loads(out.read_text())
    assert doc["failed"] == {}
    assert doc["meta"]["quick"] is True
    assert "ratio_convention" in doc["meta"]
    rows = doc["rows"]
    assert set(rows) == {"add", "chain"}
    for name, unit, kind in (("add", "GB/s", "throughput"), ("chain", "us/op", "time")):
        row = rows[name]
        assert row["unit"] == unit and row["kind"] == kind
        assert _positive_finite(row["ours"]), row
        assert row["baseline"] in row["baselines"], row
        assert row["baselines"] and all(_positive_finite(v) for v in row["baselines"].values()), row
        assert _positive_finite(row["ratio"]), row
        assert set(row["ratios"]) == set(row["baselines"])
        assert all(_positive_finite(v) for v in row["ratios"].values()), row
        # the ratio follows the stated convention: > 1 means ours is faster
        base = row["baselines"][row["baseline"]]
        expected = row["ours"] / base if kind == "throughput" else base / row["ours"]
        assert math.isclose(row["ratio"], expected, rel_tol=1e-9)
        assert row["target"]
        if name == "add" or "torch" in row["baselines"]:   # chain's target is against torch only
            assert row["target_met"] in (True, False), row
    assert rows["add"]["baseline"] == "numpy"


def _load_bench():
    import importlib.util
    spec = importlib.util.spec_from_file_location("axonml_bench_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cold_first_step_child_gets_fresh_empty_caches_even_when_the_user_set_them(tmp_path, monkeypatch):
    """The cold row must not read the user's warm caches: AXONML_KERNEL_CACHE, POCL_CACHE_DIR and
    XDG_CACHE_HOME (pyopencl's, and the library's default) all point into the row's fresh directory."""
    bench = _load_bench()
    warm = tmp_path / "user_warm"
    for sub in ("axonml", "pocl", "xdg"):
        (warm / sub).mkdir(parents=True)
        (warm / sub / "built.bin").write_bytes(b"warm")
    user = {"AXONML_KERNEL_CACHE": str(warm / "axonml"), "POCL_CACHE_DIR": str(warm / "pocl"),
            "XDG_CACHE_HOME": str(warm / "xdg"), "POCL_KERNEL_CACHE": "0", "KEEP_ME": "1"}
    cold = tmp_path / "cold0"
    env = bench.first_step_env(str(cold), base=user)
    assert env["KEEP_ME"] == "1" and "POCL_KERNEL_CACHE" not in env
    for key in ("AXONML_KERNEL_CACHE", "POCL_CACHE_DIR", "XDG_CACHE_HOME"):
        path = Path(env[key])
        assert cold in path.parents, (key, path)
        assert path.is_dir() and not any(path.iterdir()), (key, path)
    # What the child's library will use as its binary cache, given that environment:
    from axonml_autograd import kernels
    for key in ("AXONML_KERNEL_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.setenv(key, env[key])
    assert kernels.binary_cache_dir() == Path(env["AXONML_KERNEL_CACHE"])
    monkeypatch.setenv("AXONML_KERNEL_CACHE", "0")     # a user who turned the cache off: the row still
    env_off = bench.first_step_env(str(tmp_path / "cold1"))   # measures it, fresh
    assert Path(env_off["AXONML_KERNEL_CACHE"]).parent == tmp_path / "cold1"


def test_first_step_row_runs_its_children_in_that_environment(tmp_path, monkeypatch):
    bench = _load_bench()
    monkeypatch.setenv("AXONML_KERNEL_CACHE", str(tmp_path / "user_warm"))
    seen = []

    def fake_run(cmd, env=None, **kwargs):
        seen.append(env)
        out = json.dumps({"import_s": 0.1, "device_s": 0.1, "step_s": 0.1, "to_first_step_s": 0.3, "builds": 1})
        return subprocess.CompletedProcess(cmd, 0, stdout=out + "\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    bench._child_first_step(None, str(tmp_path / "cache0"))
    assert seen and seen[0]["AXONML_KERNEL_CACHE"] == str(tmp_path / "cache0" / "axonml")
    assert seen[0]["POCL_CACHE_DIR"] == str(tmp_path / "cache0" / "pocl")
