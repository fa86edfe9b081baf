"""Mode counting on stacked digits (Stacked MNIST): modes and KL of the class triples."""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgan import _validate


class StackedModes(NamedTuple):
    """The result of ``stacked_mode_coverage``.

    Attributes:
      modes: the number of distinct predicted class tuples (modes captured),
        an int32 scalar in ``[1, num_classes**channels]`` (0 only under
        ``jax.jit`` when no prediction is a valid class).
      kl: ``KL(p || uniform)`` of the tuples' histogram ``p`` over all
        ``num_classes**channels`` tuples, natural log, a float32 scalar in
        ``[0, channels * log(num_classes)]``.
      histogram: the number of samples predicted as each tuple, int32
        ``[num_classes**channels]``, indexed by the base-``num_classes``
        number whose most significant digit is channel 0.
    """

    modes: jax.Array  # [] int32
    kl: jax.Array  # [] float32
    histogram: jax.Array  # [num_classes**channels] int32


def stacked_mode_coverage(predictions: jax.typing.ArrayLike, *, num_classes: int = 10) -> StackedModes:
    """Counts the modes of stacked digits from the predicted class of each channel.

    The tuple of a sample's predicted classes is its mode (1,000 modes for
    three channels of ten digits). ``modes`` is the number of distinct tuples
    among the samples and

        KL(p || u) = sum_t p_t log(p_t / u_t),   u_t = num_classes**-channels,
                                                 0 log 0 = 0,

    where ``p`` is the tuples' normalised histogram: 0 for samples spread
    evenly over every mode, ``channels * log(num_classes)`` for a total
    collapse onto one. Every sample counts (the classifier's confidence is
    not thresholded, as in Metz et al. and VEEGAN).

    Works under ``jax.jit``. Classes outside ``[0, num_classes)`` raise an
    error in eager calls; under ``jax.jit`` they cannot be checked and are
    left out of the histogram, so ``modes`` and ``kl`` then describe only the
    samples in range (``kl = channels * log(num_classes)`` if none is).

    Args:
      predictions: the class predicted for each channel, integer ``[n, channels]``
        (e.g. from ``classify_channels``).
      num_classes: the number of classes per channel, a static int ``>= 1``.

    Returns:
      A ``StackedModes`` with ``modes``, ``kl`` and ``histogram``.

    Raises:
      ValueError: if ``predictions`` is not ``[n, channels]`` with ``n >= 1``
        and ``channels >= 1``, not integer, or (eager calls) holds a class
        outside ``[0, num_classes)``.
      TypeError: if ``num_classes`` is not an int.

    References:
      Metz et al., "Unrolled Generative Adversarial Networks", ICLR 2017,
      sec. 3.3, Table 2 (modes and KL on Stacked MNIST, 25,600 samples).
      Srivastava et al., "VEEGAN", NeurIPS 2017, sec. 5.2, Table 2 (26,000
      samples).
    """
    num_classes = _validate.check_int(num_classes, "num_classes", minimum=1, static=True)
    predictions = jnp.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be [n, channels], got shape {predictions.shape}.")
    if not jnp.issubdtype(predictions.dtype, jnp.integer):
        raise ValueError(f"predictions must hold integer classes, got dtype {predictions.dtype}.")
    n, channels = predictions.shape
    if n < 1 or channels < 1:
        raise ValueError(
            f"predictions must hold at least one sample and one channel, got shape {predictions.shape}."
        )
    if num_classes**channels > np.iinfo(np.int32).max:
        raise ValueError(
            f"num_classes**channels = {num_classes}**{channels} tuples do not fit an int32 index."
        )
    low = _validate.concrete_float(jnp.min(predictions))  # None when traced
    high = _validate.concrete_float(jnp.max(predictions))
    if low is not None and (low < 0 or high >= num_classes):
        raise ValueError(
            f"predictions must be classes in [0, {num_classes}), got values in [{low:.0f}, {high:.0f}]."
        )
    return _stacked_mode_coverage(predictions.astype(jnp.int32), num_classes)


# Compiled once per shape, so eager calls cost one dispatch; inlined when the
# caller is itself under jax.jit.
@functools.partial(jax.jit, static_argnames="num_classes")
def _stacked_mode_coverage(predictions: jax.Array, num_classes: int) -> StackedModes:
    """The counts on validated int32 ``[n, channels]`` predictions."""
    channels = predictions.shape[1]
    num_modes = num_classes**channels
    place = num_classes ** jnp.arange(channels - 1, -1, -1, dtype=jnp.int32)  # channel 0 most significant
    in_range = jnp.all((predictions >= 0) & (predictions < num_classes), axis=1)  # [n]
    tuples = jnp.where(in_range, predictions @ place, num_modes)  # out of range -> dropped by length
    histogram = jnp.bincount(tuples, length=num_modes).astype(jnp.int32)
    modes = jnp.sum(histogram > 0).astype(jnp.int32)

    p = histogram.astype(jnp.float32) / jnp.maximum(jnp.sum(histogram), 1).astype(jnp.float32)
    # 0 log 0 = 0; the inner where keeps log away from 0.
    terms = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p * num_modes, 1.0)), 0.0)
    log_m = math.log(num_modes)
    # Rounding can leave the sum a hair outside [0, log M]; with no sample in
    # range (possible only under jit) p is undefined: log M, as for a collapse.
    kl = jnp.where(modes > 0, jnp.clip(jnp.sum(terms), 0.0, log_m), log_m)
    return StackedModes(modes=modes, kl=kl, histogram=histogram)


def classify_channels(
    classify: Callable[[jax.Array], jax.Array], images: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """Classifies every channel of a batch of images with a single-channel classifier.

    The ``[n, h, w, c]`` images are reshaped to ``n * c`` single-channel
    images ``[n * c, h, w, 1]`` and classified in one call. A classifier
    loaded with ``jgan.models.load_classifier`` returns ``(features, probs)``
    through ``make_classifier_fn``; adapt it with ``[1]``::

        module, params, _ = jgan.models.load_classifier(path)
        fn = jgan.models.make_classifier_fn(module, params)
        predictions, confidence = classify_channels(lambda x: fn(x)[1], images)
        result = stacked_mode_coverage(predictions)

    Works under ``jax.jit`` when ``classify`` does.

    Args:
      classify: ``classify(x [m, h, w, 1]) -> probabilities [m, num_classes]``.
      images: ``[n, h, w, c]``, e.g. generated stacked digits (``c = 3``).

    Returns:
      ``(predictions, confidence)``: the most probable class of each channel,
      int32 ``[n, c]``, and its probability, float32 ``[n, c]``.

    Raises:
      TypeError: if ``classify`` is not callable.
      ValueError: if ``images`` is not ``[n, h, w, c]`` or ``classify``
        does not return ``[n * c, num_classes]``.
    """
    _validate.check_callable(classify, "classify", "(x [m, h, w, 1]) -> probabilities [m, num_classes]")
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be [n, height, width, channels], got shape {images.shape}.")
    n, height, width, channels = images.shape
    single = jnp.moveaxis(images, -1, 1).reshape(n * channels, height, width, 1)  # channel-major per image
    probs = jnp.asarray(classify(single))
    if probs.ndim != 2 or probs.shape[0] != n * channels:
        raise ValueError(
            f"classify must return probabilities [{n * channels}, num_classes] for "
            f"{n * channels} single-channel images, got shape {probs.shape}."
        )
    predictions = jnp.argmax(probs, axis=-1).astype(jnp.int32).reshape(n, channels)
    confidence = jnp.max(probs, axis=-1).astype(jnp.float32).reshape(n, channels)
    return predictions, confidence
