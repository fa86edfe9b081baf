"""Train steps per second of the main job's unrolled GAN against devices and processes.

``examples.unrolled_mog``'s K = 5 GAN on its defaults (the ring, batch 256),
trained data-parallel over ``--devices`` devices of each of the processes
(``jgan.parallel.batch_mesh``: the state replicated, each step's batch split
over the devices), through the example's own compiled chunk of ``--chunk``
steps. The first chunk (compilation) is timed apart; then the median of
``--repeats`` chunks. Process 0 prints one row (and writes it as JSON with
``--out``).

On a CPU, forced host devices share the machine's cores, so more devices
only show the cost of partitioning and collectives; on accelerators each
device brings its own compute. Usage::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m benchmarks.scale_out --devices 4
    # two processes on this machine, one device each:
    python -m benchmarks.scale_out --coordinator-address localhost:8476 --num-processes 2 --process-id 0 &
    python -m benchmarks.scale_out --coordinator-address localhost:8476 --num-processes 2 --process-id 1
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Sequence

import jax

from examples import _harness as harness
from examples import mog
from examples._harness import option
from jgan import parallel


@dataclasses.dataclass(frozen=True)
class Settings:
    """The benchmark's command line."""

    chunk: int = option(20, "steps per compiled call (the example's chunk)")
    repeats: int = option(5, "timed chunks (the median is reported)")
    unroll_steps: int = option(5, "K of the unrolled GAN")
    out: str = option("", "write the row as JSON to this file (empty: print only)")

    def validate(self) -> None:
        if self.chunk < 1 or self.repeats < 1 or self.unroll_steps < 0:
            raise ValueError("--chunk and --repeats must be >= 1 and --unroll-steps >= 0.")


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line (``python -m benchmarks.scale_out --help`` lists the flags); returns the row."""
    return harness.main(Settings, _benchmark, argv=argv, doc=__doc__, prog="python -m benchmarks.scale_out",
                        out=None, resume=False, quiet=False, processes=True)


def _benchmark(settings: Settings, args, stop) -> dict:
    mesh = harness.data_mesh(args)
    experiment = mog.make_experiment(mog.Config(), settings.unroll_steps, mesh=mesh)
    keys = mog.keys(0)
    state = experiment.init(keys.init)

    def chunk(state):
        tic = time.perf_counter()
        state, _, _ = experiment.train_chunk(state, keys.data, settings.chunk)
        jax.block_until_ready(state)
        return state, time.perf_counter() - tic

    state, first = chunk(state)
    times = []
    for _ in range(settings.repeats):
        state, seconds = chunk(state)
        times.append(seconds)
    step = statistics.median(times) / settings.chunk
    row = {
        "processes": jax.process_count(),
        "devices": 1 if mesh is None else mesh.size,
        "platform": jax.devices()[0].platform,
        "unroll_steps": settings.unroll_steps,
        "batch_size": mog.Config().batch_size,
        "steps_per_s": 1 / step,
        "step_ms": 1e3 * step,
        "first_chunk_s": first,
        "load_average": os.getloadavg()[0],
    }
    if parallel.is_main_process():
        print(json.dumps(row))
        if settings.out:
            harness.write_json(settings.out, row)
    return row


if __name__ == "__main__":
    main()
