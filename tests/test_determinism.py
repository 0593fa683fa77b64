"""Determinism: the same program on the same device gives the same bits, run to run and process to process."""

import hashlib
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def program():
    """Forward, backward and two optimiser steps over large reductions, matmuls and softmax.

    Returns every number it produced as host arrays (losses, gradients, parameters).
    """
    from axonml_autograd import Tensor, Variable
    from axonml_autograd.optim import Adam

    big = Variable(Tensor.randn([1 << 20], seed=11), requires_grad=True)      # one long sum: multi-pass
    tall = Variable(Tensor.randn([4096, 96], seed=12), requires_grad=True)    # column reductions
    w1 = Variable(Tensor.randn([96, 160], seed=13) * 0.1, requires_grad=True)
    w2 = Variable(Tensor.randn([160, 10], seed=14) * 0.1, requires_grad=True)
    targets = [k * 7 % 10 for k in range(4096)]
    params = [big, tall, w1, w2]
    opt = Adam(params, lr=1e-3)
    out = []
    for _ in range(2):
        opt.zero_grad()
        logits = tall.matmul(w1).tanh().matmul(w2)
        loss = (logits.cross_entropy(targets)
                + big.pow(2.0).mean() * 0.1
                + tall.var_dim(0).sum() * 1e-3
                + tall.softmax(1).max_dim(1).mean()
                + big.sum() * 1e-6)
        loss.backward()
        out.append(loss.numpy())
        out.extend(p.grad().numpy() for p in params)
        opt.step()
    out.extend(p.numpy() for p in params)
    return out


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_same_program_twice_in_one_process_is_bit_identical():
    first, second = program(), program()
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()


def test_same_program_in_separate_processes_is_bit_identical():
    here = digest(program())
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    children = [subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env, text=True) for _ in range(2)]
    digests = []
    for child in children:
        stdout, stderr = child.communicate(timeout=300)
        assert child.returncode == 0, stderr
        digests.append(stdout.strip().splitlines()[-1])
    assert digests == [here, here]


def test_long_sum_does_not_depend_on_what_ran_before():
    # Reductions fold in a fixed order that depends only on the shape, so neither the pool's buffer
    # reuse nor earlier launches change the bits.
    from axonml_autograd import Tensor

    values = np.random.default_rng(3).standard_normal(3_000_001).astype(np.float32) * 1e3
    first = Tensor.from_numpy(values).sum().numpy()
    junk = [Tensor.randn([k * 1000 + 1], seed=k).sum() for k in range(1, 6)]
    second = Tensor.from_numpy(values).sum().numpy()
    del junk
    assert first.tobytes() == second.tobytes()
    assert abs(float(first) - float(values.astype(np.float64).sum())) < 1e-3 * np.abs(values).sum() * 1e-4


if __name__ == "__main__":
    print(digest(program()))
