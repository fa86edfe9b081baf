"""Tests for jgan.metrics.precision_recall and density_coverage (k-NN balls).

Every value is checked against a plain numpy implementation of the
definitions (full distance matrices, ``np.partition``) in float64.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgan.metrics import DensityCoverage, PrecisionRecall, density_coverage, precision_recall


def _reference(x, y, k, slack=0.0):
    """Precision, recall, density and coverage from the definitions, as ``(low, high)`` bounds.

    Full float64 distance matrices; a point's radius is the (k + 1)-th
    smallest distance to its own set including itself (``np.partition``).
    ``low`` counts a point inside a ball only when its squared distance is
    ``<= r² (1 - slack)``, ``high`` when it is ``<= r² (1 + slack)``: with
    ``slack`` the round-off of the implementation under test, the true
    value lies between them (equal when no point is that close to a
    boundary). Returns two arrays ``[precision, recall, density, coverage]``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def sq(a, b):
        return np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)

    r_x = np.partition(sq(x, x), k, axis=1)[:, k]  # [N] squared radii
    r_y = np.partition(sq(y, y), k, axis=1)[:, k]  # [M]
    d_xy = sq(x, y)  # [N, M]
    bounds = []
    for scale in (1 - slack, 1 + slack):
        in_real = d_xy <= scale * r_x[:, None]  # Y_j in the ball of X_i
        in_fake = d_xy <= scale * r_y[None, :]  # X_i in the ball of Y_j
        bounds.append(np.array([
            in_real.any(axis=0).mean(),
            in_fake.any(axis=1).mean(),
            in_real.sum(axis=0).mean() / k,
            (d_xy.min(axis=1) <= scale * r_x).mean(),
        ]))
    return bounds


def _features(seed, n, m, d, dtype):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(m, d)) * 1.3 + 0.4
    return x.astype(dtype), y.astype(dtype)


# (k, N, M, d, chunk_size): chunks that do and do not divide N and M, one
# larger than both, and one of a single row.
_CASES = [
    (1, 40, 31, 2, 7),
    (3, 97, 120, 8, 32),
    (10, 64, 64, 33, 1000),
    (2, 23, 19, 3, 1),
]


@pytest.mark.parametrize("k, n, m, d, chunk_size", _CASES)
def test_match_the_numpy_definitions_float64(k, n, m, d, chunk_size, x64):
    x, y = _features(k + n, n, m, d, np.float64)
    low, high = _reference(x, y, k, slack=1e-9)
    np.testing.assert_array_equal(low, high)  # no point within round-off of a boundary
    pr = precision_recall(x, y, k=k, chunk_size=chunk_size)
    dc = density_coverage(x, y, k=k, chunk_size=chunk_size)
    assert isinstance(pr, PrecisionRecall) and isinstance(dc, DensityCoverage)
    assert all(v.dtype == jnp.float64 and v.shape == () for v in (*pr, *dc))
    np.testing.assert_allclose([*pr, *dc], low, rtol=1e-14, atol=0)


@pytest.mark.parametrize("k, n, m, d, chunk_size", _CASES)
def test_match_the_numpy_definitions_float32(k, n, m, d, chunk_size):
    x, y = _features(k + n, n, m, d, np.float32)
    # float32 squared distances of unit-scale points: relative error ~1e-5.
    low, high = _reference(x, y, k, slack=1e-4)
    pr = precision_recall(x, y, k=k, chunk_size=chunk_size)
    dc = density_coverage(x, y, k=k, chunk_size=chunk_size)
    assert all(v.dtype == jnp.float32 for v in (*pr, *dc))
    got = np.array([*pr, *dc], np.float64)
    assert np.all(got >= low - 1e-6) and np.all(got <= high + 1e-6), (got, low, high)
    # The bounds are a test only if they are tight: at most one point apart.
    assert np.all(high - low <= np.array([1 / m, 1 / n, 1 / (k * m), 1 / n]) + 1e-12)


def test_results_do_not_depend_on_the_chunk_size():
    x, y = _features(3, 61, 47, 6, np.float32)
    results = [
        (*precision_recall(x, y, k=4, chunk_size=c), *density_coverage(x, y, k=4, chunk_size=c))
        for c in (5, 16, 200)
    ]
    for r in results[1:]:
        assert r == results[0]


def test_invariant_to_permutations_of_either_set():
    x, y = _features(4, 53, 41, 5, np.float32)
    rng = np.random.default_rng(0)
    xp, yp = x[rng.permutation(len(x))], y[rng.permutation(len(y))]
    for fn in (precision_recall, density_coverage):
        assert tuple(fn(xp, yp, chunk_size=16)) == tuple(fn(x, y, chunk_size=16))


def test_invariant_to_a_shared_translation_far_from_the_origin(x64):
    x, y = _features(5, 40, 35, 4, np.float64)
    offset = np.random.default_rng(1).normal(size=4) * 1e6
    assert tuple(precision_recall(x + offset, y + offset)) == tuple(precision_recall(x, y))
    assert tuple(density_coverage(x + offset, y + offset)) == tuple(density_coverage(x, y))


def test_tight_fake_cluster_in_a_wide_real_gaussian_has_precision_without_recall():
    # torch-fidelity's asymmetric oracle: the fakes sit where the reals are
    # densest (precision ~1) but cover a sliver of them (recall ~0).
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8)).astype(np.float32)
    fake = (0.05 * rng.normal(size=(250, 8))).astype(np.float32)
    precision, recall = precision_recall(real, fake, k=3, chunk_size=64)
    assert precision >= 0.95 and recall <= 0.1, (precision, recall)
    # Swapping the arguments swaps the numbers, exactly.
    swapped = precision_recall(fake, real, k=3, chunk_size=64)
    assert (swapped.precision, swapped.recall) == (recall, precision)
    low, high = _reference(real, fake, 3, slack=1e-4)
    assert low[0] <= precision <= high[0] and low[1] <= recall <= high[1]


def test_identical_sets_are_fully_covered():
    x, _ = _features(6, 80, 1, 6, np.float32)
    k = 5
    density, coverage = density_coverage(x, x, k=k, chunk_size=32)
    assert coverage == 1.0
    # Each point lies in its own ball and in the balls of the points it is
    # among the k nearest neighbours of: k balls strictly inside, plus the
    # ball whose radius it defines (closed balls; round-off may decide it).
    assert 1.0 <= density <= (k + 1) / k
    assert tuple(precision_recall(x, x, k=3)) == (1.0, 1.0)


def test_far_away_fakes_score_zero():
    x, y = _features(7, 60, 50, 4, np.float32)
    far = y + 1000.0
    assert tuple(density_coverage(x, far)) == (0.0, 0.0)
    assert tuple(precision_recall(x, far)) == (0.0, 0.0)


def test_density_coverage_needs_no_fake_radii():
    # k only bounds the real set: a single fake point is measurable.
    x, _ = _features(8, 20, 1, 3, np.float64)
    fake = x[:1] + 0.1
    k = 5
    sq = np.sum((x[:, None] - x[None]) ** 2, axis=-1)
    radii = np.partition(sq, k, axis=1)[:, k]
    inside = np.sum((x - fake) ** 2, axis=1) <= radii  # [N]: the real balls holding the fake
    density, coverage = density_coverage(x.astype(np.float32), fake.astype(np.float32), k=k)
    assert inside.sum() >= 1
    assert density == pytest.approx(inside.sum() / k, rel=1e-6)
    assert coverage == pytest.approx(inside.mean(), rel=1e-6)


def test_jit_gives_the_eager_values():
    x, y = _features(9, 33, 29, 4, np.float32)
    pr = jax.jit(precision_recall, static_argnames=("k", "chunk_size"))
    dc = jax.jit(density_coverage, static_argnames=("k", "chunk_size"))
    assert tuple(pr(x, y, k=2, chunk_size=8)) == tuple(precision_recall(x, y, k=2, chunk_size=8))
    assert tuple(dc(x, y, k=2, chunk_size=8)) == tuple(density_coverage(x, y, k=2, chunk_size=8))


# ------------------------------------------------------------------ memory


def _temp_bytes(fn, n, m, d, **kwargs):
    """XLA's temporary bytes for ``fn`` compiled for float32 ``[n, d]`` / ``[m, d]`` inputs."""
    spec = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
    compiled = jax.jit(functools.partial(fn, **kwargs)).lower(spec((n, d)), spec((m, d))).compile()
    stats = compiled.memory_analysis()
    assert stats is not None, "memory_analysis() is unavailable on this backend"
    return stats.temp_size_in_bytes


@pytest.mark.parametrize("fn", [precision_recall, density_coverage])
def test_temporary_memory_grows_like_the_chunk_not_like_n_times_m(fn):
    d, chunk = 8, 64
    small, large = 512, 2048
    temp_small = _temp_bytes(fn, small, small, d, chunk_size=chunk)
    temp_large = _temp_bytes(fn, large, large, d, chunk_size=chunk)
    # What the sizes add: a [chunk, N] block of distances (and its masks,
    # top-k) per extra column, and copies of the features (centred, padded).
    block_growth = chunk * (large - small) * 4
    data_growth = 2 * (large - small) * d * 4
    assert temp_large - temp_small <= 3 * block_growth + 4 * data_growth, (temp_small, temp_large)
    assert temp_large < 0.1 * large * large * 4  # under a tenth of one N x M float32 matrix
    # The control: one block of all rows holds whole N x M matrices, and the
    # measurement sees them.
    full_small = _temp_bytes(fn, small, small, d, chunk_size=small)
    full_large = _temp_bytes(fn, large, large, d, chunk_size=large)
    assert full_large - full_small >= (large * large - small * small) * 4


def test_fifty_thousand_inception_features_fit_a_24_gb_device():
    # Compiled only (no data): 50,000 x 2,048 float32 per set, default chunk.
    n, d = 50_000, 2_048
    inputs = 2 * n * d * 4
    for fn in (precision_recall, density_coverage):
        temp = _temp_bytes(fn, n, n, d)
        assert temp + inputs < 6 * 2**30, temp  # measured on CPU: 1.9 GiB (precision_recall)
        assert temp < 0.25 * n * n * 4  # a full distance matrix would be 9.3 GiB


# --------------------------------------------------------------- bad input


_X = np.zeros((10, 3), np.float32) + np.arange(10, dtype=np.float32)[:, None]
_Y = _X[:6] + 0.5


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


@pytest.mark.parametrize("fn", [precision_recall, density_coverage])
@pytest.mark.parametrize(
    "real, fake, kwargs, match",
    [
        (_X[:, 0], _Y, {}, r"real_features must be \[n, d\], got shape \(10,\)"),
        (_X, _Y[None], {}, r"fake_features must be \[n, d\], got shape \(1, 6, 3\)"),
        (_X, _Y[:, :2], {},
         r"same feature dimension d, got real_features \(10, 3\) and fake_features \(6, 2\)"),
        (_X[:, :0], _Y[:, :0], {}, r"real_features must have at least one feature"),
        (_X, _Y, {"k": 0}, r"k must be >= 1, got 0"),
        (_X, _Y, {"k": 10}, r"k must be < the number of points in real_features.*k=10.*\(10, 3\)"),
        (_X, _Y, {"chunk_size": 0}, r"chunk_size must be >= 1, got 0"),
        (_with(_X, (3, 1), np.nan), _Y, {},
         r"real_features holds 1 non-finite value \(1 NaN.*\(3, 1\)"),
        (_X, _with(_Y, (0, 2), np.inf), {},
         r"fake_features holds 1 non-finite value \(0 NaN, 1 inf"),
        (_X.astype(np.complex64), _Y, {}, r"real_features must be real"),
    ],
)
def test_bad_input_raises_naming_the_argument(fn, real, fake, kwargs, match):
    kwargs = {"k": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        fn(real, fake, **kwargs)


def test_precision_recall_needs_k_below_the_fake_count_too():
    match = r"k must be < the number of points in fake_features.*k=6.*\(6, 3\)"
    with pytest.raises(ValueError, match=match):
        precision_recall(_X, _Y, k=6)
    density_coverage(_X, _Y, k=6)  # real radii only: fine


@pytest.mark.parametrize("fn", [precision_recall, density_coverage])
def test_non_int_k_or_chunk_size_is_a_type_error(fn):
    with pytest.raises(TypeError, match="k must be a Python int"):
        fn(_X, _Y, k=2.0)
    with pytest.raises(TypeError, match="chunk_size must be a Python int"):
        fn(_X, _Y, chunk_size=None)
