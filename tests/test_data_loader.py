"""TensorDataset and DataLoader: every sample once per epoch, drop_last, seeded and per-epoch orders,
batch contents equal to numpy indexing, device data shuffled and gathered with no read or upload,
host batches uploaded without waiting, samplers, and randperm on the device."""

import numpy as np
import pytest

from axonml_autograd import Tensor, Variable, capture, launch, manual_seed
from axonml_autograd.data import DataLoader, TensorDataset, randperm


def arrays(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.arange(n, dtype=np.float32)[:, None], rng.normal(size=(n, 4)).astype(np.float32)], 1)
    y = rng.integers(0, 7, n).astype(np.int32)
    return x, y


def device_loader(x, y, **kw):
    return DataLoader(TensorDataset(Tensor.from_numpy(x), Tensor.from_numpy(y, dtype="int32")), **kw)


def epoch_ids(loader, x, y):
    """The sample ids of each batch, checking the batch equals numpy's rows at those ids."""
    out = []
    for xb, yb in loader:
        xb, yb = xb.numpy(), yb.numpy()
        ids = xb[:, 0].astype(np.int64)
        np.testing.assert_array_equal(xb, x[ids])
        np.testing.assert_array_equal(yb, y[ids])
        out.append(ids.tolist())
    return out


@pytest.mark.parametrize("n", [1, 3, 17, 65])
@pytest.mark.parametrize("batch_size", [1, 4, 16, 100])
@pytest.mark.parametrize("where", ["device", "host"])
def test_every_sample_once_per_epoch_and_batches_equal_numpy_rows(device, n, batch_size, where):
    x, y = arrays(n)
    loader = device_loader(x, y, batch_size=batch_size, shuffle=True, seed=1) if where == "device" else \
        DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, seed=1)
    for _ in range(2):
        batches = epoch_ids(loader, x, y)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert [len(b) for b in batches] == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        assert len(batches) == len(loader)


@pytest.mark.parametrize("where", ["device", "host"])
def test_in_order_without_shuffle(device, where):
    x, y = arrays(10)
    loader = device_loader(x, y, batch_size=4) if where == "device" else DataLoader(TensorDataset(x, y), batch_size=4)
    assert epoch_ids(loader, x, y) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("where", ["device", "host"])
def test_drop_last_keeps_only_full_batches(device, where):
    x, y = arrays(17)
    make = (lambda **kw: device_loader(x, y, **kw)) if where == "device" else \
        (lambda **kw: DataLoader(TensorDataset(x, y), **kw))
    loader = make(batch_size=5, shuffle=True, drop_last=True, seed=3)
    batches = epoch_ids(loader, x, y)
    assert len(loader) == len(batches) == 3 and all(len(b) == 5 for b in batches)
    seen = [i for b in batches for i in b]
    assert len(set(seen)) == 15
    assert len(make(batch_size=20, drop_last=True)) == 0 and list(make(batch_size=20, drop_last=True)) == []


@pytest.mark.parametrize("where", ["device", "host"])
def test_seeded_orders_repeat_and_differ_across_epochs(device, where):
    x, y = arrays(40)
    make = (lambda s: device_loader(x, y, batch_size=8, shuffle=True, seed=s)) if where == "device" else \
        (lambda s: DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, seed=s))
    a, b, other = make(7), make(7), make(8)
    a1, a2 = epoch_ids(a, x, y), epoch_ids(a, x, y)
    assert (a1, a2) == (epoch_ids(b, x, y), epoch_ids(b, x, y))
    assert a1 != a2                                     # a new order each epoch
    assert epoch_ids(other, x, y) != a1                 # another seed, another order
    assert a1 != [list(range(k, k + 8)) for k in range(0, 40, 8)]


@pytest.mark.parametrize("where", ["device", "host"])
def test_unseeded_orders_follow_manual_seed(device, where):
    x, y = arrays(30)
    make = (lambda: device_loader(x, y, batch_size=30, shuffle=True)) if where == "device" else \
        (lambda: DataLoader(TensorDataset(x, y), batch_size=30, shuffle=True))
    manual_seed(11)
    first = [epoch_ids(make(), x, y) for _ in range(2)]
    manual_seed(11)
    again = [epoch_ids(make(), x, y) for _ in range(2)]
    assert first == again and first[0] != first[1]


def test_a_device_epoch_makes_no_host_read_wait_or_upload(device, host_traffic, monkeypatch):
    x, y = arrays(300)
    loader = device_loader(x, y, batch_size=32, shuffle=True, seed=0)
    list(loader)                                   # builds the kernels
    uploads = []
    real_upload = launch.upload
    monkeypatch.setattr(launch, "upload", lambda *a: (uploads.append(a), real_upload(*a)))
    with host_traffic() as traffic:
        batches = list(loader)
    assert (traffic.reads, traffic.waits, len(uploads)) == (0, 0, 0)
    assert len(batches) == 10
    ids = np.concatenate([xb.numpy()[:, 0] for xb, _ in batches]).astype(int)
    assert sorted(ids) == list(range(300))


def test_host_batches_upload_without_waiting(device, host_traffic):
    x, y = arrays(100)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, seed=0)
    list(loader)
    with host_traffic() as traffic:
        batches = list(loader)
    assert (traffic.reads, traffic.waits) == (0, 0)
    assert [b[1].dtype for b in batches[:1]] == [np.int32]
    assert sum(b[0].shape()[0] for b in batches) == 100


def test_a_sampler_picks_the_samples_with_one_upload_per_epoch(device, monkeypatch):
    x, y = arrays(20)

    class Share:
        """Every third sample from an offset, as a distributed sampler would hand one rank."""

        def __init__(self, rank):
            self.rank = rank

        def __iter__(self):
            return iter(range(self.rank, 20, 3))

        def __len__(self):
            return len(range(self.rank, 20, 3))

    loader = device_loader(x, y, batch_size=3, sampler=Share(1))
    uploads = []
    real_upload = launch.upload
    monkeypatch.setattr(launch, "upload", lambda *a: (uploads.append(a), real_upload(*a)))
    want = [[1, 4, 7], [10, 13, 16], [19]]
    assert epoch_ids(loader, x, y) == want and len(loader) == 3
    assert epoch_ids(loader, x, y) == want and len(uploads) == 2
    host = DataLoader(TensorDataset(x, y), batch_size=3, sampler=[5, -1, 0, 5])
    assert epoch_ids(host, x, y) == [[5, 19, 0], [5]]


def test_variables_in_variables_out(device):
    x, y = arrays(6)
    ds = TensorDataset(Variable(Tensor.from_numpy(x)), Tensor.from_numpy(y, dtype="int32"))
    xb, yb = next(iter(DataLoader(ds, batch_size=4, shuffle=True, seed=2)))
    assert isinstance(xb, Variable) and not xb.requires_grad() and type(yb) is Tensor
    assert xb.shape() == [4, 5] and yb.shape() == [4]


def test_a_map_style_host_dataset_is_collated(device):
    class Squares:
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return np.array([i, i * i], dtype=np.float32), i % 2

    batches = list(DataLoader(Squares(), batch_size=3))
    assert [b[0].numpy().tolist() for b in batches] == [[[0, 0], [1, 1], [2, 4]], [[3, 9], [4, 16], [5, 25]],
                                                        [[6, 36]]]
    assert [b[1].to_vec() for b in batches] == [[0, 1, 0], [1, 0, 1], [0]]


def test_randperm_is_a_permutation_and_close_to_uniform(device):
    for n in [0, 1, 2, 3, 17, 65, 1000, 4097]:
        p = randperm(n, seed=5)
        assert p.dtype == np.int32 and p.shape() == [n]
        assert sorted(p.numpy().tolist()) == list(range(n))
    counts = np.zeros((4, 4))
    for s in range(400):
        counts[np.arange(4), randperm(4, seed=s).numpy()] += 1
    assert counts.min() > 65 and counts.max() < 135         # 100 expected in each cell
    assert randperm(50, seed=1).to_vec() != randperm(50, seed=1, offset=25).to_vec()


def test_randperm_replays_draw_new_permutations(device):
    manual_seed(3)
    perm = capture(lambda: randperm(33))
    seen = [tuple(perm().numpy()) for _ in range(4)]
    assert perm.replays == 3
    assert all(sorted(s) == list(range(33)) for s in seen) and len(set(seen)) == 4


def test_bad_arguments_raise_clear_errors(device):
    x, y = arrays(5)
    with pytest.raises(ValueError, match=r"TensorDataset: tensors must share their first dimension, got shapes "
                                         r"\[5, 5\] \(tensor 0\) and \[4\] \(tensor 1\)"):
        TensorDataset(Tensor.from_numpy(x), Tensor.from_numpy(y[:4], dtype="int32"))
    with pytest.raises(TypeError, match="TensorDataset: mix"):
        TensorDataset(Tensor.from_numpy(x), y)
    with pytest.raises(ValueError, match="TensorDataset: tensor 0 is 0-d"):
        TensorDataset(np.array(1.0))
    with pytest.raises(ValueError, match="DataLoader batch_size"):
        DataLoader(TensorDataset(x), batch_size=0)
    with pytest.raises(ValueError, match="sampler and shuffle"):
        DataLoader(TensorDataset(x), shuffle=True, sampler=[0, 1])
    with pytest.raises(IndexError, match="sampler index 5 is out of range for a dataset of 5"):
        list(DataLoader(TensorDataset(x), sampler=[0, 5]))
    with pytest.raises(TypeError, match="randperm: n must be a non-negative int"):
        randperm(-1)
