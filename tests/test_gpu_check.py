"""scripts/gpu_check.sh runs end to end in its dry mode (the CPU device standing in for a GPU)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_every_result_file(tmp_path):
    out = tmp_path / "gpu"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run", "--no-tests",
                           "--bench-rows", "add"], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    has_torch = importlib.util.find_spec("torch") is not None   # the torch rows need it (a dev-only baseline)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.json", "bench.txt"] + (["bench_gpu.json", "bench_gpu.txt"] if has_torch else []) + \
        ["devices.txt", "env.txt", "summary.txt"]
    assert len(files) <= 8                                   # what the device tool brings back
    summary = (out / "summary.txt").read_text()
    assert "device under test: AXONML_DEVICE=" in summary and "gpu_check: ok" in summary
    assert set(json.loads((out / "bench.json").read_text())["rows"]) == {"add"}
    if has_torch:
        rows = json.loads((out / "bench_gpu.json").read_text())["rows"]
        assert {"matmul_256", "add", "sum", "softmax_ce", "mlp", "mlp_captured", "mm_bf16_256", "amp_mlp",
                "amp_mlp_capt"} <= set(rows)
        assert all(r["ours"] > 0 for r in rows.values())
    else:
        assert "bench_gpu.py: skipped (no torch)" in summary


def test_gpu_check_without_a_gpu_and_without_dry_run_says_so(tmp_path):
    import pyopencl as cl
    if any(d.type & cl.device_type.GPU for p in cl.get_platforms() for d in p.get_devices()):
        import pytest
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "g"), "--no-tests"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHON=sys.executable),
                          cwd=ROOT)
    assert proc.returncode == 1
    assert "no OpenCL GPU device found" in (tmp_path / "g" / "summary.txt").read_text()
