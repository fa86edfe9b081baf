"""Tests for stacked digits (jgan.data.stacked_digits / stacked_mnist) and their
mode counting (jgan.metrics.stacked_mode_coverage / classify_channels)."""

import functools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from jgan import data, metrics, models

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_SETTINGS = settings(deadline=None, max_examples=25, derandomize=True)


# ------------------------------------------------------------- stacked_digits


def test_stacked_digits_shapes_dtypes_and_range():
    images, labels = data.stacked_digits(jax.random.key(0), 50, image_size=16)
    assert images.shape == (50, 16, 16, 3) and images.dtype == jnp.float32
    assert labels.shape == (50, 3) and labels.dtype == jnp.int32
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    assert int(labels.min()) >= 0 and int(labels.max()) < 10
    default_images, _ = data.stacked_digits(jax.random.key(0), 2)
    assert default_images.shape == (2, 28, 28, 3)  # MNIST's size by default


@pytest.mark.parametrize("split", ["train", "test"])
def test_stacked_digits_channels_are_pool_digits_of_their_labels(split):
    pool_images, pool_labels = data.digits(split=split, image_size=12)
    images, labels = data.stacked_digits(jax.random.key(3), 40, split=split, image_size=12)
    channels = np.moveaxis(np.asarray(images), -1, 1).reshape(120, -1)  # [n * 3, pixels]
    distance = np.abs(channels[:, None, :] - pool_images.reshape(1, len(pool_labels), -1)).max(-1)
    for row, label in zip(distance, np.asarray(labels).ravel()):
        matches = np.flatnonzero(row == 0)
        assert len(matches) >= 1  # every channel is a digit of the split, exactly
        assert label in pool_labels[matches]  # reported with its own label


def test_stacked_digits_labels_are_uniform_and_channels_independent():
    n = 200_000
    draw = jax.jit(lambda key: data.stacked_digits(key, n)[1])  # images are dead code
    labels = np.asarray(draw(jax.random.key(7)))
    for c in range(3):  # each channel uniform over 10 classes
        counts = np.bincount(labels[:, c], minlength=10)
        assert stats.chisquare(counts).pvalue > 1e-3
    for a, b in [(0, 1), (0, 2), (1, 2)]:  # each pair uniform over 100 class pairs
        counts = np.bincount(10 * labels[:, a] + labels[:, b], minlength=100)
        assert stats.chisquare(counts).pvalue > 1e-3
    # The pooled check has power: one channel copying another is far from uniform.
    copied = np.bincount(10 * labels[:, 0] + labels[:, 0], minlength=100)
    assert stats.chisquare(copied).pvalue < 1e-10


def test_stacked_digits_draws_each_digit_of_a_class_equally_often():
    pool_images, pool_labels = data.digits(split="train", image_size=8)
    images, labels = data.stacked_digits(jax.random.key(11), 20_000, image_size=8)
    channels = np.moveaxis(np.asarray(images), -1, 1).reshape(-1, 64)
    drawn_labels = np.asarray(labels).ravel()
    # Pool digits of class 0 by their pixels (identical digits share a key).
    keys = [image.tobytes() for image in pool_images[pool_labels == 0].reshape(-1, 64)]
    distinct = sorted(set(keys))
    multiplicity = np.array([keys.count(k) for k in distinct], float)
    position = {k: i for i, k in enumerate(distinct)}
    counts = np.zeros(len(distinct))
    for image in channels[drawn_labels == 0]:
        counts[position[image.tobytes()]] += 1
    expected = multiplicity / multiplicity.sum() * counts.sum()
    assert counts.sum() > 5_000 and stats.chisquare(counts, expected).pvalue > 1e-3


def test_stacked_digits_deterministic_for_a_key_and_jittable():
    first = data.stacked_digits(jax.random.key(1), 8, image_size=8)
    second = data.stacked_digits(jax.random.key(1), 8, image_size=8)
    other = data.stacked_digits(jax.random.key(2), 8, image_size=8)
    jitted = jax.jit(functools.partial(data.stacked_digits, n=8, image_size=8))(jax.random.key(1))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, jitted):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 0}, ValueError, "n must be >= 1"),
    ({"n": 2.0}, TypeError, "n must be a Python int"),
    ({"image_size": 4}, ValueError, "image_size must be >= 8"),
    ({"image_size": 28.0}, TypeError, "image_size must be a Python int"),
    ({"split": "validation"}, ValueError, "split must be one of"),
])
def test_stacked_digits_bad_arguments(kwargs, error, match):
    kwargs = {"n": 4, **kwargs}
    with pytest.raises(error, match=match):
        data.stacked_digits(jax.random.key(0), **kwargs)


# -------------------------------------------------------------- stacked_mnist


@pytest.fixture
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_stacked_mnist_draws_mock_mnist_digits(tfds):
    with tfds.testing.mock_data(num_examples=20):
        images, labels = data.stacked_mnist(30, seed=5, split="test")
        again, _ = data.stacked_mnist(30, seed=5, split="test")
        other, _ = data.stacked_mnist(30, seed=6, split="test")
        pool = next(iter(tfds.as_numpy(tfds.load("mnist", split="test").batch(100))))
    assert images.shape == (30, 28, 28, 3) and images.dtype == np.float32
    assert labels.shape == (30, 3) and labels.dtype == np.int32
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.std() > 0.1
    np.testing.assert_array_equal(images, again)  # deterministic for a seed
    assert not np.array_equal(images, other)
    # The channels are the mock digits at indices drawn by default_rng(seed).
    index = np.random.default_rng(5).integers(0, len(pool["label"]), size=(30, 3))
    np.testing.assert_array_equal(labels, pool["label"][index])
    expected = pool["image"][..., 0][index].astype(np.float32) / 127.5 - 1.0  # [30, 3, 28, 28]
    np.testing.assert_allclose(images, np.moveaxis(expected, 1, -1), atol=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 0}, ValueError, "n must be >= 1"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
    ({"download": "no"}, TypeError, "download must be a bool"),
    ({"split": "validation"}, ValueError, "split must be MNIST's"),
])
def test_stacked_mnist_bad_arguments_fail_before_loading(kwargs, error, match):
    with pytest.raises(error, match=match):
        data.stacked_mnist(**{"n": 4, **kwargs})


# ------------------------------------------------------- stacked_mode_coverage


def _all_triples():
    return np.stack(np.unravel_index(np.arange(1000), (10, 10, 10)), axis=1).astype(np.int32)


def test_every_triple_once_is_1000_modes_and_kl_zero():
    result = metrics.stacked_mode_coverage(_all_triples())
    assert int(result.modes) == 1000
    np.testing.assert_allclose(result.kl, 0.0, atol=1e-6)
    np.testing.assert_array_equal(result.histogram, np.ones(1000))
    # Channel 0 is the most significant digit of the histogram's index.
    one = metrics.stacked_mode_coverage(np.array([[3, 0, 7]]))
    assert int(np.argmax(one.histogram)) == 307


def test_a_single_triple_is_one_mode_and_kl_log_1000():
    result = metrics.stacked_mode_coverage(np.tile([[4, 2, 9]], (64, 1)))
    assert int(result.modes) == 1
    np.testing.assert_allclose(result.kl, math.log(1000), rtol=1e-6)
    assert int(result.histogram[429]) == 64 and int(result.histogram.sum()) == 64


def test_two_triples_one_to_three_match_scipy():
    predictions = np.array([[1, 2, 3]] * 1 + [[9, 0, 0]] * 3)
    result = metrics.stacked_mode_coverage(predictions)
    p = np.zeros(1000)
    p[123], p[900] = 0.25, 0.75
    assert int(result.modes) == 2
    np.testing.assert_allclose(result.kl, stats.entropy(p, np.full(1000, 1e-3)), rtol=1e-6)
    # By hand: log 1000 - H(1/4, 3/4).
    np.testing.assert_allclose(result.kl, math.log(1000) + 0.25 * math.log(0.25) + 0.75 * math.log(0.75),
                               rtol=1e-6)


def test_other_class_and_channel_counts():
    result = metrics.stacked_mode_coverage(np.array([[0, 1], [1, 0], [1, 1], [1, 1]]), num_classes=2)
    np.testing.assert_array_equal(result.histogram, [0, 1, 1, 2])
    np.testing.assert_allclose(result.kl, stats.entropy([0, 0.25, 0.25, 0.5], np.full(4, 0.25)), rtol=1e-6)


def test_mode_coverage_under_jit_matches_eager_and_drops_out_of_range():
    predictions = np.random.default_rng(0).integers(0, 10, size=(500, 3))
    eager = metrics.stacked_mode_coverage(predictions)
    jitted = jax.jit(metrics.stacked_mode_coverage)(predictions)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # Under jit a class out of range cannot raise: its sample is left out.
    bad = predictions.copy()
    bad[0] = [10, 0, 0]
    dropped = jax.jit(metrics.stacked_mode_coverage)(bad)
    assert int(dropped.histogram.sum()) == 499
    nothing = jax.jit(metrics.stacked_mode_coverage)(np.full((4, 3), -1))
    assert int(nothing.modes) == 0
    np.testing.assert_allclose(nothing.kl, math.log(1000), rtol=1e-6)


@pytest.mark.parametrize("predictions, match", [
    (np.zeros((4,), np.int32), r"predictions must be \[n, channels\]"),
    (np.zeros((2, 3, 1), np.int32), r"predictions must be \[n, channels\]"),
    (np.zeros((4, 3), np.float32), "predictions must hold integer classes"),
    (np.zeros((0, 3), np.int32), "predictions must hold at least one sample"),
    (np.array([[0, 1, 10]]), r"predictions must be classes in \[0, 10\)"),
    (np.array([[0, -1, 2]]), r"predictions must be classes in \[0, 10\)"),
])
def test_mode_coverage_bad_inputs(predictions, match):
    with pytest.raises(ValueError, match=match):
        metrics.stacked_mode_coverage(predictions)


def test_mode_coverage_bad_num_classes():
    with pytest.raises(TypeError, match="num_classes must be a Python int"):
        metrics.stacked_mode_coverage(np.zeros((2, 3), np.int32), num_classes=10.0)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        metrics.stacked_mode_coverage(np.zeros((2, 3), np.int32), num_classes=0)


@_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 2, 7, 100, 3000]),  # few shapes: few compiles
       spread=st.sampled_from([1, 2, 5, 10]))
def test_mode_coverage_properties(seed, n, spread):
    predictions = np.random.default_rng(seed).integers(0, spread, size=(n, 3))
    result = metrics.stacked_mode_coverage(predictions)
    unique, counts = np.unique(predictions, axis=0, return_counts=True)
    assert int(result.modes) == len(unique)
    assert int(result.histogram.sum()) == n
    np.testing.assert_array_equal(np.sort(result.histogram[result.histogram > 0]), np.sort(counts))
    kl = float(result.kl)
    assert 0.0 <= kl <= math.log(1000) + 1e-6
    histogram = np.zeros(1000)
    np.add.at(histogram, predictions @ np.array([100, 10, 1]), 1)  # numpy's own count
    np.testing.assert_allclose(kl, stats.entropy(histogram, np.full(1000, 1e-3)), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------- classify_channels


def _intensity_classifier(x):
    """Probabilities peaked at class round(4.5 * (mean + 1)): the mean intensity's decile."""
    level = 4.5 * (jnp.mean(x, axis=(1, 2, 3)) + 1.0)  # [m] in [0, 9]
    return jax.nn.softmax(-4.0 * jnp.square(jnp.arange(10) - level[:, None]), axis=-1)


def test_classify_channels_recovers_each_channels_class():
    classes = np.random.default_rng(0).integers(0, 10, size=(7, 3))
    images = np.broadcast_to((classes / 4.5 - 1.0)[:, None, None, :], (7, 5, 6, 3)).astype(np.float32)
    predictions, confidence = metrics.classify_channels(_intensity_classifier, images)
    assert predictions.shape == (7, 3) and predictions.dtype == jnp.int32
    assert confidence.shape == (7, 3) and confidence.dtype == jnp.float32
    np.testing.assert_array_equal(predictions, classes)
    logits = -4.0 * np.square(np.arange(10) - classes[..., None])  # [7, 3, 10], numpy's softmax
    expected = np.exp(0.0) / np.exp(logits).sum(-1)  # the peak's probability, at distance 0
    np.testing.assert_allclose(confidence, expected, rtol=1e-5)
    jitted = jax.jit(functools.partial(metrics.classify_channels, _intensity_classifier))(images)
    np.testing.assert_array_equal(jitted[0], classes)


def test_classify_channels_with_a_digit_classifier_matches_per_channel_calls():
    module = models.DigitClassifier(features=(4, 8, 16))
    params = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))["params"]
    fn = models.make_classifier_fn(module, params, batch_size=6)  # one small program
    images, _ = data.stacked_digits(jax.random.key(1), 6, image_size=16)
    predictions, confidence = metrics.classify_channels(lambda x: fn(x)[1], images)
    for c in range(3):
        probs = fn(images[..., c : c + 1])[1]
        np.testing.assert_array_equal(predictions[:, c], jnp.argmax(probs, -1))
        np.testing.assert_allclose(confidence[:, c], jnp.max(probs, -1), rtol=1e-5)


def test_classify_channels_bad_inputs():
    with pytest.raises(TypeError, match="classify must be a callable"):
        metrics.classify_channels("not a function", np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"images must be \[n, height, width, channels\]"):
        metrics.classify_channels(_intensity_classifier, np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"classify must return probabilities \[6, num_classes\]"):
        metrics.classify_channels(lambda x: x[:, 0, 0, 0], np.zeros((2, 4, 4, 3)))


# ------------------------------------------- the classifier that counts the modes

SHIPPED_28 = REPO_ROOT / "runs" / "digits_classifier_28"  # examples/train_digits_classifier.py --image-size 28


def _shipped_28():
    if not (SHIPPED_28 / "metrics.json").exists() or not (SHIPPED_28 / "classifier.msgpack").exists():
        pytest.skip(f"no trained classifier in {SHIPPED_28}: run python -m examples.train_digits_classifier "
                    "--image-size 28 --steps 3000 --out runs/digits_classifier_28")
    return json.loads((SHIPPED_28 / "metrics.json").read_text()), models.load_classifier(SHIPPED_28 / "classifier.msgpack")


def test_shipped_28px_classifier_is_at_least_98_percent_accurate():
    recorded, (module, params, config) = _shipped_28()
    assert config["image_size"] == recorded["config"]["image_size"] == 28
    assert recorded["test_accuracy"] >= 0.98  # the bar for counting 1,000 modes
    # The file on disk is the classifier that was measured.
    images, labels = data.digits(split="test", image_size=28)
    probs = models.make_classifier_fn(module, params)(images)[1]
    accuracy = float(np.mean(np.argmax(probs, -1) == labels))
    np.testing.assert_allclose(accuracy, recorded["test_accuracy"], atol=1e-6)


def test_shipped_28px_classifier_counts_the_modes_of_real_stacked_digits():
    _, (module, params, _) = _shipped_28()
    fn = models.make_classifier_fn(module, params)
    images, labels = data.stacked_digits(jax.random.key(0), 2_000, split="test")
    predictions, _ = metrics.classify_channels(lambda x: fn(x)[1], images)
    assert np.mean(np.all(predictions == labels, axis=1)) >= 0.98**3  # triples right
    counted, true = metrics.stacked_mode_coverage(predictions), metrics.stacked_mode_coverage(labels)
    # 2,000 uniform draws cover 1000 (1 - e^-2) = 865 triples on average.
    assert abs(int(counted.modes) - int(true.modes)) <= 20 and 820 <= int(true.modes) <= 910
    assert abs(float(counted.kl) - float(true.kl)) <= 0.05


def test_first_call_under_jit_in_a_fresh_pool():
    # The digit pool is built while tracing (jgan.data.digits evaluates its
    # upsampling eagerly even under jax.jit): a regression test for a
    # TracerArrayConversionError on the first call.
    from jgan.data import _digits, _stacked

    _stacked._digit_pool.cache_clear()
    _digits._raw_digits.cache_clear()
    images, labels = jax.jit(lambda key: data.stacked_digits(key, 5, image_size=12))(jax.random.key(3))
    eager_images, eager_labels = data.stacked_digits(jax.random.key(3), 5, image_size=12)
    np.testing.assert_array_equal(labels, eager_labels)
    np.testing.assert_allclose(images, eager_images, atol=1e-6)
