"""Learning-rate schedules with PyTorch's formulas (``torch.optim.lr_scheduler``).

A scheduler owns nothing on the device: it rewrites ``optimizer.param_groups[k]["lr"]``, which every
optimiser passes to its kernel as an argument, so a new rate never rebuilds a kernel and a captured
step (``axonml_autograd.capture``) picks it up at its next replay.

The protocol is PyTorch's: making a scheduler stores each group's starting rate as
``group["initial_lr"]`` (the ``base_lrs``) and applies the rate of epoch 0; each :meth:`step` (after
``optimizer.step()``) advances ``last_epoch`` by one and sets the next rates; :meth:`get_last_lr`
returns the rates it set last; :meth:`state_dict`/:meth:`load_state_dict` save and restore the
counters. Rates are computed the way PyTorch computes them (most recursively, from the current rate),
so a schedule follows PyTorch's sequence to the last bits, including after a user edits a group's rate.

>>> from axonml_autograd import Tensor, Variable
>>> from axonml_autograd.optim import SGD
>>> w = Variable(Tensor.zeros([3]), requires_grad=True)
>>> opt = SGD([w], lr=0.1)
>>> sched = StepLR(opt, step_size=2, gamma=0.5)
>>> rates = []
>>> for epoch in range(5):
...     rates.append(sched.get_last_lr()[0])
...     opt.step()                     # (no gradient here: nothing to update)
...     sched.step()
>>> rates
[0.1, 0.1, 0.05, 0.05, 0.025]
"""

from __future__ import annotations

import math
import numbers
import types
from bisect import bisect_right
from collections import Counter

from .optimizer import Optimizer

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR",
           "OneCycleLR", "SequentialLR", "ReduceLROnPlateau"]


# -- argument checks (errors name the scheduler and the argument) ---------------------------------------

def _int(value, what, low=None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what}: expected an int, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{what}: expected an int >= {low}, got {value}")
    return value


def _real(value, what, low=None, high=None, low_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}: expected a number, got {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"<= {high}"
        raise ValueError(f"{what}: expected a finite number {' and '.join(x for x in (lo, hi) if x)}, got {value}")
    return value


def _optimizer(optimizer, who) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{who}: expected an Optimizer, got {type(optimizer).__name__}")
    return optimizer


def _per_group(value, what, optimizer, check) -> list:
    """A value for every parameter group: one value for all, or a list with one per group."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what}: expected {n} values (one per parameter group), got {len(value)}")
        return [check(v, f"{what}[{k}]") for k, v in enumerate(value)]
    return [check(value, what)] * n


class LRScheduler:
    """Base class: ``base_lrs``, ``last_epoch``, :meth:`step`, :meth:`get_last_lr` and state dicts.

    Subclasses define :meth:`get_lr` (the rates for ``last_epoch``, usually from the current ones)
    and, where a closed form exists, ``_get_closed_form_lr`` (used when SequentialLR restarts one).
    ``last_epoch=-1`` starts afresh; another value resumes, which needs ``initial_lr`` in every group
    (as a reloaded optimiser state has it).

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=1.0)
    >>> sched = ExponentialLR(opt, gamma=0.5)
    >>> sched.step()
    >>> saved = sched.state_dict()                 # counters and base rates, not the optimiser
    >>> sched.step(); sched.step()
    >>> sched.load_state_dict(saved)
    >>> sched.last_epoch, sched.get_last_lr(), opt.param_groups[0]["initial_lr"]
    (1, [0.5], 1.0)
    """

    def __init__(self, optimizer, last_epoch: int = -1):
        who = type(self).__name__
        self.optimizer = _optimizer(optimizer, who)
        last_epoch = _int(last_epoch, f"{who} last_epoch", -1)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for k, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise ValueError(f"{who}: resuming at last_epoch={last_epoch} needs param_groups[{k}]"
                                     "['initial_lr'] (load the optimiser's state first, or use last_epoch=-1)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        """Apply the rates of the first epoch (PyTorch's initial step)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list:
        """The rates for ``last_epoch`` (called by :meth:`step`; read :meth:`get_last_lr` instead)."""
        raise NotImplementedError

    def get_last_lr(self) -> list:
        """The learning rate of every parameter group, as this scheduler last set them."""
        return list(self._last_lr)

    def step(self):
        """Advance one epoch (or one batch, for per-batch schedules) and set the groups' rates.

        Call it after ``optimizer.step()``. It only writes numbers into ``param_groups``: no device
        work, no kernel build.
        """
        self._step_count += 1
        self._update_lr()

    def _update_lr(self, epoch=None):
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _current(self) -> list:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Everything but the optimiser (counters, base rates, options), as PyTorch saves it."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict):
        """Restore what :meth:`state_dict` returned (the optimiser's own state is loaded separately)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"{type(self).__name__}.load_state_dict: expected a dict, got "
                            f"{type(state_dict).__name__}")
        self.__dict__.update(state_dict)

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, last_lr={self._last_lr})"


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``; ``lr_lambda`` is one function or one per group.

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=1.0)
    >>> sched = LambdaLR(opt, lambda epoch: 1.0 / (epoch + 1))
    >>> sched.step(); sched.step()
    >>> sched.get_last_lr()
    [0.3333333333333333]
    """

    def __init__(self, optimizer, lr_lambda, last_epoch: int = -1):
        optimizer = _optimizer(optimizer, "LambdaLR")
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"LambdaLR: expected {n} lr_lambdas (one per parameter group), got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        for k, fn in enumerate(self.lr_lambdas):
            if not callable(fn):
                raise TypeError(f"LambdaLR: lr_lambda {k} is a {type(fn).__name__}, expected a callable")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self):
        # Functions are not saved (as in PyTorch); a callable object's attributes are.
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType) else dict(fn.__dict__)
                               for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        lambdas = state.pop("lr_lambdas", [None] * len(self.lr_lambdas))
        super().load_state_dict(state)
        for fn, saved in zip(self.lr_lambdas, lambdas):
            if saved is not None:
                fn.__dict__.update(saved)


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs: ``base_lr * gamma ** (epoch // step_size)``.

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=1.0)
    >>> sched = StepLR(opt, step_size=3, gamma=0.1)
    >>> for _ in range(3): sched.step()
    >>> sched.get_last_lr()
    [0.1]
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size = _int(step_size, "StepLR step_size", 1)
        self.gamma = _real(gamma, "StepLR gamma", 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current()
        return [lr * self.gamma for lr in self._current()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the rate by ``gamma`` at each epoch in ``milestones`` (a milestone listed twice counts twice).

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=1.0)
    >>> sched = MultiStepLR(opt, milestones=[1, 3], gamma=0.5)
    >>> [sched.get_last_lr()[0] for _ in range(4) if sched.step() is None]
    [0.5, 0.5, 0.25, 0.25]
    """

    def __init__(self, optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1):
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"MultiStepLR milestones: expected a list of ints, got {milestones!r}")
        self.milestones = Counter(_int(m, "MultiStepLR milestone", 0) for m in milestones)
        self.gamma = _real(gamma, "MultiStepLR gamma", 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._current()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._current()]

    def _get_closed_form_lr(self):
        passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base * self.gamma ** passed for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every epoch: ``base_lr * gamma ** epoch``.

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=1.0)
    >>> sched = ExponentialLR(opt, gamma=0.5)
    >>> sched.step(); sched.step()
    >>> sched.get_last_lr()
    [0.25]
    """

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = _real(gamma, "ExponentialLR gamma", 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current()
        return [lr * self.gamma for lr in self._current()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs (SGDR without restarts):
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``. Past ``T_max`` the rate
    climbs back, as PyTorch's does.

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=1.0)
    >>> sched = CosineAnnealingLR(opt, T_max=4)
    >>> [round(sched.get_last_lr()[0], 6) for _ in range(5) if sched.step() is None]
    [0.853553, 0.5, 0.146447, 0.0, 0.146447]
    """

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        self.T_max = _int(T_max, "CosineAnnealingLR T_max", 1)
        self.eta_min = _real(eta_min, "CosineAnnealingLR eta_min", 0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current()
        if self._step_count == 1 and e > 0:     # resumed: start from the closed form
            return [lo + (base - lo) * (1 + math.cos(e * math.pi / T)) / 2 for base in self.base_lrs]
        if (e - 1 - T) % (2 * T) == 0:          # the bottom of a cycle: the ratio below would be 0/0
            return [lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2
                    for base, lr in zip(self.base_lrs, self._current())]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - lo) + lo
                for lr in self._current()]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the rate linearly from ``start_factor * base_lr`` to ``end_factor * base_lr`` over
    ``total_iters`` epochs, then hold it (the usual warm-up).

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=1.0)
    >>> sched = LinearLR(opt, start_factor=0.25, total_iters=3)
    >>> rates = [sched.get_last_lr()[0]] + [sched.get_last_lr()[0] for _ in range(4) if sched.step() is None]
    >>> [round(r, 6) for r in rates]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def __init__(self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5,
                 last_epoch: int = -1):
        self.start_factor = _real(start_factor, "LinearLR start_factor", 0.0, 1.0, low_open=True)
        self.end_factor = _real(end_factor, "LinearLR end_factor", 0.0, 1.0)
        self.total_iters = _int(total_iters, "LinearLR total_iters", 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, a, b, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        if e == 0:
            return [lr * a for lr in self._current()]
        if self._is_initial or e > n:
            return self._current()
        return [lr * (1.0 + (b - a) / (n * a + (e - 1) * (b - a))) for lr in self._current()]

    def _get_closed_form_lr(self):
        a, b, n = self.start_factor, self.end_factor, self.total_iters
        return [base * (a + (b - a) * min(n, self.last_epoch) / n) for base in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at the epochs in ``milestones`` (one fewer
    than schedulers); each restarts from its epoch 0 when its turn comes. Warm-up then cosine decay:

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=1.0)
    >>> warm = LinearLR(opt, start_factor=0.5, total_iters=2)
    >>> decay = CosineAnnealingLR(opt, T_max=2)
    >>> sched = SequentialLR(opt, [warm, decay], milestones=[2])
    >>> rates = [sched.get_last_lr()[0]] + [sched.get_last_lr()[0] for _ in range(4) if sched.step() is None]
    >>> [round(r, 6) for r in rates]
    [0.5, 0.75, 1.0, 0.5, 0.0]
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch: int = -1):
        optimizer = _optimizer(optimizer, "SequentialLR")
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError("SequentialLR: expected at least one scheduler, got none")
        for k, s in enumerate(schedulers):
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError(f"SequentialLR: scheduler {k} is a ReduceLROnPlateau, whose step needs a metric")
            if not isinstance(s, LRScheduler):
                raise TypeError(f"SequentialLR: scheduler {k} is a {type(s).__name__}, expected an LRScheduler")
            if s.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {k} ({type(s).__name__}) drives another optimizer")
        milestones = [_int(m, "SequentialLR milestone", 0) for m in milestones]
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: expected {len(schedulers) - 1} milestone(s) for {len(schedulers)} "
                             f"schedulers, got {len(milestones)}")
        if milestones != sorted(milestones):
            raise ValueError(f"SequentialLR: milestones must be increasing, got {milestones}")
        self.optimizer = optimizer
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = _int(last_epoch, "SequentialLR last_epoch", -1) + 1
        # Each scheduler made its own initial step when it was created; undo them and start the
        # first one afresh from the base rates.
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self._undo(self)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def _undo(self, sched):
        if hasattr(sched, "_schedulers"):
            for s in sched._schedulers:
                self._undo(s)
        else:
            sched.last_epoch -= 1

    def step(self):
        self.last_epoch += 1
        k = bisect_right(self._milestones, self.last_epoch)
        sched = self._schedulers[k]
        if k > 0 and self._milestones[k - 1] == self.last_epoch:
            sched._update_lr(0)    # this scheduler's turn starts: its epoch 0, from its closed form
        else:
            sched.step()
        self._last_lr = sched.get_last_lr()

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        saved = state.pop("_schedulers", [])
        if len(saved) != len(self._schedulers):
            raise ValueError(f"SequentialLR.load_state_dict: {len(saved)} scheduler state(s) saved, "
                             f"{len(self._schedulers)} schedulers here")
        super().load_state_dict(state)
        for s, st in zip(self._schedulers, saved):
            s.load_state_dict(st)


class OneCycleLR(LRScheduler):
    """The 1cycle policy, stepped once per batch: from ``max_lr / div_factor`` up to ``max_lr`` over
    ``pct_start`` of ``total_steps`` (or ``epochs * steps_per_epoch``), then down to
    ``initial_lr / final_div_factor``, annealing by cosine or linearly. With ``cycle_momentum`` the
    optimiser's ``momentum`` (or Adam's beta1) moves the other way, between ``max_momentum`` and
    ``base_momentum``. ``three_phase=True`` comes back to the initial rate before the final descent.
    Stepping past ``total_steps`` raises ValueError.

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=0.0, momentum=0.9)
    >>> sched = OneCycleLR(opt, max_lr=1.0, total_steps=5, pct_start=0.4, anneal_strategy="linear")
    >>> rates = [sched.get_last_lr()[0]] + [sched.get_last_lr()[0] for _ in range(4) if sched.step() is None]
    >>> [round(r, 6) for r in rates]
    [0.04, 1.0, 0.666668, 0.333336, 4e-06]
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        optimizer = _optimizer(optimizer, "OneCycleLR")
        self.optimizer = optimizer
        if total_steps is not None:
            self.total_steps = _int(total_steps, "OneCycleLR total_steps", 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = _int(epochs, "OneCycleLR epochs", 1) * _int(steps_per_epoch,
                                                                          "OneCycleLR steps_per_epoch", 1)
        else:
            raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
        pct_start = _real(pct_start, "OneCycleLR pct_start", 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR anneal_strategy: expected 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        div_factor = _real(div_factor, "OneCycleLR div_factor", 0.0, low_open=True)
        final_div_factor = _real(final_div_factor, "OneCycleLR final_div_factor", 0.0, low_open=True)
        up = float(pct_start * self.total_steps) - 1
        if three_phase:
            self._phases = [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                            (float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr",
                             "base_momentum", "max_momentum"),
                            (self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self._phases = [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                            (self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        max_lrs = _per_group(max_lr, "OneCycleLR max_lr", optimizer, lambda v, w: _real(v, w, 0.0))
        last_epoch = _int(last_epoch, "OneCycleLR last_epoch", -1)
        if last_epoch == -1:
            for group, top in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"OneCycleLR: cycle_momentum needs an optimizer with momentum or betas; "
                                 f"{type(optimizer).__name__} has neither (pass cycle_momentum=False)")
            self.use_beta1 = "betas" in optimizer.defaults
            tops = _per_group(max_momentum, "OneCycleLR max_momentum", optimizer, lambda v, w: _real(v, w, 0.0))
            bottoms = _per_group(base_momentum, "OneCycleLR base_momentum", optimizer, lambda v, w: _real(v, w, 0.0))
            if last_epoch == -1:
                for group, top, bottom in zip(optimizer.param_groups, tops, bottoms):
                    self._set_momentum(group, top)
                    group["max_momentum"] = top
                    group["base_momentum"] = bottom
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group, value):
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times; the cycle has total_steps={self.total_steps}")
        rates = []
        for group in self.optimizer.param_groups:
            start = 0.0
            for k, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
                if step <= end or k == len(self._phases) - 1:
                    pct = (step - start) / (end - start)
                    rates.append(self._anneal(group[lr0], group[lr1], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(group[m0], group[m1], pct))
                    break
                start = end
        return rates


class ReduceLROnPlateau(LRScheduler):
    """Multiply the rate by ``factor`` once a metric has stopped improving for ``patience`` epochs.

    ``step(metric)`` takes the epoch's metric (``mode="min"``: lower is better, e.g. a validation
    loss; ``"max"``: higher is better). An improvement is beyond ``threshold`` (relative or absolute,
    ``threshold_mode``); after a reduction, ``cooldown`` epochs pass before bad epochs count again;
    no rate goes below ``min_lr`` (one value or one per group) and changes smaller than ``eps`` are
    skipped. The formulas are PyTorch's.

    The metric may be a number or a one-element device Tensor/Variable (a loss): reading it is this
    scheduler's one host read, which waits for the device. That is by design: whether to cut the
    rate is a host decision. Call ``step`` once per epoch, outside any captured function.

    >>> from axonml_autograd import Tensor, Variable
    >>> from axonml_autograd.optim import SGD
    >>> opt = SGD([Variable(Tensor.zeros([1]), requires_grad=True)], lr=1.0)
    >>> sched = ReduceLROnPlateau(opt, factor=0.5, patience=1)
    >>> for loss in [1.0, 0.9, 0.95, 0.95]:      # two epochs without improvement: halve
    ...     sched.step(Tensor.scalar(loss))
    >>> sched.get_last_lr()
    [0.5]
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        self.optimizer = optimizer = _optimizer(optimizer, "ReduceLROnPlateau")
        self.factor = _real(factor, "ReduceLROnPlateau factor", 0.0)
        if self.factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau factor: expected a number below 1, got {self.factor}")
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group(min_lr, "ReduceLROnPlateau min_lr", optimizer, lambda v, w: _real(v, w, 0.0))
        else:
            self.default_min_lr = _real(min_lr, "ReduceLROnPlateau min_lr", 0.0)
            self.min_lrs = [self.default_min_lr] * len(optimizer.param_groups)
        self.patience = _int(patience, "ReduceLROnPlateau patience", 0)
        self.cooldown = _int(cooldown, "ReduceLROnPlateau cooldown", 0)
        self.eps = _real(eps, "ReduceLROnPlateau eps", 0.0)
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau mode: expected 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau threshold_mode: expected 'rel' or 'abs', got {threshold_mode!r}")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.threshold = _real(threshold, "ReduceLROnPlateau threshold", 0.0)
        self.last_epoch = 0
        self._last_lr = self._current()
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a, best) -> bool:
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metrics):
        """Count one epoch with ``metrics`` (a number, or a one-element Tensor/Variable: one host read)."""
        current = _metric(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current()

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"ReduceLROnPlateau: the optimizer has {len(groups)} parameter groups, "
                                   f"min_lr lists {len(self.min_lrs)}; update min_lrs")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, low in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, low)
            if old - new > self.eps:
                group["lr"] = new


def _metric(value) -> float:
    """A metric as a float: the one host read of ReduceLROnPlateau when it is a device tensor."""
    from ..tensor import Tensor
    from ..variable import Variable
    if isinstance(value, Variable):
        value = value.data()
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"ReduceLROnPlateau.step: the metric must have one element, got shape {value.shape()}")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"ReduceLROnPlateau.step: expected a number or a one-element Tensor, got {value!r}")
    return float(value)
