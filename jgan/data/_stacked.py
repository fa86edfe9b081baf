"""Stacked digits: three independent digits as the channels of one image (1,000 modes).

Stacked MNIST (Metz et al. 2017; Srivastava et al. 2017, VEEGAN) puts three
independently drawn MNIST digits into the three channels of one colour image,
so the data has ``10**3 = 1,000`` equally likely modes (triples of classes).
A generator's mode coverage is then counted by classifying each channel
(``jgan.metrics.classify_channels``, ``jgan.metrics.stacked_mode_coverage``).

``stacked_digits`` is an offline *analogue*, not the same data: its digits are
the 1,797 scikit-learn 8x8 digits (``jgan.data.digits``), upsampled, so it
runs with no network and fits in a jitted function; each channel draws a
class uniformly, then a digit of it, so the 1,000 modes are exactly equally
likely. ``stacked_mnist`` builds the real Stacked MNIST from TensorFlow
Datasets' MNIST, drawing digits uniformly as the papers do.

References:
  Metz et al., "Unrolled Generative Adversarial Networks", ICLR 2017, sec. 3.3.
  Srivastava et al., "VEEGAN: Reducing Mode Collapse in GANs using Implicit
  Variational Learning", NeurIPS 2017, sec. 5.2.
  Lin et al., "PacGAN: The power of two samples in generative adversarial
  networks", NeurIPS 2018, sec. 4.2.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jgan import _validate
from jgan.data._digits import NUM_CLASSES
from jgan.data._digits import SPLITS
from jgan.data._digits import digits
from jgan.data._tfds import _import_tfds

CHANNELS = 3  # digits per image: 10**3 modes
_MNIST_SPLITS = ("train", "test")


@functools.lru_cache(maxsize=8)
def _digit_pool(split: str, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The digits of ``split`` grouped by class, loaded once as numpy constants.

    Returns ``(images [m, s, s] float32, offsets [10] int32, counts [10]
    int32)``: the digits of class ``k`` are ``images[offsets[k] :
    offsets[k] + counts[k]]``.
    """
    images, labels = digits(split=split, image_size=image_size)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.int32)
    offsets = (np.cumsum(counts) - counts).astype(np.int32)
    pool = (images[order, ..., 0], offsets, counts)
    for array in pool:
        array.flags.writeable = False  # cached constants shared by every call
    return pool


# Compiled once per (n, pool shape), so eager calls cost one dispatch;
# inlined when the caller is itself under jax.jit.
@functools.partial(jax.jit, static_argnames="n")
def _draw(key: jax.Array, n: int, images: jax.Array, offsets: jax.Array, counts: jax.Array):
    """``n`` images whose channels are a uniform class, then a uniform digit of it."""
    class_key, digit_key = jax.random.split(key)
    labels = jax.random.randint(class_key, (n, CHANNELS), 0, NUM_CLASSES)  # [n, 3]
    within = jax.random.randint(digit_key, (n, CHANNELS), 0, counts[labels])  # [n, 3]
    stacked = jnp.moveaxis(images[offsets[labels] + within], 1, -1)  # [n, 3, s, s] -> [n, s, s, 3]
    return stacked, labels.astype(jnp.int32)


def stacked_digits(
    key: jax.Array, n: int, *, split: str = "train", image_size: int = 28
) -> tuple[jax.Array, jax.Array]:
    """Samples offline stacked digits: three independent digits as an image's channels.

    Each channel, independently of the others, draws a class uniformly and
    then a digit of that class uniformly from ``jgan.data.digits(split=split,
    image_size=image_size)``, so the 1,000 triples of classes are exactly
    equally likely (the real data's ``stacked_mode_coverage`` KL tends to 0).
    Drawing digits uniformly instead would inherit the split's class
    imbalance (127 to 161 digits per class in ``"train"``, 21 to 52 in
    ``"test"``). This is an offline analogue of Stacked MNIST, not the same
    data: the digits are scikit-learn's 1,797 8x8 digits upsampled (a train
    split of 1,438), not MNIST's 70,000 28x28 ones.

    Pure and jittable with ``n``, ``split`` and ``image_size`` static (bind
    them with ``functools.partial``); the digit pool is a constant loaded once.
    Under ``jax.jit`` only what is used is computed: taking just the labels
    skips the images.

    Args:
      key: a PRNG key.
      n: the number of images, a static int ``>= 1``.
      split: the digits drawn from, ``"train"``, ``"test"`` or ``"all"``.
      image_size: the side of the images, an int ``>= 8`` (28 as MNIST).

    Returns:
      ``(images, labels)``: float32 ``[n, image_size, image_size, 3]`` in
      ``[-1, 1]`` and int32 ``[n, 3]``, the class of each channel in channel
      order.

    Raises:
      ValueError: for an unknown ``split``, ``n < 1`` or ``image_size < 8``.
      TypeError: when ``n`` or ``image_size`` is not an int.

    References:
      Metz et al., "Unrolled Generative Adversarial Networks", ICLR 2017,
      sec. 3.3; Srivastava et al., "VEEGAN", NeurIPS 2017, sec. 5.2.
    """
    n = _validate.check_int(n, "n", minimum=1, static=True)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    image_size = _validate.check_int(image_size, "image_size", minimum=8, static=True)
    images, offsets, counts = _digit_pool(split, image_size)
    return _draw(key, n, jnp.asarray(images), jnp.asarray(offsets), jnp.asarray(counts))


def stacked_mnist(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    data_dir: str | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Builds Stacked MNIST: three independent MNIST digits as an image's channels.

    MNIST's ``split`` is read through TensorFlow Datasets into memory (every
    call reads it again: draw all the images you need in one call), then each
    image's three channel indices are drawn uniformly and independently with
    ``np.random.default_rng(seed)`` (three randomly sampled digits, as the
    papers describe), so the triples
    inherit MNIST's class frequencies (9.0 % to 11.2 % of the train split;
    their KL to uniform over 1,000 is about 0.004). Images are
    ``x / 127.5 - 1`` as in ``jgan.data.tfds_images``.

    jgan itself never downloads anything: ``download=True`` (tfds' default)
    lets ``tfds.load`` download and prepare MNIST when it is not yet in
    ``data_dir``; ``download=False`` only reads prepared data. Offline, use
    ``stacked_digits``. TensorFlow is imported only when this is called.

    Args:
      n: the number of images, an int ``>= 1``.
      seed: an int ``>= 0`` fixing the draw.
      split: ``"train"`` (60,000 digits) or ``"test"`` (10,000), optionally
        sliced (``"train[:10%]"``).
      data_dir: where tfds keeps its data (passed to ``tfds.load``).
      download: passed to ``tfds.load``.

    Returns:
      ``(images, labels)`` as numpy arrays: float32 ``[n, 28, 28, 3]`` in
      ``[-1, 1]`` and int32 ``[n, 3]``, the class of each channel.

    Raises:
      ValueError: for ``n < 1``, ``seed < 0`` or a split that is not MNIST's.
      TypeError: when ``n`` or ``seed`` is not an int or ``download`` not a bool.
      ImportError: when tensorflow-datasets is not installed.

    References:
      Metz et al., "Unrolled Generative Adversarial Networks", ICLR 2017,
      sec. 3.3; Srivastava et al., "VEEGAN", NeurIPS 2017, sec. 5.2.
    """
    n = _validate.check_int(n, "n", minimum=1)
    seed = _validate.check_int(seed, "seed", minimum=0)
    download = _validate.check_bool(download, "download")
    if str(split).partition("[")[0] not in _MNIST_SPLITS:
        raise ValueError(
            f"split must be MNIST's 'train' or 'test' (optionally sliced, e.g. "
            f"'train[:10%]'), got {split!r}."
        )
    _, tfds = _import_tfds()
    ds = tfds.load("mnist", split=split, data_dir=data_dir, download=download)
    batches = list(tfds.as_numpy(ds.batch(10_000)))  # the split, in memory (47 MB for train)
    if not batches:
        raise ValueError(f"split {split!r} of MNIST holds no images.")
    pool_images = np.concatenate([b["image"][..., 0] for b in batches])  # [m, 28, 28] uint8
    pool_labels = np.concatenate([b["label"] for b in batches]).astype(np.int32)  # [m]
    index = np.random.default_rng(seed).integers(0, len(pool_labels), size=(n, CHANNELS))
    images = np.moveaxis(pool_images[index], 1, -1)  # [n, 3, 28, 28] -> [n, 28, 28, 3]
    images = np.clip(images.astype(np.float32) / 127.5 - 1.0, -1.0, 1.0)
    return images, pool_labels[index]  # [n, 3]
