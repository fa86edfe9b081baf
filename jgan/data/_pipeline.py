"""Batches of in-memory arrays for training loops: shuffling, host and device splits.

``array_batches`` turns arrays held in host memory (the offline ``digits``, or
any user arrays) into an iterator of numpy batches, dicts such as
``{"x": images, "label": labels}``. Every epoch is a fresh permutation drawn
from ``numpy.random.default_rng([seed, epoch])``, so a run is reproducible from
its seed and different seeds give different orders.

Multi-host training. ``batch_size`` is always the *global* batch size. Every
process holds the whole arrays and draws the same global batches (same seed);
process ``p`` of ``P`` keeps rows ``[p * batch_size / P, (p + 1) * batch_size / P)``
of each global batch. The processes' shards are therefore disjoint, of equal
size, and together they are exactly the global batch, which is what
``jax.make_array_from_process_local_data`` expects.

Multi-device training. ``devices=n`` (or ``shard_for_devices``) reshapes every
local batch ``[b, ...]`` to ``[n, b / n, ...]`` for ``jax.pmap``; with
``jax.jit`` and a sharded mesh, keep the flat batch and place it with
``jax.device_put`` (``prefetch(..., transfer=...)`` does that off the main
thread).

Prefetching. ``prefetch`` runs any iterator a few items ahead on a background
thread, optionally applying a transfer function (``jax.device_put``) there, so
host work and host-to-device copies overlap the training step; with
``transfer=None`` it has ``flax.jax_utils.prefetch_to_device``'s buffering
without the device placement.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping
import queue
import threading
from typing import Any

import jax
import numpy as np

from jgan import _validate

Batch = dict[str, np.ndarray]

_RANGE_TOLERANCE = 1e-5  # float32 rounding of a [-1, 1] rescale
# From this many images on, a batch without a single negative value is taken
# for [0, 1] data: [-1, 1] images below mid-grey nowhere are rare one at a
# time and practically absent from a batch.
_MIN_IMAGES_FOR_UNIT_RANGE_CHECK = 8


# ---------------------------------------------------------------------------
# Validation helpers (shared with the tfds pipelines).


def resolve_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """``(index, count)``, defaulting to ``jax.process_index()/process_count()``."""
    count = jax.process_count() if process_count is None else process_count
    count = _validate.check_int(count, "process_count", minimum=1)
    index = jax.process_index() if process_index is None else process_index
    index = _validate.check_int(index, "process_index", minimum=0)
    if index >= count:
        raise ValueError(f"process_index must be < process_count = {count}, got {index}.")
    return index, count


def local_batch_size(batch_size: Any, process_count: int, devices: int | None) -> int:
    """The per-process batch size; raises unless it divides evenly."""
    batch_size = _validate.check_int(batch_size, "batch_size", minimum=1)
    if batch_size % process_count:
        raise ValueError(
            f"batch_size (the global batch size) = {batch_size} is not divisible by "
            f"process_count = {process_count}: every process must get an equal share."
        )
    local = batch_size // process_count
    if devices is not None:
        devices = _validate.check_int(devices, "devices", minimum=1)
        if local % devices:
            raise ValueError(
                f"the per-process batch size {local} (batch_size {batch_size} / "
                f"{process_count} processes) is not divisible by devices = {devices}."
            )
    return local


def check_images(
    images: Any, *, what: str = "images", allow_nonnegative: bool = False
) -> np.ndarray:
    """Checks that ``images`` are float NHWC images scaled to ``[-1, 1]``.

    Besides values outside ``[-1, 1]``, this catches the classic scaling bug
    of images left in ``[0, 1]``: a batch of at least 8 images with no
    negative value (and not all zero) is refused, since images in ``[-1, 1]``
    that are nowhere darker than mid-grey are rare one at a time and
    practically absent from a batch. Fewer images are not judged.

    Args:
      images: ``[n, height, width, channels]`` floating-point images.
      what: the name used in error messages.
      allow_nonnegative: accept a batch of ``[-1, 1]`` images that really has
        no negative value (e.g. all-bright images).

    Returns:
      ``images`` as a numpy array (no copy when it already is one).

    Raises:
      ValueError: for a rank other than 4, an integer or boolean dtype (e.g.
        uint8 in ``0..255``: scale it with ``x / 127.5 - 1``), non-finite
        values, values outside ``[-1, 1]``, or (unless ``allow_nonnegative``)
        at least 8 images in ``[0, 1]`` (scale them with ``x * 2 - 1``).
      TypeError: if ``allow_nonnegative`` is not a bool.
    """
    allow_nonnegative = _validate.check_bool(allow_nonnegative, "allow_nonnegative")
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"{what} must be [n, height, width, channels] (rank 4), got shape "
            f"{images.shape}; add a channel axis to grey-scale images (x[..., None])."
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{what} must be floating-point images in [-1, 1], got dtype {images.dtype}; "
            "convert 0..255 integers with x.astype(np.float32) / 127.5 - 1."
        )
    if images.size:
        low, high = float(np.min(images)), float(np.max(images))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{what} contain non-finite values.")
        if low < -1.0 - _RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
            raise ValueError(
                f"{what} must lie in [-1, 1] (the range of a tanh generator), got "
                f"values in [{low:g}, {high:g}]; rescale 0..255 with x / 127.5 - 1 and "
                "0..1 with 2 * x - 1."
            )
        if (
            not allow_nonnegative
            and images.shape[0] >= _MIN_IMAGES_FOR_UNIT_RANGE_CHECK
            and low >= 0
            and high > 0
        ):
            raise ValueError(
                f"{what} look scaled to [0, 1], not [-1, 1]: none of the {images.shape[0]} "
                f"images has a negative value (values in [{low:g}, {high:g}]); rescale them "
                "with x * 2 - 1. If they are [-1, 1] images that really are never darker "
                "than mid-grey, pass allow_nonnegative=True (array_batches: "
                "validate_images=False)."
            )
    return images


def _as_array_dict(arrays: Any) -> Batch:
    if isinstance(arrays, Mapping):
        out = {str(k): np.asarray(v) for k, v in arrays.items()}
    elif isinstance(arrays, tuple) and len(arrays) == 2:
        out = {"x": np.asarray(arrays[0]), "label": np.asarray(arrays[1])}
    elif isinstance(arrays, (tuple, list)):
        raise ValueError(
            "arrays must be a dict of arrays, an (images, labels) pair or a single "
            f"array, got a {type(arrays).__name__} of length {len(arrays)}."
        )
    else:
        out = {"x": np.asarray(arrays)}
    if not out:
        raise ValueError("arrays is empty.")
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in out.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(
            "every array must have the same leading (example) dimension, got "
            f"{ {k: v.shape for k, v in out.items()} }."
        )
    return out


# ---------------------------------------------------------------------------
# Device split and prefetch.


def shard_for_devices(batch: Any, n_devices: int) -> Any:
    """Reshapes every leaf ``[b, ...]`` of a batch to ``[n_devices, b / n_devices, ...]``.

    This is the layout ``jax.pmap`` expects: row ``d`` goes to local device ``d``.

    Args:
      batch: a pytree (e.g. a dict) of arrays sharing the leading dimension ``b``.
      n_devices: the number of local devices, ``>= 1`` (``jax.local_device_count()``).

    Returns:
      The same pytree with leaves ``[n_devices, b / n_devices, ...]``.

    Raises:
      ValueError: when a leaf is a scalar or ``b`` is not divisible by ``n_devices``.
      TypeError: when ``n_devices`` is not an int.
    """
    n_devices = _validate.check_int(n_devices, "n_devices", minimum=1)

    def reshape(leaf):
        shape = np.shape(leaf)
        if not shape:
            raise ValueError("shard_for_devices needs arrays with a batch axis, got a scalar.")
        if shape[0] % n_devices:
            raise ValueError(
                f"a batch of {shape[0]} examples cannot be split evenly across "
                f"{n_devices} devices; choose a batch size divisible by {n_devices}."
            )
        return leaf.reshape((n_devices, shape[0] // n_devices) + tuple(shape[1:]))

    return jax.tree.map(reshape, batch)


_END = object()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(
    iterator: Iterable[Any],
    *,
    size: int = 2,
    transfer: Callable[[Any], Any] | None = None,
) -> Iterator[Any]:
    """Runs an iterator ahead on a background thread, keeping ``size`` items ready.

    The items come out in the same order and unchanged (up to ``transfer``);
    an exception raised by ``iterator`` is re-raised in the consumer. Closing
    or dropping the returned generator stops the thread.

    Args:
      iterator: any iterable, e.g. ``array_batches(...)``.
      size: how many items to keep ready, ``>= 1``.
      transfer: applied to each item on the background thread, e.g.
        ``jax.device_put`` or ``lambda b: jax.device_put(b, sharding)``;
        ``None`` leaves the items as they are.

    Returns:
      An iterator over the (transferred) items.
    """
    size = _validate.check_int(size, "size", minimum=1)
    return _prefetch(iter(iterator), size, transfer)


def _prefetch(iterator: Iterator[Any], size: int, transfer: Callable[[Any], Any] | None):
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if transfer is not None:
                    item = transfer(item)
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # noqa: BLE001 (re-raised in the consumer)
            put(_Raised(error))

    thread = threading.Thread(target=produce, name="jgan-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()


# ---------------------------------------------------------------------------
# The array iterator.


def array_batches(
    arrays: Any,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    repeat: bool = True,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    devices: int | None = None,
    validate_images: bool = True,
) -> Iterator[Batch]:
    """Iterates over shuffled batches of in-memory arrays, split across processes.

    Epoch ``e`` visits the examples in the order
    ``numpy.random.default_rng([seed, e]).permutation(n)`` (or ``0..n-1`` with
    ``shuffle=False``) and cuts it into global batches of ``batch_size``; no
    batch straddles two epochs. This process yields its shard of every global
    batch (see the module docstring): rows ``[p * b / P, (p + 1) * b / P)``.

    Args:
      arrays: a dict of arrays with a common leading dimension ``n``, an
        ``(images, labels)`` pair (yielded as ``{"x": ..., "label": ...}``,
        e.g. ``digits(...)``) or a single array (yielded as ``{"x": ...}``).
      batch_size: the global batch size (summed over processes), ``>= 1``,
        divisible by ``process_count`` (and by ``devices`` per process).
      seed: an int ``>= 0`` that fixes every epoch's permutation; the same on
        every process.
      shuffle: draw a new permutation every epoch; ``False`` keeps the order.
      repeat: start a new epoch after the last batch instead of stopping.
      drop_remainder: skip each epoch's last ``n % batch_size`` examples so
        every batch is full; with ``False`` the last batch of an epoch is
        smaller, and its process shards may differ in size by one example
        (meant for single-process evaluation passes).
      process_index: this process, in ``[0, process_count)``; defaults to
        ``jax.process_index()``.
      process_count: the number of processes; defaults to ``jax.process_count()``.
      devices: when given, every batch is reshaped to
        ``[devices, batch_size / process_count / devices, ...]`` for
        ``jax.pmap`` (see ``shard_for_devices``).
      validate_images: check that ``arrays["x"]`` holds float images
        ``[n, height, width, channels]`` in ``[-1, 1]``; set ``False`` for
        arrays that are not images.

    Returns:
      An iterator of dicts with the keys of ``arrays``, each leaf
      ``[batch_size / process_count, ...]`` (or ``[devices, ..., ...]``).

    Raises:
      ValueError: for mismatched leading dimensions, badly scaled or shaped
        images (see ``check_images``), a batch size that does not divide
        across processes and devices, fewer examples than one batch with
        ``drop_remainder=True``, or a partial batch that ``devices`` cannot split.
      TypeError: when ``batch_size``, ``seed``, ``process_index``,
        ``process_count`` or ``devices`` is not an int, or ``shuffle``,
        ``repeat``, ``drop_remainder`` or ``validate_images`` is not a bool.
    """
    shuffle = _validate.check_bool(shuffle, "shuffle")
    repeat = _validate.check_bool(repeat, "repeat")
    drop_remainder = _validate.check_bool(drop_remainder, "drop_remainder")
    validate_images = _validate.check_bool(validate_images, "validate_images")
    data = _as_array_dict(arrays)
    if validate_images:
        if "x" not in data:
            raise ValueError(
                f"validate_images looks for images under 'x', got keys {sorted(data)}."
            )
        data["x"] = check_images(data["x"], what='arrays["x"]')
    seed = _validate.check_int(seed, "seed", minimum=0)
    index, count = resolve_process(process_index, process_count)
    local_batch_size(batch_size, count, devices)
    n = next(iter(data.values())).shape[0]
    if drop_remainder and n < batch_size:
        raise ValueError(
            f"only {n} examples, fewer than one batch of {batch_size}; with "
            "drop_remainder=True no batch could be formed."
        )
    if n == 0:
        raise ValueError("arrays hold no examples.")
    if devices is not None and not drop_remainder and n % batch_size:
        raise ValueError(
            f"the last batch of each epoch ({n % batch_size} examples) cannot be split "
            f"across {devices} devices; use drop_remainder=True."
        )
    return _array_batches(data, batch_size, seed, shuffle, repeat, drop_remainder, index, count,
                          devices)


def _array_batches(data, batch_size, seed, shuffle, repeat, drop_remainder, index, count, devices):
    n = next(iter(data.values())).shape[0]
    stop = n - n % batch_size if drop_remainder else n
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        for start in range(0, stop, batch_size):
            rows = np.array_split(order[start:start + batch_size], count)[index]
            batch = {k: v[rows] for k, v in data.items()}
            yield batch if devices is None else shard_for_devices(batch, devices)
        if not repeat:
            return
        epoch += 1
