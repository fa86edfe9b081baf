"""Image pipelines over TensorFlow Datasets (tfds): MNIST, Fashion-MNIST, CIFAR-10, CycleGAN.

``tfds_images`` serves the labelled sets (``"mnist"``, ``"fashion_mnist"``,
``"cifar10"``) as ``{"x": images, "label": labels}`` batches and
``tfds_unpaired_images`` the unpaired CycleGAN sets (``"cycle_gan/horse2zebra"``
and the other configs of tfds' ``cycle_gan`` builder) as
``{"a": images_A, "b": images_B}`` batches. Both yield numpy arrays: float32
NHWC images in ``[-1, 1]`` (``x / 127.5 - 1``), int32 labels.

The pipeline is a ``tf.data`` graph: ``tfds.load`` (files shuffled with a seed)
-> ``shuffle`` (a buffer, reshuffled every epoch, seeded) -> ``repeat`` ->
decode, resize, rescale -> ``batch`` -> ``prefetch`` (``tf.data.AUTOTUNE``,
on TensorFlow's own threads) -> ``tfds.as_numpy``. Unlike ``array_batches``,
batches may straddle epochs (nothing is dropped between epochs).

Multi-host training. ``batch_size`` is the *global* batch size. Each process
reads its own disjoint, equal-sized slice of the data,
``tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]``
(what ``tfds.split_for_jax_process`` does), and batches
``batch_size / process_count`` examples of it, so the processes' batches
together form a global batch.

Downloads. jgan itself never downloads anything: ``download=True`` (tfds'
default) lets ``tfds.load`` download and prepare a dataset that is not yet in
``data_dir`` (``~/tensorflow_datasets`` by default) when you call these
functions; ``download=False`` only reads prepared data and fails if it is
missing. Offline, use ``digits`` (``image_dataset("digits", ...)``).

TensorFlow and tfds are imported only when a pipeline is built (``import
jgan.data`` stays light), and TensorFlow is kept off the GPUs
(``tf.config.set_visible_devices([], "GPU")``) so that it never takes
accelerator memory from JAX. Install them with ``pip install 'jgan[data]'``.

References:
  LeCun et al., "Gradient-based learning applied to document recognition",
  1998 (MNIST); Xiao et al., "Fashion-MNIST", 2017; Krizhevsky, "Learning
  Multiple Layers of Features from Tiny Images", 2009 (CIFAR-10); Zhu et al.,
  "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
  Networks", ICCV 2017, sec. 4 and appendix 7.1 (CycleGAN's sets; resize to
  286, random 256 crop, random horizontal flip).
"""

from collections.abc import Iterator
from typing import Any

import numpy as np

from jgan import _validate
from jgan.data._pipeline import local_batch_size
from jgan.data._pipeline import resolve_process
from jgan.data._pipeline import shard_for_devices

# name -> (height, width, channels, classes) at the native resolution.
LABELLED_DATASETS = {
    "mnist": (28, 28, 1, 10),
    "fashion_mnist": (28, 28, 1, 10),
    "cifar10": (32, 32, 3, 10),
}
# The configs of tfds' ``cycle_gan`` builder (tensorflow-datasets 4.9).
CYCLE_GAN_CONFIGS = (
    "apple2orange",
    "summer2winter_yosemite",
    "horse2zebra",
    "monet2photo",
    "cezanne2photo",
    "ukiyoe2photo",
    "vangogh2photo",
    "maps",
    "facades",
    "iphone2dslr_flower",
)
UNPAIRED_DATASETS = tuple(f"cycle_gan/{config}" for config in CYCLE_GAN_CONFIGS)
CYCLE_GAN_IMAGE_SIZE = 256  # the native size of every cycle_gan config
_UNPAIRED_SPLITS = ("train", "test")


def _import_tfds():
    """Imports TensorFlow (kept off the GPUs) and tfds, with an install hint."""
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "the tfds pipelines need tensorflow and tensorflow-datasets: "
            "pip install 'jgan[data]' (or use the offline 'digits' dataset)."
        ) from error
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices were already initialised by the caller
        pass
    return tf, tfds


def _derive_seed(seed: int, stream: int) -> int:
    """An independent 31-bit seed for one random stream of the pipeline."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0] >> 1)


def _check_image_size(image_size: Any, what: str = "image_size") -> int | None:
    if image_size is None:
        return None
    return _validate.check_int(image_size, what, minimum=1)


def _check_labelled_name(name: Any) -> str:
    if name not in LABELLED_DATASETS:
        hint = " (unpaired: use tfds_unpaired_images)" if name in UNPAIRED_DATASETS else ""
        raise ValueError(
            f"unsupported tfds dataset {name!r}{hint}; tfds_images supports "
            f"{sorted(LABELLED_DATASETS)}."
        )
    return name


def _check_unpaired_name(name: Any) -> str:
    if name not in UNPAIRED_DATASETS:
        raise ValueError(
            f"unsupported unpaired dataset {name!r}; tfds_unpaired_images supports "
            f"{list(UNPAIRED_DATASETS)}."
        )
    return name


def _process_split(tfds, split: Any, index: int, count: int) -> Any:
    """This process's equal, disjoint slice of ``split``."""
    if count == 1:
        return split
    return tfds.even_splits(split, n=count, drop_remainder=True)[index]


def _check_flags(**flags: Any) -> tuple[bool, ...]:
    """Each flag as a bool, in order; a ``TypeError`` naming the first that is not one."""
    return tuple(_validate.check_bool(value, name) for name, value in flags.items())


def _load(tfds, name, split, *, shuffle, seed, data_dir, download):
    return tfds.load(
        name,
        split=split,
        data_dir=data_dir,
        download=download,
        shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )


def _rescale(tf, image):
    """uint8 ``0..255`` (or a float resize of it) to float32 ``[-1, 1]``."""
    return tf.clip_by_value(tf.cast(image, tf.float32) / 127.5 - 1.0, -1.0, 1.0)


def _resize(tf, image, size: int):
    # Antialiased bilinear resizing is a convex combination: no overshoot.
    return tf.image.resize(image, (size, size), method="bilinear", antialias=True)


def _numpy_batches(tfds, ds, devices: int | None) -> Iterator[dict[str, np.ndarray]]:
    for batch in tfds.as_numpy(ds):
        yield batch if devices is None else shard_for_devices(batch, devices)


def tfds_images(
    name: str,
    *,
    split: str,
    batch_size: int,
    seed: int,
    image_size: int | None = None,
    shuffle: bool = True,
    repeat: bool = True,
    drop_remainder: bool = True,
    shuffle_buffer: int = 10_000,
    process_index: int | None = None,
    process_count: int | None = None,
    devices: int | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Iterates over batches of a labelled tfds image dataset.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
      split: a tfds split, e.g. ``"train"``, ``"test"`` or ``"train[:90%]"``.
      batch_size: the global batch size, divisible by ``process_count`` (and
        the per-process batch by ``devices``).
      seed: an int ``>= 0`` fixing the file order and the shuffle buffer.
      image_size: resize to ``image_size x image_size`` (antialiased
        bilinear); ``None`` keeps the native size (28 for MNIST and
        Fashion-MNIST, 32 for CIFAR-10).
      shuffle: shuffle the files and the examples (reshuffled every epoch).
      repeat: repeat the data forever.
      drop_remainder: drop a last batch smaller than ``batch_size / process_count``.
      shuffle_buffer: the size of the example shuffle buffer.
      process_index: this process; defaults to ``jax.process_index()``.
      process_count: the number of processes; defaults to ``jax.process_count()``.
      devices: when given, each batch is reshaped to ``[devices, b / devices, ...]``
        for ``jax.pmap``.
      data_dir: where tfds keeps its data (passed to ``tfds.load``).
      download: passed to ``tfds.load``: download and prepare the dataset
        when it is missing (the tfds default); jgan downloads nothing itself.

    Returns:
      An iterator of dicts: ``"x"``, float32 ``[b, height, width, channels]``
      in ``[-1, 1]``, and ``"label"``, int32 ``[b]``, with
      ``b = batch_size / process_count`` (or ``[devices, b / devices, ...]``).

    Raises:
      ValueError: for an unsupported ``name`` (the message lists the
        supported ones) or a batch size that does not divide across
        processes and devices.
      TypeError: when ``batch_size``, ``seed``, ``image_size``,
        ``shuffle_buffer``, ``process_index``, ``process_count`` or
        ``devices`` is not an int, or ``shuffle``, ``repeat``,
        ``drop_remainder`` or ``download`` is not a bool.
      ImportError: when tensorflow-datasets is not installed.
    """
    name = _check_labelled_name(name)
    shuffle, repeat, drop_remainder, download = _check_flags(
        shuffle=shuffle, repeat=repeat, drop_remainder=drop_remainder, download=download
    )
    image_size = _check_image_size(image_size)
    seed = _validate.check_int(seed, "seed", minimum=0)
    shuffle_buffer = _validate.check_int(shuffle_buffer, "shuffle_buffer", minimum=1)
    index, count = resolve_process(process_index, process_count)
    local = local_batch_size(batch_size, count, devices)
    tf, tfds = _import_tfds()

    ds = _load(tfds, name, _process_split(tfds, split, index, count), shuffle=shuffle,
               seed=_derive_seed(seed, 0), data_dir=data_dir, download=download)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=_derive_seed(seed, 1), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def preprocess(example):
        image = example["image"]
        if image_size is not None:
            image = _resize(tf, image, image_size)
        return {"x": _rescale(tf, image), "label": tf.cast(example["label"], tf.int32)}

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    return _numpy_batches(tfds, ds, devices)


def _domain_split(split: Any, domain: str) -> str:
    """``"train"`` -> ``"trainA"``, ``"test[:10]"`` -> ``"testA[:10]"``."""
    base, bracket, rest = str(split).partition("[")
    if base not in _UNPAIRED_SPLITS:
        raise ValueError(
            f"unpaired datasets take split 'train' or 'test' (optionally sliced, "
            f"e.g. 'train[:50%]'), got {split!r}."
        )
    return f"{base}{domain}{bracket}{rest}"


def tfds_unpaired_images(
    name: str,
    *,
    split: str,
    batch_size: int,
    seed: int,
    image_size: int = CYCLE_GAN_IMAGE_SIZE,
    load_size: int | None = None,
    random_flip: bool = False,
    shuffle: bool = True,
    repeat: bool = True,
    drop_remainder: bool = True,
    shuffle_buffer: int = 1_000,
    process_index: int | None = None,
    process_count: int | None = None,
    devices: int | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Iterates over batches of an unpaired CycleGAN dataset: images of domain A and of B.

    The two domains are read, shuffled (with independent seeds) and repeated
    independently and then zipped: example ``i`` of ``"a"`` and of ``"b"`` are
    unrelated. With ``repeat=False`` the iterator stops when the smaller
    domain runs out.

    Args:
      name: ``"cycle_gan/<config>"``, e.g. ``"cycle_gan/horse2zebra"`` (see
        ``UNPAIRED_DATASETS``).
      split: ``"train"`` (tfds splits ``trainA`` and ``trainB``) or
        ``"test"`` (``testA``, ``testB``), optionally sliced (``"train[:50%]"``).
      batch_size: the global batch size, divisible by ``process_count`` (and
        the per-process batch by ``devices``).
      seed: an int ``>= 0`` fixing the shuffles, crops and flips.
      image_size: the side of the square output images.
      load_size: when given (``>= image_size``), resize to ``load_size`` first
        and take a random ``image_size`` crop (CycleGAN: 286 then 256);
        ``None`` resizes straight to ``image_size``.
      random_flip: flip each image horizontally with probability 1/2.
      shuffle: shuffle the files and the examples (reshuffled every epoch).
      repeat: repeat each domain forever.
      drop_remainder: drop a last batch smaller than ``batch_size / process_count``.
      shuffle_buffer: the size of each domain's shuffle buffer.
      process_index: this process; defaults to ``jax.process_index()``.
      process_count: the number of processes; defaults to ``jax.process_count()``.
      devices: when given, each batch is reshaped to ``[devices, b / devices, ...]``.
      data_dir: where tfds keeps its data (passed to ``tfds.load``).
      download: passed to ``tfds.load`` (see ``tfds_images``).

    Returns:
      An iterator of dicts ``{"a": images_A, "b": images_B}``, each float32
      ``[b, image_size, image_size, 3]`` in ``[-1, 1]`` with
      ``b = batch_size / process_count`` (or ``[devices, b / devices, ...]``).

    Raises:
      ValueError: for an unsupported ``name`` or ``split``, ``load_size <
        image_size``, or a batch size that does not divide across
        processes and devices.
      TypeError: when ``batch_size``, ``seed``, ``image_size``,
        ``load_size``, ``shuffle_buffer``, ``process_index``,
        ``process_count`` or ``devices`` is not an int, or ``random_flip``,
        ``shuffle``, ``repeat``, ``drop_remainder`` or ``download`` is not
        a bool.
      ImportError: when tensorflow-datasets is not installed.

    References:
      Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent
      Adversarial Networks", ICCV 2017, appendix 7.1.
    """
    name = _check_unpaired_name(name)
    random_flip, shuffle, repeat, drop_remainder, download = _check_flags(
        random_flip=random_flip, shuffle=shuffle, repeat=repeat,
        drop_remainder=drop_remainder, download=download,
    )
    splits = {domain: _domain_split(split, domain.upper()) for domain in ("a", "b")}
    image_size = _check_image_size(image_size)
    if image_size is None:
        raise ValueError("image_size must be an int >= 1 for unpaired datasets, got None.")
    load_size = _check_image_size(load_size, "load_size")
    if load_size is not None and load_size < image_size:
        raise ValueError(f"load_size ({load_size}) must be >= image_size ({image_size}).")
    seed = _validate.check_int(seed, "seed", minimum=0)
    shuffle_buffer = _validate.check_int(shuffle_buffer, "shuffle_buffer", minimum=1)
    index, count = resolve_process(process_index, process_count)
    local = local_batch_size(batch_size, count, devices)
    tf, tfds = _import_tfds()

    def domain(stream: int, domain_split: str):
        ds = _load(tfds, name, _process_split(tfds, domain_split, index, count), shuffle=shuffle,
                   seed=_derive_seed(seed, 4 * stream), data_dir=data_dir, download=download)
        if shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=_derive_seed(seed, 4 * stream + 1),
                            reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        crop_seed = _derive_seed(seed, 4 * stream + 2)
        flip_seed = _derive_seed(seed, 4 * stream + 3)

        def preprocess(i, example):
            image = _resize(tf, example["image"], load_size or image_size)
            if load_size is not None and load_size > image_size:
                seed_i = tf.stack([tf.constant(crop_seed, tf.int64), i])
                image = tf.image.stateless_random_crop(image, (image_size, image_size, 3),
                                                       seed=seed_i)
            if random_flip:
                seed_i = tf.stack([tf.constant(flip_seed, tf.int64), i])
                image = tf.image.stateless_random_flip_left_right(image, seed=seed_i)
            return _rescale(tf, image)

        return ds.enumerate().map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)

    ds = tf.data.Dataset.zip({"a": domain(0, splits["a"]), "b": domain(1, splits["b"])})
    ds = ds.batch(local, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    return _numpy_batches(tfds, ds, devices)
