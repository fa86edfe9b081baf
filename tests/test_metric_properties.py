"""Property tests (hypothesis) of the metrics' invariances: MMD under a shared
translation at any offset, the Fréchet distance symmetric and zero on
identical statistics."""

import jax
import numpy as np

from hypothesis import given, settings
from hypothesis import strategies as st

from jgan.metrics import fid, frechet_distance, mmd2
from test_mmd import _direct_mmd2  # The float64 reference, one copy.

_SETTINGS = settings(deadline=None, max_examples=25, derandomize=True)


_seeds = st.integers(0, 2**32 - 1)
_exponents = st.floats(0.0, 6.0)  # offsets of magnitude 1 to 1e6
_dims = st.sampled_from([1, 3, 8])


@_SETTINGS
@given(seed=_seeds, exponent=_exponents, d=_dims, bandwidth=st.sampled_from([0.5, 1.0, 3.0]))
def test_mmd2_float32_at_a_random_shared_offset_matches_float64(seed, exponent, d, bandwidth):
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=d) * 10.0**exponent
    x = (rng.normal(size=(20, d)) + offset).astype(np.float32)
    y = (rng.normal(size=(16, d)) * 1.2 + 0.3 + offset).astype(np.float32)
    # Stated tolerance: the float32 round-off of kernel values of order 1.
    np.testing.assert_allclose(mmd2(x, y, bandwidth=bandwidth), _direct_mmd2(x, y, bandwidth),
                               rtol=1e-4, atol=2e-6)


@_SETTINGS
@given(seed=_seeds, exponent=_exponents, d=_dims)
def test_mmd2_is_translation_invariant_float64(seed, exponent, d):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(12, d))
    y = rng.normal(size=(10, d)) + 0.5
    offset = rng.normal(size=d) * 10.0**exponent
    with jax.enable_x64(True):
        np.testing.assert_allclose(mmd2(x + offset, y + offset, bandwidth=1.0),
                                   mmd2(x, y, bandwidth=1.0), rtol=1e-7, atol=1e-12)


def _random_statistics(rng, d):
    """A mean ``[d]`` and a PSD covariance ``[d, d]`` of random rank."""
    rank = int(rng.integers(1, d + 1))
    a = rng.normal(size=(d, rank)) * rng.uniform(0.1, 3.0)
    return rng.normal(size=d) * rng.uniform(0, 5), a @ a.T


@_SETTINGS
@given(seed=_seeds, d=_dims)
def test_frechet_distance_symmetric_and_zero_on_identical_statistics(seed, d):
    rng = np.random.default_rng(seed)
    mu1, s1 = _random_statistics(rng, d)
    mu2, s2 = _random_statistics(rng, d)
    with jax.enable_x64(True):
        forward = float(frechet_distance(mu1, s1, mu2, s2))
        backward = float(frechet_distance(mu2, s2, mu1, s1))
        same = float(frechet_distance(mu1, s1, mu1, s1))
    scale = np.trace(s1) + np.trace(s2) + np.sum((mu1 - mu2) ** 2)
    assert forward >= 0
    np.testing.assert_allclose(forward, backward, rtol=1e-7, atol=1e-9 * scale)
    # Each zero eigenvalue of a rank-deficient covariance may contribute
    # sqrt(eps * ||sigma||) (see frechet_distance's accuracy note).
    assert 0 <= same <= 1e-6 * (1 + np.trace(s1))


@_SETTINGS
@given(seed=_seeds, d=_dims, n=st.integers(2, 40))
def test_fid_symmetric_and_zero_on_the_same_features(seed, d, n):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * rng.uniform(0.1, 10) + rng.normal(size=d) * 100).astype(np.float32)
    y = (rng.normal(size=(n + 3, d)) + rng.normal(size=d) * 100).astype(np.float32)
    np.testing.assert_allclose(fid(x, y), fid(y, x), rtol=1e-5, atol=1e-5)
    assert 0 <= float(fid(x, x)) <= 1e-3 * (1 + float(np.trace(np.atleast_2d(np.cov(x, rowvar=False)))))
