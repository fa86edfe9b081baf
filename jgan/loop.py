"""A step driver: ``num_steps`` train steps as one compiled ``lax.scan``.

:func:`run_steps` runs a pure step ``(state, batch) -> (state, metrics)``
(e.g. ``jgan.steps.make_gan(...).step``) over a data function of the step
index and stacks the per-step metrics. It is itself pure: compile it with
``jax.jit`` (the step, the data function and ``num_steps`` static), map it
over seeds with ``jax.vmap``, and call it chunk after chunk from the host
between evaluations and checkpoints. A non-finite update is reported, skipped
or stops the run (``on_nonfinite``); :func:`check_run` raises on the host
after a run that met one.

Example::

    @jax.jit
    def train(state, key):  # 1000 steps of one seed; jax.vmap(train) for many.
        batch = lambda i: data.ring(jax.random.fold_in(key, i), 256)
        return loop.run_steps(gan.step, state, batch, 1000, on_nonfinite="stop", start=state.step)

    state, metrics, info = train(state, key)
    loop.check_run(info)  # NonFiniteError naming the step, if any.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jgan._scan import unrolled_scan
from jgan._validate import check_callable, check_int
from jgan.steps import NonFiniteError, skip_nonfinite

__all__ = ["RunInfo", "run_steps", "check_run", "ON_NONFINITE"]

PyTree = Any
Batch = Any
Metrics = dict[str, jax.Array]
Step = Callable[[PyTree, Batch], tuple[PyTree, Metrics]]

#: What :func:`run_steps` does with a step whose update is not finite.
ON_NONFINITE = ("continue", "skip", "stop")


class RunInfo(NamedTuple):
    """What happened in a :func:`run_steps` run; a pytree of arrays.

    Under ``jax.vmap`` each field gains the mapped axis (one value per seed).

    Attributes:
      updates: ``[]`` int32, the updates applied to the state: all
        ``num_steps`` with ``"continue"`` (the non-finite ones included), the
        finite ones with ``"skip"``, those before the stopping step with
        ``"stop"``.
      nonfinite: ``[]`` int32, the steps whose update was not finite
        (``metrics["nonfinite"]`` was 1): with ``"skip"`` the skipped ones,
        with ``"stop"`` 0 or 1 (the step it stopped at).
      first_nonfinite: ``[]`` int32, the index (``start + i``, as seen by
        ``data``) of the first such step, -1 if none; with ``"stop"``, the step
        the run stopped at.
    """

    updates: jax.Array
    nonfinite: jax.Array
    first_nonfinite: jax.Array


def run_steps(
    step: Step,
    state: PyTree,
    data: Callable[[jax.Array], Batch] | Batch,
    num_steps: int,
    *,
    on_nonfinite: Literal["continue", "skip", "stop"] = "continue",
    start: jax.typing.ArrayLike = 0,
) -> tuple[PyTree, Metrics, RunInfo]:
    """Runs ``num_steps`` train steps as one ``lax.scan``.

    Step ``i`` (``0 <= i < num_steps``) trains on ``data(start + i)``, or on
    ``data[i]`` for stacked batches. Pure, so it composes with the transforms:

    - ``jax.jit(run_steps, static_argnums=(0, 2, 3), static_argnames="on_nonfinite")``
      (``data`` a callable), or build the data function inside a jitted
      function that takes the key (as in the module's example); a second call
      with arrays of the same shapes does not recompile.
    - ``jax.vmap`` over a batch of states (seeds), and over their data keys:
      each seed skips or stops on its own.

    ``num_steps=1`` runs the step as straight-line code, without a loop. On
    a CPU, drive a convolutional GAN that way: inside a loop XLA:CPU runs a
    strided convolution's kernel derivative 15-35x slower (jax 0.10.2).

    ``on_nonfinite`` chooses what a step whose ``metrics["nonfinite"]`` is 1
    (a loss, a gradient or the new state is not finite) does:

    - ``"continue"``: nothing; it is only reported (in the metrics and the
      :class:`RunInfo`).
    - ``"skip"``: the update is discarded and the state left unchanged
      (:func:`jgan.steps.skip_nonfinite`); the metrics gain ``"skipped"``.
    - ``"stop"``: the update is discarded and every later step leaves the
      state unchanged too, so the final state is the last finite one. The
      later steps still run (a ``jnp.where`` guard, not a ``lax.cond``: under
      ``vmap`` a cond runs both branches anyway, and the step is traced once),
      and their metrics are zeros; the stopping step's own metrics are kept.

    Args:
      step: ``(state, batch) -> (state, metrics)``, with ``metrics`` a dict
        of arrays that includes the scalar ``"nonfinite"`` (every jgan step
        reports it).
      state: the initial state (any pytree).
      data: the batches: a function ``data(i) -> batch`` of the ``[]`` int32
        step index ``i`` (close over the data key, e.g.
        ``lambda i: ring(jax.random.fold_in(key, i), 256)``), or a pytree of
        arrays holding the ``num_steps`` batches stacked, each leaf
        ``[num_steps, ...]``.
      num_steps: the number of steps, an int >= 1 (static: it fixes the
        program).
      on_nonfinite: ``"continue"``, ``"skip"`` or ``"stop"`` (see above).
      start: ``[]`` int, the index of the first step, which ``data`` receives
        and :class:`RunInfo` reports (e.g. ``state.step``, so that chunks of
        a long run draw the batches of one uninterrupted run). May be traced.

    Returns:
      ``(state, metrics, info)``: the final state; the metrics of every step,
      each stacked to ``[num_steps, ...]`` (``metrics[name][i]`` is step
      ``i``'s); and a :class:`RunInfo`.

    Raises:
      TypeError: if ``step`` is not callable, ``num_steps`` not an int,
        ``start`` not an integer scalar or ``data`` neither a callable nor
        arrays.
      ValueError: if ``num_steps`` < 1, ``on_nonfinite`` is not one of
        :data:`ON_NONFINITE`, the stacked batches' leading axis is not
        ``num_steps``, or the step does not report a scalar ``"nonfinite"``.
    """
    check_callable(step, "step", "(state, batch) -> (state, metrics)")
    num_steps = check_int(num_steps, "num_steps", minimum=1, static=True)
    if not isinstance(on_nonfinite, str) or on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}, got {on_nonfinite!r}.")
    start = _check_start(start)
    stacked = None if callable(data) else _check_stacked(data, num_steps)
    guarded = step if on_nonfinite == "continue" else skip_nonfinite(step)

    def body(carry, xs):
        state, stopped = carry
        i, batch = xs
        if stacked is None:
            batch = data(start + i)
        new_state, metrics = guarded(state, batch)
        bad = _nonfinite(metrics) > 0
        if on_nonfinite == "stop":
            metrics = {k: v for k, v in metrics.items() if k != "skipped"}
            new_state = jax.tree.map(lambda old, new: jnp.where(stopped, old, new), state, new_state)
            metrics = jax.tree.map(lambda m: jnp.where(stopped, jnp.zeros_like(m), m), metrics)
            stopped = stopped | bad
        return (new_state, stopped), metrics

    xs = (jnp.arange(num_steps, dtype=jnp.int32), stacked)
    # A one-step chunk runs as straight-line code (see jgan._scan): the fast way
    # to drive a convolutional GAN on a CPU.
    scan = (lambda f, init, xs: unrolled_scan(f, init, xs, 1)) if num_steps == 1 else lax.scan
    (state, _), metrics = scan(body, (state, jnp.array(False)), xs)

    bad = metrics["nonfinite"] > 0
    count = jnp.sum(bad, dtype=jnp.int32)
    first = jnp.argmax(bad).astype(jnp.int32)  # 0 when none: guarded below.
    any_bad = jnp.any(bad)
    updates = {
        "continue": jnp.asarray(num_steps, jnp.int32),
        "skip": num_steps - count,
        "stop": jnp.where(any_bad, first, num_steps),
    }[on_nonfinite]
    info = RunInfo(
        updates=updates,
        nonfinite=count,
        first_nonfinite=jnp.where(any_bad, start + first, -1),
    )
    return state, metrics, info


def check_run(info: RunInfo, *, max_nonfinite: int = 0) -> None:
    """Raises :class:`jgan.steps.NonFiniteError` if a run met non-finite steps.

    Call it on the host after :func:`run_steps` (it syncs with the device).
    Works on the :class:`RunInfo` of one run or of many (``jax.vmap``), whose
    message then names the seeds.

    Args:
      info: the :class:`RunInfo` of a run, its fields ``[]`` or ``[seeds]``.
      max_nonfinite: the number of non-finite steps tolerated per run (e.g.
        skipped ones with ``on_nonfinite="skip"``), an int >= 0.

    Raises:
      NonFiniteError: naming the first non-finite step (and the seeds).
    """
    if not isinstance(info, RunInfo):
        raise TypeError(f"info must be a RunInfo (from run_steps), got {type(info).__name__}.")
    max_nonfinite = check_int(max_nonfinite, "max_nonfinite", minimum=0)
    count = np.asarray(info.nonfinite)
    first = np.asarray(info.first_nonfinite)
    failed = count > max_nonfinite
    if not np.any(failed):
        return
    hint = " Lower the learning rates, add a gradient penalty, or check the data."
    if count.ndim == 0:
        raise NonFiniteError(
            f"Non-finite training: {int(count)} non-finite step(s), the first at step"
            f" {int(first)} (tolerated: {max_nonfinite}).{hint}"
        )
    seeds = [tuple(int(j) for j in s) if len(s) > 1 else int(s[0]) for s in np.argwhere(failed)]
    details = ", ".join(f"seed {s}: {int(count[s])} from step {int(first[s])}" for s in seeds)
    raise NonFiniteError(
        f"Non-finite training in {len(seeds)} of {failed.size} runs ({details};"
        f" tolerated: {max_nonfinite} each).{hint}"
    )


def _check_start(start: Any) -> jax.Array:
    if isinstance(start, bool) or not (
        isinstance(start, (int, np.integer)) or jnp.issubdtype(jnp.result_type(start), jnp.integer)
    ):
        raise TypeError(f"start must be an integer scalar (the first step's index), got {start!r}.")
    if np.ndim(start) != 0:
        raise ValueError(f"start must be a scalar, got shape {np.shape(start)}.")
    return jnp.asarray(start, jnp.int32)


def _check_stacked(data: Batch, num_steps: int) -> Batch:
    leaves = jax.tree.leaves(data)
    if not leaves or not all(isinstance(x, (jax.Array, np.ndarray)) for x in leaves):
        raise TypeError(
            "data must be a callable data(i) -> batch of the step index, or a pytree"
            f" of arrays of num_steps stacked batches, got {type(data).__name__}."
        )
    shapes = [x.shape for x in leaves]
    if any(len(s) == 0 or s[0] != num_steps for s in shapes):
        raise ValueError(
            f"data's stacked batches need a leading axis of num_steps = {num_steps},"
            f" got leaves of shapes {shapes}."
        )
    return data


def _nonfinite(metrics: Metrics) -> jax.Array:
    if not isinstance(metrics, dict) or "nonfinite" not in metrics:
        shown = sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__
        raise ValueError(
            "run_steps needs a step whose metrics (a dict) report the scalar"
            f" metrics['nonfinite'] (1 when the update is not finite); got {shown}."
        )
    nonfinite = metrics["nonfinite"]
    if np.ndim(nonfinite) != 0:
        raise ValueError(f"metrics['nonfinite'] must be a scalar, got shape {np.shape(nonfinite)}.")
    return nonfinite
