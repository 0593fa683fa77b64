"""DataLoader's torch options: collate_fn, generator, num_workers (background threads, the same batches
in the same order as num_workers=0), pin_memory (accepted); default_collate."""

import threading

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, random
from axonml_autograd.data import DataLoader, TensorDataset, default_collate
from axonml_autograd.device import default_device

RNG = np.random.default_rng(5)
X = RNG.standard_normal((37, 3)).astype(np.float32)
Y = RNG.integers(0, 4, 37).astype(np.int32)


class Samples:
    """A map-style dataset of dict samples that notes which threads read it."""

    def __init__(self):
        self.threads = set()

    def __len__(self):
        return len(X)

    def __getitem__(self, i):
        self.threads.add(threading.get_ident())
        return {"x": X[i], "y": int(Y[i])}


def _values(batches):
    out = []
    for b in batches:
        items = b.items() if isinstance(b, dict) else enumerate(b)
        out.append({k: (v.data() if isinstance(v, Variable) else v).numpy() for k, v in items})
    return out


def _same(a, b):
    assert len(a) == len(b)
    for ba, bb in zip(a, b):
        assert ba.keys() == bb.keys()
        for k in ba:
            np.testing.assert_array_equal(ba[k], bb[k])


@pytest.mark.parametrize("shuffle,drop_last", [(False, False), (True, True)])
def test_workers_give_the_same_batches_in_order(shuffle, drop_last):
    ds = Samples()
    plain = _values(DataLoader(ds, batch_size=5, shuffle=shuffle, drop_last=drop_last, seed=3))
    threaded_loader = DataLoader(ds, batch_size=5, shuffle=shuffle, drop_last=drop_last, seed=3, num_workers=3,
                                 prefetch_factor=2, pin_memory=True)
    ds.threads.clear()
    threaded = _values(threaded_loader)
    _same(plain, threaded)
    assert threading.get_ident() not in ds.threads and ds.threads         # made by the worker threads
    assert len(plain) == (7 if drop_last else 8)
    first = np.concatenate([b["x"] for b in plain])
    if not shuffle:
        np.testing.assert_array_equal(first, X)


def test_workers_on_host_arrays_and_device_data_match_num_workers_0():
    host = TensorDataset(X, Y)
    _same(_values(DataLoader(host, batch_size=4, shuffle=True, seed=1)),
          _values(DataLoader(host, batch_size=4, shuffle=True, seed=1, num_workers=2)))
    dev = TensorDataset(Tensor.from_numpy(X), Variable(Tensor.from_numpy(Y, dtype="int32")))
    a = DataLoader(dev, batch_size=6, shuffle=True, seed=2)
    b = DataLoader(dev, batch_size=6, shuffle=True, seed=2, num_workers=4)
    batches = list(b)
    assert isinstance(batches[0][1], Variable)                              # device data stays device data
    _same(_values(a), _values(batches))


def test_worker_errors_surface_at_their_batch_and_early_exit_is_clean():
    class Broken(Samples):
        def __getitem__(self, i):
            if i == 12:
                raise KeyError("sample 12 is broken")
            return super().__getitem__(i)

    loader = DataLoader(Broken(), batch_size=5, num_workers=2)
    it = iter(loader)
    assert len(next(it)["x"].shape()) == 2 and next(it)["y"].shape() == [5]
    with pytest.raises(KeyError, match="sample 12 is broken"):
        next(it)
    before = threading.active_count()
    for k, _ in enumerate(DataLoader(Samples(), batch_size=2, num_workers=3)):
        if k == 1:
            break                                                           # abandoned mid-epoch
    import gc
    gc.collect()
    assert threading.active_count() <= before


def test_collate_fn_host_and_device():
    def collate(samples):
        xs = np.stack([s["x"] for s in samples])
        return Tensor.from_numpy(xs * 2), len(samples)

    got = list(DataLoader(Samples(), batch_size=8, collate_fn=collate))
    assert [n for _, n in got] == [8, 8, 8, 8, 5]
    np.testing.assert_array_equal(np.concatenate([t.numpy() for t, _ in got]), X * 2)

    dev = TensorDataset(Tensor.from_numpy(X), Tensor.from_numpy(Y, dtype="int32"))
    seen = []

    def device_collate(samples):
        seen.append(len(samples))
        return default_collate(samples)

    shuffled = list(DataLoader(dev, batch_size=10, shuffle=True, seed=4, collate_fn=device_collate))
    plain = list(DataLoader(dev, batch_size=10, shuffle=True, seed=4))
    assert seen == [10, 10, 10, 7]
    _same(_values(shuffled), _values(plain))                                # the same order and values


def test_generator_draws_the_orders():
    dev = TensorDataset(Tensor.from_numpy(X))
    orders = []
    for data in (dev, TensorDataset(X)):
        g1, g2 = random.Generator(default_device(), 9), random.Generator(default_device(), 9)
        start = random.generator().offset
        a = [b[0].numpy() for b in DataLoader(data, batch_size=37, shuffle=True, generator=g1)]
        b = [b[0].numpy() for b in DataLoader(data, batch_size=37, shuffle=True, generator=g2)]
        np.testing.assert_array_equal(a[0], b[0])
        assert random.generator().offset == start                          # the device's generator untouched
        again = [b[0].numpy() for b in DataLoader(data, batch_size=37, shuffle=True, generator=g1)]
        assert not np.array_equal(again[0], a[0])                          # g1 moved on
        np.testing.assert_array_equal(np.sort(a[0], 0), np.sort(X, 0))
        orders.append(a[0])
    with pytest.raises(ValueError, match="generator or a seed"):
        DataLoader(dev, shuffle=True, seed=1, generator=random.generator())
    with pytest.raises(TypeError, match="random.Generator"):
        DataLoader(dev, shuffle=True, generator=1)
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(dev, num_workers=-1)


def test_default_collate_structures():
    batch = default_collate([{"a": np.ones(2), "b": (1, 2.0)}, {"a": np.zeros(2), "b": (3, 4.0)}])
    assert batch["a"].shape() == [2, 2] and batch["b"][0].to_vec() == [1, 3] and batch["b"][1].to_vec() == [2.0, 4.0]
    v = default_collate([Variable(Tensor.ones([3])), Variable(Tensor.zeros([3]))])
    assert isinstance(v, Variable) and v.shape() == [2, 3]
    assert default_collate([Tensor.ones([2]), Tensor.ones([2])]).shape() == [2, 2]
    with pytest.raises(ValueError, match="non-empty"):
        default_collate([])
