"""Multi-layer perceptron generator and discriminator.

These are the networks of the mixture-of-Gaussians experiments: in Metz et al.
both the generator and the discriminator have two hidden layers of 128 ReLU
units and the latent dimension is 256. They hold parameters only (no model
state), so they use the stateless apply convention
(``make_apply(module, stateful=False)``). Their ``train`` flag is accepted and
ignored, so every jgan module is called the same way.

References:
  Metz et al., "Unrolled Generative Adversarial Networks", ICLR 2017,
  appendix A (mixture of Gaussians architecture).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]


class MLPGenerator(nn.Module):
    """A fully connected generator ``z -> x``.

    Attributes:
      out_features: the data dimension (2 for the 2-D mixtures).
      hidden: the width of each hidden layer.
      activation: the hidden-layer non-linearity.
      output_activation: applied to the output layer, or ``None`` for a
        linear output (the mixture-of-Gaussians setting).
    """

    out_features: int
    hidden: Sequence[int] = (128, 128)
    activation: Activation = nn.relu
    output_activation: Activation | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = True) -> jax.Array:
        """Maps latents to samples.

        Args:
          x: latents ``[batch, latent_dim]``.
          train: ignored (the network has no train-time behaviour).

        Returns:
          samples ``[batch, out_features]``.
        """
        del train
        for width in self.hidden:
            x = self.activation(nn.Dense(width)(x))
        x = nn.Dense(self.out_features)(x)
        if self.output_activation is not None:
            x = self.output_activation(x)
        return x


class MLPDiscriminator(nn.Module):
    """A fully connected discriminator ``x -> logit``.

    Attributes:
      hidden: the width of each hidden layer.
      activation: the hidden-layer non-linearity.
    """

    hidden: Sequence[int] = (128, 128)
    activation: Activation = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = True) -> jax.Array:
        """Scores a batch.

        Args:
          x: data ``[batch, ...]``; every non-batch axis is flattened, so a
            PacGAN-packed batch ``[batch, pack, features]`` is accepted.
          train: ignored (the network has no train-time behaviour).

        Returns:
          logits (or critic scores) ``[batch]``.
        """
        del train
        x = jnp.reshape(x, (x.shape[0], -1))
        for width in self.hidden:
            x = self.activation(nn.Dense(width)(x))
        return nn.Dense(1)(x)[:, 0]
