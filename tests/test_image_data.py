"""Tests for jgan.data's image input pipelines: array batches, tfds pipelines, image_dataset."""

import itertools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jgan import data


def _indexed_arrays(n, *, side=4, channels=1):
    """Images whose pixels all encode the example index, and labels = index."""
    labels = np.arange(n, dtype=np.int32)
    images = np.broadcast_to(
        (labels / max(n - 1, 1) * 2.0 - 1.0).astype(np.float32)[:, None, None, None],
        (n, side, side, channels),
    ).copy()
    return images, labels


def _take(iterator, k):
    return list(itertools.islice(iterator, k))


# ----------------------------------------------------------------- array_batches


def test_array_batches_shapes_dtypes_and_range_on_digits():
    batches = _take(data.array_batches(data.digits(split="test", image_size=8),
                                       batch_size=32, seed=0), 3)
    for batch in batches:
        assert set(batch) == {"x", "label"}
        assert batch["x"].shape == (32, 8, 8, 1) and batch["x"].dtype == np.float32
        assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
        assert batch["x"].min() >= -1.0 and batch["x"].max() <= 1.0
    # Images stay paired with their labels.
    images, labels = data.digits(split="test", image_size=8)
    for x, y in zip(batches[0]["x"], batches[0]["label"]):
        matches = np.flatnonzero((images == x).all(axis=(1, 2, 3)))
        assert labels[matches].tolist() == [y] * len(matches) and len(matches) >= 1


def test_every_epoch_is_a_permutation_and_epochs_differ():
    arrays = _indexed_arrays(10)
    # drop_remainder=False: batches of 4, 4, 2 per epoch, every example exactly once.
    batches = _take(data.array_batches(arrays, batch_size=4, seed=3, drop_remainder=False), 9)
    assert [len(b["label"]) for b in batches] == [4, 4, 2] * 3
    epochs = [np.concatenate([b["label"] for b in batches[3 * e:3 * e + 3]]) for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(10))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    assert not np.array_equal(epochs[1], epochs[2])
    # The permutation is the documented one.
    np.testing.assert_array_equal(epochs[1], np.random.default_rng([3, 1]).permutation(10))
    # drop_remainder=True: two full batches an epoch, eight distinct examples.
    batches = _take(data.array_batches(arrays, batch_size=4, seed=3), 4)
    assert all(len(b["label"]) == 4 for b in batches)
    assert len(set(np.concatenate([b["label"] for b in batches[:2]]).tolist())) == 8


def test_array_batches_deterministic_for_a_seed_different_across_seeds():
    arrays = _indexed_arrays(50)

    def run(seed):
        return np.stack([b["label"] for b in _take(data.array_batches(arrays, batch_size=10,
                                                                       seed=seed), 7)])

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))


def test_array_batches_without_shuffle_or_repeat():
    arrays = _indexed_arrays(10)
    batches = list(data.array_batches(arrays, batch_size=4, seed=0, shuffle=False, repeat=False,
                                      drop_remainder=False))
    assert [b["label"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    np.testing.assert_array_equal(batches[0]["x"], arrays[0][:4])
    assert len(list(data.array_batches(arrays, batch_size=4, seed=0, repeat=False))) == 2


def test_process_shards_are_disjoint_and_form_the_global_batch():
    arrays = _indexed_arrays(37)
    steps = 12  # several epochs of 4 full batches
    global_batches = _take(data.array_batches(arrays, batch_size=8, seed=5, process_count=1,
                                              process_index=0), steps)
    shards = [
        _take(data.array_batches(arrays, batch_size=8, seed=5, process_count=4, process_index=p),
              steps)
        for p in range(4)
    ]
    for step in range(steps):
        parts = [shards[p][step]["label"] for p in range(4)]
        assert all(part.shape == (2,) for part in parts)
        assert len(set(np.concatenate(parts).tolist())) == 8  # disjoint
        np.testing.assert_array_equal(np.concatenate(parts), global_batches[step]["label"])
        np.testing.assert_array_equal(
            np.concatenate([shards[p][step]["x"] for p in range(4)]), global_batches[step]["x"])
    # The last, partial batch (37 = 4 * 8 + 5) is split too, nothing lost or duplicated.
    partial = [
        list(data.array_batches(arrays, batch_size=8, seed=5, process_count=4, process_index=p,
                                repeat=False, drop_remainder=False))[-1]["label"]
        for p in range(4)
    ]
    assert sorted(len(part) for part in partial) == [1, 1, 1, 2]
    assert sorted(np.concatenate(partial).tolist()) == sorted(
        list(data.array_batches(arrays, batch_size=8, seed=5, process_count=1, process_index=0,
                                repeat=False, drop_remainder=False))[-1]["label"].tolist())


def test_process_defaults_come_from_jax():
    arrays = _indexed_arrays(16)
    default = next(data.array_batches(arrays, batch_size=8, seed=0))
    explicit = next(data.array_batches(arrays, batch_size=8, seed=0,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()))
    np.testing.assert_array_equal(default["label"], explicit["label"])
    assert default["label"].shape == (8 // jax.process_count(),)


def test_device_reshape():
    arrays = _indexed_arrays(24)
    flat = _take(data.array_batches(arrays, batch_size=12, seed=1, process_count=2,
                                    process_index=1), 3)
    split = _take(data.array_batches(arrays, batch_size=12, seed=1, process_count=2,
                                     process_index=1, devices=3), 3)
    for f, s in zip(flat, split):
        assert s["x"].shape == (3, 2, 4, 4, 1) and s["label"].shape == (3, 2)
        np.testing.assert_array_equal(s["label"].reshape(-1), f["label"])
        np.testing.assert_array_equal(s["x"].reshape(f["x"].shape), f["x"])
    tree = data.shard_for_devices({"x": np.zeros((8, 5)), "y": {"z": np.arange(8)}}, 4)
    assert tree["x"].shape == (4, 2, 5)
    np.testing.assert_array_equal(tree["y"]["z"], np.arange(8).reshape(4, 2))
    with pytest.raises(ValueError, match="cannot be split evenly across 3 devices"):
        data.shard_for_devices({"x": np.zeros((8, 5))}, 3)


def test_prefetch_yields_the_same_sequence():
    arrays = _indexed_arrays(30)
    expected = _take(data.array_batches(arrays, batch_size=8, seed=2), 10)
    got = _take(data.prefetch(data.array_batches(arrays, batch_size=8, seed=2), size=3), 10)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e["label"], g["label"])
        np.testing.assert_array_equal(e["x"], g["x"])
    # A finite iterator ends, a transfer runs on every item, errors reach the consumer.
    placed = list(data.prefetch(range(5), size=1, transfer=jax.device_put))
    assert [int(p) for p in placed] == [0, 1, 2, 3, 4]
    assert all(isinstance(p, jax.Array) for p in placed)

    def broken():
        yield 1
        raise RuntimeError("boom")

    stream = data.prefetch(broken())
    assert next(stream) == 1
    with pytest.raises(RuntimeError, match="boom"):
        next(stream)


def test_array_batches_reject_badly_scaled_or_shaped_images():
    images, labels = _indexed_arrays(16)
    with pytest.raises(ValueError, match="floating-point"):
        data.array_batches(((images + 1) * 127.5).astype(np.uint8), batch_size=4, seed=0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        data.array_batches((images + 1) * 127.5, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="rank 4"):
        data.array_batches((images[..., 0], labels), batch_size=4, seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        data.array_batches(np.where(images > 0, np.nan, images), batch_size=4, seed=0)
    with pytest.raises(ValueError, match="same leading"):
        data.array_batches((images, labels[:-1]), batch_size=4, seed=0)
    # Non-image arrays pass once the image check is off.
    points = np.random.default_rng(0).normal(size=(16, 2)) * 10
    batch = next(data.array_batches({"x": points}, batch_size=4, seed=0, validate_images=False))
    assert batch["x"].shape == (4, 2)


def test_array_batches_reject_batch_sizes_that_do_not_divide():
    arrays = _indexed_arrays(16)
    with pytest.raises(ValueError, match="not divisible by process_count = 3"):
        data.array_batches(arrays, batch_size=8, seed=0, process_count=3, process_index=0)
    with pytest.raises(ValueError, match="not divisible by devices = 3"):
        data.array_batches(arrays, batch_size=8, seed=0, process_count=2, process_index=0,
                           devices=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.array_batches(arrays, batch_size=32, seed=0)
    with pytest.raises(ValueError, match="process_index must be <"):
        data.array_batches(arrays, batch_size=8, seed=0, process_count=2, process_index=2)
    with pytest.raises(ValueError, match="seed"):
        data.array_batches(arrays, batch_size=8, seed=-1)


# ----------------------------------------------------------------- image_dataset


def test_image_dataset_digits_offline_matches_its_spec():
    spec = data.image_dataset_spec("digits", image_size=16)
    assert spec == data.ImageDatasetSpec("digits", (16, 16, 1), 10, ("x", "label"), True)
    batch = next(data.image_dataset("digits", split="train", batch_size=64, seed=0,
                                    image_size=16, devices=2))
    assert batch["x"].shape == (2, 32) + spec.image_shape and batch["x"].dtype == np.float32
    assert batch["label"].shape == (2, 32) and batch["label"].dtype == np.int32
    assert -1.0 <= batch["x"].min() < batch["x"].max() <= 1.0
    assert data.image_dataset_spec("mnist").image_shape == (28, 28, 1)
    assert data.image_dataset_spec("cycle_gan/horse2zebra", image_size=64).keys == ("a", "b")


def test_unknown_dataset_names_list_the_supported_ones():
    for call in (
        lambda: data.image_dataset("imagenet2012", split="train", batch_size=8, seed=0),
        lambda: data.image_dataset_spec("no_such_dataset"),
    ):
        with pytest.raises(ValueError, match="unknown image dataset") as info:
            call()
        for name in ("digits", "mnist", "fashion_mnist", "cifar10", "cycle_gan/horse2zebra"):
            assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="supports"):
        data.tfds_images("cycle_gan/horse2zebra", split="train", batch_size=8, seed=0)
    with pytest.raises(ValueError, match="supports"):
        data.tfds_unpaired_images("cycle_gan/cityscapes", split="train", batch_size=8, seed=0)
    with pytest.raises(ValueError, match="split 'train' or 'test'"):
        data.tfds_unpaired_images("cycle_gan/horse2zebra", split="trainA", batch_size=8, seed=0)


def test_import_stays_light():
    code = ("import sys, jgan.data; "
            "assert not {'tensorflow', 'tensorflow_datasets'} & set(sys.modules), 'TF imported'")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env=dict(os.environ, JAX_PLATFORMS="cpu"))


# ----------------------------------------------------------------- tfds (mocked, offline)


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def _indexed_as_dataset(tfds, sizes):
    """A ``mock_data`` reader that honours the split through tfds' own split arithmetic.

    ``sizes`` maps a split name to ``(examples, image shape, value)``: with
    ``value=None`` every pixel of example ``i`` is ``i``; otherwise the image
    is a horizontal ramp ``value .. value + 19`` whose size grows with ``i``.
    """
    import tensorflow as tf

    infos = tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)
         for name, (n, _, _) in sizes.items()])

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        del decoders, read_config, shuffle_files
        examples = []
        for inst in tfds.core.ReadInstruction.from_spec(split).to_absolute(infos):
            n, shape, value = sizes[inst.splitname]
            for i in range(inst.from_ or 0, n if inst.to is None else inst.to):
                if value is None:
                    image = np.full(shape, i, np.uint8)
                else:  # a horizontal ramp value .. value + 19, of a size that varies
                    height, width = shape[0] + i, shape[1] + 2 * i
                    ramp = (value + np.arange(width) % 20).astype(np.uint8)
                    image = np.broadcast_to(ramp[None, :, None], (height, width, shape[2]))
                examples.append({"image": image.copy(), "label": i % 2})
        features = self.info.features
        return tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_signature={k: tf.TensorSpec(features[k].shape, features[k].dtype)
                              for k in ("image", "label")})

    return as_dataset


@pytest.mark.parametrize("name, image_size, shape", [
    ("mnist", None, (28, 28, 1)),
    ("fashion_mnist", 32, (32, 32, 1)),
    ("cifar10", None, (32, 32, 3)),
    ("cifar10", 16, (16, 16, 3)),
])
def test_tfds_images_shapes_and_range(tfds, name, image_size, shape):
    with tfds.testing.mock_data(num_examples=10):
        batches = _take(data.image_dataset(name, split="train", batch_size=4, seed=0,
                                           image_size=image_size), 4)  # crosses an epoch
    assert data.image_dataset_spec(name, image_size=image_size).image_shape == shape
    for batch in batches:
        assert batch["x"].shape == (4,) + shape and batch["x"].dtype == np.float32
        assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
        assert batch["x"].min() >= -1.0 and batch["x"].max() <= 1.0
    assert np.concatenate([b["x"] for b in batches]).std() > 0.1  # not all one value


def test_tfds_images_split_across_processes(tfds):
    n = 12
    as_dataset = _indexed_as_dataset(tfds, {"train": (n, (28, 28, 1), None)})

    def labels(process_index, seed=0, **kw):
        kw = {"repeat": False, "drop_remainder": False, **kw}
        with tfds.testing.mock_data(as_dataset_fn=as_dataset):
            batches = list(data.tfds_images("mnist", split="train", batch_size=4, seed=seed,
                                            process_index=process_index, process_count=2, **kw))
        for b in batches:
            assert b["x"].shape[0] == b["label"].shape[0] <= 2  # local batch = 4 / 2
            # Every pixel of an example holds its index (checked below).
            np.testing.assert_array_equal(b["x"], np.broadcast_to(b["x"][:, :1, :1], b["x"].shape))
        return batches

    shards = [labels(p) for p in range(2)]
    pixels = [np.concatenate([b["x"][:, 0, 0, 0] for b in s]) for s in shards]
    indices = [np.rint((p + 1.0) * 127.5).astype(int) for p in pixels]
    for p in range(2):  # each process reads its even split, each example once
        assert sorted(indices[p].tolist()) == list(range(6 * p, 6 * p + 6))
        np.testing.assert_allclose(pixels[p], indices[p] / 127.5 - 1.0, atol=1e-6)
        np.testing.assert_array_equal(np.concatenate([b["label"] for b in shards[p]]),
                                      indices[p] % 2)
    assert indices[0].tolist() != list(range(6))  # shuffled
    # Deterministic for a seed, different across seeds.
    again = np.concatenate([b["x"][:, 0, 0, 0] for b in labels(0)])
    other = np.concatenate([b["x"][:, 0, 0, 0] for b in labels(0, seed=1)])
    np.testing.assert_array_equal(again, pixels[0])
    assert not np.array_equal(other, pixels[0])
    # Unshuffled, process 1 reads examples 6..11 in order.
    ordered = np.concatenate([b["x"][:, 0, 0, 0] for b in labels(1, shuffle=False)])
    np.testing.assert_allclose(ordered, np.arange(6, 12) / 127.5 - 1.0, atol=1e-6)


def test_tfds_unpaired_images_yield_both_domains(tfds):
    # Domain A holds pixels 40..59, domain B 200..219, in images of varying sizes.
    as_dataset = _indexed_as_dataset(tfds, {
        "trainA": (5, (20, 24, 3), 40), "trainB": (7, (30, 18, 3), 200),
        "testA": (3, (20, 20, 3), 0), "testB": (3, (20, 20, 3), 0)})

    def cropped(seed):
        return _take(data.tfds_unpaired_images(
            "cycle_gan/horse2zebra", split="train", batch_size=4, seed=seed, image_size=16,
            load_size=24, random_flip=True, process_index=1, process_count=2, devices=2), 3)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        batches = _take(data.image_dataset("cycle_gan/horse2zebra", split="train", batch_size=4,
                                           seed=0, image_size=16), 5)
        augmented = [cropped(0), cropped(0), cropped(1)]

    def within(images, low, high):
        low, high = low / 127.5 - 1.0 - 1e-5, high / 127.5 - 1.0 + 1e-5
        return (images >= low).all() and (images <= high).all()

    for batch in batches:
        assert set(batch) == {"a", "b"}
        assert batch["a"].shape == batch["b"].shape == (4, 16, 16, 3)
        assert batch["a"].dtype == batch["b"].dtype == np.float32
        assert within(batch["a"], 40, 59) and within(batch["b"], 200, 219)
    for batch in augmented[0]:
        assert batch["a"].shape == batch["b"].shape == (2, 1, 16, 16, 3)
        assert within(batch["a"], 40, 59) and within(batch["b"], 200, 219)
    a = [np.stack([b["a"] for b in run]) for run in augmented]
    np.testing.assert_array_equal(a[0], a[1])  # crops and flips are seeded
    assert not np.array_equal(a[0], a[2])


# ----------------------------------------------------------------- check_images


def test_check_images_flags_a_batch_scaled_to_unit_range():
    images, labels = data.digits(split="test", image_size=8)  # genuinely in [-1, 1]
    assert images.min() == -1.0
    unit = (images[:32] + 1) / 2  # the classic bug: [0, 1] where [-1, 1] is expected
    with pytest.raises(ValueError, match=r"look scaled to \[0, 1\].*x \* 2 - 1"):
        data.check_images(unit)
    with pytest.raises(ValueError, match=r'arrays\["x"\] look scaled to \[0, 1\]'):
        data.array_batches((unit, labels[:32]), batch_size=8, seed=0)
    # The fix named in the message is accepted, and so is the legit batch.
    np.testing.assert_array_equal(data.check_images(unit * 2 - 1), unit * 2 - 1)
    data.check_images(images)
    next(data.array_batches((images, labels), batch_size=8, seed=0))


def test_check_images_unit_range_check_spares_legit_and_ambiguous_batches():
    rng = np.random.default_rng(0)
    unit = rng.uniform(0, 1, size=(16, 4, 4, 3)).astype(np.float32)
    data.check_images(unit[:7])  # fewer than 8 images: not judged
    data.check_images(np.zeros((16, 4, 4, 1), np.float32))  # all mid-grey: not judged
    # A [-1, 1] batch with a single negative value anywhere passes.
    one_dark = unit.copy()
    one_dark[3, 1, 2, 0] = -0.01
    data.check_images(one_dark)
    # The escape hatch for bright [-1, 1] images.
    data.check_images(unit, allow_nonnegative=True)
    with pytest.raises(TypeError, match="allow_nonnegative must be a bool"):
        data.check_images(unit, allow_nonnegative="yes")


# ----------------------------------------------------------------- LSUN (mocked, offline)


def _lsun_as_dataset(tfds, images_by_split):
    """A ``mock_data`` reader of LSUN-like examples (``"id"``, ``"image"``) that honours the split.

    ``images_by_split`` maps a split name to its list of uint8 ``[h, w, 3]``
    images, served in order (sliced by tfds' own split arithmetic).
    """
    import tensorflow as tf

    infos = tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=name, shard_lengths=[len(images)], num_bytes=0)
         for name, images in images_by_split.items()])

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        del self, decoders, read_config, shuffle_files
        examples = []
        for inst in tfds.core.ReadInstruction.from_spec(split).to_absolute(infos):
            images = images_by_split[inst.splitname]
            for i in range(inst.from_ or 0, len(images) if inst.to is None else inst.to):
                examples.append({"id": f"{inst.splitname}-{i}", "image": images[i]})
        return tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_signature={"id": tf.TensorSpec((), tf.string),
                              "image": tf.TensorSpec((None, None, 3), tf.uint8)})

    return as_dataset


def _smooth_photo(height, width):
    """A smooth uint8 picture whose content changes by several grey levels a pixel (a shifted crop shows)."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    image = np.stack([127 + 120 * np.sin(2 * np.pi * (1.3 * x + 0.7 * y)),
                      127 + 120 * np.cos(2 * np.pi * (0.5 * x - 1.1 * y)),
                      255 * x * y], axis=-1)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _resize_shorter_side_and_crop_centre(image, size):
    """The reference: PIL's bilinear resize of the shorter side to ``size``, then numpy's centre square."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = size / min(height, width)
    new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return resized.astype(np.float32), (top, left)


def test_lsun_images_are_centre_crops_of_the_shorter_side_resized_to_64(tfds):
    rng = np.random.default_rng(0)
    # Two whose shorter side is already 64 (resizing is the identity: the crop must be exact),
    # two downscaled (portrait and landscape) and one upscaled, as tfds' mock images are.
    photos = [rng.integers(0, 256, (64, 101, 3), dtype=np.uint8),
              rng.integers(0, 256, (90, 64, 3), dtype=np.uint8),
              _smooth_photo(128, 200), _smooth_photo(150, 96), _smooth_photo(40, 50)]
    as_dataset = _lsun_as_dataset(tfds, {"train": photos, "validation": photos[:1]})
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        batches = list(data.image_dataset("lsun/church_outdoor", split="train", batch_size=1, seed=0,
                                          image_size=64, shuffle=False, repeat=False))
    assert data.image_dataset_spec("lsun/church_outdoor", image_size=64) == data.ImageDatasetSpec(
        "lsun/church_outdoor", (64, 64, 3), None, ("x",), False)
    assert len(batches) == len(photos)
    for photo, batch in zip(photos, batches):
        assert set(batch) == {"x"}  # no labels
        assert batch["x"].shape == (1, 64, 64, 3) and batch["x"].dtype == np.float32
        assert -1.0 <= batch["x"].min() and batch["x"].max() <= 1.0
        got = (batch["x"][0] + 1.0) * 127.5
        resized, (top, left) = _resize_shorter_side_and_crop_centre(photo, 64)
        centre = resized[top:top + 64, left:left + 64]
        if min(photo.shape[:2]) == 64:  # no resampling: exactly the centre of the photo
            np.testing.assert_allclose(got, centre, atol=1e-3)
        else:  # PIL rounds to uint8: within one grey level
            np.testing.assert_allclose(got, centre, atol=1.01)
        # The test can tell a shifted crop: one pixel off the centre is far off.
        shifted = resized[top + (top > 0):top + (top > 0) + 64, left + (left > 0):left + (left > 0) + 64]
        assert np.abs(got - shifted).max() > 5


def test_lsun_splits_across_processes_deterministic_for_a_seed(tfds):
    # Constant photos of varying sizes: every pixel of example i holds 5 + 10 i (kept by resizing).
    photos = [np.full((64 + 7 * i, 80 + 13 * (i % 3), 3), 5 + 10 * i, np.uint8) for i in range(12)]
    as_dataset = _lsun_as_dataset(tfds, {"train": photos})

    def indices(process_index, seed=0, **kw):
        with tfds.testing.mock_data(as_dataset_fn=as_dataset):
            batches = list(data.tfds_images("lsun/church_outdoor", split="train", batch_size=4, seed=seed,
                                            process_index=process_index, process_count=2, repeat=False,
                                            drop_remainder=False, **kw))
        for b in batches:
            assert set(b) == {"x"} and b["x"].shape[1:] == (64, 64, 3) and b["x"].shape[0] <= 2
            np.testing.assert_allclose(b["x"], np.broadcast_to(b["x"][:, :1, :1, :1], b["x"].shape), atol=1e-5)
        values = np.concatenate([b["x"][:, 0, 0, 0] for b in batches])
        return np.rint(((values + 1.0) * 127.5 - 5) / 10).astype(int).tolist()

    shards = [indices(p) for p in range(2)]
    for p in range(2):  # each process reads its even split, each example once
        assert sorted(shards[p]) == list(range(6 * p, 6 * p + 6))
    assert shards[0] != list(range(6))  # shuffled
    assert indices(0) == shards[0]  # deterministic for a seed
    assert indices(0, seed=1) != shards[0]
    assert indices(1, shuffle=False) == list(range(6, 12))


def test_lsun_default_size_and_tfds_random_mock_images(tfds):
    # tfds' own mock LSUN: random images of random sizes, ids, no labels; both splits.
    assert data.image_dataset_spec("lsun/church_outdoor").image_shape == (64, 64, 3)
    with tfds.testing.mock_data(num_examples=6):
        default = next(data.tfds_images("lsun/church_outdoor", split="validation", batch_size=4, seed=0))
        small = _take(data.image_dataset("lsun/church_outdoor", split="train", batch_size=4, seed=0,
                                         image_size=32, devices=2), 3)  # crosses an epoch
    assert set(default) == {"x"} and default["x"].shape == (4, 64, 64, 3)
    for batch in small:
        assert set(batch) == {"x"} and batch["x"].shape == (2, 2, 32, 32, 3) and batch["x"].dtype == np.float32
        assert -1.0 <= batch["x"].min() and batch["x"].max() <= 1.0 and batch["x"].std() > 0.1


def test_lsun_without_tfds_or_tensorflow_io_names_what_to_install(tfds, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
        with pytest.raises(ImportError, match=r"pip install 'jgan\[data\]'"):
            data.image_dataset("lsun/church_outdoor", split="train", batch_size=4, seed=0)

    def unpreparable(self, split, decoders=None, read_config=None, shuffle_files=False):
        # What tfds' LSUN builder raises when tensorflow-io cannot read the LMDB files.
        raise ImportError("Failed importing tensorflow_io. This likely means that the dataset requires "
                          "additional dependencies that have to be manually installed")

    with tfds.testing.mock_data(as_dataset_fn=unpreparable):
        with pytest.raises(ImportError, match=r"needs tensorflow-io.*tfds build lsun/church_outdoor"):
            data.tfds_images("lsun/church_outdoor", split="train", batch_size=4, seed=0)
    with pytest.raises(ValueError, match="supports.*lsun/church_outdoor"):
        data.tfds_images("lsun/bedroom", split="train", batch_size=4, seed=0)
