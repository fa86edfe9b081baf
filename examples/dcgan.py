"""DCGAN (Radford, Metz & Chintala 2015) on digits, MNIST, Fashion-MNIST, CIFAR-10 or LSUN churches.

The DCGAN rules (strided convolutions, BatchNorm in both networks except the
generator's output and the discriminator's input, ReLU / LeakyReLU 0.2, tanh
output, N(0, 0.02) weights) are ``jgan.models.DCGANGenerator`` /
``DCGANDiscriminator``; the training recipe (Adam 2e-4, β₁ = 0.5, the
non-saturating loss) is ``jgan.presets.dcgan()``. Writes to ``--out``: the
samples grid (``samples.png``, ``samples/``), ``metrics.jsonl`` (losses; FID,
KID, IS, precision, recall, density and coverage with the domain
classifier, on the digits only: elsewhere ``summary.json``'s
``"evaluation"`` says they are skipped), ``summary.json`` and checkpoints.
``--dataset lsun/church_outdoor`` (images only; tfds downloads 2.4 GB on
first use) resizes each photograph's shorter side to ``--image-size`` and
keeps the centre square: 64 is the paper's size, the default 32 works too.
The flags, ``--resume`` and Ctrl-C work as in every example (README,
"Programs").

Usage::

    python -m examples.train_digits_classifier --out runs/digits_classifier  # once, for FID/IS
    python -m examples.dcgan --out runs/dcgan                  # offline digits, 32x32
    python -m examples.dcgan --out runs/dcgan --resume         # after an interruption
    python -m examples.dcgan --out runs/dcgan_mnist --dataset mnist --image-size 28
    # The paper's LSUN scale: 64x64, width 128, batch 128, 5 epochs of the 126,227 churches.
    python -m examples.dcgan --out runs/dcgan_lsun --dataset lsun/church_outdoor --image-size 64 \
        --features 128 --batch-size 128 --steps 4930
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from examples import _image_gan as program_lib
from jgan import data, models, presets


@dataclasses.dataclass
class Config(program_lib.GANConfig):
    """DCGAN's settings (the shared ones are in ``GANConfig`` and ``RunConfig``)."""

    learning_rate: float = 2e-4
    batch_size: int = 64
    steps: int = 800
    sample_every: int = 100
    eval_every: int = 100


def build(config: Config) -> program_lib.Program:
    """The DCGAN program: networks, train step, data and samplers."""
    height, _, channels = data.image_dataset_spec(config.dataset, image_size=config.image_size).image_shape
    return program_lib.unconditional_program(
        config,
        generator=models.DCGANGenerator(image_size=height, channels=channels, features=config.features),
        discriminator=models.DCGANDiscriminator(features=config.features, spectral_norm=config.spectral_norm),
        d_stateful=True,
        gan_kwargs=presets.dcgan(learning_rate=config.learning_rate).gan_kwargs(),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return program_lib.main(Config, build, name="dcgan", doc=__doc__, argv=argv)


if __name__ == "__main__":
    main()
