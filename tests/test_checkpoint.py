"""Checkpoints: round trips, mismatches named entry by entry, damaged files, and atomic saves."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, serialization
from axonml_autograd.serialization import CheckpointError, CheckpointMismatchError
from axonml_autograd.nn import MLP
from axonml_autograd.optim import Adam


def model(seed=0):
    return MLP([6, 5, 3], seed=seed)


def params(net):
    return dict(net.named_parameters())


def snapshot(named):
    return {k: v.numpy().copy() for k, v in named.items()}


def test_round_trip_into_same_buffers(device, tmp_path):
    src, dst = model(0), model(1)
    path = tmp_path / "m.npz"
    serialization.save(path, params(src), metadata={"epoch": 3})
    with np.load(path, allow_pickle=False) as archive:       # a plain numpy archive, nothing pickled
        assert "layers.0.weight" in archive.files
    loaded = serialization.load(path)
    assert sorted(loaded) == sorted(params(src))
    buffers = {k: v.data().buffer for k, v in params(dst).items()}
    ckpt = serialization.load_into(path, params(dst))
    assert ckpt.metadata["epoch"] == 3
    for name, var in params(dst).items():
        assert var.data().buffer is buffers[name]
        np.testing.assert_array_equal(var.numpy(), params(src)[name].numpy())


def test_names_that_numpy_savez_would_reject(device, tmp_path):
    path = tmp_path / "odd.npz"
    serialization.save(path, {"file": Tensor.from_vec([1.0], [1]), "a/b.c": np.arange(3.0),
                           "scalar": Tensor.scalar(2.5), "fortran": np.asfortranarray(np.eye(3)[:, :2])})
    loaded = serialization.load(path)
    assert loaded["scalar"].shape == () and loaded["scalar"] == 2.5
    np.testing.assert_array_equal(loaded["fortran"], np.eye(3)[:, :2])
    assert loaded["file"].tolist() == [1.0] and loaded["a/b.c"].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="reserved"):
        serialization.save(path, {"__optimizer__/x": np.zeros(1)})


def test_optimizer_state_round_trip(fp64, tmp_path):
    net = MLP([4, 3], seed=0, dtype=fp64)
    opt = Adam(net.parameters(), lr=0.05)
    x = Variable(Tensor.from_numpy(np.ones((2, 4))))
    for _ in range(2):
        opt.zero_grad()
        net(x).pow(2.0).mean().backward()
        opt.step()
    path = tmp_path / "with_opt.npz"
    serialization.save(path, params(net), optimizer=opt, metadata={"epoch": 2})

    net2 = MLP([4, 3], seed=5, dtype=fp64)
    opt2 = Adam(net2.parameters(), lr=1.0)
    serialization.load_into(path, params(net2), optimizer=opt2)
    assert opt2.lr == 0.05
    for step_net, step_opt in ((net, opt), (net2, opt2)):
        step_opt.zero_grad()
        step_net(x).pow(2.0).mean().backward()
        step_opt.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_mismatch_names_every_entry_and_writes_nothing(device, tmp_path):
    path = tmp_path / "m.npz"
    saved = params(model(0))
    saved["extra.scale"] = Tensor.from_vec([1.0], [1])
    del saved["layers.1.bias"]
    saved["layers.0.weight"] = Tensor.zeros([6, 5])       # transposed: wrong shape
    serialization.save(path, saved)

    target = params(model(1))
    before = snapshot(target)
    with pytest.raises(CheckpointMismatchError) as err:
        serialization.load_into(path, target)
    msg = str(err.value)
    assert "missing: layers.1.bias" in msg
    assert "unexpected: extra.scale" in msg
    assert "layers.0.weight (saved [6, 5] vs expected [5, 6])" in msg
    assert str(path) in msg and "Nothing was loaded" in msg
    assert err.value.missing == ["layers.1.bias"] and err.value.unexpected == ["extra.scale"]
    for name, value in snapshot(target).items():
        np.testing.assert_array_equal(value, before[name])

    # Non-strict tolerates missing/unexpected names, never a wrong shape.
    with pytest.raises(CheckpointMismatchError, match="layers.0.weight"):
        serialization.load_into(path, target, strict=False)
    subset = {k: v for k, v in target.items() if k != "layers.0.weight"}
    serialization.load_into(path, subset, strict=False)
    np.testing.assert_array_equal(target["layers.0.bias"].numpy(), saved["layers.0.bias"].numpy())


def test_bad_optimizer_state_writes_nothing(device, tmp_path):
    path = tmp_path / "m.npz"
    net = model(0)
    serialization.save(path, params(net), optimizer=Adam(net.parameters(), lr=0.1))
    same = model(2)
    before = snapshot(params(same))
    two_groups = Adam([{"params": same.parameters()[:2]}, {"params": same.parameters()[2:]}], lr=0.5)
    with pytest.raises(CheckpointError, match="optimiser state does not fit.*parameter group"):
        serialization.load_into(path, params(same), optimizer=two_groups)
    for name, value in snapshot(params(same)).items():
        np.testing.assert_array_equal(value, before[name])
    assert two_groups.lr == 0.5
    with pytest.raises(CheckpointError, match="no optimiser state"):
        serialization.save(path, params(net))
        serialization.load_into(path, params(same), optimizer=two_groups)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupted_file_is_a_clear_error(device, tmp_path, damage):
    path = tmp_path / "m.npz"
    serialization.save(path, {"w": np.arange(1000.0)})
    raw = path.read_bytes()
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw = bytearray(raw)
        raw[len(raw) // 2] ^= 0xFF       # inside the array data: the entry's CRC no longer matches
        raw = bytes(raw)
    elif damage == "garbage":
        raw = b"this is not a zip file" * 10
    else:
        raw = b""
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=str(path)):
        serialization.load(path)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        serialization.load(tmp_path / "nope.npz")


def test_failed_save_keeps_previous_file(device, tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    serialization.save(path, {"w": np.ones(4)})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        serialization.save(path, {"w": np.zeros(4)})
    monkeypatch.undo()
    assert serialization.load(path)["w"].tolist() == [1.0] * 4
    assert os.listdir(tmp_path) == ["m.npz"]              # no temporary left behind


CHILD = textwrap.dedent("""
    import sys, numpy as np
    from axonml_autograd import serialization
    big = np.ones(12_500_000)   # 100 MB: the write takes long enough to be caught in the middle
    sys.stdout.write("start\\n"); sys.stdout.flush()
    serialization.save(sys.argv[1], {"w": big})
    sys.stdout.write("done\\n"); sys.stdout.flush()
""")


def test_killed_save_leaves_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "m.npz"
    serialization.save(path, {"w": np.arange(5.0)})
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "start\n"
        # Kill it once the temporary file exists and is growing, i.e. in the middle of the write.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tmps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            if tmps and tmps[0].stat().st_size > 1_000_000:
                break
            time.sleep(0.005)
        else:
            pytest.fail("the child never started writing")
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert serialization.load(path)["w"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert zipfile.is_zipfile(path)


@pytest.mark.parametrize("name", ["m" * 245 + ".npz", "w" * 251 + ".npz", "é" * 125 + ".npz"],
                         ids=["249-chars", "255-chars", "254-bytes-of-utf8"])
def test_saving_to_a_name_of_the_longest_legal_length(device, tmp_path, name):
    # The temporary file beside the target must fit the same 255-byte limit as the target itself.
    path = tmp_path / name
    serialization.save(path, {"w": np.arange(3.0)})
    serialization.save(path, {"w": np.arange(4.0)})          # over an existing file, too
    assert serialization.load(path)["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert os.listdir(tmp_path) == [name]


def _adam_after_a_step(lr=0.1):
    w = Variable(Tensor.from_numpy(np.zeros((2, 3))), requires_grad=True)
    opt = Adam([w], lr=lr)
    w.set_grad(Tensor.from_numpy(np.ones((2, 3))))
    opt.step()
    return w, opt


def _same_state(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for key, value in a["state"][i].items():
            np.testing.assert_array_equal(value, b["state"][i][key])


def _group(sd, **change):
    return {**sd, "param_groups": [{**sd["param_groups"][0], **change}]}


def _entry(sd, **change):
    return {**sd, "state": {0: {**sd["state"][0], **change}}}


MALFORMED_STATE = {     # what is wrong -> (the change, what the message must say)
    "state is a list": (lambda sd: {**sd, "state": []}, "'state' must be a dict"),
    "a group is a number": (lambda sd: {**sd, "param_groups": [5]}, "'param_groups' must be a list of dicts"),
    "the groups are a number": (lambda sd: {**sd, "param_groups": 5}, "'param_groups' must be a list of dicts"),
    "a state entry is a number": (lambda sd: {**sd, "state": {0: 3}}, "'state' must be a dict"),
    "params is a string": (lambda sd: _group(sd, params="0"), "'params' must be a list of parameter indices"),
    "lr beyond float range": (lambda sd: _group(sd, lr=10 ** 400), "Adam lr: expected a finite number"),
    "beta beyond float range": (lambda sd: _group(sd, betas=[10 ** 400, 0.9]), "Adam betas: expected a finite"),
    "lr is a string": (lambda sd: _group(sd, lr="fast"), "Adam lr: expected a number"),
    "a flag is a string": (lambda sd: _group(sd, amsgrad="no"), "Adam amsgrad: expected True or False"),
    "step is NaN": (lambda sd: _entry(sd, step=float("nan")), "step must be an integer"),
    "step beyond float range": (lambda sd: _entry(sd, step=10 ** 400), "step must be an integer"),
    "step is an array": (lambda sd: _entry(sd, step=np.array([1, 2])), "step must be an integer"),
    "a moment is ragged": (lambda sd: _entry(sd, exp_avg=[[1.0], [1.0, 2.0]]), "exp_avg is not an array"),
    "a moment is complex": (lambda sd: _entry(sd, exp_avg=np.zeros((2, 3), complex)), "exp_avg holds complex"),
    "a moment holds strings": (lambda sd: _entry(sd, exp_avg=np.full((2, 3), "x")), "exp_avg holds <U1"),
    "state given twice": (lambda sd: {**sd, "state": {0: sd["state"][0], "0": sd["state"][0]}}, "given twice"),
}


@pytest.mark.parametrize("what", list(MALFORMED_STATE))
def test_load_state_dict_names_malformed_state_and_changes_nothing(fp64, what):
    change, message = MALFORMED_STATE[what]
    w, opt = _adam_after_a_step()
    before = opt.state_dict()
    with pytest.raises(ValueError, match=message) as err:   # never AttributeError or OverflowError
        opt.load_state_dict(change(opt.state_dict()))
    assert type(err.value) is ValueError and "Adam.load_state_dict" in str(err.value)
    _same_state(opt.state_dict(), before)
    assert opt.param_groups[0]["lr"] == 0.1


def test_load_into_refuses_values_its_variables_cannot_hold(device, tmp_path):
    path = tmp_path / "m.npz"
    w = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)          # float32
    serialization.save(path, {"w": np.array([1.0, 1e39])})                          # float64, beyond float32
    with pytest.raises(CheckpointError, match=r"w \(values beyond the range of float32\).*Nothing was loaded"):
        serialization.load_into(path, {"w": w})
    assert w.to_vec() == [1.0, 2.0]
    serialization.save(path, {"w": np.array([3.0, np.inf])})                        # inf stays inf
    serialization.load_into(path, {"w": w})
    assert w.to_vec() == [3.0, float("inf")]

    labels = Tensor.from_numpy(np.array([1, 2], np.int32))
    for saved, why in ((np.array([0.5, 1.0]), "saved as float64, the variable is int32"),
                       (np.array([1, 2 ** 40]), "values beyond the range of int32")):
        serialization.save(path, {"labels": saved})
        with pytest.raises(CheckpointError, match=why):
            serialization.load_into(path, {"labels": labels})
        assert labels.to_vec() == [1, 2]


def test_a_failed_upload_leaves_parameters_and_optimizer_as_they_were(device, tmp_path, monkeypatch):
    # Variables and optimiser state are all uploaded before either is changed: a device refusing any
    # one upload (here simulated, one after another) must not leave the optimiser loaded and some
    # parameters written.
    path = tmp_path / "m.npz"
    net, other = model(0), model(1)
    opt = Adam(net.parameters(), lr=0.05)
    x = Variable(Tensor.from_numpy(np.ones((2, 6), np.float32)))
    net(x).pow(2.0).mean().backward()
    opt.step()
    serialization.save(path, params(net), optimizer=opt)
    target_opt = Adam(other.parameters(), lr=0.5)
    before = snapshot(params(other))

    real, calls = Tensor.from_numpy.__func__, []

    def refusing(cls, *args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("simulated: the device refused an upload")
        return real(cls, *args, **kwargs)

    uploads = len(params(net)) * 3          # each parameter, and Adam's two moments for each
    for fail_at in range(1, uploads + 1):
        calls.clear()
        monkeypatch.setattr(Tensor, "from_numpy", classmethod(refusing))
        with pytest.raises(RuntimeError, match="simulated"):
            serialization.load_into(path, params(other), optimizer=target_opt)
        monkeypatch.undo()
        assert target_opt.lr == 0.5 and target_opt.state == {}, f"optimiser changed (upload {fail_at} failed)"
        for name, value in snapshot(params(other)).items():
            np.testing.assert_array_equal(value, before[name], err_msg=f"upload {fail_at} failed")
    serialization.load_into(path, params(other), optimizer=target_opt)
    assert target_opt.lr == 0.05 and len(target_opt.state) == len(params(net))
