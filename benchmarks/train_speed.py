"""Train steps per second of every example, on its defaults, on this machine's device.

Each example's program is built from its default ``Config`` exactly as the
example builds it (its networks, optimizers, losses, batch size and data), its
train step is compiled once, and the step is then called on its own output
state and one real batch (``jax.block_until_ready`` after each call): the
median wall time of ``--repeats`` calls, after ``--warmup`` calls, with the
interquartile range. The programs:

- ``mog_k0`` / ``mog_k5``: ``examples.unrolled_mog``'s GANs (the ring,
  MLPs, batch 256, K = 0 and K = 5), timed through the example's own
  compiled chunk of ``--mog-chunk`` steps (``jgan.loop.run_steps``, data drawn
  inside the program), per step;
- ``dcgan``, ``wgan_gp`` (5 critic updates with the gradient penalty per
  generator update), ``conditional``: ``examples.dcgan``, ``examples.wgan_gp``,
  ``examples.conditional_gan`` at 32×32 on the offline digits, batch 64;
- ``cyclegan``: ``examples.cyclegan`` (two ResNet generators, two PatchGAN
  critics, batch 8);

the image examples' steps run as the examples run them: one step of
``jgan.loop.run_steps`` per compiled call.

"Before and after" comparisons run this script on two checkouts (``--label``
names the run; the README's table puts two runs side by side).

Usage::

    python -m benchmarks.train_speed --out runs/train_speed
    python -m benchmarks.train_speed --programs dcgan wgan_gp --repeats 5
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from examples import _harness as harness
from examples._harness import option
from jgan import loop

PROGRAMS = ("mog_k0", "mog_k5", "dcgan", "wgan_gp", "conditional", "cyclegan")


def _image_step(module_name: str) -> Callable[[], tuple[Callable, Any, Any]]:
    def setup():
        import importlib

        example = importlib.import_module(f"examples.{module_name}")
        program = example.build(example.Config())
        state = program.init(jax.random.key(0))
        batch = jax.tree.map(lambda x: np.asarray(x)[None], next(iter(program.batches(0))))

        @jax.jit
        def one_step(state, batch):  # As examples/_image_gan.py's run (and cyclegan's) drive it.
            state, metrics, _ = loop.run_steps(program.train_step, state, batch, 1, on_nonfinite="stop",
                                               start=state.step)
            return state, metrics

        return one_step, state, batch

    return setup


def _mog_step(k: int, chunk: int) -> Callable[[], tuple[Callable, Any, Any]]:
    def setup():
        from examples import mog

        experiment = mog.make_experiment(mog.Config(), k)
        state = experiment.init(jax.random.key(0))

        def step(state, data_key):
            state, metrics, _ = experiment.train_chunk(state, data_key, chunk)
            return state, metrics

        return step, state, jax.random.key(1)

    return setup


def setups(mog_chunk: int) -> dict[str, tuple[Callable, int]]:
    """Program name -> (setup, generator updates per timed call)."""
    return {
        "mog_k0": (_mog_step(0, mog_chunk), mog_chunk),
        "mog_k5": (_mog_step(5, mog_chunk), mog_chunk),
        "dcgan": (_image_step("dcgan"), 1),
        "wgan_gp": (_image_step("wgan_gp"), 1),
        "conditional": (_image_step("conditional_gan"), 1),
        "cyclegan": (_image_step("cyclegan"), 1),
    }


def time_program(setup: Callable, updates: int, repeats: int, warmup: int) -> dict[str, float]:
    """Compile time and step times of one program (its state carried from call to call)."""
    step, state, batch = setup()
    start = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, batch))
    first = time.perf_counter() - start
    for _ in range(warmup):
        state, _ = jax.block_until_ready(step(state, batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(step(state, batch))
        times.append((time.perf_counter() - start) / updates)
    median = float(np.median(times))
    return dict(first_call_s=first, step_ms=1e3 * median, step_q1_ms=1e3 * float(np.percentile(times, 25)),
                step_q3_ms=1e3 * float(np.percentile(times, 75)), steps_per_s=1.0 / median)


def header() -> str:
    from benchmarks.unroll_k import header as unroll_header

    return unroll_header()


def markdown_table(rows: list[dict]) -> str:
    lines = ["| program | run | steps/s | step (ms), median [IQR] | first call (s) |",
             "| --- | --- | ---: | --- | ---: |"]
    for row in rows:
        lines.append(f"| {row['program']} | {row['label']} | {row['steps_per_s']:.2f}"
                     f" | {row['step_ms']:.1f} [{row['step_q1_ms']:.1f}, {row['step_q3_ms']:.1f}]"
                     f" | {row['first_call_s']:.1f} |")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The benchmark's command line."""

    programs: tuple[str, ...] = option(PROGRAMS, "the examples' steps to time", choices=PROGRAMS)
    repeats: int = option(10, "timed calls per program")
    warmup: int = option(2, "untimed calls after the first (compiling) one")
    mog_chunk: int = option(20, "MoG steps per compiled call (the example's chunk)")
    label: str = option("jgan", "the run's name in the table (e.g. a commit)")
    out: str = option("runs/train_speed", "the output directory")

    def validate(self) -> None:
        if self.repeats < 1 or self.warmup < 0 or self.mog_chunk < 1:
            raise ValueError("--repeats and --mog-chunk must be >= 1 and --warmup >= 0.")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """The command line (``python -m benchmarks.train_speed --help`` lists the flags); returns the rows."""
    return harness.main(Settings, _benchmark, argv=argv, doc=__doc__, prog="python -m benchmarks.train_speed",
                        out=None, resume=False, quiet=False)


def _benchmark(args: Settings, _, stop) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = header()
    print(head, flush=True)
    table = setups(args.mog_chunk)
    rows = []
    for name in args.programs:
        setup, updates = table[name]
        stats = time_program(setup, updates, args.repeats, args.warmup)
        row = dict(program=name, label=args.label, device=str(jax.devices()[0].device_kind), **stats)
        print(f"{name}: {row['steps_per_s']:.2f} steps/s ({row['step_ms']:.1f} ms)", flush=True)
        rows.append(row)
        if stop.requested:
            break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report = f"{head}\n\n{markdown_table(rows)}\n\nload average at end: {load}\n"
    print("\n" + report)
    harness.write_text(out / f"train_speed_{args.label}.md", report)
    harness.write_json(out / f"train_speed_{args.label}.json", rows, indent=1)
    return rows


if __name__ == "__main__":
    main()
