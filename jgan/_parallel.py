"""Data-parallel helpers shared by the train steps and the unrolled updates."""

from typing import Any

import jax
from jax import lax

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

