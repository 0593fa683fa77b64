"""Data-parallel training over MPI (axonml_autograd.distributed).

The multi-process tests start tests/mpi_worker.py under ``mpiexec -n 2`` (Open MPI from the ``mpi``
extra, found next to this Python) with a hard timeout; they skip when mpi4py or mpiexec is missing.
The rest runs in this process: a world of one, the sampler, and backward's ``queue_callback``.
"""

import importlib.util
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, distributed, launch
from axonml_autograd.backward import queue_callback
from axonml_autograd.distributed import DistributedDataParallel, DistributedSampler, device_for_local_rank
from axonml_autograd.nn import MLP
from axonml_autograd.optim import SGD

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "mpi_worker.py")
TIMEOUT = 60   # seconds: a launch takes ~2-5 s here; a hang must fail the test, not the suite


def _load_worker():
    spec = importlib.util.spec_from_file_location("mpi_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def _clean_env():
    """This environment without any MPI launcher's variables (so a child is a world of one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_", "MPI_", "MV2_"))}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env



def launch2(mpiexec, *args, script=WORKER):
    """Run the worker (or ``script``) on two ranks; returns (returncode, output, seconds)."""
    env = _clean_env()
    # Open MPI refuses root unless told, and wants --oversubscribe for more ranks than cores.
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = [mpiexec, "--oversubscribe", "--bind-to", "none", "-n", "2",
           "-x", "PYTHONPATH", sys.executable, script, *args]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"mpiexec -n 2 {' '.join(args)} hung for {TIMEOUT} s:\n{e.stdout}\n{e.stderr}")
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - t0


def params_of(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# -- two ranks ------------------------------------------------------------------------------------------

def reference_sgd(steps, rows):
    """One process, no distributed module: SGD on the whole global batch of each step."""
    model = MLP(worker.SIZES, seed=0)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        x, y = worker.global_batch(step, rows)
        opt.zero_grad()
        model(Variable(Tensor.from_numpy(x))).cross_entropy(Tensor.from_numpy(y, dtype="int32")).backward()
        opt.step()
    return {name: p.numpy() for name, p in model.named_parameters()}


def test_two_ranks_with_batch_b_end_with_the_weights_of_one_process_with_batch_2b(mpiexec, tmp_path):
    b, steps = 5, 4
    rc, out, seconds = launch2(mpiexec, "train", str(tmp_path), "--batch", str(b), "--steps", str(steps))
    assert rc == 0, out
    expected = reference_sgd(steps, 2 * b)
    for tag in ("default", "small-buckets"):   # one bucket; three buckets reduced as backward goes
        ranks = [params_of(tmp_path / f"{tag}-rank{r}.npz") for r in (0, 1)]
        for name, want in expected.items():
            # Two ranks: the sum of two numbers is exact in either order, so the ranks agree to the bit.
            np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=f"{tag} {name}")
            # The mean of two batch means against one mean over both: float32 rounding apart.
            np.testing.assert_allclose(ranks[0][name], want, rtol=1e-5, atol=1e-6, err_msg=f"{tag} {name}")
    assert seconds < 30


def test_collectives_on_two_ranks_agree_with_numpy(mpiexec, tmp_path):
    rc, out, _ = launch2(mpiexec, "collectives", str(tmp_path))
    assert rc == 0, out
    assert "rank 0: collectives ok" in out and "rank 1: collectives ok" in out


def test_a_rank_that_raises_aborts_the_job_instead_of_hanging(mpiexec, tmp_path):
    rc, out, seconds = launch2(mpiexec, "raise", str(tmp_path))
    assert rc != 0
    assert "rank 1 fails on purpose" in out              # the failing rank's traceback is shown
    assert "aborting all 2 ranks" in out
    assert "rank 0 got past the collective" not in out
    assert seconds < 30


def test_a_checkpoint_saved_by_rank_0_resumes_on_two_ranks_with_identical_parameters(mpiexec, tmp_path):
    rc, out, _ = launch2(mpiexec, "checkpoint", str(tmp_path), "--phase", "full")
    assert rc == 0, out
    assert (tmp_path / "checkpoint.npz").exists()
    rc, out, _ = launch2(mpiexec, "checkpoint", str(tmp_path), "--phase", "resume")
    assert rc == 0, out
    full = params_of(tmp_path / "full-rank0.npz")
    for path in ("full-rank1.npz", "resume-rank0.npz", "resume-rank1.npz"):
        resumed = params_of(tmp_path / path)
        for name, want in full.items():   # steps 4 and 5 after the reload: the same program, the same bits
            np.testing.assert_array_equal(resumed[name], want, err_msg=f"{path} {name}")


def test_train_digits_distributed_prints_and_writes_only_on_rank_0(mpiexec, tmp_path):
    pytest.importorskip("sklearn")
    rc, out, _ = launch2(mpiexec, "--distributed", "--epochs", "2", "--no-progress", "--out", str(tmp_path),
                         script=os.path.join(ROOT, "scripts", "train_digits.py"))
    assert rc == 0, out
    # Each epoch line and the summary once (two ranks printing would double them).
    assert out.count("epoch   2/2  loss") == 1 and out.count("test accuracy:") == 1, out
    assert "ranks:           2 (batch 64 per rank, 128 per step in all; 719 images per rank per epoch)" in out
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "history.json", "history.png"]


# -- a world of one -------------------------------------------------------------------------------------

def test_without_mpiexec_the_world_is_one_process_and_mpi_is_not_started():
    code = ("import sys; from axonml_autograd import distributed as d; d.init(); d.init(); "
            "print(d.rank(), d.world_size(), d.local_rank(), 'mpi4py.MPI' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1", "0", "False"]


def test_in_a_world_of_one_the_wrapper_and_collectives_change_nothing():
    assert distributed.world_size() == 1
    x = Tensor.from_numpy(np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32))
    y = Tensor.from_vec([0, 1, 1, 0, 1, 0, 0], [7], dtype="int32")
    grads = []
    for wrap in (False, True):
        model = MLP([3, 17, 2], seed=3)
        ddp = DistributedDataParallel(model) if wrap else None
        model(Variable(x)).cross_entropy(y).backward()
        grads.append([p.grad().numpy() for p in model.parameters()])
        if wrap:
            assert all(not p._post_hooks for p in model.parameters())   # no hooks: nothing to reduce
            assert ddp.reductions == 0 and ddp.parameters() == model.parameters()
    for g0, g1 in zip(*grads):
        np.testing.assert_array_equal(g0, g1)

    t = Tensor.from_vec([1.0, -2.0, 3.0], [3])
    for op in ("sum", "mean", "max", "min"):
        assert distributed.all_reduce(t, op) is t
        assert t.to_vec() == [1.0, -2.0, 3.0]
    assert distributed.broadcast(t) is t and t.to_vec() == [1.0, -2.0, 3.0]
    [only] = distributed.all_gather(t)
    assert only.to_vec() == [1.0, -2.0, 3.0] and only is not t
    assert distributed.all_gather(t, stack=True).shape() == [1, 3]
    distributed.barrier()


def test_in_a_world_of_one_a_wrapped_step_can_be_captured_and_replayed():
    model = MLP([4, 5, 3], seed=1)
    DistributedDataParallel(model)
    opt = SGD(model.parameters(), lr=0.1)

    def step(x, y):
        opt.zero_grad()
        loss = model(Variable(x)).cross_entropy(y)
        loss.backward()
        opt.step()
        return loss

    captured = capture(step)
    y = Tensor.from_vec([0, 2, 1], [3], dtype="int32")
    losses = [captured(Tensor.rand([3, 4], seed=k), y).item() for k in range(3)]
    assert captured.replays >= 1
    twin = MLP([4, 5, 3], seed=1)
    opt2 = SGD(twin.parameters(), lr=0.1)
    for k in range(3):
        opt2.zero_grad()
        loss = twin(Variable(Tensor.rand([3, 4], seed=k))).cross_entropy(y)
        loss.backward()
        opt2.step()
        assert loss.item() == losses[k]


def test_the_gradient_read_is_refused_inside_a_capture():
    t = Tensor.ones([3])

    def reads(x):
        launch.read_async(x.device, np.empty(3, np.float32), x.buffer)
        return x

    with pytest.raises(launch.CaptureError, match="data-parallel"):
        capture(reads)(t)


def test_launched_as_one_of_several_ranks_without_mpi4py_raises_naming_the_extra(monkeypatch):
    monkeypatch.setattr(distributed.world, "_world", distributed.world._World())
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # import mpi4py raises ImportError
    with pytest.raises(RuntimeError, match=r"axonml-autograd\[mpi\]"):
        distributed.init()


def test_every_public_name_is_importable_from_the_package_and_the_sampler_lives_with_the_data_loader():
    from axonml_autograd import data
    from axonml_autograd.distributed import collectives, ddp, world

    for name in distributed.__all__:
        assert getattr(distributed, name) is not None, name
    assert distributed.DistributedSampler is data.DistributedSampler
    assert distributed.DistributedDataParallel is ddp.DistributedDataParallel
    assert distributed.all_reduce is collectives.all_reduce and distributed.init is world.init


def test_collectives_and_the_wrapper_read_the_world_that_world_py_holds(monkeypatch):
    """world._world is the one state: replacing it (as a launcher test does) reaches every module."""
    calls = []

    class FakeComm:
        def Bcast(self, host, root):
            calls.append(("Bcast", root))
            host[...] = 5.0

        def allgather(self, obj):
            return [obj, obj]

    fake = distributed.world._World()
    fake.initialized, fake.size, fake.rank, fake.comm = True, 2, 1, FakeComm()
    monkeypatch.setattr(distributed.world, "_world", fake)
    assert (distributed.rank(), distributed.world_size()) == (1, 2)
    t = Tensor.from_vec([1.0, 2.0], [2])
    assert distributed.broadcast(t, root=0).to_vec() == [5.0, 5.0] and calls == [("Bcast", 0)]
    assert DistributedSampler(4, shuffle=False).indices().tolist() == [1, 3]
    ddp = DistributedDataParallel([Variable(t, requires_grad=True)], broadcast_parameters=False)
    assert (ddp.rank, ddp.world_size) == (1, 2)
    ddp.remove_hooks()


def test_bad_arguments_raise_errors_naming_them():
    t = Tensor.from_vec([1.0], [1])
    with pytest.raises(ValueError, match="all_reduce: op must be one of"):
        distributed.all_reduce(t, op="prod")
    with pytest.raises(TypeError, match="all_reduce: op='mean' needs a floating-point"):
        distributed.all_reduce(Tensor.from_vec([1], [1], dtype="int32"), op="mean")
    with pytest.raises(TypeError, match="all_reduce: expected a Tensor or Variable"):
        distributed.all_reduce([1.0])
    with pytest.raises(ValueError, match=r"broadcast: root must be a rank in \[0, 1\)"):
        distributed.broadcast(t, root=1)
    with pytest.raises(TypeError, match="all_gather: expected a Tensor"):
        distributed.all_gather(np.ones(2))
    with pytest.raises(ValueError, match="bucket_cap_mb must be a positive number"):
        DistributedDataParallel(MLP([2, 2]), bucket_cap_mb=0)
    with pytest.raises(TypeError, match="parameter 1 is a Tensor, not a Variable"):
        DistributedDataParallel([Variable(t, requires_grad=True), t])
    with pytest.raises(TypeError, match="expected a module"):
        DistributedDataParallel(3)
    with pytest.raises(TypeError, match="no module to call"):
        DistributedDataParallel([Variable(t, requires_grad=True)])(t)


def test_buckets_hold_parameters_in_reverse_order_up_to_the_cap():
    model = MLP([8, 16, 4], seed=0)   # W1 512 B, b1 64 B, W2 256 B, b2 16 B
    w1, b1, w2, b2 = model.parameters()
    ddp = DistributedDataParallel(model, bucket_cap_mb=300 / 2**20)
    assert ddp.buckets == [[b2, w2], [b1], [w1]]
    assert DistributedDataParallel(model).buckets == [[b2, w2, b1, w1]]


def test_each_local_rank_gets_its_own_gpu_and_the_users_choice_wins(monkeypatch):
    from types import SimpleNamespace as D
    from axonml_autograd import device as dev_module

    gpus = [D(type="GPU", selector="0:0"), D(type="GPU", selector="0:1"), D(type="GPU", selector="0:2")]
    cpus = [D(type="CPU", selector="1:0"), D(type="CPU", selector="2:0")]
    assert [device_for_local_rank(k, gpus + cpus) for k in range(4)] == ["0:0", "0:1", "0:2", "0:0"]
    assert [device_for_local_rank(k, cpus) for k in range(3)] == ["1:0", "2:0", "1:0"]
    assert device_for_local_rank(1, cpus[:1]) is None

    chosen = []
    monkeypatch.setattr(dev_module, "set_default_device", chosen.append)
    monkeypatch.setattr(dev_module, "_default", None)
    monkeypatch.setattr(distributed.world, "device_for_local_rank", lambda k: f"9:{k}")
    monkeypatch.delenv("PYOPENCL_CTX", raising=False)
    monkeypatch.setenv("AXONML_DEVICE", "pocl")
    distributed.world._pick_device(1)
    assert chosen == []                 # AXONML_DEVICE wins
    monkeypatch.delenv("AXONML_DEVICE")
    distributed.world._pick_device(1)
    assert chosen == ["9:1"]


# -- the sampler ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 3, 17, 65])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_shares_are_equal_disjoint_and_cover_the_data(n, replicas, drop_last):
    shares = [list(DistributedSampler(n, replicas, r, seed=5, drop_last=drop_last)) for r in range(replicas)]
    sizes = {len(s) for s in shares}
    assert len(sizes) == 1
    size = sizes.pop()
    assert size == len(DistributedSampler(n, replicas, 0, drop_last=drop_last))
    everything = [i for s in shares for i in s]
    assert all(0 <= i < n for i in everything)
    if drop_last:
        assert size == n // replicas
        assert len(set(everything)) == len(everything)           # disjoint, some left out
    else:
        assert size == -(-n // replicas)
        assert set(everything) == set(range(n))                  # every index, each once but the padding
        assert len(everything) - len(set(everything)) == size * replicas - n


def test_sampler_order_is_shared_by_the_ranks_and_changes_with_the_epoch_and_seed():
    def order(seed, epoch, rank):
        s = DistributedSampler(20, num_replicas=2, rank=rank, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(0, 0, 0) == order(0, 0, 0)                      # any process, same seed: same share
    assert sorted(order(0, 0, 0) + order(0, 0, 1)) == list(range(20))
    assert order(0, 1, 0) != order(0, 0, 0)                      # set_epoch reshuffles
    assert order(1, 0, 0) != order(0, 0, 0)
    assert list(DistributedSampler(6, 2, 1, shuffle=False)) == [1, 3, 5]


def test_sampler_matches_torch_without_shuffling():
    torch = pytest.importorskip("torch")
    from torch.utils.data.distributed import DistributedSampler as TorchSampler

    for n, replicas, drop_last in [(10, 3, False), (10, 3, True), (2, 4, False), (17, 4, True), (65, 2, False)]:
        for r in range(replicas):
            theirs = list(TorchSampler(range(n), num_replicas=replicas, rank=r, shuffle=False, drop_last=drop_last))
            assert list(DistributedSampler(n, replicas, r, shuffle=False, drop_last=drop_last)) == theirs


def test_sampler_bad_arguments_raise():
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        DistributedSampler(-1)
    with pytest.raises(ValueError, match="num_replicas must be a positive integer"):
        DistributedSampler(4, num_replicas=0, rank=0)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        DistributedSampler(4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="epoch must be a non-negative integer"):
        DistributedSampler(4, 1, 0).set_epoch(-1)
    assert len(DistributedSampler(list("abcde"), 2, 0)) == 3   # a sized data set stands for its length


# -- backward's "finished" callback ---------------------------------------------------------------------

def test_queue_callback_runs_once_after_every_gradient_is_accumulated():
    a = Variable(Tensor.from_vec([1.0, 2.0], [2]), requires_grad=True)
    b = Variable(Tensor.from_vec([3.0], [1]), requires_grad=True)
    seen = []

    def first_hook(v):
        if not seen:
            queue_callback(lambda: seen.append(("done", a.grad().to_vec(), b.grad().to_vec())))
            queue_callback(lambda: seen.append("second"))
        seen.append("hook")

    a.register_post_accumulate_grad_hook(first_hook)
    b.register_post_accumulate_grad_hook(first_hook)
    (a * b).sum().backward()
    assert seen == ["hook", "hook", ("done", [3.0, 3.0], [3.0]), "second"]
    with pytest.raises(RuntimeError, match="no backward"):
        queue_callback(lambda: None)
