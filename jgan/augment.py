"""Differentiable augmentations of the discriminator's inputs (DiffAugment).

A GAN trained on little data overfits its discriminator; DiffAugment applies
the same random, differentiable transformation T to the real and the
generated images before the discriminator sees them (D(T(x)) and D(T(G(z))),
in both players' losses), so the generator still receives gradients through
T. The ops here work on images ``[batch, height, width, channels]`` in
[−1, 1] (the reference's convention) and are linear in ``x`` once their
parameters are drawn:

- color: brightness (add δ ~ U[−0.5, 0.5) per image), then saturation (scale
  each pixel's deviation from its channel mean by s ~ U[0, 2)), then contrast
  (scale the deviation from the image's mean by c ~ U[0.5, 1.5));
- translation: shift by whole pixels, up to ``round(ratio · size)`` either
  way along each axis (ratio 1/8), with zero padding;
- cutout: zero a square of ``round(ratio · size)`` pixels a side (ratio 1/2)
  at a random position, clipped at the image's borders.

Value ranges: translation and cutout only move or zero values, so their
output lies in [min(x.min(), 0), max(x.max(), 0)] (inside [−1, 1] for images
in [−1, 1]). Color does not keep [−1, 1]: brightness alone moves an image by
up to 0.5, as in the reference. It keeps what its parameters define:
brightness keeps each image's spread (max − min), saturation each pixel's
channel mean, contrast each image's mean.

The pure functions (``adjust_brightness``, ``adjust_saturation``,
``adjust_contrast``, ``translate``, ``cutout``) take the drawn parameters
explicitly; :class:`DiffAugment` draws them and composes the ops.

References:
  Zhao, Liu, Lin, Zhu, Han, "Differentiable Augmentation for Data-Efficient
  GAN Training", NeurIPS 2020 (§3 and Figure 4; the policy "color,
  translation, cutout"); reference code: mit-han-lab/data-efficient-gans,
  DiffAugment_pytorch.py.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jgan._parallel import rows_like
from jgan._validate import check_in_range, check_instance, check_int

__all__ = [
    "Augmentation",
    "DiffAugment",
    "POLICIES",
    "adjust_brightness",
    "adjust_saturation",
    "adjust_contrast",
    "translate",
    "cutout",
    "translation_bound",
    "cutout_size",
]

Draw = Callable[[jax.Array, Callable[[jax.Array, int], jax.Array], int], jax.Array]

POLICIES = ("color", "translation", "cutout")
"""The policy names :class:`DiffAugment` knows, in the reference's order."""


# ---------------------------------------------------------------------------
# Input checks.


def _images(x: ArrayLike, name: str) -> jax.Array:
    """``x`` as a 4-D array ``[batch, height, width, channels]``, or a ``ValueError`` naming ``name``."""
    if np.ndim(x) != 4:
        raise ValueError(
            f"{name} must be images [batch, height, width, channels] (4-D), got shape {np.shape(x)}."
        )
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}.")
    return x


def _per_image(value: ArrayLike, batch: int, name: str) -> jax.Array:
    """``value`` as ``[batch, 1, 1, 1]`` (from a scalar or ``[batch]``), or a ``ValueError`` naming ``name``."""
    if np.ndim(value) == 0:
        return jnp.reshape(jnp.asarray(value), (1, 1, 1, 1))
    if np.shape(value) != (batch,):
        raise ValueError(f"{name} must be a scalar or [batch] = ({batch},), got shape {np.shape(value)}.")
    return jnp.reshape(jnp.asarray(value), (batch, 1, 1, 1))


def _pairs(value: ArrayLike, batch: int, name: str) -> jax.Array:
    """Integer ``[batch, 2]`` (rows, columns) per image, or a clear error naming ``name``."""
    if np.shape(value) != (batch, 2):
        raise ValueError(
            f"{name} must be [batch, 2] = ({batch}, 2) integers (rows, columns), got shape {np.shape(value)}."
        )
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise TypeError(f"{name} must hold integers (whole pixels), got dtype {value.dtype}.")
    return value


def _size_pair(size, name: str) -> tuple[int, int]:
    """``size`` (an int or a pair of ints, >= 0; static) as ``(rows, columns)``."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"{name} must be an int or a pair (rows, columns), got {size!r}.")
        return tuple(check_int(s, name, minimum=0, static=True) for s in size)
    s = check_int(size, name, minimum=0, static=True)
    return s, s


# ---------------------------------------------------------------------------
# The ops, with their parameters given.


def adjust_brightness(x: ArrayLike, delta: ArrayLike) -> jax.Array:
    """Adds ``delta`` to every value of each image: ``x + δ``.

    Args:
      x: images, ``[batch, height, width, channels]``.
      delta: the shift of each image, ``[batch]`` (or a scalar for all).

    Returns:
      The shifted images, ``[batch, height, width, channels]``.

    References:
      Zhao et al. 2020, DiffAugment_pytorch.py ``rand_brightness`` (δ ~ U[−0.5, 0.5)).
    """
    x = _images(x, "adjust_brightness x")
    return x + _per_image(delta, x.shape[0], "adjust_brightness delta")


def adjust_saturation(x: ArrayLike, factor: ArrayLike) -> jax.Array:
    """Scales each pixel's deviation from its channel mean: ``m + s · (x − m)``, m = mean over channels.

    With one channel m = x, so this is the identity.

    Args:
      x: images, ``[batch, height, width, channels]``.
      factor: s per image, ``[batch]`` (or a scalar for all); 0 turns the
        images grey, 1 leaves them.

    Returns:
      The images, ``[batch, height, width, channels]``.

    References:
      Zhao et al. 2020, DiffAugment_pytorch.py ``rand_saturation`` (s ~ U[0, 2)).
    """
    return _scale_about_mean(x, factor, -1, "adjust_saturation")


def adjust_contrast(x: ArrayLike, factor: ArrayLike) -> jax.Array:
    """Scales each image's deviation from its mean: ``m + c · (x − m)``, m = mean over the image.

    Args:
      x: images, ``[batch, height, width, channels]``.
      factor: c per image, ``[batch]`` (or a scalar for all).

    Returns:
      The images, ``[batch, height, width, channels]``.

    References:
      Zhao et al. 2020, DiffAugment_pytorch.py ``rand_contrast`` (c ~ U[0.5, 1.5)).
    """
    return _scale_about_mean(x, factor, (1, 2, 3), "adjust_contrast")


def _scale_about_mean(x: ArrayLike, factor: ArrayLike, axis, name: str) -> jax.Array:
    """``m + factor · (x − m)`` per image, ``m`` the mean of ``x`` over ``axis`` (saturation, contrast)."""
    x = _images(x, f"{name} x")
    factor = _per_image(factor, x.shape[0], f"{name} factor")
    mean = jnp.mean(x, axis=axis, keepdims=True)
    return (x - mean) * factor + mean


def _shift_axis(x: jax.Array, shift: jax.Array, axis: int) -> jax.Array:
    """``out[b, ..., i, ...] = x[b, ..., i − shift[b], ...]`` along ``axis``, zero where that is outside."""
    size = x.shape[axis]
    source = jnp.arange(size)[None, :] - shift[:, None]  # [batch, size]
    inside = (source >= 0) & (source < size)
    shape = [x.shape[0], 1, 1, 1]
    shape[axis] = size
    gathered = jnp.take_along_axis(x, jnp.clip(source, 0, size - 1).reshape(shape), axis=axis)
    return jnp.where(inside.reshape(shape), gathered, jnp.zeros((), x.dtype))


def translate(x: ArrayLike, shifts: ArrayLike) -> jax.Array:
    """Moves each image by whole pixels, filling what comes in with zeros.

    ``out[b, i, j] = x[b, i − shifts[b, 0], j − shifts[b, 1]]`` where that
    pixel exists, else 0 (the reference pads with zeros). A shift of the
    whole size or more leaves a zero image. Differentiable in ``x`` (a gather:
    the gradient moves back by the shift).

    Args:
      x: images, ``[batch, height, width, channels]``.
      shifts: integer ``[batch, 2]``: rows down and columns right per image
        (negative: up, left).

    Returns:
      The moved images, ``[batch, height, width, channels]``.

    References:
      Zhao et al. 2020, DiffAugment_pytorch.py ``rand_translation`` (its
      ``out[i] = x[i + t]``: the same draws up to the sign).
    """
    x = _images(x, "translate x")
    shifts = _pairs(shifts, x.shape[0], "translate shifts")
    x = _shift_axis(x, shifts[:, 0], axis=1)
    return _shift_axis(x, shifts[:, 1], axis=2)


def cutout(x: ArrayLike, centers: ArrayLike, size: int | tuple[int, int]) -> jax.Array:
    """Zeroes a ``size`` square (or rectangle) of each image, clipped at the borders.

    The square of image b covers rows ``centers[b, 0] − size_r // 2`` up to
    (not including) that plus ``size_r``, and likewise columns; the part
    outside the image is dropped. Applied as a mask multiply, so the gradient
    with respect to ``x`` is the mask.

    Args:
      x: images, ``[batch, height, width, channels]``.
      centers: integer ``[batch, 2]``, the (row, column) of each square's centre.
      size: the side, an int or ``(rows, columns)``, >= 0 (static: 0 is the identity).

    Returns:
      The images with their squares zeroed, ``[batch, height, width, channels]``.

    References:
      Zhao et al. 2020, DiffAugment_pytorch.py ``rand_cutout``; DeVries and
      Taylor, "Improved Regularization of Convolutional Neural Networks with
      Cutout", 2017.
    """
    x = _images(x, "cutout x")
    centers = _pairs(centers, x.shape[0], "cutout centers")
    size_r, size_c = _size_pair(size, "cutout size")
    _, height, width, _ = x.shape
    top = centers[:, :1] - size_r // 2  # [batch, 1]
    left = centers[:, 1:] - size_c // 2
    rows = jnp.arange(height)[None, :]
    cols = jnp.arange(width)[None, :]
    in_rows = (rows >= top) & (rows < top + size_r)  # [batch, height]
    in_cols = (cols >= left) & (cols < left + size_c)  # [batch, width]
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[..., None].astype(x.dtype)


def translation_bound(size: int, ratio: float) -> int:
    """The largest shift DiffAugment draws along an axis of ``size`` pixels: ``int(size · ratio + 0.5)``."""
    return int(size * ratio + 0.5)


def cutout_size(size: int, ratio: float) -> int:
    """The side of DiffAugment's cutout along an axis of ``size`` pixels: ``int(size · ratio + 0.5)``."""
    return int(size * ratio + 0.5)


# ---------------------------------------------------------------------------
# Augmentations as parts of a GAN: ``make_gan(augment=...)``.


class Augmentation(abc.ABC):
    """A differentiable transformation of the discriminator's inputs: subclass it for your own.

    ``make_gan(augment=...)`` applies it to the real and to the generated
    images before the discriminator sees them (the regularisers see the
    augmented inputs too), in both players' losses.
    """

    @abc.abstractmethod
    def __call__(self, x: jax.Array, *, key: jax.Array, draw: Draw) -> jax.Array:
        """Returns the augmented images, the shape of ``x``.

        Args:
          x: images, ``[batch, height, width, channels]``.
          key: a PRNG key for this augmentation's draws.
          draw: ``draw(key, sampler, n)`` returns this device's ``n`` rows
            of ``sampler(key, n · devices)`` (just ``sampler(key, n)`` on one
            device): make every per-example draw through it, so that a
            data-parallel step equals the single-device step.

        Returns:
          ``[batch, height, width, channels]``, differentiable in ``x``.
        """


@dataclasses.dataclass(frozen=True)
class DiffAugment(Augmentation):
    """DiffAugment: random color, translation and cutout, each drawn per image.

    Applies the ops named in ``policy`` in that order (``"color"`` is
    brightness, saturation, contrast; see the module's docstring for the
    distributions), each with its own key ``fold_in(key, i)`` and every
    parameter drawn through ``draw``. The output is linear in ``x`` for a
    given key, so gradients reach the generator unchanged in form.

    Attributes:
      policy: names from :data:`POLICIES`, applied in the order given (a
        comma-separated string as in the reference is accepted too); ``()``
        is the identity.
      translation_ratio: the largest shift as a fraction of the image's
        height / width, in [0, 1] (1/8 in the paper).
      cutout_ratio: the cutout's side as a fraction of the height / width,
        in [0, 1] (1/2 in the paper).

    References:
      Zhao et al. 2020, §3 (policy "color, translation, cutout", Table 1 and 2).
    """

    policy: tuple[str, ...] = POLICIES
    translation_ratio: float = dataclasses.field(default=0.125, kw_only=True)
    cutout_ratio: float = dataclasses.field(default=0.5, kw_only=True)

    def __post_init__(self):
        policy = self.policy
        if isinstance(policy, str):
            policy = tuple(name.strip() for name in policy.split(",") if name.strip())
        check_instance(policy, "DiffAugment policy", (tuple, list), f"a tuple of names from {POLICIES}")
        for name in policy:
            if name not in POLICIES:
                raise ValueError(f"DiffAugment policy: unknown name {name!r}; the names are {POLICIES}.")
        object.__setattr__(self, "policy", tuple(policy))
        check_in_range(self.translation_ratio, "DiffAugment translation_ratio", 0.0, 1.0, closed_high=True)
        check_in_range(self.cutout_ratio, "DiffAugment cutout_ratio", 0.0, 1.0, closed_high=True)

    def __call__(self, x, *, key, draw):
        x = _images(x, "DiffAugment x")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"DiffAugment x must be floating images, got dtype {x.dtype}.")
        for i, name in enumerate(self.policy):
            op_key = jax.random.fold_in(key, i)
            if name == "color":
                x = self._color(x, op_key, draw)
            elif name == "translation":
                x = self._translation(x, op_key, draw)
            else:
                x = self._cutout(x, op_key, draw)
        return x

    @staticmethod
    def _color(x, key, draw):
        batch, dtype = x.shape[0], x.dtype
        brightness_key, saturation_key, contrast_key = jax.random.split(key, 3)

        def uniform(low, high):
            return lambda k, n: jax.random.uniform(k, (n,), dtype, low, high)

        delta = rows_like(draw(brightness_key, uniform(-0.5, 0.5), batch), x)
        x = adjust_brightness(x, delta)
        saturation = rows_like(draw(saturation_key, uniform(0.0, 2.0), batch), x)
        x = adjust_saturation(x, saturation)
        contrast = rows_like(draw(contrast_key, uniform(0.5, 1.5), batch), x)
        return adjust_contrast(x, contrast)

    def _translation(self, x, key, draw):
        _, height, width, _ = x.shape
        bound = jnp.array(
            [translation_bound(height, self.translation_ratio), translation_bound(width, self.translation_ratio)]
        )

        def sampler(k, n):
            return jax.random.randint(k, (n, 2), -bound, bound + 1)

        return translate(x, rows_like(draw(key, sampler, x.shape[0]), x))

    def _cutout(self, x, key, draw):
        _, height, width, _ = x.shape
        size = (cutout_size(height, self.cutout_ratio), cutout_size(width, self.cutout_ratio))
        # The reference's centres: 0 .. height − (side mod 2) (and so for columns), so
        # the square overhangs either border by at most half its side, symmetrically.
        high = jnp.array([height + 1 - size[0] % 2, width + 1 - size[1] % 2])

        def sampler(k, n):
            return jax.random.randint(k, (n, 2), 0, high)

        return cutout(x, rows_like(draw(key, sampler, x.shape[0]), x), size)
