"""CycleGAN (Zhu et al. 2017): unpaired image-to-image translation, offline digits or tfds' cycle_gan sets.

Two generators, G: A -> B and F: B -> A (``jgan.models.ResnetGenerator``),
and two 70x70 PatchGAN discriminators, D_A and D_B
(``PatchGANDiscriminator``), trained by ``jgan.cyclegan.make_cyclegan_train_step``
with the paper's recipe: least-squares adversarial losses at the paper's
scale (``adversarial_weight=2.0``: jgan's ½E(D − 1)² doubled to the paper's
E(D − 1)²), cycle consistency λ = 10, an optional identity loss, the
50-image history buffer, Adam 2e-4 with β₁ = 0.5, and (``--linear-decay``,
on by default) a constant learning rate for the first half of the steps and a
linear decay to zero over the second half (sec. 4 and appendix 7.1).

Datasets:

- ``digits_inverted`` (the default; no network): domain A is the bundled
  handwritten digits (``jgan.data.digits``, white on black) and domain B the
  same kind of digits with their colours inverted (``-x``: black on white).
  A and B are drawn from disjoint halves of the training split (even and odd
  images) and shuffled independently, so no pair of images is ever shown as
  a translation pair. Because the true translation is known, the metrics log
  has ``translation_error_ab`` = mean |G(a) + a| and ``translation_error_ba``
  = mean |F(b) + b| over held-out test digits (in [-1, 1] units; 0 is a
  perfect translation), computed on the logged steps only.
- ``cycle_gan/<config>`` (``cycle_gan/horse2zebra``, ``cycle_gan/monet2photo``...,
  see ``jgan.data.UNPAIRED_DATASETS``) through tensorflow-datasets, which
  downloads the set on first use. With ``--random-jitter`` (default) images
  are resized to ``image_size * 286 / 256`` and randomly cropped and flipped,
  as in the paper.

``--shared-encoder`` trains the seed notes' variant (sec. 6.1) instead of two
separate generators: one encoder (``c7s1-f, d2f, d4f`` and the first
``n_blocks // 2`` residual blocks) shared by both directions and a decoder per
domain (the other residual blocks, ``u2f, uf, c7s1``),
``jgan.models.SharedEncoderTranslator``; its state's ``g_ab_params`` holds
``{"encoder", "decoder_a", "decoder_b"}`` and ``g_ba_params`` is ``None``.

There is no FID for CycleGAN; the samples grid (``samples.png``,
``samples/``) shows, for 8 fixed test images of each domain (the same at every
step and after a resume), one row each of ``a, G(a), F(G(a)), b, F(b),
G(F(b))``. Also written: ``metrics.jsonl`` (the step's losses, see
``make_cyclegan_train_step``), ``summary.json`` and orbax checkpoints.

Usage::

    python -m examples.cyclegan --out runs/cyclegan              # digits <-> inverted digits, 32x32
    python -m examples.cyclegan --out runs/cyclegan --resume     # after an interruption
    python -m examples.cyclegan --out runs/cyclegan_shared --shared-encoder   # one encoder, two decoders
    python -m examples.cyclegan --out runs/horse2zebra --dataset cycle_gan/horse2zebra \\
        --image-size 256 --features 64 --n-blocks 9 --d-features 64 --batch-size 1 --steps 266800

(the last line is the paper's setting: 200 epochs of horse2zebra's 1,334
training horses at batch size 1; ``--identity-weight 5`` for photo <-> painting.)

References:
    Zhu, Park, Isola, Efros, "Unpaired Image-to-Image Translation using
    Cycle-Consistent Adversarial Networks", ICCV 2017.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from examples import _harness as harness
from examples import _image_gan as program_lib
from jgan import cyclegan, data, models

OFFLINE_DATASET = "digits_inverted"
DATASETS = (OFFLINE_DATASET, *data.UNPAIRED_DATASETS)
GRID_ROWS = 8  # test images per domain in the samples grid
TRANSLATION_EVAL_IMAGES = 128  # held-out digits per domain for the translation error


def invert(images: jax.Array) -> jax.Array:
    """The offline task's true translation, A -> B and B -> A (its own inverse): ``-x``."""
    return -images


@dataclasses.dataclass
class Config(program_lib.RunConfig):
    """CycleGAN's settings (the shared ones are in ``RunConfig``).

    The network widths are CPU-sized; the paper's are ``features=64``,
    ``d_features=64``, ``n_blocks=9`` (6 below 256x256) at ``image_size=256``
    and ``batch_size=1``.

    Attributes:
      dataset: digits_inverted (offline) or a tfds cycle_gan/<config> set.
      features: G and F's first width.
      n_blocks: residual blocks of G and F.
      d_features: D_A and D_B's first width.
      d_layers: PatchGAN's stride-2 layers (3: 70x70 patches); needs
        image_size >= 3 * 2**d_layers.
      cycle_weight: the cycle-consistency weight λ.
      identity_weight: the identity loss's weight (the paper uses 0.5 λ = 5
        for photo <-> painting).
      adversarial_weight: the adversarial losses' weight (2: the paper's
        LSGAN scale, see jgan.cyclegan).
      pool_size: the image history buffer of each discriminator (0: none).
      learning_rate: Adam's learning rate (all four networks).
      beta1: Adam's β1.
      linear_decay: keep the learning rate constant for the first half of the
        steps, then decay it linearly to 0.
      random_jitter: cycle_gan sets only: resize to 286/256 of the size,
        random crop and flip.
      shared_encoder: the seed notes' variant: G and F share one encoder
        (c7s1, d2f, d4f and the first n_blocks // 2 residual blocks) and each
        domain has its own decoder (jgan.models.SharedEncoderTranslator).
    """

    dataset: str = OFFLINE_DATASET
    steps: int = 600
    batch_size: int = 8
    log_every: int = 25
    sample_every: int = 100
    checkpoint_every: int = 200
    features: int = 16
    n_blocks: int = 3
    d_features: int = 16
    d_layers: int = 3
    cycle_weight: float = 10.0
    identity_weight: float = 0.0
    adversarial_weight: float = 2.0
    pool_size: int = 50
    learning_rate: float = 2e-4
    beta1: float = 0.5
    linear_decay: bool = True
    random_jitter: bool = True
    shared_encoder: bool = False

    def validate(self) -> None:
        """Raises ``ValueError`` for settings that cannot work."""
        if self.dataset not in DATASETS:
            raise ValueError(f"Unknown dataset {self.dataset!r} for CycleGAN; expected one of {list(DATASETS)}.")
        # RunConfig's checks of the shared fields; it knows only the image GAN datasets' names.
        program_lib.RunConfig.validate(dataclasses.replace(self, dataset=data.UNPAIRED_DATASETS[0]))
        size = self.image_size
        if size % 4 or size < 8:
            raise ValueError(f"image_size must be a multiple of 4 and >= 8 (ResnetGenerator), got {size}.")
        if self.d_layers < 1 or size // 2**self.d_layers - 2 < 1:
            raise ValueError(
                f"d_layers = {self.d_layers} leaves no PatchGAN output for {size}x{size} images"
                f" (it needs image_size >= 3 * 2**d_layers); use d_layers <= {max(1, (size // 3).bit_length() - 1)}."
            )
        if self.features < 1 or self.d_features < 1 or self.n_blocks < 0:
            raise ValueError(
                "features and d_features must be >= 1 and n_blocks >= 0,"
                f" got {self.features}, {self.d_features} and {self.n_blocks}."
            )
        for name in ("cycle_weight", "identity_weight", "adversarial_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.pool_size < 0:
            raise ValueError(f"pool_size must be >= 0 (0: no pool; the paper's is 50), got {self.pool_size}.")
        if not self.learning_rate > 0 or not 0 <= self.beta1 < 1:
            raise ValueError(
                f"learning_rate must be > 0 and beta1 in [0, 1), got {self.learning_rate} and {self.beta1}."
            )

    def resume_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with its checkpoint (``steps`` too if the learning rate decays over them)."""
        settings = super().resume_settings()
        if self.linear_decay:
            settings["steps"] = self.steps
        return settings


def learning_rate_schedule(config: Config) -> optax.Schedule:
    """Adam's learning rate: constant, or (``linear_decay``) constant then linearly to 0 over the second half."""
    if not config.linear_decay:
        return optax.constant_schedule(config.learning_rate)
    half = config.steps // 2
    constant = optax.constant_schedule(config.learning_rate)
    decay = optax.linear_schedule(config.learning_rate, 0.0, transition_steps=config.steps - half)
    return optax.join_schedules([constant, decay], [half])


def offline_domains(split: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The unpaired domains of ``digits_inverted``: ``(a, b)``, digits and inverted digits.

    A holds the split's even-indexed digits, B the odd-indexed ones inverted,
    so no digit image is in both domains.

    Returns:
        float32 images ``[n_a, size, size, 1]`` and ``[n_b, size, size, 1]`` in ``[-1, 1]``.
    """
    images, _ = data.digits(split=split, image_size=image_size)
    return images[0::2], np.asarray(invert(images[1::2]))


def offline_batches(config: Config, start: int) -> Iterator[dict[str, np.ndarray]]:
    """``{"a", "b"}`` batches of ``digits_inverted`` from step ``start`` on (two independent shuffles)."""
    a, b = offline_domains("train", config.image_size)
    common = {"batch_size": config.batch_size, "shuffle": True, "repeat": True}
    stream_a = data.array_batches(a, seed=2 * config.seed, **common)
    stream_b = data.array_batches(b, seed=2 * config.seed + 1, **common)
    return program_lib.skip(({"a": x["x"], "b": y["x"]} for x, y in zip(stream_a, stream_b)), start)


def tfds_batches(config: Config, start: int) -> Iterator[dict[str, np.ndarray]]:
    """``{"a", "b"}`` batches of a tfds ``cycle_gan/<config>`` set from step ``start`` on."""
    stream = data.tfds_unpaired_images(
        config.dataset, split="train", batch_size=config.batch_size, seed=config.seed, image_size=config.image_size,
        load_size=config.image_size * 286 // 256 if config.random_jitter else None, random_flip=config.random_jitter,
    )  # fmt: skip
    return program_lib.skip(stream, start)


def grid_images(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """The fixed test images of the samples grid, ``GRID_ROWS`` of each domain."""
    if config.dataset == OFFLINE_DATASET:
        a, b = offline_domains("test", config.image_size)
        return a[:GRID_ROWS], b[:GRID_ROWS]
    batch = next(data.tfds_unpaired_images(
        config.dataset, split="test", batch_size=GRID_ROWS, seed=0, image_size=config.image_size,
        shuffle=False, repeat=False,
    ))  # fmt: skip
    return batch["a"], batch["b"]


def with_translation_error(train_step, translators, *, a: np.ndarray, b: np.ndarray, every: int, last: int):
    """Adds the offline task's translation errors to the metrics of the steps ``run`` logs.

    ``translation_error_ab`` = mean |G(a) − invert(a)| and ``translation_error_ba``
    = mean |F(b) − invert(b)| over the held-out ``a`` and ``b``, with the
    parameters after the step (``translators(state) -> (G, F)``). A
    ``lax.cond`` computes them only on the steps the harness logs (the first,
    multiples of ``every`` and ``last``); other steps report 0.
    """

    def errors(state):
        g, f = translators(state)
        fake_b, fake_a = g(a), f(b)
        return jnp.mean(jnp.abs(fake_b - invert(a))), jnp.mean(jnp.abs(fake_a - invert(b)))

    def step(state, batch):
        state, metrics = train_step(state, batch)
        logged = harness.is_logged(state.step, every, last)
        zero = jnp.zeros((), jnp.float32)
        error_ab, error_ba = lax.cond(logged, errors, lambda _: (zero, zero), state)
        return state, {**metrics, "translation_error_ab": error_ab, "translation_error_ba": error_ba}

    return step


def build(config: Config) -> program_lib.Program:
    """The CycleGAN program: four networks, the train step, unpaired data and the samples grid."""
    offline = config.dataset == OFFLINE_DATASET
    channels = 1 if offline else 3
    shape = (config.image_size, config.image_size, channels)
    discriminator_module = models.PatchGANDiscriminator(features=config.d_features, n_layers=config.d_layers)
    if config.shared_encoder:  # One tree {"encoder", "decoder_a", "decoder_b"} in g_ab_params, read by G and F.
        generator_module = models.SharedEncoderTranslator(
            channels=channels, features=config.features, n_blocks=config.n_blocks)
        generator_ab, generator_ba = models.make_shared_generators(generator_module)
    else:
        generator_module = models.ResnetGenerator(channels=channels, features=config.features, n_blocks=config.n_blocks)
        generator_ab = generator_ba = models.make_apply(generator_module, stateful=False)

    def translators(state):
        """``(G, F)``, each ``images -> images``, of the state's parameters."""
        g_ba_params = state.g_ab_params if config.shared_encoder else state.g_ba_params
        return (lambda x: generator_ab(state.g_ab_params, x)), (lambda x: generator_ba(g_ba_params, x))

    discriminator = models.make_apply(discriminator_module, stateful=False)
    optimizer = optax.adam(learning_rate_schedule(config), b1=config.beta1, b2=0.999)

    def init(key):
        keys = jax.random.split(key, 5)
        image = jnp.zeros((1, *shape))
        g_ab, _ = models.init_model(generator_module, keys[0], image)
        g_ba = None if config.shared_encoder else models.init_model(generator_module, keys[1], image)[0]
        d_a, _ = models.init_model(discriminator_module, keys[2], image)
        d_b, _ = models.init_model(discriminator_module, keys[3], image)
        return cyclegan.init_cyclegan_state(
            keys[4], g_ab, g_ba, d_a, d_b, g_optimizer=optimizer, d_optimizer=optimizer,
            pool_size=config.pool_size, a_shape=shape,
        )  # fmt: skip

    train_step = cyclegan.make_cyclegan_train_step(
        generator_ab=generator_ab, generator_ba=generator_ba, discriminator_a=discriminator,
        discriminator_b=discriminator, g_optimizer=optimizer, d_optimizer=optimizer, loss="least_squares",
        cycle_weight=config.cycle_weight, identity_weight=config.identity_weight,
        adversarial_weight=config.adversarial_weight, pool_size=config.pool_size,
        shared_generator_params=config.shared_encoder,
    )  # fmt: skip
    if offline:
        test_a, test_b = offline_domains("test", config.image_size)
        train_step = with_translation_error(
            train_step, translators, a=test_a[:TRANSLATION_EVAL_IMAGES], b=test_b[:TRANSLATION_EVAL_IMAGES],
            every=config.log_every, last=config.steps,
        )  # fmt: skip

    grid_a, grid_b = grid_images(config)

    @jax.jit
    def translate_both_ways(state, a, b):
        g, f = translators(state)
        fake_b, fake_a = g(a), f(b)
        columns = (a, fake_b, f(fake_b), b, fake_a, g(fake_a))
        return jnp.stack(columns, axis=1).reshape(-1, *shape)  # row i: a_i, G(a_i), F(G(a_i)), b_i, F(b_i), G(F(b_i))

    return program_lib.Program(
        init=init,
        train_step=train_step,
        batches=lambda start: (offline_batches if offline else tfds_batches)(config, start),
        sample_grid=lambda state: (translate_both_ways(state, grid_a, grid_b), 6),
        generate=None,
        reference_images=None,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return program_lib.main(Config, build, name="cyclegan", doc=__doc__, argv=argv)


if __name__ == "__main__":
    main()
