"""Image pipelines over TensorFlow Datasets (tfds): MNIST, Fashion-MNIST, CIFAR-10, LSUN, CycleGAN.

``tfds_images`` serves the labelled sets (``"mnist"``, ``"fashion_mnist"``,
``"cifar10"``) as ``{"x": images, "label": labels}`` batches and the unlabelled
LSUN church-outdoor scenes (``"lsun/church_outdoor"``) as ``{"x": images}``
batches; ``tfds_unpaired_images`` the unpaired CycleGAN sets
(``"cycle_gan/horse2zebra"`` and the other configs of tfds' ``cycle_gan``
builder) as ``{"a": images_A, "b": images_B}`` batches. All yield numpy
arrays: float32 NHWC images in ``[-1, 1]`` (``x / 127.5 - 1``), int32 labels.

LSUN's photographs vary in size (about 256 pixels on the shorter side): each
is resized so that its shorter side is ``image_size`` (antialiased bilinear)
and its centre ``image_size x image_size`` square is kept, as the DCGAN
reference code's LSUN loader does (the paper itself only states the scaling
to ``[-1, 1]``). This is done before the shuffle buffer, so the buffer holds
small float32 crops (``shuffle_buffer * image_size**2 * 12`` bytes: 490 MB
for the default buffer at 64) rather than decoded photographs.

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

LSUN church-outdoor is large: tfds downloads 2.4 GB (126,227 training images,
300 validation images) and converts it once into ``data_dir``. tfds' LSUN
builder reads LSUN's LMDB files with ``tensorflow-io``, whose last release
(0.37.1) is built against TensorFlow 2.16 and does not load in later
TensorFlows: prepare the dataset once in an environment with TensorFlow 2.16
and tensorflow-io 0.37.1 (``tfds build lsun/church_outdoor``) and point
``data_dir`` (or ``TFDS_DATA_DIR``) at the result; reading prepared data
needs no tensorflow-io.

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
  286, random 256 crop, random horizontal flip); Yu et al., "LSUN:
  Construction of a Large-scale Image Dataset using Deep Learning with Humans
  in the Loop", 2015; Radford, Metz & Chintala, "Unsupervised Representation
  Learning with Deep Convolutional Generative Adversarial Networks", ICLR
  2016, sec. 4.1 (LSUN bedrooms and churches at 64x64).
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
# name -> channels of the unlabelled sets whose images vary in size (served
# resized on the shorter side and centre-cropped, "x" only).
UNLABELLED_DATASETS = {
    "lsun/church_outdoor": 3,
}
UNLABELLED_IMAGE_SIZE = 64  # the default side of the unlabelled sets (the DCGAN paper's)
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


def _check_single_name(name: Any) -> str:
    if name not in LABELLED_DATASETS and name not in UNLABELLED_DATASETS:
        hint = " (unpaired: use tfds_unpaired_images)" if name in UNPAIRED_DATASETS else ""
        raise ValueError(
            f"unsupported tfds dataset {name!r}{hint}; tfds_images supports "
            f"{sorted(LABELLED_DATASETS) + sorted(UNLABELLED_DATASETS)}."
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
    try:
        return tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=download,
            shuffle_files=shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
    except (ImportError, NotImplementedError) as error:
        # tfds' LSUN builder reads the downloaded LMDB files with tensorflow-io.
        if "tensorflow_io" not in str(error):
            raise
        raise ImportError(
            f"preparing {name!r} needs tensorflow-io, which is missing or does not load in this "
            f"TensorFlow ({error}). Prepare it once where TensorFlow 2.16 and tensorflow-io 0.37.1 "
            f"are installed (tfds build {name} --data_dir DIR; the download is kept in DIR) and "
            f"read it here with data_dir=DIR (or TFDS_DATA_DIR=DIR)."
        ) from error


def _rescale(tf, image):
    """uint8 ``0..255`` (or a float resize of it) to float32 ``[-1, 1]``."""
    return tf.clip_by_value(tf.cast(image, tf.float32) / 127.5 - 1.0, -1.0, 1.0)


def _resize(tf, image, size: int):
    # Antialiased bilinear resizing is a convex combination: no overshoot.
    return tf.image.resize(image, (size, size), method="bilinear", antialias=True)


def _resize_and_center_crop(tf, image, size: int):
    """Resizes ``image [h, w, c]`` so that its shorter side is ``size``, then keeps the centre ``size x size``.

    The longer side becomes ``round(longer * size / shorter)``; the crop
    starts at ``(new_height - size) // 2``, ``(new_width - size) // 2``.
    Returns float32 ``[size, size, c]``.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    shorter = tf.minimum(height, width)
    scale = size / tf.cast(shorter, tf.float64)
    new_height = tf.maximum(size, tf.cast(tf.round(tf.cast(height, tf.float64) * scale), tf.int32))
    new_width = tf.maximum(size, tf.cast(tf.round(tf.cast(width, tf.float64) * scale), tf.int32))
    resized = tf.image.resize(image, tf.stack([new_height, new_width]), method="bilinear", antialias=True)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return tf.image.crop_to_bounding_box(resized, top, left, size, size)


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
    """Iterates over batches of a tfds image dataset: labelled sets and LSUN church-outdoor.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` (labelled) or
        ``"lsun/church_outdoor"`` (unlabelled, images of varying size; see
        ``UNLABELLED_DATASETS``).
      split: a tfds split, e.g. ``"train"``, ``"test"`` or ``"train[:90%]"``
        (LSUN has ``"train"`` and ``"validation"``).
      batch_size: the global batch size, divisible by ``process_count`` (and
        the per-process batch by ``devices``).
      seed: an int ``>= 0`` fixing the file order and the shuffle buffer.
      image_size: the labelled sets are resized to ``image_size x
        image_size`` (antialiased bilinear); ``None`` keeps the native size
        (28 for MNIST and Fashion-MNIST, 32 for CIFAR-10). LSUN's images are
        resized so that their shorter side is ``image_size`` and
        centre-cropped to ``image_size x image_size``; ``None`` is 64
        (``UNLABELLED_IMAGE_SIZE``).
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
      in ``[-1, 1]``, and for the labelled sets ``"label"``, int32 ``[b]``,
      with ``b = batch_size / process_count`` (or ``[devices, b / devices, ...]``).
      LSUN's batches have ``"x"`` only.

    Raises:
      ValueError: for an unsupported ``name`` (the message lists the
        supported ones) or a batch size that does not divide across
        processes and devices.
      TypeError: when ``batch_size``, ``seed``, ``image_size``,
        ``shuffle_buffer``, ``process_index``, ``process_count`` or
        ``devices`` is not an int, or ``shuffle``, ``repeat``,
        ``drop_remainder`` or ``download`` is not a bool.
      ImportError: when tensorflow-datasets is not installed (``pip install
        'jgan[data]'``), or when LSUN must be prepared and tensorflow-io
        cannot read its LMDB files (see the module's docstring).

    References:
      Radford, Metz & Chintala, "Unsupervised Representation Learning with
      Deep Convolutional Generative Adversarial Networks", ICLR 2016, sec. 4.1
      (LSUN at 64x64).
    """
    name = _check_single_name(name)
    labelled = name in LABELLED_DATASETS
    shuffle, repeat, drop_remainder, download = _check_flags(
        shuffle=shuffle, repeat=repeat, drop_remainder=drop_remainder, download=download
    )
    image_size = _check_image_size(image_size)
    if not labelled and image_size is None:
        image_size = UNLABELLED_IMAGE_SIZE
    seed = _validate.check_int(seed, "seed", minimum=0)
    shuffle_buffer = _validate.check_int(shuffle_buffer, "shuffle_buffer", minimum=1)
    index, count = resolve_process(process_index, process_count)
    local = local_batch_size(batch_size, count, devices)
    tf, tfds = _import_tfds()

    ds = _load(tfds, name, _process_split(tfds, split, index, count), shuffle=shuffle,
               seed=_derive_seed(seed, 0), data_dir=data_dir, download=download)
    if not labelled:
        # Crop before the shuffle buffer: it then holds small crops, not photographs.
        ds = ds.map(lambda example: {"image": _resize_and_center_crop(tf, example["image"], image_size)},
                    num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=_derive_seed(seed, 1), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def preprocess(example):
        image = example["image"]
        if not labelled:
            return {"x": _rescale(tf, image)}
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
