"""The CycleGAN train step: two generators, two discriminators, unpaired batches.

``make_cyclegan_train_step`` returns a pure ``(state, batch) -> (state,
metrics)`` function of a :class:`CycleGANState` and an unpaired batch
``{"a": images of domain A, "b": images of domain B}``. Like
``jgan.steps.make_train_step`` it is not jitted: compile it with ``jax.jit``,
map it with ``jax.pmap`` / ``jax.shard_map`` under its ``axis_name``, or call
it eagerly.

One call is one iteration of the authors' training loop:

1. the generators translate both batches, ``fake_b = G(a)``, ``fake_a = F(b)``,
   and reconstruct them, ``F(G(a))`` and ``G(F(b))``;
2. G and F take one joint step on the generators' objective (Zhu et al.,
   eq. 3, plus the optional identity term of sec. 5.2), evaluated with the
   current discriminators;
3. D_A and D_B take one joint step, each on real images of its domain
   against the generated ones of step 1 (after the optional image pool).

Both updates are computed from the parameters at the start of the step (the
order of the authors' code: the discriminators see ``fake_b.detach()`` from
the same forward pass, and their own parameters have not moved yet).

Networks are stateless apply functions (instance norm keeps no running
statistics): ``generator(params, x) -> y`` and ``discriminator(params, x) ->
logits`` with a leading batch axis: ``[batch]``, ``[batch, 1]`` or a PatchGAN
map ``[batch, h', w', 1]``. Each patch's output is one term of the adversarial
losses, which average over the batch and the patches (as the authors' MSE
loss does). With flax modules, use ``jgan.models.make_apply(module,
stateful=False)``.

Randomness (the image pool's draws) is a pure function of ``(state.key,
state.step)``.

Shared generator parameters (``shared_generator_params=True``): G and F may
share layers, as in the seed notes' shared-encoder variant
(:class:`jgan.models.SharedEncoderTranslator`, ``G = decoder_b ∘ encoder``,
``F = decoder_a ∘ encoder``). Then ``state.g_ab_params`` holds the one tree
both generator functions read (``{"encoder", "decoder_a", "decoder_b"}``)
and ``state.g_ba_params`` is ``None``; every shared leaf exists once and its
gradient is the sum of its uses by G and by F (the chain rule for tied
weights), so the encoder learns from both directions::

    generator_ab, generator_ba = jgan.models.make_shared_generators(translator)
    state = init_cyclegan_state(key, translator_params, None, d_a, d_b, ...)
    step = make_cyclegan_train_step(generator_ab=generator_ab, generator_ba=generator_ba,
                                    ..., shared_generator_params=True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jgan import losses as L
from jgan._parallel import finalize_metrics, gather_rows, local_rows, mark_varying, pmean_floats
from jgan._validate import check_bool, check_callable, check_int, check_mapped_axis, check_nonnegative, check_optimizer

__all__ = [
    "CycleGANState",
    "init_cyclegan_state",
    "make_cyclegan_train_step",
]

PyTree = Any


class CycleGANState(NamedTuple):
    """Everything a CycleGAN train step reads and writes; a pytree.

    Attributes:
      step: ``[]`` int32, the number of steps taken.
      key: the PRNG key; the draws of step ``s`` derive from
        ``fold_in(key, s)``, so the key itself never changes.
      g_ab_params: G's parameters (domain A to B); with shared generator
        parameters, the one tree G and F both read.
      g_ba_params: F's parameters (domain B to A); ``None`` with shared
        generator parameters.
      d_a_params: D_A's parameters (real A against F(b)).
      d_b_params: D_B's parameters (real B against G(a)).
      g_opt_state: the generators' optimizer state, of ``g_optimizer`` over
        the pair ``(g_ab_params, g_ba_params)`` (one optimizer over both, as
        in the authors' code; it matters for global transformations such as
        ``optax.clip_by_global_norm``).
      d_opt_state: the discriminators' optimizer state, over the pair
        ``(d_a_params, d_b_params)``.
      pool_a: the history of generated A images, ``[pool_size, *a_shape]``
        (``[0, *a_shape]`` without a pool).
      pool_b: the history of generated B images, ``[pool_size, *b_shape]``.
      pool_a_count: ``[]`` int32, how many entries of ``pool_a`` are filled.
      pool_b_count: ``[]`` int32, likewise for ``pool_b``.
    """

    step: jax.Array
    key: jax.Array
    g_ab_params: PyTree
    g_ba_params: PyTree
    d_a_params: PyTree
    d_b_params: PyTree
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    pool_a: jax.Array
    pool_b: jax.Array
    pool_a_count: jax.Array
    pool_b_count: jax.Array


def init_cyclegan_state(
    key: jax.Array,
    g_ab_params: PyTree,
    g_ba_params: PyTree,
    d_a_params: PyTree,
    d_b_params: PyTree,
    *,
    g_optimizer: optax.GradientTransformation,
    d_optimizer: optax.GradientTransformation,
    pool_size: int = 0,
    a_shape: tuple[int, ...] | None = None,
    b_shape: tuple[int, ...] | None = None,
    dtype: Any = jnp.float32,
) -> CycleGANState:
    """Builds the initial :class:`CycleGANState`.

    Args:
      key: PRNG key for every draw of training (the image pool's).
      g_ab_params: G's initial parameters (A to B); for a step with
        ``shared_generator_params=True``, the one tree of both generators.
      g_ba_params: F's initial parameters (B to A); ``None`` for a step with
        ``shared_generator_params=True``.
      d_a_params: D_A's initial parameters.
      d_b_params: D_B's initial parameters.
      g_optimizer: the generators' optax transformation (the same object as
        given to :func:`make_cyclegan_train_step`).
      d_optimizer: the discriminators' optax transformation.
      pool_size: the image history buffer's size (50 in the paper; 0: none).
        Must equal the step's ``pool_size``.
      a_shape: one A image's shape ``(height, width, channels)``, needed when
        ``pool_size > 0``.
      b_shape: likewise for B; defaults to ``a_shape``.
      dtype: the pools' dtype.

    Returns:
      The state at step 0, with empty pools.

    Raises:
      ValueError: for a negative ``pool_size`` or a pool without ``a_shape``.
    """
    check_optimizer(g_optimizer, "g_optimizer")
    check_optimizer(d_optimizer, "d_optimizer")
    pool_size = _check_pool_size(pool_size)
    if pool_size and a_shape is None:
        raise ValueError("A pool (pool_size > 0) needs a_shape (and b_shape if it differs).")
    a_shape = _check_shape(a_shape or (), "a_shape")
    b_shape = a_shape if b_shape is None else _check_shape(b_shape, "b_shape")
    return CycleGANState(
        step=jnp.zeros((), jnp.int32),
        key=key,
        g_ab_params=g_ab_params,
        g_ba_params=g_ba_params,
        d_a_params=d_a_params,
        d_b_params=d_b_params,
        g_opt_state=g_optimizer.init((g_ab_params, g_ba_params)),
        d_opt_state=d_optimizer.init((d_a_params, d_b_params)),
        pool_a=jnp.zeros((pool_size, *a_shape), dtype),
        pool_b=jnp.zeros((pool_size, *b_shape), dtype),
        pool_a_count=jnp.zeros((), jnp.int32),
        pool_b_count=jnp.zeros((), jnp.int32),
    )


def query_image_pool(
    pool: jax.Array, count: jax.Array, images: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The CycleGAN image history buffer, as a pure function.

    Examples are taken one at a time, in batch order. While the pool is not
    full an image is stored and returned as it is. Once it is full, with
    probability ½ a uniformly drawn stored image is returned and replaced by
    the new one; otherwise the new image is returned and the pool is left as
    it is (the authors' ``ImagePool.query``).

    Args:
      pool: stored images ``[pool_size, ...]``.
      count: ``[]`` int32, how many leading entries of ``pool`` are filled.
      images: new images ``[batch, ...]``.
      key: PRNG key for the draws.

    Returns:
      ``(images_out, pool, count)``: the images for the discriminator
      ``[batch, ...]`` and the updated pool and count.

    References:
      Zhu et al. 2017, sec. 4 ("Training details"); Shrivastava et al.,
      "Learning from Simulated and Unsupervised Images through Adversarial
      Training", CVPR 2017, sec. 3.3.
    """
    size = pool.shape[0]
    if size == 0:
        return images, pool, count
    keys = jax.random.split(key, images.shape[0])

    def one(carry, inputs):
        pool, count = carry
        image, k = inputs
        k_swap, k_index = jax.random.split(k)
        filling = count < size
        swap = jnp.logical_and(~filling, jax.random.uniform(k_swap) > 0.5)
        index = jnp.where(filling, count, jax.random.randint(k_index, (), 0, size))
        stored = pool[index]
        pool = pool.at[index].set(jnp.where(filling | swap, image, stored))
        count = jnp.where(filling, count + 1, count)
        return (pool, count), jnp.where(swap, stored, image)

    (pool, count), out = lax.scan(one, (pool, count), (images.astype(pool.dtype), keys))
    return out.astype(images.dtype), pool, count


def make_cyclegan_train_step(
    *,
    generator_ab: Callable,
    generator_ba: Callable,
    discriminator_a: Callable,
    discriminator_b: Callable,
    g_optimizer: optax.GradientTransformation,
    d_optimizer: optax.GradientTransformation,
    cycle_weight: float = 10.0,
    identity_weight: float = 0.0,
    adversarial_weight: float = 1.0,
    loss: str | tuple[Callable, Callable] = "least_squares",
    pool_size: int = 0,
    axis_name: str | None = None,
    shared_generator_params: bool = False,
) -> Callable[[CycleGANState, dict[str, jax.Array]], tuple[CycleGANState, dict[str, jax.Array]]]:
    """Builds a CycleGAN train step ``(state, batch) -> (state, metrics)``.

    The generators minimise (Zhu et al., eq. 3 and sec. 5.2)::

        adversarial_weight · (g_loss(D_B(G(a))) + g_loss(D_A(F(b))))
          + cycle_weight · (‖F(G(a)) − a‖₁ + ‖G(F(b)) − b‖₁)
          + identity_weight · (‖G(b) − b‖₁ + ‖F(a) − a‖₁)

    with ‖·‖₁ the mean absolute error (:func:`jgan.losses.cycle_consistency_loss`),
    and each discriminator minimises ``d_loss`` of its real images against
    the generated ones: ``d_loss(D_A(a), D_A(F(b)))`` and
    ``d_loss(D_B(b), D_B(G(a)))``.

    Scale of the least-squares family: jgan's
    ``least_squares_generator_loss`` is ½E(D(G(x)) − 1)² (Mao et al.'s
    convention), while Zhu et al.'s generator term is E(D(G(x)) − 1)²
    without the ½. The paper's objective with λ = 10 is therefore
    ``adversarial_weight=2.0, cycle_weight=10.0`` (or, equivalently up to an
    overall factor ½ that Adam ignores, the defaults with ``cycle_weight=5``).
    The discriminators' ½E(D(x) − 1)² + ½E D(G(z))² equals the authors' (they
    halve the sum of the two MSE terms).

    Args:
      generator_ab: G, ``(g_ab_params, a) -> fake_b`` with ``a``
        ``[batch, *a_shape]`` and ``fake_b`` ``[batch, *b_shape]``.
      generator_ba: F, ``(g_ba_params, b) -> fake_a``.
      discriminator_a: D_A, ``(d_a_params, images_a) -> logits`` ``[batch]``,
        ``[batch, 1]`` or a patch map ``[batch, ...]``.
      discriminator_b: D_B, likewise on B images.
      g_optimizer: one optax transformation over ``(g_ab_params,
        g_ba_params)``.
      d_optimizer: one optax transformation over ``(d_a_params, d_b_params)``.
      cycle_weight: λ of the cycle-consistency loss (10 in the paper).
      identity_weight: weight of the identity loss; 0 turns it off (the
        paper's setting for photo-painting is 0.5·λ, i.e. 5 with λ = 10).
        Needs a and b of the same image shape (G is applied to b).
      adversarial_weight: weight of the two generators' adversarial losses.
      loss: a family name of ``jgan.steps.LOSSES`` (``"least_squares"``, the
        paper's; ``"non_saturating"``, ``"hinge"``, ...) or a pair of
        callables ``(d_loss(real_out, fake_out), g_loss(fake_out))`` of
        flattened outputs, as in ``jgan.steps.make_train_step``.
      pool_size: the size of each image history buffer (the paper's 50; 0
        turns it off and the discriminators see the latest generated
        images). The state must come from ``init_cyclegan_state`` with the
        same ``pool_size``. Under ``axis_name`` the pool holds the global
        batch's images, identical on every device.
      axis_name: the mapped axis of ``jax.pmap`` / ``shard_map``: gradients
        and metrics are averaged across it (data parallelism; the batch is
        split across devices).
      shared_generator_params: G and F read one parameter tree,
        ``state.g_ab_params`` (``state.g_ba_params`` is ``None``): both
        ``generator_ab`` and ``generator_ba`` are called with it, and the
        gradients of a leaf both use (a shared encoder's) add up. The
        generators' optimizer then runs over ``(g_ab_params, None)``. See the
        module docstring and :func:`jgan.models.make_shared_generators`.

    Returns:
      ``train_step(state, batch) -> (new_state, metrics)`` with ``batch`` a
      dict ``{"a": [batch, *a_shape], "b": [batch, *b_shape]}`` (unpaired; the
      two batch sizes may differ). ``metrics`` is a flat dict of scalars:
      ``g_loss`` (the generators' whole objective), ``g_ab_loss`` and
      ``g_ba_loss`` (adversarial losses of G and F), ``cycle_loss`` (the sum
      of both directions, unweighted), ``cycle_a`` and ``cycle_b``,
      ``identity_loss`` (when ``identity_weight > 0``), ``d_a_loss`` and
      ``d_b_loss``, ``d_a_real``, ``d_a_fake``, ``d_b_real``, ``d_b_fake``
      (mean outputs; probabilities for the sigmoid-based families),
      ``g_grad_norm`` and ``d_grad_norm`` (of each pair), and ``nonfinite``
      (1 if a loss or gradient was not finite).

    Raises:
      ValueError / TypeError: here for bad hyper-parameters; at trace time for
      a bad batch, generators whose outputs do not have the target domain's
      image shape, identity loss on domains of different shapes, a
      discriminator output without the batch axis, a state whose pools do
      not match ``pool_size``, or a state whose ``g_ba_params`` is ``None``
      where ``shared_generator_params`` is off, or is not ``None`` where it
      is on.

    References:
      Zhu, Park, Isola, Efros, "Unpaired Image-to-Image Translation using
      Cycle-Consistent Adversarial Networks", ICCV 2017, eq. 1-3, sec. 4
      (least-squares loss, image pool) and sec. 5.2 (identity loss).
      Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017.
    """
    family = L.loss_family(loss)
    if family.relativistic:
        raise ValueError(
            "loss: a relativistic family compares with the other batch's mean outputs, which the"
            " CycleGAN step does not pass to the generators' loss; use least_squares (the"
            " paper's), non_saturating, hinge or wasserstein."
        )
    for name, fn in (("generator_ab", generator_ab), ("generator_ba", generator_ba)):
        check_callable(fn, name, "(params, x) -> y")
    for name, fn in (("discriminator_a", discriminator_a), ("discriminator_b", discriminator_b)):
        check_callable(fn, name, "(params, x) -> logits")
    check_optimizer(g_optimizer, "g_optimizer")
    check_optimizer(d_optimizer, "d_optimizer")
    if axis_name is not None and not isinstance(axis_name, str):
        raise TypeError(f"axis_name must be a str or None, got {type(axis_name).__name__} {axis_name!r}.")
    cycle_weight = check_nonnegative(cycle_weight, "cycle_weight")
    identity_weight = check_nonnegative(identity_weight, "identity_weight")
    adversarial_weight = check_nonnegative(adversarial_weight, "adversarial_weight")
    pool_size = _check_pool_size(pool_size)
    shared_generator_params = check_bool(shared_generator_params, "shared_generator_params")

    def outputs(disc, params, x, what):
        out = jnp.asarray(disc(params, x))
        if out.ndim < 1 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"{what} returned outputs of shape {out.shape} for {x.shape[0]} images;"
                " expected [batch], [batch, 1] or a patch map [batch, ...]."
            )
        return out.reshape(-1)

    def mean_output(out):
        return jnp.mean(jax.nn.sigmoid(out)) if family.on_logits else jnp.mean(out)

    def translate(gen, params, x, target, what):
        out = gen(params, x)
        if out.shape[1:] != target.shape[1:] or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"{what} maps images {x.shape} to {out.shape}; expected"
                f" [{x.shape[0]}, *{tuple(target.shape[1:])}], the shape of the target domain's images."
            )
        return out

    def g_objective(g_params, d_params, a, b):
        g_ab, g_ba = g_params
        if shared_generator_params:
            g_ba = g_ab  # One tree read by both: its gradient sums G's and F's uses.
        d_a, d_b = d_params
        fake_b = translate(generator_ab, g_ab, a, b, "generator_ab (G: A -> B)")
        fake_a = translate(generator_ba, g_ba, b, a, "generator_ba (F: B -> A)")
        rec_a = translate(generator_ba, g_ba, fake_b, a, "generator_ba (F: B -> A)")
        rec_b = translate(generator_ab, g_ab, fake_a, b, "generator_ab (G: A -> B)")
        metrics = {
            "g_ab_loss": family.g_loss(outputs(discriminator_b, d_b, fake_b, "discriminator_b")),
            "g_ba_loss": family.g_loss(outputs(discriminator_a, d_a, fake_a, "discriminator_a")),
            "cycle_a": L.cycle_consistency_loss(a, rec_a),
            "cycle_b": L.cycle_consistency_loss(b, rec_b),
        }
        metrics["cycle_loss"] = metrics["cycle_a"] + metrics["cycle_b"]
        total = adversarial_weight * (metrics["g_ab_loss"] + metrics["g_ba_loss"])
        total = total + cycle_weight * metrics["cycle_loss"]
        if identity_weight > 0:
            if a.shape[1:] != b.shape[1:]:
                raise ValueError(
                    f"identity_weight > 0 feeds b to G: A -> B, so domains A {a.shape[1:]} and"
                    f" B {b.shape[1:]} must have the same image shape."
                )
            idt_b = translate(generator_ab, g_ab, b, b, "generator_ab (G: A -> B)")
            idt_a = translate(generator_ba, g_ba, a, a, "generator_ba (F: B -> A)")
            metrics["identity_loss"] = L.cycle_consistency_loss(b, idt_b) + L.cycle_consistency_loss(a, idt_a)
            total = total + identity_weight * metrics["identity_loss"]
        metrics["g_loss"] = total
        return total, (metrics, fake_a, fake_b)

    def d_objective(d_params, a, b, fake_a, fake_b):
        d_a, d_b = d_params
        real_a = outputs(discriminator_a, d_a, a, "discriminator_a")
        out_fake_a = outputs(discriminator_a, d_a, fake_a, "discriminator_a")
        real_b = outputs(discriminator_b, d_b, b, "discriminator_b")
        out_fake_b = outputs(discriminator_b, d_b, fake_b, "discriminator_b")
        metrics = {
            "d_a_loss": family.d_loss(real_a, out_fake_a),
            "d_b_loss": family.d_loss(real_b, out_fake_b),
            "d_a_real": mean_output(real_a),
            "d_a_fake": mean_output(out_fake_a),
            "d_b_real": mean_output(real_b),
            "d_b_fake": mean_output(out_fake_b),
        }
        return metrics["d_a_loss"] + metrics["d_b_loss"], metrics

    def pool(pool_images, count, fake, key):
        """Queries a pool with the global batch and keeps this device's rows."""
        if pool_size == 0:
            return fake, pool_images, count
        out, pool_images, count = query_image_pool(pool_images, count, gather_rows(fake, axis_name), key)
        return local_rows(out, fake, axis_name), pool_images, count

    def train_step(state: CycleGANState, batch: dict[str, jax.Array]) -> tuple[CycleGANState, dict[str, jax.Array]]:
        if not isinstance(state, CycleGANState):
            raise TypeError(f"state must be a CycleGANState, got {type(state).__name__}.")
        check_mapped_axis(axis_name, "The CycleGAN step")
        a, b = _split_batch(batch)
        _check_pools(state, a, b, pool_size)
        _check_generator_params(state, shared_generator_params)

        g_params = (state.g_ab_params, state.g_ba_params)
        d_params = (state.d_a_params, state.d_b_params)
        # Per-device gradients, averaged below: see _per_device.
        (_, (g_metrics, fake_a, fake_b)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(
            mark_varying(g_params, axis_name), d_params, a, b
        )
        key_a, key_b = jax.random.split(jax.random.fold_in(state.key, state.step))
        fake_a, pool_a, count_a = pool(state.pool_a, state.pool_a_count, lax.stop_gradient(fake_a), key_a)
        fake_b, pool_b, count_b = pool(state.pool_b, state.pool_b_count, lax.stop_gradient(fake_b), key_b)
        d_grads, d_metrics = jax.grad(d_objective, has_aux=True)(
            mark_varying(d_params, axis_name), a, b, fake_a, fake_b
        )

        g_grads = pmean_floats(g_grads, axis_name)
        d_grads = pmean_floats(d_grads, axis_name)
        g_updates, g_opt_state = g_optimizer.update(g_grads, state.g_opt_state, g_params)
        d_updates, d_opt_state = d_optimizer.update(d_grads, state.d_opt_state, d_params)
        g_ab_params, g_ba_params = optax.apply_updates(g_params, g_updates)
        d_a_params, d_b_params = optax.apply_updates(d_params, d_updates)

        metrics = {**g_metrics, **d_metrics}
        metrics["g_grad_norm"] = optax.tree.norm(g_grads)
        metrics["d_grad_norm"] = optax.tree.norm(d_grads)
        new_state = CycleGANState(
            step=state.step + 1,
            key=state.key,
            g_ab_params=g_ab_params,
            g_ba_params=g_ba_params,
            d_a_params=d_a_params,
            d_b_params=d_b_params,
            g_opt_state=g_opt_state,
            d_opt_state=d_opt_state,
            pool_a=pool_a,
            pool_b=pool_b,
            pool_a_count=count_a,
            pool_b_count=count_b,
        )
        return new_state, finalize_metrics(metrics, axis_name, new_state)

    return train_step


def _check_pool_size(pool_size: Any) -> int:
    return check_int(pool_size, "pool_size", minimum=0, static=True)


def _check_shape(shape: Any, name: str) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints (height, width, channels), got {shape!r}.")
    return tuple(check_int(n, f"{name}[{i}]", minimum=1) for i, n in enumerate(shape))


def _split_batch(batch: Any) -> tuple[jax.Array, jax.Array]:
    if not isinstance(batch, dict) or set(batch) != {"a", "b"}:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"A CycleGAN batch is a dict with keys 'a' and 'b'; got {keys}.")
    a, b = jnp.asarray(batch["a"]), jnp.asarray(batch["b"])
    for name, x in (("a", a), ("b", b)):
        if x.ndim < 2:
            raise ValueError(f"batch[{name!r}] must be [batch, ...] images, got shape {x.shape}.")
        if x.shape[0] == 0:
            raise ValueError(f"batch[{name!r}] is empty (shape {x.shape}).")
    return a, b


def _check_generator_params(state: CycleGANState, shared: bool) -> None:
    if shared and state.g_ba_params is not None:
        raise ValueError(
            "The step has shared_generator_params=True: state.g_ab_params holds the one tree both"
            " generators read and state.g_ba_params must be None, got a"
            f" {type(state.g_ba_params).__name__}: init_cyclegan_state(key, params, None, ...)."
        )
    if not shared and state.g_ba_params is None:
        raise ValueError(
            "state.g_ba_params is None (one generator tree for both directions): build the step"
            " with make_cyclegan_train_step(..., shared_generator_params=True)."
        )


def _check_pools(state: CycleGANState, a: jax.Array, b: jax.Array, pool_size: int) -> None:
    for name, pool_images, x in (("pool_a", state.pool_a, a), ("pool_b", state.pool_b, b)):
        if pool_images.shape[0] != pool_size:
            raise ValueError(
                f"The step has pool_size={pool_size} but the state's {name} holds"
                f" {pool_images.shape[0]} images: init_cyclegan_state(..., pool_size={pool_size})."
            )
        if pool_size and pool_images.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"The state's {name} stores images of shape {pool_images.shape[1:]}, but the"
                f" batch's are {x.shape[1:]}: give init_cyclegan_state the right a_shape / b_shape."
            )
