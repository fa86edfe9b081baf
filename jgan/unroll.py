"""Unrolled optimisation of the discriminator (Metz et al. 2016).

The generator of an unrolled GAN minimises the surrogate

    f_K(θ_G, θ_D) = f(θ_G, θ_D^K(θ_G, θ_D)),

where θ_D^K is the discriminator after K of its own optimizer updates on its
loss, which depends on θ_G through the generated samples. The gradient of f_K
with respect to θ_G flows back through all K updates (Metz et al., eq. 12 and
18–20), second-order terms included. Here the K updates run inside
``lax.scan``, so the program and its compile time do not grow with K.

Performance (benchmarks/unroll_k.py; the numbers are in benchmarks/README.md):
the scan compiles in about the same time for every K > 1, whereas a fully
unrolled program (a Python loop of the K updates traced into one graph)
compiles in time linear in K. What decides the step time is what the backward
pass reads back: storing every update's intermediate values costs memory
traffic, recomputing them (``remat``) costs arithmetic. Metz et al.'s small
discriminator (2-128-1) stores 1.45 bytes per FLOP and runs 2x faster
recomputed; a 2x128 MLP stores 0.043 and is faster stored. The default,
``remat="auto"``, chooses per network from that ratio (:func:`remat_choice`).
A ``lax.scan`` unroll factor > 1 made the step slower at K = 10 and 20 and
the compile slower, so there is no such option.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.extend import core as jcore

from jgan._parallel import mark_varying
from jgan._validate import check_bool, check_callable, check_int, check_optimizer, concrete_float

__all__ = ["unroll_discriminator", "Unrolled", "safe_root_update", "remat_choice", "REMAT_BYTES_PER_FLOP"]

PyTree = Any
RematPolicy = Callable[..., bool]


def unroll_discriminator(
    d_params: PyTree,
    d_opt_state: optax.OptState,
    *,
    loss_fn: Callable[[PyTree], jax.Array],
    optimizer: optax.GradientTransformation,
    steps: int,
    first_order: bool = False,
    axis_name: str | None = None,
    remat: bool | RematPolicy | str = "auto",
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
        structure, shapes and dtypes across an update, Adam with its defaults
        included: its square roots are differentiated with
        :func:`safe_root_update`, so a parameter whose gradient and second
        moment are exactly 0 (a ReLU unit that is dead on the batch) does not
        make the unrolled gradient NaN.
      steps: K, a static Python int >= 0. ``steps=0`` returns the inputs.
      first_order: stop gradients through the updates, so that θ_D^K is used
        as a constant (what "copy D, take K steps, use the final D" gives).
        An ablation: it is not Metz et al.'s objective.
      axis_name: if set, the discriminator's gradients are averaged over this
        mapped axis (``lax.pmean``) in every update, as in the ordinary step.
      remat: recompute each update's intermediate values in the backward pass
        instead of storing them (``jax.checkpoint`` on the scan body). With
        ``False`` memory grows as K times the values one update's backward
        pass needs (the discriminator's activations on both batches, its
        parameters and optimizer state); ``True`` stores only each update's
        parameters and optimizer state, and recomputes the discriminator's
        forward and backward passes; a ``jax.checkpoint_policies`` policy
        chooses what to store. ``"auto"`` (the default) chooses ``True``
        when storing costs more than recomputing: when one update's stored
        values exceed :data:`REMAT_BYTES_PER_FLOP` bytes per floating-point
        operation of its matrix products and convolutions (see
        :func:`remat_choice`). The result is the same either way.

    Returns:
      ``(d_params_K, d_opt_state_K)``.

    Raises:
      TypeError: ``steps`` is not an int, ``remat`` is neither a bool, a
        policy nor ``"auto"``, or the optimizer's state changes
        structure, shape or dtype across an update (it cannot be carried by a
        scan).
      ValueError: ``steps < 0``.

    Note:
      On XLA:CPU a strided convolution's kernel derivative runs 15-35x slower
      inside a while loop than in straight-line code (jax 0.10.2; see the
      README's findings), so a convolutional discriminator unrolled here is
      slow on a CPU; accelerators are not affected.

    References:
      Metz, Poole, Pfau, Sohl-Dickstein, "Unrolled Generative Adversarial
      Networks", ICLR 2017, §2.1–2.2, eq. 12 and 18–20.
    """
    steps = check_int(steps, "steps", minimum=0, static=True)
    check_bool(first_order, "first_order")
    check_optimizer(optimizer, "optimizer")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable d_params -> scalar, got {type(loss_fn).__name__}.")
    _check_remat(remat)
    if steps == 0:
        return d_params, d_opt_state

    # Differentiated updates take square roots with a finite derivative at 0
    # (see safe_root_update); a first-order unroll needs no derivative.
    optimizer_update = optimizer.update if first_order else safe_root_update(optimizer.update)

    def update(carry, _):
        params, opt_state = carry
        grads = jax.grad(loss_fn)(mark_varying(params, axis_name))
        if axis_name is not None:
            grads = lax.pmean(grads, axis_name)
        updates, opt_state = optimizer_update(grads, opt_state, params)
        if first_order:
            updates = lax.stop_gradient(updates)
            opt_state = lax.stop_gradient(opt_state)
        return (optax.apply_updates(params, updates), opt_state), None

    if isinstance(remat, str):  # "auto"; a first-order unroll has no backward pass through the updates.
        remat = False if first_order else remat_choice(update, (d_params, d_opt_state))
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



@dataclasses.dataclass(frozen=True)
class Unrolled:
    """The unrolled-GAN generator objective of Metz et al., as a part of ``make_gan``.

    ``make_gan(unroll=Unrolled(K))`` makes the generator minimise the
    surrogate f(θ_G, θ_D^K) on the discriminator after K further
    differentiable updates of its own optimizer (the discriminator's own
    update stays the ordinary one): its adversarial loss on D_K(G(z)) minus
    the discriminator's loss on real data under D_K (which depends on θ_G
    through the updates; the fake term is held constant there, as the
    generator's loss already covers it). For the minimax family the sum is
    exactly −V(θ_G, θ_D^K) (eq. 12). The K updates use the discriminator's
    whole loss, its regularisers included.

    For a relativistic family (``family.relativistic``) the generator's loss
    is ``g_loss(D_K(G(z)), D_K(x))``, and the surrogate keeps the same rule:
    ``g_loss(D_K(G(z)), D_K(x)) − d_loss(D_K(x), stop_gradient(D_K(G(z))))``.
    The real outputs D_K(x) are never stop-gradiented: they depend on θ_G
    only through θ_D^K, which is the point of unrolling (with K = 0 they are
    constants, and the gradient is the plain generator loss's). Only the
    generated outputs are held constant in the subtracted term; there they
    enter both of its terms' batch means (E D_K(G(z)) in the real term,
    E D_K(x) in the fake term), which thus still carry the dependence on
    θ_G through θ_D^K via D_K(x).

    Attributes:
      steps: K >= 0, static (one program per value).
      first_order: stop gradients through the K updates (an ablation).
      remat: recompute each update in the backward pass, or a
        ``jax.checkpoint`` policy, or ``"auto"`` (the default: chosen per
        network by :func:`remat_choice`); see :func:`unroll_discriminator`.

    References:
      Metz, Poole, Pfau, Sohl-Dickstein, "Unrolled Generative Adversarial
      Networks", ICLR 2017, eq. 12.
    """

    steps: int
    first_order: bool = dataclasses.field(default=False, kw_only=True)
    remat: bool | RematPolicy | str = dataclasses.field(default="auto", kw_only=True)

    def __post_init__(self):
        check_int(self.steps, "Unrolled steps", minimum=0, static=True)
        check_bool(self.first_order, "Unrolled first_order")
        _check_remat(self.remat)

    def unroll(
        self,
        d_params: PyTree,
        d_opt_state: optax.OptState,
        *,
        loss_fn: Callable[[PyTree], jax.Array],
        optimizer: optax.GradientTransformation,
        axis_name: str | None = None,
    ) -> tuple[PyTree, optax.OptState]:
        """The K differentiable updates: :func:`unroll_discriminator` in ``lax.scan``.

        A subclass may override how the updates are taken (a benchmark's
        Python loop, another scan); :meth:`generator_loss` keeps the surrogate.
        """
        return unroll_discriminator(
            d_params,
            d_opt_state,
            loss_fn=loss_fn,
            optimizer=optimizer,
            steps=self.steps,
            first_order=self.first_order,
            axis_name=axis_name,
            remat=self.remat,
        )

    def generator_loss(
        self,
        family: Any,
        discriminate: Callable[[PyTree, jax.Array], jax.Array],
        real: jax.Array,
        fake: jax.Array,
        *,
        d_params: PyTree,
        d_opt_state: optax.OptState,
        d_loss: Callable[[PyTree], jax.Array],
        optimizer: optax.GradientTransformation,
        axis_name: str | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """The surrogate and the generator's loss on D_K.

        Args:
          family: a ``jgan.losses.LossFamily``.
          discriminate: ``(d_params, x) -> outputs [batch]``.
          real: the discriminator's real inputs (packed), ``[batch, ...]``.
          fake: its generated inputs, differentiable in θ_G.
          d_params: θ_D, the discriminator after its own update.
          d_opt_state: its optimizer's state.
          d_loss: ``d_params -> scalar``, the discriminator's loss on this
            batch (a function of θ_G through the generated samples).
          optimizer: the discriminator's optimizer.
          axis_name: the data-parallel axis, if any. A relativistic family's
            losses receive it (``axis_name=``) so that their batch means are
            over every device's rows.

        Returns:
          ``(surrogate, g_loss)``: the objective to differentiate, and
          ``family.g_loss`` on D_K(G(z)) (and D_K(x) for a relativistic
          family) to report.
        """
        d_params_k, _ = self.unroll(
            d_params, d_opt_state, loss_fn=d_loss, optimizer=optimizer, axis_name=axis_name
        )
        fake_out = discriminate(d_params_k, fake)
        real_out = discriminate(d_params_k, real)
        if family.relativistic:
            mapped = {} if axis_name is None else {"axis_name": axis_name}
            g_loss = family.g_loss(fake_out, real_out, **mapped)
            d_term = family.d_loss(real_out, lax.stop_gradient(fake_out), **mapped)
        else:
            g_loss = family.g_loss(fake_out)
            d_term = family.d_loss(real_out, lax.stop_gradient(fake_out))
        return g_loss - d_term, g_loss


def _check_remat(remat: Any) -> None:
    if isinstance(remat, str) and remat == "auto":
        return
    if not isinstance(remat, (bool, np.bool_)) and not callable(remat):
        raise TypeError(
            "remat must be a bool, 'auto' or a jax.checkpoint policy (e.g."
            f" jax.checkpoint_policies.dots_saveable), got {remat!r}."
        )


# Stored bytes per FLOP above which recomputing an update beats storing it.
# Measured with benchmarks/unroll_k.py on a 2-core CPU (benchmarks/README.md):
# networks at 1.46 bytes/FLOP (Metz et al.'s discriminator 2-128-1) ran 2x
# faster with remat, networks at 0.045 (2x128 hidden) and 0.014 (2x512)
# 1.1-1.3x slower; the threshold sits between them on a log scale.
REMAT_BYTES_PER_FLOP = 0.1


def remat_choice(update: Callable, carry: PyTree) -> bool:
    """Whether recomputing ``update`` in the backward pass is cheaper than storing its values.

    Storing costs memory traffic: one write and one read of every value the
    backward pass of an update needs (its residuals: the leaves of
    ``jax.vjp``'s pullback), beyond the carry (parameters and optimizer
    state), which a recomputing scan stores too. Recomputing costs the
    update's arithmetic, dominated by its matrix products and convolutions
    (counted in its jaxpr). A small discriminator on low-dimensional data
    (Metz et al.'s 2-128-1 MLP, float32, batch 512) stores 1.5 bytes per
    FLOP, and recomputing it is twice as fast; a 2x128 MLP stores 0.045, and
    storing is faster. Returns ``bytes / flops > REMAT_BYTES_PER_FLOP``.
    Shapes only: nothing is computed.

    Args:
      update: ``(carry, None) -> (carry, None)``, one update of the scan.
      carry: its carry (arrays or abstract values).
    """

    def residuals(c):
        _, pullback = jax.vjp(lambda c: update(c, None)[0], c)
        return jax.tree.leaves(pullback)

    # One trace: the jaxpr of the forward half of the vjp is the update itself
    # (its products counted once), and its outputs are the residuals.
    jaxpr, stored_shapes = jax.make_jaxpr(residuals, return_shape=True)(carry)
    nbytes = lambda leaves: sum(x.size * jnp.dtype(x.dtype).itemsize for x in leaves)  # noqa: E731
    stored = nbytes(stored_shapes) - nbytes(jax.tree.leaves(carry))
    flops = _matmul_flops(jaxpr.jaxpr)
    return stored > REMAT_BYTES_PER_FLOP * max(flops, 1)


def _matmul_flops(jaxpr) -> int:
    """Floating-point operations of the matrix products and convolutions of a jaxpr (nested ones too)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.dot_general_p:
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * eqn.outvars[0].aval.size * int(np.prod([lhs[i] for i in contracting]))
        elif eqn.primitive is lax.conv_general_dilated_p:
            rhs = eqn.invars[1].aval
            out_features = rhs.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2 * eqn.outvars[0].aval.size * (rhs.size // out_features)
        inner = sum(_matmul_flops(sub) for sub in jcore.jaxprs_in_params(eqn.params))
        total += inner * (eqn.params["length"] if eqn.primitive is lax.scan_p else 1)
    return total


# ---------------------------------------------------------------------------
# Square roots with a finite derivative at 0, inside any optimizer's update.


def _masked_tangent(x, y, t, scale):
    """``t · scale`` where x > 0 and the scale is finite; 0 elsewhere (see safe_root_update)."""
    ok = (x > 0) & jnp.isfinite(scale)
    return y, t * jnp.where(ok, scale, 0).astype(t.dtype)


@jax.custom_jvp
def _safe_sqrt(x):
    return lax.sqrt(x)


@_safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = lax.sqrt(x)
    return _masked_tangent(x, y, t, 0.5 / jnp.where(x > 0, y, 1))  # √'s own rule where x > 0.


@jax.custom_jvp
def _safe_rsqrt(x):
    return lax.rsqrt(x)


@_safe_rsqrt.defjvp
def _safe_rsqrt_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = lax.rsqrt(x)
    return _masked_tangent(x, y, t, -0.5 * y / jnp.where(x > 0, x, 1))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _safe_pow(x, exponent):
    return lax.pow(x, jnp.asarray(exponent, x.dtype))


@_safe_pow.defjvp
def _safe_pow_jvp(exponent, primals, tangents):
    (x,), (t,) = primals, tangents
    y = lax.pow(x, jnp.asarray(exponent, x.dtype))
    safe_x = jnp.where(x > 0, x, 1)
    return _masked_tangent(x, y, t, exponent * lax.pow(safe_x, jnp.asarray(exponent - 1, x.dtype)))


def _root_exponent(eqn, invals) -> float | None:
    """The exponent of ``pow(x, c)`` when c is a constant in (−1, 1) other than 0, else None."""
    if eqn.primitive is not lax.pow_p or len(invals) != 2 or jnp.ndim(invals[1]) != 0:
        return None
    exponent = concrete_float(invals[1])
    if exponent is None or exponent == 0 or not -1 < exponent < 1:
        return None
    return exponent


def _is_root(eqn) -> bool:
    if eqn.primitive in (lax.sqrt_p, lax.rsqrt_p):
        return True
    return eqn.primitive is lax.pow_p and not isinstance(eqn.invars[1], jcore.Var) and (
        _root_exponent(eqn, [None, eqn.invars[1].val]) is not None
    )


_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call"})
# Their own derivative rules govern differentiation: a root inside is harmless.
_CUSTOM = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})


def _has_root(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if _is_root(eqn):
            return True
        if eqn.primitive.name not in _CUSTOM and any(
            _has_root(sub) for sub in jcore.jaxprs_in_params(eqn.params)
        ):
            return True
    return False


def _eval_with_safe_roots(jaxpr, consts, *args):
    """Evaluates ``jaxpr`` with every ``sqrt`` (also inside nested ``jit``) made safe."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if eqn.primitive is lax.sqrt_p:
            outvals = [_safe_sqrt(*invals)]
        elif eqn.primitive is lax.rsqrt_p:
            outvals = [_safe_rsqrt(*invals)]
        elif _root_exponent(eqn, invals) is not None:
            outvals = [_safe_pow(invals[0], _root_exponent(eqn, invals))]
        elif name in _CALLS and isinstance(eqn.params.get("jaxpr"), jcore.ClosedJaxpr):
            inner = eqn.params["jaxpr"]
            outvals = _eval_with_safe_roots(inner.jaxpr, inner.consts, *invals)
        else:
            if name not in _CUSTOM and any(_has_root(sub) for sub in jcore.jaxprs_in_params(eqn.params)):
                raise TypeError(
                    f"This optimizer's update takes a square root inside `{name}`, where"
                    " jgan cannot give it a finite derivative at 0, so unrolling through it"
                    " could give NaN gradients. Use an optimizer without a root under"
                    " control flow (optax.adam, adamw, rmsprop, sgd, ...), or"
                    " Unrolled(..., first_order=True), which does not differentiate"
                    " through the updates."
                )
            out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outvals = out if eqn.primitive.multiple_results else [out]
        env.update(zip(eqn.outvars, outvals))
    return [read(v) for v in jaxpr.outvars]


def safe_root_update(update: Callable) -> Callable:
    """An optimizer's ``update`` whose square roots have a finite derivative at 0.

    Adam divides by √ν̂ + ε. Where a gradient entry and its second moment are
    exactly 0 (a dead ReLU unit, an unused bias), the derivative of √ν at
    ν = 0 is infinite and the chain rule multiplies it by dν = 2g·dg = 0,
    which gives NaN. The tangent of ν is exactly 0 wherever ν is (ν is a sum
    of squared gradients, and so is its tangent's factor g), so the correct
    contribution is 0: this wrapper evaluates ``update`` with every root
    (``sqrt``, ``rsqrt`` and ``pow`` with a constant exponent in (−1, 1); in
    nested ``jit`` too) replaced by one whose derivative is the root's own
    where x > 0 and it is finite, and 0 elsewhere. Values are unchanged, and
    so are derivatives wherever the root's is finite. ``optax.adam``'s
    defaults (``eps_root = 0``) can then be unrolled, and so can adamw,
    rmsprop, adagrad, adabelief, yogi, amsgrad, nadam, adafactor and lamb
    (tested). ``optax.radam`` cannot: its first updates take the root of a
    negative number in a branch that ``jnp.where`` discards, and the
    reverse pass multiplies that NaN by 0; the step then reports
    ``nonfinite`` (never a silent NaN).

    Args:
      update: ``(updates, state, params) -> (updates, state)``, e.g. an optax
        transformation's ``update``.

    Returns:
      The same function with safe roots.

    Raises:
      TypeError: at trace time, when a root sits inside other control flow
        (``cond``, ``while``, ``scan``), which this does not rewrite; the
        message names the fixes.
    """

    check_callable(update, "update", "(updates, state, params) -> (updates, state)")

    def safe_update(updates, state, params=None):
        closed, out_shape = jax.make_jaxpr(update, return_shape=True)(updates, state, params)
        flat = jax.tree.leaves((updates, state, params))
        out = _eval_with_safe_roots(closed.jaxpr, closed.consts, *flat)
        return jax.tree.unflatten(jax.tree.structure(out_shape), out)

    return safe_update
