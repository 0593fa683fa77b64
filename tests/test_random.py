"""Device Philox4x32-10 against a host reference, plus statistics, reproducibility and validation."""

import numpy as np
import pytest

from axonml_autograd import Tensor, random
from axonml_autograd.device import default_device

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counters, key):
    """Reference Philox4x32-10 over an (m, 4) array of uint32 counters with one (k0, k1) key.

    32x32 multiplies are done in uint64 so that the high half is exact.
    """
    c = np.asarray(counters, dtype=np.uint64).reshape(-1, 4).copy()
    k0, k1 = int(key[0]), int(key[1])
    for r in range(10):
        if r:
            k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
        p0, p1 = M0 * c[:, 0], M1 * c[:, 2]
        c = np.stack([(p1 >> np.uint64(32)) ^ c[:, 1] ^ np.uint64(k0), p1 & MASK32,
                      (p0 >> np.uint64(32)) ^ c[:, 3] ^ np.uint64(k1), p0 & MASK32], axis=1)
    return c.astype(np.uint32)


def reference_words(n_blocks, seed, offset=0):
    """The (n_blocks, 4) words the package's layout assigns: counter (offset + b, 0, 0), key = seed."""
    ctr = (np.arange(n_blocks, dtype=np.uint64) + np.uint64(offset)) if n_blocks else np.zeros(0, np.uint64)
    counters = np.stack([ctr & MASK32, ctr >> np.uint64(32), np.zeros_like(ctr), np.zeros_like(ctr)], axis=1)
    return philox4x32_10(counters, (seed & 0xFFFFFFFF, seed >> 32))


def reference_uniform32(n, seed, offset=0):
    words = reference_words(-(-n // 4), seed, offset).reshape(-1)[:n]
    return ((words >> 8).astype(np.float64) * 2.0**-24).astype(np.float32)


def reference_uniform64(n, seed, offset=0):
    words = reference_words(-(-n // 2), seed, offset).reshape(-1, 2)[:n].astype(np.float64)
    return (np.floor(words[:, 0] / 32) * 67108864.0 + np.floor(words[:, 1] / 64)) * 2.0**-53


def reference_normal32(n, seed):
    words = reference_words(-(-n // 4), seed).reshape(-1, 2)
    u1 = ((words[:, 0] >> 8).astype(np.float64) + 1) * 2.0**-24
    u2 = (words[:, 1] >> 8).astype(np.float64) * 2.0**-24
    r, theta = np.sqrt(-2 * np.log(u1)), 2 * np.pi * u2
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1).reshape(-1)[:n]


needs_fp64 = pytest.mark.skipif(not default_device().fp64,
                                reason=f"device {default_device().name} lacks cl_khr_fp64")
AWKWARD = [0, 1, 3, 17, 65, 129, 1000]


# -- the reference itself is Philox (Random123's known-answer vectors) --------------------------------

@pytest.mark.parametrize("ctr, key, expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_host_reference_matches_random123_known_answers(ctr, key, expected):
    assert tuple(int(w) for w in philox4x32_10([ctr], key)[0]) == expected


# -- device bits equal the reference ----------------------------------------------------------------

@pytest.mark.parametrize("n", AWKWARD)
@pytest.mark.parametrize("seed", [0, 1, 123456789, 2**64 - 1, 0xDEADBEEF_00000001])
def test_float32_uniform_matches_host_philox_bit_for_bit(n, seed):
    got = random.uniform([n], seed).numpy()
    np.testing.assert_array_equal(got, reference_uniform32(n, seed))


def test_offset_continues_the_stream_across_a_carry_into_the_high_counter_word():
    # offset 2**32 - 2 makes blocks 2, 3 carry into counter word 1.
    offset = 2**32 - 2
    got = random.uniform([16], 99, offset=offset).numpy()
    np.testing.assert_array_equal(got, reference_uniform32(16, 99, offset))
    whole = random.uniform([16], 99).numpy()
    np.testing.assert_array_equal(random.uniform([8], 99, offset=2).numpy(), whole[8:])


@needs_fp64
@pytest.mark.parametrize("n", AWKWARD)
def test_float64_uniform_matches_host_philox_bit_for_bit(n):
    got = random.uniform([n], 2024, dtype="float64").numpy()
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, reference_uniform64(n, 2024))


@pytest.mark.parametrize("n", [1, 3, 17, 1000])
def test_float32_normal_is_box_muller_of_the_same_bits(n):
    # log/sin/cos round differently per device, so only closeness is promised here.
    got = random.normal([n], 5).numpy()
    np.testing.assert_allclose(got, reference_normal32(n, 5), rtol=2e-5, atol=2e-5)


# -- statistics -------------------------------------------------------------------------------------

N = 100_000


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=needs_fp64)])
def test_uniform_moments_and_range(dtype):
    x = random.uniform([N], 11, dtype=dtype).numpy().astype(np.float64)
    assert x.min() >= 0.0 and x.max() < 1.0
    # mean of U(0,1): 0.5 with sd sqrt(1/12/N) ~ 9e-4; 5 sd margin.
    assert abs(x.mean() - 0.5) < 5e-3
    assert abs(x.var() - 1 / 12) < 2e-3
    counts, _ = np.histogram(x, bins=10, range=(0, 1))
    assert np.all(np.abs(counts - N / 10) < 5 * np.sqrt(N / 10))


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=needs_fp64)])
def test_normal_moments_and_tails(dtype):
    x = random.normal([N], 12, dtype=dtype).numpy().astype(np.float64)
    assert np.all(np.isfinite(x))
    assert abs(x.mean()) < 4 / np.sqrt(N)
    assert abs(x.var() - 1) < 4 * np.sqrt(2 / N)
    # P(|z| > 1.96) = 0.05; tails at ~4.5 sd for 1e5 draws are vanishingly rare beyond 6.
    frac = np.mean(np.abs(x) > 1.96)
    assert abs(frac - 0.05) < 4 * np.sqrt(0.05 * 0.95 / N)
    assert np.abs(x).max() < 6.5


def test_normal_mean_std_and_uniform_low_high_are_applied():
    x = random.normal([N], 3, mean=10.0, std=0.5).numpy().astype(np.float64)
    assert abs(x.mean() - 10.0) < 4 * 0.5 / np.sqrt(N)
    assert abs(x.std() - 0.5) < 0.01
    u = random.uniform([N], 3, low=-2.0, high=6.0).numpy()
    assert u.min() >= -2.0 and u.max() < 6.0
    assert abs(u.mean() - 2.0) < 0.05


def test_uniform_stays_below_high_when_rounding_would_reach_it():
    # With a span of two float32 ulps, every u above 0.75 rounds low + span * u up to high.
    x = random.uniform([N], 0, low=1.0, high=1.0 + 2**-22).numpy()
    assert x.max() < np.float32(1.0 + 2**-22)
    assert x.min() >= 1.0
    assert np.all(random.uniform([5], 0, low=3.0, high=3.0).numpy() == 3.0)


def test_std_zero_gives_the_mean():
    assert np.all(random.normal([9], 1, mean=2.5, std=0.0).numpy() == 2.5)


# -- reproducibility --------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [random.uniform, random.normal])
def test_same_seed_same_numbers_different_seed_different_numbers(fn):
    a, b, c = fn([1000], 42).numpy(), fn([1000], 42).numpy(), fn([1000], 43).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.mean(a == c) < 0.01


def test_numbers_do_not_depend_on_shape_only_on_element_index():
    flat = random.uniform([60], 8).numpy()
    np.testing.assert_array_equal(random.uniform([3, 4, 5], 8).numpy().reshape(-1), flat)
    np.testing.assert_array_equal(random.uniform([17], 8).numpy(), flat[:17])


def test_seeds_that_differ_only_in_the_high_word_differ():
    a = random.uniform([64], 5).numpy()
    b = random.uniform([64], 5 + 2**32).numpy()
    assert np.mean(a == b) < 0.1


def test_tensor_rand_and_randn_use_the_generator():
    np.testing.assert_array_equal(Tensor.rand([4, 5], seed=9).numpy(), random.uniform([4, 5], 9).numpy())
    np.testing.assert_array_equal(Tensor.randn([7], seed=9).numpy(), random.normal([7], 9).numpy())
    assert Tensor.rand([2, 3]).shape() == [2, 3]


@pytest.mark.parametrize("shape", [[], [0], [2, 0, 3]])
def test_zero_d_and_empty_shapes(shape):
    t = random.uniform(shape, 1)
    assert t.shape() == shape
    assert t.numpy().shape == tuple(shape)
    if not shape:
        assert t.item() == reference_uniform32(1, 1)[0]


# -- in-place fills ---------------------------------------------------------------------------------

def test_uniform_fill_in_place_writes_the_same_numbers_and_bumps_version():
    t = Tensor.zeros([5, 13])
    v0 = t.version
    out = random.uniform_(t, 77, 0.0, 1.0)
    assert out is t
    assert t.version == v0 + 1
    np.testing.assert_array_equal(t.numpy().reshape(-1), reference_uniform32(65, 77))


def test_normal_fill_in_place_and_bumps_version():
    t = Tensor.zeros([129])
    v0 = t.version
    random.normal_(t, 4, 1.0, 2.0)
    assert t.version == v0 + 1
    np.testing.assert_allclose(t.numpy(), 1.0 + 2.0 * reference_normal32(129, 4), rtol=1e-4, atol=1e-4)


def test_fresh_tensors_start_at_version_zero():
    assert random.uniform([3], 1).version == 0
    assert random.normal([3], 1).version == 0


@needs_fp64
def test_float64_fill_in_place():
    t = Tensor.zeros([17], dtype="float64")
    random.uniform_(t, 2024)
    np.testing.assert_array_equal(t.numpy(), reference_uniform64(17, 2024))


# -- validation -------------------------------------------------------------------------------------

# (None is not a bad seed: it draws from the device's generator, tests/test_generator.py.)
@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (2**64, ValueError), (1.5, TypeError),
                                       ("3", TypeError), (True, TypeError)])
def test_bad_seed_raises(seed, exc):
    with pytest.raises(exc, match="seed"):
        random.uniform([3], seed)
    with pytest.raises(exc, match="seed"):
        random.normal_(Tensor.zeros([3]), seed)


def test_numpy_integer_seed_is_accepted():
    np.testing.assert_array_equal(random.uniform([5], np.uint64(2**63)).numpy(),
                                  reference_uniform32(5, 2**63))


@pytest.mark.parametrize("shape, exc", [([-1], ValueError), ([2.0], TypeError), ("3", TypeError),
                                        ([True], TypeError)])
def test_bad_shape_raises(shape, exc):
    with pytest.raises(exc, match="shape"):
        random.uniform(shape, 0)


def test_bad_distribution_parameters_raise():
    with pytest.raises(ValueError, match="low"):
        random.uniform([3], 0, low=2.0, high=1.0)
    with pytest.raises(ValueError, match="std"):
        random.normal([3], 0, std=-1.0)
    with pytest.raises(ValueError, match="finite"):
        random.uniform([3], 0, high=float("inf"))
    with pytest.raises(TypeError, match="mean"):
        random.normal([3], 0, mean="0")


def test_integer_dtype_is_refused():
    with pytest.raises(TypeError, match="float"):
        random.uniform([3], 0, dtype="int32")
    with pytest.raises(TypeError, match="float"):
        random.uniform_(Tensor([3], "int32"), 0)
    with pytest.raises(TypeError):
        random.uniform([3], 0, dtype="complex64")


def test_fill_of_a_non_tensor_raises():
    with pytest.raises(TypeError, match="Tensor"):
        random.uniform_(np.zeros(3), 0)


def test_one_kernel_per_dtype_and_distribution():
    from axonml_autograd import kernels
    random.uniform([3], 0)
    random.normal([3], 0)
    before = kernels.build_count()
    for n, seed in [(5, 1), (1000, 2), (17, 2**40)]:
        random.uniform([n], seed, low=-1.0, high=1.0)
        random.normal([n], seed, mean=3.0, std=2.0)
    assert kernels.build_count() == before
