"""The table benchmarks' cells: how their seeds run, where a result lives, how it is read back and printed.

``benchmarks.mog_table`` and ``benchmarks.stacked_table`` train the seeds of
one cell as one program, ``jax.vmap`` over a seed axis sharded over the
local devices (:func:`shard_seeds`); they save each (dataset or protocol,
row) cell under ``--out/results/`` as soon as it is done and rebuild their
tables from every cell present.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec


@dataclasses.dataclass(frozen=True)
class SeedShards:
    """How the seeds ``0, ..., seeds - 1`` of one cell are laid over devices (made by :func:`shard_seeds`).

    Every device of ``sharding`` trains ``per_device`` consecutive seeds; the
    seed axis holds ``padded`` seeds, the last ``padded - seeds`` of them
    (fewer than ``per_device``) computed only to fill the last device, and
    dropped.

    Attributes:
      seeds: the seeds asked for.
      per_device: seeds per device, ``ceil(seeds / available devices)``.
      sharding: the seed axis (axis 0) split over a one-axis mesh ``("seeds",)``.
    """

    seeds: int
    per_device: int
    sharding: NamedSharding

    @property
    def devices(self) -> int:
        """How many devices train."""
        return self.sharding.mesh.size

    @property
    def padded(self) -> int:
        """The length of the seed axis, ``per_device * devices`` (``>= seeds``)."""
        return self.per_device * self.devices

    def indices(self) -> jax.Array:
        """``[padded]`` int32: the seeds computed, ``0, 1, ..., padded - 1``, sharded."""
        return jax.device_put(jnp.arange(self.padded), self.sharding)

    def map(self, fn: Callable, *, static_argnums: int | Sequence[int] = ()) -> Callable:
        """``fn`` of one seed mapped over the seed axis, compiled to run sharded, each device on its own seeds.

        A ``jax.jit`` whose mapped arguments (all but ``static_argnums``)
        carry the seed axis first and whose outputs are sharded as
        :attr:`sharding`. Each device runs ``jax.vmap(fn)`` over its
        ``per_device`` seeds (``jax.shard_map``), so no data crosses devices:
        left to the partitioner, the sharded ``vmap`` of a convolution's
        kernel gradient (the seeds folded into its feature groups) all-gathered
        the activations of every seed (measured on stacked_table's networks).
        """
        static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
        seeds = PartitionSpec("seeds")

        def mapped(*args):
            def one_seed(*dynamic):
                rest = iter(dynamic)
                return fn(*(args[i] if i in static else next(rest) for i in range(len(args))))

            dynamic = tuple(a for i, a in enumerate(args) if i not in static)
            # check_vma=False: the body has no collective to check, and with the check jgan.loop.run_steps'
            # scan fails (a carry that starts replicated comes back varying over "seeds").
            return jax.shard_map(jax.vmap(one_seed), mesh=self.sharding.mesh, in_specs=seeds, out_specs=seeds,
                                 check_vma=False)(*dynamic)

        return jax.jit(mapped, static_argnums=static, out_shardings=self.sharding)

    def keep(self, tree):
        """The first ``seeds`` rows of every leaf of ``tree``, as numpy arrays (drops the padding)."""
        return jax.tree.map(lambda x: np.asarray(x)[: self.seeds], tree)


def shard_seeds(seeds: int, devices: Sequence[jax.Device] | None = None) -> SeedShards:
    """Lays ``seeds`` seeds over ``devices`` (default: ``jax.local_devices()``) in the fewest rounds.

    Each device trains ``per_device = ceil(seeds / len(devices))`` seeds, the
    fewest that cover every seed, so the wall time is that of the largest
    possible split; of the devices, only ``ceil(seeds / per_device)`` are
    used, and the seed axis is padded with the next seeds to fill the last
    one: 10 seeds on 8 devices run as 2 on each of 5 devices (no padding), 8
    on 3 as 3 on each of 3 (seed 8 computed and dropped), 3 on 8 as 1 on each
    of 3. Padding to a multiple of all the devices has the same wall time but
    computes up to ``len(devices) - 1`` dropped seeds (10 on 8: 16 seeds);
    the largest divisor of ``seeds`` that is at most the device count never
    pads but can be slow (7 seeds on 4 devices: all 7 on one).

    A seed's keys come from its own index and no data crosses devices, so a
    seed's result does not depend on the layout, up to float32 roundoff:
    XLA:CPU compiles the per-device program a little differently for another
    layout (measured: 6e-11 apart on mog_table's samples, tested).

    The mesh's axis is ``AxisType.Auto``: under ``jax.make_mesh``'s default
    (``Explicit`` in jax 0.10) indexing one seed out of a sharded array,
    ``x[s]``, raises a ``ShardingTypeError``.

    Raises:
      ValueError: if ``seeds < 1`` or there are no devices.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if seeds < 1 or not devices:
        raise ValueError(f"shard_seeds needs seeds >= 1 and a device, got {seeds} seeds on {len(devices)} devices.")
    per_device = -(-seeds // len(devices))
    used = devices[: -(-seeds // per_device)]
    mesh = jax.make_mesh((len(used),), ("seeds",), (AxisType.Auto,), devices=used)
    return SeedShards(seeds=seeds, per_device=per_device, sharding=NamedSharding(mesh, PartitionSpec("seeds")))


def result_path(out: str, group: str, row: str, suffix: str = ".json") -> str:
    """The file of one cell: ``out/results/<group>__<row><suffix>``."""
    return os.path.join(out, "results", f"{group}__{row}{suffix}")


def load_result(path: str) -> dict | None:
    """A saved cell, or ``None`` when there is none."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def mean_se(values) -> str:
    """``"mean ± standard error"`` over seeds (``nan`` for the error of one seed)."""
    values = np.asarray(values, float)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{values.mean():.2f} ± {se:.2f}"


def device_label(result: dict) -> str:
    """The table's device column: the device kind, and ``× n`` when the seeds were split over ``n`` devices."""
    kind, n = result.get("device", "?"), result.get("devices", 1)  # Cells measured before sharding have no count.
    return f"{kind} × {n}" if n > 1 else kind


def reusable(old: dict | None, fields: dict, seeds: int) -> bool:
    """Whether a saved cell ``old`` was computed with these training ``fields`` and ``seeds`` seeds."""
    if old is None or old.get("seeds") != seeds:
        return False
    return {k: old["config"].get(k) for k in fields} == fields
