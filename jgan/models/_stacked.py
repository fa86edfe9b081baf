"""The stacked-MNIST networks of Metz et al. (2017), for the 1,000-mode benchmark.

Metz et al. measure mode collapse on Stacked MNIST (three digits as the
channels of one 28x28 image: 1,000 modes) with deliberately small networks,
and make the discriminator weaker still (a quarter or half of the
generator's widths) so that collapse shows. PacGAN reprints the setting
(Table 3). Layer plans (spatial size x channels):

- generator: ``z [256]`` -> linear 4x4x64 -> transposed 3x3 convolutions with
  stride 2 to 7x7x32, 14x14x16 and 28x28x8 (BatchNorm and ReLU after the
  linear layer and each of them) -> a 3x3 convolution to 28x28x3 -> tanh.
  The 4 -> 7 step pads the dilated input by one on each side (PyTorch's
  ``ConvTranspose2d(3, stride=2, padding=1)``); the others are ``"SAME"``.
- discriminator: three 3x3 convolutions with stride 2, 28 -> 14 -> 7 -> 4,
  with ``features`` channels: (2, 4, 8) for "D = ¼ G" and (4, 8, 16) for
  "D = ½ G" (a quarter and a half of the generator's 8, 16, 32), leaky ReLU
  with slope 0.3, then a linear layer to one logit. BatchNorm follows the
  second and third convolutions, not the first (the DCGAN rule that the
  discriminator's input layer is not normalised; the papers' tables do not
  say). Any channel count is accepted, so a PacGAN-packed input
  (``pack * 3`` channels) needs nothing else.

Weights are drawn from N(0, 0.02) and BatchNorm scales from N(1, 0.02), as in
``DCGANGenerator``; layers followed by BatchNorm have no bias. Both networks
keep BatchNorm statistics: use them with ``make_apply(module, stateful=True)``.

References:
  Metz, Poole, Pfau, Sohl-Dickstein, "Unrolled Generative Adversarial
  Networks", ICLR 2017, sec. 3.3 and Table 2 (architecture in the appendix).
  Lin, Khetan, Fanti, Oh, "PacGAN: The power of two samples in generative
  adversarial networks", NeurIPS 2018, sec. 4 and Table 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgan.models._dcgan import _KERNEL_INIT, _batch_norm
from jgan.models._upsample import ConvTranspose

#: The discriminator widths of Metz et al.'s two settings.
METZ_QUARTER_FEATURES = (2, 4, 8)
METZ_HALF_FEATURES = (4, 8, 16)
_LEAKY_SLOPE = 0.3
# (output side, channels, padding of the dilated input) of the transposed convolutions.
_GENERATOR_PLAN = ((7, 32, ((1, 1), (1, 1))), (14, 16, "SAME"), (28, 8, "SAME"))


class StackedGenerator(nn.Module):
    """Metz et al.'s stacked-MNIST generator ``z -> image [28, 28, channels]``.

    Attributes:
      channels: the output channels (3 for stacked digits).
      momentum: BatchNorm momentum of the running averages.
      axis_name: if set, BatchNorm statistics are averaged over this mapped axis.
      upsample_method: :class:`~jgan.models.ConvTranspose`'s ``method``.
    """

    channels: int = 3
    momentum: float = 0.9
    axis_name: str | None = None
    upsample_method: str = "auto"

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool = True) -> jax.Array:
        """Maps latents to images.

        Args:
          z: latents ``[batch, latent_dim]`` (256 in the paper).
          train: normalise with batch statistics and update the running
            averages (``True``) or use the running averages (``False``).

        Returns:
          images ``[batch, 28, 28, channels]`` in [-1, 1].
        """
        if z.ndim != 2:
            raise ValueError(f"Expected latents [batch, latent_dim], got shape {z.shape}.")
        x = nn.Dense(4 * 4 * 64, use_bias=False, kernel_init=_KERNEL_INIT, name="project")(z)
        x = jnp.reshape(x, (x.shape[0], 4, 4, 64))
        x = nn.relu(_batch_norm(train, self.momentum, self.axis_name)(x))
        for _, width, padding in _GENERATOR_PLAN:
            x = ConvTranspose(
                width, (3, 3), strides=(2, 2), padding=padding, use_bias=False, kernel_init=_KERNEL_INIT,
                method=self.upsample_method,
            )(x)  # fmt: skip
            x = nn.relu(_batch_norm(train, self.momentum, self.axis_name)(x))
        x = nn.Conv(self.channels, (3, 3), padding="SAME", kernel_init=_KERNEL_INIT, name="to_image")(x)
        return jnp.tanh(x)


class StackedDiscriminator(nn.Module):
    """Metz et al.'s stacked-MNIST discriminator ``image [28, 28, c] -> logit``.

    Attributes:
      features: the channels of the three stride-2 convolutions:
        :data:`METZ_QUARTER_FEATURES` (2, 4, 8) for "D = ¼ G",
        :data:`METZ_HALF_FEATURES` (4, 8, 16) for "D = ½ G".
      momentum: BatchNorm momentum of the running averages.
      axis_name: if set, BatchNorm statistics are averaged over this mapped axis.
    """

    features: Sequence[int] = METZ_QUARTER_FEATURES
    momentum: float = 0.9
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = True) -> jax.Array:
        """Scores a batch of images.

        Args:
          x: images ``[batch, 28, 28, channels]``, any channel count
            (``pack * 3`` for PacGAN-packed stacked digits).
          train: normalise with batch statistics and update the running
            averages (``True``) or use the running averages (``False``).

        Returns:
          logits ``[batch]``.
        """
        if x.ndim != 4:
            raise ValueError(f"Expected images [batch, height, width, channels], got shape {x.shape}.")
        if len(self.features) != 3:
            raise ValueError(f"features must give the three convolutions' channels, got {self.features!r}.")
        for index, width in enumerate(self.features):
            normalized = index > 0
            x = nn.Conv(width, (3, 3), strides=(2, 2), padding="SAME", use_bias=not normalized,
                        kernel_init=_KERNEL_INIT)(x)
            if normalized:
                x = _batch_norm(train, self.momentum, self.axis_name)(x)
            x = nn.leaky_relu(x, _LEAKY_SLOPE)
        x = nn.Dense(1, kernel_init=_KERNEL_INIT, name="logit")(jnp.reshape(x, (x.shape[0], -1)))
        return jnp.reshape(x, (x.shape[0],))
