"""The training program shared by the image-GAN examples.

``examples/dcgan.py``, ``wgan_gp.py``, ``conditional_gan.py`` and
``cyclegan.py`` each describe their networks and train step as a
``Program``; ``run`` does the rest the same way for all of them:

- command-line overrides of the example's config dataclass (``--steps 200``,
  ``--dataset mnist``...), validated before anything is trained;
- the input pipeline (``jgan.data.image_dataset``; ``digits`` is offline),
  resumed at the exact batch after a restart;
- a jitted train step with a tqdm progress bar and non-finite detection;
- a samples grid PNG every ``sample_every`` steps (``samples/step_XXXXXX.png``
  and ``samples.png``, the latest);
- a metrics log, ``metrics.jsonl`` (one JSON object per logged step;
  TensorBoard event files too with ``--tensorboard`` when ``tensorboard`` or
  ``tensorflow`` is installed);
- FID, KID and Inception Score computed with the domain classifier
  (``examples/train_digits_classifier.py``) every ``eval_every`` steps;
- orbax checkpoints every ``checkpoint_every`` steps (the last
  ``keep_checkpoints`` kept); ``--resume`` continues from the latest one and
  gives the parameters an uninterrupted run would have.

Only jgan's public API is used here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jgan import checkpoint, data, metrics, models
from jgan import steps as jgan_steps

DEFAULT_CLASSIFIER = os.path.join("runs", "digits_classifier", "classifier.msgpack")
# Settings a resumed run may change: how long it runs and what it logs. Every
# other one (the model, the optimiser, the data) must match the checkpoint's.
RESUMABLE_CHANGES = frozenset(
    {"steps", "log_every", "sample_every", "eval_every", "eval_samples", "checkpoint_every", "keep_checkpoints",
     "classifier", "tensorboard"}
)  # fmt: skip


class Program(NamedTuple):
    """What an example contributes to ``run``.

    Attributes:
      init: ``key -> state``, the initial training state (a pytree with an
        integer ``step`` field).
      train_step: ``(state, batch) -> (state, metrics)``, pure (``run`` jits it).
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
    """The settings every image example shares (each example extends it)."""

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
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        if self.eval_samples < 2:
            raise ValueError(f"eval_samples must be >= 2 (a covariance needs two samples), got {self.eval_samples}.")


def parse_config(config_type: type, argv: Sequence[str] | None, description: str) -> tuple[Any, argparse.Namespace]:
    """Builds ``config_type`` from its defaults and ``--field value`` overrides.

    Every dataclass field becomes a flag (``batch_size`` -> ``--batch-size``);
    booleans are ``--flag`` / ``--no-flag``. ``--out`` and ``--resume`` are
    added for the program itself.

    Returns:
      ``(config, args)``; ``config.validate()`` has passed.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = config_type()
    for field in dataclasses.fields(config_type):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    config = config_type(**{field.name: getattr(args, field.name) for field in dataclasses.fields(config_type)})
    try:
        config.validate()
    except ValueError as error:
        parser.error(str(error))
    return config, args


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
    """Writes ``image_grid(images, columns)`` as a PNG, scaled up for viewing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = image_grid(images, columns)
    scale = max(1, 256 // grid.shape[0])
    grid = np.kron(grid, np.ones((scale, scale, 1), np.float32))
    temporary = path + ".tmp.png"
    plt.imsave(temporary, grid)
    os.replace(temporary, path)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (and TensorBoard if asked)."""

    def __init__(self, workdir: str, *, tensorboard: bool, resume_step: int):
        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):  # Drop lines a resumed run will log again.
            with open(self.path) as file:
                kept = [line for line in file if line.strip() and json.loads(line)["step"] <= resume_step]
            with open(self.path, "w") as file:
                file.writelines(kept)
        self.writer = None
        if tensorboard:
            try:
                from flax.metrics import tensorboard as flax_tensorboard

                self.writer = flax_tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                print("note: --tensorboard needs tensorflow or tensorboard installed; logging to metrics.jsonl only")

    def write(self, step: int, values: dict[str, Any]) -> None:
        record = {"step": step, **{k: _to_json(v) for k, v in values.items()}}
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)):
                    self.writer.scalar(name, value, step)
            self.writer.flush()


def _to_json(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()


class Evaluator:
    """FID, KID and IS of generated images in the domain classifier's feature space."""

    def __init__(self, classifier_path: str, reference_images: np.ndarray | None, image_shape: tuple[int, ...]):
        self.reason = None
        if reference_images is None:
            self.reason = "this example has no reference images"
            return
        if not os.path.isfile(classifier_path):
            self.reason = (
                f"no classifier at {classifier_path!r} (python -m examples.train_digits_classifier "
                "--out runs/digits_classifier)"
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
        return {
            "fid": float(metrics.fid(features, self.reference_features)),
            "kid": float(kid.mean),
            "inception_score": float(score.mean),
        }


def _latest_step(directory: str) -> int | None:
    return checkpoint.latest_step(directory) if os.path.isdir(directory) else None


def run(
    program: Program,
    config: RunConfig,
    workdir: str,
    *,
    name: str,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Trains ``program`` for ``config.steps`` steps in ``workdir``; returns the summary.

    Raises:
      ValueError: ``workdir`` holds checkpoints but ``resume`` is false, or
        its checkpoints belong to a different model or example.
      jgan.steps.NonFiniteError: a loss or gradient became non-finite.
    """
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    metadata = {"example": name, "config": dataclasses.asdict(config)}
    state = program.init(jax.random.key(config.seed))
    start = 0
    latest = _latest_step(ckpt_dir)
    if latest is not None and not resume:
        raise ValueError(f"{ckpt_dir} already has checkpoints (step {latest}); pass --resume or use another --out.")
    if resume and latest is not None:
        state, saved = checkpoint.restore(ckpt_dir, state)
        if saved.get("example") != name:
            raise ValueError(f"{ckpt_dir} holds a {saved.get('example')!r} checkpoint, not {name!r}.")
        changed = sorted(
            key for key, value in metadata["config"].items()
            if key not in RESUMABLE_CHANGES and saved["config"].get(key) != value
        )  # fmt: skip
        if changed:
            before = ", ".join(f"{key}={saved['config'].get(key)!r}" for key in changed)
            raise ValueError(f"{ckpt_dir} was trained with other settings ({before}); resume with the same ones.")
        start = int(state.step)
    log = MetricsLog(workdir, tensorboard=config.tensorboard, resume_step=start)
    reference = program.reference_images
    evaluator = Evaluator(config.classifier, reference, None if reference is None else reference.shape[1:])
    if not evaluator.available and show_progress:
        print(f"note: no FID/IS during training: {evaluator.reason}")

    train_step = jax.jit(program.train_step, donate_argnums=0)
    batches = program.batches(start)
    eval_key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
    summary: dict[str, Any] = {"example": name, "resumed_from": start}
    tic = time.perf_counter()
    bar = tqdm(total=config.steps, initial=start, disable=not show_progress, desc=name, dynamic_ncols=True)
    try:
        for step in range(start + 1, config.steps + 1):
            state, step_metrics = train_step(state, next(batches))
            bar.update(1)
            last = step == config.steps
            evaluate = evaluator.available and program.generate is not None and (step % config.eval_every == 0 or last)
            if step % config.log_every == 0 or evaluate or last:
                values = jax.device_get(step_metrics)
                jgan_steps.check_finite(values, step=step)
                record = dict(values)
                if evaluate:
                    images = program.generate(state, jax.random.fold_in(eval_key, step), config.eval_samples)
                    record.update(evaluator(images, jax.random.fold_in(eval_key, step + 2**30)))
                log.write(step, record)
                bar.set_postfix({k: f"{float(v):.3f}" for k, v in record.items() if k in ("d_loss", "g_loss", "fid")})
                summary["final_metrics"] = {k: _to_json(v) for k, v in record.items()}
            if step % config.sample_every == 0 or last:
                images, columns = program.sample_grid(state)
                path = os.path.join(workdir, "samples", f"step_{step:06d}.png")
                save_grid(path, np.asarray(images), columns)
                save_grid(os.path.join(workdir, "samples.png"), np.asarray(images), columns)
            if step % config.checkpoint_every == 0 or last:
                checkpoint.save(ckpt_dir, state, metadata=metadata, max_to_keep=config.keep_checkpoints)
    finally:
        bar.close()
    summary["train_seconds"] = time.perf_counter() - tic
    summary["steps"] = config.steps
    summary["config"] = dataclasses.asdict(config)
    summary["classifier"] = config.classifier if evaluator.available else None
    with open(os.path.join(workdir, "summary.json"), "w") as file:
        json.dump(summary, file, indent=2)
    return {"state": state, **summary}


def main(config_type: type, build: Callable[[Any], Program], *, name: str, doc: str,
         argv: Sequence[str] | None) -> dict[str, Any]:
    """An example's command line: parses ``argv`` into ``config_type``, builds the program and runs it.

    Args:
      config_type: the example's config dataclass (its fields become flags).
      build: ``config -> Program``.
      name: the example's name, recorded in (and checked against) its checkpoints.
      doc: the example's docstring; its first line describes the command.
      argv: the arguments (``None``: ``sys.argv[1:]``).
    """
    config, args = parse_config(config_type, argv, doc.split("\n")[0])
    return run(build(config), config, args.out, name=name, resume=args.resume, show_progress=not args.quiet)


def main_guard(fn: Callable[[], Any]) -> None:
    """Runs ``fn`` and turns the errors a user can fix into a message and exit code 1."""
    try:
        fn()
    except jgan_steps.NonFiniteError as error:
        print(f"error: training diverged: {error}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


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


def eval_key(seed: int) -> jax.Array:
    """The fixed key of an example's sample grid."""
    return jax.random.fold_in(jax.random.key(seed), 7)


def fixed_latents(seed: int, n: int, latent_dim: int) -> jax.Array:
    """The latents of the sample grid, the same at every step and after a resume."""
    return jax.random.normal(eval_key(seed), (n, latent_dim))



def unconditional_program(
    config: RunConfig,
    *,
    generator: Any,
    discriminator: Any,
    latent_dim: int,
    d_stateful: bool,
    gan_kwargs: dict[str, Any],
) -> Program:
    """The ``Program`` of an unconditional image GAN with a flax DCGAN-style generator.

    Args:
      config: the run's settings (dataset, image size, batch size, seed).
      generator: a flax module ``z -> images`` with BatchNorm (stateful).
      discriminator: a flax module ``images -> logits``.
      latent_dim: z's dimension.
      d_stateful: whether the discriminator has BatchNorm statistics.
      gan_kwargs: ``make_gan``'s hyper-parameters (optimizers, loss,
        ``d_steps``, regularisers), e.g. ``jgan.presets.dcgan().gan_kwargs()``.
    """
    spec = data.image_dataset_spec(config.dataset, image_size=config.image_size)
    if "x" not in spec.keys:
        raise ValueError(f"{config.dataset!r} is an unpaired two-domain dataset; use examples/cyclegan.py.")
    g_eval = models.make_apply(generator, stateful=True, train=False)
    d_steps = gan_kwargs.get("d_steps", 1)
    gan = jgan_steps.make_gan(
        generator=models.make_apply(generator, stateful=True),
        discriminator=models.make_apply(discriminator, stateful=d_stateful),
        prior=latent_dim, g_stateful=True, d_stateful=d_stateful, sample_generator=g_eval,
        batches="sliced" if d_steps > 1 else "shared", **gan_kwargs,
    )  # fmt: skip

    def init(key):
        g_key, d_key, run_key = jax.random.split(key, 3)
        g_params, g_state = models.init_model(generator, g_key, jnp.zeros((1, latent_dim)))
        d_params, d_state = models.init_model(discriminator, d_key, jnp.zeros((1, *spec.image_shape)))
        return gan.init(run_key, g_params, d_params, g_model_state=g_state,
                        d_model_state=d_state if d_stateful else None)  # fmt: skip

    train_step = gan.step

    def batches(start):
        stream = data.image_dataset(
            config.dataset, split="train", batch_size=config.batch_size, seed=config.seed, image_size=config.image_size
        )
        images = skip((batch["x"] for batch in stream), start * d_steps)
        return stack_batches(images, d_steps) if d_steps > 1 else images

    sample = jax.jit(gan.sample, static_argnums=2)

    def generate(state, key, n):
        return sample(state, key, n)

    reference = data.digits(split="train", image_size=config.image_size)[0] if config.dataset == "digits" else None
    return Program(
        init=init,
        train_step=train_step,
        batches=batches,
        # The grid's latents are the same at every step and after a resume.
        sample_grid=lambda state: (sample(state, eval_key(config.seed), 64), 8),
        generate=generate,
        reference_images=reference,
    )
