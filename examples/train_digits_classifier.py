"""Trains the domain classifier that gives FID and IS on small digit images.

FID and IS need a feature network and a classifier of the images' domain.
For 32x32 digits, InceptionV3 (trained on ImageNet photos at 299x299) is both
slow and off-domain; this script trains ``jgan.models.DigitClassifier`` on the
offline digits (``jgan.data.digits``, no network) and writes to ``--out``:

- ``classifier.msgpack``: the network, loadable with
  ``jgan.models.load_classifier(path)``;
- ``metrics.json``: test accuracy and the real-data reference values of the
  metrics in this feature space: the FID and KID between two halves of the
  training images (the floor a perfect generator would reach with a sample of
  that size), between the training and the test images (which adds the
  classifier's own train/test shift), and the Inception Score of the test
  images.

Usage::

    python -m examples.train_digits_classifier --out runs/digits_classifier

It takes about a minute on two CPU cores. Training shifts every image by up to
``--max-shift`` pixels (edges filled with the background, -1) so the features
do not hinge on exact registration, which generated digits lack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgan import data, metrics, models


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
    """Translates each image by a random integer offset, filling with -1.

    Args:
        key: a PRNG key.
        images: ``[batch, h, w, c]`` in ``[-1, 1]``.
        max_shift: the largest offset in pixels along each axis.

    Returns:
        the shifted images, ``[batch, h, w, c]``.
    """
    if max_shift == 0:
        return images
    _, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), constant_values=-1.0)
    offsets = jax.random.randint(key, (images.shape[0], 2), 0, 2 * max_shift + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def make_train_step(module: models.DigitClassifier, optimizer: optax.GradientTransformation, max_shift: int):
    """A jitted ``(params, opt_state, key, images, labels) -> (params, opt_state, loss)``."""

    @jax.jit
    def train_step(params, opt_state, key, images, labels):
        images = random_shift(key, images, max_shift)

        def loss_fn(p):
            logits = module.apply({"params": p}, images).logits
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def train(
    *, steps: int, batch_size: int, learning_rate: float, image_size: int, max_shift: int, seed: int, show_progress: bool = True
) -> dict[str, Any]:
    """Trains the classifier; returns the module, its parameters and metrics."""
    train_images, train_labels = data.digits(split="train", image_size=image_size)
    test_images, test_labels = data.digits(split="test", image_size=image_size)
    module = models.DigitClassifier()
    key = jax.random.key(seed)
    init_key, key = jax.random.split(key)
    params = module.init(init_key, jnp.zeros((1, image_size, image_size, 1)))["params"]
    schedule = optax.cosine_decay_schedule(learning_rate, steps)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(params)
    train_step = make_train_step(module, optimizer, max_shift)

    rng = np.random.default_rng(seed)
    n = len(train_labels)
    start = time.perf_counter()
    for step in range(steps):
        index = rng.choice(n, size=batch_size, replace=False)
        key, step_key = jax.random.split(key)
        params, opt_state, loss = train_step(params, opt_state, step_key, train_images[index], train_labels[index])
        if show_progress and (step + 1) % max(1, steps // 10) == 0:
            print(f"step {step + 1:5d}/{steps}  loss {float(loss):.4f}", flush=True)
    seconds = time.perf_counter() - start

    classify = models.make_classifier_fn(module, params)
    train_features, _ = classify(train_images)
    test_features, test_probs = classify(test_images)
    accuracy = float(jnp.mean(jnp.argmax(test_probs, -1) == test_labels))
    is_mean, is_std = metrics.inception_score(test_probs, splits=10)
    half = len(train_labels) // 2
    kid_size = min(len(test_labels), 300)
    first, second = train_features[0 : 2 * half : 2], train_features[1 : 2 * half : 2]  # interleaved halves
    kid_halves = metrics.kid(first, second, subsets=100, subset_size=kid_size, key=jax.random.key(seed))
    kid_test = metrics.kid(train_features, test_features, subsets=100, subset_size=kid_size, key=jax.random.key(seed))
    result = {
        "test_accuracy": accuracy,
        "fid_train_halves": float(metrics.fid(first, second)),
        "kid_train_halves": [float(kid_halves.mean), float(kid_halves.std)],
        "fid_train_vs_test": float(metrics.fid(train_features, test_features)),
        "kid_train_vs_test": [float(kid_test.mean), float(kid_test.std)],
        "inception_score_test": [float(is_mean), float(is_std)],
        "train_seconds": seconds,
        "config": {
            "steps": steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "image_size": image_size,
            "max_shift": max_shift,
            "seed": seed,
        },
    }
    return {"module": module, "params": params, "metrics": result}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/digits_classifier", help="output directory")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--max-shift", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.max_shift < 0:
        parser.error("--steps and --batch-size must be >= 1 and --max-shift >= 0.")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        parser.error(f"cannot create --out {args.out!r}: {error}")
    trained = train(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        image_size=args.image_size,
        max_shift=args.max_shift,
        seed=args.seed,
        show_progress=not args.quiet,
    )
    path = os.path.join(args.out, "classifier.msgpack")
    models.save_classifier(path, trained["module"], trained["params"], image_size=args.image_size)
    with open(os.path.join(args.out, "metrics.json"), "w") as file:
        json.dump(trained["metrics"], file, indent=2)
    print(json.dumps(trained["metrics"], indent=2))
    print(f"wrote {path}")
    return trained["metrics"]


if __name__ == "__main__":
    main(sys.argv[1:])
