"""Damaged checkpoints: a load changes nothing unless the whole file is valid.

Every part of a saved file (each zip member, the JSON metadata, the optimiser state) is flipped,
truncated, replaced, deleted or joined by a stray member. ``load``, ``read`` and
``load_into(..., optimizer=opt)`` must then raise :class:`CheckpointError` naming what is wrong, or,
only where the damaged file is still a valid checkpoint, succeed with exactly what it holds. After
every failure the parameters and ``opt.state_dict()`` are exactly as they were.
"""

import io
import json
import struct
import warnings
import zipfile

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, serialization
from axonml_autograd.serialization import CheckpointError
from axonml_autograd.nn import MLP
from axonml_autograd.optim import Adam

OPT_JSON, META = "__optimizer__/json.npy", "__meta__.npy"


def npy(array, allow_pickle=False) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array(f, np.asarray(array), allow_pickle=allow_pickle)
    return f.getvalue()


def rezip(raw: bytes, replace=None, drop=(), add=()) -> bytes:
    """The archive ``raw`` rewritten: members replaced (name -> bytes), dropped, or added at the end."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst, warnings.catch_warnings():
        warnings.simplefilter("ignore")       # zipfile warns about a duplicate name, which one case adds
        for info in src.infolist():
            if info.filename not in drop:
                dst.writestr(info.filename, (replace or {}).get(info.filename, src.read(info)))
        for name, data in add:
            dst.writestr(name, data)
    return out.getvalue()


def layout(raw: bytes) -> dict:
    """member -> (local header offset, data start, data end, central directory record offset)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        infos, central = zf.infolist(), zf.start_dir
    places = {}
    for info in infos:
        n, m = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
        start = info.header_offset + 30 + n + m
        assert raw[central:central + 4] == b"PK\x01\x02"
        places[info.filename] = (info.header_offset, start, start + info.compress_size, central)
        n, m, k = struct.unpack("<HHH", raw[central + 28: central + 34])
        central += 46 + n + m + k
    return places


def flipped(raw: bytes, offset: int) -> bytes:
    raw = bytearray(raw)
    raw[offset] ^= 0xFF
    return bytes(raw)


def _write(path, raw):
    path.write_bytes(raw)
    return path


# -- the file under test and the model it is loaded into ----------------------------------------------

def _trained(seed, lr, steps):
    net = MLP([4, 3, 2], seed=seed)
    opt = Adam(net.parameters(), lr=lr)
    x = Variable(Tensor.from_numpy(np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)))
    for _ in range(steps):
        opt.zero_grad()
        net(x).pow(2.0).mean().backward()
        opt.step()
    return dict(net.named_parameters()), opt


@pytest.fixture(scope="module")
def saved(device, tmp_path_factory):
    """The good checkpoint's bytes: four parameters, Adam's moments for each, optimiser JSON, metadata."""
    path = tmp_path_factory.mktemp("good") / "good.npz"
    params, opt = _trained(seed=0, lr=0.05, steps=2)
    serialization.save(path, params, optimizer=opt, metadata={"epoch": 2})
    return path.read_bytes()


@pytest.fixture(scope="module")
def target(device, tmp_path_factory):
    """A different model and optimiser (other weights, lr, moments), and a file to restore them from."""
    params, opt = _trained(seed=1, lr=0.5, steps=1)
    baseline = tmp_path_factory.mktemp("baseline") / "baseline.npz"
    serialization.save(baseline, params, optimizer=opt)
    return params, opt, baseline


def test_the_file_under_test_has_every_part(saved):
    members = set(layout(saved))
    assert {META, OPT_JSON, "layers.0.weight.npy", "layers.1.bias.npy"} <= members
    assert {"__optimizer__/state/0/exp_avg.npy", "__optimizer__/state/3/exp_avg_sq.npy"} <= members
    assert len(members) == 4 + 4 * 2 + 2


def _state(opt):
    sd = opt.state_dict()
    return sd["param_groups"], {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in e.items()}
                                for i, e in sd["state"].items()}


def _equal_state(a, b) -> bool:
    (groups_a, state_a), (groups_b, state_b) = a, b
    return groups_a == groups_b and state_a.keys() == state_b.keys() and all(
        state_a[i].keys() == state_b[i].keys() and all(np.array_equal(state_a[i][k], state_b[i][k]) for k in state_a[i])
        for i in state_a)


def _outcome(call):
    try:
        call()
    except CheckpointError as e:
        return str(e)
    return None


def check(path, raw, target, expect, names=(), original=None) -> list:
    """Load the damaged bytes ``raw`` every way; return what went against the rules (empty: all well).

    ``expect``: "file" (read refuses the file), "fit" (read accepts it, load_into refuses it for
    these variables and optimiser), "ok" (a valid checkpoint) or "any". ``names``: what a refusal's
    message must mention (one of them), besides the path. ``original``: the checkpoint ``raw`` must
    equal if it loads (a flip that leaves a loadable file must not have changed what it holds).
    """
    params, opt, baseline = target
    path.write_bytes(raw)
    before_params = {k: v.numpy().copy() for k, v in params.items()}
    before_state = _state(opt)
    read_error, load_error = _outcome(lambda: serialization.read(path)), _outcome(lambda: serialization.load(path))
    into_error = _outcome(lambda: serialization.load_into(path, params, optimizer=opt))
    wrong = []
    if (read_error is None) != (load_error is None):
        wrong.append(f"read and load disagree: {read_error!r} vs {load_error!r}")
    if read_error is not None and into_error is None:
        wrong.append(f"load_into accepted what read refused ({read_error})")
    want = {"file": (True, True), "fit": (False, True), "ok": (False, False)}.get(expect)
    if want is not None and want != (read_error is not None, into_error is not None):
        wrong.append(f"expected {expect}; read: {read_error or 'ok'}; load_into: {into_error or 'ok'}")
    for message in filter(None, [read_error, into_error]):
        if str(path) not in message or (names and not any(n in message for n in names)):
            wrong.append(f"the message names neither the file nor {list(names)}: {message}")
    if into_error is not None:
        if not all(np.array_equal(v.numpy(), before_params[k]) for k, v in params.items()):
            wrong.append(f"a parameter changed although load_into failed: {into_error}")
        if not _equal_state(_state(opt), before_state):
            wrong.append(f"the optimiser state changed although load_into failed: {into_error}")
    else:
        ckpt = serialization.read(path)
        if original is not None and not (
                ckpt.tensors.keys() == original.tensors.keys() and ckpt.metadata == original.metadata
                and all(np.array_equal(ckpt.tensors[k], original.tensors[k]) for k in ckpt.tensors)):
            wrong.append("a damaged file loaded with other contents than the original")
        if not all(np.array_equal(v.numpy(), ckpt.tensors[k].astype(np.float32)) for k, v in params.items()):
            wrong.append("load_into succeeded but the parameters are not the file's")
        serialization.load_into(baseline, params, optimizer=opt)     # the next case starts from the same place
    return wrong


def _report(wrong):
    assert not wrong, f"{len(wrong)} case(s) broke the rules:\n" + "\n".join(wrong[:15])


def _entry(member):
    return member[:-len(".npy")]


def _state_names(member):
    # A moment that does not fit is named by load_state_dict as "parameter 0: exp_avg".
    parts = _entry(member).split("/")
    return (_entry(member), f"parameter {parts[2]}: {parts[3]}") if parts[:2] == ["__optimizer__", "state"] \
        else (_entry(member),)


# -- byte flips and truncations of the file as it is on disk -------------------------------------------

# (name, where in the member, expectation). Member data is covered by the CRC; the local header's
# own CRC and time fields are not read by zipfile (the central directory's are), so a flip there may load.
FLIPS = [
    ("local header signature", lambda lo, start, end, cd: lo, "file"),
    ("local header CRC field", lambda lo, start, end, cd: lo + 14, "any"),
    ("local header name length", lambda lo, start, end, cd: lo + 26, "file"),
    ("local header extra length", lambda lo, start, end, cd: lo + 28, "file"),
    ("local header name", lambda lo, start, end, cd: lo + 30, "file"),
    (".npy magic", lambda lo, start, end, cd: start, "file"),
    (".npy header", lambda lo, start, end, cd: start + 20, "file"),
    ("last data byte", lambda lo, start, end, cd: end - 1, "file"),
    ("central directory signature", lambda lo, start, end, cd: cd, "file"),
    ("central directory CRC", lambda lo, start, end, cd: cd + 16, "file"),
    ("central directory size", lambda lo, start, end, cd: cd + 24, "file"),
    ("central directory name", lambda lo, start, end, cd: cd + 46, "file"),
]


def test_a_flipped_byte_anywhere_in_any_member_is_refused_or_harmless(saved, target, tmp_path):
    original = serialization.read(_write(tmp_path / "original.npz", saved))
    wrong = []
    for member, place in layout(saved).items():
        for what, offset, expect in FLIPS:
            raw = flipped(saved, offset(*place))
            # The central directory's own fields describe the member by name only where it still reads.
            names = () if what.startswith("central directory") else (_entry(member),)
            wrong += [f"{member}, {what}: {w}" for w in
                      check(tmp_path / "m.npz", raw, target, expect, names, original)]
    _report(wrong)


def test_a_file_cut_short_anywhere_is_refused(saved, target, tmp_path):
    cuts = {0, 1, len(saved) - 1, len(saved) - 22}     # empty, one byte, into the end-of-archive record
    for lo, start, end, cd in layout(saved).values():
        cuts |= {lo, start + 5, (start + end) // 2, end, cd, cd + 30}
    wrong = []
    for cut in sorted(cuts):
        wrong += [f"cut at {cut} of {len(saved)}: {w}" for w in check(tmp_path / "m.npz", saved[:cut], target, "file")]
    _report(wrong)


# -- members replaced, deleted and added ---------------------------------------------------------------

def _header_size(raw_member: bytes) -> int:
    f = io.BytesIO(raw_member)
    assert np.lib.format.read_magic(f) == (1, 0)
    np.lib.format.read_array_header_1_0(f)
    return f.tell()


# name -> (new member bytes from (old bytes, old array), expectation for a tensor, for optimiser state,
# for the metadata and optimiser JSON). Strings are fine in the JSON members and nowhere else; an array
# of real numbers is fine for tensors and moments when its shape fits, never for the JSON members.
REPLACEMENTS = {
    "garbage": (lambda raw, arr: b"this is not an array" * 5, "file", "file", "file"),
    "empty": (lambda raw, arr: b"", "file", "file", "file"),
    "first half": (lambda raw, arr: raw[: len(raw) // 2], "file", "file", "file"),
    "header only": (lambda raw, arr: raw[:_header_size(raw)], "file", "file", "file"),
    "trailing bytes": (lambda raw, arr: raw + b"\0" * 8, "file", "file", "file"),
    "strings": (lambda raw, arr: npy(np.full(arr.shape, "x")), "file", "file", "file"),
    "bytes": (lambda raw, arr: npy(np.full(arr.shape, b"x")), "file", "file", "file"),
    "complex": (lambda raw, arr: npy(np.zeros(arr.shape, np.complex64)), "file", "file", "file"),
    "objects": (lambda raw, arr: npy(np.full(arr.shape, None, object), allow_pickle=True), "file", "file", "file"),
    "structured": (lambda raw, arr: npy(np.zeros(arr.shape, [("a", "f4")])), "file", "file", "file"),
    "datetimes": (lambda raw, arr: npy(np.zeros(arr.shape, "M8[s]")), "file", "file", "file"),
    "wrong shape": (lambda raw, arr: npy(np.zeros((7,), np.float32)), "fit", "fit", "file"),
    "one more axis": (lambda raw, arr: npy(np.zeros(arr.shape + (1,), np.float32)), "fit", "fit", "file"),
    "other real dtype": (lambda raw, arr: npy(np.zeros(arr.shape, np.int16)), "ok", "ok", "file"),
    "version 9 .npy": (lambda raw, arr: raw[:6] + b"\x09" + raw[7:], "file", "file", "file"),
}


def _kind(member):
    return 3 if member in (META, OPT_JSON) else 2 if member.startswith("__optimizer__/") else 1


@pytest.mark.parametrize("replacement", list(REPLACEMENTS))
def test_every_member_replaced_by_something_else(saved, target, tmp_path, replacement):
    make = REPLACEMENTS[replacement][0]
    wrong = []
    with zipfile.ZipFile(io.BytesIO(saved)) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    for member, raw in members.items():
        arr = np.lib.format.read_array(io.BytesIO(raw))
        expect = REPLACEMENTS[replacement][_kind(member)]
        names = _state_names(member) if expect == "fit" else (_entry(member),)
        damaged = rezip(saved, replace={member: make(raw, arr)})
        wrong += [f"{member}: {w}" for w in check(tmp_path / "m.npz", damaged, target, expect, names)]
    _report(wrong)


def test_every_member_deleted(saved, target, tmp_path):
    wrong = []
    for member in layout(saved):
        # A tensor gone is a smaller checkpoint (strict load_into names it missing); a moment gone is
        # noticed by the optimiser JSON's list of entries; the optimiser arrays without their JSON are
        # refused; a plain archive without metadata is a valid checkpoint.
        expect = {1: "fit", 2: "file", 3: "ok" if member == META else "file"}[_kind(member)]
        names = ("__optimizer__/",) if member == OPT_JSON else (_entry(member),)
        damaged = rezip(saved, drop={member})
        wrong += [f"{member} deleted: {w}" for w in check(tmp_path / "m.npz", damaged, target, expect, names)]
    _report(wrong)


ADDITIONS = [   # (member name, bytes, expectation, what the message names)
    ("notes.txt", b"hello", "file", "notes.txt"),
    ("sub/", b"", "file", "sub/"),
    (".npy", npy(np.zeros(2)), "file", ".npy"),
    ("extra.npy", npy(np.zeros(2)), "fit", "extra"),                      # strict load_into: unexpected
    ("layers.0.weight.npy", npy(np.zeros((4, 3))), "file", "layers.0.weight.npy"),      # a second one
    ("__optimizer__/state/0/max_exp_avg_sq.npy", npy(np.zeros((4, 3))), "file", "max_exp_avg_sq"),
    ("__optimizer__/state/9/exp_avg.npy", npy(np.zeros(2)), "file", "__optimizer__/state/9/exp_avg"),
    ("__optimizer__/other.npy", npy(np.zeros(2)), "file", "__optimizer__/other"),
    ("__optimizer__/state/0/.npy", npy(np.zeros(2)), "file", "__optimizer__/state/0/"),
]


def test_an_unexpected_member_is_named(saved, target, tmp_path):
    wrong = []
    for member, data, expect, name in ADDITIONS:
        damaged = rezip(saved, add=[(member, data)])
        wrong += [f"{member} added: {w}" for w in check(tmp_path / "m.npz", damaged, target, expect, (name,))]
    _report(wrong)


# -- the JSON members rewritten with valid JSON of the wrong shape --------------------------------------

def _edit(**change):
    def edit(sk):
        return {**sk, **change}
    return edit


def _edit_group(**change):
    def edit(sk):
        return {**sk, "param_groups": [{**sk["param_groups"][0], **change}]}
    return edit


def _edit_state(**change):
    def edit(sk):
        return {**sk, "state": {**sk["state"], "0": {**sk["state"]["0"], **change}}}
    return edit


OPTIMIZER_JSON = {   # name -> (the edit, expectation, what the message names)
    "not JSON": (lambda sk: "{", "file", OPT_JSON),
    "a list": (lambda sk: [sk], "file", OPT_JSON),
    "state is a list": (_edit(state=[]), "file", "'state' must be an object"),
    "param_groups is a number": (_edit(param_groups=1), "file", "'param_groups' must be a non-empty list"),
    "a group is a number": (_edit(param_groups=[5]), "file", "parameter group 0 must be an object"),
    "params are not indices": (_edit_group(params=["a"]), "file", "'params' must be a list of parameter indices"),
    "a state key is not an index": (lambda sk: {**sk, "state": {**sk["state"], "x": {}}}, "file", "'x'"),
    "a state entry is a list": (lambda sk: {**sk, "state": {**sk["state"], "0": []}}, "file", "parameter 0"),
    "an unknown key": (_edit(extra=1), "file", OPT_JSON),
    "arrays is a number": (_edit(arrays=3), "file", "'arrays'"),
    "an entry not listed": (lambda sk: {**sk, "arrays": sk["arrays"][1:]}, "file", "is not listed"),
    "an entry listed twice": (lambda sk: {**sk, "state": {**sk["state"], "0": {"step": 2, "exp_avg": 1}}},
                              "file", "repeats 'exp_avg'"),
    "lr beyond float range": (_edit_group(lr=10 ** 400), "fit", "Adam lr"),
    "lr is a string": (_edit_group(lr="fast"), "fit", "Adam lr"),
    "betas of three": (_edit_group(betas=[0.9, 0.9, 0.9]), "fit", "betas"),
    "amsgrad is a string": (_edit_group(amsgrad="yes"), "fit", "Adam amsgrad"),
    "one group too many": (lambda sk: {**sk, "param_groups": sk["param_groups"] * 2}, "fit", "2 parameter group"),
    "a step below zero": (_edit_state(step=-1), "fit", "step"),
    "a step of 1.5": (_edit_state(step=1.5), "fit", "step"),
    "a step beyond float range": (_edit_state(step=10 ** 400), "fit", "step"),
    "an unknown state": (_edit_state(momentum_buffer=0), "fit", "unknown state"),
    "another lr": (_edit_group(lr=0.25), "ok", None),
    "written before the list of entries": (lambda sk: {k: v for k, v in sk.items() if k != "arrays"}, "ok", None),
}


@pytest.mark.parametrize("edit", list(OPTIMIZER_JSON))
def test_optimizer_json_of_the_wrong_shape(saved, target, tmp_path, edit):
    change, expect, name = OPTIMIZER_JSON[edit]
    with zipfile.ZipFile(io.BytesIO(saved)) as zf:
        skeleton = json.loads(np.lib.format.read_array(io.BytesIO(zf.read(OPT_JSON))).item())
    new = change(skeleton)
    damaged = rezip(saved, replace={OPT_JSON: npy(np.array(new if isinstance(new, str) else json.dumps(new)))})
    _report(check(tmp_path / "m.npz", damaged, target, expect, (name,) if name else ()))
    if expect == "ok" and edit == "another lr":
        assert serialization.read(tmp_path / "m.npz").optimizer["param_groups"][0]["lr"] == 0.25


@pytest.mark.parametrize("text, expect", [("[1, 2]", "file"), ('"epoch 2"', "file"), ("{", "file"),
                                          ("[" * 100_000 + "]" * 100_000, "file"), ("{}", "ok")],
                         ids=["a list", "a string", "not JSON", "nested too deep", "empty"])
def test_metadata_that_is_not_a_json_object(saved, target, tmp_path, text, expect):
    damaged = rezip(saved, replace={META: npy(np.array(text))})
    _report(check(tmp_path / "m.npz", damaged, target, expect, ("__meta__",)))
