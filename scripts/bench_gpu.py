#!/usr/bin/env python3
"""Our GPU rows against PyTorch on the same GPU (CUDA or ROCm), for the GPU check.

    python3 scripts/bench_gpu.py --json out.json          # on a machine with an OpenCL GPU and torch.cuda
    python3 scripts/bench_gpu.py --dry-run                # small sizes, torch on the CPU standing in

Rows, each with its target (the GPU issue's): matmul 2048 and 4096 fp32 (>= 0.5x torch.mm through
cuBLAS, TF32 off; the TF32 figure is printed beside it), add and sum of 64M float32 (>= 0.7x torch's
GB/s), cross-entropy forward+backward [128, 1000] (report), and the MLP 784-256-10 step at batch 128
eagerly (<= 1.5x torch's time) and through ``capture()`` (<= 1.0x); then 16-bit rows (report): matmul
in float16 against torch's half GEMM, and the MLP step under autocast with a GradScaler, eager and
captured, against torch's autocast + GradScaler. Timing and ratios follow
``bench.py`` (medians of blocks that take turns; "> 1 means we are faster"); every one of our
repetitions ends in ``device.synchronize()``, every torch one in ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import MLP_BATCH, MLP_LR, MLP_SIZES, Row, measure, print_header, print_row  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="OpenCL device (default: AXONML_DEVICE, then the first GPU)")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--dry-run", action="store_true", help="small sizes; torch on the CPU if it has no GPU")
    args = p.parse_args(argv)

    import numpy as np

    from axonml_autograd import Tensor, Variable, capture, get_device, set_default_device
    from axonml_autograd.matmul import matmul
    from axonml_autograd.optim import SGD

    dev = set_default_device(args.device) if args.device else get_device(None)
    try:
        import torch
    except ImportError:
        torch = None
    gpu = torch is not None and torch.cuda.is_available()
    if torch is None or not (gpu or args.dry_run):
        print("bench_gpu.py: no torch with a GPU (use --dry-run to stand torch's CPU in)", file=sys.stderr)
        return 2
    tdev = torch.device("cuda" if gpu else "cpu")
    tsync = torch.cuda.synchronize if gpu else (lambda: None)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    small = args.dry_run
    print(f"device : {dev.selector} {dev.name} ({dev.type}), driver {dev.info.driver_version}, "
          f"{dev.info.opencl_c_version}")
    print(f"torch  : {torch.__version__} on {torch.cuda.get_device_name() if gpu else 'cpu (stand-in: dry run)'}"
          f"; TF32 off for the baseline")
    rng = np.random.default_rng(0)
    rows = []

    def timed(ours, theirs, warm=2, reps=10):
        return measure({"ours": lambda: (ours(), dev.synchronize()), "torch": lambda: (theirs(), tsync())},
                       warm, reps)

    for n in ((256, 512) if small else (2048, 4096)):
        a_h = rng.standard_normal((n, n), dtype=np.float32)
        b_h = rng.standard_normal((n, n), dtype=np.float32)
        a, b = Tensor.from_numpy(a_h), Tensor.from_numpy(b_h)
        ta, tb = torch.from_numpy(a_h).to(tdev), torch.from_numpy(b_h).to(tdev)
        err = float(np.abs(matmul(a, b).numpy() - a_h @ b_h).max() / np.abs(a_h @ b_h).max())
        t = timed(lambda: matmul(a, b), lambda: ta @ tb)
        gf, best = t.convert(lambda v: 2.0 * n ** 3 / v / 1e9)
        note = f"max rel error {err:.1e}"
        if gpu:
            torch.backends.cuda.matmul.allow_tf32 = True
            tf32 = timed(lambda: None, lambda: ta @ tb)
            torch.backends.cuda.matmul.allow_tf32 = False
            note += f"; torch with TF32 {2.0 * n ** 3 / tf32['torch'] / 1e9:.0f} GFLOP/s"
        rows.append(Row(f"matmul_{n}", f"sgemm {n}", "GFLOP/s", "throughput", gf.pop("ours"), gf, "torch",
                        {"text": ">= 0.5x torch.mm", "baseline": "torch", "min_ratio": 0.5}, note, best=best))

    n = (1 << 20) if small else (64 << 20)
    x_h, y_h = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    x, y = Tensor.from_numpy(x_h), Tensor.from_numpy(y_h)
    tx, ty = torch.from_numpy(x_h).to(tdev), torch.from_numpy(y_h).to(tdev)
    tout = torch.empty_like(tx)
    t = timed(lambda: x + y, lambda: torch.add(tx, ty, out=tout))
    gbs, best = t.convert(lambda v: 3 * n * 4 / v / 1e9)
    rows.append(Row("add", f"add {n >> 20}M float32", "GB/s", "throughput", gbs.pop("ours"), gbs, "torch",
                    {"text": ">= 0.7x torch", "baseline": "torch", "min_ratio": 0.7}, best=best))
    t = timed(lambda: x.sum(), lambda: tx.sum())
    gbs, best = t.convert(lambda v: n * 4 / v / 1e9)
    rows.append(Row("sum", f"sum {n >> 20}M float32", "GB/s", "throughput", gbs.pop("ours"), gbs, "torch",
                    {"text": ">= 0.7x torch", "baseline": "torch", "min_ratio": 0.7},
                    f"ours {x.sum().item():.3f} vs float64 {float(x_h.astype(np.float64).sum()):.3f}", best=best))

    logits_h = rng.standard_normal((128, 1000), dtype=np.float32)
    labels_h = rng.integers(0, 1000, 128).astype(np.int32)
    logits = Variable(Tensor.from_numpy(logits_h), requires_grad=True)
    labels = Tensor.from_numpy(labels_h, dtype="int32")
    tl = torch.from_numpy(logits_h).to(tdev).requires_grad_(True)
    tlab = torch.from_numpy(labels_h.astype(np.int64)).to(tdev)

    def ce_ours():
        logits.zero_grad()
        logits.cross_entropy(labels).backward()

    def ce_torch():
        tl.grad = None
        torch.nn.functional.cross_entropy(tl, tlab).backward()

    t = timed(ce_ours, ce_torch)
    ms, best = t.convert(lambda v: v * 1e3)
    rows.append(Row("softmax_ce", "cross-entropy fwd+bwd [128,1000]", "ms", "time", ms.pop("ours"), ms, "torch",
                    {"text": "report"}, best=best))

    # The MLP step, ours eager and captured against torch eager, from the same initial weights.
    host = {}
    for k, (i, o) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:])):
        bound = 1.0 / math.sqrt(i)
        host[f"w{k}"] = rng.uniform(-bound, bound, (i, o)).astype(np.float32)
        host[f"b{k}"] = rng.uniform(-bound, bound, (o,)).astype(np.float32)
    xb_h = rng.standard_normal((MLP_BATCH, MLP_SIZES[0]), dtype=np.float32)
    yb_h = rng.integers(0, MLP_SIZES[-1], MLP_BATCH).astype(np.int32)

    def our_step_fn():
        ps = {k: Variable(Tensor.from_numpy(v), requires_grad=True) for k, v in host.items()}
        xb, yb = Variable(Tensor.from_numpy(xb_h)), Tensor.from_numpy(yb_h, dtype="int32")
        opt = SGD(list(ps.values()), lr=MLP_LR)

        def step():
            opt.zero_grad()
            h = xb.matmul(ps["w0"]).add_var(ps["b0"]).relu()
            loss = h.matmul(ps["w1"]).add_var(ps["b1"]).cross_entropy(yb)
            loss.backward()
            opt.step()
            return loss
        return step

    tp = {k: torch.from_numpy(v.copy()).to(tdev).requires_grad_(True) for k, v in host.items()}
    txb, tyb = torch.from_numpy(xb_h).to(tdev), torch.from_numpy(yb_h.astype(np.int64)).to(tdev)
    topt = torch.optim.SGD(list(tp.values()), lr=MLP_LR)

    def torch_step():
        topt.zero_grad(set_to_none=True)
        h = torch.relu(txb @ tp["w0"] + tp["b0"])
        torch.nn.functional.cross_entropy(h @ tp["w1"] + tp["b1"], tyb).backward()
        topt.step()

    steps = 10
    for name, ours, target in (("mlp", our_step_fn(), 1 / 1.5), ("mlp_captured", capture(our_step_fn()), 1.0)):
        t = timed(lambda: [ours() for _ in range(steps)], lambda: [torch_step() for _ in range(steps)])
        ms, best = t.convert(lambda v: v * 1e3 / steps)
        rows.append(Row(name, f"MLP 784-256-10 b128 step{' (captured)' if 'captured' in name else ''}", "ms/step",
                        "time", ms.pop("ours"), ms, "torch",
                        {"text": f"<= {1 / target:g}x torch", "baseline": "torch", "min_ratio": target}, best=best))

    # 16-bit (issue 21): the matmul in float16 against torch's half GEMM, and the MLP step under autocast
    # with a GradScaler against torch's. A dry run has torch on the CPU: bfloat16 there (its CPU autocast).
    low, tlow, tkind = ("float16", torch.float16, "cuda") if gpu else ("bfloat16", torch.bfloat16, "cpu")
    from axonml_autograd import GradScaler, autocast
    for n in ((256,) if small else (2048, 4096)):
        a_h = rng.standard_normal((n, n), dtype=np.float32)
        b_h = rng.standard_normal((n, n), dtype=np.float32)
        a, b = Tensor.from_numpy(a_h).astype(low), Tensor.from_numpy(b_h).astype(low)
        ta, tb = torch.from_numpy(a_h).to(tdev).to(tlow), torch.from_numpy(b_h).to(tdev).to(tlow)
        t = timed(lambda: matmul(a, b), lambda: ta @ tb)
        gf, best = t.convert(lambda v: 2.0 * n ** 3 / v / 1e9)
        rows.append(Row(f"mm_{'f16' if low == 'float16' else 'bf16'}_{n}", f"matmul {n} {low}", "GFLOP/s", "throughput", gf.pop("ours"), gf,
                        "torch", {"text": "report"}, "float32 accumulation, one rounding", best=best))

    def our_amp_step_fn():
        ps = {k: Variable(Tensor.from_numpy(v), requires_grad=True) for k, v in host.items()}
        xb, yb = Variable(Tensor.from_numpy(xb_h)), Tensor.from_numpy(yb_h, dtype="int32")
        opt = SGD(list(ps.values()), lr=MLP_LR)
        scaler = GradScaler()

        def step():
            opt.zero_grad()
            with autocast(dtype=low):
                h = xb.matmul(ps["w0"]).add_var(ps["b0"]).relu()
                loss = h.matmul(ps["w1"]).add_var(ps["b1"]).cross_entropy(yb)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return loss
        return step

    tscaler = torch.amp.GradScaler(tkind)

    def torch_amp_step():
        topt.zero_grad(set_to_none=True)
        with torch.autocast(tkind, dtype=tlow):
            h = torch.relu(txb @ tp["w0"] + tp["b0"])
            loss = torch.nn.functional.cross_entropy(h @ tp["w1"] + tp["b1"], tyb)
        tscaler.scale(loss).backward()
        tscaler.step(topt)
        tscaler.update()

    for name, ours in (("amp_mlp", our_amp_step_fn()), ("amp_mlp_capt", capture(our_amp_step_fn()))):
        t = timed(lambda: [ours() for _ in range(steps)], lambda: [torch_amp_step() for _ in range(steps)])
        ms, best = t.convert(lambda v: v * 1e3 / steps)
        rows.append(Row(name, f"MLP step, autocast {low} + GradScaler{' (captured)' if 'captured' in name else ''}",
                        "ms/step", "time", ms.pop("ours"), ms, "torch", {"text": "report"}, best=best))

    print_header()
    for r in rows:
        print_row(r)
    missed = [r.name for r in rows if r.met is False]
    print(f"targets missed: {', '.join(missed) if missed else 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": {"device": dev.name, "driver": dev.info.driver_version, "gpu_baseline": gpu,
                                "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")},
                       "rows": {r.name: r.to_json() for r in rows}}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
