"""Unrolled GANs on a mixture of Gaussians (Metz et al. 2016, Figure 1).

Trains an ordinary GAN (K = 0) and an unrolled GAN (K = ``--unroll-steps``)
from the same seed on a 2-D mixture of Gaussians, then writes to ``--out``:

- ``samples.npy``: 2,500 samples of the unrolled GAN's final generator, [2500, 2];
- ``metrics.json``: mode coverage of both GANs (DESIGN.md protocol: 2,500
  samples, high quality within 3 std), their progress, the Sinkhorn
  divergence and the sliced 2-Wasserstein distance (200 directions) to the
  data, the config and the wall time;
- ``samples.png``: Figure 1 of Metz et al.: one row per K, one column per
  snapshot of training, generated samples over the mode centres;
- ``metrics.jsonl``: the train step's metrics (the first and last steps and
  every ``--log-every``) and every evaluation, tagged with ``unroll_steps``;
- ``checkpoints/k<K>/`` (orbax) and ``snapshots/`` (the figure's samples).

``--resume`` continues an interrupted run (Ctrl-C saves a checkpoint), bit
for bit as if it had not stopped; see README, "Programs".

Usage::

    python -m examples.unrolled_mog                     # ring, K = 5 vs K = 0 -> runs/unrolled_mog
    python -m examples.unrolled_mog --dataset grid --out runs/grid
    python -m examples.unrolled_mog --resume            # after an interruption

The setting is Metz et al.'s ring (appendix A: 8 modes, radius 2, std 0.02,
Adam with β1 = 0.5, the generator differentiated through all K updates of
the discriminator) with the networks and schedule that the precision study
of ``benchmarks/README.md`` ("What moves precision") found: a 2-D latent,
MLPs of three hidden layers of 256 ReLU units, the generator's learning rate
1e-3 and the discriminator's 1e-4, both decayed to 0 by a cosine over the
second half, 4,000 steps of batch 256, the generator evaluated through an
EMA of its weights (decay 0.99). Metz et al.'s own networks (latent 256,
MLPs 2×128, constant learning rates) are ``--latent-dim 256 --hidden 128 128
--decay-fraction 0 --d-decay-fraction 0``: there the unrolled GAN covers the
modes but draws streaks through them (7/8 modes, 7 % high quality at
K = 10). Measured with the defaults (seed 0; 191 s on an idle 2-core CPU):

    K   modes  high quality  reverse KL  Sinkhorn divergence
    0   4/8     3.4 %        0.75        1.81
    5   8/8    93.6 %        0.013       0.21
    (two samples of the data: Sinkhorn divergence 0.07)

The ordinary GAN never settles: its samples jump between a few modes and
lines across the ring from one snapshot to the next (0, 0, 2, 1, 2, 4 modes
at the six snapshots); the unrolled GAN holds all eight from step 800 and
tightens them as the learning rates decay (90.9 % high quality at step
3,200).

``--dataset grid`` (25 modes) has its own defaults (``mog.DATASET_DEFAULTS``):
20,000 steps, the discriminator packed (PacGAN2: both GANs see pairs of
samples) and its learning rate constant. Unrolling alone lost modes there
(25/25 at step 2,000, 17/25 at 8,000), and with the discriminator's
learning rate decayed to 0 the look-ahead vanished at the end (94 % high
quality at step 16,000, 65 % at 20,000). With the defaults, K = 5 (seed 0,
trained alone with ``--no-baseline``; 30 min under a load average of
11–15 on 2 cores) reached 25/25 modes, 94.4 % high quality, reverse KL
0.006; the K = 0 baseline is then PacGAN2, which the mog_table
benchmark measured at 25/25 and 95 % on ten seeds.

The experiment itself (config, training core, evaluation, figure) is the
module ``examples.mog``; ``train_and_evaluate(config, workdir)`` here is the
whole program without its command line.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from examples import _harness as harness
from examples import mog
from jgan import loop as jgan_loop
from jgan import parallel

PROGRAM = "unrolled_mog"


def _snapshot_path(workdir: str, k: int, step: int) -> str:
    return os.path.join(workdir, "snapshots", f"k{k}_step{step:06d}.npy")


def train_one(
    config: mog.Config, k: int, workdir: str, *, resume: bool, show_progress: bool, stop: harness.StopRequest,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Trains the GAN with K = ``k`` to ``config.steps`` in ``workdir``; returns its results.

    Evaluates (and checkpoints) at ``config.event_steps()``, saving the
    figure's snapshots at ``config.snapshot_steps()``; a resumed run reads
    the earlier evaluations back from ``metrics.jsonl``.
    """
    experiment = mog.make_experiment(config, k, mesh=mesh)
    keys = mog.keys(config.seed)
    checkpoints = harness.Checkpoints(
        os.path.join(workdir, "checkpoints", f"k{k}"), program=PROGRAM,
        settings={**config.resume_key(), "unroll_steps": k}, max_to_keep=config.max_to_keep,
    )  # fmt: skip
    state, start = checkpoints.restore_or_init(experiment.init(keys.init), resume=resume)
    if start > config.steps:
        raise mog.ConfigError(f"The checkpoint in {checkpoints.directory} is at step {start}, past --steps {config.steps}.")
    log = harness.MetricsLog(os.path.join(workdir, "metrics.jsonl"), resume_step=start, series={"unroll_steps": k})
    snapshot_steps = set(config.snapshot_steps())

    def evaluate(state, step):
        if step in snapshot_steps:
            samples = parallel.to_host(experiment.sample(state, keys.snapshot, mog.SNAPSHOT_SAMPLES))
            harness.save_npy(_snapshot_path(workdir, k, step), samples)
        return mog.evaluate(experiment, state, keys.eval)

    train_seconds = 0.0

    def advance(state, step, n):
        nonlocal train_seconds
        tic = time.perf_counter()
        state, step_metrics, info = experiment.train_chunk(state, keys.data, n)
        jax.block_until_ready(state)
        train_seconds += time.perf_counter() - tic
        jgan_loop.check_run(info)
        return state, step_metrics

    if start == 0 and not any(r["step"] == 0 for r in log.records()):
        log.write(0, evaluate(state, 0))
    events = [s for s in config.event_steps() if s > 0]
    bar = harness.progress_bar(config.steps, start, f"K={k:<2d}", show_progress)
    try:
        state = harness.train(
            state, start=start, steps=config.steps, advance=advance, log=log, log_every=config.log_every,
            stop=stop, checkpoints=checkpoints, checkpoint_steps=events, events=events, on_event=evaluate,
            chunk_steps=config.chunk_steps, bar=bar, shown=("d_loss", "g_loss", "modes", "high_quality"),
        )  # fmt: skip
    finally:
        bar.close()
    history = [r for r in log.records() if "modes" in r]
    if not history or history[-1]["step"] != config.steps:  # Resumed at the end without its log.
        history.append(log.write(config.steps, evaluate(state, config.steps)))
    final = history[-1]
    raw = None
    if state.g_ema_params is not None:  # How much the EMA buys.
        raw = mog.evaluate(experiment, state._replace(g_ema_params=None), keys.eval)
    snapshots = {s: np.load(path) for s in sorted(snapshot_steps) if os.path.exists(path := _snapshot_path(workdir, k, s))}
    if not parallel.is_main_process():  # Only process 0 wrote them (and draws the figure).
        snapshots = {}
    return {
        "unroll_steps": k,
        "step": int(state.step),
        "resumed_from": start,
        **{key: final[key] for key in ("modes", "num_modes", "high_quality", "reverse_kl", "counts")},
        "sample_scale": final.get("sample_scale"),  # None in a log written before mog.evaluate reported it.
        "diverged": final.get("diverged"),
        "sinkhorn": None,  # Filled in by train_and_evaluate, against one data sample for every K.
        "sliced_wasserstein": None,  # The same.
        "without_ema": raw,
        "train_seconds": train_seconds,
        "history": [{key: r[key] for key in ("step", "modes", "high_quality", "reverse_kl")} for r in history],
        "snapshots": snapshots,
        "samples": parallel.to_host(experiment.sample(state, keys.eval, mog.EVAL_SAMPLES)),
    }


def train_and_evaluate(
    config: mog.Config,
    workdir: str,
    *,
    resume: bool = False,
    show_progress: bool = False,
    command_line: Sequence[str] | None = None,
    stop: harness.StopRequest | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Trains the K = 0 and K = ``config.unroll_steps`` GANs and writes the outputs.

    Args:
      config: the experiment.
      workdir: the output directory (the harness's resume policy applies).
      resume: continue each GAN from its latest checkpoint in ``workdir``.
      show_progress: show tqdm progress bars.
      command_line: the program's arguments, recorded in ``metrics.json``.
      stop: the interrupt request to honour (``None``: none).
      mesh: train data-parallel over this mesh (``mog.make_experiment``), or
        on one device (None).

    Returns:
      The contents of ``metrics.json``.

    Raises:
      harness.UsageError: a bad config, a refused or unwritable ``workdir``,
        or checkpoints written with other settings, before training.
      harness.Interrupted: a signal stopped training (a checkpoint is saved).
      jgan.steps.NonFiniteError: training diverged (the message names the step).
    """
    tic = time.perf_counter()
    config.validate()
    workdir = harness.prepare_run_dir(workdir, resume=resume)
    stop = stop or harness.StopRequest()
    runs = {k: train_one(config, k, workdir, resume=resume, show_progress=show_progress, stop=stop, mesh=mesh)
            for k in config.unroll_values()}  # fmt: skip
    reference, floor = mog.data_samples(config)
    sliced_key = mog.sliced_wasserstein_key(config)
    for run in runs.values():
        run["sinkhorn"] = mog.sinkhorn_to_data(run["samples"], reference)
        run["sliced_wasserstein"] = mog.sliced_wasserstein_to_data(run["samples"], reference, key=sliced_key)
    harness.save_npy(os.path.join(workdir, "samples.npy"), runs[config.unroll_steps]["samples"])
    if parallel.is_main_process():
        harness.save_figure(os.path.join(workdir, "samples.png"), mog.figure(config, runs), dpi=120)
    result = {
        "dataset": config.dataset,
        "unroll_steps": config.unroll_steps,
        "protocol": {"samples": mog.EVAL_SAMPLES, "high_quality_std": mog.HIGH_QUALITY_STD},
        "runs": {
            str(k): {key: v for key, v in run.items() if key not in ("snapshots", "samples")}
            for k, run in runs.items()
        },
        "sinkhorn": {
            "epsilon": mog.SINKHORN_EPSILON,
            "cost": "sqeuclidean",
            "samples": mog.EVAL_SAMPLES,
            "data_floor": mog.sinkhorn_to_data(floor, reference),
        },
        "sliced_wasserstein": {
            "p": mog.SLICED_P,
            "num_projections": mog.SLICED_PROJECTIONS,
            "samples": mog.EVAL_SAMPLES,
            "data_floor": mog.sliced_wasserstein_to_data(floor, reference, key=sliced_key),
        },
        "config": harness.to_json(dataclasses.asdict(config)),
        "command_line": None if command_line is None else list(command_line),
        "resumed": resume,
        "wall_time_s": time.perf_counter() - tic,
        "devices": [str(d) for d in (jax.devices()[:1] if mesh is None else mesh.devices.flat)],
        "processes": jax.process_count(),
    }
    harness.write_json(os.path.join(workdir, "metrics.json"), result)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line (``python -m examples.unrolled_mog --help`` lists the flags)."""

    def program(config, args, stop):
        command_line = sys.argv[1:] if argv is None else list(argv)
        result = train_and_evaluate(
            config, args.out, resume=args.resume, show_progress=not args.quiet, command_line=command_line, stop=stop,
            mesh=harness.data_mesh(args),
        )
        if not parallel.is_main_process():
            return result
        for k, run in result["runs"].items():
            print(
                f"K = {k:>2}: {run['modes']}/{run['num_modes']} modes, {100 * run['high_quality']:.1f}% high quality,"
                f" reverse KL {run['reverse_kl']:.3f}, Sinkhorn divergence {run['sinkhorn']['divergence']:.2f},"
                f" sliced W2 {run['sliced_wasserstein']:.3f}"
                + (f"; DIVERGED: samples spread {run['sample_scale']:.3g}x the data's" if run.get("diverged") else "")
            )
        print(
            f"Two samples of the data: Sinkhorn divergence {result['sinkhorn']['data_floor']['divergence']:.2f},"
            f" sliced W2 {result['sliced_wasserstein']['data_floor']:.3f}"
        )
        print(f"Wrote {args.out}/samples.npy, metrics.json, samples.png in {result['wall_time_s']:.0f} s.")
        return result

    return harness.main(
        mog.Config, program, argv=argv, doc=__doc__, prog="python -m examples.unrolled_mog", out="runs/unrolled_mog",
        processes=True,
    )


if __name__ == "__main__":
    main()
