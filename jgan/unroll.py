"""Unrolled optimisation of the discriminator (Metz et al. 2016).

The generator of an unrolled GAN minimises the surrogate

    f_K(θ_G, θ_D) = f(θ_G, θ_D^K(θ_G, θ_D)),

where θ_D^K is the discriminator after K of its own optimizer updates on its
loss, which depends on θ_G through the generated samples. The gradient of f_K
with respect to θ_G flows back through all K updates (Metz et al., eq. 12 and
18–20), second-order terms included. Here the K updates run inside
``lax.scan``, so the program and its compile time do not grow with K.

Performance (benchmarks/unroll_k.py; the numbers are in benchmarks/README.md):
on the mixture-of-Gaussians train step of Metz et al. the scan step runs as
fast as the fully unrolled program (a Python loop of the K updates traced into
one program) at K = 10 and 20, and compiles in about the same time for every
K > 1, whereas the unrolled program's compile time grows linearly with K. A
``lax.scan`` unroll factor > 1 made the step slower at K = 10 and 20 and the
compile slower, so there is no such option. ``remat=True`` trades
recomputation for memory that no longer grows with the discriminator's
activations.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax
from jax import lax

from jgan._parallel import mark_varying

__all__ = ["unroll_discriminator"]

PyTree = Any
RematPolicy = Callable[..., bool]


def check_unroll_steps(steps: Any, *, name: str = "steps") -> int:
    """Returns ``steps`` if it is a Python int >= 0; raises a clear error if not."""
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(
            f"{name} must be a Python int (it is static: one program per value),"
            f" got {type(steps).__name__} {steps!r}."
        )
    if steps < 0:
        raise ValueError(f"{name} must be >= 0, got {steps}.")
    return steps


def unroll_discriminator(
    d_params: PyTree,
    d_opt_state: optax.OptState,
    *,
    loss_fn: Callable[[PyTree], jax.Array],
    optimizer: optax.GradientTransformation,
    steps: int,
    first_order: bool = False,
    axis_name: str | None = None,
    remat: bool | RematPolicy = False,
) -> tuple[PyTree, optax.OptState]:
    """Takes ``steps`` differentiable optimizer updates of the discriminator.

    Args:
      d_params: the discriminator's parameters θ_D (a pytree).
      d_opt_state: ``optimizer``'s state for ``d_params`` (Adam's moments are
        carried through the updates like the parameters).
      loss_fn: ``d_params -> scalar``, the discriminator's loss. Whatever it
        closes over (the generator's samples, hence θ_G) receives gradients
        through every update.
      optimizer: any ``optax.GradientTransformation`` whose state keeps its
        structure, shapes and dtypes across an update. Adam: give it
        ``eps_root > 0`` (e.g. ``optax.adam(lr, eps_root=1e-8)``). With the
        default ``eps_root=0`` the derivative of √ν at ν = 0 is infinite, so a
        parameter whose gradient and second moment are exactly 0 (a ReLU unit
        that is dead on the batch) makes the unrolled gradient NaN.
      steps: K, a static Python int >= 0. ``steps=0`` returns the inputs.
      first_order: stop gradients through the updates, so that θ_D^K is used
        as a constant (what "copy D, take K steps, use the final D" gives).
        An ablation: it is not Metz et al.'s objective.
      axis_name: if set, the discriminator's gradients are averaged over this
        mapped axis (``lax.pmean``) in every update, as in the ordinary step.
      remat: recompute each update's intermediate values in the backward pass
        instead of storing them (``jax.checkpoint`` on the scan body). With
        ``False`` (the default, the fastest measured) memory grows
        as K times the discriminator's activations on both batches; ``True``
        stores only each update's parameters and optimizer state, and
        recomputes the discriminator's forward and backward passes; a
        ``jax.checkpoint_policies`` policy chooses what to store. The result
        is the same either way.

    Returns:
      ``(d_params_K, d_opt_state_K)``.

    Raises:
      TypeError: ``steps`` is not an int, ``remat`` is neither a bool nor a
        policy, or the optimizer's state changes
        structure, shape or dtype across an update (it cannot be carried by a
        scan).
      ValueError: ``steps < 0``.

    References:
      Metz, Poole, Pfau, Sohl-Dickstein, "Unrolled Generative Adversarial
      Networks", ICLR 2017, §2.1–2.2, eq. 12 and 18–20.
    """
    steps = check_unroll_steps(steps)
    if not isinstance(remat, bool) and not callable(remat):
        raise TypeError(
            "remat must be a bool or a jax.checkpoint policy (e.g."
            f" jax.checkpoint_policies.dots_saveable), got {remat!r}."
        )
    if steps == 0:
        return d_params, d_opt_state

    def update(carry, _):
        params, opt_state = carry
        grads = jax.grad(loss_fn)(mark_varying(params, axis_name))
        if axis_name is not None:
            grads = lax.pmean(grads, axis_name)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        if first_order:
            updates = lax.stop_gradient(updates)
            opt_state = lax.stop_gradient(opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    if remat is not False:
        policy = None if remat is True else remat
        # Inside a scan, CSE cannot merge the recomputation into the forward
        # pass, so the optimisation barriers of prevent_cse are not needed.
        update = jax.checkpoint(update, policy=policy, prevent_cse=False)
    try:
        (d_params, d_opt_state), _ = lax.scan(
            update, (d_params, d_opt_state), None, length=steps
        )
    except TypeError as err:
        if "carry" not in str(err):
            raise
        raise TypeError(
            "unroll_discriminator carries the optimizer state through lax.scan,"
            " so an update must return a state of the same structure, shapes"
            " and dtypes as it was given; this optimizer's does not"
            f" ({type(optimizer).__name__}). Original error: {err}"
        ) from err
    return d_params, d_opt_state
