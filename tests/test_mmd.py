"""Tests for jgan.metrics.mmd2 (Gaussian kernel) and kid (polynomial kernel)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics.pairwise import polynomial_kernel

from jgan.metrics import KernelInceptionDistance, kid, mmd2
from jgan.metrics._mmd import _subset_indices


def _loop_mmd2(x, y, bandwidths):
    """The unbiased MMD² as a plain double loop (i != j within each set)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    bandwidths = np.atleast_1d(np.asarray(bandwidths, np.float64))

    def k(a, b):
        return sum(np.exp(-np.sum((a - b) ** 2) / (2 * s**2)) for s in bandwidths)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)


def _poly_mmd2(x, y, degree=3, gamma=None, coef0=1.0):
    """torch-fidelity's unbiased polynomial MMD², with sklearn's kernel."""
    kxx = polynomial_kernel(x, x, degree=degree, gamma=gamma, coef0=coef0)
    kyy = polynomial_kernel(y, y, degree=degree, gamma=gamma, coef0=coef0)
    kxy = polynomial_kernel(x, y, degree=degree, gamma=gamma, coef0=coef0)
    m = len(x)
    within = kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)
    return within / (m * (m - 1)) - 2 * kxy.sum() / (m * m)


# ----------------------------------------------------------------------- mmd2


@pytest.mark.parametrize("bandwidth", [1.0, 0.3, [0.5, 1.0, 4.0]])
def test_mmd2_matches_double_loop_float64(bandwidth, x64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    y = rng.normal(size=(9, 3)) + 0.4
    out = mmd2(x, y, bandwidth=np.asarray(bandwidth))
    assert out.dtype == jnp.float64 and out.shape == ()
    np.testing.assert_allclose(out, _loop_mmd2(x, y, bandwidth), rtol=1e-11)


def test_mmd2_matches_double_loop_float32():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(15, 4)).astype(np.float32)
    y = (rng.normal(size=(11, 4)) * 1.5).astype(np.float32)
    out = mmd2(x, y, bandwidth=2.0)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, _loop_mmd2(x, y, 2.0), rtol=1e-4, atol=1e-6)


def _gaussian_pairs(seed, shift):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(100, 2)).astype(np.float32)
    y = (rng.normal(size=(80, 2)) + np.array([shift, 0.0])).astype(np.float32)
    return x, y


def test_mmd2_is_unbiased_under_the_null():
    # Same distribution: the estimates centre on 0 and many are negative.
    values = np.asarray(
        [float(mmd2(*_gaussian_pairs(100 + seed, 0.0), bandwidth=1.0)) for seed in range(40)]
    )
    assert np.all(np.isfinite(values))
    assert (values < 0).sum() >= 10
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values))
    # The biased (V-statistic) estimator would average (1 - 1/3)(1/100 + 1/80) = 0.015.
    assert values.mean() < 0.005


def test_mmd2_of_shifted_gaussians_matches_the_population_value():
    # P = N(0, I_2), Q = N((2, 0), I_2), k = exp(-|a - b|^2 / 2):
    # E k(x, x') = E k(y, y') = 1/3 and E k(x, y) = exp(-4/6) / 3, so
    # MMD^2 = (2/3)(1 - exp(-2/3)) = 0.3244; the null's spread is about 0.007.
    population = 2 / 3 * (1 - np.exp(-2 / 3))
    values = np.asarray(
        [float(mmd2(*_gaussian_pairs(200 + seed, 2.0), bandwidth=1.0)) for seed in range(10)]
    )
    assert np.all(values > 0.15)
    assert abs(values.mean() - population) < 0.05


def test_several_bandwidths_are_the_sum_of_single_ones(x64):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 5)), rng.normal(size=(17, 5)) * 0.8
    bandwidths = np.array([0.25, 1.0, 3.0])
    total = sum(float(mmd2(x, y, bandwidth=s)) for s in bandwidths)
    np.testing.assert_allclose(mmd2(x, y, bandwidth=bandwidths), total, rtol=1e-12)


def test_mmd2_symmetry_and_permutation_invariance(x64):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(14, 3)) + 0.2
    base = mmd2(x, y, bandwidth=1.5)
    np.testing.assert_allclose(mmd2(y, x, bandwidth=1.5), base, rtol=1e-12)
    np.testing.assert_allclose(
        mmd2(x[rng.permutation(20)], y[rng.permutation(14)], bandwidth=1.5), base, rtol=1e-12
    )


def test_mmd2_far_apart_and_identical_points():
    # Two tight, far-apart clusters: k(x, x') = 1, k(y, y') = 1, k(x, y) = 0.
    x = np.zeros((4, 2), np.float32)
    y = np.full((3, 2), 100.0, np.float32)
    np.testing.assert_allclose(mmd2(x, y, bandwidth=1.0), 2.0, rtol=1e-6)
    np.testing.assert_allclose(mmd2(x, x, bandwidth=1.0), 0.0, atol=1e-6)


class MMDJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_mmd2_variants_with_traced_bandwidth(self):
        rng = np.random.default_rng(5)
        x = rng.normal(size=(10, 3)).astype(np.float32)
        y = rng.normal(size=(8, 3)).astype(np.float32) + 0.5
        f = self.variant(lambda a, b, s: mmd2(a, b, bandwidth=s))
        for s in (np.float32(0.7), np.array([0.5, 2.0], np.float32)):
            np.testing.assert_allclose(f(x, y, s), _loop_mmd2(x, y, s), rtol=1e-4, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_kid_variants(self):
        rng = np.random.default_rng(6)
        f1 = rng.normal(size=(40, 8)).astype(np.float32)
        f2 = (rng.normal(size=(50, 8)) + 0.3).astype(np.float32)
        key = jax.random.key(0)
        f = self.variant(lambda a, b, k: kid(a, b, subsets=4, subset_size=20, key=k))
        out = f(f1, f2, key)
        expected = kid(f1, f2, subsets=4, subset_size=20, key=key)
        chex.assert_trees_all_close(out, expected, rtol=1e-5)


# ------------------------------------------------------------------------ kid


def test_kid_matches_numpy_given_the_same_subsets(x64):
    rng = np.random.default_rng(7)
    f1 = rng.normal(size=(60, 16))
    f2 = rng.normal(size=(45, 16)) * 1.2 + 0.1
    key = jax.random.key(3)
    out = kid(f1, f2, subsets=7, subset_size=30, key=key)
    assert isinstance(out, KernelInceptionDistance) and out.mean.dtype == jnp.float64
    idx1, idx2 = _subset_indices(key, 60, 45, subsets=7, subset_size=30)
    idx1, idx2 = np.asarray(idx1), np.asarray(idx2)
    assert idx1.shape == (7, 30) and idx2.shape == (7, 30)
    assert all(len(set(row)) == 30 for row in idx1)  # without replacement
    assert idx2.max() < 45 and idx1.max() < 60
    estimates = [_poly_mmd2(f1[i], f2[j]) for i, j in zip(idx1, idx2)]
    np.testing.assert_allclose(out.mean, np.mean(estimates), rtol=1e-10)
    np.testing.assert_allclose(out.std, np.std(estimates), rtol=1e-8)  # ddof = 0
    assert np.std(estimates) > 0


def test_kid_with_full_subsets_is_the_full_polynomial_mmd(x64):
    # Every subset is then a permutation of the whole set, and the estimate
    # does not depend on the order of the rows.
    rng = np.random.default_rng(8)
    f1, f2 = rng.normal(size=(40, 10)), rng.normal(size=(40, 10)) + 0.2
    for degree, gamma, coef0 in [(3, None, 1.0), (2, 0.5, 0.0), (1, 1.0, 2.0)]:
        mean, std = kid(
            f1, f2, subsets=3, subset_size=40, degree=degree, gamma=gamma, coef0=coef0,
            key=jax.random.key(1),
        )
        np.testing.assert_allclose(mean, _poly_mmd2(f1, f2, degree, gamma, coef0), rtol=1e-10)
        assert float(std) < 1e-10 * abs(float(mean))


def test_kid_default_kernel_is_cubic_over_dimension(x64):
    rng = np.random.default_rng(9)
    f1, f2 = rng.normal(size=(20, 6)), rng.normal(size=(20, 6)) * 2
    mean, _ = kid(f1, f2, subsets=1, subset_size=20, key=jax.random.key(0))

    def k(a, b):
        return (a @ b.T / 6 + 1) ** 3

    kxx, kyy, kxy = k(f1, f1), k(f2, f2), k(f1, f2)
    off_diagonal = kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)
    expected = off_diagonal / (20 * 19) - 2 * kxy.mean()
    np.testing.assert_allclose(mean, expected, rtol=1e-10)


def test_kid_near_zero_for_one_distribution_positive_for_two():
    rng = np.random.default_rng(10)
    f1 = rng.normal(size=(400, 32)).astype(np.float32)
    f2 = rng.normal(size=(400, 32)).astype(np.float32)
    f3 = (rng.normal(size=(400, 32)) * 1.5 + 0.3).astype(np.float32)
    key = jax.random.key(2)
    same = kid(f1, f2, subsets=20, subset_size=100, key=key)
    diff = kid(f1, f3, subsets=20, subset_size=100, key=key)
    assert np.isfinite(same.mean) and np.isfinite(same.std) and float(same.std) > 0
    assert abs(float(same.mean)) < 3 * float(same.std)
    assert float(diff.mean) > 10 * float(same.std) + abs(float(same.mean))


def test_kid_keys_matter_and_are_reproducible():
    rng = np.random.default_rng(11)
    f1, f2 = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    a = kid(f1, f2, subsets=5, subset_size=10, key=jax.random.key(0))
    b = kid(f1, f2, subsets=5, subset_size=10, key=jax.random.key(0))
    c = kid(f1, f2, subsets=5, subset_size=10, key=jax.random.key(1))
    chex.assert_trees_all_equal(a, b)
    assert float(a.mean) != float(c.mean)


def test_kid_does_not_retrace_for_new_keys():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(a, b, key):
        return kid(a, b, subsets=3, subset_size=10, key=key)

    rng = np.random.default_rng(12)
    f1 = rng.normal(size=(30, 4)).astype(np.float32)
    f2 = rng.normal(size=(30, 4)).astype(np.float32)
    for seed in range(3):
        out = f(f1, f2, jax.random.key(seed))
        assert np.isfinite(out.mean)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "x, y, bandwidth, match",
    [
        (np.zeros((1, 2)), np.zeros((3, 2)), 1.0, "at least 2 samples in x"),
        (np.zeros((3, 2)), np.zeros((1, 2)), 1.0, "at least 2 samples in y"),
        (np.zeros(3), np.zeros((3, 2)), 1.0, r"\[n, d\]"),
        (np.zeros((3, 2)), np.zeros((3, 3)), 1.0, "same dimension"),
        (np.zeros((3, 2)), np.zeros((3, 2)), -1.0, "bandwidth"),
        (np.zeros((3, 2)), np.zeros((3, 2)), 0.0, "bandwidth"),
        (np.zeros((3, 2)), np.zeros((3, 2)), np.inf, "bandwidth"),
        (np.zeros((3, 2)), np.zeros((3, 2)), np.nan, "bandwidth"),
        (np.zeros((3, 2)), np.zeros((3, 2)), [1.0, -2.0], "bandwidth"),
        (np.zeros((3, 2)), np.zeros((3, 2)), np.ones((2, 2)), "bandwidth"),
        (np.zeros((3, 2)), np.zeros((3, 2)), np.ones(0), "bandwidth"),
    ],
)
def test_mmd2_bad_input_raises(x, y, bandwidth, match):
    with pytest.raises(ValueError, match=match):
        mmd2(x, y, bandwidth=bandwidth)


def test_mmd2_bandwidth_is_required_keyword():
    with pytest.raises(TypeError):
        mmd2(np.zeros((3, 2)), np.zeros((3, 2)), 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(subset_size=31), "subset_size"),
        (dict(subset_size=1), "subset_size"),
        (dict(subsets=0), "subsets"),
        (dict(degree=0), "degree"),
        (dict(gamma=-1.0), "gamma"),
        (dict(gamma=np.ones(2)), "gamma"),
        (dict(coef0=np.ones(2)), "coef0"),
    ],
)
def test_kid_bad_input_raises(kwargs, match):
    f1, f2 = np.zeros((40, 3)), np.zeros((30, 3))  # subset_size may be at most 30
    kwargs = dict(dict(subsets=2, subset_size=10, key=jax.random.key(0)), **kwargs)
    with pytest.raises(ValueError, match=match):
        kid(f1, f2, **kwargs)


@pytest.mark.parametrize("name", ["subsets", "subset_size", "degree"])
def test_kid_non_int_count_raises_type_error(name):
    f1, f2 = np.zeros((40, 3)), np.zeros((30, 3))
    kwargs = dict(subsets=2, subset_size=10, key=jax.random.key(0))
    kwargs[name] = 2.5
    with pytest.raises(TypeError, match=f"{name} must be a Python int"):
        kid(f1, f2, **kwargs)


def test_kid_shape_errors_and_required_key():
    with pytest.raises(ValueError, match="same dimension"):
        kid(np.zeros((5, 3)), np.zeros((5, 2)), subset_size=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        kid(np.zeros(5), np.zeros((5, 2)), subset_size=2, key=jax.random.key(0))
    with pytest.raises(TypeError):
        kid(np.zeros((5, 3)), np.zeros((5, 3)), subset_size=2)  # no default key


# ------------------------------------------------- translation and bad values


def _direct_mmd2(x, y, bandwidth):
    """The unbiased Gaussian MMD² in float64 from differences ``a - b`` (no expansion).

    On float32 inputs the differences are exact in float64, so this is the
    exact value to about 1e-15 whatever the offset.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a, b):
        return np.exp(-np.sum((a[:, None] - b[None]) ** 2, axis=-1) / (2 * bandwidth**2))

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * k(x, y).mean())


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6])
def test_mmd2_float32_is_exact_at_any_shared_offset(offset):
    # The reported case: d = 8, bandwidth 1, both samples shifted by 1e3 gave
    # 0.00216 against an exact 0.00536 (a 60 % error) before centring.
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(64, 8)) + offset).astype(np.float32)
    y = (rng.normal(size=(48, 8)) * 1.3 + 0.5 + offset).astype(np.float32)
    exact = _direct_mmd2(x, y, 1.0)
    assert exact > 0.003  # a value the error could hide
    # Stated tolerance: 1e-4 relative (measured: about 1e-6 at every offset).
    np.testing.assert_allclose(mmd2(x, y, bandwidth=1.0), exact, rtol=1e-4)


def test_mmd2_is_translation_invariant_float64(x64):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(30, 5))
    y = rng.normal(size=(25, 5)) + 0.3
    base = mmd2(x, y, bandwidth=1.5)
    for c in (1e3, -1e6, rng.normal(size=5) * 1e5):
        np.testing.assert_allclose(mmd2(x + c, y + c, bandwidth=1.5), base, rtol=1e-8)


def _exact_kid(x, y, *, gamma, coef0, degree=3):
    """The unbiased polynomial MMD² in exact rational arithmetic (Fractions)."""
    from fractions import Fraction

    xs = [[Fraction(float(v)) for v in row] for row in x]
    ys = [[Fraction(float(v)) for v in row] for row in y]
    g, c = Fraction(gamma), Fraction(coef0)

    def k(a, b):
        return (g * sum(p * q for p, q in zip(a, b)) + c) ** degree

    n, m = len(xs), len(ys)
    sxx = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n) if i != j)
    syy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(a, b) for a in xs for b in ys)
    return float(sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m))


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6])
def test_kid_float32_matches_exact_arithmetic_at_any_offset(offset):
    # One subset of all rows is a permutation of each set: the full MMD².
    rng = np.random.default_rng(13)
    x = (rng.normal(size=(14, 4)) + offset).astype(np.float32)
    y = (rng.normal(size=(14, 4)) * 1.3 + 0.2 + offset).astype(np.float32)
    exact = _exact_kid(x, y, gamma=0.25, coef0=1.0)
    out = kid(x, y, subsets=1, subset_size=14, key=jax.random.key(0))
    # Stated tolerance: 1e-4 relative (measured: 1e-5 at 0, 3e-7 at 1e3 and 1e6,
    # where the direct sum of kernel matrices gave the wrong sign and NaN).
    np.testing.assert_allclose(out.mean, exact, rtol=1e-4)
    assert out.std == 0


def test_kid_is_not_translation_invariant_so_it_is_not_centred(x64):
    # The cubic kernel depends on the origin: a shared offset changes KID, and
    # jgan reports the value for the data as given (torch-fidelity's).
    rng = np.random.default_rng(14)
    x = rng.normal(size=(10, 4))
    y = rng.normal(size=(10, 4)) + 0.5
    base = kid(x, y, subsets=1, subset_size=10, key=jax.random.key(0)).mean
    shifted = kid(x + 10, y + 10, subsets=1, subset_size=10, key=jax.random.key(0)).mean
    np.testing.assert_allclose(base, _exact_kid(x, y, gamma=0.25, coef0=1.0), rtol=1e-10)
    np.testing.assert_allclose(shifted, _exact_kid(x + 10, y + 10, gamma=0.25, coef0=1.0), rtol=1e-10)
    assert shifted > 100 * base


def test_kid_overflow_is_an_error_not_a_number():
    big = np.ones((4, 2), np.float32) * 1e12
    with pytest.raises(OverflowError, match="overflowed float32"):
        kid(big, np.zeros((4, 2), np.float32), subsets=2, subset_size=3, key=jax.random.key(0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_inputs_raise_naming_the_argument(bad):
    rng = np.random.default_rng(15)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=(5, 3)).astype(np.float32)
    x_bad = x.copy()
    x_bad[2, 1] = bad
    y_bad = jnp.asarray(y).at[4, 0].set(bad)  # a jax array takes the device-side path
    with pytest.raises(ValueError, match=r"^x holds 1 non-finite value .*index \(2, 1\)"):
        mmd2(x_bad, y, bandwidth=1.0)
    with pytest.raises(ValueError, match=r"^y holds 1 non-finite value .*index \(4, 0\)"):
        mmd2(x, y_bad, bandwidth=1.0)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="^features1 holds"):
        kid(x_bad, y, subsets=2, subset_size=4, key=key)
    with pytest.raises(ValueError, match="^features2 holds"):
        kid(x, y_bad, subsets=2, subset_size=4, key=key)


def test_nonfinite_inputs_propagate_under_jit():
    rng = np.random.default_rng(16)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=(5, 3)).astype(np.float32)
    x[0, 0] = np.nan
    assert np.isnan(jax.jit(lambda a, b: mmd2(a, b, bandwidth=1.0))(x, y))
    out = jax.jit(lambda a, b, k: kid(a, b, subsets=2, subset_size=4, key=k))(y, x, jax.random.key(0))
    assert np.isnan(out.mean)
