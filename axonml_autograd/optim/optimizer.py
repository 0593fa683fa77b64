"""The optimiser base class: parameter groups, lazily created device state, the shared step
(check every gradient, then one fused kernel per parameter), ``zero_grad`` and state dicts.

The families live beside it (``sgd.py``, ``adam.py``, ``rmsprop.py``, ``adagrad.py``); each supplies
its options' checks, the state it needs, its kernel and that kernel's arguments.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import numpy as np

from .. import kernels, launch
from ..dtypes import compute_dtype
from ..elementwise_kernels import ew_launch_shape
from ..tensor import Tensor, check_index32
from . import device_state
from .device_state import StepCount

_TEMPLATE = "optim.cl.mako"


def _number(value, what, low=0.0, high=None, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}: expected a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:   # an int like 10**400
        raise ValueError(f"{what}: expected a finite number, got an int of {len(str(value))} digits") from None
    if not math.isfinite(value) or value < low or (high is not None and
                                                   (value >= high if high_open else value > high)):
        bracket = ")" if high_open else "]"
        rng = f"[{low}, {high}{bracket}" if high is not None else f">= {low}"
        raise ValueError(f"{what}: expected a finite number {rng}, got {value}")
    return value


_MAX_STEP = 2 ** 53


def _index(i):
    """A parameter index from a state dict (an int, or a decimal string as JSON keys are), else None."""
    if isinstance(i, str) and i.isascii() and i.isdigit() and len(i) < 20:
        return int(i)
    if isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0:
        return int(i)
    return None


def _option_problem(what: str, value, current):
    """Why a saved option cannot be loaded, before ``_check_group`` sees it (None if it can):
    a flag must be a bool (``bool("no")`` is True), and an int too large for a float would make
    ``float()`` raise OverflowError instead of a message naming the option."""
    if isinstance(current, (bool, np.bool_)) and not isinstance(value, (bool, np.bool_)):
        return f"{what}: expected True or False, got {_brief(value)}"
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)):
            try:
                float(v)
            except OverflowError:
                size = f"an integer of {int(v).bit_length()} bits" if isinstance(v, numbers.Integral) \
                    else f"a {type(v).__name__} beyond float range"
                return f"{what}: expected a finite number, got {size}"
    return None


def _finite(value) -> bool:
    """Whether ``value`` is a real number (not a bool) that converts to a finite float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _brief(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _optim_kernel(data: Tensor, name: str, momentum: bool = False, amsgrad: bool = False,
                  centered: bool = False, skip: bool = False, multi: int = 0):
    dev = data.device
    dtype = compute_dtype(data.dtype)   # 16-bit parameters: the float32 kernel on float32 copies (_launch)
    ctype = kernels.ctype(dtype)
    # CPUs: the update loop in vectors of the target's width, within 256 bits; GPUs: one element each.
    t = dev.target
    vector = 0 if t.is_gpu else min(t.vector_width(dtype), 32 // dtype.itemsize)
    vector = vector if vector >= 2 else 0
    extra = dict(multi=multi, op=name.split("_")[0]) if multi else {}
    return kernels.get_kernel(dev, _TEMPLATE, name + ("_multi" if multi else ""), ctype=ctype, momentum=momentum,
                              amsgrad=amsgrad, centered=centered, vector=vector, skip=skip, **extra)


# Parameters one launch of a multi-parameter update takes (torch's foreach): one program per variant,
# fewer parameters filling the spare slots with empty ranges.
MULTI = 8


class Optimizer:
    """Base class: parameter groups, lazily created device state, ``zero_grad`` and state dicts.

    ``params`` is a list of Variables, or a list of dicts ``{"params": [...], "lr": ..., ...}`` whose
    options override the optimiser's defaults for that group (PyTorch's parameter groups).
    Subclasses define ``defaults``, ``_check_group``, ``_needed_state``, ``_kernel``, ``_arguments``
    (the state buffers and the options baked into a launch, by the kernel's parameter names), and ``_rate_values`` when their kernel reads
    more than ``lr`` from the group's rate buffer.
    """

    _state_keys: tuple = ()    # device tensors kept per parameter, in kernel-argument order
    _multi_kernel = None       # the kernel name whose "_multi" form updates several parameters per launch
    _rate_keys: tuple = ("lr",)   # the group options that ``_rate_values`` reads
    _reads_steps = False       # whether the kernel reads the step count (bias corrections, decay)
    _found_inf = None          # during GradScaler.step: the device flag that makes the step a no-op

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self._failed = None     # why the last step failed half-way; step() refuses until a reload
        self.param_groups: list = []
        self.state: dict = {}   # Variable -> {"step": StepCount, name: Tensor}
        self._slots: dict = {}  # id(parameter) -> its slot in the step tables (its index in parameters())
        self._step_tables: dict = {}   # device -> int32 Tensor, two words per slot (device_state.py)
        if isinstance(params, (Tensor,)) or not isinstance(params, Iterable):
            raise TypeError(f"{type(self).__name__}: params must be a list of Variables or of dicts, "
                            f"got {type(params).__name__}")
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    # -- groups -------------------------------------------------------------------------------------
    def add_param_group(self, group: dict):
        from ..variable import Variable

        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}: a parameter group is a dict with a 'params' list, "
                            f"got {group!r}")
        params = group["params"]
        params = [params] if isinstance(params, Variable) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for k, p in enumerate(params):
            if not isinstance(p, Variable):
                raise TypeError(f"{type(self).__name__}: parameter {k} is a {type(p).__name__}, "
                                "expected a Variable")
            # A frozen parameter (requires_grad False) is accepted, as in torch: it has no gradient,
            # so step() leaves it alone until it is unfrozen.
            if not p.is_leaf():
                raise ValueError(f"{type(self).__name__}: parameter {k} (shape {p.shape()}) is not a leaf; "
                                 "optimise the Variables you created, not results of ops")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: parameter {k} (shape {p.shape()}) appears twice")
            seen.add(id(p))
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown option(s) {sorted(unknown)}; "
                            f"known: {sorted(self.defaults)}")
        full = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        full = self._check_group(full)
        full["params"] = params
        self.param_groups.append(device_state.make_group(self, full))
        for p in params:
            self._slots[id(p)] = len(self._slots)

    def _check_group(self, group: dict) -> dict:
        return group

    @property
    def lr(self) -> float:
        """The learning rate, when every parameter group has the same one.

        A shorthand for single-rate training (``opt.lr = schedule(epoch)``). Groups are PyTorch's
        ``param_groups``: edit ``opt.param_groups[k]["lr"]`` for one group, or use a scheduler from
        :mod:`axonml_autograd.optim.lr_scheduler`. When the groups' rates differ, reading or setting
        ``opt.lr`` raises instead of picking one group or flattening them all. Setting a rate never
        rebuilds a kernel: it is written into a small device buffer that the kernels read, eager steps
        and captured replays alike.

        >>> from axonml_autograd import Tensor, Variable
        >>> from axonml_autograd.optim import SGD
        >>> a, b = (Variable(Tensor.zeros([2]), requires_grad=True) for _ in range(2))
        >>> opt = SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
        >>> opt.lr = 0.05                      # every group had 0.1: one shared rate
        >>> opt.param_groups[1]["lr"] = 0.5    # now they differ
        >>> opt.lr = 0.01
        Traceback (most recent call last):
        ...
        ValueError: SGD.lr: the 2 parameter groups have different learning rates [0.05, 0.5]; set param_groups[k]['lr'] for the group you mean
        """
        return self._shared_lr()

    @lr.setter
    def lr(self, value):
        self._shared_lr()
        value = _number(value, f"{type(self).__name__}.lr")
        for g in self.param_groups:
            g["lr"] = value

    def _shared_lr(self) -> float:
        rates = [g["lr"] for g in self.param_groups]
        if any(r != rates[0] for r in rates):
            raise ValueError(f"{type(self).__name__}.lr: the {len(rates)} parameter groups have different "
                             f"learning rates {rates}; set param_groups[k]['lr'] for the group you mean")
        return rates[0]

    def parameters(self) -> list:
        return [p for g in self.param_groups for p in g["params"]]

    # -- stepping -----------------------------------------------------------------------------------
    def zero_grad(self):
        """Forget every parameter's gradient (the next backward starts from zero)."""
        for p in self.parameters():
            p.zero_grad()

    def step(self, closure=None):
        """One update of every parameter that has a gradient; parameters without one are skipped.

        ``closure`` (optional, as in PyTorch) re-evaluates the model and returns the loss; its result
        is returned. Nothing here reads from the device.
        """
        name = type(self).__name__
        if self._failed is not None:
            raise RuntimeError(f"{name}.step: the optimizer state is invalid after a failed step "
                               f"({self._failed}); reload a checkpoint (load_into(..., optimizer=...) or "
                               "load_state_dict) before stepping again")
        loss = None
        if closure is not None:
            from ..no_grad import enable_grad
            with enable_grad():
                loss = closure()
        # Check every parameter before launching anything: a bad gradient on the last parameter must
        # not leave the first ones updated.
        work = []
        for k, group in enumerate(self.param_groups):
            lr = group.get("lr")
            if not (_finite(lr) and lr >= 0):
                raise ValueError(f"{name}.step: param_groups[{k}]['lr'] must be a finite number >= 0, got {lr!r}")
            for p in group["params"]:
                grad = p._grad
                if grad is None:
                    continue
                data = p.data()
                if grad._shape != data._shape or grad.dtype != data.dtype or grad.device is not data.device:
                    raise ValueError(f"{name}.step: gradient ({grad.dtype} {grad.shape()}) does "
                                     f"not match its parameter ({data.dtype} {data.shape()})")
                check_index32(f"{name}.step", data)   # the update kernels index in 32 bits
                work.append((group, p, data, grad))
        done, current = 0, None
        cap = launch.active_capture()
        try:
            with launch.not_recording():   # set-up that a replay must not repeat (tables, rate buffers)
                rates = self._prepare(work)
            # Every count first, once per step, then the kernels that read them (device_state.py).
            by_device: dict = {}
            for _group, p, data, _grad in work:
                by_device.setdefault(data.device, []).append(self._slots[id(p)])
            skip = self._found_inf   # GradScaler.step: the device's found-inf flag, else None
            for device, slots in by_device.items():
                device_state.advance(device, self._step_tables[device], sorted(slots), found_inf=skip)
            # Parameters whose updates differ only in their tensors go out together (_launch_batch).
            batches, groups_by_id = {}, {id(g): g for g, *_rest in work}
            rates_by_id = {id(r): r for r in rates}
            for (group, p, data, grad), rate in zip(work, rates):
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {"step": StepCount(self, data.device, self._slots[id(p)])}
                if data.numel():
                    fresh = not all(k in state for k in self._needed_state(group))
                    if fresh and cap is not None:
                        cap.invalidate(f"{name}.step created optimiser state (a first step)")
                    args = self._arguments(group, data, state, fresh)
                    steps = self._reads_steps
                    if skip is not None:
                        # The kernel tells a first step from the count, which a skipped step leaves.
                        steps = args.pop("first_step", None) is not None or steps
                        args["found_inf"] = skip
                    if steps:
                        args.update(steps=self._step_tables[data.device], slot=self._slots[id(p)])
                    if self._multi_kernel is not None and data.dtype.itemsize != 2:
                        batches.setdefault(self._batch_key(group, data, rate, args), []).append((data, grad, args))
                        data._version += 1   # saved-for-backward copies of this tensor are now stale
                        continue
                    current = data
                    self._launch(group, data, p=data, grad=grad, rates=rate, **args)
                data._version += 1
                done += 1
            for (group_id, _dtype, _device, rate_id, _options), items in batches.items():
                for start in range(0, len(items), MULTI):
                    part = items[start:start + MULTI]
                    current = part[0][0]
                    self._launch_batch(groups_by_id[group_id], rates_by_id[rate_id], part)
                    done += len(part)
            if work:
                launch.flush(work[0][2].device)
        except BaseException as e:
            # Some parameters may already be updated and the rest not: neither the model nor the state
            # is a consistent snapshot any more, so refuse further steps rather than train on it.
            shape = (current if current is not None else work[min(done, len(work) - 1)][2]).shape()
            self._failed = (f"{type(e).__name__} while updating parameter {done} of {len(work)} "
                            f"(shape {shape}); {done} were already updated")
            raise RuntimeError(f"{name}.step failed: {self._failed}. The parameters and the optimizer "
                               "state are now inconsistent; reload a checkpoint") from e
        if cap is not None:
            self._guard_replays(cap, work)
        return loss

    def _prepare(self, work) -> list:
        """Step tables that hold every parameter's slot, and each work item's rate buffer, filled with
        the group's current values (a rate written around ``Group.__setitem__`` is caught up here)."""
        slots = len(self._slots)
        for device in {data.device for _g, _p, data, _gr in work}:
            table = self._step_tables.get(device)
            if table is None or table.numel() < 2 * slots:   # a new parameter group since: grow
                self._step_tables[device] = device_state.new_table(device, slots, old=table)
        rates = []
        for group, _p, data, _grad in work:
            values = self._rate_values(group)
            if group._written != values:
                self._write_rates(group)
            rates.append(device_state.rate_buffer(group, values, data.device, compute_dtype(data.dtype)))
        return rates

    def _rate_values(self, group) -> list:
        """What the kernels read from the group's rate buffer (``rates[k]``), computed in double."""
        return [float(group["lr"])]

    def _write_rates(self, group):
        """Write ``group``'s rate values into its device buffers (``Group`` calls this on a change)."""
        lr = group.get("lr")
        if not (_finite(lr) and lr >= 0) or not all(k in group for k in self._rate_keys):
            return   # step() refuses such a group, and a replay records again (the guard below)
        values = self._rate_values(group)
        if values == group._written and launch.active_capture() is None:
            return
        for buf in group._rates.values():
            device_state.fill_rates(buf, values)
        group.__dict__["_written"] = values

    def _guard_replays(self, cap, work):
        """When a replay of this step would differ from a call, make the capture record again.

        Nothing is patched: counts and rates are read on the device. What a replay cannot follow is
        a change of the buffers themselves (reloaded or grown state, a new table), of an option
        baked into the recorded arguments (anything but the rates), or a rate that did not reach its
        buffer (a group edited around ``Group.__setitem__``), and a failed step.
        """
        states = [(p, st, {k: st.get(k) for k in self._state_keys}) for _g, p, _d, _gr in work
                  for st in [self.state[p]]]
        tables = dict(self._step_tables)
        groups = list({id(g): g for g, *_rest in work}.values())
        options = [(g, self._variant(g), dict(g._rates)) for g in groups]

        def check():
            return (self._failed is None
                    and all(self._step_tables.get(d) is t for d, t in tables.items())
                    and all(self.state.get(p) is st and all(st.get(k) is t for k, t in tensors.items())
                            for p, st, tensors in states)
                    and all(self._variant(g) == v and _finite(g.get("lr")) and g["lr"] >= 0
                            and g._rates.keys() == r.keys() and all(g._rates[k] is t for k, t in r.items())
                            and g._written == self._rate_values(g) for g, v, r in options))

        cap.guard(check)

    def _state_tensor(self, state, name, like: Tensor) -> Tensor:
        t = state.get(name)
        if t is None:
            t = state[name] = Tensor.zeros(like._shape, like.dtype, like.device)
        return t

    def _variant(self, group) -> tuple:
        """What a recorded step baked in for ``group``: the state it uses and every option but ``lr``."""
        return self._needed_state(group) + tuple((k, group.get(k)) for k in self.defaults if k != "lr")

    def _needed_state(self, group) -> tuple:
        """The state tensors a step of ``group`` uses (missing ones are created: a first step)."""
        return ()

    def _arguments(self, group, data: Tensor, state: dict, fresh: bool) -> dict:
        """The kernel's state buffers (creating missing state) and its scalar options, by parameter name
        (``optim.cl.mako``; never the step or the rates, which the kernel reads from device buffers).
        The parameter, its gradient, the rates, the step table and the launch shape are added here."""
        raise NotImplementedError

    def _kernel(self, group, data: Tensor):
        raise NotImplementedError

    # Per-parameter arguments of the multi-parameter kernels: its tensors (p, grad, state) and these.
    _PER_PARAMETER = ("first_step", "slot")

    def _batch_key(self, group, data, rate, args) -> tuple:
        """What parameters must share to be updated by one launch: group, dtype, device, rate buffer and
        every option (the scalars and shared buffers: steps table, found-inf flag)."""
        options = tuple(sorted((k, v if not isinstance(v, Tensor) else id(v)) for k, v in args.items()
                               if k not in self._state_keys and k not in self._PER_PARAMETER))
        return id(group), data.dtype, data.device, id(rate), options

    def _launch_batch(self, group, rate, part):
        """The updates of ``part`` (up to ``MULTI`` (data, grad, args) sharing a batch key) in one launch (a
        lone parameter takes the single-parameter kernel): the same bits as one launch each."""
        if len(part) == 1:
            data, grad, args = part[0]
            self._launch(group, data, p=data, grad=grad, rates=rate, **args)
            return
        data0 = part[0][0]
        dev = data0.device
        named, total, local = {}, 0, 1
        for j in range(MULTI):
            # Spare slots repeat the first parameter over an empty range (items stay at the total).
            data, grad, args = part[j] if j < len(part) else (data0, part[0][1], part[0][2])
            n = data.numel() if j < len(part) else 0
            chunk, _global, local = ew_launch_shape(dev, max(n, 1))
            total += -(-n // chunk)
            named.update({f"p{j}": data, f"grad{j}": grad, f"n{j}": n, f"chunk{j}": chunk, f"items{j}": total})
            for k, v in args.items():
                if k in self._state_keys or k in self._PER_PARAMETER:
                    named[f"{k}{j}"] = v
        named.update({k: v for k, v in part[0][2].items()
                      if k not in self._state_keys and k not in self._PER_PARAMETER})
        knl = self._kernel(group, data0, multi=MULTI)
        kernels.launch(dev, knl, (kernels.round_up(total, local),), (local,), rates=rate, **named)

    def _launch(self, group, data: Tensor, **args):
        # The elementwise launch shape: on CPUs each work-item walks a long contiguous run with
        # vector loads (the template's vector loop), on GPUs one element per work-item.
        dev = data.device
        n = data.numel()
        chunk, global_size, local_size = ew_launch_shape(dev, n)
        # A 16-bit parameter and its state (kept in its dtype, as torch's): float32 working copies, the
        # float32 update, then the parameter and the state rounded once each (the gradient is only read).
        _, args, originals = kernels.float32_working_copies(data.dtype, args)
        knl = self._kernel(group, data)
        kernels.launch(dev, knl, (global_size,), (local_size,), n=n, chunk=chunk, **args)
        kernels.write_back(knl, args, originals)

    # -- state dicts --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"state": {index: {"step": int, name: ndarray}}, "param_groups": [...]}`` like PyTorch.

        Parameters are numbered in group order. Reads the device (fine outside a training step).
        """
        index = {id(p): i for i, p in enumerate(self.parameters())}
        counts = {device: device_state.read_counts(t) for device, t in self._step_tables.items()}
        state = {}
        for p, st in self.state.items():
            entry = {}
            for k, v in st.items():
                entry[k] = v.numpy() if isinstance(v, Tensor) else \
                    int(counts[v._device][v._slot]) if isinstance(v, StepCount) else v
            state[index[id(p)]] = entry
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"},
                           "params": list(range(start, start + n))})
            start += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict):
        """Restore hyper-parameters and state saved by :meth:`state_dict`.

        Everything is checked before anything changes: the structure (dicts and lists where
        :meth:`state_dict` puts them), group count and sizes, parameter indices, options, steps,
        state names, dtypes and shapes. One ValueError lists every problem found.
        """
        name = type(self).__name__
        where = f"{name}.load_state_dict"
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{where}: expected a dict with 'state' and 'param_groups'")
        groups, saved_state = state_dict["param_groups"], state_dict["state"]
        # The structure first, so that every check below may index and iterate without surprises.
        if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
            raise ValueError(f"{where}: 'param_groups' must be a list of dicts, got {_brief(groups)}")
        if not isinstance(saved_state, dict) or not all(isinstance(e, dict) for e in saved_state.values()):
            raise ValueError(f"{where}: 'state' must be a dict of parameter index -> dict, got "
                             f"{_brief(saved_state)}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{where}: the state has {len(groups)} parameter group(s), "
                             f"this optimiser has {len(self.param_groups)}")
        problems, indices = [], []
        for k, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            ids = saved.get("params", [])
            if not isinstance(ids, (list, tuple)) or not all(_index(i) is not None for i in ids):
                problems.append(f"group {k}: 'params' must be a list of parameter indices, got {_brief(ids)}")
            elif len(ids) != len(mine["params"]):
                problems.append(f"group {k}: {len(ids)} parameters saved, {len(mine['params'])} here")
            else:
                indices.extend(_index(i) for i in ids)
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        seen = set()
        twice = sorted({i for i in indices if i in seen or seen.add(i)})
        if twice:
            raise ValueError(f"{where}: parameter index(es) {twice} are listed in more than one place")
        to_param = dict(zip(indices, self.parameters()))
        new_groups = []
        for k, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            options = {key: saved[key] for key in self.defaults if key in saved}
            bad = [f"group {k}: {why}" for key, value in options.items()
                   for why in [_option_problem(f"{name} {key}", value, mine[key])] if why]
            if bad:
                problems.extend(bad)
                continue
            try:
                checked = self._check_group({**{k2: v for k2, v in mine.items() if k2 != "params"}, **options})
            except (TypeError, ValueError) as e:
                problems.append(f"group {k}: {e}")
                continue
            # What a scheduler keeps in a group besides the options (initial_lr, OneCycleLR's max_lr...)
            # comes back too, as PyTorch restores every group entry; only plain finite numbers.
            for key, value in saved.items():
                if key not in self.defaults and key != "params" and _finite(value):
                    checked[key] = float(value)
            new_groups.append(checked)
        new_state = {}
        allowed = {"step", *self._state_keys}
        for i, entry in saved_state.items():
            p = to_param.get(_index(i))
            if p is None:
                problems.append(f"state for parameter {i!r}, which no group lists")
                continue
            if p in new_state:
                problems.append(f"parameter {i}: state given twice")
                continue
            extra = set(entry) - allowed
            if extra:
                problems.append(f"parameter {i}: unknown state {sorted(map(str, extra))} for {name} "
                                f"(expected {sorted(allowed)})")
                continue
            st = {}
            step = entry.get("step", 0)
            if isinstance(step, (np.ndarray, np.generic)) and step.shape == ():
                step = step.item()
            # Bounded so that beta ** step stays a float and the count stays exact in one.
            if isinstance(step, bool) or not isinstance(step, (numbers.Integral, float)) \
                    or not (0 <= step <= _MAX_STEP) or int(step) != step:
                problems.append(f"parameter {i}: step must be an integer in [0, 2**53], got {_brief(step)}")
                continue
            st["step"] = int(step)
            for key in self._state_keys:
                if key not in entry:
                    continue
                try:
                    arr = np.asarray(entry[key])
                except (ValueError, TypeError) as e:     # e.g. a ragged list
                    problems.append(f"parameter {i}: {key} is not an array ({e})")
                    continue
                if arr.dtype.kind not in "fiu":
                    problems.append(f"parameter {i}: {key} holds {arr.dtype}, expected numbers")
                    continue
                if list(arr.shape) != p.shape():
                    problems.append(f"parameter {i}: {key} has shape {list(arr.shape)}, the parameter "
                                    f"has shape {p.shape()}")
                    continue
                st[key] = arr
            new_state[p] = st
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        # Checked: only now upload, then swap in (an upload that fails leaves the old state in place).
        counts: dict = {}
        for p, st in new_state.items():
            data = p.data()
            for key in self._state_keys:
                if key in st:
                    st[key] = Tensor.from_numpy(st[key], dtype=data.dtype, device=data.device)
            counts.setdefault(data.device, {})[self._slots[id(p)]] = st["step"]
            st["step"] = StepCount(self, data.device, self._slots[id(p)])
        devices = set(self._step_tables) | set(counts)
        self._step_tables = {device: device_state.new_table(device, len(self._slots), counts=counts.get(device, {}))
                             for device in devices}
        for mine, checked in zip(self.param_groups, new_groups):
            params = mine["params"]
            mine.clear()
            mine.update(checked)
            mine["params"] = params
        self.state = new_state
        self._failed = None

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for k, g in enumerate(self.param_groups):
            opts = ", ".join(f"{key}={g[key]}" for key in self.defaults)
            lines.append(f"  group {k}: {len(g['params'])} params, {opts}")
        return "\n".join(lines + [")"])
