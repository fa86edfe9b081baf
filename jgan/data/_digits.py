"""An offline image dataset: scikit-learn's bundled 8x8 handwritten digits.

scikit-learn ships the test set of the UCI "Optical Recognition of Handwritten
Digits" data (1,797 grey-scale 8x8 images, 10 classes, intensities 0..16)
inside its wheel, so it loads with no network. ``digits`` upsamples the images
bilinearly to an MNIST-like size and scales them to ``[-1, 1]``, the range of a
``tanh`` generator, so every image example and test runs offline.

The train/test split is fixed and needs no randomness: every fifth image
(index ``i % 5 == 4``) is a test image, the rest are training images.

References:
  Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI
  Machine Learning Repository, 1998 (``sklearn.datasets.load_digits``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jgan import _validate

SPLITS = ("train", "test", "all")
NUM_CLASSES = 10
_MAX_INTENSITY = 16.0


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # imported lazily: only this loader needs it

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int32)


@functools.partial(jax.jit, static_argnames=("image_size",))
def _upsample(images: jax.Array, image_size: int) -> jax.Array:
    n = images.shape[0]
    resized = jax.image.resize(images, (n, image_size, image_size), method="bilinear")
    return jnp.clip(resized / _MAX_INTENSITY * 2.0 - 1.0, -1.0, 1.0)[..., None]


def digits(*, split: str = "train", image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Loads the bundled handwritten digits as an image classification dataset.

    Args:
      split: ``"train"`` (1,438 images), ``"test"`` (359 images) or ``"all"``
        (1,797 images); the split is fixed (see the module docstring).
      image_size: the side of the square output images, ``>= 8`` (8 keeps
        the original pixels; 28 is MNIST's size, 32 DCGAN's smallest).

    Returns:
      ``(images, labels)``: float32 images ``[n, image_size, image_size, 1]``
      in ``[-1, 1]`` and int32 labels ``[n]`` in ``[0, 10)``, as numpy
      arrays, in a fixed order.

    Raises:
      ValueError: for an unknown split or an image size below 8.
      TypeError: for an image size that is not an int.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    image_size = _validate.check_int(image_size, "image_size", minimum=8)
    images, labels = _raw_digits()
    index = np.arange(len(labels))
    if split == "train":
        index = index[index % 5 != 4]
    elif split == "test":
        index = index[index % 5 == 4]
    # Concrete even when called while tracing (e.g. a sampler's first call under jax.jit).
    with jax.ensure_compile_time_eval():
        upsampled = np.asarray(_upsample(jnp.asarray(images[index]), image_size))
    return upsampled, labels[index].copy()
