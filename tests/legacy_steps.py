"""A frozen copy of jgan.steps.make_train_step and jgan.unroll.unroll_discriminator as of
commit 1d27d43, before the composed API (make_gan). tests/test_make_gan.py checks
that the library's make_train_step and make_gan give bit-identical states to this
independent twin. Do not edit it to make a test pass.

Compiled GAN train steps: ``(state, batch) -> (state, metrics)``.

``make_train_step`` returns a pure function of a :class:`GANState` and a batch
of real data. It is not jitted: compile it with ``jax.jit`` (donating the
state if you like), map it with ``jax.pmap`` / ``jax.shard_map`` under the
``axis_name`` it was built with, or call it eagerly to debug.

One call performs Goodfellow's Algorithm 1 for one generator update:

1. ``d_steps`` (k) discriminator updates in ``lax.scan``, each on a fresh
   latent batch and, when the batch holds k slices, a fresh slice of real
   data; the optional gradient penalty (WGAN-GP), R1/R2 penalties and weight
   clipping (WGAN) apply here.
2. one generator update. With ``unroll_steps = K > 0`` the generator's loss is
   evaluated on the discriminator after K further differentiable updates of
   its own (Metz et al. 2016, :func:`jgan.unroll.unroll_discriminator`); the
   discriminator's own update in step 1 stays the ordinary one. With
   ``sinkhorn_weight > 0`` the generator's objective also has the debiased
   Sinkhorn divergence between G(z) and the real batch (minibatch OT,
   Genevay et al. 2018); with ``adversarial_weight = 0`` it is the whole
   objective.

Networks are plain apply functions, so any library works:

- stateless (``g_stateful=False``): ``generator(g_params, z[, labels]) -> x`` and
  ``discriminator(d_params, x[, labels]) -> logits``;
- stateful (BatchNorm, ``*_stateful=True``):
  ``generator(g_params, g_model_state, z[, labels]) -> (x, g_model_state)``
  and the same for the discriminator, the model state living in the
  :class:`GANState`.

Randomness is a pure function of ``(state.key, state.step)``; under
``axis_name`` each device draws the global latent batch and keeps its own
slice, so a data-parallel step on a batch split across devices equals the
single-device step on the whole batch (up to float summation order).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jgan import losses as L
from jgan import penalties
from jgan._parallel import mark_varying
from jgan.metrics import sinkhorn_divergence

__all__ = [
    "GANState",
    "init_state",
    "make_train_step",
    "pack_samples",
    "check_finite",
    "NonFiniteError",
    "LOSSES",
    "CycleGANState",
    "init_cyclegan_state",
    "make_cyclegan_train_step",
]

PyTree = Any
Batch = Any
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



class GANState(NamedTuple):
    """Everything a GAN train step reads and writes; a pytree.

    Attributes:
      step: ``[]`` int32, the number of generator updates taken.
      key: the PRNG key; the draws of step ``s`` derive from
        ``fold_in(key, s)``, so the key itself never changes.
      g_params: the generator's parameters.
      d_params: the discriminator's parameters.
      g_opt_state: the generator optimizer's state.
      d_opt_state: the discriminator optimizer's state.
      g_model_state: the generator's non-trainable state (BatchNorm
        statistics), ``None`` for a stateless generator.
      d_model_state: likewise for the discriminator.
      g_ema_params: exponential moving average of ``g_params``, or ``None``.
    """

    step: jax.Array
    key: jax.Array
    g_params: PyTree
    d_params: PyTree
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    g_model_state: PyTree = None
    d_model_state: PyTree = None
    g_ema_params: PyTree = None


def init_state(
    key: jax.Array,
    g_params: PyTree,
    d_params: PyTree,
    *,
    g_optimizer: optax.GradientTransformation,
    d_optimizer: optax.GradientTransformation,
    g_model_state: PyTree = None,
    d_model_state: PyTree = None,
    ema: bool = False,
) -> GANState:
    """Builds the initial :class:`GANState`.

    Args:
      key: PRNG key for every draw of training (latents, penalties).
      g_params: initial generator parameters.
      d_params: initial discriminator parameters.
      g_optimizer: the generator's optax transformation (the same object as
        given to :func:`make_train_step`).
      d_optimizer: the discriminator's optax transformation.
      g_model_state: the generator's model state (e.g. ``{"batch_stats": ...}``)
        if it is stateful.
      d_model_state: likewise for the discriminator.
      ema: keep an exponential moving average of the generator's weights,
        starting from ``g_params`` (set ``ema_decay`` in the step).

    Returns:
      The state at step 0.
    """
    return GANState(
        step=jnp.zeros((), jnp.int32),
        key=key,
        g_params=g_params,
        d_params=d_params,
        g_opt_state=g_optimizer.init(g_params),
        d_opt_state=d_optimizer.init(d_params),
        g_model_state=g_model_state,
        d_model_state=d_model_state,
        g_ema_params=jax.tree.map(jnp.array, g_params) if ema else None,
    )


class _Family(NamedTuple):
    d_loss: Callable[..., jax.Array]
    g_loss: Callable[..., jax.Array]
    on_logits: bool  # D's output is a logit of a probability (report σ).
    wasserstein: bool  # E r − E f estimates a Wasserstein distance.


LOSSES: dict[str, _Family] = {
    "minimax": _Family(L.minimax_discriminator_loss, L.minimax_generator_loss, True, False),
    "non_saturating": _Family(
        L.minimax_discriminator_loss, L.non_saturating_generator_loss, True, False
    ),
    "maximum_likelihood": _Family(
        L.minimax_discriminator_loss, L.maximum_likelihood_generator_loss, True, False
    ),
    "wasserstein": _Family(
        L.wasserstein_discriminator_loss, L.wasserstein_generator_loss, False, True
    ),
    "hinge": _Family(L.hinge_discriminator_loss, L.hinge_generator_loss, False, False),
    "least_squares": _Family(
        L.least_squares_discriminator_loss, L.least_squares_generator_loss, False, False
    ),
}


def _resolve_loss(loss) -> _Family:
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}; known: {sorted(LOSSES)}.")
        return LOSSES[loss]
    if (
        isinstance(loss, Sequence)
        and len(loss) == 2
        and all(callable(fn) for fn in loss)
    ):
        return _Family(loss[0], loss[1], False, False)
    raise TypeError(
        "loss must name a family "
        f"({sorted(LOSSES)}) or be a pair (d_loss(real_out, fake_out),"
        f" g_loss(fake_out)) of callables; got {loss!r}."
    )


def pack_samples(x: jax.Array, pack: int) -> jax.Array:
    """PacGAN packing: m consecutive samples become one input of the discriminator.

    The m samples are concatenated along the last (feature or channel) axis:
    ``[batch, d]`` becomes ``[batch/m, m·d]`` and ``[batch, h, w, c]``
    becomes ``[batch/m, h, w, m·c]``.

    Args:
      x: samples, ``[batch, ...]``.
      pack: m >= 1, which must divide ``batch``.

    Returns:
      The packed samples.

    References:
      Lin, Khetan, Fanti, Oh, "PacGAN: The power of two samples in generative
      adversarial networks", NeurIPS 2018, §3.
    """
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ValueError(f"pack must be an int >= 1, got {pack!r}.")
    if pack == 1:
        return x
    batch = x.shape[0]
    if batch % pack:
        raise ValueError(
            f"pack={pack} must divide the batch size, got a batch of {batch}"
            " (per device, under data parallelism)."
        )
    if x.ndim == 1:
        return x.reshape(batch // pack, pack)
    grouped = x.reshape(batch // pack, pack, *x.shape[1:])
    grouped = jnp.moveaxis(grouped, 1, -2)
    return grouped.reshape(batch // pack, *x.shape[1:-1], pack * x.shape[-1])


class NonFiniteError(FloatingPointError):
    """A train step produced a non-finite loss or gradient."""


def check_finite(metrics: dict[str, Any], *, step: int | None = None) -> None:
    """Raises :class:`NonFiniteError` if any metric of a step is not finite.

    Call it on the host on the metrics a step returned (it syncs with the
    device); every step's ``metrics["nonfinite"]`` is 1 when a loss or a
    gradient was not finite.

    Args:
      metrics: the metrics dict of a train step.
      step: the step number, for the message.

    Raises:
      NonFiniteError: naming the offending metrics.
    """
    values = {k: np.asarray(v) for k, v in metrics.items()}
    bad = sorted(k for k, v in values.items() if not np.all(np.isfinite(v)))
    if "nonfinite" in values and np.any(values["nonfinite"] > 0):
        bad.append("nonfinite (a loss or gradient)")
    if bad:
        where = f" at step {step}" if step is not None else ""
        shown = {k: values[k].tolist() for k in values}
        raise NonFiniteError(
            f"Non-finite training{where}: {', '.join(bad)}. Metrics: {shown}. Lower"
            " the learning rates, add a gradient penalty, or check the data; with"
            " unroll_steps > 0 and Adam, give Adam eps_root > 0 (the derivative of"
            " its square root is infinite where a gradient entry is exactly 0)."
        )


def _check_nonnegative(name: str, value: float) -> float:
    if not value >= 0:  # Also rejects NaN.
        raise ValueError(f"{name} must be >= 0, got {value}.")
    return float(value)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a Python int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def _pmean_floats(tree: PyTree, axis_name: str | None) -> PyTree:
    if axis_name is None:
        return tree
    return jax.tree.map(
        lambda x: lax.pmean(x, axis_name) if jnp.issubdtype(x.dtype, jnp.inexact) else x,
        tree,
    )


def _finalize_metrics(metrics: dict[str, jax.Array], axis_name: str | None) -> dict[str, jax.Array]:
    """Averages a step's scalar metrics across devices and adds ``nonfinite`` (1 if any is not finite)."""
    metrics = _pmean_floats(metrics, axis_name)
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
    return {**metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}


def _draw_local(key, draw: Callable[[jax.Array, int], jax.Array], n: int, axis_name):
    """``draw(key, n)`` on one device; this device's slice of the global draw under a map."""
    if axis_name is None:
        return draw(key, n)
    devices = lax.axis_size(axis_name)
    full = draw(key, n * devices)
    return lax.dynamic_slice_in_dim(full, lax.axis_index(axis_name) * n, n)


def _stateful(fn: Callable, stateful: bool) -> Callable:
    """Brings an apply function to the stateful convention ``(p, s, x, *y) -> (out, s)``."""
    if stateful:
        return fn
    return lambda params, model_state, x, *labels: (fn(params, x, *labels), model_state)


def _split_batch(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
    if isinstance(batch, dict):
        unknown = set(batch) - {"x", "label"}
        if "x" not in batch or unknown:
            raise ValueError(
                "A dict batch holds 'x' and optionally 'label'; got keys"
                f" {sorted(batch)}."
            )
        return jnp.asarray(batch["x"]), (
            None if batch.get("label") is None else jnp.asarray(batch["label"])
        )
    return jnp.asarray(batch), None


def make_train_step(
    *,
    generator: Callable,
    discriminator: Callable,
    g_optimizer: optax.GradientTransformation,
    d_optimizer: optax.GradientTransformation,
    latent_dim: int | None = None,
    loss: str | tuple[Callable, Callable] = "non_saturating",
    d_steps: int = 1,
    unroll_steps: int = 0,
    unroll_first_order: bool = False,
    unroll_remat: bool | Callable[..., bool] = False,
    gradient_penalty: float = 0.0,
    gradient_penalty_target: float = 1.0,
    gradient_penalty_one_sided: bool = False,
    r1: float = 0.0,
    r2: float = 0.0,
    weight_clip: float | None = None,
    pack: int = 1,
    ema_decay: float | None = None,
    axis_name: str | None = None,
    latent_sampler: Callable[[jax.Array, int], jax.Array] | None = None,
    g_stateful: bool = False,
    d_stateful: bool = False,
    adversarial_weight: float = 1.0,
    sinkhorn_weight: float = 0.0,
    sinkhorn_epsilon: float = 0.1,
    sinkhorn_iterations: int | None = 100,
) -> Callable[[GANState, Batch], tuple[GANState, dict[str, jax.Array]]]:
    """Builds a GAN train step ``(state, batch) -> (state, metrics)``.

    Args:
      generator: ``(g_params, z[, labels]) -> x`` (stateless) or
        ``(g_params, g_model_state, z[, labels]) -> (x, g_model_state)``.
      discriminator: ``(d_params, x[, labels]) -> logits`` with logits of
        shape ``[batch]`` or ``[batch, 1]`` (stateless), or the stateful form.
      g_optimizer: the generator's optax transformation.
      d_optimizer: the discriminator's optax transformation (without weight
        clipping: pass ``weight_clip`` for that).
      latent_dim: z's dimension for the standard normal prior.
      loss: a family name (see :data:`LOSSES`: ``"minimax"``,
        ``"non_saturating"``, ``"maximum_likelihood"``, ``"wasserstein"``,
        ``"hinge"``, ``"least_squares"``) or a pair of callables
        ``(d_loss(real_out, fake_out), g_loss(fake_out))`` returning scalars.
      d_steps: k, discriminator updates per generator update (n_critic).
        ``batch`` is either one real batch ``[batch, ...]`` used by all k, or k
        slices ``[k, batch, ...]``, one per discriminator update.
      unroll_steps: K >= 0; the generator minimises the surrogate on the
        discriminator θ_D^K after K differentiable updates (Metz et al. 2016,
        eq. 12): its loss on D_K(G(z)) minus the discriminator's loss on real
        data under D_K (which depends on θ_G through the updates; for the
        minimax family the sum is exactly −V(θ_G, θ_D^K)). ``g_loss`` reports
        the first part. K = 0 is the ordinary GAN. With Adam, give it
        ``eps_root > 0`` (see :func:`jgan.unroll.unroll_discriminator`).
      unroll_first_order: stop gradients through the K updates (ablation).
      unroll_remat: ``remat`` of :func:`jgan.unroll.unroll_discriminator`:
        recompute each unrolled update in the backward pass (memory nearly
        flat in K, a slower step), or a ``jax.checkpoint_policies`` policy.
      gradient_penalty: λ of WGAN-GP, E[(‖∇D(x̂)‖ − target)²] on interpolates.
      gradient_penalty_target: the target norm of the penalty (1).
      gradient_penalty_one_sided: penalise only norms above the target.
      r1: γ of the R1 penalty (γ/2)·E‖∇D(x)‖² on real data.
      r2: γ of the R2 penalty (γ/2)·E‖∇D(G(z))‖² on generated data.
      weight_clip: c; the discriminator's parameters are clipped to [−c, c]
        after every update (WGAN), unrolled updates included.
      pack: m of PacGAN: D sees m samples concatenated along the last axis.
      ema_decay: keep ``g_ema ← decay·g_ema + (1 − decay)·g_params`` (the
        state must come from ``init_state(..., ema=True)``).
      axis_name: the mapped axis of ``jax.pmap`` / ``shard_map``: gradients,
        model state and metrics are averaged across it.
      latent_sampler: ``(key, n) -> z [n, ...]``, replacing N(0, I) of
        dimension ``latent_dim``.
      g_stateful: the generator uses the stateful convention.
      d_stateful: the discriminator uses the stateful convention.
      adversarial_weight: the weight of the adversarial generator loss in
        the generator's objective (1; 0 drops it, e.g. for a Sinkhorn-only
        generator).
      sinkhorn_weight: λ; adds λ·S_ε(G(z), x) to the generator's objective,
        the debiased Sinkhorn divergence (:func:`jgan.metrics.sinkhorn_divergence`,
        squared-Euclidean cost on flattened samples) between the generated
        and the real batch. Under ``axis_name`` each device uses its own
        part of the batch (minibatch OT per device).
      sinkhorn_epsilon: ε of that divergence, absolute, in squared data
        units.
      sinkhorn_iterations: Sinkhorn iterations per problem, a fixed number
        (differentiated by unrolling them; 100), or ``None`` to iterate to a
        marginal error of 1e-3 (implicit differentiation).

    Returns:
      ``train_step(state, batch) -> (state, metrics)``. ``batch`` is an array
      of real data or a dict with ``"x"`` and ``"label"`` (conditional GAN:
      the labels go to both networks, and the generated samples of a batch
      take the labels of its real samples). ``metrics`` is a flat dict of
      scalars: ``d_loss`` and ``g_loss`` (the adversarial losses), ``d_real``
      and ``d_fake`` (mean D(x) and D(G(z)); probabilities for the
      sigmoid-based families, raw scores otherwise), ``d_grad_norm`` and
      ``g_grad_norm``, the penalties that are on, ``wasserstein`` (E D(x) −
      E D(G(z)) for the Wasserstein family), ``sinkhorn`` (when it is on) and
      ``nonfinite`` (1 if a loss or
      gradient was not finite). Discriminator metrics are means over the k
      updates.

    Raises:
      ValueError / TypeError: here for bad hyper-parameters; at trace time
      for bad shapes (mismatched real and generated samples, a discriminator
      output that is not ``[batch]`` or ``[batch, 1]``, a pack size that does
      not divide the batch).

    References:
      Goodfellow et al. 2014, Algorithm 1; Arjovsky et al. 2017, Algorithm 1;
      Gulrajani et al. 2017, Algorithm 1; Metz et al. 2016; Lin et al. 2018.
    """
    family = _resolve_loss(loss)
    d_steps = _check_int("d_steps", d_steps, 1)
    unroll_steps = check_unroll_steps(unroll_steps, name="unroll_steps")
    pack = _check_int("pack", pack, 1)
    gp_weight = _check_nonnegative("gradient_penalty", gradient_penalty)
    r1_weight = _check_nonnegative("r1", r1)
    r2_weight = _check_nonnegative("r2", r2)
    if weight_clip is not None:
        weight_clip = _check_nonnegative("weight_clip", weight_clip)
    adversarial_weight = _check_nonnegative("adversarial_weight", adversarial_weight)
    sinkhorn_weight = _check_nonnegative("sinkhorn_weight", sinkhorn_weight)
    if sinkhorn_weight > 0:
        if not sinkhorn_epsilon > 0:
            raise ValueError(f"sinkhorn_epsilon must be > 0, got {sinkhorn_epsilon}.")
        if sinkhorn_iterations is not None:
            sinkhorn_iterations = _check_int("sinkhorn_iterations", sinkhorn_iterations, 1)
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}.")
    if latent_sampler is None:
        if latent_dim is None:
            raise ValueError("Give latent_dim (standard normal prior) or latent_sampler.")
        latent_dim = _check_int("latent_dim", latent_dim, 1)

        def latent_sampler(key, n):
            return jax.random.normal(key, (n, latent_dim))

    gen = _stateful(generator, g_stateful)
    disc = _stateful(discriminator, d_stateful)

    # WGAN's clipping is applied after every discriminator update, the
    # unrolled ones included; d_opt_state stays d_optimizer's own state.
    if weight_clip is None:
        d_tx = d_optimizer
        wrap_state, unwrap_state = (lambda s: s), (lambda s: s)
    else:
        d_tx = optax.chain(d_optimizer, penalties.weight_clipping(weight_clip))
        wrap_state = lambda s: (s, penalties.WeightClippingState())  # noqa: E731
        unwrap_state = lambda s: s[0]  # noqa: E731

    def draw(key, sampler, n):
        return _draw_local(key, sampler, n, axis_name)

    def d_objective(d_params, d_mstate, real, fake, labels, key):
        """The discriminator's loss (penalties included) and its metrics."""
        y = () if labels is None else (labels,)
        real_in, fake_in = pack_samples(real, pack), pack_samples(fake, pack)
        real_out, d_mstate = disc(d_params, d_mstate, real_in, *y)
        fake_out, d_mstate = disc(d_params, d_mstate, fake_in, *y)
        real_out = _check_output(real_out, real_in.shape[0], "real")
        fake_out = _check_output(fake_out, fake_in.shape[0], "generated")
        adversarial = family.d_loss(real_out, fake_out)
        metrics = {"d_loss": adversarial}
        if family.on_logits:
            metrics["d_real"] = jnp.mean(jax.nn.sigmoid(real_out))
            metrics["d_fake"] = jnp.mean(jax.nn.sigmoid(fake_out))
        else:
            metrics["d_real"] = jnp.mean(real_out)
            metrics["d_fake"] = jnp.mean(fake_out)
        if family.wasserstein:
            metrics["wasserstein"] = jnp.mean(real_out) - jnp.mean(fake_out)
        total = adversarial

        def critic(x):
            return disc(d_params, d_mstate, x, *y)[0]

        if gp_weight > 0:
            t = draw(key, lambda k, n: jax.random.uniform(k, (n,), real_in.dtype), real_in.shape[0])
            t = t.reshape((-1,) + (1,) * (real_in.ndim - 1))
            gp = penalties.gradient_norm_penalty(
                critic,
                t * real_in + (1 - t) * fake_in,
                target=gradient_penalty_target,
                one_sided=gradient_penalty_one_sided,
            )
            metrics["gradient_penalty"] = gp
            total = total + gp_weight * gp
        if r1_weight > 0:
            metrics["r1"] = penalties.r1_penalty(critic, real_in)
            total = total + 0.5 * r1_weight * metrics["r1"]
        if r2_weight > 0:
            metrics["r2"] = penalties.r1_penalty(critic, fake_in)
            total = total + 0.5 * r2_weight * metrics["r2"]
        return total, (d_mstate, metrics)

    def d_update(carry, xs, g_params, fixed_real, fixed_labels):
        d_params, d_opt_state, d_mstate, g_mstate = carry
        key, real, labels = xs
        real = fixed_real if real is None else real
        labels = fixed_labels if labels is None else labels
        z_key, gp_key = jax.random.split(key)
        z = draw(z_key, latent_sampler, real.shape[0])
        y = () if labels is None else (labels,)
        fake, g_mstate = gen(g_params, g_mstate, z, *y)
        _check_fake(fake, real)
        fake = lax.stop_gradient(fake)
        # Differentiate per-device copies (see mark_varying), then average.
        grads, (d_mstate, metrics) = jax.grad(d_objective, has_aux=True)(
            mark_varying(d_params, axis_name), d_mstate, real, fake, labels, gp_key
        )
        grads = _pmean_floats(grads, axis_name)
        updates, opt_state = d_tx.update(grads, wrap_state(d_opt_state), d_params)
        d_params = optax.apply_updates(d_params, updates)
        metrics["d_grad_norm"] = optax.tree.norm(grads)
        carry = (d_params, unwrap_state(opt_state), d_mstate, g_mstate)
        return carry, metrics

    def g_objective(g_params, g_mstate, d_params, d_opt_state, d_mstate, z, real, labels, key):
        y = () if labels is None else (labels,)
        fake, g_mstate = gen(g_params, g_mstate, z, *y)
        _check_fake(fake, real)
        d_mstate_in = d_mstate
        if unroll_steps:

            def unrolled_loss(params):
                return d_objective(params, d_mstate, real, fake, labels, key)[0]

            d_params, _ = unroll_discriminator(
                d_params,
                wrap_state(d_opt_state),
                loss_fn=unrolled_loss,
                optimizer=d_tx,
                steps=unroll_steps,
                first_order=unroll_first_order,
                axis_name=axis_name,
                remat=unroll_remat,
            )
        fake_in = pack_samples(fake, pack)
        fake_out, d_mstate = disc(d_params, d_mstate, fake_in, *y)
        fake_out = _check_output(fake_out, fake_in.shape[0], "generated")
        g_loss = family.g_loss(fake_out)
        objective = adversarial_weight * g_loss
        extra = {}
        if unroll_steps:
            # Metz et al.'s surrogate f(θ_G, θ_D^K) keeps the real-data term
            # (E log D_K(x) for the minimax game): it depends on θ_G through
            # the K updates. It enters as minus the discriminator's loss on
            # real data at θ_D^K; the fake term is held constant there, as
            # the generator's own loss already covers it.
            real_in = pack_samples(real, pack)
            real_out, _ = disc(d_params, d_mstate, real_in, *y)
            real_out = _check_output(real_out, real_in.shape[0], "real")
            objective = adversarial_weight * (g_loss - family.d_loss(real_out, lax.stop_gradient(fake_out)))
            # These forward passes ran the unrolled θ_D^K, not the stored
            # discriminator: its statistics stay as they were.
            d_mstate = d_mstate_in
        if sinkhorn_weight > 0:
            n = fake.shape[0]
            extra["sinkhorn"] = sinkhorn_divergence(
                fake.reshape(n, -1),
                lax.stop_gradient(real).reshape(n, -1),
                epsilon=sinkhorn_epsilon,
                num_iterations=sinkhorn_iterations,
            ).divergence
            objective = objective + sinkhorn_weight * extra["sinkhorn"]
        return objective, (g_loss, g_mstate, d_mstate, extra)

    def train_step(state: GANState, batch: Batch) -> tuple[GANState, dict[str, jax.Array]]:
        if not isinstance(state, GANState):
            raise TypeError(f"state must be a GANState, got {type(state).__name__}.")
        _check_model_state("g", g_stateful, state.g_model_state)
        _check_model_state("d", d_stateful, state.d_model_state)
        if ema_decay is not None and state.g_ema_params is None:
            raise ValueError("ema_decay is set but the state has no g_ema_params: init_state(..., ema=True).")
        real, labels = _split_batch(batch)
        if labels is not None and pack > 1:
            raise ValueError("pack > 1 is not supported with conditional labels.")
        sliced = _is_sliced(real, labels, state)

        keys = jax.random.split(jax.random.fold_in(state.key, state.step), d_steps + 1)
        if sliced:
            xs = (keys[:d_steps], real, labels)
            fixed_real, fixed_labels = None, None
            last_real = real[-1]
            last_labels = None if labels is None else labels[-1]
        else:
            xs = (keys[:d_steps], None, None)
            fixed_real, fixed_labels = real, labels
            last_real, last_labels = real, labels

        carry = (state.d_params, state.d_opt_state, state.d_model_state, state.g_model_state)
        carry, d_metrics = lax.scan(
            lambda c, x: d_update(c, x, state.g_params, fixed_real, fixed_labels), carry, xs
        )
        d_params, d_opt_state, d_mstate, g_mstate = carry
        metrics = jax.tree.map(jnp.mean, d_metrics)

        z_key, unroll_key = jax.random.split(keys[d_steps])
        z = draw(z_key, latent_sampler, last_real.shape[0])
        (_, (g_loss, g_mstate, d_mstate, g_extra)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(
            mark_varying(state.g_params, axis_name), g_mstate, d_params, d_opt_state, d_mstate, z, last_real, last_labels, unroll_key
        )
        g_grads = _pmean_floats(g_grads, axis_name)
        g_updates, g_opt_state = g_optimizer.update(g_grads, state.g_opt_state, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        g_ema = state.g_ema_params
        if ema_decay is not None:
            g_ema = optax.incremental_update(g_params, g_ema, 1.0 - ema_decay)

        metrics["g_loss"] = g_loss
        metrics.update(g_extra)
        metrics["g_grad_norm"] = optax.tree.norm(g_grads)
        metrics = _finalize_metrics(metrics, axis_name)

        new_state = GANState(
            step=state.step + 1,
            key=state.key,
            g_params=g_params,
            d_params=d_params,
            g_opt_state=g_opt_state,
            d_opt_state=d_opt_state,
            g_model_state=_pmean_floats(g_mstate, axis_name),
            d_model_state=_pmean_floats(d_mstate, axis_name),
            g_ema_params=g_ema,
        )
        return new_state, metrics

    def _sample_shape(state, label_example):
        """The generator's sample shape for one example with the given label shape."""
        z = jax.eval_shape(lambda k: latent_sampler(k, 1), jax.random.key(0))
        y = () if label_example is None else (label_example,)
        out = jax.eval_shape(
            lambda p, s, zz, *yy: gen(p, s, zz, *yy)[0],
            state.g_params,
            state.g_model_state,
            z,
            *y,
        )
        return tuple(out.shape[1:])

    def _is_sliced(real, labels, state):
        """Whether ``real`` is one batch ``[batch, ...]`` or k slices ``[k, batch, ...]``.

        Decided (at trace time) by comparing with the shape of the generator's
        samples; a shape that fits neither is an error.
        """

        def fits(lead):  # Does real = [*lead, *sample_shape] for this hypothesis?
            if real.ndim < lead or (labels is not None and labels.shape[:lead] != real.shape[:lead]):
                return False, None, None
            example = None
            if labels is not None:
                example = jax.ShapeDtypeStruct((1,) + labels.shape[lead:], labels.dtype)
            try:
                shape = _sample_shape(state, example)
            except Exception as err:  # E.g. the generator rejects this label shape.
                return False, None, err
            return tuple(real.shape[lead:]) == shape, shape, None

        one_batch, shape, error = fits(1)
        if one_batch:
            return False
        slices, slice_shape, _ = fits(2)
        if slices:
            if real.shape[0] != d_steps:
                raise ValueError(
                    f"A batch of real slices [k, batch, ...] needs k = d_steps = {d_steps},"
                    f" got k = {real.shape[0]}."
                )
            return True
        if error is not None and slice_shape is None:
            raise error
        expected = shape or slice_shape
        raise ValueError(
            f"Real samples of shape {real.shape} (labels {None if labels is None else labels.shape})"
            f" do not match the generator's samples of shape [batch, *{expected}], or"
            " [d_steps, batch, ...] for one real slice per discriminator update."
        )

    return train_step


def _check_output(out, batch: int, what: str) -> jax.Array:
    out = L.as_logits(out, name=f"The discriminator's output on {what} samples")
    if out.shape[0] != batch:
        raise ValueError(
            f"The discriminator returned {out.shape[0]} outputs for {batch} {what} inputs."
        )
    return out


def _check_fake(fake, real) -> None:
    if fake.shape != real.shape:
        raise ValueError(
            f"Generated samples {fake.shape} and real samples {real.shape} differ in shape."
        )


def _check_model_state(which: str, stateful: bool, model_state) -> None:
    if stateful and model_state is None:
        raise ValueError(
            f"{which}_stateful=True but the state has no {which}_model_state:"
            f" pass {which}_model_state to init_state."
        )
    if not stateful and model_state is not None:
        raise ValueError(
            f"The state holds a {which}_model_state but {which}_stateful=False:"
            f" build the step with {which}_stateful=True."
        )


