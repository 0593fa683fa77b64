"""Would out-of-order execution help a two-branch model here? Measures the same independent work on
an in-order queue (what the engine uses) and on an out-of-order queue of the same device.

Each branch is one elementwise kernel over its own data, so the out-of-order queue needs no events
to stay correct. Usage: python scripts/bench_branches.py [--n 4000000] [--device SEL]
"""

import argparse
import statistics
import time

import numpy as np
import pyopencl as cl

from axonml_autograd import Tensor, get_device
from axonml_autograd.elementwise_kernels import _plans, elementwise


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4_000_000)
    ap.add_argument("--branches", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device")
    args = ap.parse_args()
    dev = get_device(args.device)
    if not dev.cl_device.queue_properties & cl.command_queue_properties.OUT_OF_ORDER_EXEC_MODE_ENABLE:
        print(f"{dev.name}: no out-of-order queues; nothing to compare")
        return
    rng = np.random.default_rng(0)
    inputs = [Tensor.from_numpy(rng.standard_normal(args.n).astype(np.float32), device=dev)
              for _ in range(args.branches)]
    outputs = [elementwise("tanh(a) * exp(-a * a)", [x]) for x in inputs]   # builds the plan
    plan = next(p for k, p in _plans.items() if k[0] == "tanh(a) * exp(-a * a)")
    # One kernel object per branch: arguments are set once, so both queues see identical launches.
    knls = []
    for x, y in zip(inputs, outputs):
        k = cl.Kernel(plan.kernel.program, "ew")
        k.set_scalar_arg_dtypes([None, None, np.int32, np.int32])
        k.set_args(y.buffer, x.buffer, *plan.int_args)
        knls.append(k)
    ooo = cl.CommandQueue(dev.context, properties=cl.command_queue_properties.OUT_OF_ORDER_EXEC_MODE_ENABLE)

    def run(queue):
        for k in knls:
            cl.enqueue_nd_range_kernel(queue, k, plan.global_size, plan.local_size)
        queue.finish()

    times = {"in-order": [], "out-of-order": []}
    for _ in range(2):
        run(dev.queue), run(ooo)
    for _ in range(args.repeats):
        for name, q in (("in-order", dev.queue), ("out-of-order", ooo)):
            t = time.perf_counter()
            run(q)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["in-order"])
    print(f"{dev.name}: {args.branches} independent branches of {args.n} elements, median of {args.repeats}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:13s} {m * 1e3:8.2f} ms   speed-up {base / m:5.2f}x")


if __name__ == "__main__":
    main()
