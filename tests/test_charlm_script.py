"""scripts/train_charlm.py trains a transformer on the bundled text: the loss falls well below uniform
guessing, the artefacts are written, and the sample has the asked length."""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_char_transformer_learns_and_writes_its_artefacts(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train_charlm.py"), "--steps", "80",
                           "--dim", "32", "--layers", "1", "--context", "32", "--eval-every", "40",
                           "--sample-length", "25", "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "history.json").read_text())
    uniform = math.log(summary["vocabulary"])
    assert summary["uniform_loss"] == uniform
    # After 80 steps a character model has at least learnt the letter frequencies: well below uniform.
    assert summary["final_val_loss"] < uniform - 0.8, summary["history"]
    assert summary["history"][-1]["val_loss"] < summary["history"][0]["val_loss"] + 0.05
    assert len(summary["sample"]) == len("## ") + 25
    assert (out / "checkpoint.npz").stat().st_size > 0
