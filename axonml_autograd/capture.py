"""Whole-step capture and replay: run a function once, then repeat its device work with no Python.

::

    from axonml_autograd import capture

    def train_step(x, y):
        opt.zero_grad()
        loss = model(x).cross_entropy(y)
        loss.backward()
        opt.step()
        return loss

    step = capture(train_step)
    for xb, yb in batches:
        loss = step(xb, yb)          # Tensors or Variables (no grad) of fixed shapes and dtypes

The first call with an argument signature (each argument's kind, shape, dtype and device, the
values of non-tensor arguments, and grad mode) runs ``fn`` eagerly and records every command it
enqueues (``launch.py`` is the one path they all take). Later calls with that signature copy the
arguments' data into the buffers the recording read them from, and enqueue the recorded commands
again: no op glue, no graph, no backward engine, and every launch back to back.

What a replay repeats besides the device work, so that it is indistinguishable from a call:

* nothing of the optimisers' or the random generator's per-step values: the step counts, the
  learning rates and the generator's position live in device buffers that the recorded kernels read
  and advance themselves (``optim/device_state.py``, ``random.py``), and a host write of a rate
  (``opt.lr = x`` between calls) is a fill on the same stream, so it reaches the next replay;
* the version bumps of in-place writes, so a graph made outside the capture still refuses to
  backward through a parameter that a replayed step changed;
* each parameter's ``.grad()`` as the recorded call left it.

When a replay could differ from a call, it records again instead; when it can't know, it raises:

* a new signature records anew (up to ``max_signatures`` recordings are kept);
* the modules that ran (each one called during the recording) guard it, as ``torch.compile``'s
  guards do: their training flags, hooks, which parameters and buffers they hold, each parameter's
  ``requires_grad`` and the plain Python values of their attributes (``dropout.p``, a momentum),
  as the recording left them. A change records a variant; changing back replays the first one. The
  comparison runs only after something could have changed it (an attribute set on a module, a hook
  or buffer added or removed, a ``requires_grad`` changed: ``launch.module_state_epoch``), so a
  steady training loop pays one integer compare; a list attribute mutated in place goes unseen;
* a parameter whose data was replaced (a new Variable or Tensor), a gradient that is not the one the
  recording started from (when ``fn`` accumulates without zero_grad), optimiser state that was
  reloaded or created during the recording (a first step), an optimiser option other than a rate
  that changed: the next call records again (a guard, :meth:`_Recording.guard`);
* a host read inside ``fn`` (``to_vec``, ``numpy``, ``item``, ``print``), an upload (``from_numpy``,
  a list of class indices), anomaly mode, or a capture inside a capture raise :class:`CaptureError`.

What a capture cannot see: Python control flow that depends on values (an ``if`` on a number
computed in ``fn``, a Python counter incremented by ``fn``) runs only when recording; a replay
repeats the branch that was taken then. Pass such values as arguments (a new value is a new
signature) or keep them outside ``fn``.

Results: each call returns its own tensors. What the recording owns is copied on the device into a
fresh buffer (no host read), so ``losses.append(step(x, y))`` keeps five different losses; a Variable
comes back as a constant, since the graph that made it is not replayed. The recording owns its
intermediate buffers until the captured function is dropped (or :meth:`Captured.reset` is called):
they are not shared with the rest of the program.

>>> from axonml_autograd import Tensor, Variable, capture
>>> w = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
>>> def step(x):
...     w.zero_grad()
...     loss = (w * x).sum()
...     loss.backward()
...     return loss
>>> f = capture(step)
>>> f(Tensor.from_vec([3.0, 4.0], [2])).item()            # records
11.0
>>> f(Tensor.from_vec([1.0, 1.0], [2])).item(), f.replays  # replays
(3.0, 1)
>>> w.grad().to_vec()
[1.0, 1.0]
"""

from __future__ import annotations

import numbers
import threading
import weakref
from collections import OrderedDict

from . import fusion, launch
from .launch import COPY, CaptureError
from .tensor import Tensor
from .variable import Variable

__all__ = ["capture", "Captured", "CaptureError", "paused"]


def capture(fn, max_signatures: int = 8) -> "Captured":
    """Wrap ``fn`` so that repeated calls replay its recorded device work (see the module's doc)."""
    if not callable(fn):
        raise TypeError(f"capture: expected a callable, got {type(fn).__name__}")
    return Captured(fn, max_signatures)


paused = launch.not_recording   # inside a recording: enqueue without recording (e.g. tuning)


class Captured:
    """A function whose calls replay recorded device work; see :func:`capture`."""

    def __init__(self, fn, max_signatures=8):
        self.fn = fn
        self.max_signatures = int(max_signatures)
        self._recordings: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        # Dropping the captured function gives the recordings' buffers back to the device pools.
        weakref.finalize(self, _close_all, self._recordings)
        self.recordings = 0   # how many times fn ran and was recorded
        self.replays = 0      # how many calls were replays

    def __call__(self, *args):
        from .no_grad import is_grad_enabled
        key = (_signature(args), is_grad_enabled())
        with self._lock:
            variants = self._recordings.get(key)
            if variants is not None:
                self._recordings.move_to_end(key)
                variants = list(variants)
        for rec in variants or ():
            verdict = rec.replay(args)
            if verdict is True:
                self.replays += 1
                return rec.fresh_output()
            if verdict is _STALE:   # a parameter or its gradient was replaced: never valid again
                with self._lock:
                    self._drop(key, rec)
        rec = _Recording()
        try:
            rec.run(self.fn, args)
        except BaseException:
            rec.close()   # its buffers go back to the device pool, whatever fn raised
            raise
        self.recordings += 1
        output = rec.fresh_output()
        with self._lock:
            if rec.invalid is None:
                # Another variant of this signature (modules in another mode, other attribute values).
                self._recordings.setdefault(key, []).append(rec)
                self._recordings.move_to_end(key)
                while sum(map(len, self._recordings.values())) > self.max_signatures:
                    oldest_key = next(iter(self._recordings))
                    self._drop(oldest_key, self._recordings[oldest_key][0])
            else:
                rec.close()
        return output

    def _kept(self) -> list:
        """Every recording kept, over all signatures and their variants."""
        return [rec for variants in self._recordings.values() for rec in variants]

    def _drop(self, key, rec):
        variants = self._recordings.get(key, [])
        if rec in variants:
            variants.remove(rec)
            rec.close()
        if not variants:
            self._recordings.pop(key, None)

    def reset(self):
        """Forget every recording (their buffers go back to the device pools once results are dropped)."""
        with self._lock:
            _close_all(self._recordings)

    def __repr__(self):
        return (f"capture({getattr(self.fn, '__name__', self.fn)!r}: "
                f"{sum(map(len, self._recordings.values()))} recording(s) kept, "
                f"{self.recordings} recording(s), {self.replays} replay(s))")


def _close_all(recordings):
    for variants in recordings.values():
        for rec in variants:
            rec.close()
    recordings.clear()


_STALE = "stale"   # Recording.replay's answer when the recording can never match again


def _module_state(m) -> tuple:
    """What a replay of ``m``'s recorded forward depends on besides device data: its training flag,
    its hooks, which parameters and buffers it holds and whether each requires grad, and the plain
    Python values of its attributes (``Dropout.p``, ``BatchNorm.momentum``, an ``eps``)."""
    d = m.__dict__
    state = [m.training]
    for k, v in d.items():
        if isinstance(v, Variable):
            state.append((k, id(v), v._requires_grad))
        elif v is None or isinstance(v, (numbers.Number, str, bytes)):
            state.append((k, v))
        elif isinstance(v, (tuple, list)):
            state.append((k, tuple((id(x), x._requires_grad) if isinstance(x, Variable) else
                                   x if x is None or isinstance(x, (numbers.Number, str)) else id(x) for x in v)))
        elif isinstance(v, dict) and k in ("_buffers", "_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
            state.append((k, tuple((name, id(x)) for name, x in v.items())))
    return tuple(state)


def _signature(args) -> tuple:
    from .tensor import Tensor
    from .variable import Variable
    sig = []
    for k, a in enumerate(args):
        if isinstance(a, Variable):
            if a._requires_grad:
                raise TypeError(f"capture: argument {k} requires grad; arguments are data copied in at each "
                                "call. Use the Variable inside the function (a parameter) instead")
            t = a._data
            sig.append(("V", t._shape, t.dtype.num, t.device))
        elif isinstance(a, Tensor):
            sig.append(("T", a._shape, a.dtype.num, a.device))
        elif a is None or isinstance(a, (numbers.Number, str, bytes)):
            sig.append(("=", type(a), a))   # a plain value: a new value is a new signature
        else:
            raise TypeError(f"capture: argument {k} is a {type(a).__name__}; pass Tensors, Variables or plain "
                            "numbers and strings (anything else belongs inside the function)")
    return tuple(sig)


class _Pool:
    """A recording's own buffers: taken from the device pool during recording, reused only by it."""

    def __init__(self, device, recording):
        self.device = device
        # The owner's id, not the owner: no reference cycle, so a dropped recording's buffers come
        # back at once rather than at the next garbage collection.
        self.owner = id(recording)
        self._recording = weakref.ref(recording)
        self.starts: list = []  # (buffer, bytes asked, index of the next command): each tenancy's start
        self._free: dict = {}
        self._lock = threading.Lock()
        self.closed = False
        self.bytes = 0
        self.taken: dict = {}   # id(buffer) -> (buffer, size): every buffer taken from the device pool

    def allocate(self, nbytes):
        buf, size = self._allocate(nbytes)
        rec = self._recording()
        self.starts.append((buf, max(256, (nbytes + 255) & ~255), len(rec.commands) if rec is not None else 0))
        return buf, size

    def _allocate(self, nbytes):
        size = max(256, (nbytes + 255) & ~255)
        with self._lock:
            bucket = self._free.get(size)
            if bucket:
                return bucket.pop(), size
            # Else the smallest free buffer up to twice the size: a recording holds all its buffers for
            # good, and a step of mixed sizes (a float32 tensor freed, a bfloat16 one of the same shape
            # wanted) would otherwise keep taking new ones. Only recording pays this search, not replays.
            fits = [s for s, b in self._free.items() if b and size < s <= 2 * size]
            if fits:
                best = min(fits)
                return self._free[best].pop(), best
        return self.take(nbytes)

    def take(self, nbytes):
        """A new buffer from the device pool, the recording's until it closes."""
        buf, size = self.device.pool.allocate(nbytes)
        self.bytes += size
        self.taken[id(buf)] = (buf, size)
        return buf, size

    def free_now(self) -> dict:
        """id(buffer) -> (buffer, size) for the buffers no tensor holds at the moment."""
        with self._lock:
            return {id(b): (b, size) for size, bufs in self._free.items() for b in bufs}

    def keep_only(self, slots: dict):
        """After planning: the free buffers are ``slots`` (id -> (buffer, size)); the others go back to the
        device pool (no command of the recording names them any more)."""
        with self._lock:
            gone = [(b, size) for size, bufs in self._free.items() for b in bufs if id(b) not in slots]
            self._free = {}
            for b, size in slots.values():
                self._free.setdefault(size, []).append(b)
            for b, size in gone:
                self.taken.pop(id(b), None)
                self.bytes -= size
        for b, size in gone:
            self.device.pool.release(b, size)

    def release(self, buf, size):
        with self._lock:
            if not self.closed:
                self._free.setdefault(size, []).append(buf)
                return
        self.device.pool.release(buf, size)

    def close(self):
        with self._lock:
            self.closed = True
            free, self._free = self._free, {}
        for size, bufs in free.items():
            for buf in bufs:
                self.device.pool.release(buf, size)


def _pack(keys, asked, life, device_of):
    """Slots for the tenancies ``keys`` taken in this order: ([(size, device, lives)], key -> slot index)."""
    slots, where = [], {}   # slots: [size, device, [(first, last), ...]]
    by_size = []            # slot indices, smallest slot first
    for key in keys:
        need, (first, last), device = asked[key], life[key], device_of[key[0]]
        for i in by_size:
            size, dev, lives = slots[i]
            if dev is device and size >= need and all(last < a or b < first for a, b in lives):
                break
        else:
            i = len(slots)
            slots.append([need, device, []])
            by_size.append(i)
            by_size.sort(key=lambda j: slots[j][0])
        slots[i][2].append((first, last))
        where[key] = i
    return [tuple(s) for s in slots], where


def _alignment(device) -> int:
    """Bytes a sub-buffer's offset must be a multiple of (the device's base address alignment; 256 at least)."""
    return max(256, int(device.cl_device.mem_base_addr_align) // 8)


def _arena(keys, asked, life, align):
    """Offsets in one buffer for the tenancies ``keys``. Returns ({key: offset}, the buffer's size).

    Each tenancy in turn takes the smallest gap left between the tenancies already placed that live
    at the same time (else the place above them all), as TensorFlow Lite's arena planner does; the
    order decides how well that packs. Largest first is its order; longest-lived first often packs
    tighter (a step's saved activations live across most of it, its gradients briefly). From each,
    the tenancy that ended highest is moved to the front and the packing redone, a few times: a cheap
    search that stops at the floor (the most bytes alive at one moment) and keeps the smallest seen.
    The rounds are limited so that a recording of thousands of tensors still plans in well under a
    second."""
    if not keys:
        return {}, 0
    floor = _most_alive(keys, asked, life)
    rounds = min(32, 2_000_000 // (len(keys) * len(keys)))
    best = None
    for order in (sorted(keys, key=lambda key: (-asked[key], life[key][0])),
                  sorted(keys, key=lambda key: (life[key][0] - life[key][1], -asked[key], life[key][0]))):
        for _ in range(rounds + 1):
            offsets, total, top = _place(order, asked, life, align)
            if best is None or total < best[1]:
                best = (offsets, total)
            if best[1] <= floor:
                return best
            order = [top] + [key for key in order if key is not top]
    return best


def _most_alive(keys, asked, life) -> int:
    """The most bytes the tenancies ``keys`` hold at one moment: no packing can do with less."""
    events = sorted([(life[key][0], asked[key]) for key in keys] + [(life[key][1] + 1, -asked[key]) for key in keys],
                    key=lambda e: (e[0], e[1]))   # at one unit, the ends before the starts
    alive = most = 0
    for _unit, change in events:
        alive += change
        most = max(most, alive)
    return most


def _place(order, asked, life, align):
    """One greedy packing of the tenancies in ``order``: (offsets, size, the tenancy ending highest)."""
    placed, offsets, total, top = [], {}, 0, None   # placed: (offset, size, first, last)
    for key in order:
        need, (first, last) = asked[key], life[key]
        busy = sorted((o, o + n) for o, n, f, l in placed if not (l < first or last < f))
        at, best, gap_best = 0, None, None
        for lo, hi in busy:
            gap = lo - at
            if gap >= need and (gap_best is None or gap < gap_best):
                best, gap_best = at, gap
            at = max(at, -(-hi // align) * align)
        offset = best if best is not None else at
        placed.append((offset, need, first, last))
        offsets[key] = offset
        if offset + need > total:
            total, top = offset + need, key
    return offsets, total, top


def _buffers_of(cmd, source):
    """The device buffers a recorded command names."""
    tag = cmd[0]
    if tag == launch.FILL:
        return (cmd[2],)
    if tag == launch.COPY:
        return (cmd[2], cmd[3])
    if source is not None:
        return [a for a in source[0][5] if a.__class__ is not bytes]
    return ()


def _renamed(cmd, source, mapping):
    """``cmd`` with the buffers ``mapping`` names (id -> buffer) replaced."""
    tag = cmd[0]
    if tag == launch.FILL:
        b = mapping.get(id(cmd[2]))
        return cmd if b is None else (tag, cmd[1], b) + tuple(cmd[3:])
    if tag == launch.COPY:
        dst, src = mapping.get(id(cmd[2]), cmd[2]), mapping.get(id(cmd[3]), cmd[3])
        return cmd if dst is cmd[2] and src is cmd[3] else (tag, cmd[1], dst, src) + tuple(cmd[4:])
    if source is None:
        return cmd
    kernel_cmd, preset = source
    args = kernel_cmd[5]
    new = [_rename(a, mapping) for a in args]
    if all(a is b for a, b in zip(new, args)):
        return cmd
    return launch._ready(kernel_cmd[:5] + (new,), preset)


def _rename(a, mapping):
    return a if a.__class__ is bytes else mapping.get(id(a), a)


class _Recording:
    """One signature's recorded commands and what a replay must redo besides them."""

    def __init__(self):
        self.commands: list = []
        self.fusable: list = []        # per command: (elementwise plan, args) when fusion may take it
        self.sources: list = []        # per command: (KERNEL command, preset) a READY one was made from
        self.sub_buffers: list = []    # the sub-buffers the planned commands name (_share_buffers)
        self.pools: dict = {}          # device -> _Pool
        self.keep: dict = {}           # id -> storage made outside the recording that a command names
        self.versions: dict = {}       # id(storage) -> (weakref, version before the first bump)
        self.version_deltas: list = [] # (storage, bump) to repeat at each replay
        self.leaves: dict = {}         # id(var) -> [var, data, grad at first sight, reset first?]
        self.modules: dict = {}        # id(module) -> module called during the recording
        self.module_states: list = []  # (module, _module_state as the recording left it)
        self.leaf_ends: list = []      # (var, grad) as the recorded call left them
        self.guards: list = []         # checks that may refuse a replay (then the call records again)
        self.inputs: list = []         # (private tensor, device) the arguments are copied into
        self.output = None
        self.invalid = None            # why this recording must not be replayed
        self.lock = threading.Lock()
        self.thread = threading.get_ident()

    # -- during recording (called by launch.py, tensor.py, variable.py, optim/) --------------------
    def pool(self, device) -> _Pool:
        p = self.pools.get(device)
        if p is None:
            p = self.pools[device] = _Pool(device, self)
        return p

    def record(self, cmd, fusable=None, source=None):
        self.commands.append(cmd)
        self.fusable.append(fusable)
        self.sources.append(source)

    def keep_storage(self, storage):
        pool = storage.pool
        if not (isinstance(pool, _Pool) and pool.owner == id(self)):
            self.keep[id(storage)] = storage   # external: it must outlive the recording

    def note_version(self, storage):
        if id(storage) not in self.versions:
            self.versions[id(storage)] = (weakref.ref(storage), storage.version)

    def note_leaf(self, var, reset):
        if id(var) not in self.leaves:
            self.leaves[id(var)] = [var, var._data, var._grad, reset]

    def note_module(self, module):
        self.modules.setdefault(id(module), module)

    def guard(self, check):
        """Before each replay ``check()`` runs; False means the recording no longer matches the
        program's state, and the call records again. A guard only decides: it changes nothing, so a
        replay is its recorded commands alone."""
        self.guards.append(check)

    def invalidate(self, reason: str):
        """This recording must not be replayed (the next call records again)."""
        if self.invalid is None:
            self.invalid = reason

    # -- the two phases -------------------------------------------------------------------------------
    def run(self, fn, args):
        from . import anomaly

        if launch.active_capture() is not None:
            raise CaptureError("capture: a captured function was called while another one is recording")
        if anomaly.is_anomaly_enabled():
            raise CaptureError("capture: anomaly mode reads every gradient back to the host, which a replay "
                               "cannot repeat; leave detect_anomaly() off while capturing")
        launch.set_active_capture(self)
        try:
            # Each tensor argument gets a private buffer of the recording's own; the function sees
            # stand-ins over those, and every replay copies the new argument data into them.
            call_args, copies = [], []
            for a in args:
                if isinstance(a, (Tensor, Variable)):
                    t = a._data if isinstance(a, Variable) else a
                    private = Tensor._wrap(t._shape, t.dtype, t.device)
                    self.inputs.append((private, t.device))
                    copies.append((private, t))
                    a = Variable(private) if isinstance(a, Variable) else private
                call_args.append(a)
            with paused():   # the copy-in is each replay's own first step, not part of the body
                for private, t in copies:
                    if t.numel():
                        launch.copy(t.device, private.buffer, t.buffer, t.numel() * t.dtype.itemsize)
            self.output = fn(*call_args)
        finally:
            launch.set_active_capture(None)
        self._finish()
        for device in self.devices:
            launch.flush(device)
        return self.output

    def _finish(self):
        for ref, before in self.versions.values():
            storage = ref()
            if storage is not None and storage.version != before:
                self.version_deltas.append((storage, storage.version - before))
        self.versions = {}
        self._share_buffers()
        self.commands = fusion.fuse(self.commands, self.fusable)
        self.fusable = self.sources = []
        self.leaf_ends = [(var, var._grad) for var, _d, _g, _r in self.leaves.values()]
        self.leaf_flags = [(var, var._requires_grad) for var, _d, _g, _r in self.leaves.values()]
        # As the recording left them: Python that fn itself runs (model.train(), a counter) is not redone.
        self.module_states = [(m, _module_state(m)) for m in self.modules.values()]
        self.modules = {}
        self.epoch = launch.module_state_epoch
        self.devices = list({cmd[1]: None for cmd in self.commands})
        for _t, device in self.inputs:
            if device not in self.devices:
                self.devices.append(device)

    def _share_buffers(self):
        """Give the recording's transient tensors the fewest buffers their lifetimes allow, and hand the
        buffers this frees back to the device pool (before fusion, which then sees the new buffers).

        While recording, a freed buffer is reused only by a later request of about its size, so a step
        of many sizes (float32 beside bfloat16 under autocast) kept taking new ones, all held for good.
        Knowing every command, each tenancy of a buffer (from one allocation of it to the next) lives
        from the first command that names it to the last, and tenancies whose lives do not overlap can
        share a buffer, exactly as the eager pool reuses a freed buffer for the commands after it.
        Buffers still held by a tensor when ``fn`` returns (outputs, gradients, state) keep all their
        tenancies; only buffers that are free by then are shared. A run of fusable launches may become
        one kernel whose work-items run all its steps, so lives are counted in such runs: two tenancies
        named in one run never share memory (at other offsets of one buffer, a step's writes could reach
        elements another work-item has still to read).
        """
        tenancies = {}     # id(buffer) -> [(start command, bytes asked)], in order
        transient, device_of = {}, {}
        for device, p in self.pools.items():
            free = p.free_now()
            transient.update(free)
            for buf, asked, at in p.starts:
                if id(buf) in free:
                    tenancies.setdefault(id(buf), []).append((at, asked))
                    device_of[id(buf)] = device
        if not transient:
            return
        # Each command's transient buffers, resolved to (buffer id, tenancy index), and each tenancy's life
        # in units: a command, or a whole run of consecutive fusable launches on one device.
        life, uses, unit = {}, [], 0
        for i, (cmd, source) in enumerate(zip(self.commands, self.sources)):
            if not (i and self.fusable[i] is not None and self.fusable[i - 1] is not None
                    and cmd[1] is self.commands[i - 1][1]):
                unit = i
            named = []
            for b in _buffers_of(cmd, source):
                k = id(b)
                starts = tenancies.get(k)
                if starts is None:
                    continue
                j = len(starts) - 1
                while j > 0 and starts[j][0] > i:
                    j -= 1
                key = (k, j)
                first, _last = life.get(key, (unit, unit))
                life[key] = (first, unit)
                named.append(key)
            uses.append(named)
        # Each tenancy, in some order, moves into the smallest buffer chosen so far whose tenants' lives it
        # does not meet, or a new one of its size. Which order packs best depends on the program, so a
        # few are tried (cheap: hundreds of tenancies) and the smallest total kept.
        asked = {key: tenancies[key[0]][key[1]][1] for key in life}
        orders = (lambda key: (-asked[key], life[key][0]),            # largest first
                  lambda key: (life[key][0], -asked[key]),            # by first use
                  lambda key: (-asked[key] * (life[key][1] - life[key][0] + 1), life[key][0]))   # area
        best = None
        for order in orders:
            plan = _pack(sorted(life, key=order), asked, life, device_of)
            if best is None or sum(size for size, _d, _l in plan[0]) < sum(size for size, _d, _l in best[0]):
                best = plan
        # Better still, one buffer per device with each tenancy at an offset (an OpenCL sub-buffer): two
        # short-lived tensors can then sit side by side where one larger dead one was. Used where it is
        # smaller, within the device's largest allocation, and the target saw sub-buffers work.
        arenas = {}
        for device in set(device_of.values()):
            keys = [key for key in life if device_of[key[0]] is device]
            offsets, total = _arena(keys, asked, life, _alignment(device))
            slotted = sum(size for size, d, _l in best[0] if d is device)
            if total < slotted and total <= device.info.max_alloc and device.target.sub_buffers:
                arenas[device] = (offsets, total)
        # The transient buffers go back to the device pool; the chosen ones are taken from it.
        for p in self.pools.values():
            p.keep_only({})
        sizes, where = best
        slots, home = [], {}
        for device, (offsets, total) in arenas.items():
            arena, size = self.pools[device].take(total)
            slots.append([arena, size, device])
            subs = {}
            for key, offset in offsets.items():
                region = (offset, asked[key])
                if region not in subs:
                    subs[region] = arena.get_sub_region(offset, asked[key])
                home[key] = subs[region]
            # A kernel argument does not keep its buffer alive (Intel's runtime then refuses the launch):
            # the recording holds its sub-buffers for as long as its commands.
            self.sub_buffers.extend(subs.values())
        taken = [None] * len(sizes)
        for key, i in where.items():
            device = device_of[key[0]]
            if device in arenas:
                continue
            if taken[i] is None:
                taken[i] = [self.pools[device].take(sizes[i][0])[0], sizes[i][0], device]
                slots.append(taken[i])
            home[key] = taken[i][0]
        for i, named in enumerate(uses):
            mapping = {k: home[(k, j)] for k, j in named}
            if mapping:
                cmd, source, meta = self.commands[i], self.sources[i], self.fusable[i]
                self.commands[i] = _renamed(cmd, source, mapping)
                if source is not None:
                    source = (source[0][:5] + ([_rename(a, mapping) for a in source[0][5]],), source[1])
                    self.sources[i] = source
                if meta is not None:
                    self.fusable[i] = (meta[0], [_rename(a, mapping) for a in meta[1]])
        for device, p in self.pools.items():   # free for the recording again (a closed pool returns them)
            p.keep_only({id(s[0]): (s[0], s[1]) for s in slots if s[2] is device})

    def replay(self, args):
        """Enqueue the recording for ``args``: True; False when the modules' state differs from the
        recording's (another variant may match), ``_STALE`` when it can never match again."""
        with self.lock:
            for var, data, grad, reset in self.leaves.values():
                if var._data is not data or not (reset or var._grad is grad):
                    return _STALE
            epoch = launch.module_state_epoch
            if epoch != self.epoch:   # something a guard reads may have changed: compare it all
                for var, flag in self.leaf_flags:
                    if var._requires_grad != flag:
                        return False
                for module, state in self.module_states:
                    if _module_state(module) != state:
                        return False
                self.epoch = epoch
            for check in self.guards:
                if check() is False:
                    return _STALE
            locks = [d.launch_lock for d in self.devices]
            for lock, device in zip(locks, self.devices):
                lock.acquire()
                launch.flush(device)
            try:
                k = 0
                for a in args:
                    if isinstance(a, (Tensor, Variable)):
                        t = a._data if isinstance(a, Variable) else a
                        private, device = self.inputs[k]
                        k += 1
                        if private is not t and t.numel():
                            launch.enqueue((COPY, device, private.buffer, t.buffer, t.numel() * t.dtype.itemsize))
                enqueue = launch.enqueue
                for cmd in self.commands:
                    enqueue(cmd)
            finally:
                for lock in reversed(locks):
                    lock.release()
            for storage, delta in self.version_deltas:
                storage.version += delta
            for var, grad in self.leaf_ends:
                var._grad = grad
        return True

    def fresh_output(self):
        """The recorded result with each tensor the recording owns copied into a buffer of its own (an
        on-device copy, no host read): what one call returns is not changed by the next call. A
        Variable comes back as a constant (the graph that made it is not replayed)."""
        def fresh(obj):
            if isinstance(obj, Variable):
                data = fresh(obj._data)
                return obj if data is obj._data else Variable(data)
            if isinstance(obj, Tensor):
                pool = obj._storage.pool
                return obj.clone() if isinstance(pool, _Pool) and pool.owner == id(self) else obj
            if isinstance(obj, tuple) and hasattr(obj, "_fields"):
                return type(obj)(*(fresh(x) for x in obj))
            if isinstance(obj, (tuple, list)):
                return type(obj)(fresh(x) for x in obj)
            if isinstance(obj, dict):
                return {k: fresh(v) for k, v in obj.items()}
            return obj
        return fresh(self.output)

    def close(self):
        """Give the recording's buffers back (those no living tensor holds) and drop its commands."""
        self.commands = []
        self.sub_buffers = []
        self.keep = {}
        self.guards = []
        for p in self.pools.values():
            p.close()

