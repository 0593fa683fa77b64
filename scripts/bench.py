#!/usr/bin/env python3
"""Benchmarks of axonml-autograd against numpy and (when installed) PyTorch, in one process.

    .venv/bin/python scripts/bench.py                        # every row, full repeat counts
    .venv/bin/python scripts/bench.py --quick                # small repeat counts (< 60 s on 2 cores)
    .venv/bin/python scripts/bench.py --rows sgemm,mlp --json bench.json --device pocl

Method. Every row times our side and its baselines in the same process, in blocks that take turns
over 2-3 rounds (each block after its own warm-up; see ``measure``), and reports the median of the
repetitions. Each of our repetitions ends with ``device.synchronize()`` (the
benchmark's only synchronisation; the library itself never waits). PyTorch runs on the CPU with
``torch.set_num_threads(2)``; numpy uses its BLAS with its default thread count.

Ratios: every ratio is "> 1 means we are faster". For throughput rows (GFLOP/s, GB/s) it is
ours / baseline; for time rows (ms, µs/op) it is baseline time / our time.

Rows (``--rows`` takes these names; ``sgemm_512`` picks one size):
  sgemm        GFLOP/s of ``matmul(a, b)`` (packing included) at 256/512/1024 (+2048 without --quick); target
               >= 0.9x numpy (issue 23)
  mlp_matmuls  GFLOP/s of the five products of an MLP 784-256-10 step at batch 128 (forward, and
               backward's g @ W^T and X^T @ g through the transpose flags), against torch.mm
  bmm          batched matmul [32,128,128] @ [32,128,128], GFLOP/s
  add          16M float32 ``a + b``, GB/s counting 3 arrays moved (numpy: ``np.add(a, b, out=c)``)
  sum          16M float32 full sum, GB/s
  half         16-bit bandwidth (issue 21): ``a + b`` and ``a.sum()`` over 64M elements (``--half-elements``
               or AXONML_BENCH_HALF_ELEMENTS; 4M for a quick look) in float32, float16 and bfloat16, timed
               in the same run; one row per op and 16-bit type: its ms, float32's ms, and the ratio
               float32 ms / 16-bit ms = 16-bit elements/s over float32's (target >= 1.7x)
  amp          mixed precision (issue 21): the MLP step under autocast(bfloat16) through capture(), ms/step,
               against our float32 captured step and torch's CPU autocast step (report); amp_memory: the
               device bytes train_charlm's captured step holds under bf16 autocast against float32's
               (target <= 0.65x)
  select       index_select (rows of [50000, 256] by 4096 indices), gather (along dim 1 of [4096, 256])
               and embedding ([64, 64] indices into [50000, 256]), GB/s of the result written, against
               numpy's fancy indexing (and torch's ops)
  softmax_ce   cross-entropy (log-softmax + NLL) forward+backward on [128, 1000] logits, ms (target <= 1.2x torch)
  layer_norm   F.layer_norm forward+backward (dx, dweight, dbias) on [4096, 768] float32, ms; target
               <= 1.0x torch's time
  conv2d       conv2d forward + backward (input, weight and bias gradients) of [64, 16, 28, 28] with 32
               3x3 filters, padding 1, float32, ms (target <= 1.2x torch's time)
  cnn_step     issue 23's CNN: (Conv2d 3x3 pad 1, BatchNorm2d, ReLU, MaxPool2d 2) x 2 (16 and 32 channels),
               Linear(512, 10), batch 64 of 1x16x16, cross-entropy, SGD with momentum: ms/step eager (target
               <= 1.2x torch) and as cnn_step_captured (target <= 0.9x torch); torch gets the same weights
  transformer_step  issue 23's transformer: token + position embeddings, 2 pre-norm TransformerEncoderLayers
               (d 64, 4 heads, FFN 256, GELU, causal), LayerNorm, Linear to 80 classes, T 32, batch 16:
               eager (<= 1.2x torch) and transformer_step_captured (<= 0.9x torch)
  lstm         nn.LSTM(64, 64) training step on [16, 64, 64] (T, batch, input): forward, MSE loss ((out - y) * (out - y)).mean(),
               backward, SGD step, ms/step, eager (target <= 1.5x torch's nn.LSTM) and as lstm_captured
               through ``capture()`` (target <= 1.0x torch); torch gets the same weights and data
  mlp          MLP 784-256-10, batch 128: forward + backward + SGD step, ms/step; also checks that a
               step makes no device->host read
  mlp_captured the same step through ``capture()``: recorded once, then replayed (target <= 0.6x torch)
  mlp_backward backward only of that MLP (forward done and finished before the timer starts), ms
               (target <= 1.2x torch)
  chain        1000 scalar ops (mul, add alternating) on a 1-element tensor, forward+backward, µs/op
  chain_captured  the same chain through ``capture()``
  first_step   a fresh process computing its first MLP gradient (import, device, model, forward,
               backward, synchronize), with empty kernel caches (cold) and again with the caches
               that run filled (warm), s
  memory       peak device memory (``device.memory_stats()['peak_bytes']``) of the MLP training loop

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set, can make OpenBLAS pick slower kernels and so flatter
us. OpenBLAS reads them when numpy loads, so the script re-executes itself without them (before
importing numpy) and says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REEXEC_MARK = "_AXONML_BENCH_REEXEC"
ALL_ROWS = ("sgemm", "mlp_matmuls", "bmm", "add", "sum", "half", "amp", "select", "softmax_ce", "custom_op", "layer_norm", "conv2d",
            "attention", "cnn_step", "transformer_step", "lstm", "mlp", "mlp_captured",
            "mlp_backward", "chain", "chain_captured", "first_step", "memory")
SGEMM_SIZES = (256, 512, 1024, 2048)
N16M = 16 * 1024 * 1024
N64M = 64 * 1024 * 1024
MLP_SIZES = (784, 256, 10)
MLP_BATCH = 128
MLP_LR = 0.01
CHAIN_OPS = 1000
LSTM_SHAPE = (16, 64, 64, 64)   # T, batch, input, hidden
ATTENTION_LENGTHS = (128, 512)
CONV_INPUT, CONV_WEIGHT = (64, 16, 28, 28), (32, 16, 3, 3)   # padding 1: the output is [64, 32, 28, 28]


# ------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="OpenCL device: 'platform:device' or a name substring "
                   "(default: AXONML_DEVICE, PYOPENCL_CTX, then the best GPU, then the CPU)")
    p.add_argument("--quick", action="store_true", help="small repeat counts; skips sgemm 2048")
    p.add_argument("--rows", default=None, help="comma-separated rows to run (default: all): "
                   + ",".join(ALL_ROWS))
    p.add_argument("--half-elements", type=int, default=int(os.environ.get("AXONML_BENCH_HALF_ELEMENTS", N64M)),
                   metavar="N", help="elements of the 'half' rows' tensors (default 64M; env AXONML_BENCH_HALF_ELEMENTS)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-torch", action="store_true", help="do not use PyTorch even if it is installed")
    p.add_argument("--child-first-step", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.selected = _select_rows(p, args.rows)
    return args


def _select_rows(parser, text):
    if not text:
        return None
    wanted = [r.strip() for r in text.split(",") if r.strip()]
    for r in wanted:
        base = r.split("_")[0] if r.startswith("sgemm_") else r
        if base not in ALL_ROWS or (r.startswith("sgemm_") and not r[6:].isdigit()):
            parser.error(f"--rows: unknown row {r!r}; choose from {', '.join(ALL_ROWS)} (or sgemm_N)")
    return wanted


def reexec_without_openblas_env():
    """Re-run this script without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (must run before numpy loads)."""
    present = [v for v in OPENBLAS_VARS if v in os.environ]
    if present and not os.environ.get(REEXEC_MARK):
        env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
        env[REEXEC_MARK] = ",".join(f"{v}={os.environ[v]}" for v in present)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


# ------------------------------------------------------------------------------------------------------
# Timing and results
# ------------------------------------------------------------------------------------------------------

WARM_S = 0.2


def measure(fns: dict, warmup: int, repeats: int) -> "Timings":
    """Seconds per call of each ``fns[name]()``: medians over ``repeats`` timed calls per name.

    The names take turns in blocks: a few rounds, in each of which every name runs ``warmup`` untimed
    calls and then its share of the timed ones. Rounds spread slow phases of a shared machine over all
    sides; blocks with their own warm-up keep one side's thread pool from taxing the next side. (OpenBLAS,
    torch's OpenMP and PoCL's workers spin for a while after each call; on 2 cores, alternating single
    calls made torch's MLP step 4-8x slower than running it alone.) A warm-up lasts at least WARM_S as
    well as ``warmup`` calls: a couple of sub-millisecond calls did not bring PoCL's worker threads (or
    the cores' clocks) up to speed, and the first block of a row measured ~half the later ones.

    A function that returns a float has timed itself (for rows with untimed set-up per repetition).
    ``.best`` of the result holds the fastest calls (steadier on a loaded machine).
    """
    rounds = min(repeats, 2 if repeats < 8 else 3)
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    times = {k: [] for k in fns}
    for n in per_round:
        for k, f in fns.items():
            start = time.perf_counter()
            done = 0
            while done < max(1, warmup) or time.perf_counter() - start < WARM_S:
                f()
                done += 1
            for _ in range(n):
                t0 = time.perf_counter()
                r = f()
                dt = time.perf_counter() - t0
                times[k].append(r if isinstance(r, float) else dt)
    result = Timings({k: statistics.median(v) for k, v in times.items()})
    result.best = {k: min(v) for k, v in times.items()}
    return result


def alternating_blocks(fns: dict, blocks: int, reps: int, warm_s: float) -> dict:
    """Per name, the mean seconds per call of each of ``blocks`` blocks of ``reps`` calls; the names take
    turns block by block, each block after at least ``warm_s`` of its own warm-up (see ``measure``)."""
    times = {k: [] for k in fns}
    for _ in range(blocks):
        for k, fn in fns.items():
            t0, calls = time.perf_counter(), 0
            while calls < 2 or time.perf_counter() - t0 < warm_s:
                fn()
                calls += 1
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[k].append((time.perf_counter() - t0) / reps)
    return times


class Timings(dict):
    best: dict

    def convert(self, fn):
        """The medians and the bests through ``fn`` (seconds -> the row's unit): ``(medians, bests)``."""
        return {k: fn(v) for k, v in self.items()}, {k: fn(v) for k, v in self.best.items()}


class Row:
    """One line of the table. ``kind`` is "throughput" (bigger is better) or "time" (smaller is better)."""

    def __init__(self, name, metric, unit, kind, ours, baselines=None, primary=None, target=None, notes="",
                 best=None):
        self.name, self.metric, self.unit, self.kind = name, metric, unit, kind
        self.best = best or {}   # the same quantities from the fastest repetitions
        self.ours = ours
        self.baselines = {k: v for k, v in (baselines or {}).items() if v is not None}
        self.primary = primary if primary in self.baselines else next(iter(self.baselines), None)
        self.target = target   # {"text", and "baseline" + "min_ratio", or "max_value"}
        self.notes = notes

    def ratio_vs(self, name):
        base = self.baselines.get(name)
        if base is None or not self.ours or not base:
            return None
        return self.ours / base if self.kind == "throughput" else base / self.ours

    @property
    def ratio(self):
        return self.ratio_vs(self.primary) if self.primary else None

    @property
    def met(self):
        t = self.target
        if not t:
            return None
        if "max_value" in t:
            return self.ours <= t["max_value"]
        if "min_ratio" not in t:   # "report": no target to meet
            return None
        r = self.ratio_vs(t["baseline"])
        return None if r is None else r >= t["min_ratio"]

    def to_json(self):
        return {"name": self.name, "metric": self.metric, "unit": self.unit, "kind": self.kind,
                "ours": self.ours, "baselines": self.baselines, "baseline": self.primary,
                "ratio": self.ratio, "ratios": {k: self.ratio_vs(k) for k in self.baselines},
                "target": self.target["text"] if self.target else None, "target_met": self.met,
                "best": self.best, "notes": self.notes}


def _fmt(x):
    if x is None:
        return "-"
    if x == 0:
        return "0"
    a = abs(x)
    return f"{x:.3g}" if a < 10 else f"{x:.1f}" if a < 1000 else f"{x:.0f}"


def print_row(row: Row):
    base = row.baselines.get(row.primary) if row.primary else None
    met = {True: "yes", False: "NO", None: "n/a"}[row.met]
    others = ", ".join(f"{k} {_fmt(v)} ({_fmt(row.ratio_vs(k))}x)" for k, v in row.baselines.items()
                       if k != row.primary)
    extra = "; ".join(x for x in (others, row.notes) if x)
    print(f"{row.name:<16}{row.unit:<9}{_fmt(row.ours):>10}  {(row.primary or '-'):<13}{_fmt(base):>10}"
          f"{(_fmt(row.ratio) + 'x') if row.ratio else '-':>9}  {(row.target or {}).get('text', '-'):<17}{met:<5}"
          + (f"  {extra}" if extra else ""), flush=True)


def print_header():
    print(f"\n{'row':<16}{'unit':<9}{'ours':>10}  {'baseline':<13}{'value':>10}{'ratio':>9}  "
          f"{'target':<17}{'met':<5}  other baselines / notes")
    print("-" * 112)


# ------------------------------------------------------------------------------------------------------
# The environment
# ------------------------------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_summary(np):
    try:
        from threadpoolctl import threadpool_info
        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if infos:
            return "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
                             f"{i.get('num_threads')} threads)" for i in infos)
    except Exception:  # threadpoolctl missing or unable to inspect
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name')} {blas.get('version')} (from np.show_config)"
    except Exception:
        return "unknown"


def load_torch(disabled):
    if disabled:
        return None, "torch disabled (--no-torch)"
    try:
        import torch
    except ImportError:
        return None, "torch not installed (torch baselines skipped)"
    # 2 by default; AXONML_BENCH_TORCH_THREADS=1 for the other half of the comparison (torch's 2-thread
    # spin barriers collapse when anything else runs on a 2-core machine).
    torch.set_num_threads(int(os.environ.get("AXONML_BENCH_TORCH_THREADS", "2")))
    return torch, f"torch {torch.__version__} (CPU, {torch.get_num_threads()} threads)"


# ------------------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, dev, torch, np):
        self.args, self.dev, self.torch, self.np = args, dev, torch, np
        self.quick = args.quick
        self.rng = np.random.default_rng(0)
        from axonml_autograd import Tensor, Variable
        self.Tensor, self.Variable = Tensor, Variable

    def finish(self):
        self.dev.synchronize()

    def reps(self, full, quick, warm_full=2, warm_quick=1):
        return (warm_quick, quick) if self.quick else (warm_full, full)

    # -- dense linear algebra ---------------------------------------------------------------------------
    def sgemm(self, n):
        from axonml_autograd.matmul import matmul
        np = self.np
        a_h = self.rng.standard_normal((n, n), dtype=np.float32)
        b_h = self.rng.standard_normal((n, n), dtype=np.float32)
        a, b = self.Tensor.from_numpy(a_h, device=self.dev), self.Tensor.from_numpy(b_h, device=self.dev)
        err = _rel_err(matmul(a, b).numpy(), a_h @ b_h)

        def ours():
            matmul(a, b)
            self.finish()

        fns = {"ours": ours, "numpy": lambda: a_h @ b_h}
        if self.torch:
            ta, tb = self.torch.from_numpy(a_h), self.torch.from_numpy(b_h)
            fns["torch"] = lambda: ta @ tb
        warm, rep = (1, 3 if n >= 1024 else 5) if self.quick else (2, 5 if n >= 2048 else 15)
        t = measure(fns, warm, rep)
        gf, best = t.convert(lambda v: 2.0 * n ** 3 / v / 1e9)
        return Row(f"sgemm_{n}", f"sgemm {n}x{n}x{n}", "GFLOP/s", "throughput", gf.pop("ours"), gf, "numpy",
                   {"text": ">= 0.9x numpy", "baseline": "numpy", "min_ratio": 0.9}, _err_note(err), best=best)

    def bmm(self):
        from axonml_autograd.matmul import matmul
        np = self.np
        shape = (32, 128, 128)
        a_h = self.rng.standard_normal(shape, dtype=np.float32)
        b_h = self.rng.standard_normal(shape, dtype=np.float32)
        a, b = self.Tensor.from_numpy(a_h, device=self.dev), self.Tensor.from_numpy(b_h, device=self.dev)
        err = _rel_err(matmul(a, b).numpy(), a_h @ b_h)

        def ours():
            matmul(a, b)
            self.finish()

        fns = {"ours": ours, "numpy": lambda: np.matmul(a_h, b_h)}
        if self.torch:
            ta, tb = self.torch.from_numpy(a_h), self.torch.from_numpy(b_h)
            fns["torch"] = lambda: self.torch.bmm(ta, tb)
        t = measure(fns, *self.reps(20, 5))
        flop = 2.0 * shape[0] * shape[1] * shape[2] * shape[2]
        gf, best = t.convert(lambda v: flop / v / 1e9)
        return Row("bmm", "batched matmul [32,128,128] @ [32,128,128]", "GFLOP/s", "throughput",
                   gf.pop("ours"), gf, "numpy", {"text": "report"}, _err_note(err), best=best)

    # -- memory-bound kernels ------------------------------------------------------------------------
    def add(self):
        np = self.np
        a_h = self.rng.standard_normal(N16M, dtype=np.float32)
        b_h = self.rng.standard_normal(N16M, dtype=np.float32)
        c_h = np.empty_like(a_h)
        a, b = self.Tensor.from_numpy(a_h, device=self.dev), self.Tensor.from_numpy(b_h, device=self.dev)
        err = _rel_err((a + b).numpy(), a_h + b_h)

        def ours():
            a + b   # the result's buffer goes back to the pool at once and is reused by the next call
            self.finish()

        fns = {"ours": ours, "numpy": lambda: np.add(a_h, b_h, out=c_h)}
        if self.torch:
            ta, tb, tc = (self.torch.from_numpy(x) for x in (a_h, b_h, c_h))
            fns["torch"] = lambda: self.torch.add(ta, tb, out=tc)
        t = measure(fns, *self.reps(15, 5))
        gbs, best = t.convert(lambda v: 3 * N16M * 4 / v / 1e9)
        return Row("add", "add 16M float32 (3 arrays moved)", "GB/s", "throughput", gbs.pop("ours"), gbs,
                   "numpy", {"text": ">= 0.9x numpy", "baseline": "numpy", "min_ratio": 0.9},
                   _err_note(err, "baselines write into a preallocated out"), best=best)

    def sum(self):
        np = self.np
        a_h = self.rng.standard_normal(N16M, dtype=np.float32)
        a = self.Tensor.from_numpy(a_h, device=self.dev)
        err = abs(a.sum().item() - float(a_h.astype(np.float64).sum())) / math.sqrt(N16M)

        def ours():
            a.sum()
            self.finish()

        fns = {"ours": ours, "numpy": lambda: a_h.sum()}
        if self.torch:
            ta = self.torch.from_numpy(a_h)
            fns["torch"] = lambda: ta.sum()
        t = measure(fns, *self.reps(15, 5))
        gbs, best = t.convert(lambda v: N16M * 4 / v / 1e9)
        return Row("sum", "sum 16M float32", "GB/s", "throughput", gbs.pop("ours"), gbs, "numpy",
                   {"text": ">= 1.0x numpy", "baseline": "numpy", "min_ratio": 1.0},
                   "" if err < 1e-2 else f"WARNING: error {err:.1e} per sqrt(n) vs float64 sum", best=best)

    def amp(self):
        """The MLP step under autocast (bfloat16, the CPU's 16-bit type) against our float32 step and torch's
        CPU autocast step, all captured/eager as labelled; and the captured memory of train_charlm's step."""
        from axonml_autograd import autocast, bfloat16, capture
        torch = self.torch
        steps = 5 if self.quick else 10
        m32, m16 = self._mlp(), self._mlp()

        def amp_step():
            m16["opt"].zero_grad()
            with autocast(dtype=bfloat16):
                loss = m16["forward"]()
            loss.backward()
            m16["opt"].step()
            return loss
        ours16, ours32 = capture(amp_step), capture(lambda: m32["step"]())
        ours16()   # the recording
        reads, _writes = count_transfers(lambda: (ours16(), ours16()))

        def run(step):
            def go():
                for _ in range(steps):
                    step()
                self.finish()
            return go
        fns = {"ours": run(ours16), "ours_float32": run(ours32)}
        if torch:
            t_forward, _t_step, tp = self._torch_mlp(m16)
            topt = torch.optim.SGD(list(tp.values()), lr=MLP_LR)

            def t_amp():
                topt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = t_forward()
                loss.backward()
                topt.step()
            fns["torch"] = lambda: [t_amp() for _ in range(steps)]
        t = measure(fns, *self.reps(10, 4, 2, 1))
        ms, best = t.convert(lambda v: v * 1e3 / steps)
        rows = [Row("amp_mlp", "MLP step, autocast bfloat16 (captured)", "ms/step", "time", ms.pop("ours"), ms,
                    "torch" if torch else "ours_float32", {"text": "report"},
                    f"d2h reads/replay {reads / 2:g}; torch: CPU autocast bfloat16, eager", best=best)]
        f32, b16 = _charlm_capture_bytes(None), _charlm_capture_bytes(bfloat16)
        rows.append(Row("amp_memory", "train_charlm step captured: device bytes", "MB", "time",
                        b16 / 1e6, {"float32": f32 / 1e6}, "float32",
                        {"text": "<= 0.65x float32's", "baseline": "float32", "min_ratio": 1 / 0.65},
                        "model + AdamW state + recording after 3 captured steps; ratio = float32 MB / bf16 MB "
                        "(>= 1.54 meets the target)"))
        return rows


    def half(self):
        """float16 and bfloat16 against float32 on the same elementwise add and full sum, same run: the
        16-bit types move half the bytes, so a memory-bound kernel should do ~2x the elements/s."""
        np = self.np
        n = self.args.half_elements
        a_h = self.rng.standard_normal(n, dtype=np.float32)
        b_h = self.rng.standard_normal(n, dtype=np.float32)
        a32 = self.Tensor.from_numpy(a_h, device=self.dev)
        b32 = self.Tensor.from_numpy(b_h, device=self.dev)
        types = ("float32", "float16", "bfloat16")
        data = {dt: (a32.astype(dt), b32.astype(dt)) for dt in types}   # on the device, converted there
        notes = {}
        for dt, (a, b) in data.items():
            # Checks (untimed): the sum against float64's sum of the same (rounded) values, the add
            # against numpy's sum of the rounded operands rounded again.
            exact = float(a.astype("float64").sum().item())
            got = float(a.sum().astype("float32").item())
            tol = 2.0 ** -7 * max(abs(exact), 1.0) if dt != "float32" else 1e-3 * max(abs(exact), 1.0)
            k = min(n, 4096)
            want_add = (a.narrow(0, 0, k).astype("float64") + b.narrow(0, 0, k).astype("float64")).astype(dt)
            add_ok = np.array_equal((a + b).narrow(0, 0, k).astype("float32").numpy(), want_add.astype("float32").numpy())
            notes[dt] = "" if abs(got - exact) <= tol and add_ok else \
                f"WARNING: sum {got:.6g} vs {exact:.6g}, add {'ok' if add_ok else 'differs from numpy'}"
        rows = []
        for op in ("add", "sum"):
            def fn(dt, op=op):
                a, b = data[dt]
                if op == "add":
                    def run():
                        a + b   # the result's buffer goes back to the pool and is reused by the next call
                        self.finish()
                else:
                    def run():
                        a.sum()
                        self.finish()
                return run
            t = measure({dt: fn(dt) for dt in types}, *self.reps(11, 5))
            ms, best = t.convert(lambda v: v * 1e3)
            size = f"{n // (1024 * 1024)}M" if n % (1024 * 1024) == 0 else str(n)
            for dt in types[1:]:
                gel = n / (ms[dt] / 1e3) / 1e9
                rows.append(Row(f"half_{op}_{'f16' if dt == 'float16' else 'bf16'}",
                                f"{op} {size} {dt} vs float32", "ms", "time", ms[dt], {"float32": ms["float32"]},
                                "float32", {"text": ">= 1.7x float32", "baseline": "float32", "min_ratio": 1.7},
                                "; ".join(x for x in (f"{gel:.2f} Gelem/s", notes[dt], notes["float32"]) if x),
                                best={dt: best[dt], "float32": best["float32"]}))
        return rows

    def select(self):
        np = self.np
        import axonml_autograd.nn.functional as F
        V, D, K = 50000, 256, 4096
        w_h = self.rng.standard_normal((V, D), dtype=np.float32)
        idx_h = self.rng.integers(0, V, K).astype(np.int32)
        g_idx_h = self.rng.integers(0, D, (K, D)).astype(np.int32)
        src_h = self.rng.standard_normal((K, D), dtype=np.float32)
        emb_h = self.rng.integers(0, V, (64, 64)).astype(np.int32)
        w = self.Variable(self.Tensor.from_numpy(w_h, device=self.dev))
        src = self.Variable(self.Tensor.from_numpy(src_h, device=self.dev))
        idx = self.Tensor.from_numpy(idx_h, dtype="int32", device=self.dev)
        g_idx = self.Tensor.from_numpy(g_idx_h, dtype="int32", device=self.dev)
        emb = self.Tensor.from_numpy(emb_h, dtype="int32", device=self.dev)
        cases = [
            ("index_select", lambda: w.index_select(0, idx), lambda: w_h[idx_h], K * D,
             lambda t: (lambda tw, ti: lambda: t.index_select(tw, 0, ti))(t.from_numpy(w_h), t.from_numpy(idx_h.astype(np.int64)))),
            ("gather", lambda: src.gather(1, g_idx), lambda: np.take_along_axis(src_h, g_idx_h, 1), K * D,
             lambda t: (lambda ts, ti: lambda: t.gather(ts, 1, ti))(t.from_numpy(src_h), t.from_numpy(g_idx_h.astype(np.int64)))),
            ("embedding", lambda: F.embedding(emb, w), lambda: w_h[emb_h], 64 * 64 * D,
             lambda t: (lambda tw, ti: lambda: t.nn.functional.embedding(ti, tw))(t.from_numpy(w_h), t.from_numpy(emb_h.astype(np.int64)))),
        ]
        rows = []
        for name, ours_fn, numpy_fn, n_out, torch_make in cases:
            err = _rel_err(ours_fn().numpy(), numpy_fn())

            def ours(f=ours_fn):
                f()
                self.finish()

            fns = {"ours": ours, "numpy": numpy_fn}
            if self.torch:
                fns["torch"] = torch_make(self.torch)
            t = measure(fns, *self.reps(15, 5))
            # Bytes of the result written plus the rows or elements read (the indices are small).
            gbs, best = t.convert(lambda v: 2 * n_out * 4 / v / 1e9)
            rows.append(Row(f"select_{name}", f"{name} forward", "GB/s", "throughput", gbs.pop("ours"), gbs, "numpy",
                            {"text": "report"}, _err_note(err), best=best))
        return rows

    # -- autograd rows --------------------------------------------------------------------------------
    def softmax_ce(self):
        np = self.np
        n, c = 128, 1000
        x_h = self.rng.standard_normal((n, c), dtype=np.float32)
        t_h = self.rng.integers(0, c, n).astype(np.int32)
        x = self.Variable(self.Tensor.from_numpy(x_h, device=self.dev), requires_grad=True)
        t = self.Tensor.from_numpy(t_h, dtype="int32", device=self.dev)

        def ours():
            x.zero_grad()
            x.cross_entropy(t).backward()
            self.finish()

        rows = np.arange(n)

        def numpy_manual():
            m = x_h.max(axis=1, keepdims=True)
            e = np.exp(x_h - m)
            s = e.sum(axis=1, keepdims=True)
            loss = -(x_h[rows, t_h] - m[:, 0] - np.log(s[:, 0])).mean()
            g = e / s
            g[rows, t_h] -= 1.0
            g *= 1.0 / n
            return loss, g

        ours()
        _, g_ref = numpy_manual()
        err = _rel_err(x.grad().numpy(), g_ref)
        fns = {"ours": ours, "numpy": numpy_manual}
        if self.torch:
            torch = self.torch
            tx, tt = torch.from_numpy(x_h.copy()).requires_grad_(True), torch.from_numpy(t_h.astype(np.int64))

            def torch_run():
                tx.grad = None
                torch.nn.functional.cross_entropy(tx, tt).backward()

            fns["torch"] = torch_run
        tm = measure(fns, *self.reps(30, 8, 3, 2))
        ms, best = tm.convert(lambda v: v * 1e3)
        target = {"text": "<= 1.2x torch", "baseline": "torch", "min_ratio": 1 / 1.2} if self.torch else {"text": "report"}
        return Row("softmax_ce", "cross-entropy fwd+bwd [128,1000]", "ms", "time", ms.pop("ours"), ms,
                   "torch" if self.torch else "numpy", target, _err_note(err), best=best)

    def custom_op(self):
        """The README's "Writing your own op" example: swish as one Function (a kernel each way) against
        the same maths composed from built-in ops (x * sigmoid(x): two kernels forward, four backward)."""
        np = self.np
        from axonml_autograd import Function, elementwise

        class Swish(Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return elementwise("x / (L(1.0) + exp(-x))", x=x)

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return elementwise("g * (L(1.0) + exp(-x) * (L(1.0) + x)) / ((L(1.0) + exp(-x)) * (L(1.0) + exp(-x)))",
                                   g=g, x=x)

        x_h = self.rng.standard_normal((1024, 1024), dtype=np.float32)
        x = self.Variable(self.Tensor.from_numpy(x_h, device=self.dev), requires_grad=True)

        def fused():
            x.zero_grad()
            Swish.apply(x).sum().backward()
            self.finish()

        def composed():
            x.zero_grad()
            (x * x.sigmoid()).sum().backward()
            self.finish()

        composed()
        g_ref = x.grad().numpy()
        fused()
        err = _rel_err(x.grad().numpy(), g_ref)
        fns = {"ours": fused, "composed": composed}
        if self.torch:
            torch = self.torch
            tx = torch.from_numpy(x_h.copy()).requires_grad_(True)

            def torch_run():
                tx.grad = None
                (tx * torch.sigmoid(tx)).sum().backward()

            fns["torch"] = torch_run
        tm = measure(fns, *self.reps(20, 5, 3, 2))
        ms, best = tm.convert(lambda v: v * 1e3)
        return Row("custom_op", "swish Function fwd+bwd [1024,1024]", "ms", "time", ms.pop("ours"), ms,
                   "composed", {"text": "report"}, _err_note(err, "vs composed"), best=best)

    def layer_norm(self):
        np = self.np
        import axonml_autograd.nn.functional as F
        rows, cols = 4096, 768
        x_h = self.rng.standard_normal((rows, cols), dtype=np.float32)
        g_h = self.rng.standard_normal((rows, cols), dtype=np.float32)
        w_h = self.rng.standard_normal(cols, dtype=np.float32)
        b_h = self.rng.standard_normal(cols, dtype=np.float32)
        x, w, b = (self.Variable(self.Tensor.from_numpy(a, device=self.dev), requires_grad=True)
                   for a in (x_h, w_h, b_h))
        g = self.Tensor.from_numpy(g_h, device=self.dev)

        def ours():
            for v in (x, w, b):
                v.zero_grad()
            F.layer_norm(x, (cols,), w, b).backward(g)
            self.finish()

        ours()
        x64 = x_h.astype(np.float64)
        xhat = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
        err = max(_rel_err(b.grad().numpy(), g_h.sum(0)), _rel_err(w.grad().numpy(), (g_h * xhat).sum(0)))
        fns = {"ours": ours}
        if self.torch:
            fns["torch"] = self._torch_fwd_bwd(lambda x, w, b: self.torch.nn.functional.layer_norm(x, (cols,), w, b),
                                               (x_h, w_h, b_h), g_h)[0]
        tm = measure(fns, *self.reps(20, 6, 2, 1))
        ms, best = tm.convert(lambda v: v * 1e3)
        target = {"text": "<= 1.0x torch", "baseline": "torch", "min_ratio": 1.0} if self.torch else {"text": "report"}
        return Row("layer_norm", "layer_norm fwd+bwd [4096,768]", "ms", "time", ms.pop("ours"), ms, "torch",
                   target, _err_note(err), best=best)

    def conv2d(self):
        np = self.np
        import axonml_autograd.nn.functional as F
        x_h = self.rng.standard_normal(CONV_INPUT, dtype=np.float32)
        w_h = (self.rng.standard_normal(CONV_WEIGHT, dtype=np.float32) / 12.0).astype(np.float32)
        b_h = self.rng.standard_normal(CONV_WEIGHT[0], dtype=np.float32)
        out_shape = (CONV_INPUT[0], CONV_WEIGHT[0]) + CONV_INPUT[2:]
        g_h = self.rng.standard_normal(out_shape, dtype=np.float32)
        x, w, b = (self.Variable(self.Tensor.from_numpy(a, device=self.dev), requires_grad=True)
                   for a in (x_h, w_h, b_h))
        g = self.Tensor.from_numpy(g_h, device=self.dev)

        def ours():
            x.zero_grad(), w.zero_grad(), b.zero_grad()
            F.conv2d(x, w, b, padding=1).backward(g)
            self.finish()

        # The forward against numpy (windows of the padded input), the gradients against torch.
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(x_h, ((0, 0), (0, 0), (1, 1), (1, 1))),
                                                           (3, 3), axis=(2, 3))
        want = np.einsum("nchwij,ocij->nohw", windows, w_h, optimize=True) + b_h[:, None, None]
        err = _rel_err(F.conv2d(x, w, b, padding=1).numpy(), want)
        fns = {"ours": ours}
        if self.torch:
            torch_run, (tx, tw, tb) = self._torch_fwd_bwd(
                lambda x, w, b: self.torch.nn.functional.conv2d(x, w, b, padding=1), (x_h, w_h, b_h), g_h)

            torch_run()
            ours()
            err = max([err] + [_rel_err(v.grad().numpy(), t.grad.numpy()) for v, t in ((x, tx), (w, tw), (b, tb))])
            fns["torch"] = torch_run
        tm = measure(fns, *self.reps(20, 6, 3, 2))
        ms, best = tm.convert(lambda v: v * 1e3)
        return Row("conv2d", "conv2d fwd+bwd [64,16,28,28] * [32,16,3,3], padding 1", "ms", "time", ms.pop("ours"),
                   ms, "torch", {"text": "<= 1.2x torch", "baseline": "torch", "min_ratio": 1 / 1.2},
                   _err_note(err, "" if self.torch else "torch not installed: target not checked"), best=best)

    def attention(self):
        """scaled_dot_product_attention fwd+bwd, batch 4, 8 heads, d=64, at T=128 and T=512: the fused
        kernels (F.scaled_dot_product_attention), the composed path (q k^T, softmax, @ v as differentiable
        ops) and torch's F.scaled_dot_product_attention at 2 and at 1 threads (the faster is the baseline)."""
        np = self.np
        import math
        import axonml_autograd.nn.functional as F
        rows = []
        for T in ATTENTION_LENGTHS:
            shape = (4, 8, T, 64)
            arrays = [self.rng.standard_normal(shape, dtype=np.float32) for _ in range(3)]
            g_h = self.rng.standard_normal(shape, dtype=np.float32)
            q, k, v = (self.Variable(self.Tensor.from_numpy(a, device=self.dev), requires_grad=True) for a in arrays)
            g = self.Tensor.from_numpy(g_h, device=self.dev)

            def run(fn):
                def timed():
                    for t in (q, k, v):
                        t.zero_grad()
                    fn(q, k, v).backward(g)
                    self.finish()
                return timed

            fused = run(lambda a, b, c: F.scaled_dot_product_attention(a, b, c))
            composed = run(lambda a, b, c: ((a @ b.mT) * (1.0 / math.sqrt(64))).softmax(-1) @ c)
            fns = {"ours": fused, "composed": composed}
            composed()
            want = [t.grad().numpy() for t in (q, k, v)]
            fused()
            err = max(_rel_err(t.grad().numpy(), w) for t, w in zip((q, k, v), want))
            if self.torch:
                torch_run = self._torch_fwd_bwd(self.torch.nn.functional.scaled_dot_product_attention, arrays, g_h)[0]
                threads = self.torch.get_num_threads()

                def at(n):
                    def f():
                        self.torch.set_num_threads(n)
                        try:
                            torch_run()
                        finally:
                            self.torch.set_num_threads(threads)
                    return f

                fns["torch_2t"], fns["torch_1t"] = at(2), at(1)
            tm = measure(fns, *self.reps(10 if T <= 128 else 5, 3, 2, 1))
            ms, best = tm.convert(lambda x: x * 1e3)
            ours = ms.pop("ours")
            primary = "composed"
            target = {"text": "faster than composed", "baseline": "composed", "min_ratio": 1.0}
            if self.torch:
                primary = min(("torch_2t", "torch_1t"), key=lambda k: ms[k])
                if T >= 512:
                    target = {"text": "<= 1.0x torch sdpa (faster of 2/1 threads)", "baseline": primary,
                              "min_ratio": 1.0}
            rows.append(Row(f"attention_{T}", f"sdpa fwd+bwd [4,8,{T},64]: fused vs composed vs torch", "ms", "time",
                            ours, ms, primary, target, _err_note(err, "vs composed"), best=best))
        return rows

    def lstm(self):
        """An LSTM training step, eager and captured, against torch's nn.LSTM with the same weights."""
        np = self.np
        import axonml_autograd.nn as nn
        T, B, I, H = LSTM_SHAPE
        x_h = self.rng.standard_normal((T, B, I), dtype=np.float32)
        y_h = self.rng.standard_normal((T, B, H), dtype=np.float32)
        x = self.Variable(self.Tensor.from_numpy(x_h, device=self.dev))
        y = self.Variable(self.Tensor.from_numpy(y_h, device=self.dev))

        def trainer():
            model = nn.LSTM(I, H, seed=3, device=self.dev)
            opt, _ = make_sgd(list(model.parameters()), MLP_LR)

            def step():
                opt.zero_grad()
                out, _ = model(x)
                d = out - y
                loss = (d * d).mean()
                loss.backward()
                opt.step()
                return loss
            return model, step

        steps = 5 if self.quick else 10
        model, cstep, same, fns = self._eager_and_captured(trainer, steps)
        err_note = ""
        if self.torch:
            torch = self.torch
            ref = torch.nn.LSTM(I, H)
            with torch.no_grad():
                for name, p in ref.named_parameters():
                    p.copy_(torch.from_numpy(getattr(model, name).data().numpy()))
            tx, ty = torch.from_numpy(x_h), torch.from_numpy(y_h)
            topt = torch.optim.SGD(list(ref.parameters()), lr=MLP_LR)
            out, _ = model(x)
            err = _rel_err(out.numpy(), ref(tx)[0].detach().numpy())
            err_note = _err_note(err)

            def t_step():
                topt.zero_grad(set_to_none=True)
                out, _ = ref(tx)
                d = out - ty
                loss = (d * d).mean()
                loss.backward()
                topt.step()
            fns["torch"] = lambda: [t_step() for _ in range(steps)]
        t = measure(fns, *self.reps(10, 4, 2, 1))
        ms, best = t.convert(lambda v: v * 1e3 / steps)
        captured, best_captured = ms.pop("captured"), best.pop("captured", None)
        ours = ms.pop("ours")
        base = {k: v for k, v in ms.items()}
        notes = [err_note, f"{cstep.recordings} recording(s), {cstep.replays} replays",
                 "captured equals eager after 3 steps" if same else "WARNING: captured differs from eager"]
        rows = [Row("lstm", f"LSTM({I},{H}) step, T={T}, batch {B}", "ms/step", "time", ours, dict(base), "torch",
                    {"text": "<= 1.5x torch", "baseline": "torch", "min_ratio": 1 / 1.5} if self.torch
                    else {"text": "report"}, "; ".join(n for n in notes[:1] if n), best=best),
                Row("lstm_captured", "the same step through capture()", "ms/step", "time", captured, dict(base),
                    "torch", {"text": "<= 1.0x torch", "baseline": "torch", "min_ratio": 1.0} if self.torch
                    else {"text": "report"}, "; ".join(n for n in notes[1:] if n),
                    best={k: v for k, v in {**best, "ours": best_captured}.items() if v is not None})]
        return rows

    def _eager_and_captured(self, trainer, steps):
        """Two twins from ``trainer()`` (a model and its step function), one step eager and one through
        ``capture()``, three steps each: (the eager model, the captured step, whether the twins' parameters
        are equal, the timed functions "ours" and "captured", ``steps`` steps and a finish each)."""
        from axonml_autograd import capture
        model, eager_step = trainer()
        cmodel, cstep = trainer()
        cstep = capture(cstep)
        for _ in range(3):
            eager_step(), cstep()
        same = all(np_equal(a.data().numpy(), b.data().numpy())
                   for a, b in zip(model.parameters(), cmodel.parameters()))

        def run(step):
            def timed():
                for _ in range(steps):
                    step()
                self.finish()
            return timed
        return model, cstep, same, {"ours": run(eager_step), "captured": run(cstep)}

    def _model_step_rows(self, name, label, make_ours, make_torch, x_h, y_h, eager_target, captured_target):
        """A whole training step (forward, cross-entropy, backward, SGD with momentum) of a model built twice
        by ``make_ours`` (a seeded twin each call) and once in torch by ``make_torch(ours)`` (the same
        weights): eager and through ``capture()`` against torch's eager step, ms/step."""
        np = self.np
        from axonml_autograd.nn import functional as F
        from axonml_autograd.optim import SGD
        x = self.Variable(self.Tensor.from_numpy(x_h, device=self.dev))
        y = self.Tensor.from_numpy(y_h.astype(np.int32), device=self.dev)

        def trainer():
            model = make_ours()
            opt = SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step():
                opt.zero_grad()
                loss = F.cross_entropy(model(x).reshape(-1, model.classes), y.reshape(-1))
                loss.backward()
                opt.step()
                return loss
            return model, step

        steps = 3 if self.quick else 8
        _model, cstep, same, fns = self._eager_and_captured(trainer, steps)
        err_note = ""
        if self.torch:
            torch = self.torch
            fresh, _ = trainer()
            ref = make_torch(fresh)
            tx, ty = torch.from_numpy(x_h), torch.from_numpy(y_h.astype(np.int64))
            topt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
            err_note = _err_note(_rel_err(fresh(x).numpy(), ref(tx).detach().numpy()))

            def t_step():
                topt.zero_grad(set_to_none=True)
                out = ref(tx)
                loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), ty.reshape(-1))
                loss.backward()
                topt.step()
            fns["torch"] = lambda: [t_step() for _ in range(steps)]
        t = measure(fns, *self.reps(8, 3, 2, 1))
        ms, best = t.convert(lambda v: v * 1e3 / steps)
        captured, best_captured = ms.pop("captured"), best.pop("captured", None)
        ours = ms.pop("ours")
        notes = [err_note, f"{cstep.recordings} recording(s), {cstep.replays} replays; "
                 + ("captured equals eager after 3 steps" if same else "WARNING: captured differs from eager")]

        def target(limit):
            return {"text": f"<= {limit:g}x torch", "baseline": "torch", "min_ratio": 1 / limit} if self.torch \
                else {"text": "report"}
        return [Row(name, f"{label}, eager", "ms/step", "time", ours, dict(ms), "torch", target(eager_target),
                    notes[0], best=best),
                Row(f"{name}_captured", f"{label}, captured", "ms/step", "time", captured, dict(ms), "torch",
                    target(captured_target), notes[1],
                    best={k: v for k, v in {**best, "ours": best_captured}.items() if v is not None})]

    def cnn_step(self):
        """Issue 23's CNN: two Conv2d-BatchNorm-ReLU-MaxPool blocks and a Linear on 16x16 digits, batch 64."""
        np = self.np
        import axonml_autograd.nn as nn

        def make_ours():
            m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
            rng = np.random.default_rng(11)   # the same weights for every twin
            m.load_state_dict({k: (0.2 * rng.standard_normal(v.shape)).astype(np.float32) if "running" not in k
                               and "num_batches" not in k else v for k, v in m.state_dict().items()})
            m.classes = 10
            return m

        def make_torch(ours):
            torch = self.torch
            tn = torch.nn
            ref = tn.Sequential(tn.Conv2d(1, 16, 3, padding=1), tn.BatchNorm2d(16), tn.ReLU(), tn.MaxPool2d(2),
                                tn.Conv2d(16, 32, 3, padding=1), tn.BatchNorm2d(32), tn.ReLU(), tn.MaxPool2d(2),
                                tn.Flatten(), tn.Linear(32 * 4 * 4, 10))
            ref.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()})
            return ref

        x_h = self.rng.standard_normal((64, 1, 16, 16), dtype=np.float32)
        y_h = self.rng.integers(0, 10, 64)
        return self._model_step_rows("cnn_step", "CNN step (2x conv-BN-ReLU-pool, batch 64, 16x16)", make_ours,
                                     make_torch, x_h, y_h, 1.2, 0.9)

    def transformer_step(self):
        """Issue 23's transformer: a 2-layer GPT-style character model, d 64, 4 heads, T 32, batch 16."""
        np = self.np
        import axonml_autograd.nn as nn
        from axonml_autograd import arange
        V, D, H, T, B = 80, 64, 4, 32, 16

        class GPT(nn.Module):
            def __init__(self):
                super().__init__()
                self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
                self.blocks = nn.TransformerEncoder(nn.TransformerEncoderLayer(
                    D, H, 4 * D, dropout=0.0, activation="gelu", batch_first=True, norm_first=True), 2)
                self.norm, self.head = nn.LayerNorm(D), nn.Linear(D, V)
                self.mask = nn.Transformer.generate_square_subsequent_mask(T)
                self.where = arange(T, dtype="int32")
                self.classes = V

            def forward(self, idx):
                h = self.tok(idx) + self.pos(self.where)
                return self.head(self.norm(self.blocks(h, mask=self.mask, is_causal=True)))

        def make_ours():
            m = GPT()
            rng = np.random.default_rng(12)
            m.load_state_dict({k: (0.1 * rng.standard_normal(v.shape)).astype(np.float32) + (1.0 if "norm" in k
                               and k.endswith("weight") else 0.0) for k, v in m.state_dict().items()})
            return m

        def make_torch(ours):
            torch = self.torch
            tn = torch.nn

            class TorchGPT(tn.Module):
                def __init__(self):
                    super().__init__()
                    self.tok, self.pos = tn.Embedding(V, D), tn.Embedding(T, D)
                    self.blocks = tn.TransformerEncoder(tn.TransformerEncoderLayer(
                        D, H, 4 * D, dropout=0.0, activation="gelu", batch_first=True, norm_first=True), 2,
                        enable_nested_tensor=False)
                    self.norm, self.head = tn.LayerNorm(D), tn.Linear(D, V)
                    self.register_buffer("mask", tn.Transformer.generate_square_subsequent_mask(T))

                def forward(self, idx):
                    h = self.tok(idx) + self.pos(torch.arange(T))
                    return self.head(self.norm(self.blocks(h, mask=self.mask, is_causal=True)))
            ref = TorchGPT()
            ref.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()},
                                strict=False)
            return ref

        x_h = self.rng.integers(0, V, (B, T)).astype(np.int32)
        y_h = self.rng.integers(0, V, (B, T))
        return self._model_step_rows("transformer_step", f"2-layer transformer step (d {D}, {H} heads, T {T}, "
                                     f"batch {B})", make_ours, make_torch, x_h, y_h, 1.2, 0.9)

    def _torch_fwd_bwd(self, fn, arrays, g_h):
        """torch's forward + backward of ``fn`` over copies of ``arrays`` with upstream ``g_h``: the timed
        function (gradients reset each call) and the leaf tensors, whose ``.grad`` it fills."""
        torch = self.torch
        leaves = tuple(torch.from_numpy(a.copy()).requires_grad_(True) for a in arrays)
        tg = torch.from_numpy(g_h)

        def torch_run():
            for t in leaves:
                t.grad = None
            fn(*leaves).backward(tg)

        return torch_run, leaves

    def _mlp(self, seed=1):
        """Our MLP (weights [in, out]) with its data, an optimiser and a step function; plus numpy copies."""
        np = self.np
        Tensor, Variable = self.Tensor, self.Variable
        rng = np.random.default_rng(seed)
        sizes = MLP_SIZES
        host = {}
        for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / math.sqrt(i)
            host[f"w{k}"] = rng.uniform(-bound, bound, (i, o)).astype(np.float32)
            host[f"b{k}"] = rng.uniform(-bound, bound, (o,)).astype(np.float32)
        x_h = rng.standard_normal((MLP_BATCH, sizes[0]), dtype=np.float32)
        y_h = rng.integers(0, sizes[-1], MLP_BATCH).astype(np.int32)
        params = {k: Variable(Tensor.from_numpy(v, device=self.dev), requires_grad=True) for k, v in host.items()}
        x = Variable(Tensor.from_numpy(x_h, device=self.dev))
        y = Tensor.from_numpy(y_h, dtype="int32", device=self.dev)
        plist = list(params.values())
        opt, opt_note = make_sgd(plist, MLP_LR)

        def forward():
            h = x.matmul(params["w0"]).add_var(params["b0"]).relu()
            return h.matmul(params["w1"]).add_var(params["b1"]).cross_entropy(y)

        def step():
            opt.zero_grad()
            loss = forward()
            loss.backward()
            opt.step()
            return loss

        return dict(host=host, x_h=x_h, y_h=y_h, params=params, forward=forward, step=step, opt=opt,
                    opt_note=opt_note)

    def _torch_mlp(self, m):
        torch = self.torch
        tp = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in m["host"].items()}
        tx, ty = torch.from_numpy(m["x_h"]), torch.from_numpy(m["y_h"].astype(self.np.int64))
        opt = torch.optim.SGD(list(tp.values()), lr=MLP_LR)
        F = torch.nn.functional

        def forward():
            h = torch.relu(tx @ tp["w0"] + tp["b0"])
            return F.cross_entropy(h @ tp["w1"] + tp["b1"], ty)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = forward()
            loss.backward()
            opt.step()
            return loss

        return forward, step, tp

    def _numpy_mlp_step(self, m):
        np = self.np
        p = {k: v.copy() for k, v in m["host"].items()}
        x, y = m["x_h"], m["y_h"]
        rows = np.arange(len(y))

        def step():
            h_pre = x @ p["w0"] + p["b0"]
            h = np.maximum(h_pre, 0.0)
            z = h @ p["w1"] + p["b1"]
            e = np.exp(z - z.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            loss = -np.log(prob[rows, y]).mean()
            dz = prob
            dz[rows, y] -= 1.0
            dz /= len(y)
            dw1, db1 = h.T @ dz, dz.sum(axis=0)
            dh = dz @ p["w1"].T
            dh[h_pre <= 0] = 0.0
            dw0, db0 = x.T @ dh, dh.sum(axis=0)
            for k, g in (("w0", dw0), ("b0", db0), ("w1", dw1), ("b1", db1)):
                p[k] -= MLP_LR * g
            return loss

        return step

    def mlp(self):
        m = self._mlp()
        steps = 5 if self.quick else 10   # steps per timed repetition, then one finish()

        def ours():
            for _ in range(steps):
                m["step"]()
            self.finish()

        m["step"]()
        self.finish()
        reads, writes = count_transfers(lambda: (m["step"](), m["step"]()))   # two steps, no finish
        reads_per_step, writes_per_step = reads / 2, writes / 2
        fns = {"ours": ours}
        np_step = self._numpy_mlp_step(m)
        fns["numpy"] = lambda: [np_step() for _ in range(steps)]
        if self.torch:
            _, t_step, _ = self._torch_mlp(m)
            fns["torch"] = lambda: [t_step() for _ in range(steps)]
        t = measure(fns, *self.reps(10, 4, 2, 1))
        ms, best = t.convert(lambda v: v * 1e3 / steps)
        loss = m["forward"]().item()   # one read, after the timing: a finite loss says the steps ran
        notes = [f"d2h reads/step {reads_per_step:g}, h2d writes/step {writes_per_step:g}",
                 f"loss after training {loss:.3f}", m["opt_note"]]
        if not self.torch:
            notes.append("torch not installed: target not checked")
        if reads_per_step:
            notes.insert(0, "VIOLATION: a training step reads from the device")
        row = Row("mlp", "MLP 784-256-10 b128 fwd+bwd+SGD", "ms/step", "time", ms.pop("ours"), ms,
                  "torch" if self.torch else "numpy",
                  {"text": "<= 0.9x torch", "baseline": "torch", "min_ratio": 1 / 0.9}, "; ".join(n for n in notes if n),
                  best=best)
        row.d2h_reads_per_step = reads_per_step
        return row

    def mlp_captured(self):
        from axonml_autograd import capture
        m = self._mlp()
        steps = 5 if self.quick else 10
        step = capture(lambda: m["step"]())

        def ours():
            for _ in range(steps):
                step()
            self.finish()

        eager = self._mlp()             # a twin trained eagerly: the captured one must match it exactly
        for _ in range(3):
            step()
            eager["step"]()
        same = all(np_equal(a.data().numpy(), b.data().numpy())
                   for a, b in zip(m["params"].values(), eager["params"].values()))
        reads, _writes = count_transfers(lambda: (step(), step()))
        fns = {"ours": ours}
        if self.torch:
            _, t_step, _ = self._torch_mlp(m)
            fns["torch"] = lambda: [t_step() for _ in range(steps)]
        else:
            def eager_steps():
                for _ in range(steps):
                    eager["step"]()
                self.finish()
            fns["eager"] = eager_steps
        t = measure(fns, *self.reps(10, 4, 2, 1))
        ms, best = t.convert(lambda v: v * 1e3 / steps)
        notes = [f"{step.recordings} recording(s), {step.replays} replays; d2h reads/replay {reads / 2:g}",
                 "equal to an eager twin after 3 steps" if same else "WARNING: differs from an eager twin"]
        return Row("mlp_captured", "MLP step through capture()", "ms/step", "time", ms.pop("ours"), ms,
                   "torch" if self.torch else "eager",
                   {"text": "<= 0.6x torch", "baseline": "torch", "min_ratio": 1 / 0.6}, "; ".join(notes), best=best)

    def mlp_matmuls(self):
        """The five products of an MLP 784-256-10 step at batch 128, each against torch.mm."""
        from axonml_autograd.matmul import matmul
        np = self.np
        b, i, h, o = MLP_BATCH, *MLP_SIZES
        # (name, a shape, b shape, trans_a, trans_b): forward x@W0, h@W1; backward g@W1^T, h^T@g, x^T@g.
        shapes = [("x@w0", (b, i), (i, h), False, False), ("h@w1", (b, h), (h, o), False, False),
                  ("g@w1T", (b, o), (h, o), False, True), ("hT@g", (b, h), (b, o), True, False),
                  ("xT@g", (b, i), (b, h), True, False)]
        rows = []
        for name, sa, sb, ta, tb in shapes:
            a_h = self.rng.standard_normal(sa, dtype=np.float32)
            b_h = self.rng.standard_normal(sb, dtype=np.float32)
            a, bt = self.Tensor.from_numpy(a_h, device=self.dev), self.Tensor.from_numpy(b_h, device=self.dev)
            want = (a_h.T if ta else a_h) @ (b_h.T if tb else b_h)
            err = _rel_err(matmul(a, bt, trans_a=ta, trans_b=tb).numpy(), want)
            flop = 2.0 * want.shape[0] * want.shape[1] * (sa[0] if ta else sa[1])

            def ours(a=a, bt=bt, ta=ta, tb=tb):
                for _ in range(10):
                    matmul(a, bt, trans_a=ta, trans_b=tb)
                self.finish()

            fns = {"ours": ours, "numpy": lambda a_h=a_h, b_h=b_h, ta=ta, tb=tb: [
                (a_h.T if ta else a_h) @ (b_h.T if tb else b_h) for _ in range(10)]}
            if self.torch:
                x_t, y_t = self.torch.from_numpy(a_h), self.torch.from_numpy(b_h)
                fns["torch"] = lambda x_t=x_t, y_t=y_t, ta=ta, tb=tb: [
                    self.torch.mm(x_t.t() if ta else x_t, y_t.t() if tb else y_t) for _ in range(10)]
            t = measure(fns, *self.reps(15, 5))
            gf, best = t.convert(lambda v: 10 * flop / v / 1e9)
            primary = "torch" if self.torch else "numpy"
            rows.append(Row(f"mm_{name}", f"MLP matmul {name} {sa}{'T' if ta else ''} @ {sb}{'T' if tb else ''}",
                            "GFLOP/s", "throughput", gf.pop("ours"), gf, primary,
                            {"text": ">= 0.9x torch.mm", "baseline": "torch", "min_ratio": 0.9},
                            _err_note(err), best=best))
        return rows

    def mlp_backward(self):
        m = self._mlp()
        m["step"]()
        self.finish()
        params = list(m["params"].values())

        def ours():
            for p in params:
                p.zero_grad()
            loss = m["forward"]()
            self.finish()
            t0 = time.perf_counter()
            loss.backward()
            self.finish()
            return time.perf_counter() - t0

        fns = {"ours": ours}
        if self.torch:
            t_forward, _, tp = self._torch_mlp(m)

            def torch_run():
                for p in tp.values():
                    p.grad = None
                loss = t_forward()
                t0 = time.perf_counter()
                loss.backward()
                return time.perf_counter() - t0

            fns["torch"] = torch_run
        t = measure(fns, *self.reps(20, 6, 3, 2))
        ms, best = t.convert(lambda v: v * 1e3)
        target = {"text": "<= 1.2x torch", "baseline": "torch", "min_ratio": 1 / 1.2} if self.torch else {"text": "report"}
        return Row("mlp_backward", "MLP 784-256-10 b128 backward only", "ms", "time", ms.pop("ours"), ms,
                   "torch", target, "" if self.torch else "torch not installed: no baseline", best=best)

    def _chain(self):
        """The chain as ours (a Variable and a function) and, when installed, as torch."""
        half = CHAIN_OPS // 2
        x = self.Variable(self.Tensor.from_vec([1.0], [1], device=self.dev), requires_grad=True)

        def chain():
            x.zero_grad()
            y = x
            for _ in range(half):
                y = y.mul_scalar(0.999)
                y = y.add_scalar(0.001)
            y.sum().backward()

        torch_run = None
        if self.torch:
            tx = self.torch.ones(1, requires_grad=True)

            def torch_run():
                tx.grad = None
                y = tx
                for _ in range(half):
                    y = y * 0.999
                    y = y + 0.001
                y.sum().backward()

        return x, chain, torch_run, 0.999 ** half

    def chain(self):
        np = self.np
        half = CHAIN_OPS // 2
        x, chain, torch_run, want = self._chain()

        def ours():
            chain()
            self.finish()

        def numpy_manual():
            # The same chain with a hand-written tape on 1-element arrays: the floor of a Python engine.
            v, tape = np.ones(1, np.float32), []
            for _ in range(half):
                tape.append(0.999)
                v = v * np.float32(0.999)
                tape.append(1.0)
                v = v + np.float32(0.001)
            g = np.ones(1, np.float32)
            for d in reversed(tape):
                g = g * np.float32(d)
            return g

        ours()
        got = x.grad().numpy()[0]
        fns = {"ours": ours, "numpy": numpy_manual}
        if torch_run:
            fns["torch"] = torch_run
        t = measure(fns, *self.reps(10, 4, 2, 1))
        us, best = t.convert(lambda v: v * 1e6 / CHAIN_OPS)
        note = "" if abs(got - want) < 1e-4 else f"WARNING: grad {got} != {want}"
        if not self.torch:
            note = "; ".join(x for x in (note, "torch not installed: target not checked") if x)
        return Row("chain", f"{CHAIN_OPS}-op chain, 1 element, fwd+bwd", "us/op", "time", us.pop("ours"), us,
                   "torch" if self.torch else "numpy",
                   {"text": "<= 1.5x torch", "baseline": "torch", "min_ratio": 1 / 1.5}, note, best=best)

    def chain_captured(self):
        from axonml_autograd import capture
        x, chain, torch_run, want = self._chain()
        step = capture(chain)

        def ours():
            step()
            self.finish()

        def eager():
            chain()
            self.finish()

        ours()
        got = x.grad().numpy()[0]
        fns = {"ours": ours, **({"torch": torch_run} if torch_run else {"eager": eager})}
        t = measure(fns, *self.reps(10, 4, 2, 1))
        us, best = t.convert(lambda v: v * 1e6 / CHAIN_OPS)
        note = f"{step.replays} replays of {len(step._recordings)} recording(s)"
        if abs(got - want) >= 1e-4:
            note += f"; WARNING: grad {got} != {want}"
        return Row("chain_captured", f"{CHAIN_OPS}-op chain through capture()", "us/op", "time", us.pop("ours"), us,
                   "torch" if self.torch else "eager",
                   {"text": "<= 0.7x torch", "baseline": "torch", "min_ratio": 1 / 0.7}, note, best=best)

    def memory(self):
        import gc
        gc.collect()
        pool = self.dev.pool
        before = pool.in_use_bytes
        pool.peak_bytes = pool.in_use_bytes   # start the high-water mark here (benchmark-only reset)
        m = self._mlp()
        for _ in range(5 if self.quick else 20):
            m["step"]()
        self.finish()
        stats = self.dev.memory_stats()
        n_params = sum(v.size for v in m["host"].values())
        data = (m["x_h"].size + m["y_h"].size) * 4
        return Row("memory", "peak device memory, MLP loop", "MB", "value", stats["peak_bytes"] / 1e6,
                   target={"text": "report"},
                   notes=f"in use before {before / 1e6:.2f} MB; params {n_params * 4 / 1e6:.2f} MB, batch "
                         f"{data / 1e6:.2f} MB; pool holds {stats['pool_bytes'] / 1e6:.1f} MB")

    def first_step(self):
        runs = {"cold": [], "warm": []}
        created = 0
        with tempfile.TemporaryDirectory(prefix="axonml_bench_cache_") as tmp:
            cold_runs = 1 if self.quick else 2
            for k in range(cold_runs):
                cache = os.path.join(tmp, f"cache{k}")
                runs["cold"].append(_child_first_step(self.args.device, cache))
                created = _count_files(cache)
            for _ in range(1 if self.quick else 3):   # warm: the caches the last cold run filled
                runs["warm"].append(_child_first_step(self.args.device, cache))
        rows = []
        for kind, limit in (("cold", 3.0), ("warm", 0.5)):
            rs = runs[kind]
            med = statistics.median(r["to_first_step_s"] for r in rs)
            r0 = rs[0]
            note = (f"first run: import {r0['import_s']:.2f} s, device {r0['device_s']:.2f} s, "
                    f"forward+backward {r0['step_s']:.2f} s, "
                    f"{r0['builds']} programs built; process wall {statistics.median(r['wall_s'] for r in rs):.2f} s")
            if kind == "cold":
                note += f"; {created} files in the fresh cache dirs afterwards"
            rows.append(Row(f"first_step_{kind}", f"fresh process, first MLP gradient ({kind} caches)", "s", "value", med,
                            target={"text": f"<= {limit:g} s", "max_value": limit}, notes=note))
        return rows


def _charlm_capture_bytes(amp):
    """Device bytes held after train_charlm's model (d=64, 4 heads, 2 layers, T=64, batch 32) has taken
    three captured AdamW steps, ``amp`` None (float32) or a 16-bit autocast dtype: the model, its
    optimiser state and the recording's buffers (what the step needs on the device)."""
    import gc
    import numpy as np
    import train_charlm as tc
    from axonml_autograd import Tensor, Variable, autocast, capture, default_device, manual_seed, randint
    from axonml_autograd.nn import functional as F
    from axonml_autograd.optim import AdamW
    gc.collect()
    dev = default_device()
    before = dev.memory_stats()["in_use_bytes"]
    manual_seed(0)
    vocab, batch, context = 80, 32, 64
    model = tc.CharTransformer(vocab, 64, 4, 2, context, 0.0)
    opt = AdamW(model.parameters(), lr=1e-3)
    data = Variable(Tensor.from_numpy(np.random.default_rng(0).integers(0, vocab, 5000).astype(np.int32)))

    def step():
        x, y = tc.windows(data, batch, context, randint(0, 5000 - context - 1, [batch]))
        opt.zero_grad()
        with autocast(dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss
    step = capture(step)
    for _ in range(3):
        loss = step()
    loss.item()
    held = dev.memory_stats()["in_use_bytes"] - before
    del step, model, opt, loss
    gc.collect()
    return held


def make_sgd(params, lr):
    """``axonml_autograd.optim.SGD`` when importable, else the same update as an elementwise kernel."""
    try:
        from axonml_autograd.optim import SGD
        return SGD(params, lr=lr), "optimiser: axonml_autograd.optim.SGD"
    except ImportError as e:
        from axonml_autograd.elementwise_kernels import elementwise

        class _FallbackSGD:
            def zero_grad(self):
                for p in params:
                    p.zero_grad()

            def step(self):
                for p in params:
                    g = p.grad()
                    if g is not None:
                        data = p.data()
                        elementwise("p - lr * g", [data, g], names=("p", "g"), scalars={"lr": lr},
                                    out=data.view(), op="sgd")

        return _FallbackSGD(), f"optimiser: elementwise fallback (optim.SGD not importable: {e})"


def count_transfers(fn):
    """Run ``fn`` counting pyopencl copies to the host (reads) and from it (writes)."""
    import pyopencl as cl
    counts = {"read": 0, "write": 0}
    real = cl.enqueue_copy

    def counting(queue, dest, src, **kw):
        if isinstance(dest, cl.MemoryObjectHolder):
            if not isinstance(src, cl.MemoryObjectHolder):
                counts["write"] += 1
        else:
            counts["read"] += 1
        return real(queue, dest, src, **kw)

    cl.enqueue_copy = counting
    try:
        fn()
    finally:
        cl.enqueue_copy = real
    return counts["read"], counts["write"]


def np_equal(a, b):
    import numpy as np
    return bool(np.array_equal(a, b))


def _rel_err(got, want):
    import numpy as np
    return float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))


def _err_note(err, extra=""):
    warn = f"WARNING: max rel error {err:.1e}" if err > 1e-3 else ""
    return "; ".join(x for x in (warn, extra) if x)


def _count_files(path):
    return sum(len(files) for _, _, files in os.walk(path))


# ------------------------------------------------------------------------------------------------------
# The fresh-process first step
# ------------------------------------------------------------------------------------------------------

def first_step_env(cache_dir, base=None) -> dict:
    """The environment of a --child-first-step process: ``base`` (default ``os.environ``) with every
    kernel cache pointed under ``cache_dir``, whatever the user's own settings.

    Three caches decide whether a fresh process compiles: the library's own binary cache
    (``kernels.binary_cache_dir``: AXONML_KERNEL_CACHE, else under XDG_CACHE_HOME), PoCL's
    (POCL_CACHE_DIR, default ~/.cache/pocl; pyopencl defers to it for PoCL) and pyopencl's compiler
    and invoker caches (under XDG_CACHE_HOME). A user's AXONML_KERNEL_CACHE (or one set to 0) would
    otherwise make the cold row read a warm cache, or none. ``cache_dir`` is empty the first time
    (cold) and filled by that run (warm).
    """
    env = dict(os.environ if base is None else base)
    env["AXONML_KERNEL_CACHE"] = os.path.join(cache_dir, "axonml")
    env["POCL_CACHE_DIR"] = os.path.join(cache_dir, "pocl")
    env["XDG_CACHE_HOME"] = os.path.join(cache_dir, "xdg")
    env.pop("POCL_KERNEL_CACHE", None)   # PoCL's switch for its cache: the warm row measures it on
    for key in ("AXONML_KERNEL_CACHE", "POCL_CACHE_DIR", "XDG_CACHE_HOME"):
        os.makedirs(env[key], exist_ok=True)
    return env


def _child_first_step(device, cache_dir):
    """Run this script with --child-first-step with every kernel cache under ``cache_dir`` (see
    :func:`first_step_env`)."""
    env = first_step_env(cache_dir)
    cmd = [sys.executable, os.path.abspath(__file__), "--child-first-step"]
    if device is not None:
        cmd += ["--device", device]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"first-step child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def child_first_step(device):
    """In a fresh process: import, pick the device, build a model, run one training step, report times."""
    t_start = time.perf_counter()
    import numpy as np

    from axonml_autograd import Tensor, Variable, get_device, kernels
    t_import = time.perf_counter()
    dev = get_device(device)
    t_device = time.perf_counter()
    rng = np.random.default_rng(0)
    w0 = Variable(Tensor.from_numpy(rng.uniform(-0.03, 0.03, (784, 256)).astype(np.float32), device=dev), True)
    b0 = Variable(Tensor.zeros([256], device=dev), True)
    w1 = Variable(Tensor.from_numpy(rng.uniform(-0.06, 0.06, (256, 10)).astype(np.float32), device=dev), True)
    b1 = Variable(Tensor.zeros([10], device=dev), True)
    x = Variable(Tensor.from_numpy(rng.standard_normal((MLP_BATCH, 784), dtype=np.float32), device=dev))
    y = Tensor.from_numpy(rng.integers(0, 10, MLP_BATCH).astype(np.int32), dtype="int32", device=dev)
    x.matmul(w0).add_var(b0).relu().matmul(w1).add_var(b1).cross_entropy(y).backward()
    dev.synchronize()
    t_step = time.perf_counter()
    print(json.dumps({"import_s": t_import - t_start, "device_s": t_device - t_import,
                      "step_s": t_step - t_device, "to_first_step_s": t_step - t_start,
                      "builds": kernels.build_count()}))


# ------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    if args.child_first_step:
        child_first_step(args.device)
        return 0
    reexec_without_openblas_env()

    import numpy as np

    from axonml_autograd import get_device, set_default_device

    t_begin = time.perf_counter()
    torch, torch_note = load_torch(args.no_torch)
    dev = set_default_device(args.device) if args.device is not None else get_device(None)
    cl_dev = dev.cl_device
    removed = os.environ.get(REEXEC_MARK)

    print("axonml-autograd benchmark" + (" (--quick)" if args.quick else ""))
    print(f"machine : {cpu_model()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    print(f"device  : {dev.selector} {dev.name} ({dev.type}, {dev.compute_units} compute units), "
          f"platform {cl_dev.platform.name.strip()} [{cl_dev.platform.version.strip()}], "
          f"driver {dev.info.driver_version}, {cl_dev.version.strip()}")
    print(f"numpy   : {np.__version__}, BLAS: {blas_summary(np)}")
    print("          " + (f"re-executed with {removed.replace(',', ', ')} unset" if removed else
                          "no OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment"))
    print(f"torch   : {torch_note}")
    print("ratio   : > 1 means we are faster (throughput rows: ours / baseline; time rows: baseline "
          "time / our time)")
    print("timing  : medians of repetitions run in blocks that take turns (2-3 rounds, each block after "
          "its own warm-up); each of our repetitions ends in device.synchronize()")

    bench = Bench(args, dev, torch, np)
    sgemm_sizes = [n for n in SGEMM_SIZES if not (args.quick and n == 2048)]
    plan = []
    for name in ALL_ROWS if args.selected is None else args.selected:
        if name == "sgemm":
            plan += [(f"sgemm_{n}", lambda n=n: bench.sgemm(n)) for n in sgemm_sizes]
        elif name.startswith("sgemm_"):
            plan.append((name, lambda n=int(name[6:]): bench.sgemm(n)))
        else:
            plan.append((name, getattr(bench, name)))

    print_header()
    results, failures = {}, {}
    import gc
    for name, fn in plan:
        gc.collect()
        try:
            out = fn()
        except Exception as e:  # one broken row should not hide the others
            failures[name] = f"{type(e).__name__}: {e}"
            print(f"{name:<16}FAILED: {failures[name]}", flush=True)
            continue
        for row in out if isinstance(out, list) else [out]:
            results[row.name] = row
            print_row(row)
    elapsed = time.perf_counter() - t_begin
    missed = [r.name for r in results.values() if r.met is False]
    print("-" * 112)
    print(f"{len(results)} rows in {elapsed:.1f} s; targets missed: {', '.join(missed) if missed else 'none'}"
          + (f"; rows failed: {', '.join(failures)}" if failures else ""))

    if args.json:
        doc = {
            "meta": {"quick": args.quick, "cpu": cpu_model(), "cores": os.cpu_count(),
                     "load_average": os.getloadavg()[0], "device": dev.name, "device_selector": dev.selector,
                     "platform": cl_dev.platform.name.strip(), "platform_version": cl_dev.platform.version.strip(),
                     "driver_version": dev.info.driver_version, "numpy": np.__version__, "blas": blas_summary(np),
                     "openblas_env_unset": removed or None,
                     "torch": torch.__version__ if torch else None, "elapsed_s": elapsed,
                     "ratio_convention": "> 1 means ours is faster: throughput ours/baseline, "
                                         "time baseline/ours"},
            "rows": {name: row.to_json() for name, row in results.items()},
            "failed": failures,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"wrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
