"""Class-conditional DCGAN networks: a conditional generator and a projection discriminator.

Both are called as ``module(x, labels, *, train=...)`` with integer class
labels ``[batch]``, so ``make_apply(module, stateful=True)`` gives the apply
functions that ``jgan.steps.make_train_step`` calls with a conditional batch
``{"x": images, "label": labels}`` (the step passes the labels to both
networks).

Conditioning:

- The generator *concatenates* a learned class embedding to the latent
  vector, as Mirza & Osindero feed ``y`` alongside ``z`` into the generator's
  first layer. With ``embed_dim = num_classes`` (the default) this is exactly
  as expressive as their one-hot concatenation: the projection of a one-hot
  ``y`` is a learned bias per class, and so is the projection of the
  embedding. The rest is :class:`~jgan.models.DCGANGenerator` (BatchNorm,
  ReLU, tanh) applied to ``[z, embed(y)]``.
- The discriminator is the projection discriminator of Miyato & Koyama:
  ``logit = ψ(φ(x)) + ⟨embed(y), φ(x)⟩``, where ``φ`` is a DCGAN trunk
  (strided convolutions, BatchNorm except on the input layer, LeakyReLU 0.2)
  followed by global sum pooling over space, ``ψ`` is a linear layer to one
  output and ``embed`` a learned matrix ``V [num_classes, channels]``. With
  ``spectral_norm=True`` every weight is spectrally normalised, the class
  embedding ``V`` included, as in Miyato & Koyama's code (``SNEmbedID``): see
  :mod:`jgan.models._dcgan` for what lives in the model state.

Labels outside ``[0, num_classes)``: when the labels are concrete (eager
calls, ``init_model``) both networks raise ``ValueError``. Under ``jax.jit``
the values are unknown at trace time; the networks then look labels up with
an out-of-bounds fill of NaN (never a clamp, and never NumPy's wrap-around of
negative indices), so an out-of-range label makes that example's output NaN.
``jgan.steps.make_train_step`` reports such a step as ``nonfinite`` (and
:func:`jgan.steps.check_finite` raises); call :func:`check_labels` on the host
to reject a batch before it reaches a compiled step.

References:
  Mirza, Osindero, "Conditional Generative Adversarial Nets", 2014, sec. 3.2
  and 4.1.
  Miyato, Koyama, "cGANs with Projection Discriminator", ICLR 2018, eq. 3
  and sec. 3 (the projection form) and appendix (global sum pooling).
  Radford, Metz, Chintala, ICLR 2016 (the DCGAN trunk).
  Miyato, Kataoka, Koyama, Yoshida, "Spectral Normalization for Generative
  Adversarial Networks", ICLR 2018, eq. 8 and Algorithm 1.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jgan import _validate
from jgan.models._dcgan import (
    _KERNEL_INIT,
    _LEAKY_SLOPE,
    DCGANGenerator,
    _batch_norm,
    _spectrally_normalize,
    _spectrally_normalized,
)


def check_labels(labels: ArrayLike, num_classes: int, *, batch: int | None = None) -> jax.Array:
    """Checks class labels and returns them as an array.

    The dtype and shape are checked always (at trace time under ``jit``); the
    values only when they are concrete (not traced).

    Args:
      labels: integer class labels ``[batch]``.
      num_classes: the number of classes; labels must lie in
        ``[0, num_classes)``.
      batch: if given, the expected batch size.

    Returns:
      ``labels`` as a ``jax.Array``.

    Raises:
      ValueError: for a non-integer dtype, a shape other than ``[batch]``, or
        (concrete labels only) a value outside ``[0, num_classes)``;
        ``num_classes < 1`` or ``batch < 0``.
      TypeError: if ``num_classes`` or ``batch`` (when given) is not an int.
    """
    num_classes = _validate.check_int(num_classes, "num_classes", minimum=1, static=True)
    if batch is not None:
        batch = _validate.check_int(batch, "batch", minimum=0, static=True)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
    if labels.ndim != 1 or (batch is not None and labels.shape[0] != batch):
        expected = "[batch]" if batch is None else f"[{batch}]"
        raise ValueError(f"labels must have shape {expected}, got {labels.shape}.")
    try:
        values = np.asarray(labels)
    except jax.errors.TracerArrayConversionError:
        return labels  # Traced: out-of-range values give NaN outputs (see the module doc).
    bad = (values < 0) | (values >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {sorted(set(values[bad].tolist()))}."
        )
    return labels


def _embed(table: jax.Array, labels: jax.Array) -> jax.Array:
    """Rows ``table[labels]``; NaN rows for labels outside ``[0, len(table))``."""
    n = table.shape[0]
    index = jnp.where((labels >= 0) & (labels < n), labels, n)
    return jnp.take(table, index, axis=0, mode="fill", fill_value=jnp.nan)


class ConditionalDCGANGenerator(nn.Module):
    """A class-conditional DCGAN generator ``(z, y) -> image``.

    A learned embedding of the label is concatenated to ``z`` and the result
    goes through :class:`~jgan.models.DCGANGenerator` (BatchNorm, so use
    ``make_apply(module, stateful=True)``).

    Attributes:
      image_size: the output height and width, one of 28, 32 and 64.
      num_classes: the number of classes.
      channels: the output channels.
      features: the DCGAN generator's width (see ``DCGANGenerator``).
      embed_dim: the size of the label embedding; ``None`` is
        ``num_classes`` (as expressive as one-hot concatenation).
      momentum: BatchNorm momentum of the running averages.
      axis_name: if set, BatchNorm statistics are averaged over this mapped
        axis.
    """

    image_size: int
    num_classes: int
    channels: int = 3
    features: int = 64
    embed_dim: int | None = None
    momentum: float = 0.9
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array, *, train: bool = True) -> jax.Array:
        """Maps latents and labels to images.

        Args:
          z: latents ``[batch, latent_dim]``.
          labels: integer class labels ``[batch]`` in ``[0, num_classes)``.
          train: BatchNorm with batch statistics (``True``) or running
            averages (``False``).

        Returns:
          images ``[batch, image_size, image_size, channels]`` in [-1, 1]
          (NaN for an out-of-range label under ``jit``).

        Raises:
          ValueError: for bad label dtypes or shapes, or concrete labels
            outside ``[0, num_classes)``.
        """
        labels = check_labels(labels, self.num_classes, batch=z.shape[0])
        dim = self.num_classes if self.embed_dim is None else self.embed_dim
        table = self.param("label_embedding", nn.initializers.normal(stddev=1.0), (self.num_classes, dim))
        x = jnp.concatenate([z, _embed(table, labels).astype(z.dtype)], axis=-1)
        body = DCGANGenerator(
            image_size=self.image_size,
            channels=self.channels,
            features=self.features,
            momentum=self.momentum,
            axis_name=self.axis_name,
            name="body",
        )
        return body(x, train=train)


class ProjectionDiscriminator(nn.Module):
    """A projection discriminator ``(x, y) -> logit`` with a DCGAN trunk.

    ``logit = ψ(φ(x)) + ⟨V[y], φ(x)⟩`` (Miyato & Koyama, eq. 3). ``φ(x)`` is
    the trunk's last feature map summed over space, ``[batch, channels]``; it
    is also sown as ``"intermediates"/"features"`` for inspection (ignored
    unless that collection is mutable). The trunk halves the spatial size
    while it exceeds 7 (64 -> 4, 32 -> 4, 28 -> 7), like
    :class:`~jgan.models.DCGANDiscriminator`. BatchNorm, so use
    ``make_apply(module, stateful=True)``.

    Attributes:
      num_classes: the number of classes.
      features: the channel count of the first layer; each later layer
        doubles it.
      momentum: BatchNorm momentum of the running averages.
      axis_name: if set, BatchNorm statistics are averaged over this mapped
        axis.
      spectral_norm: spectrally normalise every weight: the convolution
        kernels, ``ψ`` and the class embedding ``V`` (Miyato & Koyama's
        code). BatchNorm stays; ``u`` and ``sigma`` join its statistics in
        ``"batch_stats"``. The parameters are those of the network without it.
    """

    num_classes: int
    features: int = 64
    momentum: float = 0.9
    axis_name: str | None = None
    spectral_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, *, train: bool = True) -> jax.Array:
        """Scores a batch of labelled images.

        Args:
          x: images ``[batch, height, width, channels]``.
          labels: integer class labels ``[batch]`` in ``[0, num_classes)``.
          train: BatchNorm with batch statistics (``True``) or running
            averages (``False``); with ``spectral_norm``, store the power
            iteration's ``u`` and ``sigma`` or not.

        Returns:
          logits ``[batch]`` (NaN for an out-of-range label under ``jit``).

        Raises:
          ValueError: for bad label dtypes or shapes, or concrete labels
            outside ``[0, num_classes)``.
          TypeError: if ``spectral_norm`` is not a bool.
        """
        labels = check_labels(labels, self.num_classes, batch=x.shape[0])
        spectral_norm = _validate.check_bool(self.spectral_norm, "spectral_norm")
        sn = functools.partial(_spectrally_normalized, spectral_norm=spectral_norm, train=train)
        width = self.features
        h = sn(nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", kernel_init=_KERNEL_INIT))(x)
        h = nn.leaky_relu(h, _LEAKY_SLOPE)
        while max(h.shape[1:3]) > 7:
            width *= 2
            h = sn(nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", use_bias=False, kernel_init=_KERNEL_INIT))(h)
            h = nn.leaky_relu(_batch_norm(train, self.momentum, self.axis_name)(h), _LEAKY_SLOPE)
        phi = jnp.sum(h, axis=(1, 2))  # Global sum pooling: [batch, channels].
        self.sow("intermediates", "features", phi)
        psi = sn(nn.Dense(1, kernel_init=_KERNEL_INIT, name="psi"))(phi)[:, 0]
        table = self.param("class_embedding", _KERNEL_INIT, (self.num_classes, width))
        if spectral_norm:
            table = _spectrally_normalize(self, "class_embedding", table, update_stats=train)
        projection = jnp.sum(_embed(table, labels).astype(phi.dtype) * phi, axis=-1)
        return psi + projection
