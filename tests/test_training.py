"""End-to-end training: the loss falls, accuracy clears chance, and the example scripts work."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, serialization, no_grad
from axonml_autograd.nn import MLP
from axonml_autograd.optim import SGD, Adam

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), SCRIPTS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blobs(n_per_class=100, classes=4, dim=8, seed=0):
    """Gaussian clusters around random centres: separable, but not from the first step."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, dim))
    x = np.concatenate([c + rng.normal(size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int32)
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order]


def accuracy(model, x: Tensor, y: np.ndarray) -> float:
    with no_grad():
        pred = model(Variable(x)).data().argmax(1).numpy()
    return float((pred == y).mean())


@pytest.mark.parametrize("make_opt", [lambda ps: Adam(ps, lr=1e-2), lambda ps: SGD(ps, lr=0.1, momentum=0.9)],
                         ids=["adam", "sgd-momentum"])
def test_short_training_run_learns(device, make_opt):
    x, y = blobs()
    xd, yd = Tensor.from_numpy(x), Tensor.from_numpy(y, dtype="int32")
    model = MLP([8, 32, 4], seed=0)
    opt = make_opt(model.parameters())
    before = accuracy(model, xd, y)
    losses = []
    batch = 50
    for epoch in range(5):
        total = Tensor.zeros([])
        for start in range(0, len(y), batch):
            opt.zero_grad()
            loss = model(Variable(xd.narrow(0, start, batch))).cross_entropy(yd.narrow(0, start, batch))
            loss.backward()
            opt.step()
            total = total + loss.data()
        losses.append(total.item() / (len(y) // batch))
    after = accuracy(model, xd, y)
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(b <= a * 1.05 for a, b in zip(losses, losses[1:])), losses
    assert after >= 0.9, (before, after)       # chance is 25 %


@pytest.fixture(scope="module")
def digits_script():
    pytest.importorskip("sklearn")
    return load_script("train_digits.py")


def test_train_digits_short_run_writes_artefacts(device, digits_script, tmp_path, capsys):
    out = tmp_path / "run"
    assert digits_script.main(["--epochs", "3", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "test accuracy:" in text and "steps per second:" in text and "time per epoch:" in text
    history = json.loads((out / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["test_accuracy"] > 0.8                # chance is 10 %
    names = set(serialization.load(out / "checkpoint.npz"))
    assert names == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"}
    if importlib.util.find_spec("matplotlib"):
        assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"


def test_train_digits_resume_continues_exactly(device, digits_script, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--epochs", "4", "--no-progress", "--quiet", "--hidden", "32"]
    assert digits_script.main(common + ["--out", str(full)]) == 0
    assert digits_script.main(common + ["--out", str(part), "--stop-after", "2"]) == 0
    assert json.loads((part / "history.json").read_text())["history"][-1]["epoch"] == 2
    assert digits_script.main(common + ["--out", str(part), "--resume", str(part / "checkpoint.npz")]) == 0
    a, b = serialization.read(full / "checkpoint.npz"), serialization.read(part / "checkpoint.npz")
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name], err_msg=name)
    assert [h["epoch"] for h in b.metadata["history"]] == [1, 2, 3, 4]
    assert b.optimizer["state"][0]["step"] == a.optimizer["state"][0]["step"]


def test_fit_regression_smoke(device, capsys):
    script = load_script("fit_regression.py")
    assert script.main(["--steps", "250", "--log-every", "1000"]) == 0
    assert "final MSE" in capsys.readouterr().out
    assert script.main(["--steps", "2", "--log-every", "1000"]) == 1       # not converged -> non-zero


def test_train_digits_captured_steps_equal_eager_steps(device, digits_script, tmp_path, capsys):
    common = ["--epochs", "3", "--no-progress", "--quiet", "--hidden", "32"]
    assert digits_script.main(common + ["--out", str(tmp_path / "captured")]) == 0
    assert "steps replayed" in capsys.readouterr().out
    assert digits_script.main(common + ["--out", str(tmp_path / "eager"), "--no-capture"]) == 0
    a = serialization.read(tmp_path / "captured" / "checkpoint.npz")
    b = serialization.read(tmp_path / "eager" / "checkpoint.npz")
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name], err_msg=name)
    assert [h["loss"] for h in a.metadata["history"]] == [h["loss"] for h in b.metadata["history"]]
