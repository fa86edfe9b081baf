"""Mode coverage of a mixture of Gaussians (the VEEGAN / PacGAN protocol)."""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgan import _validate


class ModeCoverage(NamedTuple):
    """The result of ``mode_coverage``.

    Attributes:
      modes: the number of modes captured (with at least one high-quality
        sample nearest to them), an int32 scalar in ``[0, M]``.
      high_quality: the fraction of samples within ``threshold * std`` of
        their nearest centre, a float scalar in ``[0, 1]``.
      reverse_kl: ``KL(p || uniform)`` of the high-quality samples' mode
        histogram ``p``, a float scalar in ``[0, log M]``; ``log M`` when no
        sample is high quality.
      counts: the number of high-quality samples nearest to each mode,
        int32 ``[M]``.
    """

    modes: jax.Array  # [] int32
    high_quality: jax.Array  # [] float
    reverse_kl: jax.Array  # [] float
    counts: jax.Array  # [M] int32


def mode_coverage(
    samples: jax.typing.ArrayLike,
    centers: jax.typing.ArrayLike,
    *,
    std: jax.typing.ArrayLike,
    threshold: jax.typing.ArrayLike = 3.0,
) -> ModeCoverage:
    """Counts the modes a generator captures and how precisely it hits them.

    Each sample is assigned to its nearest centre (Euclidean distance; ties go
    to the lower index). It is *high quality* if that distance is at most
    ``threshold * std``. A mode is *captured* if at least one high-quality
    sample is assigned to it. ``reverse_kl`` is

        KL(p || u) = sum_i p_i log(p_i / (1 / M)),   with 0 log 0 = 0,

    where ``p`` is the normalised histogram of the **high-quality** samples
    over the ``M`` modes and ``u`` is uniform (the target's mode weights).

    Conventions, and why:

    * Low-quality samples do not enter the histogram. This is what PacGAN's
      evaluation code does (a sample is added to its nearest mode's count only
      if it lies within the threshold; the coverage, the high-quality
      fraction and the divergences are all computed from those counts), so
      precision and diversity stay separate numbers: precision is
      ``high_quality``, balance among the good samples is ``reverse_kl``.
      Counting every sample at its nearest mode instead would credit a mode
      for samples that sit nowhere near it.
    * With no high-quality sample, ``p`` is undefined (PacGAN's 0 / 0 gives
      NaN). We return ``log M``, the largest value KL(p || u) takes over all
      histograms ``p`` (a collapse onto a single mode): no captured mode is
      scored as at least as bad as one captured mode, and averages over seeds
      stay finite. Read it together with ``modes == 0``.

    Memory is O(n M) (the ``[n, M, d]`` difference is fused into the
    reduction by XLA). Works under ``jax.jit``; ``std`` and ``threshold`` may be
    traced (they are only range-checked when concrete).

    NaN or inf in ``samples`` or ``centers`` is an error in eager calls (a
    diverged generator's samples have no mode to be counted at). Under
    ``jax.jit`` it cannot be checked and nothing is NaN: a non-finite sample
    is never high quality, an infinite centre is never captured, and a NaN
    centre leaves no sample high quality.

    Args:
      samples: generated samples, ``[n, d]``.
      centers: the mode centres of the target mixture, ``[M, d]``.
      std: the standard deviation of every mode (isotropic), a scalar ``> 0``.
      threshold: the high-quality radius in units of ``std``, a scalar ``> 0``.

    Returns:
      A ``ModeCoverage`` with ``modes`` (int32), ``high_quality`` and
      ``reverse_kl`` (floats) and ``counts`` (int32 ``[M]``).

    Raises:
      ValueError: on shapes other than ``[n, d]`` / ``[M, d]``, empty inputs,
        a concrete ``std`` or ``threshold`` that is not finite and positive,
        or (eager calls) NaN or inf in ``samples`` or ``centers``.
      TypeError: if ``std`` or ``threshold`` is not a real number (``True``
        and ``"3"`` are refused).

    References:
      Srivastava et al., "VEEGAN: Reducing Mode Collapse in GANs using
      Implicit Variational Learning", NeurIPS 2017, sec. 5.1 (modes captured
      and high-quality samples within 3 std).
      Lin et al., "PacGAN: The power of two samples in generative adversarial
      networks", NeurIPS 2018, sec. 4.1, Table 1 (adds the reverse KL of the
      mode histogram to uniform).
    """
    samples = jnp.asarray(samples)
    centers = jnp.asarray(centers)
    if samples.ndim != 2:
        raise ValueError(f"samples must be [n, d], got shape {samples.shape}.")
    if centers.ndim != 2:
        raise ValueError(f"centers must be [M, d], got shape {centers.shape}.")
    if samples.shape[0] < 1:
        raise ValueError("samples must hold at least one sample.")
    if centers.shape[0] < 1:
        raise ValueError("centers must hold at least one centre.")
    if samples.shape[1] != centers.shape[1]:
        raise ValueError(
            "samples and centers must have the same dimension d, got "
            f"samples {samples.shape} and centers {centers.shape}."
        )
    _validate.check_finite_array(samples, "samples")
    _validate.check_finite_array(centers, "centers")
    _validate.check_positive_scalar(std, "std")
    _validate.check_positive_scalar(threshold, "threshold")

    dtype = jnp.promote_types(jnp.result_type(samples, centers), jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"samples and centers must be real, got {dtype}.")
    return _mode_coverage(
        samples.astype(dtype),
        centers.astype(dtype),
        jnp.asarray(std, dtype),
        jnp.asarray(threshold, dtype),
    )


# Compiled once per shape, so eager calls cost one dispatch; inlined when the
# caller is itself under jax.jit.
@jax.jit
def _mode_coverage(samples, centers, std, threshold):
    """The protocol on validated ``[n, d]`` / ``[M, d]`` inputs of one dtype."""
    dtype = samples.dtype
    num_modes = centers.shape[0]
    # Squared distances as a sum of squared differences (not the expansion
    # |x|^2 - 2 x.c + |c|^2, which cancels catastrophically near a centre).
    sq_dist = jnp.sum(
        jnp.square(samples[:, None, :] - centers[None, :, :]), axis=-1
    )  # [n, M]
    nearest = jnp.argmin(sq_dist, axis=1)  # [n]
    nearest_sq_dist = jnp.min(sq_dist, axis=1)  # [n]
    radius = threshold * std
    good = nearest_sq_dist <= jnp.square(radius)  # [n]

    counts = jnp.zeros((num_modes,), jnp.int32).at[nearest].add(
        good.astype(jnp.int32)
    )
    modes = jnp.sum(counts > 0).astype(jnp.int32)
    high_quality = jnp.mean(good.astype(dtype))

    total = jnp.sum(counts)
    p = counts.astype(dtype) / jnp.maximum(total, 1).astype(dtype)
    # 0 log 0 = 0; the inner where keeps log away from 0 (no NaN gradients).
    terms = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p * num_modes, 1)), 0)
    log_m = jnp.asarray(math.log(num_modes), dtype)
    reverse_kl = jnp.where(total > 0, jnp.sum(terms), log_m)
    # Rounding can leave the sum a hair outside [0, log M].
    reverse_kl = jnp.clip(reverse_kl, 0, log_m)

    return ModeCoverage(
        modes=modes,
        high_quality=high_quality,
        reverse_kl=reverse_kl,
        counts=counts,
    )
