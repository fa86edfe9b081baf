"""WGAN-GP (Gulrajani et al. 2017) on digits, MNIST, Fashion-MNIST, CIFAR-10 or LSUN churches.

Algorithm 1 of the paper through ``jgan.presets.wgan_gp()``: n_critic = 5
critic updates per generator update, each on a fresh real batch, the gradient
penalty λ = 10 on random interpolates (nested ``jax.grad``), Adam 1e-4 with
β = (0, 0.9). The critic is ``DCGANDiscriminator(normalization="layer")``: no
BatchNorm, whose batch statistics would couple the per-example penalty. The
generator is DCGAN's. Writes what ``examples.dcgan`` writes; the metrics
log has the critic's Wasserstein estimate and the penalty. ``--dataset
lsun/church_outdoor`` is served as in ``examples.dcgan`` (shorter side
resized to ``--image-size``, centre square kept; no FID/IS).

Usage::

    python -m examples.train_digits_classifier --out runs/digits_classifier  # once, for FID/IS
    python -m examples.wgan_gp --out runs/wgan_gp              # offline digits, 32x32
    python -m examples.wgan_gp --out runs/wgan_gp --resume     # after an interruption
    # The paper's 64x64 LSUN setting (its released code: batch 64, width 64, 200k generator steps).
    python -m examples.wgan_gp --out runs/wgan_gp_lsun --dataset lsun/church_outdoor --image-size 64 \
        --features 64 --batch-size 64 --steps 200000
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from examples import _image_gan as program_lib
from jgan import data, models, presets


@dataclasses.dataclass
class Config(program_lib.GANConfig):
    """WGAN-GP's settings (the shared ones are in ``GANConfig`` and ``RunConfig``).

    Attributes:
      penalty: the gradient penalty's weight λ.
      n_critic: critic updates per generator update, each on a fresh real batch.
    """

    learning_rate: float = 1e-4
    penalty: float = 10.0
    n_critic: int = 5
    batch_size: int = 64
    steps: int = 300
    sample_every: int = 100
    eval_every: int = 100

    def validate(self) -> None:
        super().validate()
        if self.n_critic < 1 or self.penalty < 0:
            raise ValueError(f"--n-critic must be >= 1 and --penalty >= 0, got {self.n_critic} and {self.penalty}.")


def build(config: Config) -> program_lib.Program:
    """The WGAN-GP program: networks, train step, data and samplers."""
    height, _, channels = data.image_dataset_spec(config.dataset, image_size=config.image_size).image_shape
    preset = presets.wgan_gp(learning_rate=config.learning_rate, penalty=config.penalty, n_critic=config.n_critic)
    return program_lib.unconditional_program(
        config,
        generator=models.DCGANGenerator(image_size=height, channels=channels, features=config.features),
        discriminator=models.DCGANDiscriminator(
            features=config.features, normalization="layer", spectral_norm=config.spectral_norm
        ),
        d_stateful=config.spectral_norm,  # the power-iteration vectors are model state
        gan_kwargs=preset.gan_kwargs(),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return program_lib.main(Config, build, name="wgan_gp", doc=__doc__, argv=argv)


if __name__ == "__main__":
    main()
