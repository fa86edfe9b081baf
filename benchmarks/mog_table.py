"""The mode-collapse table: GAN variants on mixtures of Gaussians, over seeds.

Protocol (DESIGN.md): 2,500 generator samples; a sample is high quality within
3 std of its nearest mode; a mode is captured if a high-quality sample is
nearest to it; reverse KL of the high-quality mode histogram to uniform;
mean ± standard error over seeds. The seeds of one configuration train
together under ``jax.vmap`` (one compiled program; tested to equal separate
runs), the seed axis sharded over the local devices
(``benchmarks._cells.shard_seeds``): each device trains its own seeds with no
communication, so on an 8-device host a 10-seed row runs as 2 seeds on each
of 5 devices. A seed's result does not depend on the device count (tested,
to float32 roundoff); the device column says ``kind × n`` when ``n`` devices
trained.

    python -m benchmarks.mog_table                       # every dataset and row, 10 seeds
    python -m benchmarks.mog_table --datasets ring --rows gan unrolled10 --seeds 3
    python -m benchmarks.mog_table --settings metz       # Metz et al.'s networks instead
    python -m benchmarks.mog_table --datasets ring_pacgan --rows pacgan2 --seeds 3 \\
        --settings metz --set latent_dim=2 --out runs/precision/latent2   # one cell of the precision study

Every row shares one set of network and optimiser settings (``--settings``):
``tuned`` (the default, and the defaults of ``python -m examples.unrolled_mog``)
is what the precision study found to move high-quality samples from ~25 % to
~97 % — a 2-D latent, MLPs of 3×256 and a cosine decay of both learning rates
over the second half; ``metz`` is Metz et al.'s networks (latent 256, MLPs
2×128, constant learning rates; the example's defaults before issue 15). The
rows then differ only in the method.

Each (dataset, row) result is written to ``--out/results/`` as soon as it is
done and reused by later runs with the same settings, steps and seeds, so an
interrupted table continues where it stopped; ``table.md`` (and
``table.png``, seed 0's samples of every cell) is rebuilt from every result
present. Prints the tables beside the published PacGAN
(Table 1) and VEEGAN (Table 1) rows.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from benchmarks import _cells as cells
from examples import _harness as harness
from examples import mog  # The experiment, imported as a module.
from examples._harness import option
from jgan import data, metrics

# name -> overrides of the experiment's Config (on top of the settings, --steps and the dataset).
ROWS = {
    "gan": dict(unroll_steps=0),
    "unrolled1": dict(unroll_steps=1),
    "unrolled5": dict(unroll_steps=5),
    "unrolled10": dict(unroll_steps=10),
    "unrolled10_first_order": dict(unroll_steps=10, unroll_first_order=True),
    "pacgan2": dict(unroll_steps=0, pack=2),
    "pacgan4": dict(unroll_steps=0, pack=4),
    # λ = 0.1 and 5 critic steps, as in Gulrajani et al.'s toy-data code.
    "wgan_gp": dict(unroll_steps=0, loss="wasserstein", gradient_penalty=0.1, d_steps=5),
}

# Settings shared by every row.
SETTINGS = {
    "tuned": dict(latent_dim=2, hidden=(256, 256, 256), decay_fraction=0.5, d_decay_fraction=0.5),
    "metz": dict(latent_dim=256, hidden=(128, 128), decay_fraction=0.0, d_decay_fraction=0.0),
}

# Generator updates per dataset (``--steps`` overrides): the 25-mode grid needs
# more than the rings (tuned PacGAN2, 3 seeds: 6 % high quality after 4,000
# steps, 78 % after 10,000, 96 % after 20,000).
STEPS = mog.DEFAULT_STEPS

# Same protocol, from the papers (modes, high-quality %, reverse KL).
PUBLISHED = {
    "ring_pacgan": [
        ("GAN (PacGAN Table 1)", 6.3, 98.2, 0.45),
        ("PacGAN2 (PacGAN Table 1)", 7.9, 95.6, 0.07),
        ("Unrolled GAN (VEEGAN Table 1)", 7.6, 35.6, None),
    ],
    "grid": [
        ("GAN (PacGAN Table 1)", 17.3, 94.8, 0.70),
        ("PacGAN4 (PacGAN Table 1)", 24.8, 93.6, 0.04),
        ("Unrolled GAN (VEEGAN Table 1)", 23.6, 16.0, None),
    ],
    "ring": [],
}


def row_config(dataset: str, row: str, *, settings: str, steps: int,
               overrides: dict | None = None) -> mog.Config:
    """The example's config of one table cell (``unroll_steps`` included).

    ``overrides`` (``--set``) replace config fields after the settings and the
    row, e.g. ``{"latent_dim": 256}`` for a precision study.
    """
    fields = {"pack": 1, **SETTINGS[settings], **ROWS[row], **(overrides or {})}  # Packed only where the row says.
    return dataclasses.replace(
        mog.Config(), dataset=dataset, steps=steps, baseline=False, **fields).validate()


def parse_overrides(items: list[str]) -> dict:
    """``["latent_dim=2", "hidden=[256, 256]"]`` -> config overrides (values as JSON)."""
    fields = {f.name for f in dataclasses.fields(mog.Config)}
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields or name in ("dataset", "steps"):
            raise ValueError(f"--set takes NAME=VALUE with NAME a field of examples.mog.Config other than"
                             f" dataset and steps ({', '.join(sorted(fields - {'dataset', 'steps'}))}); got {item!r}.")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"--set {name}: the value must be JSON (e.g. 2, 1e-3, [256, 256], true), got {value!r}.")
        if name == "hidden":
            overrides[name] = tuple(overrides[name])
    return overrides


def train_seeds(config: mog.Config, *, seeds: int,
                devices: Sequence[jax.Device] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Trains ``seeds`` GANs of one config together (seeds 0, 1, ...), the seed axis sharded over ``devices``.

    Seed ``s`` uses ``jax.random.split(jax.random.key(s), 3)`` for
    initialisation, training data and evaluation samples. The seeds train
    under ``jax.vmap``, split over ``devices`` (default:
    ``jax.local_devices()``) by ``benchmarks._cells.shard_seeds``; a seed's result is the
    same on any number of devices, up to float32 roundoff.

    Returns:
      ``(samples [seeds, 2500, dim], finished [seeds], seconds)``; a seed whose
      training hit a non-finite step stopped there and is not ``finished``.
    """
    shards = cells.shard_seeds(seeds, devices)
    experiment = mog.make_experiment(config)
    init, train, sample, seed_keys = _programs(experiment.init, experiment.train_chunk, experiment.sample, shards)
    init_keys, data_keys, eval_keys = seed_keys(shards.indices())
    start = time.perf_counter()
    states = init(init_keys)
    states, _, _ = train(states, data_keys, config.steps)
    samples = jax.block_until_ready(sample(states, eval_keys, mog.EVAL_SAMPLES))
    seconds = time.perf_counter() - start
    samples, step = shards.keep((samples, states.step))
    return samples, step == config.steps, seconds


@functools.lru_cache(maxsize=16)
def _programs(init, train_chunk, sample, shards: cells.SeedShards):
    """An experiment's ``init``, ``train_chunk`` and ``sample``, and the seeds' keys, mapped over sharded seeds.

    Cached per experiment (its functions: ``Experiment`` holds arrays and is
    not hashable) and layout, so a second cell of the same programs compiles nothing.
    """
    return (shards.map(init),
            shards.map(train_chunk, static_argnums=2),
            shards.map(sample, static_argnums=2),
            shards.map(lambda s: tuple(jax.random.split(jax.random.key(s), 3))))


def run_row(config: mog.Config, *, seeds: int, samples_path: str | None = None) -> dict:
    """Trains ``seeds`` GANs of one config and evaluates each under the protocol.

    ``samples_path``: where to save the samples, ``[seeds, 2500, dim]`` (.npy).
    """
    samples, finished, seconds = train_seeds(config, seeds=seeds)
    if samples_path is not None:
        harness.save_npy(samples_path, samples)
    spec = data.mixture(config.dataset)
    results = [
        metrics.mode_coverage(s, spec.centers, std=spec.std, threshold=mog.HIGH_QUALITY_STD)
        for s in samples
    ]
    return {
        "modes": [int(r.modes) for r in results],
        "high_quality": [100.0 * float(r.high_quality) for r in results],
        "reverse_kl": [float(r.reverse_kl) for r in results],
        "finished": finished.tolist(),
        "diverged": [not mog.sample_scale(s, spec) <= mog.DIVERGED_SCALE for s in samples],
        "seconds": seconds,
        "device": jax.devices()[0].device_kind,
        "devices": cells.shard_seeds(seeds).devices,  # How many trained (train_seeds' layout).
        "seeds": seeds,
        "config": dataclasses.asdict(config),
    }


def format_table(dataset: str, results: dict) -> str:
    """A markdown table of one dataset's rows, then the published rows."""
    spec = data.mixture(dataset)
    lines = [
        f"### {dataset} ({spec.centers.shape[0]} modes, std {spec.std}; mean ± s.e. over seeds)",
        "",
        "| method | seeds | steps | modes | high-quality % | reverse KL | all seeds finite | diverged seeds | seconds | device |",
        "| --- | ---: | ---: | --- | --- | --- | --- | ---: | ---: | --- |",
    ]
    for row, r in results.items():
        # Cells measured before the divergence check have no count.
        diverged = sum(r["diverged"]) if "diverged" in r else "—"
        lines.append(
            f"| jgan {row} | {r['seeds']} | {r['config']['steps']:,} | {cells.mean_se(r['modes'])} |"
            f" {cells.mean_se(r['high_quality'])} | {cells.mean_se(r['reverse_kl'])} | {all(r['finished'])} |"
            f" {diverged} | {r['seconds']:.0f} | {cells.device_label(r)} |")
    for name, modes, hq, kl in PUBLISHED.get(dataset, []):
        lines.append(f"| {name} | | | {modes} | {hq} | {'—' if kl is None else kl} | | | | |")
    return "\n".join(lines)


def plot_samples(everything: dict, out: str, path: str) -> bool:
    """One panel per table cell (datasets down, rows across): seed 0's samples over the modes.

    Returns whether a figure was written (cells without saved samples are skipped).
    """
    done = [(d, r) for d, rs in everything.items() for r in rs
             if os.path.exists(cells.result_path(out, d, r, ".npy"))]
    if not done:
        return False
    plt = harness.pyplot()
    datasets = [d for d in ("ring_pacgan", "ring", "grid") if any(c[0] == d for c in done)]
    rows = [r for r in ROWS if any(c[1] == r for c in done)]
    fig, axes = plt.subplots(len(datasets), len(rows), figsize=(2.2 * len(rows), 2.3 * len(datasets)),
                             squeeze=False)
    for i, dataset in enumerate(datasets):
        spec = data.mixture(dataset)
        for j, row in enumerate(rows):
            ax = axes[i, j]
            if (dataset, row) not in done:
                ax.axis("off")
                continue
            r = everything[dataset][row]
            samples = np.load(cells.result_path(out, dataset, row, ".npy"))[0]
            mog.scatter_mixture(ax, samples, spec,
                                title=f"{row}\n{r['modes'][0]} modes, {r['high_quality'][0]:.0f} % HQ")
            if j == 0:
                ax.set_ylabel(dataset, fontsize=8)
    fig.suptitle("seed 0 of each cell: 2,500 samples (blue) and the modes (red)", fontsize=8)
    fig.tight_layout()
    harness.save_figure(path, fig, dpi=110)
    return True


def _reusable(old: dict | None, config: mog.Config, seeds: int) -> bool:
    """Whether a stored result is that of ``config`` with ``seeds`` seeds (what training computes is the same)."""
    return cells.reusable(old, mog.training_fields(config), seeds)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The table's command line."""

    datasets: tuple[str, ...] = option(("ring_pacgan", "ring", "grid"), "the mixtures", choices=mog.DATASETS)
    rows: tuple[str, ...] = option(tuple(ROWS), "the rows (methods)", choices=ROWS)
    seeds: int = option(10, "seeds per cell: 0, 1, ..., seeds - 1")
    steps: int | None = option(None, f"generator updates (none: per dataset, {STEPS})")
    settings: str = option("tuned", "the network/optimiser settings shared by every row", choices=SETTINGS)
    out: str = option("runs/mog_table", "the output directory (results/, table.md, table.png)")
    set: tuple[str, ...] = option(
        (), "NAME=VALUE overrides of examples.mog.Config's fields for every row (JSON values), e.g. latent_dim=256")
    force: bool = option(False, "recompute results already in --out")
    table_only: bool = option(False, "train nothing: rebuild table.md and table.png from the results in --out")

    def validate(self) -> None:
        if self.seeds < 1 or (self.steps is not None and self.steps < 1):
            raise ValueError("--seeds and --steps must be >= 1.")


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line (``python -m benchmarks.mog_table --help`` lists the flags)."""
    return harness.main(Settings, _table, argv=argv, doc=__doc__, prog="python -m benchmarks.mog_table",
                        out=None, resume=False, quiet=False)


def _table(args: Settings, _, stop) -> dict:
    try:
        overrides = parse_overrides(list(args.set))
    except ValueError as error:
        raise harness.UsageError(str(error)) from None
    for dataset in args.datasets:  # Every cell's config is valid before anything trains.
        for row in args.rows:
            row_config(dataset, row, settings=args.settings, steps=args.steps or STEPS[dataset], overrides=overrides)
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, settings {args.settings}"
          f" {SETTINGS[args.settings]}, overrides {overrides}, steps {args.steps or STEPS}, {args.seeds} seeds",
          flush=True)
    for dataset in [] if args.table_only else args.datasets:
        for row in args.rows:
            if stop.requested:  # SIGINT / SIGTERM: no further cells; the table of those done, then the exit code.
                print(f"stopped by a signal before {dataset} {row}; the same command continues (done cells are reused)",
                      file=sys.stderr, flush=True)
                break
            config = row_config(dataset, row, settings=args.settings, steps=args.steps or STEPS[dataset],
                                overrides=overrides)
            path = cells.result_path(args.out, dataset, row)
            old = cells.load_result(path)
            if not args.force and _reusable(old, config, args.seeds):
                result = old
                print(f"{dataset} {row}: reused {path}", flush=True)
            else:
                result = run_row(config, seeds=args.seeds,
                                 samples_path=cells.result_path(args.out, dataset, row, ".npy"))
                harness.write_json(path, result, indent=1)
            print(f"{dataset} {row}: modes {cells.mean_se(result['modes'])},"
                  f" HQ {cells.mean_se(result['high_quality'])},"
                  f" KL {cells.mean_se(result['reverse_kl'])}"
                  f" ({result['seconds']:.0f} s)", flush=True)
    # The table holds every result in --out (this run's and earlier ones').
    everything, tables = {}, []
    for dataset in ("ring_pacgan", "ring", "grid"):
        results = {row: r for row in ROWS if (r := cells.load_result(cells.result_path(args.out, dataset, row)))}
        if results:
            everything[dataset] = results
            tables += [format_table(dataset, results), ""]
    settings = sorted({json.dumps({k: r["config"][k] for k in ("steps", "latent_dim", "hidden", "decay_fraction",
                                                                  "d_decay_fraction", "batch_size", "g_learning_rate",
                                                                  "d_learning_rate", "ema_decay")})
                       for rs in everything.values() for r in rs.values()})
    text = "\n".join([f"jax {jax.__version__}, {jax.devices()[0].device_kind}; settings: {'; '.join(settings)}",
                      "", *tables])
    print(text)
    harness.write_text(os.path.join(args.out, "table.md"), text)
    plot_samples(everything, args.out, os.path.join(args.out, "table.png"))
    if stop.requested:
        raise SystemExit(128 + stop.signum)
    return everything


if __name__ == "__main__":
    main()
