"""Gaussian feature statistics and the Fréchet distance (FID).

Matrix products here run at ``Precision.HIGHEST``: on GPUs (TF32) and TPUs
(bfloat16 passes) the default precision of a float32 ``matmul`` is far too
coarse for a covariance whose trace is compared against a difference of traces.
"""

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgan import _validate

_HIGHEST = jax.lax.Precision.HIGHEST


class GaussianStatistics(NamedTuple):
    """The state of a streaming mean / covariance accumulator.

    Built by ``init_gaussian_statistics``, advanced by
    ``update_gaussian_statistics`` (or combined with
    ``merge_gaussian_statistics``) and read by ``finalize_gaussian_statistics``.
    A pytree: it can be carried through ``jax.jit``, ``lax.scan`` and
    checkpoints.

    Attributes:
      count: the number of feature vectors seen, an int32 scalar.
      mean: their mean, ``[d]`` (zeros while ``count == 0``).
      scatter: their centred scatter matrix
        ``sum_i (x_i - mean)(x_i - mean)^T``, ``[d, d]`` (the multivariate
        "M2" of Welford's and Chan et al.'s updates).
    """

    count: jax.Array  # [] int32
    mean: jax.Array  # [d] float
    scatter: jax.Array  # [d, d] float


def _float_dtype(*arrays: Any, dtype: Any = None) -> Any:
    """The float dtype to compute in: ``dtype``, else the promoted inputs' (real: checked by the caller)."""
    if dtype is None:
        dtype = jnp.promote_types(jnp.result_type(*arrays), jnp.float32)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a real floating dtype, got {dtype}.")
    return dtype


def _batch_moments(features, weights):
    """Count, mean ``[d]`` and centred scatter ``[d, d]`` of one batch.

    ``weights`` is ``None`` (every row counts) or a 0/1 float mask ``[b]``
    (rows with weight 0 are ignored whatever they hold).
    Two-pass (centre, then multiply), which is what keeps the scatter accurate
    when the mean is large compared with the spread.
    """
    if weights is None:
        count = jnp.asarray(features.shape[0], features.dtype)
        mean = jnp.mean(features, axis=0)
        centred = features - mean
    else:
        keep = weights[:, None] > 0
        count = jnp.sum(weights)
        # where, not a product: masked-out padding may hold inf or NaN.
        mean = jnp.sum(jnp.where(keep, features, 0), axis=0) / jnp.maximum(count, 1)
        centred = jnp.where(keep, features - mean, 0)
    scatter = jnp.matmul(centred.T, centred, precision=_HIGHEST)
    return count, mean, scatter


def _merge(count_a, mean_a, scatter_a, count_b, mean_b, scatter_b):
    """Chan et al.'s pairwise update of (count, mean, scatter); float counts."""
    count = count_a + count_b
    safe = jnp.maximum(count, 1)  # both empty: keep mean_a, add nothing
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / safe)
    scatter = scatter_a + scatter_b + jnp.outer(delta, delta) * (count_a * count_b / safe)
    return mean, scatter


def gaussian_statistics(
    features: jax.typing.ArrayLike, *, dtype: Any = None
) -> tuple[jax.Array, jax.Array]:
    """The mean and unbiased covariance of a set of feature vectors.

    The covariance divides by ``n - 1``, like ``numpy.cov(features,
    rowvar=False)``, which is what pytorch-fid, torch-fidelity and clean-fid use
    for FID statistics.

    Args:
      features: feature vectors, ``[n, d]`` with ``n >= 2``.
      dtype: the float dtype to compute in; by default the input's, promoted
        to at least float32. ``jnp.float64`` needs ``jax_enable_x64`` (without
        it JAX warns and computes in float32).

    Returns:
      ``(mean, covariance)``: ``[d]`` and ``[d, d]``.

    Raises:
      ValueError: if ``features`` is complex, not ``[n, d]`` or ``n < 2``, or
        (eager calls) holds NaN or inf; under ``jax.jit`` non-finite features give
        non-finite statistics.
    """
    features = jnp.asarray(features)
    _validate.check_real_dtype(features, "features")
    if features.ndim != 2:
        raise ValueError(f"features must be [n, d], got shape {features.shape}.")
    if features.shape[0] < 2:
        raise ValueError(
            "the covariance needs at least two samples, got "
            f"{features.shape[0]} (features shape {features.shape})."
        )
    _validate.check_finite_array(features, "features")
    features = features.astype(_float_dtype(features, dtype=dtype))
    return _gaussian_statistics(features)


@jax.jit
def _gaussian_statistics(features):
    count, mean, scatter = _batch_moments(features, None)
    return mean, scatter / (count - 1)


def init_gaussian_statistics(dim: int, dtype: Any = jnp.float32) -> GaussianStatistics:
    """An empty accumulator for ``dim``-dimensional features.

    Args:
      dim: the feature dimension ``d`` (a positive Python int).
      dtype: the float dtype of the accumulated mean and scatter.
        ``jnp.float64`` needs ``jax_enable_x64``.

    Returns:
      A ``GaussianStatistics`` with ``count == 0``, a zero ``[d]`` mean and a
      zero ``[d, d]`` scatter.

    Raises:
      TypeError: if ``dim`` is not an int.
      ValueError: if ``dim < 1``.
    """
    dim = _validate.check_int(dim, "dim", minimum=1, static=True)
    dtype = _float_dtype(dtype=jnp.float32 if dtype is None else dtype)
    return GaussianStatistics(
        count=jnp.zeros((), jnp.int32),
        mean=jnp.zeros((dim,), dtype),
        scatter=jnp.zeros((dim, dim), dtype),
    )


def update_gaussian_statistics(
    state: GaussianStatistics,
    features: jax.typing.ArrayLike,
    *,
    mask: jax.typing.ArrayLike | None = None,
) -> GaussianStatistics:
    """Adds a batch of feature vectors to a streaming accumulator.

    The batch's own mean and centred scatter are computed (two-pass) and merged
    into the state with the pairwise update of Chan et al., never through raw
    sums of ``x`` and ``x x^T`` (which cancel catastrophically when the mean is
    large compared with the spread). Feeding the rows of ``X`` in any batches,
    of any sizes, then calling ``finalize_gaussian_statistics`` gives
    ``gaussian_statistics(X)`` up to round-off.

    Pure and jit-able. Each new batch shape compiles anew under ``jax.jit``;
    pad a short final batch to the common shape and pass ``mask`` to keep one
    compilation.

    Args:
      state: the accumulator so far.
      features: a batch of feature vectors, ``[b, d]`` (cast to the state's
        dtype). ``b == 0`` is allowed and changes nothing.
      mask: optional booleans ``[b]``; rows where it is false are ignored.

    Returns:
      The updated ``GaussianStatistics``.

    Raises:
      ValueError: on complex features, a shape that does not match the state,
        or (eager calls) NaN or inf in a row that counts (masked-out rows may hold anything);
        under ``jax.jit`` such rows make the statistics non-finite.

    References:
      Chan, Golub and LeVeque, "Updating Formulae and a Pairwise Algorithm for
      Computing Sample Variances", Stanford CS tech. report STAN-CS-79-773,
      1979 (the pairwise combination of means and centred sums of squares,
      here in its multivariate form).
    """
    features = jnp.asarray(features)
    _validate.check_real_dtype(features, "features")
    dim = state.mean.shape[-1]
    if features.ndim != 2 or features.shape[1] != dim:
        raise ValueError(
            f"features must be [b, {dim}] to match the state, got shape {features.shape}."
        )
    weights = None
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != features.shape[:1]:
            raise ValueError(
                f"mask must be [b] = {features.shape[:1]}, got shape {mask.shape}."
            )
        weights = mask.astype(bool).astype(state.mean.dtype)
    if features.shape[0] == 0:
        return state
    _validate.check_finite_array(
        features, "features", where=None if mask is None else mask.astype(bool)[:, None]
    )
    return _update(state, features.astype(state.mean.dtype), weights)


@jax.jit
def _update(state, features, weights):
    dtype = state.mean.dtype
    count_b, mean_b, scatter_b = _batch_moments(features, weights)
    mean, scatter = _merge(
        state.count.astype(dtype), state.mean, state.scatter, count_b, mean_b, scatter_b
    )
    if weights is None:
        added = features.shape[0]
    else:
        added = jnp.sum(weights > 0, dtype=jnp.int32)
    return GaussianStatistics(count=state.count + added, mean=mean, scatter=scatter)


def merge_gaussian_statistics(
    a: GaussianStatistics, b: GaussianStatistics
) -> GaussianStatistics:
    """Combines two accumulators, as if one had seen the other's features too.

    Useful to reduce per-device or per-host accumulators. Uses Chan et al.'s
    pairwise update (see ``update_gaussian_statistics``).

    Args:
      a: an accumulator, ``d``-dimensional.
      b: another accumulator of the same dimension.

    Returns:
      The combined ``GaussianStatistics`` (in ``a``'s dtype).
    """
    if a.mean.shape != b.mean.shape:
        raise ValueError(
            f"cannot merge statistics of shapes {a.mean.shape} and {b.mean.shape}."
        )
    return _merge_states(a, b)


@jax.jit
def _merge_states(a, b):
    dtype = a.mean.dtype
    mean, scatter = _merge(
        a.count.astype(dtype),
        a.mean,
        a.scatter,
        b.count.astype(dtype),
        b.mean.astype(dtype),
        b.scatter.astype(dtype),
    )
    return GaussianStatistics(count=a.count + b.count, mean=mean, scatter=scatter)


def finalize_gaussian_statistics(
    state: GaussianStatistics,
) -> tuple[jax.Array, jax.Array]:
    """The mean and unbiased (``n - 1``) covariance of everything accumulated.

    Args:
      state: an accumulator that has seen at least two feature vectors.

    Returns:
      ``(mean, covariance)``: ``[d]`` and ``[d, d]``, as
      ``gaussian_statistics`` of all the features seen.

    Raises:
      ValueError: if ``state.count < 2`` (checked when the count is concrete;
        under ``jax.jit`` such a state gives an all-NaN mean and covariance
        instead, since no value would be meaningful).
    """
    if not isinstance(state.count, jax.core.Tracer):
        count = int(state.count)
        if count < 2:
            raise ValueError(
                f"the covariance needs at least two samples, the accumulator has {count}."
            )
    return _finalize(state)


@jax.jit
def _finalize(state):
    enough = state.count >= 2
    count = state.count.astype(state.mean.dtype)
    mean = jnp.where(enough, state.mean, jnp.nan)
    covariance = jnp.where(enough, state.scatter / jnp.maximum(count - 1, 1), jnp.nan)
    return mean, covariance


PSDPolicy = Literal["raise", "project"]


def frechet_distance(
    mu1: jax.typing.ArrayLike,
    sigma1: jax.typing.ArrayLike,
    mu2: jax.typing.ArrayLike,
    sigma2: jax.typing.ArrayLike,
    *,
    psd: PSDPolicy = "raise",
    psd_tolerance: float | None = None,
    dtype: Any = None,
) -> jax.Array:
    """The Fréchet (2-Wasserstein) distance² between two Gaussians.

        d² = ||mu1 - mu2||² + tr(sigma1) + tr(sigma2) - 2 tr (sigma1 sigma2)^½

    The cross term is computed from symmetric eigendecompositions only:
    ``tr (sigma1 sigma2)^½ = sum_i sqrt(lambda_i)`` where ``lambda_i`` are the
    eigenvalues of the symmetric PSD matrix ``sigma1^½ sigma2 sigma1^½``
    (similar to ``sigma1 sigma2``), and ``sigma1^½`` comes from ``eigh`` of
    ``sigma1``. Eigenvalues that round-off leaves slightly negative are
    clipped at 0, so rank-deficient covariances (e.g. ``d = 2048`` features
    from fewer than 2048 samples) give a finite value without the
    ``eps * I`` offset that pytorch-fid falls back to. The result is clipped at
    0 (round-off can leave ``d²(P, P)`` a hair below it).

    Covariances must be positive semi-definite: a matrix with an eigenvalue
    below ``-psd_tolerance * max_i |lambda_i|`` is not a covariance, and the
    formula would silently clip it into a wrong value (``frechet_distance(0,
    -I, 1, -5 I)`` used to be 0). ``psd`` says what happens then:

    * ``"raise"`` (default): a ``ValueError`` naming the argument in eager
      calls; under ``jax.jit`` (where nothing can be raised) the result is
      NaN. Negative eigenvalues within the tolerance are round-off and are
      clipped as above.
    * ``"project"``: each covariance is replaced by its nearest PSD matrix in
      the Frobenius norm (negative eigenvalues set to 0, Higham 1988), traces
      included, and the distance between the projected Gaussians is returned.

    Accuracy: each clipped or tiny eigenvalue contributes up to
    ``sqrt(eps * ||sigma||)`` to the trace. In float32 that is about 1e-6
    relative for well-conditioned 2048-dimensional covariances but up to
    ~1e-3 for rank-deficient or ill-conditioned ones (4e-4 measured with
    1000 samples in 2048 dimensions); compute in float64
    (``dtype=jnp.float64`` with ``jax_enable_x64``) to compare with published
    FIDs. Without x64, a float64 request is truncated to float32 by
    JAX (with a ``UserWarning``). The inputs are assumed symmetric (``eigh``
    uses the average of a matrix and its transpose).

    NaN or inf in any input is an error in eager calls; under ``jax.jit`` the
    result is NaN.

    Cost: two ``d x d`` eigendecompositions, the eigenvalues of ``sigma2``
    (``psd="project"``: its eigendecomposition) and two ``d x d`` products.
    Not meant to be differentiated: the derivative of ``eigh`` is undefined
    at repeated eigenvalues, which rank-deficient covariances have.

    Args:
      mu1: the first mean, ``[d]``.
      sigma1: the first covariance, symmetric positive semi-definite ``[d, d]``.
      mu2: the second mean, ``[d]``.
      sigma2: the second covariance, ``[d, d]``.
      psd: ``"raise"`` or ``"project"``: what to do with a covariance that is
        not positive semi-definite beyond round-off (see above).
      psd_tolerance: the round-off allowance, relative to the largest
        eigenvalue magnitude of each covariance; by default ``d * eps`` with
        the machine epsilon of the less precise of the covariance's own dtype
        and the computation's (numpy's ``matrix_rank`` convention). Measured
        round-off on covariances of float32 features is 1 to 3 eps.
      dtype: the float dtype to compute in; by default the inputs', promoted to
        at least float32.

    Returns:
      A non-negative float scalar (NaN under ``jax.jit`` for a non-PSD
      covariance with ``psd="raise"`` or non-finite inputs).

    Raises:
      ValueError: on complex inputs, means that are not vectors, covariances
        that are not square matrices, dimensions that disagree, an unknown ``psd``, a
        ``psd_tolerance`` that is not finite and ``>= 0``, and in eager calls
        on NaN or inf inputs or (``psd="raise"``) a covariance that is not
        positive semi-definite.

    References:
      Dowson and Landau, "The Fréchet distance between multivariate normal
      distributions", J. Multivariate Analysis 12(3), 1982 (the closed form).
      Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to
      a Local Nash Equilibrium", NeurIPS 2017, eq. 6 (FID).
      Higham, "Computing a nearest symmetric positive semidefinite matrix",
      Linear Algebra Appl. 103, 1988, Theorem 2.1 (the projection).
    """
    mu1, sigma1, mu2, sigma2 = (jnp.asarray(a) for a in (mu1, sigma1, mu2, sigma2))
    for name, mu in (("mu1", mu1), ("mu2", mu2)):
        if mu.ndim != 1:
            raise ValueError(f"{name} must be a vector [d], got shape {mu.shape}.")
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
            raise ValueError(
                f"{name} must be a square matrix [d, d], got shape {sigma.shape}."
            )
    d = mu1.shape[0]
    if not (mu2.shape[0] == d and sigma1.shape[0] == d and sigma2.shape[0] == d):
        raise ValueError(
            "dimensions disagree: mu1 "
            f"{mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}."
        )
    if d == 0:
        raise ValueError("the dimension d must be at least 1.")
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        _validate.check_real_dtype(a, name)
        _validate.check_finite_array(a, name)
    dtype = _float_dtype(mu1, sigma1, mu2, sigma2, dtype=dtype)
    return _checked_frechet_distance(
        mu1, sigma1, mu2, sigma2, psd=psd, psd_tolerance=psd_tolerance, dtype=dtype,
        names=("sigma1", "sigma2"),
    )


def _psd_tolerances(psd, psd_tolerance, dtype, sigmas):
    """The relative tolerance of each covariance (see ``frechet_distance``)."""
    if psd not in ("raise", "project"):
        raise ValueError(f'psd must be "raise" or "project", got {psd!r}.')
    if psd_tolerance is not None:
        tol = _validate.check_nonnegative(psd_tolerance, "psd_tolerance")
        return [tol] * len(sigmas)
    tols = []
    for sigma in sigmas:
        own = jnp.promote_types(sigma.dtype, jnp.float32)
        eps = max(float(jnp.finfo(own).eps), float(jnp.finfo(dtype).eps))
        tols.append(sigma.shape[0] * eps)
    return tols


def _checked_frechet_distance(mu1, sigma1, mu2, sigma2, *, psd, psd_tolerance, dtype, names):
    """``_frechet_distance`` in ``dtype``, raising on a non-PSD covariance when concrete."""
    tols = _psd_tolerances(psd, psd_tolerance, dtype, (sigma1, sigma2))
    value, ratios = _frechet_distance(
        *(a.astype(dtype) for a in (mu1, sigma1, mu2, sigma2)),
        jnp.asarray(tols, dtype),
        project=psd == "project",
    )
    if psd == "raise" and not isinstance(ratios, jax.core.Tracer):
        for name, ratio, tol in zip(names, np.asarray(ratios), tols):
            if not ratio >= -tol:
                raise ValueError(
                    f"{name} is not positive semi-definite: its smallest eigenvalue is "
                    f"{ratio:.3g} times its largest in magnitude, beyond the round-off "
                    f"allowance -{tol:.3g}. A covariance matrix cannot "
                    'have negative eigenvalues; pass psd="project" to measure the '
                    "distance between the nearest positive semi-definite covariances."
                )
    return value


def _min_eigenvalue_ratio(evals):
    """``min lambda / max |lambda|`` (0 for the zero matrix)."""
    scale = jnp.max(jnp.abs(evals))
    return jnp.where(scale > 0, jnp.min(evals) / jnp.where(scale > 0, scale, 1), 0)


@functools.partial(jax.jit, static_argnames=("project",))
def _frechet_distance(mu1, sigma1, mu2, sigma2, tolerances, *, project):
    """The distance and each covariance's ``min lambda / max |lambda|`` ``[2]``."""
    diff = mu1 - mu2
    evals1, evecs1 = jnp.linalg.eigh(sigma1)
    sqrt_sigma1 = jnp.matmul(
        evecs1 * jnp.sqrt(jnp.maximum(evals1, 0)), evecs1.T, precision=_HIGHEST
    )
    if project:
        evals2, evecs2 = jnp.linalg.eigh(sigma2)
        sigma2 = jnp.matmul(evecs2 * jnp.maximum(evals2, 0), evecs2.T, precision=_HIGHEST)
        trace1 = jnp.sum(jnp.maximum(evals1, 0))
        trace2 = jnp.sum(jnp.maximum(evals2, 0))
    else:
        evals2 = jnp.linalg.eigvalsh(sigma2)
        trace1, trace2 = jnp.trace(sigma1), jnp.trace(sigma2)
    inner = jnp.matmul(
        jnp.matmul(sqrt_sigma1, sigma2, precision=_HIGHEST), sqrt_sigma1, precision=_HIGHEST
    )
    # eigvalsh symmetrises its input, which removes the round-off asymmetry.
    trace_sqrt = jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(inner), 0)))
    value = jnp.dot(diff, diff, precision=_HIGHEST) + trace1 + trace2 - 2 * trace_sqrt
    value = jnp.maximum(value, 0)
    ratios = jnp.stack([_min_eigenvalue_ratio(evals1), _min_eigenvalue_ratio(evals2)])
    if not project:
        # Under jit nothing can be raised: a non-PSD covariance gives NaN.
        # (not >=, so that a NaN ratio also gives NaN.)
        value = jnp.where(jnp.all(ratios >= -tolerances), value, jnp.nan)
    return value, ratios


def fid(
    features1: jax.typing.ArrayLike,
    features2: jax.typing.ArrayLike,
    *,
    psd: PSDPolicy = "raise",
    dtype: Any = None,
) -> jax.Array:
    """The Fréchet distance between the Gaussian fits of two feature sets.

    ``frechet_distance(*gaussian_statistics(features1),
    *gaussian_statistics(features2))``: with Inception-v3 pool3 features
    (``d = 2048``) this is the Fréchet Inception Distance. For features that
    arrive in batches, accumulate them with ``update_gaussian_statistics``
    instead and call ``frechet_distance`` on the finalized statistics.

    Both sets are first translated by their pooled mean (the distance does
    not change), so the value is invariant to a shared translation in
    floating point too: float32 stays within about 1e-4 relative of float64
    at offsets of 0, 1e3 and 1e6 (the means of features near 1e6 would
    otherwise round to 0.06 and the mean term with them).

    Args:
      features1: the first set of feature vectors, ``[n1, d]`` with ``n1 >= 2``.
      features2: the second set, ``[n2, d]`` with ``n2 >= 2``.
      psd: what to do if round-off leaves a sample covariance non-positive
        semi-definite beyond the tolerance of ``frechet_distance`` (not seen
        in practice: measured round-off is 1 to 3 eps against ``d * eps``).
      dtype: the float dtype to compute in (see ``frechet_distance``).

    Returns:
      A non-negative float scalar.

    Raises:
      ValueError: on complex features, shapes other than ``[n1, d]`` /
        ``[n2, d]``, fewer than two rows, or (eager calls) NaN or inf in either set; under
        ``jax.jit`` non-finite features give NaN.

    References:
      Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to
      a Local Nash Equilibrium", NeurIPS 2017, eq. 6.
    """
    features1 = jnp.asarray(features1)
    features2 = jnp.asarray(features2)
    if features1.ndim == 2 == features2.ndim and features1.shape[1] != features2.shape[1]:
        raise ValueError(
            "features1 and features2 must have the same dimension d, got "
            f"{features1.shape} and {features2.shape}."
        )
    for name, features in (("features1", features1), ("features2", features2)):
        _validate.check_real_dtype(features, name)
        if features.ndim != 2:
            raise ValueError(f"{name} must be [n, d], got shape {features.shape}.")
        if features.shape[0] < 2:
            raise ValueError(
                f"the covariance needs at least two samples, {name} has shape "
                f"{features.shape}."
            )
        _validate.check_finite_array(features, name)
    dtype = _float_dtype(features1, features2, dtype=dtype)
    mu1, sigma1, mu2, sigma2 = _centred_statistics(features1.astype(dtype), features2.astype(dtype))
    return _checked_frechet_distance(
        mu1, sigma1, mu2, sigma2, psd=psd, psd_tolerance=None, dtype=dtype,
        names=("the covariance of features1", "the covariance of features2"),
    )


@jax.jit
def _centred_statistics(features1, features2):
    """Both sets' statistics after a shared translation by their pooled mean.

    The Fréchet distance is invariant to it, and the means come out small, so
    ``mu1 - mu2`` keeps its digits when both sets sit far from the origin (in
    float32 at an offset of 1e6 the means themselves round to 0.06).
    """
    shift = (jnp.sum(features1, axis=0) + jnp.sum(features2, axis=0)) / (
        features1.shape[0] + features2.shape[0]
    )
    return (*_gaussian_statistics(features1 - shift), *_gaussian_statistics(features2 - shift))
