"""A small domain classifier for small images, the feature network of FID/IS.

InceptionV3's features mean little for 8x8-upsampled digits or MNIST, and it
is slow on a CPU. The standard practice for small data (e.g. the "MNIST FID"
of many GAN papers) is a classifier trained on the domain itself: its
penultimate activations play the role of Inception's pool3 features (FID,
KID) and its softmax the role of Inception's class probabilities (IS).

``DigitClassifier`` is that network: three 3x3 convolutions (the last two
strided), a global average pool giving the features, and a linear layer giving
the logits. It has no BatchNorm, so inference needs only ``params``.
``examples/train_digits_classifier.py`` trains it; ``save_classifier`` and
``load_classifier`` store it in one self-describing file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import serialization

from jgan import _validate

FORMAT = "jgan-classifier-v1"


class ClassifierOutput(NamedTuple):
    """What ``DigitClassifier`` returns.

    Attributes:
      features: the globally pooled last convolution, ``[batch, features[-1]]``
        (the FID / KID feature space).
      logits: unnormalised class scores, ``[batch, num_classes]``.
    """

    features: jax.Array  # [batch, feature_dim]
    logits: jax.Array  # [batch, num_classes]


class DigitClassifier(nn.Module):
    """A convolutional classifier for small images (e.g. 28x28 or 32x32 digits).

    Attributes:
      num_classes: the number of classes.
      features: channels of the three 3x3 convolutions; the second and third
        have stride 2. ``features[-1]`` is the feature dimension.
    """

    num_classes: int = 10
    features: Sequence[int] = (32, 64, 128)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> ClassifierOutput:
        """Classifies a batch of images.

        Args:
          x: images ``[batch, height, width, channels]`` in ``[-1, 1]``.
          train: ignored (the network behaves the same in training and
            inference); accepted so every jgan module is called alike.

        Returns:
          a ``ClassifierOutput`` with the pooled features and the logits.
        """
        del train
        if x.ndim != 4:
            raise ValueError(f"Expected images [batch, height, width, channels], got shape {x.shape}.")
        for index, width in enumerate(self.features):
            stride = 1 if index == 0 else 2
            x = nn.relu(nn.Conv(width, (3, 3), strides=(stride, stride), padding="SAME")(x))
        features = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes)(features)
        return ClassifierOutput(features=features, logits=logits)


def save_classifier(path: str | os.PathLike, module: DigitClassifier, params: Any, *, image_size: int, channels: int = 1) -> None:
    """Writes a trained classifier to one file, atomically.

    The file is flax's msgpack serialisation of ``{"format", "config",
    "params"}``; ``config`` records the module's fields and the input shape,
    so ``load_classifier`` rebuilds the network without extra arguments. The
    file is written next to its destination and renamed into place, so an
    interrupted save never leaves a truncated file at ``path``.

    Args:
      path: the destination file (its directory is created if needed).
      module: the classifier the parameters belong to.
      params: its ``"params"`` collection.
      image_size: the side of the square images it was trained on.
      channels: the number of image channels it was trained on.
    """
    path = os.fspath(path)
    config = {
        "num_classes": int(module.num_classes),
        "features": [int(width) for width in module.features],
        "image_size": int(image_size),
        "channels": int(channels),
    }
    payload = serialization.msgpack_serialize(
        {"format": FORMAT, "config": config, "params": jax.device_get(serialization.to_state_dict(params))}
    )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-classifier-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load_classifier(path: str | os.PathLike) -> tuple[DigitClassifier, Any, dict[str, int]]:
    """Reads a classifier written by ``save_classifier``.

    Args:
      path: the file.

    Returns:
      ``(module, params, config)``; ``config`` has ``num_classes``,
      ``features``, ``image_size`` and ``channels``.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: if the file is not a jgan classifier file or its
        parameters do not fit the architecture it records.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No classifier file at {path!r}; train one with examples/train_digits_classifier.py.")
    with open(path, "rb") as file:
        raw = file.read()
    try:
        payload = serialization.msgpack_restore(raw)
    except Exception as error:  # msgpack raises several types for garbage
        raise ValueError(f"{path!r} is not a jgan classifier file (not msgpack: {error}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a jgan classifier file (expected format {FORMAT!r}).")
    config = dict(payload["config"])
    config["features"] = tuple(int(width) for width in config["features"])
    module = DigitClassifier(num_classes=config["num_classes"], features=config["features"])
    example = jax.ShapeDtypeStruct((1, config["image_size"], config["image_size"], config["channels"]), jnp.float32)
    expected = jax.eval_shape(module.init, jax.random.key(0), example)["params"]
    params = payload["params"]
    want = jax.tree_util.tree_flatten_with_path(expected)[0]
    got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    if len(got) != len(want):
        raise ValueError(f"{path!r}: expected {len(want)} parameter arrays, found {len(got)}.")
    for key_path, leaf in want:
        name = jax.tree_util.keystr(key_path)
        if key_path not in got:
            raise ValueError(f"{path!r}: missing parameter {name}.")
        if tuple(got[key_path].shape) != tuple(leaf.shape):
            raise ValueError(f"{path!r}: parameter {name} has shape {tuple(got[key_path].shape)}, expected {tuple(leaf.shape)}.")
    params = jax.tree.map(jnp.asarray, serialization.from_state_dict(expected, params))
    return module, params, config


def make_classifier_fn(module: DigitClassifier, params: Any, *, batch_size: int = 500) -> Callable[[Any], tuple[jax.Array, jax.Array]]:
    """Makes ``images -> (features, probabilities)`` for FID, KID and IS.

    Args:
      module: the classifier.
      params: its parameters.
      batch_size: images per compiled call (the last chunk is padded, so
        one program serves every input size).

    Returns:
      a function of images ``[n, h, w, c]`` in ``[-1, 1]`` returning the
      features ``[n, feature_dim]`` and softmax probabilities
      ``[n, num_classes]``.

    Raises:
      TypeError: if ``batch_size`` is not an int.
      ValueError: if ``batch_size < 1``.
    """
    batch_size = _validate.check_int(batch_size, "batch_size", minimum=1)

    @jax.jit
    def _chunk(images):
        out = module.apply({"params": params}, images)
        return out.features, jax.nn.softmax(out.logits, axis=-1)

    def classify(images):
        images = jnp.asarray(images, jnp.float32)
        n = images.shape[0]
        if n == 0:
            raise ValueError("No images to classify.")
        pad = (-n) % batch_size
        padded = jnp.concatenate([images, jnp.zeros((pad, *images.shape[1:]), images.dtype)]) if pad else images
        features, probs = [], []
        for start in range(0, padded.shape[0], batch_size):
            f, p = _chunk(padded[start : start + batch_size])
            features.append(f)
            probs.append(p)
        return jnp.concatenate(features)[:n], jnp.concatenate(probs)[:n]

    return classify
