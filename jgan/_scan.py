"""``lax.scan`` written out as straight-line code, for short static loops.

XLA:CPU (jax 0.10.2) runs a strided convolution's kernel derivative 15-35x
slower inside a while loop (a ``lax.scan``, even of length 1, or
``fori_loop``) than in straight-line code: the loop body's convolutions keep a
layout it has no fast kernel for (benchmarks/conv_transpose.py; README,
"What we found on the way"). ``lax.scan(..., unroll=True)`` still emits a
one-trip loop for length 1. Short loops of train-step pieces (the critic's
``d_steps`` updates, a one-step chunk of ``jgan.loop.run_steps``) therefore
run as a Python loop traced into one program.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["unrolled_scan"]


def unrolled_scan(f: Callable[[Any, Any], tuple[Any, Any]], init: Any, xs: Any, length: int) -> tuple[Any, Any]:
    """``lax.scan(f, init, xs, length=length)`` as ``length`` traced calls of ``f``.

    The same result (the final carry and the outputs stacked on a new leading
    axis), without a loop in the compiled program; ``length`` is static.
    """
    carry, outputs = init, []
    for i in range(length):
        carry, y = f(carry, jax.tree.map(lambda x: x[i], xs))
        outputs.append(y)
    return carry, jax.tree.map(lambda *ys: jnp.stack(ys), *outputs)
