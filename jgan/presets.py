"""Hyper-parameters of the seed algorithms, ready for ``make_train_step``.

>>> p = presets.wgan_gp()
>>> step = make_train_step(generator=g, discriminator=d, latent_dim=128,
...                        **p.step_kwargs())
>>> state = init_state(key, g_params, d_params, g_optimizer=p.g_optimizer,
...                    d_optimizer=p.d_optimizer)

Each preset also carries the batch size of its paper (data loading is the
caller's), and the reference it reproduces.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optax

__all__ = ["Preset", "wgan", "wgan_gp", "dcgan"]


class Preset(NamedTuple):
    """A named set of train-step hyper-parameters."""

    loss: str
    d_steps: int
    g_optimizer: optax.GradientTransformation
    d_optimizer: optax.GradientTransformation
    gradient_penalty: float
    weight_clip: float | None
    batch_size: int
    reference: str

    def step_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``make_train_step`` this preset fixes."""
        return dict(
            loss=self.loss,
            d_steps=self.d_steps,
            g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer,
            gradient_penalty=self.gradient_penalty,
            weight_clip=self.weight_clip,
        )


def _torch_rmsprop(learning_rate: float) -> optax.GradientTransformation:
    """RMSProp as in the WGAN reference code (PyTorch: α = 0.99, ε outside the root)."""
    return optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False)


def wgan(*, learning_rate: float = 5e-5, clip: float = 0.01, n_critic: int = 5) -> Preset:
    """WGAN: RMSProp lr 5e-5, weight clipping c = 0.01, batch 64, n_critic = 5.

    References:
      Arjovsky, Chintala, Bottou, "Wasserstein GAN", 2017, Algorithm 1.
    """
    return Preset(
        loss="wasserstein",
        d_steps=n_critic,
        g_optimizer=_torch_rmsprop(learning_rate),
        d_optimizer=_torch_rmsprop(learning_rate),
        gradient_penalty=0.0,
        weight_clip=clip,
        batch_size=64,
        reference="Arjovsky et al. 2017, Algorithm 1",
    )


def wgan_gp(*, learning_rate: float = 1e-4, penalty: float = 10.0, n_critic: int = 5) -> Preset:
    """WGAN-GP: Adam lr 1e-4, β = (0, 0.9), λ = 10, n_critic = 5, batch 64.

    References:
      Gulrajani et al., "Improved Training of Wasserstein GANs", 2017, Algorithm 1.
    """
    adam = optax.adam(learning_rate, b1=0.0, b2=0.9)
    return Preset(
        loss="wasserstein",
        d_steps=n_critic,
        g_optimizer=adam,
        d_optimizer=adam,
        gradient_penalty=penalty,
        weight_clip=None,
        batch_size=64,
        reference="Gulrajani et al. 2017, Algorithm 1",
    )


def dcgan(*, learning_rate: float = 2e-4) -> Preset:
    """DCGAN: Adam lr 2e-4, β₁ = 0.5, the non-saturating loss, batch 128.

    References:
      Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep
      Convolutional Generative Adversarial Networks", 2015, §4.
    """
    adam = optax.adam(learning_rate, b1=0.5)
    return Preset(
        loss="non_saturating",
        d_steps=1,
        g_optimizer=adam,
        d_optimizer=adam,
        gradient_penalty=0.0,
        weight_clip=None,
        batch_size=128,
        reference="Radford et al. 2015, §4",
    )
