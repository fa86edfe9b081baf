"""The mode-collapse table: GAN variants on mixtures of Gaussians, 10 seeds each.

Protocol (DESIGN.md): 2,500 generator samples; a sample is high quality within
3 std of its nearest mode; a mode is captured if a high-quality sample is
nearest to it; reverse KL of the high-quality mode histogram to uniform;
mean ± standard error over seeds. The seeds of one configuration train
together under ``jax.vmap`` (one compiled program).

    python benchmarks/mog_table.py                       # every dataset and row
    python benchmarks/mog_table.py --datasets ring --rows gan unrolled10 --seeds 3

Prints a markdown table beside the published PacGAN (Table 1) and VEEGAN
(Table 1) rows and writes it, with the raw per-seed numbers, to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import unrolled_mog  # noqa: E402  (the experiment's training core)

from jgan import metrics  # noqa: E402

# name -> overrides of the example's Config (on top of --steps and the dataset).
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


def run_row(dataset: str, row: str, *, seeds: int, steps: int) -> dict:
    """Trains ``seeds`` GANs of one row together and evaluates each."""
    overrides = dict(ROWS[row])
    k = overrides.pop("unroll_steps")
    config = dataclasses.replace(
        unrolled_mog.Config(), dataset=dataset, steps=steps, unroll_steps=k, baseline=False,
        **overrides).validate()
    experiment = unrolled_mog.make_experiment(config)
    keys = jax.vmap(lambda s: jax.random.split(jax.random.key(s), 3))(jnp.arange(seeds))
    start = time.perf_counter()
    states = jax.vmap(experiment.init)(keys[:, 0])
    states, last = jax.vmap(experiment.train_chunk, in_axes=(0, 0, None))(states, keys[:, 1], steps)
    samples = jax.vmap(experiment.sample, in_axes=(0, 0, None))(states, keys[:, 2], 2500)
    samples = jax.block_until_ready(samples)
    seconds = time.perf_counter() - start
    results = [metrics.mode_coverage(s, experiment.spec.centers, std=experiment.spec.std) for s in samples]
    finished = np.asarray(states.step) == steps
    return {
        "modes": [int(r.modes) for r in results],
        "high_quality": [100.0 * float(r.high_quality) for r in results],
        "reverse_kl": [float(r.reverse_kl) for r in results],
        "finished": finished.tolist(),
        "seconds": seconds,
        "config": dataclasses.asdict(config),
    }


def _mean_se(values) -> str:
    values = np.asarray(values, float)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{values.mean():.2f} ± {se:.2f}"


def format_table(dataset: str, results: dict, seeds: int) -> str:
    spec = unrolled_mog.data.mixture(dataset)
    lines = [
        f"### {dataset} ({spec.centers.shape[0]} modes, std {spec.std}; {seeds} seeds, mean ± s.e.)",
        "",
        "| method | modes | high-quality % | reverse KL | all seeds finite | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row, r in results.items():
        lines.append(
            f"| jgan {row} | {_mean_se(r['modes'])} | {_mean_se(r['high_quality'])} |"
            f" {_mean_se(r['reverse_kl'])} | {all(r['finished'])} | {r['seconds']:.0f} |")
    for name, modes, hq, kl in PUBLISHED.get(dataset, []):
        lines.append(f"| {name} | {modes} | {hq} | {'—' if kl is None else kl} | | |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ring_pacgan", "ring", "grid"],
                        choices=unrolled_mog.DATASETS)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=unrolled_mog.Config().steps)
    parser.add_argument("--out", default="runs/mog_table")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    header = (f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {args.steps} steps,"
              f" {args.seeds} seeds")
    print(header, flush=True)
    everything, tables = {}, [header, ""]
    for dataset in args.datasets:
        results = {}
        for row in args.rows:
            results[row] = run_row(dataset, row, seeds=args.seeds, steps=args.steps)
            print(f"{dataset} {row}: modes {_mean_se(results[row]['modes'])},"
                  f" HQ {_mean_se(results[row]['high_quality'])},"
                  f" KL {_mean_se(results[row]['reverse_kl'])}"
                  f" ({results[row]['seconds']:.0f} s)", flush=True)
        everything[dataset] = results
        tables += [format_table(dataset, results, args.seeds), ""]
    text = "\n".join(tables)
    print(text)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "results": everything}, f, indent=1)
    return everything


if __name__ == "__main__":
    main()
