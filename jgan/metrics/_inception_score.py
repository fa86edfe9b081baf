"""The Inception Score of a classifier's predictions on generated samples."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgan import _validate

# How far a row of ``probs`` may sum from 1 (float16 / float32 softmax outputs
# over ~1000 classes are well within it).
_SUM_TOLERANCE = 1e-3


class InceptionScore(NamedTuple):
    """The result of ``inception_score``: unpacks as ``(mean, std)``.

    Attributes:
      mean: the mean over splits of the per-split score, a float scalar in
        ``[1, classes]``.
      std: their population standard deviation (``ddof=0``), a float scalar.
    """

    mean: jax.Array  # [] float
    std: jax.Array  # [] float


def _check_splits(splits, n: int) -> int:
    splits = _validate.check_int(splits, "splits", static=True)
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, n] = [1, {n}], got {splits}.")
    return splits


def _check_2d(x, what: str) -> None:
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what} must be [n, classes] with n, classes >= 1, got shape {x.shape}.")


def _float_dtype(x, what: str):
    _validate.check_real_dtype(x, what)
    return jnp.promote_types(x.dtype, jnp.float32)


def inception_score(probs: jax.typing.ArrayLike, *, splits: int = 10) -> InceptionScore:
    """The Inception Score, mean and standard deviation over splits.

    The ``n`` rows are cut, in the order given, into ``splits`` contiguous
    parts; part ``i`` holds rows ``[i n // splits, (i + 1) n // splits)``, so
    when ``splits`` does not divide ``n`` the parts differ in size by one and
    every row is used. Within a part ``P``,

        IS(P) = exp( mean_{x in P} KL(p(y|x) || p_P(y)) ),
        p_P(y) = mean_{x in P} p(y|x),   with 0 log 0 = 0,

    and the result is the mean and the population standard deviation
    (``ddof=0``, ``numpy.std``'s default) of the ``splits`` scores. This is the
    original TensorFlow code of Salimans et al. (openai/improved-gan) and
    torch-fidelity's ``isc_features_to_metric``; torch-fidelity additionally
    shuffles the rows with a fixed seed first, which we leave to the caller
    (permute ``probs`` with your own key if the order is not random).

    The score lies in ``[1, classes]``: 1 when every prediction is the same,
    ``classes`` for confident (one-hot) predictions spread evenly over all
    classes.

    When ``probs`` is concrete it is checked to hold distributions (finite,
    non-negative, rows summing to 1 within 1e-3); under ``jax.jit`` it is
    not. Prefer ``inception_score_from_logits`` when logits are at hand: it
    works from ``log_softmax``, which keeps tiny probabilities' logarithms
    accurate.

    Args:
      probs: the classifier's class probabilities ``p(y|x)``, ``[n, classes]``.
      splits: the number of parts, a Python int in ``[1, n]`` (static under
        ``jax.jit``). 10 is the convention (with ``n = 50000``).

    Returns:
      An ``InceptionScore`` ``(mean, std)`` of float scalars.

    Raises:
      ValueError: if ``probs`` is not ``[n, classes]``, is concrete and not a
        batch of distributions, or ``splits`` is not in ``[1, n]``.
      TypeError: if ``splits`` is not an int.

    References:
      Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016,
      sec. 4 (the score, computed on 50k samples in 10 splits).
      Barratt and Sharma, "A Note on the Inception Score", 2018, sec. 3 (why
      splits and sample order matter).
    """
    probs = jnp.asarray(probs)
    _check_2d(probs, "probs")
    splits = _check_splits(splits, probs.shape[0])
    dtype = _float_dtype(probs, "probs")
    if not isinstance(probs, jax.core.Tracer):
        p = np.asarray(probs, np.float64)
        if not np.all(np.isfinite(p)):
            raise ValueError("probs must be finite.")
        if np.any(p < 0):
            raise ValueError(f"probs must be non-negative, got a minimum of {p.min()}.")
        sums = p.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1)))
        if abs(sums[worst] - 1) > _SUM_TOLERANCE:
            raise ValueError(
                "every row of probs must sum to 1 (a distribution over classes); "
                f"row {worst} sums to {sums[worst]}."
            )
    probs = probs.astype(dtype)
    # 0 log 0 = 0: the log of a zero probability is never used (see _score).
    log_probs = jnp.log(jnp.where(probs > 0, probs, 1))
    return _score(probs, log_probs, splits=splits)


def inception_score_from_logits(
    logits: jax.typing.ArrayLike, *, splits: int = 10
) -> InceptionScore:
    """The Inception Score from unnormalised class scores.

    ``inception_score(softmax(logits), splits=splits)``, with ``log p(y|x)``
    taken from ``log_softmax`` (as torch-fidelity does) so it stays accurate
    for tiny probabilities.

    Args:
      logits: the classifier's logits, ``[n, classes]`` (finite when
        concrete).
      splits: the number of parts, a Python int in ``[1, n]``.

    Returns:
      An ``InceptionScore`` ``(mean, std)`` of float scalars.

    References:
      Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016,
      sec. 4.
    """
    logits = jnp.asarray(logits)
    _check_2d(logits, "logits")
    splits = _check_splits(splits, logits.shape[0])
    dtype = _float_dtype(logits, "logits")
    if not isinstance(logits, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(logits))):
        raise ValueError("logits must be finite.")
    logits = logits.astype(dtype)
    log_probs = jax.nn.log_softmax(logits, axis=1)
    return _score(jnp.exp(log_probs), log_probs, splits=splits)


@functools.partial(jax.jit, static_argnames="splits")
def _score(probs, log_probs, *, splits):
    """Per-split scores of ``[n, c]`` probabilities and their logarithms."""
    n = probs.shape[0]
    bounds = (np.arange(splits + 1) * n) // splits  # static part boundaries
    sizes = np.diff(bounds).astype(np.float64)  # all >= 1 since splits <= n
    part = np.repeat(np.arange(splits), np.diff(bounds))  # [n], sorted
    segment_sum = functools.partial(
        jax.ops.segment_sum, segment_ids=part, num_segments=splits, indices_are_sorted=True
    )
    sizes = jnp.asarray(sizes, probs.dtype)
    marginal = segment_sum(probs) / sizes[:, None]  # [splits, c]
    # A class with p(y|x) > 0 has p_P(y) > 0; elsewhere the term is 0 log 0.
    log_marginal = jnp.log(jnp.where(marginal > 0, marginal, 1))
    terms = jnp.where(probs > 0, probs * (log_probs - log_marginal[part]), 0)
    kl = segment_sum(jnp.sum(terms, axis=1)) / sizes  # [splits]
    scores = jnp.exp(kl)
    return InceptionScore(mean=jnp.mean(scores), std=jnp.std(scores))
