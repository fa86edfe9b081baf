"""Data parallelism from one device to several hosts: a mesh, global batches, one writer.

The train steps need no change to run data-parallel: ``jax.jit`` of the step
with the state replicated and the batch sharded over a mesh axis partitions
it, and XLA inserts the gradient reductions (README, "Scaling out"). This
module holds the few pieces around the step that a multi-device or
multi-process program needs:

- :func:`initialize`: join a multi-process run (``jax.distributed``), with
  the arguments of ``jax.distributed.initialize``; nothing without them;
- :func:`batch_mesh`: a one-axis mesh over every device of every process;
- :func:`replicate`: a host pytree (the same on every process), typed PRNG
  keys included, as arrays replicated over the mesh;
- :func:`process_rows` and :func:`global_batch`: the rows of a global batch
  this process reads, and the global array assembled from each process's
  rows (``jax.make_array_from_process_local_data``);
- :func:`to_host`: any global array as numpy on every process;
- :func:`is_main_process`: whether this process writes the outputs.

Example (run the same program once per process)::

    parallel.initialize(args.coordinator_address, args.num_processes, args.process_id)
    mesh = parallel.batch_mesh()
    state = parallel.replicate(gan.init(key, g_params, d_params), mesh)
    step = jax.jit(gan.step, out_shardings=parallel.replicated(mesh))
    rows = parallel.process_rows(batch_size, mesh)
    for images in batches:                      # the global batch, as numpy
        state, metrics = step(state, parallel.global_batch(images[rows], mesh))
    if parallel.is_main_process():
        write(parallel.to_host(metrics))
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jgan import _validate

__all__ = [
    "initialize",
    "batch_mesh",
    "replicated",
    "batch_sharding",
    "replicate",
    "process_rows",
    "global_batch",
    "to_host",
    "is_main_process",
]

PyTree = Any
AXIS = "batch"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
) -> None:
    """Joins a run of ``num_processes`` processes; does nothing when all three are ``None``.

    Call it first, before anything else uses JAX, in every process with the
    same ``coordinator_address`` (``host:port`` of process 0) and
    ``num_processes``, and each its own ``process_id``. On CPUs the
    processes' collectives go through gloo (JAX's default); the device count
    of each process is the platform's (``jax_num_cpu_devices`` on CPU).

    Args:
      coordinator_address: ``"host:port"`` where process 0 listens.
      num_processes: the number of processes, ``>= 1``.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      initialization_timeout: seconds to wait for every process to join.

    Raises:
      ValueError: only some of the three are given; ``process_id`` is out
        of range; the processes were given different ``num_processes``
        (raised in every process). When process 0 is given more processes
        than join, nothing is raised: jax.distributed aborts every process
        (``DEADLINE_EXCEEDED``) after ``initialization_timeout``.
      TypeError: a count or index is not an int.
      RuntimeError: JAX was initialised already with other settings.
    """
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}
    if all(v is None for v in given.values()):
        return
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(
            f"a multi-process run needs coordinator_address, num_processes and process_id; "
            f"got {', '.join(f'{k}={v!r}' for k, v in given.items())} (missing {', '.join(missing)})."
        )
    if not isinstance(coordinator_address, str) or ":" not in coordinator_address:
        raise ValueError(f"coordinator_address must be 'host:port', got {coordinator_address!r}.")
    num_processes = _validate.check_int(num_processes, "num_processes", minimum=1)
    process_id = _validate.check_int(process_id, "process_id", minimum=0)
    if process_id >= num_processes:
        raise ValueError(f"process_id must be below num_processes = {num_processes}, got {process_id}.")
    if jax.distributed.is_initialized():
        if (jax.process_count(), jax.process_index()) != (num_processes, process_id):
            raise RuntimeError(
                f"jax.distributed is already initialised as process {jax.process_index()} of "
                f"{jax.process_count()}, not {process_id} of {num_processes}."
            )
        return
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id, initialization_timeout=initialization_timeout
    )
    # The coordinator counts process 0's num_processes; a process given more
    # joins all the same. Compare the counts so that every process stops here
    # (else the others would time out in their first collective).
    counts = np.asarray(multihost_utils.process_allgather(np.int32(num_processes))).tolist()
    if any(count != num_processes for count in counts):
        raise ValueError(
            "the processes disagree on num_processes: "
            + ", ".join(f"process {i} says {count}" for i, count in enumerate(counts))
            + f" (the coordinator at {coordinator_address} runs {jax.process_count()}): "
            "give every process the same num_processes."
        )
    if jax.process_count() != num_processes:
        raise ValueError(
            f"num_processes = {num_processes}, but the coordinator at {coordinator_address} runs "
            f"{jax.process_count()} processes: give every process the same num_processes."
        )


def batch_mesh(devices: Sequence[jax.Device] | None = None, *, axis: str = AXIS) -> Mesh:
    """A one-axis mesh named ``axis`` over ``devices`` (default: every device of every process).

    Its axis is ``Auto``: XLA propagates the batch's sharding through the
    step and inserts the reductions, and ``with_sharding_constraint`` may
    place intermediate arrays (``jax.make_mesh``'s default ``Explicit``
    axes would instead type every array's sharding and refuse that).
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("batch_mesh needs at least one device, got none.")
    return jax.make_mesh((len(devices),), (axis,), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


def _check_axis(mesh: Mesh, axis: str) -> int:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}.")
    if axis not in mesh.axis_names:
        raise ValueError(f"the mesh has no axis {axis!r}: its axes are {tuple(mesh.axis_names)}.")
    return mesh.shape[axis]


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of a value held whole by every device of ``mesh``."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, *, axis: str = AXIS) -> NamedSharding:
    """The sharding of a batch split along its first axis over the mesh axis ``axis``."""
    _check_axis(mesh, axis)
    return NamedSharding(mesh, P(axis))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """``tree`` (the same value on every process) replicated over every device of ``mesh``.

    ``jax.device_put`` cannot place onto another process's devices; this
    builds the arrays inside a ``jit`` whose output is replicated, the inputs
    as host numpy (typed PRNG keys through their raw data). Every process
    must call it with equal values (e.g. a state initialised from the same
    seed).
    """
    leaves, treedef = jax.tree.flatten(tree)
    is_key = [jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key) for x in leaves]
    impls = [jax.random.key_impl(x) if k else None for x, k in zip(leaves, is_key)]
    host = [np.asarray(jax.random.key_data(x) if k else x) for x, k in zip(leaves, is_key)]

    def build(host):
        return [jax.random.wrap_key_data(h, impl=i) if k else h for h, k, i in zip(host, is_key, impls)]

    out = jax.jit(build, out_shardings=replicated(mesh))(host)
    return jax.tree.unflatten(treedef, out)


def process_rows(global_size: int, mesh: Mesh, *, axis: str = AXIS) -> slice:
    """The rows of a global batch of ``global_size`` that this process's devices hold.

    With the batch sharded along ``axis``, process ``p`` reads only these
    rows of every global batch and gives them to :func:`global_batch`.

    Raises:
      ValueError: ``global_size`` does not divide over the ``axis`` devices;
        the mesh has no axis ``axis``.
    """
    devices = _check_axis(mesh, axis)
    global_size = _validate.check_int(global_size, "global_size", minimum=1)
    if global_size % devices:
        raise ValueError(
            f"a global batch of {global_size} rows cannot be split over the {devices} devices of "
            f"mesh axis {axis!r}: choose a batch size divisible by {devices}."
        )
    indices = batch_sharding(mesh, axis=axis).addressable_devices_indices_map((global_size,))
    starts = sorted({index[0].start or 0 for index in indices.values()})
    size = global_size // devices
    first, last = starts[0], starts[-1] + size
    if last - first != size * len(starts):  # Not the case for a mesh from batch_mesh.
        raise ValueError(f"this process's devices hold rows that are not contiguous: {sorted(starts)}.")
    return slice(first, last)


def global_batch(local: PyTree, mesh: Mesh, *, axis: str = AXIS) -> PyTree:
    """The global batch whose rows :func:`process_rows` are ``local`` on this process.

    Every leaf ``[b_local, ...]`` becomes a ``[b_local * processes, ...]``
    array sharded along its first axis over ``axis``: process ``p`` gives
    rows ``[p b_local, (p + 1) b_local)``, the block that ``jgan.data``'s
    pipelines yield to process ``p`` (``array_batches``, ``tfds_images``).
    With one process this is ``jax.device_put`` onto the mesh.

    Raises:
      ValueError: the global batch does not divide over the ``axis``
        devices; a leaf is a scalar; this process's devices hold another
        block of rows (a mesh not ordered process by process).
    """
    devices = _check_axis(mesh, axis)
    processes = len({d.process_index for d in mesh.devices.flat})
    sharding = batch_sharding(mesh, axis=axis)

    def make(leaf):
        leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        if not leaf.shape:
            raise ValueError("global_batch needs arrays with a batch axis, got a scalar.")
        size = leaf.shape[0] * processes
        if size % devices:
            raise ValueError(
                f"a global batch of {size} rows ({leaf.shape[0]} on each of {processes} "
                f"processes) cannot be split over the {devices} devices of mesh axis {axis!r}."
            )
        block = slice(jax.process_index() * leaf.shape[0], (jax.process_index() + 1) * leaf.shape[0])
        if processes > 1 and process_rows(size, mesh, axis=axis) != block:
            raise ValueError(
                f"this process's devices hold rows {process_rows(size, mesh, axis=axis)} of the global "
                f"batch, not its block {block}: order the mesh's devices process by process (batch_mesh)."
            )
        return jax.make_array_from_process_local_data(sharding, leaf, (size, *leaf.shape[1:]))

    return jax.tree.map(make, local)


def to_host(tree: PyTree) -> PyTree:
    """Every leaf as a numpy array on every process, whatever its sharding.

    A replicated array is read from a local device; a sharded one spanning
    several processes is gathered (every process must then call this).
    """

    def get(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes figures, logs and metrics."""
    return jax.process_index() == 0
