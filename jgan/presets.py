"""Hyper-parameters of the seed algorithms, ready for ``make_gan``.

>>> p = presets.wgan_gp()
>>> gan = steps.make_gan(generator=g, discriminator=d, prior=128, **p.gan_kwargs())
>>> state = gan.init(key, g_params, d_params)

Each preset also carries the batch size of its paper (data loading is the
caller's), and the reference it reproduces. ``step_kwargs()`` gives the same
settings as keywords of the earlier ``make_train_step``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optax

from jgan import penalties
from jgan._validate import check_int, check_positive

__all__ = ["Preset", "wgan", "wgan_gp", "dcgan"]


class Preset(NamedTuple):
    """A named set of GAN hyper-parameters.

    Attributes:
      loss: the loss family's name.
      d_steps: discriminator updates per generator update (n_critic).
      g_optimizer: the generator's optax transformation.
      d_optimizer: the discriminator's, WGAN's weight clipping chained in.
      d_regularizers: the discriminator's regularisers (WGAN-GP's penalty).
      batch_size: the paper's batch size.
      reference: the paper and algorithm reproduced.
    """

    loss: str
    d_steps: int
    g_optimizer: optax.GradientTransformation
    d_optimizer: optax.GradientTransformation
    d_regularizers: tuple[penalties.DiscriminatorRegularizer, ...]
    batch_size: int
    reference: str

    def gan_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``jgan.steps.make_gan`` this preset fixes."""
        return dict(
            loss=self.loss,
            d_steps=self.d_steps,
            g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer,
            d_regularizers=self.d_regularizers,
        )

    def step_kwargs(self) -> dict[str, Any]:
        """The same settings as keywords of ``jgan.steps.make_train_step``."""
        penalty = [r for r in self.d_regularizers if isinstance(r, penalties.GradientPenalty)]
        if len(penalty) != len(self.d_regularizers):
            raise ValueError("make_train_step takes only a gradient penalty among the regularisers.")
        kwargs = dict(
            loss=self.loss,
            d_steps=self.d_steps,
            g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer,
        )
        if penalty:
            (gp,) = penalty
            kwargs.update(
                gradient_penalty=gp.weight,
                gradient_penalty_target=gp.target,
                gradient_penalty_one_sided=gp.one_sided,
            )
        return kwargs


def _torch_rmsprop(learning_rate: float) -> optax.GradientTransformation:
    """RMSProp as in the WGAN reference code (PyTorch: α = 0.99, ε outside the root)."""
    return optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False)


def wgan(*, learning_rate: float = 5e-5, clip: float = 0.01, n_critic: int = 5) -> Preset:
    """WGAN: RMSProp lr 5e-5, weight clipping c = 0.01, batch 64, n_critic = 5.

    The clipping is chained after the discriminator's RMSProp:
    ``optax.chain(rmsprop, jgan.penalties.weight_clipping(clip))``.

    References:
      Arjovsky, Chintala, Bottou, "Wasserstein GAN", 2017, Algorithm 1.
    """
    check_positive(learning_rate, "learning_rate")
    check_positive(clip, "clip")
    check_int(n_critic, "n_critic", minimum=1, static=True)
    return Preset(
        loss="wasserstein",
        d_steps=n_critic,
        g_optimizer=_torch_rmsprop(learning_rate),
        d_optimizer=optax.chain(_torch_rmsprop(learning_rate), penalties.weight_clipping(clip)),
        d_regularizers=(),
        batch_size=64,
        reference="Arjovsky et al. 2017, Algorithm 1",
    )


def wgan_gp(*, learning_rate: float = 1e-4, penalty: float = 10.0, n_critic: int = 5) -> Preset:
    """WGAN-GP: Adam lr 1e-4, β = (0, 0.9), λ = 10, n_critic = 5, batch 64.

    References:
      Gulrajani et al., "Improved Training of Wasserstein GANs", 2017, Algorithm 1.
    """
    check_positive(learning_rate, "learning_rate")
    check_int(n_critic, "n_critic", minimum=1, static=True)
    adam = optax.adam(learning_rate, b1=0.0, b2=0.9)
    return Preset(
        loss="wasserstein",
        d_steps=n_critic,
        g_optimizer=adam,
        d_optimizer=adam,
        d_regularizers=(penalties.GradientPenalty(penalty),),
        batch_size=64,
        reference="Gulrajani et al. 2017, Algorithm 1",
    )


def dcgan(*, learning_rate: float = 2e-4) -> Preset:
    """DCGAN: Adam lr 2e-4, β₁ = 0.5, the non-saturating loss, batch 128.

    References:
      Radford, Metz, Chintala, "Unsupervised Representation Learning with Deep
      Convolutional Generative Adversarial Networks", 2015, §4.
    """
    check_positive(learning_rate, "learning_rate")
    adam = optax.adam(learning_rate, b1=0.5)
    return Preset(
        loss="non_saturating",
        d_steps=1,
        g_optimizer=adam,
        d_optimizer=adam,
        d_regularizers=(),
        batch_size=128,
        reference="Radford et al. 2015, §4",
    )
