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
