"""Checkpoints as ``.npz`` files: named tensors, optionally an optimiser's state and JSON metadata.

The file is a plain numpy archive that ``np.load(path, allow_pickle=False)`` opens, one ``.npy``
entry per tensor; nothing in it is pickled. Optimiser state goes under the reserved prefix
``__optimizer__/`` (its tensors as entries, the rest as one JSON string) and metadata under
``__meta__``; :func:`load` hides both.

Saving is atomic: the archive is written to a temporary file in the target directory, flushed to
disk, then renamed over the target. A crash at any point leaves either the old file or the new one,
never a torn one. Loading into variables checks everything first and writes nothing on a mismatch.

>>> import os, tempfile
>>> from axonml_autograd import Tensor, Variable
>>> w = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
>>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
>>> save(path, {"w": w})
>>> load(path)["w"].tolist()
[1.0, 2.0]
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Mapping, NamedTuple, Optional

import numpy as np

from . import tensor as T
from .tensor import Tensor

__all__ = ["CheckpointError", "CheckpointMismatchError", "Checkpoint", "save", "read", "load", "load_into"]

OPTIMIZER_PREFIX = "__optimizer__/"
_OPTIMIZER_JSON = OPTIMIZER_PREFIX + "json"
_META = "__meta__"
_FORMAT = "axonml-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose contents are not what was asked for."""


class CheckpointMismatchError(CheckpointError):
    """The names or shapes in a checkpoint differ from the variables it is loaded into.

    ``missing``, ``unexpected`` and ``mismatched`` (name -> (saved shape, expected shape)) hold the details.
    """

    def __init__(self, path, missing, unexpected, mismatched):
        self.path, self.missing, self.unexpected, self.mismatched = path, missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected: " + ", ".join(unexpected))
        if mismatched:
            parts.append("mismatched: " + ", ".join(f"{n} (saved {list(s)} vs expected {list(e)})"
                                                    for n, (s, e) in mismatched.items()))
        super().__init__(f"checkpoint {os.fspath(path)!r} does not fit: " + "; ".join(parts)
                         + ". Nothing was loaded.")


class Checkpoint(NamedTuple):
    tensors: dict             # name -> numpy array
    optimizer: Optional[dict]  # an Optimizer.state_dict(), or None
    metadata: dict


def _as_array(name, value) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.numpy()
    data = getattr(value, "data", None)
    if callable(data) and isinstance(data(), Tensor):
        return data().numpy()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value.copy(order="C")   # not ascontiguousarray: that turns a 0-d array into shape (1,)
    raise TypeError(f"save: {name!r} is a {type(value).__name__}; expected a Variable, Tensor or numeric array")


def _flatten_optimizer(state: dict):
    """An Optimizer.state_dict() as (arrays by entry name, everything else as JSON)."""
    arrays, skeleton = {}, {"param_groups": state["param_groups"], "state": {}}
    for i, entry in state["state"].items():
        rest = {}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"{OPTIMIZER_PREFIX}state/{int(i)}/{key}"] = value
            else:
                rest[key] = value
        skeleton["state"][str(int(i))] = rest
    return arrays, json.dumps(skeleton)


def _unflatten_optimizer(arrays: dict, text: str) -> dict:
    skeleton = json.loads(text)
    state = {int(i): dict(rest) for i, rest in skeleton["state"].items()}
    for name, value in arrays.items():
        i, key = name[len(OPTIMIZER_PREFIX) + len("state/"):].split("/", 1)
        state.setdefault(int(i), {})[key] = value
    return {"state": state, "param_groups": skeleton["param_groups"]}


def save(path, named_variables: Mapping, optimizer=None, metadata: Optional[dict] = None):
    """Write ``named_variables`` (name -> Variable, Tensor or array) to ``path`` atomically.

    ``optimizer`` (an Optimizer, or its state_dict()) and ``metadata`` (a JSON-serialisable dict, e.g.
    the epoch) travel in the same file. The path is used as given (no ``.npz`` is appended).
    """
    path = os.fspath(path)
    entries = {}
    for name, value in named_variables.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"save: names must be non-empty strings, got {name!r}")
        if name.startswith(OPTIMIZER_PREFIX) or name == _META:
            raise ValueError(f"save: {name!r} uses a name reserved for optimiser state and metadata")
        entries[name] = _as_array(name, value)
    if optimizer is not None:
        state = optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer
        arrays, text = _flatten_optimizer(state)
        entries.update(arrays)
        entries[_OPTIMIZER_JSON] = np.array(text)
    entries[_META] = np.array(json.dumps({"format": _FORMAT, **(metadata or {})}))

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(directory, os.path.basename(path)), suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            # The .npz layout written by hand: np.savez would reject names like "file" (its own argument).
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, arr in entries.items():
                    with zf.open(name + ".npy", "w", force_zip64=True) as entry:
                        np.lib.format.write_array(entry, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _temp_prefix(directory: str, name: str) -> str:
    """``.<name>.`` for the temporary file, with ``name`` cut so the whole temporary name (prefix,
    mkstemp's 8 random characters, ``.tmp``) fits the directory's limit on a name (255 bytes on
    most file systems): a target name that is legal must never fail for its temporary's sake."""
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):   # no pathconf (Windows) or no such setting
        limit = 255
    room = max(0, limit - len(".." + "12345678" + ".tmp"))
    raw = os.fsencode(name)
    if len(raw) > room:
        # Cut on a character boundary; an undecodable byte (surrogateescape) is simply dropped.
        name = raw[:room].decode(errors="ignore")
    return f".{name}."


def _fsync_dir(directory):
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read(path) -> Checkpoint:
    """Everything in a checkpoint: tensors (numpy), optimiser state (or None), metadata."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        # np.load would guess "pickle" for any non-zip bytes; say what is actually wrong.
        raise CheckpointError(f"checkpoint {path!r} is not an .npz archive (empty, truncated or damaged: "
                              f"{os.path.getsize(path)} bytes)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            # Read every entry now: a damaged entry only shows (as a CRC error) when it is read.
            everything = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise CheckpointError(f"checkpoint {path!r} is corrupted or not a checkpoint: "
                              f"{type(e).__name__}: {e}") from e
    try:
        meta = json.loads(everything.pop(_META).item()) if _META in everything else {}
        text = everything.pop(_OPTIMIZER_JSON, None)
        opt_arrays = {k: everything.pop(k) for k in list(everything) if k.startswith(OPTIMIZER_PREFIX)}
        optimizer = _unflatten_optimizer(opt_arrays, text.item()) if text is not None else None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path!r} has unreadable optimiser state or metadata: {e}") from e
    return Checkpoint(everything, optimizer, meta)


def load(path) -> dict:
    """The named tensors of a checkpoint as numpy arrays (``allow_pickle=False``)."""
    return read(path).tensors


def load_into(path, named_variables: Mapping, strict: bool = True, optimizer=None) -> Checkpoint:
    """Copy a checkpoint's tensors into existing Variables/Tensors in place (same device buffers).

    With ``strict``, names must match exactly; shapes must always match. On any problem one
    :class:`CheckpointMismatchError` lists the missing, unexpected and mismatched entries and nothing
    is written. ``optimizer``, if given, gets the saved optimiser state (checked first as well).
    Returns the whole :class:`Checkpoint` (for its metadata).
    """
    ckpt = read(path)
    saved = ckpt.tensors
    targets = {}
    for name, value in named_variables.items():
        t = value if isinstance(value, Tensor) else value.data() if callable(getattr(value, "data", None)) else None
        if not isinstance(t, Tensor):
            raise TypeError(f"load_into: {name!r} is a {type(value).__name__}; expected a Variable or Tensor")
        targets[name] = t
    missing = [n for n in targets if n not in saved]
    unexpected = [n for n in saved if n not in targets]
    mismatched = {n: (tuple(saved[n].shape), tuple(t.shape())) for n, t in targets.items()
                  if n in saved and tuple(saved[n].shape) != tuple(t.shape())}
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(path, missing, unexpected, mismatched)
    if optimizer is not None:
        if ckpt.optimizer is None:
            raise CheckpointError(f"checkpoint {os.fspath(path)!r} holds no optimiser state")
        try:   # checks everything before it changes the optimiser, and before any variable is written
            optimizer.load_state_dict(ckpt.optimizer)
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {os.fspath(path)!r}: the optimiser state does not fit: {e}. "
                                  "Nothing was loaded.") from e
    for name, t in targets.items():
        if name in saved and t.numel():
            src = Tensor.from_numpy(saved[name], dtype=t.dtype, device=t.device)
            T.elementwise("a", [src], out=t.view(), op="load_into")   # in place: references stay valid
    return ckpt
