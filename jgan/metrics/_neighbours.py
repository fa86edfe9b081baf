"""k-nearest-neighbour metrics of fidelity and diversity: precision and
recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

Both estimate each set's support by balls around its points, the radius of
the ball at a point being the distance to its k-th nearest neighbour in the
same set. Distances are never held as a full ``[N, M]`` matrix: the rows of
one set are taken ``chunk_size`` at a time against all of the other set (a
``lax.map`` / ``lax.scan`` over row blocks, the last block padded and
masked), so memory is O(chunk_size · (N + M) + (N + M) · d) and 50,000 ×
2,048 Inception features fit on a small accelerator.

Squared distances are formed as ``|a|² + |b|² - 2 a·b`` (a ``Precision.HIGHEST``
product, clipped at 0) after translating both sets by their pooled mean, and
compared as squared distances: no square root is taken.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgan import _validate

_HIGHEST = jax.lax.Precision.HIGHEST


class PrecisionRecall(NamedTuple):
    """The result of ``precision_recall``: unpacks as ``(precision, recall)``.

    Attributes:
      precision: the fraction of fake points inside the real manifold
        estimate, a float scalar in ``[0, 1]``.
      recall: the fraction of real points inside the fake manifold estimate,
        a float scalar in ``[0, 1]``.
    """

    precision: jax.Array  # [] float
    recall: jax.Array  # [] float


class DensityCoverage(NamedTuple):
    """The result of ``density_coverage``: unpacks as ``(density, coverage)``.

    Attributes:
      density: the mean number of real balls holding a fake point, divided by
        ``k``, a float scalar in ``[0, N / k]`` (about 1 when the two sets
        are independent samples of one distribution).
      coverage: the fraction of real balls holding at least one fake point, a
        float scalar in ``[0, 1]``.
    """

    density: jax.Array  # [] float
    coverage: jax.Array  # [] float


# ------------------------------------------------------------------ checks


def _prepare(real, fake, k, chunk_size, *, fake_radii: bool):
    """Validates the inputs: ``(real, fake, k, chunk_size)``, the arrays in one float dtype."""
    real = jnp.asarray(real)
    fake = jnp.asarray(fake)
    for name, a in (("real_features", real), ("fake_features", fake)):
        _validate.check_real_dtype(a, name)
        if a.ndim != 2:
            raise ValueError(f"{name} must be [n, d], got shape {a.shape}.")
        if a.shape[1] < 1:
            raise ValueError(
                f"{name} must have at least one feature (d >= 1), got shape {a.shape}."
            )
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            "real_features and fake_features must have the same feature dimension d, got "
            f"real_features {real.shape} and fake_features {fake.shape}."
        )
    k = _validate.check_int(k, "k", minimum=1, static=True)
    chunk_size = _validate.check_int(chunk_size, "chunk_size", minimum=1, static=True)
    # The k-th neighbour among the *other* points needs k + 1 points.
    sets = [("real_features", real)] + ([("fake_features", fake)] if fake_radii else [])
    for name, a in sets:
        if k >= a.shape[0]:
            raise ValueError(
                f"k must be < the number of points in {name} (a point's radius is the "
                f"distance to its k-th nearest other point), got k={k} with {name} of "
                f"shape {a.shape}."
            )
    if not fake_radii and fake.shape[0] < 1:
        raise ValueError(f"fake_features must hold at least one point, got shape {fake.shape}.")
    _validate.check_finite_array(real, "real_features")
    _validate.check_finite_array(fake, "fake_features")
    dtype = jnp.promote_types(jnp.result_type(real, fake), jnp.float32)
    return real.astype(dtype), fake.astype(dtype), k, chunk_size


# ----------------------------------------------------------------- helpers


def _centred(real, fake):
    """Both sets translated by their pooled mean (distances unchanged).

    Without it, ``|a|² + |b|² - 2 a·b`` loses the distances of points far from
    the origin to cancellation; centred, the metrics are invariant to a
    translation shared by both sets also in floating point.
    """
    shift = (jnp.sum(real, axis=0) + jnp.sum(fake, axis=0)) / (real.shape[0] + fake.shape[0])
    return real - shift, fake - shift


def _row_blocks(x, chunk_size):
    """``x`` ``[n, d]`` as ``[blocks, c, d]`` blocks of ``c = min(chunk_size, n)`` rows.

    The last block is padded with zero rows; the caller masks them.
    """
    n = x.shape[0]
    c = min(chunk_size, n)
    blocks = -(-n // c)
    padded = jnp.pad(x, ((0, blocks * c - n), (0, 0)))
    return padded.reshape(blocks, c, x.shape[1])


def _block_sq_distances(block, points, sq_points):
    """Squared distances ``[c, m]`` from the rows of ``block`` to ``points``, clipped at 0."""
    sq_block = jnp.sum(jnp.square(block), axis=1)
    cross = jnp.matmul(block, points.T, precision=_HIGHEST)
    return jnp.maximum(sq_block[:, None] + sq_points[None, :] - 2 * cross, 0)


def _kth_neighbour_sq_radii(x, k, chunk_size):
    """The squared distance ``[n]`` from each row of ``x`` to its k-th nearest other row.

    As in prdc and StyleGAN2-ADA, this is the (k + 1)-th smallest squared
    distance of the row to all rows *including itself* (its own distance is
    set to exactly 0, so it is always among the k + 1 smallest and the k-th
    nearest other point comes next; a duplicate of the point counts as a
    neighbour at distance 0). Rows are taken ``chunk_size`` at a time
    (``lax.map``): memory O(chunk_size · n).
    """
    n = x.shape[0]
    blocks = _row_blocks(x, chunk_size)  # [b, c, d]
    c = blocks.shape[1]
    starts = jnp.arange(blocks.shape[0]) * c
    sq_x = jnp.sum(jnp.square(x), axis=1)
    columns = jnp.arange(n)

    def block_radii(args):
        block, start = args
        sq = _block_sq_distances(block, x, sq_x)  # [c, n]
        rows = start + jnp.arange(c)
        sq = jnp.where(rows[:, None] == columns[None, :], 0, sq)
        smallest, _ = jax.lax.top_k(-sq, k + 1)  # [c, k + 1], largest -sq first
        return -smallest[:, k]

    return jax.lax.map(block_radii, (blocks, starts)).reshape(-1)[:n]


def _ball_counts(centres, sq_radii, points, chunk_size):
    """Counts the points in balls ``B(centres_i, r_i)`` (closed: ``|p - c_i|² <= r_i²``).

    Centres are taken ``chunk_size`` at a time against all points (a
    ``lax.scan`` whose carry is the ``[m]`` count per point): memory
    O(chunk_size · m). Padded centres get the radius² -1, which holds nothing.

    Args:
      centres: ``[n, d]``.
      sq_radii: the squared radii ``[n]``.
      points: ``[m, d]``.
      chunk_size: centres per block.

    Returns:
      ``(points_per_ball, balls_per_point)``: int32 ``[n]``, the number of
      points in each ball, and int32 ``[m]``, the number of balls holding each
      point.
    """
    n, m = centres.shape[0], points.shape[0]
    blocks = _row_blocks(centres, chunk_size)  # [b, c, d]
    b, c = blocks.shape[:2]
    radii = jnp.pad(sq_radii, (0, b * c - n), constant_values=-1).reshape(b, c)
    sq_points = jnp.sum(jnp.square(points), axis=1)

    def step(balls_per_point, args):
        block, block_radii = args
        inside = _block_sq_distances(block, points, sq_points) <= block_radii[:, None]  # [c, m]
        balls_per_point = balls_per_point + jnp.sum(inside, axis=0, dtype=jnp.int32)
        return balls_per_point, jnp.sum(inside, axis=1, dtype=jnp.int32)

    balls_per_point, points_per_ball = jax.lax.scan(
        step, jnp.zeros((m,), jnp.int32), (blocks, radii)
    )
    return points_per_ball.reshape(-1)[:n], balls_per_point


# ----------------------------------------------------------------- metrics


_CHUNK_SIZE = 1024


def precision_recall(
    real_features: jax.typing.ArrayLike,
    fake_features: jax.typing.ArrayLike,
    *,
    k: int = 3,
    chunk_size: int = _CHUNK_SIZE,
) -> PrecisionRecall:
    """Improved precision and recall: the k-NN manifold of each set covering the other.

    With ``X`` the real features ``[N, d]``, ``Y`` the fake ones ``[M, d]``,
    and ``NND_k(z)`` the distance from ``z`` to its k-th nearest *other*
    point of its own set,

        precision = (1/M) sum_j 1[ exists i: |Y_j - X_i| <= NND_k(X_i) ],
        recall    = (1/N) sum_i 1[ exists j: |X_i - Y_j| <= NND_k(Y_j) ].

    Balls are closed (``<=``), as in the authors' code and StyleGAN2-ADA /
    torch-fidelity. ``NND_k`` is the (k + 1)-th smallest distance to the
    points of the set *including the point itself* (as prdc computes it), so
    a duplicated point is its own nearest neighbour at distance 0. Swapping
    the arguments swaps the two numbers.

    Memory is O(chunk_size · (N + M) + (N + M) · d): distances are computed
    ``chunk_size`` rows at a time against the whole other set, never as a full
    ``[N, M]`` matrix; the results do not depend on ``chunk_size``. For
    50,000 × 2,048 float32 features per set and the default chunk, XLA:CPU's
    memory analysis counts 1.9 GiB of temporaries besides the 0.8 GiB of
    inputs (a single ``[N, M]`` float32 matrix would be 9.3 GiB). The time
    is O((N + M)² d): four passes of products.
    Squared distances come from ``|a|² + |b|² - 2 a·b`` (``Precision.HIGHEST``)
    in centred coordinates, so a translation shared by both sets does not
    change the result; a distance within round-off of a radius may fall on
    either side of it.

    Works under ``jax.jit`` with ``k`` and ``chunk_size`` static. NaN or inf
    in the features is an error in eager calls; under ``jax.jit`` it cannot
    be checked (a NaN point lies in no ball and its ball holds nothing).

    Args:
      real_features: the real features ``X``, ``[N, d]`` with ``N > k``.
      fake_features: the generated features ``Y``, ``[M, d]`` with ``M > k``.
      k: the neighbourhood size, an int ``>= 1`` (3 in the paper).
      chunk_size: rows per distance block, an int ``>= 1``; blocks hold
        ``chunk_size · max(N, M)`` distances.

    Returns:
      A ``PrecisionRecall`` ``(precision, recall)`` of float scalars.

    Raises:
      ValueError: on shapes other than ``[N, d]`` / ``[M, d]`` with the same
        ``d >= 1``, complex features, ``k < 1``, ``k`` not below ``N`` and
        ``M``, ``chunk_size < 1``, or (eager calls) NaN or inf in the features.
      TypeError: if ``k`` or ``chunk_size`` is not an int.

    References:
      Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing
      Generative Models", NeurIPS 2019, sec. 2, eq. 1-2 (the manifold
      estimate f(phi, Phi) and precision and recall).
    """
    real, fake, k, chunk_size = _prepare(
        real_features, fake_features, k, chunk_size, fake_radii=True
    )
    return _precision_recall(real, fake, k=k, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _precision_recall(real, fake, *, k, chunk_size):
    real, fake = _centred(real, fake)
    dtype = real.dtype
    real_radii = _kth_neighbour_sq_radii(real, k, chunk_size)
    fake_radii = _kth_neighbour_sq_radii(fake, k, chunk_size)
    _, real_balls_per_fake = _ball_counts(real, real_radii, fake, chunk_size)
    _, fake_balls_per_real = _ball_counts(fake, fake_radii, real, chunk_size)
    return PrecisionRecall(
        precision=jnp.mean((real_balls_per_fake > 0).astype(dtype)),
        recall=jnp.mean((fake_balls_per_real > 0).astype(dtype)),
    )


def density_coverage(
    real_features: jax.typing.ArrayLike,
    fake_features: jax.typing.ArrayLike,
    *,
    k: int = 5,
    chunk_size: int = _CHUNK_SIZE,
) -> DensityCoverage:
    """Density and coverage: fidelity and diversity from the real k-NN balls only.

    With ``X`` the real features ``[N, d]``, ``Y`` the fake ones ``[M, d]``
    and ``NND_k(X_i)`` the distance from ``X_i`` to its k-th nearest other
    real point,

        density  = 1/(k M) sum_j sum_i 1[ |Y_j - X_i| <= NND_k(X_i) ],
        coverage = 1/N sum_i 1[ min_j |X_i - Y_j| <= NND_k(X_i) ].

    Radii, chunking, memory and accuracy are as in ``precision_recall``
    (``NND_k`` is the (k + 1)-th smallest distance including the point
    itself, as prdc computes it); both numbers come from one pass over the
    real-fake distances. Balls are closed (``<=``), as in the formulas above
    and in ``precision_recall``; prdc's release compares with ``<``, which
    differs only when a distance equals a radius exactly (duplicated points,
    discrete data, fakes that copy real points): for ``Y = X`` exactly,
    ``<=`` counts the k-th neighbour's ball too and density is
    ``(k + 1) / k`` where ``<`` gives 1 (round-off may decide such ties).

    Works under ``jax.jit`` with ``k`` and ``chunk_size`` static. NaN or inf
    in the features is an error in eager calls.

    Args:
      real_features: the real features ``X``, ``[N, d]`` with ``N > k``.
      fake_features: the generated features ``Y``, ``[M, d]`` with ``M >= 1``.
      k: the neighbourhood size, an int ``>= 1`` (5 in the paper).
      chunk_size: rows per distance block, an int ``>= 1``; blocks hold
        ``chunk_size · max(N, M)`` distances.

    Returns:
      A ``DensityCoverage`` ``(density, coverage)`` of float scalars.

    Raises:
      ValueError: on shapes other than ``[N, d]`` / ``[M, d]`` with the same
        ``d >= 1``, complex features, ``k < 1``, ``k >= N``, no fake point,
        ``chunk_size < 1``, or (eager calls) NaN or inf in the features.
      TypeError: if ``k`` or ``chunk_size`` is not an int.

    References:
      Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative
      Models", ICML 2020, sec. 3.2, eq. 3 (density) and eq. 4 (coverage).
    """
    real, fake, k, chunk_size = _prepare(
        real_features, fake_features, k, chunk_size, fake_radii=False
    )
    return _density_coverage(real, fake, k=k, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _density_coverage(real, fake, *, k, chunk_size):
    real, fake = _centred(real, fake)
    dtype = real.dtype
    fakes_per_ball, balls_per_fake = _ball_counts(
        real, _kth_neighbour_sq_radii(real, k, chunk_size), fake, chunk_size
    )
    return DensityCoverage(
        density=jnp.mean(balls_per_fake.astype(dtype)) / k,
        coverage=jnp.mean((fakes_per_ball > 0).astype(dtype)),
    )
