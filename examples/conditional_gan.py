"""A class-conditional GAN (Mirza & Osindero 2014) with a projection discriminator.

The generator is DCGAN's with a learned label embedding concatenated to z
(``jgan.models.ConditionalDCGANGenerator``); the discriminator is Miyato &
Koyama's projection discriminator (``jgan.models.ProjectionDiscriminator``:
ψ(φ(x)) + ⟨embed(y), φ(x)⟩). ``jgan.steps.make_gan``'s step takes batches
``{"x": images, "label": labels}`` and gives each generated sample the label
of a real one, so both networks see the labels. The samples grid has one
row per class (the same latents in every column), so the label's control
over the output shows at a glance. Writes what ``examples.dcgan`` writes.

Usage::

    python -m examples.train_digits_classifier --out runs/digits_classifier  # once, for FID/IS
    python -m examples.conditional_gan --out runs/conditional_gan     # offline digits
    python -m examples.conditional_gan --out runs/conditional_gan --resume
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from examples import _harness as harness
from examples import _image_gan as program_lib
from examples import dcgan
from jgan import data, models, presets, steps

COLUMNS = 8


@dataclasses.dataclass
class Config(dcgan.Config):
    """The conditional GAN's settings: DCGAN's (same networks and recipe, plus labels)."""


def build(config: Config) -> program_lib.Program:
    """The conditional GAN program: networks, train step, data and samplers."""
    spec = data.image_dataset_spec(config.dataset, image_size=config.image_size)
    if spec.num_classes is None:
        raise ValueError(f"{config.dataset!r} has no class labels.")
    height, _, channels = spec.image_shape
    classes = spec.num_classes
    generator = models.ConditionalDCGANGenerator(
        image_size=height, num_classes=classes, channels=channels, features=config.features
    )
    discriminator = models.ProjectionDiscriminator(
        num_classes=classes, features=config.features, spectral_norm=config.spectral_norm
    )
    g_eval = models.make_apply(generator, stateful=True, train=False)
    gan = steps.make_gan(
        generator=models.make_apply(generator, stateful=True),
        discriminator=models.make_apply(discriminator, stateful=True),
        prior=config.latent_dim, g_stateful=True, d_stateful=True, sample_generator=g_eval,
        ema_decay=config.ema_decay,
        **program_lib.with_training_aids(config, presets.dcgan(learning_rate=config.learning_rate).gan_kwargs()),
    )  # fmt: skip

    def init(key):
        label = jnp.zeros((1,), jnp.int32)
        return harness.init_gan(
            gan, key, generator, discriminator, (jnp.zeros((1, config.latent_dim)), label),
            (jnp.zeros((1, *spec.image_shape)), label), g_stateful=True, d_stateful=True,
        )  # fmt: skip

    def batches(start):
        stream = data.image_dataset(
            config.dataset, split="train", batch_size=config.batch_size, seed=config.seed, image_size=config.image_size
        )
        return program_lib.skip(stream, start)

    # One row per class, the same latents in every row.
    grid_labels = jnp.repeat(jnp.arange(classes, dtype=jnp.int32), COLUMNS)
    grid_latents = jnp.tile(program_lib.fixed_latents(config.seed, COLUMNS, config.latent_dim), (classes, 1))

    @jax.jit
    def sample(state, z, labels):  # The EMA weights when kept; BatchNorm in inference mode.
        return g_eval(harness.generator_params(state), state.g_model_state, z, labels)[0]

    sample_labelled = jax.jit(gan.sample, static_argnums=2)

    def generate(state, key, n):
        z_key, y_key = jax.random.split(key)
        return sample_labelled(state, z_key, n, labels=jax.random.randint(y_key, (n,), 0, classes))

    return program_lib.Program(
        init=init,
        train_step=gan.step,
        batches=batches,
        sample_grid=lambda state: (sample(state, grid_latents, grid_labels), COLUMNS),
        generate=generate,
        reference_images=program_lib.reference_images(config),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return program_lib.main(Config, build, name="conditional_gan", doc=__doc__, argv=argv)


if __name__ == "__main__":
    main()
