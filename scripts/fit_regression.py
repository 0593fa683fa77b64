#!/usr/bin/env python3
"""Fit y = sin(x) + noise on [-pi, pi] with a small tanh MLP and mse_loss; a quick smoke test.

Full-batch training on the device: the data is uploaded once, each step is forward, backward and
an optimiser step with no reads back, and the loss is read every ``--log-every`` steps only. Exits
with status 1 if the final mean squared error against the noise-free curve is not below
``--threshold`` (the noise alone is ``--noise**2``, far below it), so CI can run it as is.

    python scripts/fit_regression.py
    python scripts/fit_regression.py --optimizer sgd --lr 0.05 --steps 1500
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from axonml_autograd import DeviceError, Tensor, Variable, no_grad, set_default_device
from axonml_autograd.nn import MLP
from axonml_autograd.optim import SGD, Adam


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=None, help="default: 0.02 for Adam, 0.1 for SGD (momentum 0.9)")
    p.add_argument("--noise", type=float, default=0.1, help="standard deviation of the label noise")
    p.add_argument("--threshold", type=float, default=0.005, help="largest acceptable final MSE against sin(x)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="OpenCL device selector (see axonml-devices)")
    p.add_argument("--log-every", type=int, default=100)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        device = set_default_device(args.device)
    except DeviceError as e:
        sys.exit(f"fit_regression.py: {e}")
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-math.pi, math.pi, size=(args.samples, 1))
    y = np.sin(x) + args.noise * rng.normal(size=x.shape)
    grid = np.linspace(-math.pi, math.pi, 200).reshape(-1, 1)

    xs, ys = Variable(Tensor.from_numpy(x, dtype="float32")), Variable(Tensor.from_numpy(y, dtype="float32"))
    grid_x = Variable(Tensor.from_numpy(grid, dtype="float32"))
    grid_y = Variable(Tensor.from_numpy(np.sin(grid), dtype="float32"))

    model = MLP([1, args.hidden, args.hidden, 1], activation="tanh", seed=args.seed)
    if args.optimizer == "adam":
        opt = Adam(model.parameters(), lr=args.lr or 0.02)
    else:
        opt = SGD(model.parameters(), lr=args.lr or 0.1, momentum=0.9)

    t0 = time.perf_counter()
    first = None
    for step in range(1, args.steps + 1):
        opt.zero_grad()
        loss = model(xs).mse_loss(ys)
        loss.backward()
        opt.step()
        if step == 1 or step % args.log_every == 0 or step == args.steps:
            value = loss.item()
            first = value if first is None else first
            print(f"step {step:5d}  train mse {value:.5f}")
    seconds = time.perf_counter() - t0
    with no_grad():
        mse = model(grid_x).mse_loss(grid_y).item()
    print(f"device: {device.name.strip()} ({device.selector}); {args.optimizer}, {args.steps} steps in "
          f"{seconds:.2f} s ({args.steps / seconds:.0f} steps/s)")
    print(f"final MSE against sin(x): {mse:.5f} (threshold {args.threshold}; noise variance {args.noise ** 2:.4f})")
    if not mse < args.threshold:
        print("did not converge", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
