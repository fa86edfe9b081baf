"""Tests for jgan.metrics.mode_coverage (the VEEGAN / PacGAN protocol)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from jgan import data
from jgan.metrics import ModeCoverage, mode_coverage

CENTERS = np.asarray(data.ring_centers())  # [8, 2], radius 2
STD = 0.02
M = 8


def _reference(samples, centers, std, threshold=3.0):
    """An independent numpy / scipy implementation of the protocol."""
    samples = np.asarray(samples, np.float64)
    centers = np.asarray(centers, np.float64)
    d = distance.cdist(samples, centers)
    nearest = d.argmin(1)
    good = d[np.arange(len(samples)), nearest] <= threshold * std
    counts = np.bincount(nearest[good], minlength=len(centers))
    if counts.sum() == 0:
        kl = math.log(len(centers))
    else:
        kl = stats.entropy(counts / counts.sum(), np.full(len(centers), 1 / len(centers)))
    return (counts > 0).sum(), good.mean(), kl, counts


# ------------------------------------------------------------ hand-made cases


def test_all_samples_in_one_mode():
    samples = CENTERS[3] + np.array([[0.0, 0.0], [0.01, 0.0], [0.0, -0.03]])
    out = mode_coverage(samples, CENTERS, std=STD)
    assert isinstance(out, ModeCoverage)
    assert int(out.modes) == 1 and out.modes.dtype == jnp.int32
    assert float(out.high_quality) == 1.0
    np.testing.assert_allclose(out.reverse_kl, math.log(M), rtol=1e-6)
    np.testing.assert_array_equal(out.counts, np.eye(M, dtype=int)[3] * 3)


def test_uniform_over_all_modes_has_zero_kl():
    samples = np.repeat(CENTERS, 5, axis=0)
    out = mode_coverage(samples, CENTERS, std=STD)
    assert int(out.modes) == M
    assert float(out.high_quality) == 1.0
    np.testing.assert_allclose(out.reverse_kl, 0.0, atol=1e-7)
    np.testing.assert_array_equal(out.counts, np.full(M, 5))


def test_two_modes_half_half_kl_is_log_m_over_2():
    samples = np.concatenate([np.repeat(CENTERS[:1], 4, 0), np.repeat(CENTERS[5:6], 4, 0)])
    out = mode_coverage(samples, CENTERS, std=STD)
    assert int(out.modes) == 2
    np.testing.assert_allclose(out.reverse_kl, math.log(M / 2), rtol=1e-6)


def test_far_samples_capture_nothing():
    samples = np.full((10, 2), 100.0)
    out = mode_coverage(samples, CENTERS, std=STD)
    assert int(out.modes) == 0
    assert float(out.high_quality) == 0.0
    # Documented convention: no high-quality sample -> log M (the maximum).
    assert np.isfinite(out.reverse_kl)
    np.testing.assert_allclose(out.reverse_kl, math.log(M), rtol=1e-6)
    np.testing.assert_array_equal(out.counts, np.zeros(M))


def test_half_good_half_far():
    good = np.repeat(CENTERS, 2, axis=0)  # 16 samples on centres
    far = np.zeros((16, 2))  # the origin is 2 away from every centre
    out = mode_coverage(np.concatenate([good, far]), CENTERS, std=STD)
    assert float(out.high_quality) == 0.5
    assert int(out.modes) == M
    np.testing.assert_array_equal(out.counts, np.full(M, 2))
    np.testing.assert_allclose(out.reverse_kl, 0.0, atol=1e-7)


def test_low_quality_samples_do_not_enter_histogram():
    # Mode 0 gets 5 good samples; mode 1 gets 5 samples just outside 3 std.
    # Counting every sample at its nearest mode would give modes=2, KL=log 4.
    outside = CENTERS[1] + np.array([3.5 * STD, 0.0])
    samples = np.concatenate([np.repeat(CENTERS[:1], 5, 0), np.repeat(outside[None], 5, 0)])
    out = mode_coverage(samples, CENTERS, std=STD)
    assert int(out.modes) == 1
    assert float(out.high_quality) == 0.5
    np.testing.assert_allclose(out.reverse_kl, math.log(M), rtol=1e-6)


def test_threshold_is_inclusive_and_in_units_of_std():
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    samples = np.array([[1.0, 0.0], [0.0, -1.0], [1.0001, 0.0], [10.0, 1.5]])
    out = mode_coverage(samples, centers, std=0.5, threshold=2.0)  # radius 1
    assert float(out.high_quality) == 0.5
    np.testing.assert_array_equal(out.counts, [2, 0])
    out = mode_coverage(samples, centers, std=0.5, threshold=3.0)  # radius 1.5
    np.testing.assert_array_equal(out.counts, [3, 1])


# ------------------------------------------------------ independent reference


def _random_case(seed, n=3000):
    rng = np.random.default_rng(seed)
    centers = np.asarray(data.grid_centers(), np.float64)
    # Skewed mode weights, noise wider than the protocol's so about a third of
    # the samples fall outside 3 std, and some modes stay empty.
    weights = rng.dirichlet(np.full(len(centers), 0.3))
    idx = rng.choice(len(centers), size=n, p=weights)
    samples = centers[idx] + rng.normal(scale=0.05 * 2.5, size=(n, 2))
    return samples, centers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_reference_float64(seed, x64):
    samples, centers = _random_case(seed)
    modes, hq, kl, counts = _reference(samples, centers, 0.05)
    assert 0.2 < hq < 0.9 and 0 < modes < 25  # a non-trivial case
    out = mode_coverage(jnp.asarray(samples), jnp.asarray(centers), std=0.05)
    assert int(out.modes) == modes
    np.testing.assert_allclose(out.high_quality, hq, rtol=1e-12)
    np.testing.assert_allclose(out.reverse_kl, kl, rtol=1e-10)
    np.testing.assert_array_equal(out.counts, counts)


def test_matches_scipy_reference_float32():
    samples, centers = _random_case(7)
    modes, hq, kl, counts = _reference(samples, centers, 0.05)
    out = mode_coverage(samples.astype(np.float32), centers.astype(np.float32), std=0.05)
    assert out.high_quality.dtype == jnp.float32
    assert int(out.modes) == modes
    np.testing.assert_allclose(out.high_quality, hq, rtol=1e-6)
    np.testing.assert_allclose(out.reverse_kl, kl, rtol=1e-5)
    np.testing.assert_array_equal(out.counts, counts)


def test_higher_dimensional_centres():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(6, 5)) * 3
    samples = centers[rng.integers(0, 6, 400)] + rng.normal(scale=0.3, size=(400, 5))
    modes, hq, kl, counts = _reference(samples, centers, 0.2)
    out = mode_coverage(samples, centers, std=0.2)
    assert int(out.modes) == modes
    np.testing.assert_allclose(out.high_quality, hq, rtol=1e-6)
    np.testing.assert_allclose(out.reverse_kl, kl, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out.counts, counts)


def test_invariances():
    samples, centers = _random_case(4, n=500)
    samples, centers = samples.astype(np.float32), centers.astype(np.float32)
    base = mode_coverage(samples, centers, std=0.05)
    rng = np.random.default_rng(0)
    # Permuting the samples changes nothing.
    perm = mode_coverage(samples[rng.permutation(len(samples))], centers, std=0.05)
    chex.assert_trees_all_close(perm, base)
    # Permuting the centres permutes the counts and nothing else.
    p = rng.permutation(len(centers))
    out = mode_coverage(samples, centers[p], std=0.05)
    np.testing.assert_array_equal(out.counts, np.asarray(base.counts)[p])
    chex.assert_trees_all_close(out._replace(counts=base.counts), base, rtol=1e-6)
    # A common translation changes nothing.
    shift = np.array([3.0, -7.0], np.float32)
    out = mode_coverage(samples + shift, centers + shift, std=0.05)
    np.testing.assert_array_equal(out.counts, base.counts)


# ------------------------------------------------------ theory on ring() data


@pytest.mark.parametrize("threshold", [1.0, 2.0, 3.0])
def test_ring_data_high_quality_matches_rayleigh(threshold):
    # 2-D isotropic noise: |noise| / std is Rayleigh, P(<= t) = 1 - exp(-t^2/2).
    n = 20_000
    x = data.ring(jax.random.key(0), n)
    out = mode_coverage(x, data.ring_centers(), std=STD, threshold=threshold)
    p = 1 - math.exp(-(threshold**2) / 2)
    se = math.sqrt(p * (1 - p) / n)
    assert abs(float(out.high_quality) - p) < 4 * se, (float(out.high_quality), p)
    assert int(out.modes) == M


def test_ring_data_full_coverage_and_small_kl():
    x = data.ring(jax.random.key(1), 20_000)
    out = mode_coverage(x, data.ring_centers(), std=STD)
    assert int(out.modes) == 8
    assert abs(float(out.high_quality) - (1 - math.exp(-4.5))) < 0.003  # 0.9889
    # Sampling noise alone gives E[KL] ~ (M - 1) / (2 n) ~ 2e-4.
    assert 0 <= float(out.reverse_kl) < 2e-3


@pytest.mark.parametrize("name", ["ring", "ring_pacgan", "grid"])
def test_presets_protocol_sample_size(name):
    spec = data.mixture(name)
    x = data.sample_mixture(jax.random.key(2), 2500, spec)
    out = mode_coverage(x, spec.centers, std=spec.std)
    assert int(out.modes) == len(spec.centers)
    assert abs(float(out.high_quality) - (1 - math.exp(-4.5))) < 0.01
    assert float(out.reverse_kl) < 0.02


# ---------------------------------------------------------------------- jit


def test_jit_matches_eager_and_does_not_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(x, centers, std):
        return mode_coverage(x, centers, std=std)

    centers = data.ring_centers()
    for seed in range(3):
        x = data.ring(jax.random.key(seed), 20_000)
        chex.assert_trees_all_close(f(x, centers, std=STD), mode_coverage(x, centers, std=STD))


def test_jit_with_traced_std_and_threshold():
    x = np.repeat(CENTERS, 3, axis=0) + 0.05
    f = jax.jit(mode_coverage)
    out = f(x, CENTERS, std=jnp.float32(0.02), threshold=jnp.float32(5.0))
    assert int(out.modes) == M
    out = f(x, CENTERS, std=jnp.float32(0.02), threshold=jnp.float32(3.0))
    assert int(out.modes) == 0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "samples, centers, kwargs, match",
    [
        (np.zeros(4), CENTERS, {}, "samples must be"),
        (np.zeros((4, 2, 1)), CENTERS, {}, "samples must be"),
        (np.zeros((4, 2)), np.zeros(2), {}, "centers must be"),
        (np.zeros((4, 3)), CENTERS, {}, "same dimension"),
        (np.zeros((0, 2)), CENTERS, {}, "at least one sample"),
        (np.zeros((4, 2)), np.zeros((0, 2)), {}, "at least one centre"),
        (np.zeros((4, 2)), CENTERS, dict(std=0.0), "std"),
        (np.zeros((4, 2)), CENTERS, dict(std=-1.0), "std"),
        (np.zeros((4, 2)), CENTERS, dict(std=np.ones(2)), "std must be a scalar"),
        (np.zeros((4, 2)), CENTERS, dict(threshold=0.0), "threshold"),
        (np.zeros((4, 2)), CENTERS, dict(threshold=-3.0), "threshold"),
        (np.zeros((4, 2)), CENTERS, dict(std=float("inf")), "std"),
    ],
)
def test_bad_input_raises(samples, centers, kwargs, match):
    kwargs = dict(dict(std=STD), **kwargs)
    with pytest.raises(ValueError, match=match):
        mode_coverage(samples, centers, **kwargs)


def test_std_is_required_keyword():
    with pytest.raises(TypeError):
        mode_coverage(np.zeros((4, 2)), CENTERS, STD)  # positional std


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_inputs_raise_naming_the_argument(bad):
    centers = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    samples = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.01]], np.float32)
    bad_samples = samples.copy()
    bad_samples[1, 0] = bad
    with pytest.raises(ValueError, match=r"^samples holds 1 non-finite value .*index \(1, 0\)"):
        mode_coverage(bad_samples, centers, std=0.1)
    bad_centers = jnp.asarray(centers).at[0, 1].set(bad)
    with pytest.raises(ValueError, match=r"^centers holds 1 non-finite value .*index \(0, 1\)"):
        mode_coverage(samples, bad_centers, std=0.1)


def test_nonfinite_samples_under_jit_are_never_high_quality():
    # Documented: under jit nothing is raised; a NaN sample counts nowhere.
    centers = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    samples = np.array([[0.0, 0.0], [np.nan, 1.0], [1.0, 1.01], [np.inf, 0.0]], np.float32)
    out = jax.jit(lambda s, c: mode_coverage(s, c, std=0.1))(samples, centers)
    assert int(out.modes) == 2 and float(out.high_quality) == 0.5
    np.testing.assert_array_equal(out.counts, [1, 1])
