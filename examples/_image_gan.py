"""The image-GAN examples' shared parts, on the harness (``examples/_harness.py``).

``examples.dcgan``, ``wgan_gp``, ``conditional_gan`` and ``cyclegan`` each
describe their networks and train step as a :class:`Program`; :func:`run`
does the rest the same way for all of them, with the harness's flags,
resume policy, interrupts and metrics log:

- the input pipeline (``jgan.data.image_dataset``; ``digits`` is offline,
  the tfds sets download on first use), resumed at the exact batch after a
  restart;
- a jitted train step (``jgan.loop.run_steps``, which stops at a non-finite
  update) with a tqdm progress bar;
- a samples grid PNG every ``sample_every`` steps and at the last
  (``samples/step_XXXXXX.png`` and ``samples.png``, the latest), drawn with
  the EMA weights when the state keeps them;
- ``metrics.jsonl`` (TensorBoard event files too with ``--tensorboard``
  when ``tensorboard`` or ``tensorflow`` is installed);
- FID, KID, Inception Score, precision and recall (k = 3) and density and
  coverage (k = 5) in the domain classifier's feature space (``python -m
  examples.train_digits_classifier``) every ``eval_every`` steps and at the
  last, on the offline digits only: on another dataset (MNIST, CIFAR-10,
  LSUN churches) the digits classifier's features mean nothing, so the run
  says that these scores are skipped (``summary.json``'s ``"evaluation"``)
  rather than report them;
- orbax checkpoints every ``checkpoint_every`` steps and at the last (the
  last ``keep_checkpoints`` kept), and ``summary.json`` at the end.

Only jgan's public API is used here.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from examples import _harness as harness
from jgan import augment, data, losses, loop, metrics, models, parallel, penalties
from jgan import steps as jgan_steps

DEFAULT_CLASSIFIER = os.path.join("runs", "digits_classifier", "classifier.msgpack")
# What the KID number is: not comparable with the KID of Inception features
# that papers quote (often ×10³), since the feature space sets its scale.
KID_UNITS = "MMD² of the cubic kernel (a·b/d + 1)³ on the domain classifier's features, unscaled"
# The neighbourhood sizes of the k-NN metrics: the papers' (Kynkäänniemi et
# al. 2019: 3; Naeem et al. 2020: 5). Precision and recall need more than
# PRECISION_RECALL_K generated images (each one's k-th nearest other one).
PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5
# Settings a resumed run may change: how long it runs and what it logs. Every
# other one (the model, the optimiser, the data) must match the checkpoint's.
RESUMABLE = frozenset(
    {"steps", "log_every", "sample_every", "eval_every", "eval_samples", "checkpoint_every", "keep_checkpoints",
     "classifier", "tensorboard"}
)  # fmt: skip


class Program(NamedTuple):
    """What an example contributes to :func:`run`.

    Attributes:
      init: ``key -> state``, the initial training state (a pytree with an
        integer ``step`` field).
      train_step: ``(state, batch) -> (state, metrics)``, pure, with a scalar
        ``metrics["nonfinite"]`` (``run`` jits it inside ``jgan.loop.run_steps``).
      batches: ``start_step -> iterator of batches``; the iterator yields the
        batch of step ``start_step`` first, so a resumed run sees the same data.
      sample_grid: ``state -> images [n, h, w, c]`` in ``[-1, 1]`` and the
        number of grid columns (deterministic: the same latents every time).
      generate: ``(state, key, n) -> images [n, h, w, c]`` for FID/IS, or
        ``None`` when the example has no unconditional sampler to evaluate.
      reference_images: real images ``[m, h, w, c]`` for FID/KID, or ``None``.
    """

    init: Callable[[jax.Array], Any]
    train_step: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
    batches: Callable[[int], Iterator[Any]]
    sample_grid: Callable[[Any], tuple[jax.Array, int]]
    generate: Callable[[Any, jax.Array, int], jax.Array] | None = None
    reference_images: np.ndarray | None = None


@dataclasses.dataclass
class RunConfig:
    """The settings every image example shares (each example extends it).

    Attributes:
      dataset: the training images: digits (offline), mnist, fashion_mnist,
        cifar10, lsun/church_outdoor (tfds downloads them on first use;
        LSUN is 2.4 GB, images only).
      image_size: the images' side in pixels (LSUN: the shorter side is
        resized to it and the centre square kept; the DCGAN paper's is 64).
      steps: generator updates.
      batch_size: real images per step.
      seed: seeds initialisation, data order and the sample grid's latents.
      log_every: log the step's metrics every this many steps (the first and
        the last step are always logged).
      sample_every: write the samples grid every this many steps (and at the last).
      eval_every: FID/KID/IS, precision/recall and density/coverage every
        this many steps (and at the last).
      eval_samples: generated images per evaluation.
      checkpoint_every: save a checkpoint every this many steps (and at the last).
      keep_checkpoints: how many of the newest checkpoints to keep.
      classifier: the domain classifier for FID/KID/IS (python -m
        examples.train_digits_classifier writes it); none there: no evaluation.
      tensorboard: also write TensorBoard event files.
    """

    dataset: str = "digits"
    image_size: int = 32
    steps: int = 2000
    batch_size: int = 64
    seed: int = 0
    log_every: int = 50
    sample_every: int = 500
    eval_every: int = 1000
    eval_samples: int = 1000
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    classifier: str = DEFAULT_CLASSIFIER
    tensorboard: bool = False

    def validate(self) -> None:
        """Raises ``ValueError`` for settings that cannot work."""
        if self.dataset not in data.IMAGE_DATASETS:
            raise ValueError(f"Unknown dataset {self.dataset!r}; expected one of {sorted(data.IMAGE_DATASETS)}.")
        for name in ("steps", "batch_size", "log_every", "sample_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an int >= 1, got {value!r}.")
        if self.eval_samples < PRECISION_RECALL_K + 1:
            raise ValueError(
                f"--eval-samples must be >= {PRECISION_RECALL_K + 1} (recall needs each generated image's"
                f" k-th nearest other one, k = {PRECISION_RECALL_K}), got {self.eval_samples}."
            )

    def resume_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with its checkpoint."""
        return harness.settings_of(self, RESUMABLE)


@dataclasses.dataclass
class GANConfig(RunConfig):
    """The settings of the examples built with ``jgan.steps.make_gan``.

    Attributes:
      latent_dim: the dimension of the generator's Gaussian latent.
      features: the networks' first width (the DCGAN paper's is 64, 128 at
        64x64; 16 trains in minutes on a CPU).
      learning_rate: Adam's learning rate (both networks).
      ema_decay: keep an exponential moving average of the generator's weights
        with this decay, and draw the grids and the evaluated samples from it
        (none: the raw weights).
      loss: the loss family (a name of ``jgan.losses.LOSS_FAMILIES``, e.g.
        hinge or relativistic_average); none: the recipe's.
      spectral_norm: spectrally normalise every weight of the discriminator
        (Miyato et al. 2018; its power-iteration vectors are model state).
      diff_augment: DiffAugment (colour, translation, cutout) on every image
        the discriminator sees (Zhao et al. 2020).
      lecam: LeCam regularisation of the discriminator with this weight
        (Tseng et al. 2021); none: off.
    """

    latent_dim: int = 100
    features: int = 16
    learning_rate: float = 2e-4
    ema_decay: float | None = None
    loss: str | None = None
    spectral_norm: bool = False
    diff_augment: bool = False
    lecam: float | None = None

    def validate(self) -> None:
        super().validate()
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1) or none, got {self.ema_decay!r}.")
        if self.loss is not None and self.loss not in losses.LOSS_FAMILIES:
            raise ValueError(f"--loss must be one of {sorted(losses.LOSS_FAMILIES)} or none, got {self.loss!r}.")
        if self.lecam is not None and not self.lecam >= 0.0:
            raise ValueError(f"--lecam must be >= 0 or none, got {self.lecam!r}.")


def with_training_aids(config: GANConfig, gan_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``gan_kwargs`` (a recipe's ``make_gan`` keywords) with the run's training aids as parts.

    ``--loss`` replaces the recipe's loss family, ``--diff-augment`` adds
    ``augment=DiffAugment()`` and ``--lecam`` appends ``LeCam(weight)`` to
    the discriminator's regularisers. ``--spectral-norm`` is the
    discriminator module's own attribute (each example builds it).
    """
    kwargs = dict(gan_kwargs)
    if config.loss is not None:
        kwargs["loss"] = config.loss
    if config.diff_augment:
        kwargs["augment"] = augment.DiffAugment()
    if config.lecam is not None:
        kwargs["d_regularizers"] = (*kwargs.get("d_regularizers", ()), penalties.LeCam(config.lecam))
    return kwargs


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """Tiles images ``[n, h, w, c]`` in ``[-1, 1]`` into one ``[H, W, 3]`` float image in ``[0, 1]``.

    Missing cells of the last row stay black; one pixel of grey separates cells.
    """
    images = np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)
    n, h, w, c = images.shape
    if c == 1:
        images = np.repeat(images, 3, axis=-1)
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, 3), 0.5, np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = image
    return grid


def save_grid(path: str, images: np.ndarray, columns: int) -> None:
    """Writes ``image_grid(images, columns)`` as a PNG (atomically), scaled up for viewing."""
    plt = harness.pyplot()
    grid = image_grid(images, columns)
    scale = max(1, 256 // grid.shape[0])
    grid = np.kron(grid, np.ones((scale, scale, 1), np.float32))
    harness.atomic_write(path, lambda temporary: plt.imsave(temporary, grid))


class Evaluator:
    """FID, KID, IS, precision/recall and density/coverage of generated images in the domain classifier's feature space.

    Every metric but IS compares the generated images' features with those of
    ``reference_images``; precision, recall, density and coverage take all of
    both sets, as FID does (k-NN balls: ``jgan.metrics.precision_recall`` with
    ``k = PRECISION_RECALL_K``, ``density_coverage`` with ``k = DENSITY_COVERAGE_K``).
    """

    def __init__(
        self,
        classifier_path: str,
        reference_images: np.ndarray | None,
        image_shape: tuple[int, ...],
        *,
        no_reference: str = "this example has no reference images",
    ):
        self.reason = None
        if reference_images is None:
            self.reason = no_reference
            return
        if not os.path.isfile(classifier_path):
            self.reason = (
                f"no classifier at {classifier_path!r} (python -m examples.train_digits_classifier"
                " --out runs/digits_classifier)"
            )
            return
        module, params, config = models.load_classifier(classifier_path)
        expected = (config["image_size"], config["image_size"], config["channels"])
        if tuple(image_shape) != expected:
            self.reason = f"the classifier expects images {expected}, these are {tuple(image_shape)}"
            return
        self.classify = models.make_classifier_fn(module, params)
        self.reference_features, _ = self.classify(reference_images)

    @property
    def available(self) -> bool:
        return self.reason is None

    def __call__(self, images: jax.Array, key: jax.Array) -> dict[str, float]:
        features, probs = self.classify(images)
        size = min(len(features), len(self.reference_features), 1000)
        kid = metrics.kid(features, self.reference_features, subsets=50, subset_size=size, key=key)
        score = metrics.inception_score(probs, splits=10)
        precision, recall = metrics.precision_recall(self.reference_features, features, k=PRECISION_RECALL_K)
        density, coverage = metrics.density_coverage(self.reference_features, features, k=DENSITY_COVERAGE_K)
        return {
            "fid": float(metrics.fid(features, self.reference_features)),
            "kid": float(kid.mean),
            "inception_score": float(score.mean),
            "precision": float(precision),
            "recall": float(recall),
            "density": float(density),
            "coverage": float(coverage),
        }


def scores_line(record: dict[str, Any]) -> str:
    """FID, KID (its units stated), IS, precision, recall, density and coverage of a record, for the terminal.

    A record from a log written before the k-NN metrics were reported (a
    resumed older run) shows FID, KID and IS only.
    """
    line = f"FID {record['fid']:.2f}, KID {record['kid']:.4g} ({KID_UNITS}), IS {record['inception_score']:.2f}"
    if "precision" in record:
        line += (
            f", precision {record['precision']:.3f}, recall {record['recall']:.3f} (k = {PRECISION_RECALL_K}),"
            f" density {record['density']:.3f}, coverage {record['coverage']:.3f} (k = {DENSITY_COVERAGE_K})"
        )
    return line


def _multiples(every: int, last: int) -> set[int]:
    return set(range(every, last + 1, every)) | {last}


def run(
    program: Program,
    config: RunConfig,
    workdir: str,
    *,
    name: str,
    resume: bool = False,
    show_progress: bool = True,
    stop: harness.StopRequest | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Trains ``program`` for ``config.steps`` steps in ``workdir``; returns the summary and the state.

    Args:
      program: the example's networks, step, data and samplers.
      config: its settings.
      workdir: the output directory (the harness's resume policy applies).
      name: the example's name, recorded in (and checked against) its checkpoints.
      resume: continue from the latest checkpoint in ``workdir``.
      show_progress: show a progress bar and a note when nothing is evaluated.
      stop: the interrupt request to honour (``None``: none).
      mesh: train data-parallel over this mesh's ``"batch"`` axis (the state
        replicated, each global batch split over the devices, each process
        giving its rows), or on one device (None).

    Raises:
      harness.UsageError: ``workdir`` holds a run but ``resume`` is false, or
        its checkpoints belong to another model, example or settings.
      harness.Interrupted: a signal stopped training (a checkpoint is saved).
      jgan.steps.NonFiniteError: a loss, gradient or the state became non-finite.
    """
    workdir = harness.prepare_run_dir(workdir, resume=resume)
    checkpoints = harness.Checkpoints(
        os.path.join(workdir, "checkpoints"), program=name, settings=config.resume_settings(),
        max_to_keep=config.keep_checkpoints,
    )  # fmt: skip
    initial = program.init(jax.random.key(config.seed))
    if mesh is not None:
        initial = parallel.replicate(initial, mesh)
    state, start = checkpoints.restore_or_init(initial, resume=resume)
    if start > config.steps:
        raise harness.UsageError(f"The checkpoint in {workdir} is at step {start}, past --steps {config.steps}.")
    log = harness.MetricsLog(
        os.path.join(workdir, "metrics.jsonl"), resume_step=start,
        tensorboard=os.path.join(workdir, "tensorboard") if config.tensorboard else None,
    )  # fmt: skip
    reference = program.reference_images
    evaluator = Evaluator(config.classifier, reference, None if reference is None else reference.shape[1:],
                          no_reference=no_reference_reason(config))
    if not evaluator.available and show_progress:
        print(f"note: no FID/IS during training: {evaluator.reason}")
    evaluates = evaluator.available and program.generate is not None
    eval_steps = _multiples(config.eval_every, config.steps) if evaluates else set()
    sample_steps = _multiples(config.sample_every, config.steps)

    placed = {} if mesh is None else {"out_shardings": parallel.replicated(mesh)}

    @functools.partial(jax.jit, **placed)
    def one_step(state, batch):
        stacked = jax.tree.map(lambda x: x[None], batch)
        return loop.run_steps(program.train_step, state, stacked, 1, on_nonfinite="stop", start=state.step)

    batches = program.batches(start)
    train_seconds = 0.0

    def next_batch():
        # In a multi-process run jgan.data's pipelines yield this process's rows of the global batch.
        batch = jax.tree.map(np.asarray, next(batches))
        return batch if mesh is None else parallel.global_batch(batch, mesh)

    def advance(state, step, n):
        nonlocal train_seconds
        assert n == 1
        tic = time.perf_counter()
        state, step_metrics, info = one_step(state, next_batch())
        loop.check_run(info)
        train_seconds += time.perf_counter() - tic
        return state, step_metrics

    eval_key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)

    def on_event(state, step):
        record = {}
        if step in eval_steps:
            images = parallel.to_host(program.generate(state, jax.random.fold_in(eval_key, step), config.eval_samples))
            record.update(evaluator(images, jax.random.fold_in(eval_key, step + 2**30)))
        if step in sample_steps:
            images, columns = program.sample_grid(state)
            images = parallel.to_host(images)
            save_grid(os.path.join(workdir, "samples", f"step_{step:06d}.png"), images, columns)
            save_grid(os.path.join(workdir, "samples.png"), images, columns)
        return record

    bar = harness.progress_bar(config.steps, start, name, show_progress)
    try:
        state = harness.train(
            state, start=start, steps=config.steps, advance=advance, log=log, log_every=config.log_every,
            stop=stop or harness.StopRequest(), checkpoints=checkpoints,
            checkpoint_steps=_multiples(config.checkpoint_every, config.steps), events=eval_steps | sample_steps,
            on_event=on_event, bar=bar, shown=("d_loss", "g_loss", "fid"),
        )  # fmt: skip
    finally:
        bar.close()
    records = log.records()
    final = {k: v for k, v in records[-1].items() if k != "step"} if records else {}
    summary = {
        "example": name,
        "resumed_from": start,
        "final_metrics": final,
        "train_seconds": train_seconds,
        "steps": config.steps,
        "config": dataclasses.asdict(config),
        "classifier": config.classifier if evaluator.available else None,
        "evaluation": None if evaluates else (
            f"FID/KID/IS and the k-NN metrics skipped: {evaluator.reason or 'this example has no sampler to evaluate'}"
        ),
        "units": {"kid": KID_UNITS} if evaluates else {},
        "neighbours": (
            {"precision_recall_k": PRECISION_RECALL_K, "density_coverage_k": DENSITY_COVERAGE_K} if evaluates else {}
        ),
    }
    harness.write_json(os.path.join(workdir, "summary.json"), summary)
    if "fid" in final and parallel.is_main_process():
        print(f"{name}, step {config.steps}: {scores_line(final)}")
    return {"state": state, **summary}


def main(config_type: type, build: Callable[[Any], Program], *, name: str, doc: str, argv: Sequence[str] | None) -> dict[str, Any]:
    """An example's command line: flags -> config -> ``build(config)`` -> :func:`run`, under the harness's guard.

    Args:
      config_type: the example's config dataclass (its fields become flags).
      build: ``config -> Program``; a ``ValueError`` it raises is a usage error.
      name: the example's name (``python -m examples.<name>``), recorded in
        and checked against its checkpoints.
      doc: the example's docstring; its first paragraph heads ``--help``.
      argv: the arguments (``None``: ``sys.argv[1:]``).
    """

    def program(config, args, stop):
        try:
            built = build(config)
        except ValueError as error:
            raise harness.UsageError(str(error)) from None
        return run(built, config, args.out, name=name, resume=args.resume, show_progress=not args.quiet, stop=stop,
                   mesh=harness.data_mesh(args))

    return harness.main(config_type, program, argv=argv, doc=doc, prog=f"python -m examples.{name}", processes=True)


def stack_batches(iterator: Iterator[Any], k: int) -> Iterator[Any]:
    """Groups ``k`` consecutive batches into one ``[k, ...]`` batch (one per D update)."""
    while True:
        group = [next(iterator) for _ in range(k)]
        yield jax.tree.map(lambda *leaves: np.stack(leaves), *group)


def skip(iterator: Iterator[Any], n: int) -> Iterator[Any]:
    """Drops the first ``n`` items (the batches a resumed run already consumed)."""
    for _ in range(n):
        next(iterator)
    return iterator


def grid_key(seed: int) -> jax.Array:
    """The fixed key of an example's sample grid."""
    return jax.random.fold_in(jax.random.key(seed), 7)


def fixed_latents(seed: int, n: int, latent_dim: int) -> jax.Array:
    """The latents of the sample grid, the same at every step and after a resume."""
    return jax.random.normal(grid_key(seed), (n, latent_dim))


def reference_images(config: RunConfig) -> np.ndarray | None:
    """The real images FID/KID compare with: the offline digits' training split, else none."""
    return data.digits(split="train", image_size=config.image_size)[0] if config.dataset == "digits" else None


def no_reference_reason(config: RunConfig) -> str:
    """Why a run without reference images is not evaluated, for the note and ``summary.json``."""
    if config.dataset == "digits":
        return "this example has no reference images"
    return (
        f"the domain classifier is trained on the offline digits; its features say nothing about"
        f" {config.dataset!r}, so FID/KID/IS are not computed"
    )


def unconditional_program(
    config: GANConfig,
    *,
    generator: Any,
    discriminator: Any,
    d_stateful: bool,
    gan_kwargs: dict[str, Any],
) -> Program:
    """The ``Program`` of an unconditional image GAN with a flax DCGAN-style generator.

    Args:
      config: the run's settings (dataset, image size, batch size, seed,
        latent dimension, EMA).
      generator: a flax module ``z -> images`` with BatchNorm (stateful).
      discriminator: a flax module ``images -> logits``.
      d_stateful: whether the discriminator has BatchNorm statistics.
      gan_kwargs: ``make_gan``'s hyper-parameters (optimizers, loss,
        ``d_steps``, regularisers), e.g. ``jgan.presets.dcgan().gan_kwargs()``.
    """
    spec = data.image_dataset_spec(config.dataset, image_size=config.image_size)
    if "x" not in spec.keys:
        raise ValueError(f"{config.dataset!r} is an unpaired two-domain dataset; use python -m examples.cyclegan.")
    gan_kwargs = with_training_aids(config, gan_kwargs)
    d_steps = gan_kwargs.get("d_steps", 1)
    gan = jgan_steps.make_gan(
        generator=models.make_apply(generator, stateful=True),
        discriminator=models.make_apply(discriminator, stateful=d_stateful),
        prior=config.latent_dim, g_stateful=True, d_stateful=d_stateful,
        sample_generator=models.make_apply(generator, stateful=True, train=False),
        batches="sliced" if d_steps > 1 else "shared", ema_decay=config.ema_decay, **gan_kwargs,
    )  # fmt: skip

    def init(key):
        return harness.init_gan(
            gan, key, generator, discriminator, (jnp.zeros((1, config.latent_dim)),),
            (jnp.zeros((1, *spec.image_shape)),), g_stateful=True, d_stateful=d_stateful,
        )  # fmt: skip

    def batches(start):
        stream = data.image_dataset(
            config.dataset, split="train", batch_size=config.batch_size, seed=config.seed, image_size=config.image_size
        )
        images = skip((batch["x"] for batch in stream), start * d_steps)
        return stack_batches(images, d_steps) if d_steps > 1 else images

    sample = jax.jit(gan.sample, static_argnums=2)  # The EMA weights when kept; BatchNorm in inference mode.
    return Program(
        init=init,
        train_step=gan.step,
        batches=batches,
        # The grid's latents are the same at every step and after a resume.
        sample_grid=lambda state: (sample(state, grid_key(config.seed), 64), 8),
        generate=sample,
        reference_images=reference_images(config),
    )
