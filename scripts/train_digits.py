#!/usr/bin/env python3
"""Train an MLP or a small CNN on scikit-learn's handwritten digits (8x8 images, 10 classes) with axonml-autograd.

The data set ships inside scikit-learn's wheel (``load_digits``: 1,797 images), so nothing is
downloaded. Everything after the one-off preprocessing runs on the OpenCL device: the training set
is uploaded in shuffled order once per epoch, mini-batches are slices of it, and forward, backward and
the Adam step never read from the device. The loss and accuracy are read once per epoch for display.

    python scripts/train_digits.py                      # defaults: >= 96 % test accuracy
    python scripts/train_digits.py --device 0:0 --epochs 40 --out runs/digits
    python scripts/train_digits.py --resume runs/digits/checkpoint.npz --epochs 60
    python scripts/train_digits.py --no-capture          # every step eagerly (the same numbers, slower)
    mpiexec -n 2 python scripts/train_digits.py --distributed   # data-parallel over two processes
    python scripts/train_digits.py --model cnn           # conv-relu-pool x2 + linear: >= 98 % test accuracy

Each training step (zero_grad, forward, backward, Adam) runs through ``capture``: the first call per
batch shape records its device work and later calls replay it with no Python per op. The learning
rate set per epoch is honoured by the replays.

With ``--distributed`` (under ``mpiexec -n N``) each rank takes its share of every epoch
(``DistributedSampler``), ``--batch-size`` rows per step, and ``DistributedDataParallel`` averages the
gradients during backward; steps then run eagerly (the all-reduce reads the host, which a capture
refuses). Only rank 0 prints and writes the artefacts.

Artefacts in ``--out``: ``checkpoint.npz`` (parameters, optimiser state, history; written at the
end of every epoch), ``history.json`` and ``history.png`` (when matplotlib is installed).
``--epochs`` is the total: a resumed run continues from the checkpoint's epoch up to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

from axonml_autograd import (DeviceError, GradScaler, Tensor, Variable, autocast, bfloat16, capture, distributed,
                             float16, no_grad, serialization, set_default_device)
import axonml_autograd.nn.functional as F
from axonml_autograd import init
from axonml_autograd.nn import MLP, Conv2d, Linear, Module
from axonml_autograd.optim import Adam
from axonml_autograd.elementwise_kernels import elementwise

CHECKPOINT_NAME = "checkpoint.npz"
MODELS = ("mlp", "cnn")


class DigitsCNN(Module):
    """conv 3x3 (1 -> c1, padding 1), relu, max-pool 2, conv 3x3 (c1 -> c2, padding 1), relu, max-pool 2,
    flatten, linear (c2 * 2 * 2 -> 10): the 8x8 image shrinks to 4x4, then 2x2."""

    def __init__(self, channels=(32, 64), classes=10, seed=0, dtype="float32"):
        c1, c2 = channels
        self.channels = (c1, c2)
        self.conv1 = Conv2d(1, c1, 3, padding=1, seed=init.derive_seed(seed, 0), dtype=dtype)
        self.conv2 = Conv2d(c1, c2, 3, padding=1, seed=init.derive_seed(seed, 1), dtype=dtype)
        self.fc = Linear(c2 * 2 * 2, classes, seed=init.derive_seed(seed, 2), dtype=dtype)

    def forward(self, x):
        n = x.shape()[0]
        h = x.reshape([n, 1, 8, 8])
        h = F.max_pool2d(self.conv1(h).relu(), 2)
        h = F.max_pool2d(self.conv2(h).relu(), 2)
        return self.fc(h.reshape([n, -1]))

    def __repr__(self):
        c1, c2 = self.channels
        return (f"CNN conv3x3 1->{c1}, relu, maxpool 2, conv3x3 {c1}->{c2}, relu, maxpool 2, "
                f"linear {c2 * 4}->10")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="mlp", choices=MODELS, help="mlp: 64-hidden-10; cnn: two conv layers "
                   "(--channels) and a linear one (with --resume, the checkpoint's model is used)")
    p.add_argument("--channels", default="32,64", help="the CNN's two conv layers' output channels")
    p.add_argument("--epochs", type=int, default=None, help="total number of epochs (default: 20 for the "
                   "MLP, 30 for the CNN)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's initial learning rate")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"],
                   help="learning rate per epoch: cosine decay from --lr to 0 over --epochs, or constant")
    p.add_argument("--hidden", type=int, default=128, help="hidden units (ignored with --resume)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the fixed train/test split")
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--device", default=None,
                   help="OpenCL device: 'platform:device' indices or a name substring "
                        "(default: AXONML_DEVICE, PYOPENCL_CTX, then the best GPU, then the CPU)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                   help="mixed precision: float32 weights, products in bfloat16/float16 under autocast; "
                        "fp16 adds a GradScaler")
    p.add_argument("--out", default=os.path.join("runs", "digits"), help="artefact directory")
    p.add_argument("--resume", default=None, metavar="PATH", help="checkpoint to continue from")
    p.add_argument("--no-capture", action="store_true", help="run every step eagerly instead of replaying a "
                   "captured step")
    p.add_argument("--no-progress", action="store_true", help="print one line per epoch, no progress bar")
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    p.add_argument("--stop-after", type=int, default=None, metavar="EPOCH",
                   help="stop after this epoch as if interrupted (the schedule still spans --epochs)")
    p.add_argument("--min-accuracy", type=float, default=None,
                   help="exit with status 2 if the final test accuracy (%%) is lower")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of an `mpiexec -n N` launch (batch size per rank)")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 30 if args.model == "cnn" else 20
    try:
        args.channels = tuple(int(c) for c in args.channels.split(","))
        if len(args.channels) != 2 or min(args.channels) < 1:
            raise ValueError
    except ValueError:
        p.error(f"--channels must be two positive ints like 32,64, got {args.channels!r}")
    for name in ("epochs", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.test_size < 1:
        p.error("--test-size must be between 0 and 1")
    return args


def load_data(split_seed, test_size):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("train_digits.py needs scikit-learn (the 'examples' extra): pip install -e '.[examples]'")
    x, y = load_digits(return_X_y=True)
    x = x / 16.0                                 # pixel intensities are 0..16
    x_train, x_test, y_train, y_test = train_test_split(x, y.astype(np.int32), test_size=test_size,
                                                        random_state=split_seed, stratify=y)
    # Standardise each pixel with the training set's statistics: Adam then converts in fewer epochs
    # and more reliably than on raw [0, 1] intensities. The 0.1 keeps the border pixels, which are
    # almost always blank, from being blown up.
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 0.1
    return (x_train - mean) / std, (x_test - mean) / std, y_train, y_test, (mean, std)


def accumulate(total: Tensor, value: Tensor, scale=1.0):
    """total += scale * value on the device (running sums for the epoch, read once at its end)."""
    elementwise("a + b * s", [total, value], scalars={"s": scale}, out=total.view(), op="accumulate")


def lr_at(args, epoch) -> float:
    if args.schedule == "constant":
        return args.lr
    return args.lr * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))


def correct_count(logits: Tensor, labels: Tensor) -> Tensor:
    """How many rows' argmax equals the label, as a 0-d device tensor."""
    # float32 whatever the logits are: a bfloat16 sum could not count past 256 exactly
    hits = elementwise("(float)(a == b)", [logits.argmax(1), labels], dtype="float32", op="hits")
    return hits.sum()


AMP_DTYPES = {"off": None, "bf16": bfloat16, "fp16": float16}


def evaluate(model, x: Tensor, y: Tensor, amp=None) -> float:
    with no_grad(), autocast(dtype=amp, enabled=amp is not None):
        logits = model(Variable(x)).data()
    return correct_count(logits, y).item() / x.shape()[0]


def save_plot(history, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["loss"] for h in history], marker=".")
    ax1.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log", title="loss")
    ax2.plot(epochs, [100 * h["train_accuracy"] for h in history], marker=".", label="train")
    ax2.plot(epochs, [100 * h["test_accuracy"] for h in history], marker=".", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    rank, world = 0, 1
    if args.distributed:
        distributed.init()    # before the device is chosen: each local rank gets its own where there are several
        rank, world = distributed.rank(), distributed.world_size()
    lead = rank == 0          # only rank 0 prints and writes files
    say = (lambda *a: None) if args.quiet or not lead else print
    show = print if lead else (lambda *a, **k: None)
    t_start = time.perf_counter()
    try:
        device = set_default_device(args.device)
    except DeviceError as e:
        sys.exit(f"train_digits.py: {e}")

    x_train, x_test, y_train, y_test, (mean, std) = load_data(args.split_seed, args.test_size)
    n_train, n_features = x_train.shape
    n_classes = 10
    test_x = Tensor.from_numpy(x_test, dtype=args.dtype)
    test_y = Tensor.from_numpy(y_test, dtype="int32")

    hidden, start_epoch, history = args.hidden, 0, []
    model_kind, channels = args.model, args.channels
    if args.resume:
        try:
            meta = serialization.read(args.resume).metadata
        except (OSError, serialization.CheckpointError) as e:
            sys.exit(f"train_digits.py: cannot resume: {e}")
        hidden = int(meta.get("hidden", hidden))
        model_kind = meta.get("model", "mlp")
        channels = tuple(meta.get("channels", channels))
        start_epoch = int(meta.get("epoch", 0))
        history = list(meta.get("history", []))
    if model_kind == "cnn":
        model = DigitsCNN(channels, n_classes, seed=args.seed, dtype=args.dtype)
    else:
        model = MLP([n_features, hidden, n_classes], seed=args.seed, dtype=args.dtype)
    params = dict(model.named_parameters())
    opt = Adam(model.parameters(), lr=args.lr)
    if args.resume:
        try:
            serialization.load_into(args.resume, params, optimizer=opt)
        except serialization.CheckpointError as e:
            sys.exit(f"train_digits.py: cannot resume: {e}")
        say(f"resumed from {args.resume} at epoch {start_epoch}")
    ddp = sampler = None
    if args.distributed:
        # Rank 0's parameters go to every rank; gradients are averaged during each backward.
        ddp = distributed.DistributedDataParallel(model)
        # The order depends only on (seed, epoch), as below; in a world of one it is the same order.
        sampler = distributed.DistributedSampler(n_train, seed=args.seed)

    if lead:
        os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, CHECKPOINT_NAME)
    n_local = len(sampler) if sampler is not None else n_train
    steps_per_epoch = -(-n_local // args.batch_size)
    end_epoch = args.epochs if args.stop_after is None else max(start_epoch, min(args.epochs, args.stop_after))
    epochs_to_run = end_epoch - start_epoch

    bar = None
    if not (args.quiet or args.no_progress) and epochs_to_run and lead:
        try:
            from tqdm import tqdm
            bar = tqdm(total=epochs_to_run * steps_per_epoch, unit="step", dynamic_ncols=True,
                       desc=f"epoch {start_epoch + 1}/{args.epochs}")
        except ImportError:
            pass

    amp = AMP_DTYPES[args.amp]
    scaler = GradScaler(enabled=args.amp == "fp16")   # bfloat16 has float32's range: no scaling needed

    def train_step(xb, yb):
        opt.zero_grad()
        with autocast(dtype=amp, enabled=amp is not None):
            loss = model(Variable(xb)).cross_entropy(yb)
        scaler.scale(loss).backward()   # without --amp fp16 these three are plain backward and step
        scaler.step(opt)
        scaler.update()
        return loss

    eager = args.no_capture or world > 1   # in a world of one the wrapper adds no hooks: capture works
    step_fn = train_step if eager else capture(train_step)
    train_seconds, epoch_seconds = 0.0, []
    run_meta = {"amp": args.amp, "model": model_kind, "hidden": hidden, "channels": list(channels), "seed": args.seed, "split_seed": args.split_seed, "dtype": args.dtype,
                "batch_size": args.batch_size, "lr": args.lr, "schedule": args.schedule,
                "input_mean": mean.tolist(), "input_std": std.tolist()}
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        # The order depends only on (seed, epoch), so a resumed run sees the batches it would have seen.
        if sampler is not None:
            sampler.set_epoch(epoch)
            order = sampler.indices()   # this rank's share
        else:
            order = np.random.default_rng([args.seed, epoch]).permutation(n_train)
        epoch_x = Tensor.from_numpy(x_train[order], dtype=args.dtype)
        epoch_y = Tensor.from_numpy(y_train[order], dtype="int32")
        opt.lr = lr_at(args, epoch)        # a kernel argument: no rebuild
        loss_sum = Tensor.zeros([], args.dtype)
        for step in range(steps_per_epoch):
            start = step * args.batch_size
            size = min(args.batch_size, n_local - start)
            loss = step_fn(epoch_x.narrow(0, start, size), epoch_y.narrow(0, start, size))
            # On the device, before the next step (a replay rewrites the same loss buffer).
            accumulate(loss_sum, loss.data(), float(size))
            if bar is not None:
                bar.update(1)
        # The epoch's first read; it waits for its last kernels, so the timing is honest.
        if world > 1:   # every rank's share (equal sizes): one small round trip per epoch
            distributed.all_reduce(loss_sum)
        mean_loss = loss_sum.item() / (n_local * world)
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        epoch_seconds.append(seconds)
        train_acc = evaluate(model, epoch_x, epoch_y, amp)
        if world > 1:
            train_acc = distributed.all_reduce(Tensor.from_vec([train_acc], [1]), op="mean").item()
        test_acc = evaluate(model, test_x, test_y, amp)
        history.append({"epoch": epoch + 1, "lr": opt.lr, "loss": mean_loss, "train_accuracy": train_acc,
                        "test_accuracy": test_acc, "seconds": seconds})
        if lead:
            serialization.save(ckpt_path, params, optimizer=opt,
                            metadata={**run_meta, "epoch": epoch + 1, "history": history})
        if bar is not None:
            bar.set_description(f"epoch {epoch + 1}/{args.epochs}")
            bar.set_postfix(loss=f"{mean_loss:.4f}", train=f"{100 * train_acc:.1f}%", test=f"{100 * test_acc:.1f}%")
        else:
            say(f"epoch {epoch + 1:3d}/{args.epochs}  loss {mean_loss:.4f}  train {100 * train_acc:5.1f} %  "
                f"test {100 * test_acc:5.1f} %  {seconds:.2f} s")
    if bar is not None:
        bar.close()

    final_acc = history[-1]["test_accuracy"] if history else evaluate(model, test_x, test_y, amp)
    plot = None
    if lead:
        if not epochs_to_run and not os.path.exists(ckpt_path):
            serialization.save(ckpt_path, params, optimizer=opt,
                            metadata={**run_meta, "epoch": start_epoch, "history": history})
        write_json(os.path.join(args.out, "history.json"),
                   {"device": f"{device.name} ({device.info.platform}, {device.type}, {device.selector})",
                    **run_meta, "epochs": args.epochs, "ranks": world, "history": history})
        plot = save_plot(history, os.path.join(args.out, "history.png")) if history else None

    steps = epochs_to_run * steps_per_epoch
    show(f"device:          {device.name.strip()} ({device.info.platform}, {device.type}, {device.selector})")
    described = repr(model) if model_kind == "cnn" else f"MLP {n_features}-{hidden}-{n_classes} relu"
    show(f"model:           {described}, {args.dtype}, Adam lr={args.lr} "
         f"({args.schedule}), "
         f"batch {args.batch_size}, {n_train} train / {len(y_test)} test images")
    show(f"epochs:          {end_epoch}" + (f" of {args.epochs}" if end_epoch != args.epochs else "")
         + (f" ({epochs_to_run} run here, resumed at {start_epoch})" if args.resume else ""))
    show(f"test accuracy:   {100 * final_acc:.2f} %")
    if epochs_to_run:
        steady = epoch_seconds[1:] or epoch_seconds
        show(f"time per epoch:  {statistics.median(steady):.3f} s (median; first epoch "
             f"{epoch_seconds[0]:.2f} s incl. kernel builds)")
        later = epoch_seconds[1:]
        steady_rate = f"{steps_per_epoch * len(later) / sum(later):.1f} after the first epoch, " if later else ""
        show(f"steps per second: {steady_rate}{steps / train_seconds:.1f} overall "
             f"({steps} steps in {train_seconds:.2f} s)")
    if ddp is not None:
        show(f"ranks:           {world} (batch {args.batch_size} per rank, {args.batch_size * world} per step in all; "
             f"{n_local} images per rank per epoch)")
    if world > 1:
        show("capture:         off (--distributed): every step ran eagerly, the gradients averaged in backward")
    elif eager:
        show("capture:         off (--no-capture): every step ran eagerly")
    else:
        show(f"capture:         {step_fn.replays} of {step_fn.replays + step_fn.recordings} steps replayed "
             f"({step_fn.recordings} recorded)")
    show(f"total time:      {time.perf_counter() - t_start:.1f} s")
    show(f"artefacts:       {ckpt_path}, {os.path.join(args.out, 'history.json')}"
         + (f", {plot}" if plot else " (no plot: matplotlib not installed)"))
    if args.min_accuracy is not None and 100 * final_acc < args.min_accuracy:
        show(f"test accuracy {100 * final_acc:.2f} % is below --min-accuracy {args.min_accuracy} %",
             file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
