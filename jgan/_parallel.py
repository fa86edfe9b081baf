"""Data-parallel and metric helpers shared by the train steps and the unrolled updates.

The bottom layer: every training module may import it, it imports only jax.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

__all__ = [
    "mark_varying",
    "pmean_floats",
    "draw_local",
    "rows_like",
    "gather_rows",
    "local_rows",
    "all_finite",
    "finalize_metrics",
]

PyTree = Any


def mark_varying(tree: PyTree, axis_name: str | None) -> PyTree:
    """Marks replicated values as device-varying before they are differentiated.

    Under ``shard_map`` (with its default ``check_vma=True``) the gradient
    with respect to a replicated (device-invariant) input comes back already
    summed over the devices, and ``pmean`` of that invariant sum returns the
    sum: N times the mean gradient. Differentiating with respect to
    device-varying copies gives each device its own gradient, which the
    caller then ``pmean``s. Under ``pmap`` (whose values carry no such
    typing) and with ``axis_name=None`` this changes nothing.

    Args:
      tree: parameters (any pytree of arrays).
      axis_name: the mapped axis, or ``None``.

    Returns:
      ``tree`` with every leaf varying along ``axis_name``.
    """
    if axis_name is None:
        return tree

    def cast(x):
        if axis_name in getattr(jax.typeof(x), "vma", frozenset()):
            return x
        return lax.pcast(x, axis_name, to="varying")

    return jax.tree.map(cast, tree)


def pmean_floats(tree: PyTree, axis_name: str | None) -> PyTree:
    """``lax.pmean`` of every floating leaf over ``axis_name`` (integers are left alone)."""
    if axis_name is None:
        return tree
    return jax.tree.map(
        lambda x: lax.pmean(x, axis_name) if jnp.issubdtype(x.dtype, jnp.inexact) else x,
        tree,
    )


def draw_local(
    key: jax.Array, sampler: Callable[[jax.Array, int], jax.Array], n: int, axis_name: str | None
) -> jax.Array:
    """``sampler(key, n)``; under a mapped axis, this device's ``n`` rows of the global draw.

    Every device draws the same global batch of ``n · devices`` rows and keeps
    its own slice, so a data-parallel step equals the single-device step on
    the whole batch.
    """
    if axis_name is None:
        return sampler(key, n)
    devices = lax.axis_size(axis_name)
    full = sampler(key, n * devices)
    return lax.dynamic_slice_in_dim(full, lax.axis_index(axis_name) * n, n)


def _typed_sharding(x: jax.Array) -> NamedSharding | None:
    """``x``'s sharding when it is part of its type (an ``Explicit`` mesh axis), else ``None``.

    Under ``jax.jit`` on a mesh with ``Explicit`` axes (``jax.make_mesh``'s
    default) an array's sharding is part of its type, and operations refuse
    operands sharded differently (``jnp.concatenate`` of replicated latents
    with sharded labels) or ``lax.scan`` over a sharded axis. Elsewhere
    (one device, an ``Auto`` mesh, inside ``shard_map`` / ``pmap``) the type
    carries no sharding and XLA places the values.
    """
    sharding = jax.typeof(x).sharding
    if isinstance(sharding, NamedSharding) and any(axis is not None for axis in sharding.spec):
        return sharding
    return None


def rows_like(x: jax.Array, like: jax.Array) -> jax.Array:
    """``x`` with its leading (batch) axis sharded as ``like``'s, on an ``Explicit`` mesh; else ``x``.

    The step's own draws (latents) are replicated by type; this gives them the
    real batch's sharding, so that a network may combine the two (see
    :func:`_typed_sharding`).
    """
    sharding = _typed_sharding(like)
    if sharding is None:
        return x
    return jax.sharding.reshard(x, NamedSharding(sharding.mesh, PartitionSpec(sharding.spec[0])))


def gather_rows(x: jax.Array, axis_name: str | None) -> jax.Array:
    """The global batch of ``x`` ``[batch, ...]`` on every device, rows in device order.

    For a computation that is not a mean over rows (an image pool's queue, a
    transport plan between two batches): under a mapped axis each device
    holds its own rows, here gathered as a ``psum`` of zero-padded slices
    (exact, and device-invariant: ``all_gather``'s result ``shard_map`` types
    as device-varying, which a replicated carry or state cannot take). Its
    gradient reaches each device's rows. On an ``Explicit`` mesh ``x`` is
    resharded replicated; elsewhere ``x`` already is the global batch.
    """
    if axis_name is None:
        sharding = _typed_sharding(x)
        if sharding is None:
            return x
        return jax.sharding.reshard(x, NamedSharding(sharding.mesh, PartitionSpec()))
    n = x.shape[0]
    placed = jnp.zeros((n * lax.axis_size(axis_name), *x.shape[1:]), x.dtype)
    return lax.psum(lax.dynamic_update_slice_in_dim(placed, x, lax.axis_index(axis_name) * n, 0), axis_name)


def local_rows(full: jax.Array, like: jax.Array, axis_name: str | None) -> jax.Array:
    """The inverse of :func:`gather_rows`: this device's rows of the global ``full``, laid out as ``like``."""
    if axis_name is None:
        return rows_like(full, like)
    n = like.shape[0]
    return lax.dynamic_slice_in_dim(full, lax.axis_index(axis_name) * n, n)


def all_finite(tree: PyTree) -> jax.Array:
    """``[]`` bool: whether every floating leaf of ``tree`` is finite (True for no leaves)."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def finalize_metrics(
    metrics: dict[str, jax.Array], axis_name: str | None, state: PyTree = None
) -> dict[str, jax.Array]:
    """Averages a step's scalar metrics across devices and adds ``nonfinite``.

    ``nonfinite`` is 1.0 if any metric or any floating leaf of the new
    ``state`` is not finite, so an update that overflows is flagged on the
    step that produced it, before anything saves it.
    """
    metrics = pmean_floats(metrics, axis_name)
    finite = all_finite(metrics) & all_finite(state)
    return {**metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}
