"""The 1,000-mode table: GAN variants on stacked digits, over seeds, beside the published rows.

Protocol (DESIGN.md, "Mode collapse beyond 2-D"): a digit classifier labels
each channel of every evaluated sample; modes = distinct predicted triples,
KL = KL(triple histogram ‖ uniform over 1,000); mean ± standard error over
seeds. The seeds of one cell train together under ``jax.vmap`` (one
compiled program; tested to equal separate runs), the seed axis sharded over
the local devices (``benchmarks._cells.shard_seeds``): each device trains its
own seeds with no communication, so on an 8-device host a 10-seed row runs
as 2 seeds on each of 5 devices; the device column says ``kind × n`` when
``n`` devices trained. Evaluation runs seed by seed on one device. The data are
``jgan.data.stacked_digits``, an offline analogue of Stacked MNIST
(scikit-learn's digits), not MNIST: the published rows printed under ours
were measured on Stacked MNIST and compare only loosely.

Protocols (``--protocols``):

- ``metz_quarter`` / ``metz_half``: Metz et al. (2017), Table 2 (PacGAN
  Table 3): their small networks (``jgan.models.StackedGenerator``,
  ``StackedDiscriminator`` with D = ¼ G or ½ G), Adam with learning rates
  2e-4 (D) and 1e-4 (G), β = (0.5, 0.99), batch 128, a 256-dimensional
  latent, 25,600 evaluated samples.
- ``veegan``: VEEGAN (Srivastava et al. 2017) and PacGAN Table 2: DCGAN
  (``jgan.models.DCGANGenerator(image_size=28, channels=3, features=16)``
  and ``DCGANDiscriminator(features=16)``; the papers' DCGAN is wider),
  Adam 2e-4 with β1 = 0.5 for both, batch 64, a 100-dimensional latent,
  26,000 evaluated samples.

Rows (``--rows``) differ only in the method: ``gan``; ``unrolled1``,
``unrolled5``, ``unrolled10`` (Metz et al.'s surrogate through K updates,
``examples.stacked_digits.StraightLineUnrolled``), ``unrolled10_first_order``
(the ablation); ``pacgan2`` to ``pacgan4`` (PacGAN's m; with m = 3 the batch
is rounded down to a multiple of 3: 126 and 63 samples); ``best``: jgan's
combination, packing (m = 4) with an EMA of the generator's weights (decay
0.99), the example's defaults.

Steps: every protocol trains a fixed number of generator updates,
``STEPS`` (30,000, within the range of the papers' runs) unless ``--steps``
says otherwise. On an accelerator::

    python -m examples.train_digits_classifier --image-size 28 --steps 3000 --out runs/digits_classifier_28
    python -m benchmarks.stacked_table --seeds 10 --out runs/stacked_table

On a 2-core CPU that is days of work: the CPU runs use ``--steps``,
``--seeds`` and ``--eval-samples`` sized to a few minutes per cell, e.g.::

    python -m benchmarks.stacked_table --protocols metz_quarter --rows gan pacgan4 best \\
        --steps 1500 --seeds 2 --eval-samples 10000

Each table also gives the real data's numbers for the same count of
evaluated samples (what a perfect generator would score: the classifier's
errors keep its KL above 0 and its confidence below 1; with 25,600 samples
1,000 modes, KL 0.02, confidence 0.97). A generator whose samples are no
digits at all can still "cover" many triples: the classifier labels
anything, so read the modes beside the mean confidence.

Each (protocol, row) result is written to ``--out/results/`` as soon as it
is done (with its per-seed mode histograms, ``.npy``) and reused by later
runs with the same config, steps, evaluated samples and seeds; ``table.md``
and ``table.png`` (seed 0's sorted mode histogram per cell) are rebuilt from
every result present. Each table states the steps and evaluated samples of
its rows, so a CPU-sized row is never mistaken for the protocol's.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _cells as cells  # Shared with mog_table: result paths, loading results, mean ± s.e.
from examples import _harness as harness
from examples import stacked_digits as sd  # The experiment, imported as a module.
from examples._harness import option
from jgan import data, metrics

# name -> the protocol's overrides of the experiment's Config.
PROTOCOLS = {
    "metz_quarter": dict(networks="metz_quarter", batch_size=128, latent_dim=256, g_learning_rate=1e-4,
                         d_learning_rate=2e-4, beta1=0.5, beta2=0.99, eval_samples=25_600),
    "metz_half": dict(networks="metz_half", batch_size=128, latent_dim=256, g_learning_rate=1e-4,
                      d_learning_rate=2e-4, beta1=0.5, beta2=0.99, eval_samples=25_600),
    "veegan": dict(networks="dcgan", dcgan_features=16, batch_size=64, latent_dim=100, g_learning_rate=2e-4,
                   d_learning_rate=2e-4, beta1=0.5, beta2=0.999, eval_samples=26_000),
}
DESCRIPTIONS = {
    "metz_quarter": "Metz et al.'s networks, D = ¼ G; batch 128, latent 256, Adam G 1e-4 / D 2e-4, β = (0.5, 0.99)",
    "metz_half": "Metz et al.'s networks, D = ½ G; batch 128, latent 256, Adam G 1e-4 / D 2e-4, β = (0.5, 0.99)",
    "veegan": "DCGAN (features 16); batch 64, latent 100, Adam 2e-4, β1 = 0.5",
}

# Every row starts from the plain GAN, then sets its method.
_PLAIN = dict(unroll_steps=0, unroll_first_order=False, pack=1, ema_decay=None)
ROWS = {
    "gan": {},
    "unrolled1": dict(unroll_steps=1),
    "unrolled5": dict(unroll_steps=5),
    "unrolled10": dict(unroll_steps=10),
    "unrolled10_first_order": dict(unroll_steps=10, unroll_first_order=True),
    "pacgan2": dict(pack=2),
    "pacgan3": dict(pack=3),
    "pacgan4": dict(pack=4),
    "best": dict(pack=4, ema_decay=0.99),
}

# The real data's reference numbers are drawn from this seed (apart from the training seeds 0, 1, ...).
REFERENCE_SEED = 1_000_003

# Generator updates per protocol on an accelerator (``--steps`` overrides).
STEPS = {"metz_quarter": 30_000, "metz_half": 30_000, "veegan": 30_000}

# The same protocols on Stacked MNIST, from the papers (name, modes, KL).
_METZ = "Metz et al. Table 2"
_PACGAN = "PacGAN Table 3"
PUBLISHED = {
    "metz_quarter": [
        (f"DCGAN ({_METZ})", 30.6, 5.99), (f"Unrolled 1 step ({_METZ})", 65.4, 5.91),
        (f"Unrolled 5 steps ({_METZ})", 236.4, 4.67), (f"Unrolled 10 steps ({_METZ})", 327.2, 4.66),
        (f"PacDCGAN2 ({_PACGAN})", 484.5, 2.61), (f"PacDCGAN3 ({_PACGAN})", 601.3, 2.00),
        (f"PacDCGAN4 ({_PACGAN})", 667.4, 1.81),
    ],
    "metz_half": [
        (f"DCGAN ({_METZ})", 628.0, 2.58), (f"Unrolled 1 step ({_METZ})", 523.6, 2.44),
        (f"Unrolled 5 steps ({_METZ})", 732.0, 1.66), (f"Unrolled 10 steps ({_METZ})", 817.4, 1.43),
        (f"PacDCGAN2 ({_PACGAN})", 840.7, 1.00), (f"PacDCGAN3 ({_PACGAN})", 866.6, 0.90),
        (f"PacDCGAN4 ({_PACGAN})", 820.2, 1.15),
    ],
    "veegan": [
        ("DCGAN (VEEGAN Table 2)", 99.0, 3.40), ("Unrolled GAN (VEEGAN Table 2)", 48.7, 4.32),
        ("VEEGAN (VEEGAN Table 2)", 150.0, 2.95), ("PacDCGAN2 (PacGAN Table 2)", 1000.0, 0.06),
    ],
}


def row_config(protocol: str, row: str, *, steps: int, eval_samples: int | None = None) -> sd.Config:
    """The experiment's config of one table cell.

    ``eval_samples`` replaces the protocol's (25,600 or 26,000) when given.
    A pack size that does not divide the batch rounds the batch down to a
    multiple of it.
    """
    fields = {**_PLAIN, **PROTOCOLS[protocol], **ROWS[row]}
    if eval_samples is not None:
        fields["eval_samples"] = eval_samples
    fields["batch_size"] -= fields["batch_size"] % fields["pack"]
    return dataclasses.replace(sd.Config(), steps=steps, seed=0, **fields).validate()


def train_seeds(config: sd.Config, *, seeds: int, devices: Sequence[jax.Device] | None = None,
                ) -> tuple[sd.Experiment, jax.Array, np.ndarray, dict]:
    """Trains ``seeds`` GANs of one config together under ``jax.vmap`` (seeds 0, 1, ...), sharded over ``devices``.

    Seed ``s`` uses ``examples.stacked_digits.keys(s)`` for initialisation,
    training data and evaluation, as the example's ``--seed s`` does. The
    seed axis is split over ``devices`` (default: ``jax.local_devices()``) by
    ``benchmarks._cells.shard_seeds``; a seed's result is the same on any
    number of devices, up to float32 roundoff.

    Returns:
      ``(experiment, states, finished [seeds], timing)``: the states stacked
      on a leading seed axis sharded over the devices, ``seeds`` rows and
      perhaps a few more (padding that fills the last device: see
      ``shard_seeds``); a seed whose training met a non-finite step stopped
      there and is not ``finished``; ``timing`` holds ``seconds`` (all of
      training), ``compile_seconds`` (the first step, compile included),
      ``step_ms`` (the mean of the others, all seeds together) and
      ``devices`` (how many trained).
    """
    experiment = sd.make_experiment(config)
    shards = cells.shard_seeds(seeds, devices)
    init, step, seed_keys = _vmapped(experiment, shards)
    keys = seed_keys(shards.indices())
    start = time.perf_counter()
    states = init(keys.init)
    states, _, _ = step(states, keys.data)
    states = jax.block_until_ready(states)
    first = time.perf_counter()
    for _ in range(config.steps - 1):
        states, _, _ = step(states, keys.data)
    states = jax.block_until_ready(states)
    end = time.perf_counter()
    timing = {
        "seconds": end - start,
        "compile_seconds": first - start,
        "step_ms": 1000 * (end - first) / max(config.steps - 1, 1),
        "devices": shards.devices,
    }
    return experiment, states, shards.keep(states.step) == config.steps, timing


@functools.lru_cache(maxsize=16)
def _vmapped(experiment: sd.Experiment, shards: cells.SeedShards):
    """The experiment's ``init`` and ``train_step``, and the seeds' keys, mapped over sharded seeds.

    Compiled once per experiment and layout.
    """
    return shards.map(experiment.init), shards.map(experiment.train_step), shards.map(sd.keys)


def run_row(config: sd.Config, *, seeds: int, classify, histograms_path: str | None = None) -> dict:
    """Trains ``seeds`` GANs of one config and counts each one's modes on ``config.eval_samples`` samples.

    Args:
      config: the cell's config.
      seeds: how many seeds (0, 1, ...).
      classify: the mode-counting classifier (``examples.stacked_digits.load_classify``).
      histograms_path: where to save the mode histograms ``[seeds, 1000]`` (.npy).
    """
    experiment, states, finished, timing = train_seeds(config, seeds=seeds)
    # Evaluated one seed at a time on one device, as before the seeds were sharded
    # (a row taken out of the sharded states would be replicated on every device).
    states = jax.device_put(states, jax.local_devices()[0])
    keys = jax.vmap(sd.keys)(jnp.arange(seeds))
    tic = time.perf_counter()
    results = [
        sd.evaluate(experiment, jax.tree.map(lambda x: x[s], states), keys.eval[s], config.eval_samples, classify)
        for s in range(seeds)
    ]
    eval_seconds = time.perf_counter() - tic
    if histograms_path is not None:
        harness.save_npy(histograms_path, np.stack([r.histogram for r in results]))
    return {
        "modes": [r.modes for r in results],
        "kl": [r.kl for r in results],
        "confidence": [float(np.mean(r.confidence)) for r in results],
        "finished": finished.tolist(),
        **timing,
        "eval_seconds": eval_seconds,
        "device": jax.devices()[0].device_kind,
        "seeds": seeds,
        "config": dataclasses.asdict(config),
    }


def real_data_reference(n: int, classify) -> dict:
    """The protocol's numbers for ``n`` real stacked digits (what a perfect generator would score).

    The classifier's errors give the real data a KL above 0 and a confidence below 1.
    """
    images, _ = data.stacked_digits(jax.random.key(REFERENCE_SEED), n, image_size=sd.IMAGE_SIZE)
    predictions, confidence = metrics.classify_channels(classify, images)
    result = metrics.stacked_mode_coverage(predictions)
    return {"modes": int(result.modes), "kl": float(result.kl), "confidence": float(np.mean(confidence)),
            "eval_samples": n}


def _reference_path(out: str, n: int) -> str:
    return os.path.join(out, "results", f"real_data__{n}.json")


def format_table(protocol: str, results: dict, references: dict | None = None) -> str:
    """A markdown table of one protocol's rows, the real data's numbers, then the published rows.

    ``references``: evaluated samples -> :func:`real_data_reference`'s result.
    """
    lines = [
        f"### {protocol}: {DESCRIPTIONS[protocol]} (mean ± s.e. over seeds)",
        "",
        f"Protocol: {STEPS[protocol]:,} steps (ours; the papers' step counts differ), "
        f"{PROTOCOLS[protocol]['eval_samples']:,} evaluated samples. Rows with fewer were sized for a CPU."
        " Our data: offline stacked digits (scikit-learn's), not Stacked MNIST.",
        "",
        "| method | seeds | steps | evaluated samples | modes (of 1,000) | KL | mean confidence | all seeds finite"
        " | seconds | ms / step (all seeds) | device |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | --- | ---: | ---: | --- |",
    ]
    for row, r in results.items():
        lines.append(
            f"| jgan {row} | {r['seeds']} | {r['config']['steps']:,} | {r['config']['eval_samples']:,} |"
            f" {cells.mean_se(r['modes'])} | {cells.mean_se(r['kl'])} | {cells.mean_se(r['confidence'])} |"
            f" {all(r['finished'])} | {r['seconds']:.0f} | {r['step_ms']:.0f} | {cells.device_label(r)} |")
    for n in sorted({r["config"]["eval_samples"] for r in results.values()}):
        if (ref := (references or {}).get(n)) is not None:
            lines.append(f"| real data (offline stacked digits) | | | {n:,} | {ref['modes']} | {ref['kl']:.2f} |"
                         f" {ref['confidence']:.2f} | | | | |")
    for name, modes, kl in PUBLISHED[protocol]:
        lines.append(f"| {name} | | | | {modes} | {kl} | | | | | |")
    return "\n".join(lines)


def plot_histograms(everything: dict, out: str, path: str) -> bool:
    """One panel per protocol: seed 0's sorted mode histogram for each row, with the uniform level.

    Returns whether a figure was written (cells without saved histograms are skipped).
    """
    done = {p: [r for r in rs if os.path.exists(cells.result_path(out, p, r, ".npy"))]
             for p, rs in everything.items()}
    done = {p: rs for p, rs in done.items() if rs}
    if not done:
        return False
    plt = harness.pyplot()
    fig, axes = plt.subplots(1, len(done), figsize=(5 * len(done), 3.4), squeeze=False)
    for ax, (protocol, rows) in zip(axes[0], done.items()):
        for row in rows:
            counts = np.sort(np.load(cells.result_path(out, protocol, row, ".npy"))[0])[::-1]
            modes = everything[protocol][row]["modes"][0]
            ax.plot(np.arange(1, counts.size + 1), counts, lw=1, label=f"{row} ({modes})")
        total = counts.sum()
        ax.axhline(total / counts.size, color="k", lw=0.8, ls="--", label="uniform")
        ax.set(xscale="log", yscale="symlog", xlabel="digit triple (sorted)", ylabel="samples", title=protocol)
        ax.legend(fontsize=6)
    fig.suptitle("seed 0 of each cell: samples per digit triple (modes in brackets); offline stacked digits",
                 fontsize=8)
    fig.tight_layout()
    harness.save_figure(path, fig, dpi=110)
    return True


def _reusable(old: dict | None, config: sd.Config, seeds: int) -> bool:
    """Whether a stored result is that of ``config`` with ``seeds`` seeds (what training and evaluation compute)."""
    return cells.reusable(old, sd.training_fields(config), seeds)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The table's command line."""

    protocols: tuple[str, ...] = option(tuple(PROTOCOLS), "the protocols", choices=PROTOCOLS)
    rows: tuple[str, ...] = option(tuple(ROWS), "the rows (methods)", choices=ROWS)
    seeds: int = option(10, "seeds per cell: 0, 1, ..., seeds - 1")
    steps: int | None = option(None, f"generator updates (none: the protocol's, {STEPS})")
    eval_samples: int | None = option(None, "evaluated samples per seed (none: the protocol's, 25,600 or 26,000)")
    classifier: str = option(sd.DEFAULT_CLASSIFIER, "the mode-counting digit classifier (28x28)")
    out: str = option("runs/stacked_table", "the output directory (results/, table.md, table.png)")
    force: bool = option(False, "recompute results already in --out")
    table_only: bool = option(False, "train nothing: rebuild table.md and table.png from the results in --out")

    def validate(self) -> None:
        for name in ("seeds", "steps", "eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError("--seeds, --steps and --eval-samples must be >= 1.")


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line (``python -m benchmarks.stacked_table --help`` lists the flags)."""
    return harness.main(Settings, _table, argv=argv, doc=__doc__, prog="python -m benchmarks.stacked_table",
                        out=None, resume=False, quiet=False)


def _table(args: Settings, _, stop) -> dict:
    configs = {
        (protocol, row): row_config(protocol, row, steps=args.steps or STEPS[protocol], eval_samples=args.eval_samples)
        for protocol in args.protocols for row in args.rows
    }  # Every cell's config is valid before anything trains.
    classify = None if args.table_only else sd.load_classify(args.classifier)
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, steps {args.steps or STEPS},"
          f" evaluated samples {args.eval_samples or 'the protocol’s'}, {args.seeds} seeds", flush=True)
    for (protocol, row), config in [] if args.table_only else configs.items():
        if stop.requested:  # SIGINT / SIGTERM: no further cells; the table of those done, then the exit code.
            print(f"stopped by a signal before {protocol} {row}; the same command continues (done cells are reused)",
                  file=sys.stderr, flush=True)
            break
        path = cells.result_path(args.out, protocol, row)
        old = cells.load_result(path)
        if not args.force and _reusable(old, config, args.seeds):
            result = old
            print(f"{protocol} {row}: reused {path}", flush=True)
        else:
            result = run_row(config, seeds=args.seeds, classify=classify,
                             histograms_path=cells.result_path(args.out, protocol, row, ".npy"))
            harness.write_json(path, result, indent=1)
        print(f"{protocol} {row}: modes {cells.mean_se(result['modes'])}, KL {cells.mean_se(result['kl'])}"
              f" ({result['seconds']:.0f} s training, {result['step_ms']:.0f} ms/step)", flush=True)
    for n in [] if args.table_only else sorted({c.eval_samples for c in configs.values()}):
        if not os.path.exists(_reference_path(args.out, n)):
            harness.write_json(_reference_path(args.out, n), real_data_reference(n, classify))
    # The table holds every result in --out (this run's and earlier ones').
    everything, tables = {}, []
    for protocol in PROTOCOLS:
        paths = {row: cells.result_path(args.out, protocol, row) for row in ROWS}
        results = {row: r for row, path in paths.items() if (r := cells.load_result(path))}
        if results:
            everything[protocol] = results
            references = {n: cells.load_result(_reference_path(args.out, n))
                          for n in {r["config"]["eval_samples"] for r in results.values()}}
            tables += [format_table(protocol, results, references), ""]
    text = "\n".join([f"jax {jax.__version__}, {jax.devices()[0].device_kind}", "", *tables])
    print(text)
    harness.write_text(os.path.join(args.out, "table.md"), text)
    plot_histograms(everything, args.out, os.path.join(args.out, "table.png"))
    if stop.requested:
        raise SystemExit(128 + stop.signum)
    return everything


if __name__ == "__main__":
    main()
