"""Saving and loading checkpoints as ``.npz`` files: named tensors, optionally an optimiser's state and
JSON metadata (PyTorch's ``torch.save``/``torch.load`` job; ``axonml_autograd.save``/``load`` are these).

The file is a plain numpy archive that ``np.load(path, allow_pickle=False)`` opens, one ``.npy``
entry per tensor; nothing in it is pickled. Optimiser state goes under the reserved prefix
``__optimizer__/`` (its tensors as entries, the rest as one JSON string) and metadata under
``__meta__``; :func:`load` hides both.

Saving is atomic: the archive is written to a temporary file in the target directory, flushed to
disk, then renamed over the target. A crash at any point leaves either the old file or the new one,
never a torn one. Reading checks the whole file first (every member a ``.npy`` array of real numbers,
the JSON members of the structure :func:`save` writes): a damaged or foreign file is one
:class:`CheckpointError` naming the member, and loading into variables and an optimiser changes
nothing unless everything is valid and fits.

16-bit tensors: a float16 tensor is a float16 entry. A bfloat16 tensor (numpy has no bfloat16) is stored
losslessly as its raw bits, a uint16 entry, and its name is listed in the metadata under
``"bfloat16_entries"``; reading gives it back as the float32 array of the same values (every bfloat16 is
a float32 exactly), and loading it into a bfloat16 variable (``load_into``, ``load_state_dict``) gives
the saved bits back.

>>> import os, tempfile
>>> from axonml_autograd import Tensor, Variable
>>> w = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
>>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
>>> save(path, {"w": w})
>>> load(path)["w"].tolist()
[1.0, 2.0]
>>> from axonml_autograd.nn import Linear
>>> layer = Linear(2, 1, seed=0)
>>> save(layer.state_dict(), path)              # torch.save's order works too
>>> layer.load_state_dict(load(path))
IncompatibleKeys(missing_keys=[], unexpected_keys=[])
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import threading
import zipfile
import zlib
from typing import Mapping, NamedTuple, Optional

import numpy as np

from .dtypes import bfloat16, from_bf16_bits, to_bf16_bits
from .elementwise_kernels import BFLOAT16_MAX, elementwise
from .tensor import Tensor

__all__ = ["CheckpointError", "CheckpointMismatchError", "Checkpoint", "save", "read", "load", "load_into"]

OPTIMIZER_PREFIX = "__optimizer__/"
_OPTIMIZER_JSON = OPTIMIZER_PREFIX + "json"
_META = "__meta__"
_BF16 = "bfloat16_entries"   # metadata key: the entries that hold bfloat16 bits
_FORMAT = "axonml-checkpoint-1"
_REAL = "biuf"    # what a tensor may hold: bool, int, uint, float (never strings, complex or objects)


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


def _bf16_tensor(value):
    """The bfloat16 Tensor of a Tensor or Variable, or None."""
    t = value if isinstance(value, Tensor) else value.data() if callable(getattr(value, "data", None)) else None
    return t if isinstance(t, Tensor) and t.dtype is bfloat16 else None


def _as_array(name, value) -> np.ndarray:
    bf = _bf16_tensor(value)
    if bf is not None:
        return to_bf16_bits(bf.numpy())   # its raw bits (exact: numpy() gives the float32 of each value)
    if isinstance(value, Tensor):
        return value.numpy()
    data = getattr(value, "data", None)
    if callable(data) and isinstance(data(), Tensor):
        return data().numpy()
    if isinstance(value, np.ndarray) and value.dtype.kind in _REAL:
        return value.copy(order="C")   # not ascontiguousarray: that turns a 0-d array into shape (1,)
    raise TypeError(f"save: {name!r} is a {type(value).__name__}; expected a Variable, Tensor or numeric array")


_TREE = "__tree__/"   # the tensors of a nested object (torch.save of a dict of state_dicts)


def _is_tensor(value) -> bool:
    return isinstance(value, (Tensor, np.ndarray)) or (callable(getattr(value, "data", None)) and
                                                       isinstance(value.data(), Tensor))


def _is_flat(obj) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(k, str) and _is_tensor(v) for k, v in obj.items())


def _tree_skeleton(obj, arrays: dict, where="object"):
    """``obj`` as JSON, each tensor replaced by ``{"tensor": k}`` and stored in ``arrays``; dict keys
    keep their type (an optimiser's state is keyed by ints) and tuples stay tuples."""
    if _is_tensor(obj):
        k = str(len(arrays))
        # A bfloat16 tensor stays one until save() writes it (its bits, listed as bfloat16).
        arrays[_TREE + k] = obj if _bf16_tensor(obj) is not None else _as_array(where, obj)
        return {"tensor": k}
    if isinstance(obj, Mapping):
        items = []
        for key, value in obj.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"save: {where} has a key {key!r}; keys must be strings or ints")
            items.append([key, _tree_skeleton(value, arrays, f"{where}[{key!r}]")])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        return {"tuple" if isinstance(obj, tuple) else "list":
                [_tree_skeleton(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"save: {where} is a {type(obj).__name__}; a saved object holds tensors, numbers, "
                    "strings, None, and dicts, lists and tuples of them")


def _tree(skeleton, arrays, where):
    kind, body = next(iter(skeleton.items()))
    if kind == "tensor":
        if _TREE + body not in arrays:
            raise CheckpointError(f"{where}: the saved object's tensor {body} is missing")
        return arrays[_TREE + body]
    if kind == "dict":
        return {key: _tree(v, arrays, where) for key, v in body}
    if kind in ("list", "tuple"):
        items = [_tree(v, arrays, where) for v in body]
        return tuple(items) if kind == "tuple" else items
    return body


def _flatten_optimizer(state: dict):
    """An Optimizer.state_dict() as (arrays by entry name, everything else as JSON).

    The JSON lists the array entries too, so that :func:`read` notices one that went missing: a
    moment buffer that silently came back as zeros would change training without an error.
    """
    arrays, skeleton = {}, {"param_groups": state["param_groups"], "state": {}, "arrays": []}
    for i, entry in state["state"].items():
        rest = {}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                if value.dtype.kind not in _REAL:
                    raise TypeError(f"save: optimiser state {key!r} of parameter {i} holds {value.dtype}; "
                                    "expected numbers")
                arrays[f"{OPTIMIZER_PREFIX}state/{int(i)}/{key}"] = value
                skeleton["arrays"].append(f"state/{int(i)}/{key}")
            else:
                rest[key] = value
        skeleton["state"][str(int(i))] = rest
    return arrays, json.dumps(skeleton)


def _unflatten_optimizer(where: str, arrays: dict, skeleton) -> dict:
    """The state_dict that _flatten_optimizer wrote, after checking its structure (not its values:
    ``Optimizer.load_state_dict`` checks those against the optimiser they are loaded into)."""
    member = f"member {_OPTIMIZER_JSON + '.npy'!r}"
    if not isinstance(skeleton, dict) or not {"state", "param_groups"} <= set(skeleton) \
            or not set(skeleton) <= {"state", "param_groups", "arrays"}:
        raise CheckpointError(f"{where}: {member} is not optimiser state: expected a JSON object with "
                              f"'state' and 'param_groups', got {_brief(skeleton)}")
    groups = skeleton["param_groups"]
    if not isinstance(groups, list) or not groups:
        raise CheckpointError(f"{where}: {member}: 'param_groups' must be a non-empty list, got {_brief(groups)}")
    for k, group in enumerate(groups):
        if not isinstance(group, dict):
            raise CheckpointError(f"{where}: {member}: parameter group {k} must be an object, got {_brief(group)}")
        ids = group.get("params")
        if not isinstance(ids, list) or not all(type(i) is int and i >= 0 for i in ids):
            raise CheckpointError(f"{where}: {member}: parameter group {k}: 'params' must be a list of "
                                  f"parameter indices, got {_brief(ids)}")
    saved = skeleton["state"]
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where}: {member}: 'state' must be an object (parameter index -> state), "
                              f"got {_brief(saved)}")
    state = {}
    for i, rest in saved.items():
        if not (i.isascii() and i.isdigit() and len(i) < 20):
            raise CheckpointError(f"{where}: {member}: state key {i!r} is not a parameter index")
        if not isinstance(rest, dict):
            raise CheckpointError(f"{where}: {member}: the state of parameter {i} must be an object, "
                                  f"got {_brief(rest)}")
        state[int(i)] = dict(rest)
    listed = skeleton.get("arrays")
    if listed is not None:    # files written before the list existed are read without this check
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise CheckpointError(f"{where}: {member}: 'arrays' must be a list of entry names, got {_brief(listed)}")
        present = {name[len(OPTIMIZER_PREFIX):] for name in arrays}
        lost = sorted(set(listed) - present)
        if lost:
            raise CheckpointError(f"{where}: member {OPTIMIZER_PREFIX + lost[0] + '.npy'!r} is missing "
                                  f"({len(lost)} optimiser entr{'y' if len(lost) == 1 else 'ies'} listed in "
                                  f"{_OPTIMIZER_JSON}.npy are missing)")
        stray = sorted(present - set(listed))
        if stray:
            raise CheckpointError(f"{where}: member {OPTIMIZER_PREFIX + stray[0] + '.npy'!r} is not listed in "
                                  f"{_OPTIMIZER_JSON}.npy")
    for name, value in arrays.items():
        parts = name[len(OPTIMIZER_PREFIX):].split("/", 2)
        i = parts[1] if len(parts) == 3 and parts[0] == "state" and parts[2] else ""
        if not (i.isascii() and i.isdigit() and len(i) < 20) or int(i) not in state:
            raise CheckpointError(f"{where}: member {name + '.npy'!r} is not the state of a parameter that "
                                  f"{_OPTIMIZER_JSON}.npy lists")
        if parts[2] in state[int(i)]:
            raise CheckpointError(f"{where}: member {name + '.npy'!r} repeats {parts[2]!r}, which "
                                  f"{_OPTIMIZER_JSON}.npy already holds")
        state[int(i)][parts[2]] = value
    return {"state": state, "param_groups": groups}


def _brief(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def save(path, named_variables: Mapping, optimizer=None, metadata: Optional[dict] = None):
    """Write ``named_variables`` (name -> Variable, Tensor or array) to ``path`` atomically.

    ``optimizer`` (an Optimizer, or its state_dict()) and ``metadata`` (a JSON-serialisable dict, e.g.
    the epoch) travel in the same file. The path is used as given (no ``.npz`` is appended).
    PyTorch's order, ``save(model.state_dict(), path)``, works too. The file gets the permissions
    the process's umask gives a new file (0644 under the usual 022), as ``open()`` would.
    """
    if not isinstance(path, (str, bytes, os.PathLike)) and isinstance(named_variables, (str, bytes, os.PathLike)):
        path, named_variables = named_variables, path   # torch.save(obj, f)
    if not _is_flat(named_variables) and optimizer is None:
        # torch.save of any object: {"model": ..., "optim": ..., "epoch": 3}; load() gives it back.
        tree = {}
        skeleton = _tree_skeleton(named_variables, tree)
        return save(path, tree, metadata={**(metadata or {}), "tree": skeleton})
    if not isinstance(named_variables, Mapping):
        raise TypeError(f"save: expected a mapping of names to tensors, got {type(named_variables).__name__}")
    path = os.fspath(path)
    entries = {}
    bf16 = []
    for name, value in named_variables.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"save: names must be non-empty strings, got {name!r}")
        if name.startswith(OPTIMIZER_PREFIX) or name == _META:
            raise ValueError(f"save: {name!r} uses a name reserved for optimiser state and metadata")
        entries[name] = _as_array(name, value)
        if _bf16_tensor(value) is not None:
            bf16.append(name)
    if bf16:
        metadata = {**(metadata or {}), _BF16: bf16}
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
        # mkstemp makes its file 0600; a checkpoint is an ordinary file and gets what open() would give.
        mode = 0o666 & ~_umask()
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:
            os.chmod(tmp, mode)
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


_umask_lock = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux's /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:   # elsewhere the only way to read it is to set it (briefly) and put it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


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


# What reading a damaged archive or member raises (zipfile, zlib, numpy's header parser): each one
# means "this file is not a checkpoint" and becomes a CheckpointError.
_DAMAGED = (OSError, EOFError, ValueError, TypeError, KeyError, RuntimeError, struct.error, zlib.error,
            zipfile.BadZipFile, zipfile.LargeZipFile)
_CHUNK = 1 << 20


class _NotAnEntry(ValueError):
    """A member that reads fine but is not what a checkpoint holds there (its message follows the name)."""


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, kinds: str, scalar: bool) -> np.ndarray:
    """One member as an array, without np.load's guesses (raw bytes for a non-.npy member, pickles).

    The header is checked (dtype kind, shape) before any data is read, and the data must fill the
    member exactly; the CRC is checked as the last byte is read.
    """
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _NotAnEntry(f"is .npy format version {version[0]}.{version[1]}, which this library does not read")
        if dtype.kind not in kinds or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            expected = "a string" if kinds == "U" else "real numbers (bool, int, uint or float)"
            raise _NotAnEntry(f"holds {dtype}; expected {expected}")
        if any(n < 0 for n in shape) or (scalar and shape != ()):
            raise _NotAnEntry(f"has shape {list(shape)}; expected {'a single string' if scalar else 'sizes >= 0'}")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if info.file_size - f.tell() != nbytes:
            raise _NotAnEntry(f"holds {info.file_size - f.tell()} bytes of data where its header promises {nbytes} "
                              f"({dtype} {list(shape)})")
        flat = np.empty(count, dtype)
        raw = flat.view(np.uint8)
        done = 0
        while done < nbytes:
            chunk = f.read(min(_CHUNK, nbytes - done))
            if not chunk:
                raise EOFError(f"the data ends after {done} of {nbytes} bytes")
            raw[done:done + len(chunk)] = np.frombuffer(chunk, np.uint8)
            done += len(chunk)
        if f.read(1):
            raise _NotAnEntry(f"has bytes after its {nbytes} bytes of data")
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _json(where: str, name: str, arr: np.ndarray):
    try:
        return json.loads(arr.item())
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{where}: member {name + '.npy'!r} is not valid JSON: {e}") from e


def read(path) -> Checkpoint:
    """Everything in a checkpoint: tensors (numpy), optimiser state (or None), metadata.

    The whole file is checked first: every member must be a ``.npy`` array of real numbers (the
    metadata and the optimiser's JSON a single string), with the structure :func:`save` writes. Any
    problem is one :class:`CheckpointError` that names the member.
    """
    path = os.fspath(path)
    where = f"checkpoint {path!r}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        # np.load would guess "pickle" for any non-zip bytes; say what is actually wrong.
        raise CheckpointError(f"{where} is not an .npz archive (empty, truncated or damaged: "
                              f"{os.path.getsize(path)} bytes)")
    everything = {}
    try:
        zf = zipfile.ZipFile(path)
    except _DAMAGED as e:
        raise CheckpointError(f"{where} is corrupted or not a checkpoint: {type(e).__name__}: {e}") from e
    with zf:
        for info in zf.infolist():
            member = info.filename
            name = member[:-len(".npy")]
            if not member.endswith(".npy") or not name:
                raise CheckpointError(f"{where}: member {member!r} is not a .npy array; a checkpoint holds "
                                      "nothing else")
            if name in everything:
                raise CheckpointError(f"{where}: member {member!r} appears twice")
            text = name in (_META, _OPTIMIZER_JSON)
            try:
                # Every member now: a damaged one only shows (as a CRC error) when it is read.
                everything[name] = _read_npy(zf, info, "U" if text else _REAL, scalar=text)
            except _NotAnEntry as e:
                raise CheckpointError(f"{where}: member {member!r} {e}") from e
            except _DAMAGED as e:
                raise CheckpointError(f"{where}: member {member!r} is damaged or not a .npy array: "
                                      f"{type(e).__name__}: {e}") from e
    meta = _json(where, _META, everything.pop(_META)) if _META in everything else {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: member {_META + '.npy'!r} must hold a JSON object, got {_brief(meta)}")
    listed = meta.get(_BF16, [])
    if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
        raise CheckpointError(f"{where}: member {_META + '.npy'!r}: {_BF16!r} must be a list of entry names, "
                              f"got {_brief(listed)}")
    for name in listed:   # bfloat16 bits back to the float32 values they stand for
        arr = everything.get(name)
        if arr is None or arr.dtype != np.uint16:
            raise CheckpointError(f"{where}: member {name + '.npy'!r} is listed as bfloat16 but "
                                  + ("is missing" if arr is None else f"holds {arr.dtype}, not its uint16 bits"))
        everything[name] = from_bf16_bits(arr).reshape(arr.shape)
    text = everything.pop(_OPTIMIZER_JSON, None)
    opt_arrays = {k: everything.pop(k) for k in list(everything) if k.startswith(OPTIMIZER_PREFIX)}
    if text is not None:
        optimizer = _unflatten_optimizer(where, opt_arrays, _json(where, _OPTIMIZER_JSON, text))
    elif opt_arrays:
        raise CheckpointError(f"{where}: member {next(iter(opt_arrays)) + '.npy'!r} is optimiser state, but "
                              f"{_OPTIMIZER_JSON + '.npy'!r}, which describes it, is missing")
    else:
        optimizer = None
    return Checkpoint(everything, optimizer, meta)


def load(path):
    """What :func:`save` wrote, tensors as numpy arrays (``allow_pickle=False``): the named tensors, or
    the nested object (a dict of state_dicts and numbers, as torch.save's) given to it.

    >>> import os, tempfile
    >>> from axonml_autograd import nn, optim
    >>> model = nn.Linear(3, 2, seed=0)
    >>> opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3}, path)
    >>> ck = load(path)
    >>> ck["epoch"], sorted(ck["model"]), model.load_state_dict(ck["model"]).missing_keys
    (3, ['bias', 'weight'], [])
    """
    ck = read(path)
    tree = ck.metadata.get("tree")
    if tree is not None:
        return _tree(tree, ck.tensors, f"checkpoint {os.fspath(path)!r}")
    return ck.tensors


def _does_not_fit(arr: np.ndarray, dtype: np.dtype) -> Optional[str]:
    """Why ``arr``'s values cannot be copied into a tensor of ``dtype`` unchanged (None if they can)."""
    if dtype is bfloat16:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        if finite.size and np.abs(finite.astype(np.float64)).max() > BFLOAT16_MAX:
            return f"values beyond the range of {dtype}"
        return None
    if np.issubdtype(dtype, np.integer):
        if arr.dtype.kind == "f":
            return f"saved as {arr.dtype}, the variable is {dtype}"
        info = np.iinfo(dtype)
        if arr.size and arr.dtype.kind != "b" and (arr.min() < info.min or arr.max() > info.max):
            return f"values beyond the range of {dtype}"
    elif arr.dtype.kind == "f" and arr.dtype.itemsize > dtype.itemsize and arr.size:
        finite = arr[np.isfinite(arr)]
        if finite.size and np.abs(finite).max() > np.finfo(dtype).max:    # would silently become inf
            return f"values beyond the range of {dtype}"
    return None


def load_into(path, named_variables: Mapping, strict: bool = True, optimizer=None) -> Checkpoint:
    """Copy a checkpoint's tensors into existing Variables/Tensors in place (same device buffers).

    With ``strict``, names must match exactly; shapes must always match. On any problem one
    :class:`CheckpointMismatchError` lists the missing, unexpected and mismatched entries and nothing
    is written. ``optimizer``, if given, gets the saved optimiser state (checked first as well).
    Returns the whole :class:`Checkpoint` (for its metadata).
    """
    ckpt = read(path)     # the whole file is checked here: a damaged member raises before any write
    where = f"checkpoint {os.fspath(path)!r}"
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
    unfit = [f"{n} ({why})" for n, t in targets.items() if n in saved
             for why in [_does_not_fit(saved[n], t.dtype)] if why]
    if unfit:
        raise CheckpointError(f"{where}: entries do not fit their variables: {'; '.join(unfit)}. "
                              "Nothing was loaded.")
    if optimizer is not None and ckpt.optimizer is None:
        raise CheckpointError(f"{where} holds no optimiser state")
    # Upload everything before changing anything: a failure here leaves variables and optimiser as they were.
    sources = {name: Tensor.from_numpy(saved[name], dtype=t.dtype, device=t.device)
               for name, t in targets.items() if name in saved and t.numel()}
    if optimizer is not None:
        try:   # checks everything before it changes the optimiser, and before any variable is written
            optimizer.load_state_dict(ckpt.optimizer)
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{where}: the optimiser state does not fit: {e}. Nothing was loaded.") from e
    for name, src in sources.items():
        elementwise("a", [src], out=targets[name].view(), op="load_into")   # in place: references stay valid
    return ckpt
