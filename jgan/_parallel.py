"""Data-parallel and metric helpers shared by the train steps and the unrolled updates.

The bottom layer: every training module may import it, it imports only jax.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["mark_varying", "pmean_floats", "draw_local", "all_finite", "finalize_metrics"]

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
