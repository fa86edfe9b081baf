"""Tests for jgan.metrics: gaussian_statistics, the streaming accumulator,
frechet_distance and fid."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

from jgan.metrics import (
    GaussianStatistics,
    fid,
    finalize_gaussian_statistics,
    frechet_distance,
    gaussian_statistics,
    init_gaussian_statistics,
    merge_gaussian_statistics,
    update_gaussian_statistics,
)


def _pytorch_fid_reference(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's ``calculate_frechet_distance``: scipy ``sqrtm`` of the
    product, an ``eps * I`` offset if that is not finite, then the real part."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = np.real(covmean)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def _features(seed, n, d, *, scale=1.0, shift=0.0):
    """Correlated, non-centred features ``[n, d]`` (float64 numpy)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return shift + scale * rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)


def _stats(x):
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def _closed_form(mu1, a, mu2, b):
    """d² for commuting covariances with eigenvalues ``a`` and ``b``."""
    return np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)


# -------------------------------------------------------- gaussian_statistics


def test_gaussian_statistics_matches_numpy(x64):
    x = _features(0, 50, 7, shift=3.0)
    mean, cov = gaussian_statistics(x)
    assert mean.dtype == jnp.float64 and cov.shape == (7, 7)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-12)  # N - 1


def test_gaussian_statistics_two_samples_float32():
    x = np.array([[0.0, 1.0], [2.0, 5.0]], np.float32)
    mean, cov = gaussian_statistics(x)
    assert cov.dtype == jnp.float32
    np.testing.assert_allclose(mean, [1.0, 3.0])
    np.testing.assert_allclose(cov, [[2.0, 4.0], [4.0, 8.0]])  # divides by 1


# ---------------------------------------------------- the streaming accumulator


@pytest.mark.parametrize("sizes", [[100], [1, 99], [3, 0, 40, 1, 56], [50, 50], [2] * 50])
def test_streaming_equals_one_shot(sizes, x64):
    x = _features(1, sum(sizes), 6, shift=-2.0)
    state = init_gaussian_statistics(6, jnp.float64)
    start = 0
    for size in sizes:
        state = update_gaussian_statistics(state, x[start : start + size])
        start += size
    assert int(state.count) == 100
    mean, cov = finalize_gaussian_statistics(state)
    ref_mean, ref_cov = gaussian_statistics(x)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-11, atol=1e-14)


def test_streaming_is_stable_with_a_large_mean_float32():
    # Mean 1e4, spread 1: raw sums of x and x x^T in float32 would lose every
    # digit of the covariance (1e8 - 1e8); the centred pairwise merge keeps it.
    rng = np.random.default_rng(2)
    x = 1e4 + rng.normal(size=(3000, 3)) * np.array([1.0, 2.0, 0.5])
    state = init_gaussian_statistics(3)
    for batch in np.split(x.astype(np.float32), [7, 1000, 1001, 2500]):
        state = update_gaussian_statistics(state, batch)
    mean, cov = finalize_gaussian_statistics(state)
    assert cov.dtype == jnp.float32
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=2e-3, atol=2e-3)


def test_merge_equals_sequential_updates(x64):
    x = _features(3, 70, 4)
    a = update_gaussian_statistics(init_gaussian_statistics(4, jnp.float64), x[:13])
    b = update_gaussian_statistics(init_gaussian_statistics(4, jnp.float64), x[13:])
    merged = merge_gaussian_statistics(a, b)
    sequential = update_gaussian_statistics(a, x[13:])
    assert int(merged.count) == 70
    chex.assert_trees_all_close(merged, sequential, rtol=1e-12)
    # Merging with an empty accumulator, on either side, changes nothing.
    empty = init_gaussian_statistics(4, jnp.float64)
    chex.assert_trees_all_close(merge_gaussian_statistics(empty, a), a, rtol=1e-15)
    chex.assert_trees_all_close(merge_gaussian_statistics(a, empty), a, rtol=1e-15)


def test_masked_padded_batches_compile_once():
    x = _features(4, 53, 5).astype(np.float32)
    batch = 16

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(state, features, mask):
        return update_gaussian_statistics(state, features, mask=mask)

    state = init_gaussian_statistics(5)
    for start in range(0, 53, batch):
        chunk = x[start : start + batch]
        mask = np.arange(batch) < len(chunk)
        padded = np.concatenate([chunk, np.full((batch - len(chunk), 5), np.nan, np.float32)])
        state = update(state, padded, mask)
    assert int(state.count) == 53
    mean, cov = finalize_gaussian_statistics(state)
    ref_mean, ref_cov = gaussian_statistics(x)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-4, atol=1e-5)


def test_state_is_a_pytree_and_scan_works():
    x = _features(5, 60, 3).astype(np.float32)
    state = init_gaussian_statistics(3)
    assert isinstance(state, GaussianStatistics)
    state, _ = jax.lax.scan(
        lambda s, b: (update_gaussian_statistics(s, b), None), state, x.reshape(6, 10, 3)
    )
    mean, cov = finalize_gaussian_statistics(state)
    ref_mean, ref_cov = gaussian_statistics(x)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-4, atol=1e-6)


def test_finalize_under_jit_with_too_few_samples_is_nan():
    state = update_gaussian_statistics(init_gaussian_statistics(2), np.ones((1, 2)))
    mean, cov = jax.jit(finalize_gaussian_statistics)(state)  # documented
    assert np.all(np.isnan(mean)) and np.all(np.isnan(cov))
    with pytest.raises(ValueError, match="at least two samples"):
        finalize_gaussian_statistics(state)


# ----------------------------------------------------------- frechet_distance


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pytorch_fid_formula_d64(seed, x64):
    x = _features(seed, 400, 64)
    y = _features(seed + 10, 300, 64, scale=1.3, shift=0.2)
    mu1, s1 = _stats(x)
    mu2, s2 = _stats(y)
    ref = _pytorch_fid_reference(mu1, s1, mu2, s2)
    out = frechet_distance(mu1, s1, mu2, s2)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    np.testing.assert_allclose(fid(x, y), ref, rtol=1e-6)


@pytest.mark.slow  # scipy's sqrtm of a 2048 x 2048 product takes ~20-40 s
def test_matches_pytorch_fid_formula_d2048(x64):
    d = 2048
    rng = np.random.default_rng(0)
    x = rng.normal(size=(d + 300, d))
    y = 0.05 + 1.1 * rng.normal(size=(d + 300, d))
    mu1, s1 = _stats(x)
    mu2, s2 = _stats(y)
    ref = _pytorch_fid_reference(mu1, s1, mu2, s2)
    np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2), ref, rtol=1e-6)


def test_diagonal_closed_form(x64):
    rng = np.random.default_rng(6)
    d = 40
    a, b = rng.uniform(0.01, 5, d), rng.uniform(0.01, 5, d)
    a[:5] = 0.0  # rank-deficient too: the closed form still holds
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = _closed_form(mu1, a, mu2, b)
    out = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    np.testing.assert_allclose(out, expected, rtol=1e-10)
    # float32 inputs compute in float32.
    out32 = frechet_distance(*(np.float32(v) for v in (mu1, np.diag(a), mu2, np.diag(b))))
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(out32, expected, rtol=1e-4)


def test_rotated_commuting_closed_form_d256(x64):
    # Sigma1 = Q diag(a) Q^T, Sigma2 = Q diag(b) Q^T commute, so
    # tr (Sigma1 Sigma2)^1/2 = sum sqrt(a b) exactly; the rotation makes the
    # matrices dense, so eigh has real work to do.
    rng = np.random.default_rng(7)
    d = 256
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0, 3, d), rng.uniform(0, 3, d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = _closed_form(mu1, a, mu2, b)
    np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-7)


def test_fid_of_a_set_with_itself_is_zero(x64):
    x = _features(8, 300, 32, shift=5.0)
    mu, s = _stats(x)
    scale = np.trace(s)
    assert 0 <= float(fid(x, x)) < 1e-9 * scale
    x32 = x.astype(np.float32)
    assert 0 <= float(fid(x32, x32)) < 1e-3 * scale
    # Rank-deficient (n < d) covariances too.
    y = _features(9, 20, 64)
    mu, s = _stats(y)
    out = frechet_distance(mu, s, mu, s)
    assert np.isfinite(out) and 0 <= float(out) < 1e-6 * np.trace(s)


def test_fid_matches_scipy_on_distinct_samples_and_is_positive(x64):
    x = _features(10, 200, 16)
    y = _features(10, 200, 16, shift=0.01)  # same mixing, different noise
    assert float(fid(x, y)) > 0
    np.testing.assert_allclose(fid(x, y), _pytorch_fid_reference(*_stats(x), *_stats(y)), rtol=1e-6)


@pytest.mark.parametrize("n1, n2", [(60, 60), (40, 200)])
def test_rank_deficient_is_finite_nonnegative_and_matches_scipy(n1, n2, x64):
    d = 128  # fewer samples than dimensions: singular covariances
    x = _features(11, n1, d)
    y = _features(12, n2, d, scale=0.7, shift=0.3)
    mu1, s1 = _stats(x)
    mu2, s2 = _stats(y)
    assert np.linalg.matrix_rank(s1) < d
    out = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(out) and float(out) >= 0
    np.testing.assert_allclose(out, _pytorch_fid_reference(mu1, s1, mu2, s2), rtol=1e-6)
    # float32: finite and non-negative, within the documented accuracy.
    out32 = fid(x.astype(np.float32), y.astype(np.float32))
    assert out32.dtype == jnp.float32 and np.isfinite(out32) and float(out32) >= 0
    np.testing.assert_allclose(out32, out, rtol=3e-3)


def test_zero_covariances_give_squared_mean_distance():
    mu1, mu2 = np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 5.0])
    zero = np.zeros((3, 3))
    np.testing.assert_allclose(frechet_distance(mu1, zero, mu2, zero), 5.0, rtol=1e-6)
    np.testing.assert_allclose(frechet_distance(mu1, zero, mu1, zero), 0.0, atol=0)


def test_symmetry_and_permutation_invariance(x64):
    x = _features(13, 120, 24)
    y = _features(14, 90, 24, scale=2.0)
    base = fid(x, y)
    np.testing.assert_allclose(fid(y, x), base, rtol=1e-10)
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(fid(x[rng.permutation(120)], y), base, rtol=1e-10)
    np.testing.assert_allclose(
        fid(x[rng.permutation(120)], y[rng.permutation(90)]), base, rtol=1e-10
    )
    mu1, s1 = _stats(x)
    mu2, s2 = _stats(y)
    np.testing.assert_allclose(
        frechet_distance(mu2, s2, mu1, s1), frechet_distance(mu1, s1, mu2, s2), rtol=1e-10
    )


def test_translation_moves_only_the_mean_term(x64):
    x = _features(15, 100, 8)
    y = _features(16, 100, 8)
    shift = np.linspace(-1, 1, 8)
    expected = float(fid(x, y)) + 2 * shift @ (x.mean(0) - y.mean(0)) + shift @ shift
    np.testing.assert_allclose(fid(x + shift, y), expected, rtol=1e-10)


# ------------------------------------------------------------------- dtypes


def test_float64_request(x64):
    x = _features(17, 30, 4).astype(np.float32)
    out = fid(x, x + 1, dtype=jnp.float64)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, 4.0, rtol=1e-6)  # ||shift||^2, same covariance


def test_float64_request_without_x64_falls_back_to_float32():
    assert not jax.config.jax_enable_x64
    x = _features(17, 30, 4).astype(np.float32)
    with pytest.warns(UserWarning, match="float64"):
        out = fid(x, x + 1, dtype=jnp.float64)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, 4.0, rtol=1e-4)


# ---------------------------------------------------------------------- jit


class FrechetJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_frechet_distance_variants(self):
        x = _features(18, 80, 6).astype(np.float32)
        y = _features(19, 80, 6).astype(np.float32)
        mu1, s1 = _stats(x)
        mu2, s2 = _stats(y)
        ref = _pytorch_fid_reference(mu1, s1, mu2, s2)
        f = self.variant(frechet_distance)
        out = f(*(np.float32(v) for v in (mu1, s1, mu2, s2)))
        np.testing.assert_allclose(out, ref, rtol=1e-4)
        np.testing.assert_allclose(self.variant(fid)(x, y), ref, rtol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gaussian_statistics_variants(self):
        x = _features(20, 40, 5).astype(np.float32)
        mean, cov = self.variant(gaussian_statistics)(x)
        np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-4, atol=1e-6)

    def test_update_does_not_retrace(self):
        @jax.jit
        @chex.assert_max_traces(n=1)
        def update(state, batch):
            return update_gaussian_statistics(state, batch)

        x = _features(21, 40, 3).astype(np.float32)
        state = init_gaussian_statistics(3)
        for batch in np.split(x, 4):
            state = update(state, batch)
        np.testing.assert_allclose(
            finalize_gaussian_statistics(state)[1], np.cov(x, rowvar=False), rtol=1e-4, atol=1e-6
        )


# ---------------------------------------------------------------- bad input


def test_bad_features_raise():
    with pytest.raises(ValueError, match="at least two samples"):
        gaussian_statistics(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        gaussian_statistics(np.ones(5))
    with pytest.raises(ValueError, match="at least two samples"):
        fid(np.ones((1, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="same dimension"):
        fid(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="floating"):
        gaussian_statistics(np.ones((4, 3)), dtype=jnp.int32)


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((3,), (3, 3), (2,), (3, 3)), "dimensions disagree"),
        (((3,), (3, 3), (3,), (2, 2)), "dimensions disagree"),
        (((3,), (3, 2), (3,), (3, 3)), "square"),
        (((3,), (3, 3), (3,), (3, 3, 1)), "square"),
        (((3, 1), (3, 3), (3,), (3, 3)), "vector"),
        (((), (3, 3), (3,), (3, 3)), "vector"),
    ],
)
def test_frechet_bad_shapes_raise(shapes, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(*(np.zeros(s) for s in shapes))


def test_accumulator_bad_input_raises():
    state = init_gaussian_statistics(3)
    with pytest.raises(ValueError, match="dim"):
        init_gaussian_statistics(0)
    with pytest.raises(TypeError, match="dim must be a Python int"):
        init_gaussian_statistics(2.0)
    with pytest.raises(ValueError, match=r"\[b, 3\]"):
        update_gaussian_statistics(state, np.ones((4, 2)))
    with pytest.raises(ValueError, match="mask"):
        update_gaussian_statistics(state, np.ones((4, 3)), mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="merge"):
        merge_gaussian_statistics(state, init_gaussian_statistics(2))
    with pytest.raises(ValueError, match="at least two samples"):
        finalize_gaussian_statistics(state)
    # An empty batch is fine and changes nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = update_gaussian_statistics(state, np.ones((0, 3)))
    chex.assert_trees_all_equal(same, state)


# ------------------------------------------- PSD, translation and bad values


@pytest.mark.parametrize("d", [1, 4])
def test_non_psd_covariances_raise_naming_the_argument(d):
    # The reported case: frechet_distance(0, -I, 1, -5 I) returned 0.0.
    eye = np.eye(d)
    with pytest.raises(ValueError, match="^sigma1 is not positive semi-definite.*-1 times"):
        frechet_distance(np.zeros(d), -eye, np.ones(d), -5 * eye)
    with pytest.raises(ValueError, match='^sigma2 is not positive semi-definite.*psd="project"'):
        frechet_distance(np.zeros(d), eye, np.ones(d), -5 * eye)
    # Under jit nothing can be raised: the value is NaN, never a plausible number.
    assert np.isnan(jax.jit(frechet_distance)(np.zeros(d), -eye, np.ones(d), -5 * eye))
    assert np.isnan(jax.jit(frechet_distance)(np.zeros(d), eye, np.ones(d), -eye))


def _indefinite(seed, d, negative):
    """A symmetric matrix with eigenvalues ``1..d`` and ``negative`` of them flipped."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    evals = np.arange(1.0, d + 1)
    evals[:negative] *= -0.5
    return (q * evals) @ q.T


def _projected(sigma):
    """The nearest PSD matrix (Frobenius): negative eigenvalues set to 0 (numpy)."""
    evals, evecs = np.linalg.eigh(sigma)
    return (evecs * np.maximum(evals, 0)) @ evecs.T


def test_project_option_matches_numpy_projection_and_scipy(x64):
    d = 6
    mu1, mu2 = np.linspace(0, 1, d), np.linspace(1, -1, d)
    s1, s2 = _indefinite(0, d, 2), _indefinite(1, d, 3)
    expected = _pytorch_fid_reference(mu1, _projected(s1), mu2, _projected(s2))
    out = frechet_distance(mu1, s1, mu2, s2, psd="project")
    np.testing.assert_allclose(out, expected, rtol=1e-7)  # sqrtm of a singular product
    # The same under jit; and on PSD inputs project changes nothing.
    np.testing.assert_allclose(
        jax.jit(lambda *a: frechet_distance(*a, psd="project"))(mu1, s1, mu2, s2), expected, rtol=1e-7
    )
    p1, p2 = _projected(s1), _projected(s2)
    np.testing.assert_allclose(
        frechet_distance(mu1, p1, mu2, p2, psd="project"), frechet_distance(mu1, p1, mu2, p2),
        rtol=1e-9,
    )
    # The reported case: both covariances project to 0, leaving ||mu1 - mu2||².
    np.testing.assert_allclose(
        frechet_distance(np.zeros(3), -np.eye(3), np.ones(3), -5 * np.eye(3), psd="project"), 3.0
    )


def test_round_off_negative_eigenvalues_are_within_the_tolerance():
    # Sample covariances of float32 features from fewer samples than
    # dimensions: singular, with eigenvalues round-off leaves slightly negative.
    x = _features(30, 40, 256).astype(np.float32)
    y = _features(31, 50, 256, scale=0.8).astype(np.float32)
    mu1, s1 = gaussian_statistics(x)
    mu2, s2 = gaussian_statistics(y)
    assert float(jnp.linalg.eigvalsh(s1)[0]) < 0  # the case the tolerance is for
    assert np.isfinite(frechet_distance(mu1, s1, mu2, s2))
    assert np.isfinite(fid(x, y))
    # A zero tolerance refuses them; a matrix just inside the tolerance passes.
    with pytest.raises(ValueError, match="sigma1 is not positive semi-definite"):
        frechet_distance(mu1, s1, mu2, s2, psd_tolerance=0.0)
    s = np.diag([1.0, -1e-9]).astype(np.float32)
    np.testing.assert_allclose(frechet_distance(np.zeros(2), s, np.zeros(2), s), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1e-3]))


def test_psd_options_are_checked():
    eye = np.eye(2)
    with pytest.raises(ValueError, match='psd must be "raise" or "project"'):
        frechet_distance(np.zeros(2), eye, np.zeros(2), eye, psd="clip")
    with pytest.raises(ValueError, match="psd_tolerance must be >= 0"):
        frechet_distance(np.zeros(2), eye, np.zeros(2), eye, psd_tolerance=-1.0)
    with pytest.raises(TypeError, match="psd_tolerance must be a number"):
        frechet_distance(np.zeros(2), eye, np.zeros(2), eye, psd_tolerance="0")


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6])
def test_fid_float32_is_accurate_at_any_shared_offset(offset):
    x = (_features(32, 400, 8) + offset).astype(np.float32)
    y = (_features(33, 300, 8, scale=1.2, shift=0.1) + offset).astype(np.float32)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)  # the same data, exactly
    expected = _pytorch_fid_reference(*_stats(x64), *_stats(y64))
    # Stated tolerance: 1e-4 relative (measured: 4e-6 or better; 10 % off at
    # 1e6 before the shared translation).
    np.testing.assert_allclose(fid(x, y), expected, rtol=1e-4)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_inputs_raise_naming_the_argument(bad):
    x = _features(34, 20, 3).astype(np.float32)
    x_bad = x.copy()
    x_bad[5, 2] = bad
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match=r"^features holds 1 non-finite value .*index \(5, 2\)"):
        gaussian_statistics(x_bad)
    with pytest.raises(ValueError, match="^features1 holds"):
        fid(x_bad, x)
    with pytest.raises(ValueError, match="^features2 holds"):
        fid(x, jnp.asarray(x_bad))
    for i, name in enumerate(["mu1", "sigma1", "mu2", "sigma2"]):
        args = [mu, sigma, mu, sigma]
        args[i] = np.where(np.ones_like(args[i], bool), bad, args[i]) if i % 2 == 0 else np.diag([1.0, bad, 1.0])
        with pytest.raises(ValueError, match=f"^{name} holds"):
            frechet_distance(*args)
    # Streaming: a bad row counts only if the mask keeps it.
    state = init_gaussian_statistics(3)
    with pytest.raises(ValueError, match=r"^features holds .*index \(5, 2\)"):
        update_gaussian_statistics(state, x_bad)
    keep = np.ones(20, bool)
    with pytest.raises(ValueError, match="^features holds"):
        update_gaussian_statistics(state, x_bad, mask=keep)
    keep[5] = False
    masked = update_gaussian_statistics(state, x_bad, mask=keep)
    np.testing.assert_allclose(finalize_gaussian_statistics(masked)[1],
                               np.cov(np.delete(x, 5, axis=0), rowvar=False), rtol=1e-5, atol=1e-6)


def test_nonfinite_inputs_propagate_under_jit():
    x = _features(35, 20, 3).astype(np.float32)
    x_bad = x.copy()
    x_bad[0, 0] = np.nan
    assert np.isnan(jax.jit(fid)(x_bad, x))
    assert np.isnan(jax.jit(gaussian_statistics)(x_bad)[1]).any()
    sigma = np.diag([1.0, np.inf, 1.0])
    assert np.isnan(jax.jit(frechet_distance)(np.zeros(3), sigma, np.zeros(3), np.eye(3)))
