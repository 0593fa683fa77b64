#!/usr/bin/env python3
"""float32 accuracy of the norm statistics against a float64 reference (numpy, on the same float32
input), ours and (when installed) torch's, on four input distributions:
  (a) mean 1000 std 1   (b) mean 0 std 1   (c) mean 1e4 std 0.1   (d) mean -50 std 100

    PYTHONPATH=. .venv/bin/python scripts/norm_accuracy.py [--small]

Columns: max abs error of ours, of torch, and ours / torch (<= 2 is the target).
"""

from __future__ import annotations

import sys

import numpy as np

from axonml_autograd import Tensor, Variable
import axonml_autograd.nn.functional as F

try:
    import torch
except ImportError:  # the table then has no torch column
    torch = None

DISTS = {"a": (1000.0, 1.0), "b": (0.0, 1.0), "c": (1e4, 0.1), "d": (-50.0, 100.0)}


def _ref_norm(x, axes, eps):
    m = x.mean(axis=axes, keepdims=True)
    v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
    return (x - m) / np.sqrt(v + eps)


def cases(x4, x2, small):
    """(name, ours(x), torch(x) or None, float64 reference(x)) for each measured quantity."""
    eps, mom = 1e-5, 0.1
    n = x4.shape[0] * x4.shape[2] * x4.shape[3]

    def bn(lib, which):
        def run(x):
            C = x.shape[1]
            if lib == "ours":
                rm, rv = Tensor.from_numpy(np.zeros(C, np.float32)), Tensor.from_numpy(np.ones(C, np.float32))
                y = F.batch_norm(Variable(Tensor.from_numpy(x)), rm, rv, training=True, momentum=mom, eps=eps)
                return y.numpy() if which == "y" else rv.numpy()
            rm, rv = torch.zeros(C), torch.ones(C)
            y = torch.nn.functional.batch_norm(torch.from_numpy(x), rm, rv, training=True, momentum=mom, eps=eps)
            return y.numpy() if which == "y" else rv.numpy()
        return run

    def ref_rv(x):
        d = x.astype(np.float64)
        return (1 - mom) * 1.0 + mom * d.var(axis=(0, 2, 3)) * n / (n - 1)

    yield ("batch_norm y", x4, bn("ours", "y"), bn("torch", "y"), lambda x: _ref_norm(x, (0, 2, 3), eps))
    yield ("batch_norm running_var", x4, bn("ours", "rv"), bn("torch", "rv"), ref_rv)
    yield ("layer_norm y", x2, lambda x: F.layer_norm(Variable(Tensor.from_numpy(x)), (x.shape[1],), eps=eps).numpy(),
           lambda x: torch.nn.functional.layer_norm(torch.from_numpy(x), (x.shape[1],), eps=eps).numpy(),
           lambda x: _ref_norm(x, (1,), eps))
    yield ("group_norm y (G=4)", x4, lambda x: F.group_norm(Variable(Tensor.from_numpy(x)), 4, eps=eps).numpy(),
           lambda x: torch.nn.functional.group_norm(torch.from_numpy(x), 4, eps=eps).numpy(),
           lambda x: _ref_norm(x.reshape(x.shape[0], 4, -1), (2,), eps).reshape(x.shape))
    yield ("var dim=1", x2, lambda x: Variable(Tensor.from_numpy(x)).var(1).numpy(),
           lambda x: torch.from_numpy(x).var(1).numpy(), lambda x: x.var(axis=1, ddof=1))
    yield ("std all", x2, lambda x: np.asarray(Variable(Tensor.from_numpy(x)).std().numpy()),
           lambda x: torch.from_numpy(x).std().numpy(), lambda x: x.std(ddof=1))


def main():
    small = "--small" in sys.argv
    rng = np.random.default_rng(0)
    shape4, shape2 = ((8, 4, 14, 14), (256, 768)) if small else ((64, 16, 28, 28), (4096, 768))
    print(f"{'op':<24}{'dist':>5}{'ours':>11}{'torch':>11}{'ratio':>8}")
    for key, (mu, sd) in DISTS.items():
        x4 = (rng.standard_normal(shape4) * sd + mu).astype(np.float32)
        x2 = (rng.standard_normal(shape2) * sd + mu).astype(np.float32)
        for name, x, ours, theirs, ref in cases(x4, x2, small):
            r = np.asarray(ref(x.astype(np.float64)))
            e_ours = float(np.max(np.abs(np.asarray(ours(x), np.float64) - r)))
            if torch is not None:
                e_t = float(np.max(np.abs(np.asarray(theirs(x), np.float64) - r)))
                print(f"{name:<24}{key:>5}{e_ours:>11.2e}{e_t:>11.2e}{e_ours / max(e_t, 1e-30):>8.2f}")
            else:
                print(f"{name:<24}{key:>5}{e_ours:>11.2e}{'-':>11}{'-':>8}")


if __name__ == "__main__":
    main()
