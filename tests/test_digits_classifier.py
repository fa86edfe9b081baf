"""Tests for the offline digits (jgan.data.digits) and the domain classifier."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization
from sklearn.datasets import load_digits

from examples import train_digits_classifier
from jgan import data, models


def test_digits_shapes_range_and_labels():
    images, labels = data.digits(split="train", image_size=28)
    assert images.shape == (len(labels), 28, 28, 1) and images.dtype == np.float32
    assert labels.dtype == np.int32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.min() == -1.0 and images.max() == 1.0  # background and full ink both occur
    assert set(np.unique(labels)) == set(range(10))


def test_digits_split_is_a_fixed_partition_of_sklearn_digits():
    raw = load_digits()
    train_x, train_y = data.digits(split="train", image_size=8)
    test_x, test_y = data.digits(split="test", image_size=8)
    all_x, all_y = data.digits(split="all", image_size=8)
    assert len(train_y) + len(test_y) == len(all_y) == len(raw.target) == 1797
    # At the native size the images are sklearn's pixels mapped 0..16 -> -1..1.
    np.testing.assert_allclose(all_x[..., 0], raw.images / 8.0 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(all_y, raw.target)
    index = np.arange(1797)
    np.testing.assert_array_equal(test_y, raw.target[index % 5 == 4])
    np.testing.assert_array_equal(train_y, raw.target[index % 5 != 4])
    # Deterministic: a second call gives the same arrays.
    np.testing.assert_array_equal(data.digits(split="test", image_size=8)[0], test_x)


@pytest.mark.parametrize("kwargs", [{"split": "validation"}, {"image_size": 4}])
def test_digits_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        data.digits(**kwargs)


def test_digits_non_int_image_size_raises_type_error():
    with pytest.raises(TypeError, match="image_size must be a Python int"):
        data.digits(image_size=16.0)


def _classifier(seed=0, size=16):
    module = models.DigitClassifier(features=(4, 8, 16))
    params = module.init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, size, size, 1)))["params"]
    return module, params


def test_classifier_shapes_and_features_are_the_pooled_last_conv():
    module, params = _classifier()
    x = jax.random.uniform(jax.random.key(1), (3, 16, 16, 1), minval=-1, maxval=1)
    out = module.apply({"params": params}, x)
    assert out.features.shape == (3, 16) and out.logits.shape == (3, 10)
    # The logits are an affine map of the features (the last layer is Dense).
    dense = params["Dense_0"]
    np.testing.assert_allclose(out.logits, out.features @ dense["kernel"] + dense["bias"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="height, width"):
        module.apply({"params": params}, x[0])


def test_classifier_save_load_round_trip(tmp_path):
    module, params = _classifier()
    path = tmp_path / "sub" / "classifier.msgpack"
    models.save_classifier(path, module, params, image_size=16)
    assert sorted(os.listdir(path.parent)) == ["classifier.msgpack"]  # no temporary file left behind
    loaded_module, loaded_params, config = models.load_classifier(path)
    assert config == {"num_classes": 10, "features": (4, 8, 16), "image_size": 16, "channels": 1}
    assert loaded_module == module
    jax.tree.map(np.testing.assert_array_equal, loaded_params, params)


def test_make_classifier_fn_chunks_like_one_call():
    module, params = _classifier()
    x = jax.random.uniform(jax.random.key(2), (7, 16, 16, 1), minval=-1, maxval=1)
    features, probs = models.make_classifier_fn(module, params, batch_size=3)(x)
    out = module.apply({"params": params}, x)
    np.testing.assert_allclose(features, out.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs, jax.nn.softmax(out.logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_load_classifier_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        models.load_classifier(tmp_path / "missing.msgpack")
    garbage = tmp_path / "garbage.msgpack"
    garbage.write_bytes(b"\x00not msgpack at all")
    with pytest.raises(ValueError, match="not a jgan classifier"):
        models.load_classifier(garbage)
    other = tmp_path / "other.msgpack"
    other.write_bytes(serialization.msgpack_serialize({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a jgan classifier"):
        models.load_classifier(other)
    # A file whose parameters do not fit the architecture it records.
    module, params = _classifier()
    good = tmp_path / "good.msgpack"
    models.save_classifier(good, module, params, image_size=16)
    payload = serialization.msgpack_restore(good.read_bytes())
    payload["params"]["Dense_0"]["kernel"] = np.zeros((5, 10), np.float32)
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(serialization.msgpack_serialize(payload))
    with pytest.raises(ValueError, match="Dense_0.*shape"):
        models.load_classifier(bad)


def test_random_shift_moves_content_and_fills_background():
    images = -jnp.ones((1, 6, 6, 1)).at[0, 2, 3, 0].set(1.0)
    for seed in range(5):
        shifted = train_digits_classifier.random_shift(jax.random.key(seed), images, 2)
        assert shifted.shape == images.shape
        ink = np.argwhere(np.asarray(shifted[0, ..., 0]) > 0)
        # The single ink pixel moved by at most 2 along each axis (or left the frame).
        assert len(ink) <= 1 and np.all(np.abs(ink - np.array([2, 3])) <= 2)
        assert set(np.unique(np.asarray(shifted))) <= {-1.0, 1.0}


@pytest.mark.slow
def test_training_script_learns_digits(tmp_path):
    result = train_digits_classifier.main(
        ["--out", str(tmp_path), "--steps", "200", "--image-size", "16", "--quiet"])
    assert result["test_accuracy"] > 0.8  # measured 0.88; chance is 0.1
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["test_accuracy"] == result["test_accuracy"]
    module, params, config = models.load_classifier(tmp_path / "classifier.msgpack")
    assert config["image_size"] == 16
    features, probs = models.make_classifier_fn(module, params)(data.digits(split="test", image_size=16)[0])
    np.testing.assert_allclose(np.mean(np.argmax(probs, -1) == data.digits(split="test", image_size=16)[1]),
                               result["test_accuracy"], atol=1e-6)
    # A confident classifier on class-balanced real data scores well above the
    # IS of uninformative predictions (1); measured 4.4 after 200 steps.
    assert result["inception_score_test"][0] > 3.0
    assert 0 <= result["fid_train_halves"] < result["fid_train_vs_test"] < 50
