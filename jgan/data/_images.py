"""One entry point for the image datasets: offline digits and the tfds sets.

``image_dataset(name, ...)`` serves ``"digits"`` (offline, through
``array_batches``), the labelled tfds sets (``"mnist"``, ``"fashion_mnist"``,
``"cifar10"``) and the unlabelled LSUN church-outdoor scenes
(``"lsun/church_outdoor"``, ``"x"`` only), through ``tfds_images``, and the unpaired CycleGAN sets
(``"cycle_gan/horse2zebra"``, ..., through ``tfds_unpaired_images``) with one
signature, so a program can take ``--dataset digits|mnist|fashion_mnist|cifar10``
and still run with no network on ``digits``. ``image_dataset_spec`` tells the
image shape and the number of classes before any data is read, to build the
networks.
"""

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from jgan import _validate
from jgan.data._digits import NUM_CLASSES as _DIGITS_CLASSES
from jgan.data._digits import digits
from jgan.data._pipeline import array_batches
from jgan.data._tfds import CYCLE_GAN_IMAGE_SIZE
from jgan.data._tfds import LABELLED_DATASETS
from jgan.data._tfds import UNLABELLED_DATASETS
from jgan.data._tfds import UNLABELLED_IMAGE_SIZE
from jgan.data._tfds import UNPAIRED_DATASETS
from jgan.data._tfds import tfds_images
from jgan.data._tfds import tfds_unpaired_images

_DIGITS_IMAGE_SIZE = 32  # the default of ``digits``
IMAGE_DATASETS = ("digits",) + tuple(LABELLED_DATASETS) + tuple(UNLABELLED_DATASETS) + UNPAIRED_DATASETS


class ImageDatasetSpec(NamedTuple):
    """What a named image dataset yields.

    Attributes:
      name: the dataset's name.
      image_shape: ``(height, width, channels)`` of the yielded images.
      num_classes: the number of labels, ``None`` for unlabelled and
        unpaired datasets.
      keys: the keys of every batch: ``("x", "label")``, ``("x",)`` for
        unlabelled datasets (LSUN), or ``("a", "b")`` for unpaired datasets.
      offline: whether the data ships with jgan's dependencies (no tfds).
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int | None
    keys: tuple[str, ...]
    offline: bool


def _check_name(name: object) -> str:
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; supported: {list(IMAGE_DATASETS)}.")
    return name  # type: ignore[return-value]


def image_dataset_spec(name: str, *, image_size: int | None = None) -> ImageDatasetSpec:
    """Describes what ``image_dataset(name, image_size=...)`` yields, without reading data.

    Args:
      name: one of ``IMAGE_DATASETS``.
      image_size: as given to ``image_dataset``.

    Returns:
      An ``ImageDatasetSpec``.

    Raises:
      ValueError: for an unknown ``name`` (the message lists the supported ones).
      TypeError: when ``image_size`` is neither None nor an int.
    """
    name = _check_name(name)
    if image_size is not None:
        image_size = _validate.check_int(image_size, "image_size", minimum=1)
    if name == "digits":
        side = image_size or _DIGITS_IMAGE_SIZE
        return ImageDatasetSpec(name, (side, side, 1), _DIGITS_CLASSES, ("x", "label"), True)
    if name in LABELLED_DATASETS:
        height, width, channels, classes = LABELLED_DATASETS[name]
        shape = (image_size, image_size, channels) if image_size else (height, width, channels)
        return ImageDatasetSpec(name, shape, classes, ("x", "label"), False)
    if name in UNLABELLED_DATASETS:
        side = image_size or UNLABELLED_IMAGE_SIZE
        return ImageDatasetSpec(name, (side, side, UNLABELLED_DATASETS[name]), None, ("x",), False)
    side = image_size or CYCLE_GAN_IMAGE_SIZE
    return ImageDatasetSpec(name, (side, side, 3), None, ("a", "b"), False)


def image_dataset(
    name: str,
    *,
    split: str,
    batch_size: int,
    seed: int,
    image_size: int | None = None,
    shuffle: bool = True,
    repeat: bool = True,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    devices: int | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Iterates over batches of a named image dataset, scaled to ``[-1, 1]``.

    ``"digits"`` needs no network (scikit-learn's bundled digits, see
    ``digits``); every other name goes through ``tfds.load``, which downloads
    the data when it is missing from ``data_dir`` and ``download=True`` (jgan
    downloads nothing itself). See ``array_batches`` and ``tfds_images`` for
    how batches are shuffled and split across processes: in both,
    ``batch_size`` is the global batch size and each process gets an equal,
    disjoint share.

    Args:
      name: one of ``IMAGE_DATASETS``: ``"digits"``, ``"mnist"``,
        ``"fashion_mnist"``, ``"cifar10"``, ``"lsun/church_outdoor"`` or
        ``"cycle_gan/<config>"``.
      split: ``"train"`` or ``"test"`` (``"all"`` too for digits; any tfds
        split such as ``"train[:90%]"`` for the tfds sets; LSUN has
        ``"train"`` and ``"validation"``).
      batch_size: the global batch size.
      seed: an int ``>= 0`` fixing the order of the examples (and the crops).
      image_size: the side of the square images; ``None`` is the dataset's
        own size (32 for digits, 28 for (Fashion-)MNIST, 32 for CIFAR-10,
        64 for LSUN, whose images are resized on the shorter side and
        centre-cropped, 256 for CycleGAN).
      shuffle: shuffle the examples, anew every epoch.
      repeat: repeat forever.
      drop_remainder: yield full batches only.
      process_index: this process; defaults to ``jax.process_index()``.
      process_count: the number of processes; defaults to ``jax.process_count()``.
      devices: when given, each batch is reshaped to ``[devices, b / devices, ...]``
        for ``jax.pmap``.
      data_dir: tfds' data directory (ignored for digits).
      download: passed to ``tfds.load`` (ignored for digits).

    Returns:
      An iterator of numpy dicts with the keys of ``image_dataset_spec(name).keys``:
      float32 images ``[b, h, w, c]`` in ``[-1, 1]`` and int32 labels ``[b]``
      (none for LSUN) with ``b = batch_size / process_count`` (``[devices, b / devices, ...]``
      with ``devices``).

    Raises:
      ValueError: for an unknown ``name`` (the message lists the supported
        ones) or a batch size that does not divide across processes and devices.
      TypeError: when ``batch_size``, ``seed``, ``image_size``,
        ``process_index``, ``process_count`` or ``devices`` is not an int, or
        ``shuffle``, ``repeat`` or ``drop_remainder`` is not a bool.
    """
    name = _check_name(name)
    common = {
        "batch_size": batch_size,
        "seed": seed,
        "shuffle": shuffle,
        "repeat": repeat,
        "drop_remainder": drop_remainder,
        "process_index": process_index,
        "process_count": process_count,
        "devices": devices,
    }
    if name == "digits":
        size = _DIGITS_IMAGE_SIZE if image_size is None else image_size
        return array_batches(digits(split=split, image_size=size), **common)
    if name in LABELLED_DATASETS or name in UNLABELLED_DATASETS:
        return tfds_images(name, split=split, image_size=image_size, data_dir=data_dir,
                           download=download, **common)
    size = CYCLE_GAN_IMAGE_SIZE if image_size is None else image_size
    return tfds_unpaired_images(name, split=split, image_size=size, data_dir=data_dir,
                                download=download, **common)
