"""Maximum mean discrepancy: the Gaussian-kernel MMD² and KID.

Kernel matrices use ``Precision.HIGHEST`` products (the default float32
``matmul`` precision of GPUs and TPUs is too coarse for a difference of kernel
means).
"""

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgan import _validate

_HIGHEST = jax.lax.Precision.HIGHEST


class KernelInceptionDistance(NamedTuple):
    """The result of ``kid``: unpacks as ``(mean, std)``.

    Attributes:
      mean: the mean over subsets of the unbiased MMD² estimates, a float
        scalar (it can be slightly negative when the two sets match).
      std: their population standard deviation (``ddof=0``), a float scalar.
    """

    mean: jax.Array  # [] float
    std: jax.Array  # [] float


def _check_samples(x, y, min_n: int = 2, names=("x", "y")) -> None:
    for name, a in zip(names, (x, y)):
        _validate.check_real_dtype(a, name)
        if a.ndim != 2:
            raise ValueError(f"{name} must be [n, d], got shape {a.shape}.")
        if a.shape[0] < min_n:
            raise ValueError(
                f"the unbiased estimator needs at least {min_n} samples in {name}, "
                f"got shape {a.shape}."
            )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same dimension d, got "
            f"{x.shape} and {y.shape}."
        )


def _float_dtype(*arrays):
    """The float dtype to compute in: the inputs' (real, see ``_check_samples``), at least float32."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _unbiased_mmd2(k_xx, k_yy, k_xy):
    """The unbiased MMD² from kernel matrices ``[n, n]``, ``[m, m]``, ``[n, m]``.

    The diagonals of ``k_xx`` and ``k_yy`` are masked out, not subtracted
    (subtracting their trace from the full sum cancels digits).
    """
    n, m = k_xx.shape[0], k_yy.shape[0]
    off_xx = jnp.sum(jnp.where(jnp.eye(n, dtype=bool), 0, k_xx))
    off_yy = jnp.sum(jnp.where(jnp.eye(m, dtype=bool), 0, k_yy))
    return off_xx / (n * (n - 1)) + off_yy / (m * (m - 1)) - 2 * jnp.mean(k_xy)


def mmd2(
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    *,
    bandwidth: jax.typing.ArrayLike,
) -> jax.Array:
    """The unbiased estimate of MMD² with a Gaussian kernel.

        MMD²_u = 1/(n(n-1)) sum_{i != j} k(x_i, x_j)
               + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
               - 2/(n m)    sum_{i, j}    k(x_i, y_j),

        k(a, b) = sum_s exp(-||a - b||² / (2 sigma_s²)).

    With a scalar ``bandwidth`` the kernel is the single Gaussian
    ``exp(-||a - b||² / (2 sigma²))``; with a vector of bandwidths it is the
    *sum* of those Gaussians (not their mean), as in the mixture-of-RBF kernels
    of generative moment matching networks, so the result is the sum of the
    single-bandwidth estimates.

    The estimate is unbiased, so it can be negative when ``x`` and ``y`` come
    from the same distribution (its expectation is then 0). Memory is
    O((n + m)² · bandwidths); squared distances use
    ``|a|² + |b|² - 2 a·b`` clipped at 0, after translating each pair of sets
    by its pooled mean, so the value is invariant to a translation shared by
    ``x`` and ``y``, also in floating point: in float32 it matches float64 to
    about 1e-5 relative whether the data sit at the origin or at an offset of
    1e6 (``benchmarks.metrics`` measures it).

    NaN or inf in ``x`` or ``y`` is an error in eager calls; under
    ``jax.jit`` it cannot be checked and the result is NaN.

    Args:
      x: samples from P, ``[n, d]`` with ``n >= 2``.
      y: samples from Q, ``[m, d]`` with ``m >= 2``.
      bandwidth: ``sigma``, a scalar or a vector ``[s]`` of bandwidths, each
        finite and ``> 0`` (checked when concrete; it may be traced).

    Returns:
      A float scalar.

    Raises:
      ValueError: on shapes other than ``[n, d]`` / ``[m, d]``, fewer than two
        samples, complex ``x`` or ``y``, a bandwidth that is not a non-empty
        scalar or vector, a concrete bandwidth that is not finite and
        positive, or (eager calls) NaN or inf in ``x`` or ``y``.
      TypeError: if ``bandwidth`` is not made of real numbers (``True``,
        ``"1.0"`` and ``None`` are refused).

    References:
      Gretton et al., "A Kernel Two-Sample Test", JMLR 13, 2012, Lemma 6,
      eq. 3 (the unbiased estimator MMD²_u).
      Li, Swersky and Zemel, "Generative Moment Matching Networks", ICML 2015,
      sec. 3 (a sum of Gaussian kernels of several bandwidths).
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    _check_samples(x, y)
    _validate.check_finite_array(x, "x")
    _validate.check_finite_array(y, "y")
    if np.ndim(bandwidth) == 0:  # Refuses True, "1.0" and None by their type.
        _validate.check_positive_scalar(bandwidth, "bandwidth")
    bandwidth = jnp.asarray(bandwidth)
    if bandwidth.ndim > 1 or bandwidth.size == 0:
        raise ValueError(
            f"bandwidth must be a scalar or a non-empty vector, got shape {bandwidth.shape}."
        )
    if not (jnp.issubdtype(bandwidth.dtype, jnp.integer) or jnp.issubdtype(bandwidth.dtype, jnp.floating)):
        raise TypeError(f"bandwidth must be real numbers, got dtype {bandwidth.dtype}.")
    if not isinstance(bandwidth, jax.core.Tracer):
        b = np.asarray(bandwidth, np.float64)
        if not np.all(np.isfinite(b) & (b > 0)):
            raise ValueError(f"bandwidth must be finite and > 0, got {b}.")
    dtype = _float_dtype(x, y)  # the bandwidth does not promote the data
    return _gaussian_mmd2(
        x.astype(dtype), y.astype(dtype), jnp.atleast_1d(bandwidth).astype(dtype)
    )


def _sq_distances(a, b):
    """Squared Euclidean distances ``[n, m]`` between rows, clipped at 0.

    Both sets are first translated by their pooled mean (distances do not
    change), so ``|a|² + |b|² - 2 a·b`` is formed from centred values: without
    it, points far from the origin lose the distances between them to
    cancellation (float32 at an offset of 1e3 in 8 dimensions gave 0.00216
    for an MMD² of 0.00536). For values near a common offset the centred
    difference ``a - shift`` is exact in floating point (Sterbenz), so the
    distances are as accurate as at the origin.
    """
    shift = (jnp.sum(a, axis=0) + jnp.sum(b, axis=0)) / (a.shape[0] + b.shape[0])
    a = a - shift
    b = b - shift
    sq_a = jnp.sum(jnp.square(a), axis=1)
    sq_b = jnp.sum(jnp.square(b), axis=1)
    cross = jnp.matmul(a, b.T, precision=_HIGHEST)
    return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2 * cross, 0)


@jax.jit
def _gaussian_mmd2(x, y, bandwidths):
    scale = 1 / (2 * jnp.square(bandwidths))  # [s]

    def kernel(a, b):
        sq = _sq_distances(a, b)
        return jnp.sum(jnp.exp(-sq[..., None] * scale), axis=-1)

    return _unbiased_mmd2(kernel(x, x), kernel(y, y), kernel(x, y))


@functools.partial(jax.jit, static_argnames=("n1", "n2", "subsets", "subset_size"))
def _subset_indices(key, n1: int, n2: int, *, subsets: int, subset_size: int):
    """The rows of each KID subset: int32 ``[subsets, subset_size]`` twice.

    ``key`` is split into one key per input set, each of those into one key
    per subset, and each subset is ``subset_size`` distinct rows drawn
    uniformly (``jax.random.choice`` without replacement); the two sets are
    drawn independently, as in torch-fidelity.
    """
    key1, key2 = jax.random.split(key)

    def draw(k, n):
        keys = jax.random.split(k, subsets)
        return jax.vmap(lambda kk: jax.random.choice(kk, n, (subset_size,), replace=False))(keys)

    return draw(key1, n1), draw(key2, n2)


def kid(
    features1: jax.typing.ArrayLike,
    features2: jax.typing.ArrayLike,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: Any = None,
    coef0: Any = 1.0,
    key: jax.Array,
) -> KernelInceptionDistance:
    """The Kernel Inception Distance: polynomial-kernel MMD² over random subsets.

    For each of ``subsets`` rounds, ``subset_size`` distinct rows are drawn
    from each feature set (independently, without replacement) and the
    unbiased MMD² estimate (see ``mmd2``) is computed with the polynomial
    kernel

        k(a, b) = (gamma a·b + coef0) ** degree,   gamma = 1 / d by default,

    i.e. ``(a·b / d + 1)³`` with the defaults. The result is the mean and the
    population standard deviation (``ddof=0``) of those estimates. Defaults,
    estimator and std match torch-fidelity's ``kid_features_to_metric`` (100
    subsets of 1000), itself adapted from Bińkowski et al.'s code; like it, a
    ``subset_size`` larger than either set is an error rather than clamped.
    The subsets are drawn from ``key`` with ``jax.random`` (not numpy's
    ``RandomState``), so values agree with torch-fidelity's in distribution,
    not digit for digit.

    Subsets are processed one at a time (``lax.map``): memory is
    O(subset_size²), not O(subsets · subset_size²). Works under ``jax.jit``
    with ``subsets``, ``subset_size`` and ``degree`` static.

    The polynomial kernel is not translation invariant: moving both sets by
    the same offset changes KID (unlike ``mmd2``'s Gaussian kernel), so the
    data are not centred. The kernel means are nevertheless computed in
    centred coordinates, where the terms that would cancel between them are
    dropped exactly (see ``_polynomial_mmd2``): in float32 the value stays
    within about 1e-5 relative of the exact one at the origin and 1e-6 at
    offsets of 1e3 and 1e6, where summing the kernel matrices directly loses
    every digit (float64 loses three at 1e6).

    NaN or inf in the features is an error in eager calls; under ``jax.jit``
    it cannot be checked and the result is NaN.

    Args:
      features1: the first feature set, ``[n1, d]``.
      features2: the second feature set, ``[n2, d]``.
      subsets: the number of random subsets, an int ``>= 1``.
      subset_size: the rows per subset, an int in ``[2, min(n1, n2)]``.
      degree: the polynomial degree, an int ``>= 1``.
      gamma: the scale of ``a·b``; ``None`` means ``1 / d``. A real scalar,
        finite and positive when concrete.
      coef0: the constant term, a real scalar (finite when concrete).
      key: a ``jax.random`` key for the subsets.

    Returns:
      A ``KernelInceptionDistance`` ``(mean, std)`` of float scalars.

    Raises:
      ValueError: on shapes other than ``[n1, d]`` / ``[n2, d]``, complex
        features, a ``subset_size`` outside ``[2, min(n1, n2)]``, ``subsets``
        or ``degree`` below 1, a ``gamma`` or ``coef0`` that is not a scalar
        or (concrete) not finite (``gamma``: and positive); NaN or inf in the
        features (eager calls).
      TypeError: if ``subsets``, ``subset_size`` or ``degree`` is not an int,
        or ``gamma`` or ``coef0`` is not a real number (``True`` and ``"1"``
        are refused).
      OverflowError: if the kernel overflows the dtype (eager calls; features
        of magnitude around 1e8 in float32): compute in float64 or rescale.

    References:
      Bińkowski et al., "Demystifying MMD GANs", ICLR 2018, sec. 4 and
      appendix A (KID: the unbiased MMD² with the cubic polynomial kernel,
      averaged over subsets).
    """
    features1 = jnp.asarray(features1)
    features2 = jnp.asarray(features2)
    _check_samples(features1, features2, min_n=1, names=("features1", "features2"))
    _validate.check_finite_array(features1, "features1")
    _validate.check_finite_array(features2, "features2")
    subsets = _validate.check_int(subsets, "subsets", minimum=1, static=True)
    subset_size = _validate.check_int(subset_size, "subset_size", minimum=2, static=True)
    degree = _validate.check_int(degree, "degree", minimum=1, static=True)
    n1, n2 = features1.shape[0], features2.shape[0]
    if subset_size > min(n1, n2):
        raise ValueError(
            f"subset_size {subset_size} is larger than the smaller feature set "
            f"(features1 has {n1} rows, features2 has {n2}); lower subset_size."
        )
    if gamma is None:
        gamma = 1.0 / features1.shape[1]
    else:
        _validate.check_positive_scalar(gamma, "gamma")
    _validate.check_real_scalar(coef0, "coef0")
    dtype = _float_dtype(features1, features2)
    result = _kid(
        features1.astype(dtype),
        features2.astype(dtype),
        key,
        jnp.asarray(gamma, dtype),
        jnp.asarray(coef0, dtype),
        subsets=subsets,
        subset_size=subset_size,
        degree=degree,
    )
    if not isinstance(result.mean, jax.core.Tracer) and not (
        np.isfinite(result.mean) and np.isfinite(result.std)
    ):
        raise OverflowError(
            f"the polynomial kernel of degree {degree} overflowed {dtype} on these "
            "features (finite inputs, non-finite KID): compute in float64 "
            "(jax_enable_x64) or rescale the features."
        )
    return result


def _polynomial_mmd2(x, y, shift, gamma, coef0, degree):
    """Unbiased MMD² of ``[m, d]`` sets with the polynomial kernel.

    The kernel ``(gamma a·b + coef0) ** D`` is not translation invariant, so
    the data cannot simply be centred; its *value* is computed in centred
    coordinates instead. With ``a = a' + t`` (``t`` the shared ``shift``),

        gamma a·b + coef0 = beta + alpha_a + alpha_b + c,
        beta = gamma a'·b',  alpha_a = gamma t·a',  c = gamma |t|² + coef0,

    and every part of ``(beta + alpha_a + alpha_b + c) ** D`` that is a sum of
    a function of ``a`` alone and one of ``b`` alone contributes exactly 0 to
    the unbiased MMD² (the same function averaged over the same pairs), so
    only

        sum_{l>=1} C(D, l) (c + alpha_a + alpha_b)^(D-l) beta^l
        + sum_{j,k>=1} D! / (j! k! (D-j-k)!) c^(D-j-k) alpha_a^j alpha_b^k

    is summed. Each term is computed to full relative precision, so the
    huge constant ``c^D`` and the terms linear in ``alpha`` never have to
    cancel between the three kernel means (they did: float32 at an offset of
    1e3 returned -7.9e10 for 7.8e9).
    """
    xc, yc = x - shift, y - shift
    c = gamma * jnp.dot(shift, shift, precision=_HIGHEST) + coef0
    alpha_x = gamma * jnp.matmul(xc, shift, precision=_HIGHEST)  # [m]
    alpha_y = gamma * jnp.matmul(yc, shift, precision=_HIGHEST)  # [m]

    def kernel(a, b, alpha_a, alpha_b):
        beta = gamma * jnp.matmul(a, b.T, precision=_HIGHEST)
        w = c + alpha_a[:, None] + alpha_b[None, :]
        # (w + beta)^D - w^D by Horner's rule in beta.
        poly = jnp.zeros_like(beta)
        for l in range(degree, 0, -1):
            poly = (poly + math.comb(degree, l) * w ** (degree - l)) * beta
        for j in range(1, degree):
            for k in range(1, degree - j + 1):
                coef = math.factorial(degree) // (
                    math.factorial(j) * math.factorial(k) * math.factorial(degree - j - k)
                )
                poly = poly + coef * c ** (degree - j - k) * jnp.outer(alpha_a**j, alpha_b**k)
        return poly

    return _unbiased_mmd2(
        kernel(xc, xc, alpha_x, alpha_x),
        kernel(yc, yc, alpha_y, alpha_y),
        kernel(xc, yc, alpha_x, alpha_y),
    )


@functools.partial(jax.jit, static_argnames=("subsets", "subset_size", "degree"))
def _kid(features1, features2, key, gamma, coef0, *, subsets, subset_size, degree):
    idx1, idx2 = _subset_indices(
        key, features1.shape[0], features2.shape[0], subsets=subsets, subset_size=subset_size
    )

    # Any shared shift gives the same value (see _polynomial_mmd2); the pooled
    # mean makes the centred features small.
    shift = (jnp.sum(features1, axis=0) + jnp.sum(features2, axis=0)) / (
        features1.shape[0] + features2.shape[0]
    )

    def one_subset(indices):
        i1, i2 = indices
        return _polynomial_mmd2(features1[i1], features2[i2], shift, gamma, coef0, degree)

    estimates = jax.lax.map(one_subset, (idx1, idx2))  # [subsets]
    return KernelInceptionDistance(mean=jnp.mean(estimates), std=jnp.std(estimates))
