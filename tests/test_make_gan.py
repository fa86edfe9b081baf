"""jgan.steps.make_gan: against the frozen pre-rewrite step, and its own contract.

``tests/legacy_steps.py`` is the keyword-driven step as it was before the
composed API: an independent twin. Every configuration of tests/test_steps.py
and tests/test_multidevice.py, built three ways (the frozen twin, the kept
``make_train_step`` wrapper, and ``make_gan`` from parts), must give the same
state, bit for bit, after three jitted steps.
"""

import ast
import dataclasses
import pathlib
import pkgutil

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jgan
import legacy_steps
from jgan import data, losses as L, metrics as jmetrics, models, steps
from jgan.objectives import Adversarial, SinkhornDivergence
from jgan.penalties import R1, R2, GradientPenalty, WeightClippingState, weight_clipping
from jgan.steps import make_gan
from jgan.unroll import Unrolled

from nets import discriminator, generator, mlp, mlp_init
from tree_checks import assert_close_to_roundoff
from test_multidevice import CONFIGS as MULTIDEVICE_CONFIGS

LATENT = 3
BATCH = 16
CLASSES = 3
N_STEPS = 3


# ---------------------------------------------------------------------------
# Networks of the table: plain MLPs, conditional ones, and call counters.


def _cond_generator(p, z, y):
    return generator(p, jnp.concatenate([z, jax.nn.one_hot(y, CLASSES)], -1))


def _cond_discriminator(p, x, y):
    return discriminator(p, jnp.concatenate([x, jax.nn.one_hot(y, CLASSES)], -1))


def _counting_generator(p, s, z):
    return generator(p, z), s + 1


def _counting_discriminator(p, s, x):
    return discriminator(p, x), s + 1


def _fixed_latents(key, n):
    """A latent sampler other than N(0, I): uniform on [−1, 1]^LATENT."""
    return jax.random.uniform(key, (n, LATENT), minval=-1.0, maxval=1.0)


def _user_d_loss(real, fake):
    return jnp.mean(jnp.square(real - 2.0)) + jnp.mean(jnp.square(fake + 2.0))


def _user_g_loss(fake):
    return jnp.mean(jnp.square(fake - 2.0))


ADAM = optax.adam(1e-3)
ADAM_EPS_ROOT = optax.adam(1e-3, eps_root=1e-8)
CLIP = 0.01
SINKHORN = dict(sinkhorn_weight=0.5, sinkhorn_epsilon=0.3, sinkhorn_iterations=10)
SINKHORN_PART = SinkhornDivergence(0.5, epsilon=0.3, iterations=10)


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration: the twin's keywords and the equivalent parts.

    Attributes:
      legacy: keywords of ``make_train_step`` (both the frozen and the kept one).
      parts: keywords of ``make_gan``.
      nets: ``"plain"``, ``"conditional"`` or ``"stateful"`` (call counters).
      sliced: feed ``[d_steps, batch, ...]`` real slices.
      optimizer: both networks' optimizer (weight clipping is chained on
        the discriminator's for ``make_gan`` when ``legacy`` has ``weight_clip``).
    """

    legacy: dict
    parts: dict = dataclasses.field(default_factory=dict)
    nets: str = "plain"
    sliced: bool = False
    optimizer: optax.GradientTransformation = ADAM


CASES = {
    # The loss families the frozen step knows (the relativistic ones came later; their
    # unrolled step is checked against a twin in tests/test_unroll.py), and a user pair
    # (a LossFamily with the default flags).
    **{name: Case(dict(loss=name), dict(loss=name))
       for name, family in L.LOSS_FAMILIES.items() if not family.relativistic},
    "user_pair": Case(dict(loss=(_user_d_loss, _user_g_loss)),
                      dict(loss=L.LossFamily(_user_d_loss, _user_g_loss))),
    # k discriminator updates on one shared batch or on k slices (k = 1 on
    # a shared batch is the default, non_saturating above).
    **{f"d_steps{k}_{layout}": Case(dict(d_steps=k), dict(d_steps=k, batches=layout),
                                    sliced=layout == "sliced")
       for k in (1, 3) for layout in ("shared", "sliced") if (k, layout) != (1, "shared")},
    # Unrolled: Adam with eps_root > 0 here, plain Adam (eps_root = 0, whose
    # square roots make_gan differentiates safely) in unrolled_k3_pack2 below.
    "unroll3_eps_root": Case(dict(unroll_steps=3), dict(unroll=Unrolled(3, remat=False)), optimizer=ADAM_EPS_ROOT),
    "unroll3_first_order": Case(dict(unroll_steps=3, unroll_first_order=True),
                                dict(unroll=Unrolled(3, first_order=True))),
    # Remat, with a stateful discriminator whose state the unrolled passes leave alone.
    "unroll3_remat_stateful": Case(dict(d_steps=2, unroll_steps=3, unroll_remat=True, d_stateful=True),
                                   dict(d_steps=2, unroll=Unrolled(3, remat=True), d_stateful=True),
                                   nets="stateful"),
    # Regularisers of the discriminator (GradientPenalty alone in wgan_gp_k2,
    # R1 alone in hinge_r1_ema below).
    "gradient_penalty_target_one_sided": Case(
        dict(loss="wasserstein", gradient_penalty=10.0, gradient_penalty_target=0.5,
             gradient_penalty_one_sided=True),
        dict(loss="wasserstein", d_regularizers=[GradientPenalty(10.0, target=0.5, one_sided=True)])),
    "r2": Case(dict(r2=4.0), dict(d_regularizers=[R2(4.0)])),
    "three_penalties": Case(dict(loss="wasserstein", gradient_penalty=10.0, r1=2.0, r2=4.0),
                            dict(loss="wasserstein", d_regularizers=[GradientPenalty(10.0), R1(2.0), R2(4.0)])),
    # WGAN: clipping is optax chaining in make_gan.
    "weight_clip": Case(dict(loss="wasserstein", weight_clip=CLIP, d_steps=3),
                        dict(loss="wasserstein", d_steps=3,
                             d_optimizer=optax.chain(ADAM, weight_clipping(CLIP)))),
    "pack2": Case(dict(pack=2), dict(pack=2)),
    "conditional_k2": Case(dict(d_steps=2), dict(d_steps=2), nets="conditional"),
    "conditional_k2_sliced": Case(dict(d_steps=2), dict(d_steps=2, batches="sliced"),
                                  nets="conditional", sliced=True),
    "stateful_k3": Case(dict(d_steps=3, g_stateful=True, d_stateful=True),
                        dict(d_steps=3, g_stateful=True, d_stateful=True), nets="stateful"),
    # Generator objectives: Sinkhorn alone (adversarial_weight = 0 is the
    # objective without an Adversarial part) and both.
    "sinkhorn_only": Case(dict(adversarial_weight=0.0, **SINKHORN), dict(g_objectives=[SINKHORN_PART])),
    "sinkhorn_and_adversarial": Case(dict(SINKHORN), dict(g_objectives=[Adversarial(), SINKHORN_PART])),
    "latent_sampler": Case(dict(latent_sampler=_fixed_latents), dict(prior=_fixed_latents)),
    # The configurations of tests/test_multidevice.py, on one device (EMA in
    # hinge_r1_ema).
    "wgan_gp_k2": Case(dict(loss="wasserstein", gradient_penalty=10.0, d_steps=2),
                       dict(loss="wasserstein", d_regularizers=[GradientPenalty(10.0)], d_steps=2)),
    "unrolled_k3_pack2": Case(dict(loss="non_saturating", unroll_steps=3, pack=2),
                              dict(loss="non_saturating", unroll=Unrolled(3, remat=False), pack=2)),
    "hinge_r1_ema": Case(dict(loss="hinge", r1=1.0, ema_decay=0.9),
                         dict(loss="hinge", d_regularizers=[R1(1.0)], ema_decay=0.9)),
}


def _networks(case):
    """``(generator, discriminator, g_params, d_params, model_states)`` of a case."""
    key = jax.random.key(0)
    pack = case.legacy.get("pack", 1)
    extra = CLASSES if case.nets == "conditional" else 0
    g_params = mlp_init(jax.random.fold_in(key, 1), [LATENT + extra, 16, 2])
    d_params = mlp_init(jax.random.fold_in(key, 2), [2 * pack + extra, 16, 1])
    states = {}
    if case.nets == "conditional":
        return _cond_generator, _cond_discriminator, g_params, d_params, states
    if case.nets == "stateful":
        if case.legacy.get("g_stateful"):
            states["g_model_state"] = jnp.zeros((), jnp.int32)
        if case.legacy.get("d_stateful"):
            states["d_model_state"] = jnp.zeros((), jnp.int32)
        gen = _counting_generator if "g_model_state" in states else generator
        disc = _counting_discriminator if "d_model_state" in states else discriminator
        return gen, disc, g_params, d_params, states
    return generator, discriminator, g_params, d_params, states


def _batch(case, step):
    k = case.legacy.get("d_steps", 1)
    n = BATCH * k if case.sliced else BATCH
    x = jax.random.normal(jax.random.fold_in(jax.random.key(7), step), (n, 2)) + 1.0
    labels = jnp.arange(n, dtype=jnp.int32) % CLASSES
    if case.sliced:
        x, labels = x.reshape(k, BATCH, 2), labels.reshape(k, BATCH)
    return {"x": x, "label": labels} if case.nets == "conditional" else x


def _three_ways(case):
    """The (initial state, step) of the frozen twin, the kept wrapper and make_gan."""
    gen, disc, g_params, d_params, states = _networks(case)
    key = jax.random.key(0)
    opt = case.optimizer
    ema = "ema_decay" in case.legacy
    legacy_kwargs = dict(case.legacy)
    if "latent_sampler" not in legacy_kwargs:
        legacy_kwargs["latent_dim"] = LATENT
    common = dict(generator=gen, discriminator=disc, g_optimizer=opt, d_optimizer=opt)
    built = []
    for module in (legacy_steps, steps):
        state = module.init_state(key, g_params, d_params, g_optimizer=opt, d_optimizer=opt, ema=ema, **states)
        built.append((state, module.make_train_step(**common, **legacy_kwargs)))
    built[0] = (steps.GANState(*built[0][0]), _as_gan_state(built[0][1]))
    parts = {**common, "prior": LATENT, **case.parts}
    gan = make_gan(**parts)
    built.append((gan.init(key, g_params, d_params, **states), gan.step))
    return built


def _as_gan_state(legacy_step):
    """The twin's step on jgan's GANState (the twin has its own NamedTuple of the same fields)."""

    def step(state, batch):
        # (jgan's GANState has since gained d_regularizer_state, None without stateful regularisers.)
        assert state.d_regularizer_state is None
        new_state, metrics = legacy_step(legacy_steps.GANState(*state[: len(legacy_steps.GANState._fields)]), batch)
        return steps.GANState(*new_state), metrics

    return step


def _train_together(built, case):
    """``N_STEPS`` steps of each way, each step of the three in one jitted program.

    (One program compiles in about half the time of three; the three steps
    only share the batch.)
    """
    step_fns = [step for _, step in built]
    step_all = jax.jit(lambda states, batch: [step(s, batch) for step, s in zip(step_fns, states)])
    states = [state for state, _ in built]
    histories = [[] for _ in built]
    for i in range(N_STEPS):
        outputs = step_all(states, _batch(case, i))
        states = [state for state, _ in outputs]
        for history, (_, metrics) in zip(histories, outputs):
            history.append(metrics)
    return list(zip(states, histories))


def _as_legacy(state, case):
    """make_gan's state with the clipping's (empty) state dropped, as the twin keeps it."""
    if "weight_clip" not in case.legacy:
        return state
    assert state.d_opt_state[1] == WeightClippingState()
    return state._replace(d_opt_state=state.d_opt_state[0])


def test_the_table_holds_the_multidevice_configurations():
    for name, config in MULTIDEVICE_CONFIGS.items():
        assert CASES[name].legacy == config, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_make_gan_and_the_wrapper_equal_the_frozen_step_bit_for_bit(name):
    case = CASES[name]
    built = _three_ways(case)
    (legacy_init, _), (kept_init, _), (gan_init, _) = built
    chex.assert_trees_all_equal(kept_init, legacy_init)
    chex.assert_trees_all_equal(_as_legacy(gan_init, case), legacy_init)

    (expected, expected_metrics), (kept, kept_metrics), (composed, composed_metrics) = _train_together(built, case)
    assert int(expected.step) == N_STEPS
    chex.assert_tree_all_finite((expected.g_params, expected.d_params))
    # Exact with one discriminator update. With d_steps > 1 the updates are now
    # unrolled into straight-line code (the frozen step ran them in a while loop),
    # which XLA fuses differently: equal to a few units in the last place.
    same = chex.assert_trees_all_equal if case.legacy.get("d_steps", 1) == 1 else assert_close_to_roundoff
    same(kept, expected)
    same(_as_legacy(composed, case), expected)
    # The metrics too (the twin's nonfinite covered only the metrics; both are 0 here).
    # sample_scale is new (a divergence signal, no part of any gradient); the rest equal.
    for kept_step, composed_step, expected_step in zip(kept_metrics, composed_metrics, expected_metrics):
        for metrics in (kept_step, composed_step):
            assert set(metrics) == set(expected_step) | {"sample_scale"}
            same({k: metrics[k] for k in expected_step}, expected_step)
        chex.assert_trees_all_equal(kept_step["sample_scale"], composed_step["sample_scale"])


def test_weight_clipping_inside_an_unrolled_discriminator():
    """Clipping chained into D's optimizer applies to the unrolled updates and differentiates."""
    key = jax.random.key(0)
    results = []
    for first_order in (False, True):
        gan = make_gan(generator=generator, discriminator=discriminator, g_optimizer=ADAM,
                       d_optimizer=optax.chain(optax.sgd(0.5), weight_clipping(0.5)), prior=LATENT,
                       loss="wasserstein", unroll=Unrolled(2, first_order=first_order))
        state = gan.init(key, mlp_init(key, [LATENT, 8, 2]), mlp_init(key, [2, 8, 1]))
        state, metrics = jax.jit(gan.step)(state, jnp.ones((BATCH, 2)))
        assert float(metrics["nonfinite"]) == 0.0
        assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(state.d_params)) <= 0.5
        results.append(float(metrics["g_grad_norm"]))
    # The exact gradient flows through the clipped updates; the first-order one does not.
    assert not np.isclose(results[0], results[1], rtol=1e-3)


# ---------------------------------------------------------------------------
# sample: the EMA generator's draws, or the generator as sample_generator calls it.


def _plain_gan(**kwargs):
    key = jax.random.key(0)
    gan = make_gan(generator=generator, discriminator=discriminator, g_optimizer=optax.adam(1e-2),
                   d_optimizer=optax.adam(1e-2), prior=LATENT, **kwargs)
    state = gan.init(key, mlp_init(jax.random.fold_in(key, 1), [LATENT, 16, 2]),
                     mlp_init(jax.random.fold_in(key, 2), [2, 16, 1]))
    return gan, state


def _run(gan, state, n_steps=5):
    step = jax.jit(gan.step)
    for i in range(n_steps):
        state, _ = step(state, jax.random.normal(jax.random.key(i), (BATCH, 2)) + 1.0)
    return state


def _normal_latents(key, n):
    return jax.random.normal(key, (n, LATENT))


def test_sample_draws_from_the_ema_generator():
    gan, state = _plain_gan(ema_decay=0.9)
    state = _run(gan, state)
    key = jax.random.key(3)
    samples = gan.sample(state, key, 64)
    assert samples.shape == (64, 2)
    z = _normal_latents(key, 64)  # The prior of make_gan(prior=LATENT).
    np.testing.assert_array_equal(samples, generator(state.g_ema_params, z))
    # The average lags the weights, so the two generators differ.
    assert np.max(np.abs(samples - generator(state.g_params, z))) > 1e-3


def test_sample_without_ema_draws_from_the_generator():
    gan, state = _plain_gan()
    state = _run(gan, state)
    key = jax.random.key(3)
    np.testing.assert_array_equal(gan.sample(state, key, 64), generator(state.g_params, _normal_latents(key, 64)))


def test_sample_passes_labels_to_a_conditional_generator():
    key = jax.random.key(0)
    gan = make_gan(generator=_cond_generator, discriminator=_cond_discriminator, g_optimizer=ADAM,
                   d_optimizer=ADAM, prior=LATENT)
    state = gan.init(key, mlp_init(key, [LATENT + CLASSES, 8, 2]), mlp_init(key, [2 + CLASSES, 8, 1]))
    labels = jnp.arange(6) % CLASSES
    np.testing.assert_array_equal(gan.sample(state, key, 6, labels=labels),
                                  _cond_generator(state.g_params, _normal_latents(key, 6), labels))
    with pytest.raises(ValueError, match="labels must have n = 5 rows"):
        gan.sample(state, key, 5, labels=labels)


class BatchNormMLP(nn.Module):
    """Dense → BatchNorm → ReLU → Dense, with a ``train`` argument."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool = True):
        h = nn.Dense(16)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(h)
        return nn.Dense(self.features)(nn.relu(h))


def test_sample_uses_the_sample_generator_of_a_stateful_generator():
    """BatchNorm on its running averages (inference mode), not on the sample's own statistics."""
    key = jax.random.key(0)
    module = BatchNormMLP(features=2)
    g_params, g_state = models.init_model(module, jax.random.fold_in(key, 1), jnp.zeros((1, LATENT)))
    train_apply = models.make_apply(module, stateful=True)
    eval_apply = models.make_apply(module, stateful=True, train=False)
    d_params = mlp_init(jax.random.fold_in(key, 2), [2, 16, 1])
    common = dict(generator=train_apply, discriminator=discriminator, g_optimizer=ADAM,
                  d_optimizer=ADAM, prior=LATENT, g_stateful=True)
    gan = make_gan(**common, sample_generator=eval_apply)
    state = _run(gan, gan.init(key, g_params, d_params, g_model_state=g_state))
    # The running averages moved away from their initial (0, 1).
    assert not np.allclose(state.g_model_state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)
    sample_key = jax.random.key(3)
    z = _normal_latents(sample_key, 64)
    samples = gan.sample(state, sample_key, 64)
    expected, _ = eval_apply(state.g_params, state.g_model_state, z)
    np.testing.assert_array_equal(samples, expected)
    in_train_mode, _ = train_apply(state.g_params, state.g_model_state, z)
    assert np.max(np.abs(samples - in_train_mode)) > 1e-3
    # Without sample_generator, sample calls the generator itself (batch statistics).
    np.testing.assert_array_equal(make_gan(**common).sample(state, sample_key, 64), in_train_mode)


# ---------------------------------------------------------------------------
# Non-finite updates: flagged on the step that made them, and skippable.


# The learning rate 1e39 overflows float32 as it is cast: that is the point.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_an_overflowing_update_is_flagged_on_the_step_that_produced_it():
    key = jax.random.key(0)
    gan = make_gan(generator=generator, discriminator=discriminator, g_optimizer=optax.sgd(1e39),
                   d_optimizer=ADAM, prior=LATENT)
    state = gan.init(key, mlp_init(key, [LATENT, 8, 2]), mlp_init(key, [2, 8, 1]))
    batch = jax.random.normal(jax.random.key(1), (BATCH, 2))
    new_state, metrics = jax.jit(gan.step)(state, batch)
    # The losses and gradients were finite; the update (lr · g in float32) was not.
    for name in ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm"):
        assert np.isfinite(metrics[name]), name
    assert not all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(new_state.g_params))
    assert float(metrics["nonfinite"]) == 1.0
    with pytest.raises(steps.NonFiniteError):
        steps.check_finite(metrics)

    kept, metrics = jax.jit(steps.skip_nonfinite(gan.step))(state, batch)
    assert float(metrics["skipped"]) == 1.0
    chex.assert_trees_all_equal(kept, state)


def test_skip_nonfinite_keeps_a_healthy_update():
    gan, state = _plain_gan()
    batch = jax.random.normal(jax.random.key(1), (BATCH, 2))
    guarded, metrics = jax.jit(steps.skip_nonfinite(gan.step))(state, batch)
    assert float(metrics["skipped"]) == 0.0
    assert float(metrics["nonfinite"]) == 0.0
    chex.assert_trees_all_equal(guarded, jax.jit(gan.step)(state, batch)[0])
    assert int(guarded.step) == 1


# ---------------------------------------------------------------------------
# Learning: the unrolled GAN of Metz et al. with Adam's defaults and ReLU nets.


def _arrays(state):
    """The state without its PRNG key (which has no float values to check)."""
    return state._replace(key=None)


def _relu_generator(p, z):
    return mlp(p, z, activation=jax.nn.relu)


def _relu_discriminator(p, x):
    return mlp(p, x, activation=jax.nn.relu)[:, 0]


@pytest.mark.parametrize("pack", [1, 2])
def test_unrolled_gan_with_plain_adam_and_relu_covers_the_ring(pack):
    """K = 5, optax.adam(1e-3, b1=0.5) (eps_root = 0) for both networks, ReLU MLPs with biases.

    Dead ReLU units give exactly zero gradients and second moments, where √ν
    has an infinite derivative; the unrolled update must stay finite anyway
    (every parameter after every step), and the generator must spread over
    the ring. Coverage is counted with a generous radius, 0.3 (3 × 0.1),
    still far below the 1.53 between neighbouring modes: 300 steps place the
    samples on the modes, not yet within the data's own std (0.02).
    """
    latent, width, batch, n_steps = 8, 64, 256, 300
    key = jax.random.key(0)
    g_params = mlp_init(jax.random.fold_in(key, 1), [latent, width, width, 2])
    d_params = mlp_init(jax.random.fold_in(key, 2), [2 * pack, width, width, 1])
    adam = optax.adam(1e-3, b1=0.5)
    gan = make_gan(generator=_relu_generator, discriminator=_relu_discriminator, g_optimizer=adam,
                   d_optimizer=adam, prior=latent, unroll=Unrolled(5), pack=pack)
    state = gan.init(key, g_params, d_params)
    centers = data.ring_centers(modes=8, radius=2.0)

    def coverage(state):
        samples = gan.sample(state, jax.random.key(5), 2000)
        return jmetrics.mode_coverage(samples, centers, std=0.1, threshold=3.0)

    assert int(coverage(state).modes) <= 2  # Control: the untrained generator's samples sit together.

    @jax.jit
    def train(state):
        def body(state, i):
            x = data.ring(jax.random.fold_in(jax.random.key(1), i), batch, modes=8, radius=2.0, std=0.02)
            return gan.step(state, x)

        return jax.lax.scan(body, state, jnp.arange(n_steps))

    state, history = train(state)
    assert float(jnp.max(history["nonfinite"])) == 0.0
    chex.assert_tree_all_finite(_arrays(state))
    result = coverage(state)
    assert int(result.modes) >= 6, result
    assert float(result.high_quality) >= 0.05, result


# ---------------------------------------------------------------------------
# Flax: an NNX GAN and a linen GAN through the adapters.


class NNXGenerator(nnx.Module):
    def __init__(self, *, rngs):
        self.hidden = nnx.Linear(LATENT, 16, rngs=rngs)
        self.out = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, z):
        return self.out(nnx.relu(self.hidden(z)))


class NNXDiscriminator(nnx.Module):
    def __init__(self, *, rngs):
        self.hidden = nnx.Linear(2, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, momentum=0.5, rngs=rngs)
        self.out = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.leaky_relu(self.norm(self.hidden(x))))[:, 0]


class LinenGenerator(nn.Module):
    """A linen MLP without a ``train`` argument."""

    @nn.compact
    def __call__(self, z):
        return nn.Dense(2)(nn.relu(nn.Dense(16)(z)))


class LinenDiscriminator(nn.Module):
    """Dense → BatchNorm → Dense, with a ``train`` argument."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(nn.Dense(16)(x))
        return nn.Dense(1)(nn.leaky_relu(h))[:, 0]


def _train_toy(gan, state, n_steps=50):
    """``n_steps`` on N((2, −1), 0.5² I) in one scan; returns the state and the metrics."""

    @jax.jit
    def train(state):
        def body(state, i):
            x = jnp.array([2.0, -1.0]) + 0.5 * jax.random.normal(jax.random.fold_in(jax.random.key(1), i), (64, 2))
            return gan.step(state, x)

        return jax.lax.scan(body, state, jnp.arange(n_steps))

    return train(state)


def _assert_trained(initial, state, history):
    assert float(jnp.max(history["nonfinite"])) == 0.0
    chex.assert_tree_all_finite(_arrays(state))
    d_loss = np.asarray(history["d_loss"])
    # The loss moves. (It stays near log 4: BatchNorm normalises the real and
    # the generated batch each with its own statistics, hiding their means.)
    assert np.ptp(d_loss) > 0.01, d_loss
    for name in ("g_params", "d_params", "d_model_state"):
        before, after = getattr(initial, name), getattr(state, name)
        chex.assert_trees_all_equal_structs(before, after)
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
            assert not np.allclose(a, b), name  # every leaf moved (BatchNorm statistics included)


def test_an_nnx_gan_trains_through_make_gan():
    g_module = NNXGenerator(rngs=nnx.Rngs(0))
    d_module = NNXDiscriminator(rngs=nnx.Rngs(1))
    g_params, g_state = models.split_nnx_module(g_module)
    d_params, d_state = models.split_nnx_module(d_module)
    assert g_state == {} and d_state  # BatchNorm statistics are the discriminator's model state.
    adam = optax.adam(1e-2, b1=0.5)
    gan = make_gan(generator=models.make_nnx_apply(g_module), discriminator=models.make_nnx_apply(d_module),
                   g_optimizer=adam, d_optimizer=adam, prior=LATENT, d_stateful=True)
    initial = gan.init(jax.random.key(0), g_params, d_params, d_model_state=d_state)
    state, history = _train_toy(gan, initial)
    _assert_trained(initial, state, history)
    # The trained module back in NNX: it computes what the apply function does.
    trained = models.merge_nnx_module(d_module, state.d_params, state.d_model_state)
    trained.eval()
    x = jnp.ones((4, 2))
    evaluate = models.make_nnx_apply(d_module, train=False)
    np.testing.assert_allclose(trained(x), evaluate(state.d_params, state.d_model_state, x)[0], rtol=1e-6)


def test_a_linen_gan_with_batch_norm_trains_through_make_gan():
    key = jax.random.key(0)
    g_module, d_module = LinenGenerator(), LinenDiscriminator()
    g_params, g_state = models.init_model(g_module, jax.random.fold_in(key, 1), jnp.zeros((1, LATENT)))
    d_params, d_state = models.init_model(d_module, jax.random.fold_in(key, 2), jnp.zeros((1, 2)))
    assert g_state == {} and "batch_stats" in d_state
    adam = optax.adam(1e-2, b1=0.5)
    gan = make_gan(generator=models.make_apply(g_module, stateful=False),
                   discriminator=models.make_apply(d_module, stateful=True),
                   g_optimizer=adam, d_optimizer=adam, prior=LATENT, d_stateful=True)
    initial = gan.init(key, g_params, d_params, d_model_state=d_state)
    state, history = _train_toy(gan, initial)
    _assert_trained(initial, state, history)


# ---------------------------------------------------------------------------
# Bad input: a clear error that names the argument.


def _bad(**kwargs):
    common = dict(generator=generator, discriminator=discriminator, g_optimizer=ADAM,
                  d_optimizer=ADAM, prior=LATENT)
    return make_gan(**{**common, **kwargs})


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(d_regularizers=[3.0]), TypeError, r"d_regularizers\[0\] must be a jgan.penalties.DiscriminatorRegularizer"),
    (dict(d_regularizers=GradientPenalty(10.0)), TypeError, "d_regularizers must be a list or tuple"),
    (dict(d_regularizers=[GradientPenalty(1.0), "r1"]), TypeError, r"d_regularizers\[1\]"),
    (dict(g_objectives=["adversarial"]), TypeError, r"g_objectives\[0\] must be a jgan.objectives.GeneratorObjective"),
    (dict(g_objectives=Adversarial()), TypeError, "g_objectives must be a list or tuple"),
    (dict(g_objectives=[]), ValueError, "g_objectives is empty"),
    (dict(g_objectives="adversarial"), TypeError, "g_objectives must be a list or tuple"),
    (dict(unroll=5), TypeError, "unroll must be a jgan.unroll.Unrolled"),
    (dict(prior="normal"), TypeError, "prior must be an int"),
    (dict(prior=0), ValueError, r"prior \(a latent dimension\) must be >= 1"),
    (dict(batches="stacked"), ValueError, "batches must be 'shared'"),
    (dict(loss="nonsaturating"), ValueError, "Unknown loss 'nonsaturating'"),
    (dict(d_steps=0), ValueError, "d_steps must be >= 1"),
    (dict(pack=0), ValueError, "pack must be >= 1"),
    (dict(ema_decay=1.0), ValueError, r"ema_decay must be in \[0.0, 1.0\)"),
    (dict(g_optimizer=optax.adam), TypeError, "g_optimizer must be an optax.GradientTransformation"),
    (dict(discriminator=None), TypeError, "discriminator must be a callable"),
    (dict(sample_generator=3), TypeError, "sample_generator must be a callable"),
])
def test_bad_options_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        _bad(**kwargs)


def test_a_batch_that_does_not_fit_the_declared_layout():
    key = jax.random.key(0)
    params = mlp_init(key, [LATENT, 8, 2]), mlp_init(key, [2, 8, 1])
    x = jnp.ones((2, BATCH, 2))
    shared = _bad(d_steps=2)
    with pytest.raises(ValueError, match="batches='shared'"):
        shared.step(shared.init(key, *params), x)  # Slices given to a shared-batch GAN.
    sliced = _bad(d_steps=2, batches="sliced")
    state = sliced.init(key, *params)
    sliced.step(state, x)  # The declared layout works.
    with pytest.raises(ValueError, match=r"batches='sliced' takes real data \[d_steps=2"):
        sliced.step(state, x[0])  # One batch given to a sliced GAN.
    with pytest.raises(ValueError, match=r"batches='sliced' takes real data \[d_steps=2"):
        sliced.step(state, jnp.ones((3, BATCH, 2)))  # The wrong k.
    conditional = _bad(generator=_cond_generator, discriminator=_cond_discriminator, d_steps=2,
                       batches="sliced")
    state = conditional.init(key, mlp_init(key, [LATENT + CLASSES, 8, 2]), mlp_init(key, [2 + CLASSES, 8, 1]))
    labels = jnp.zeros((2, BATCH), jnp.int32)
    conditional.step(state, {"x": x, "label": labels})  # The declared layout works.
    with pytest.raises(ValueError, match=r"batches='sliced' takes labels \[d_steps, batch, ...\]"):
        conditional.step(state, {"x": x, "label": labels[:, 1:]})


def test_init_checks_the_model_states_against_the_flags():
    key = jax.random.key(0)
    params = mlp_init(key, [LATENT, 8, 2]), mlp_init(key, [2, 8, 1])
    with pytest.raises(ValueError, match=r"g_model_state was given but the generator is stateless"
                                         r" \(g_stateful=False\)"):
        _bad().init(key, *params, g_model_state={"batch_stats": {}})
    with pytest.raises(ValueError, match=r"d_model_state was given .* \(d_stateful=False\)"):
        _bad().init(key, *params, d_model_state=jnp.zeros(()))
    stateful = _bad(generator=_counting_generator, g_stateful=True)
    with pytest.raises(ValueError, match=r"stateful \(g_stateful=True\): pass its g_model_state"):
        stateful.init(key, *params)
    # A state built elsewhere is checked by the step.
    with pytest.raises(ValueError, match="g_stateful=True but the state has no g_model_state"):
        stateful.step(_bad().init(key, *params), jnp.ones((BATCH, 2)))


def test_a_packed_discriminator_built_for_the_wrong_input_size_names_pack():
    key = jax.random.key(0)
    module = nn.Dense(1)
    d_params, _ = models.init_model(module, key, jnp.zeros((1, 2)))  # 2 features; pack=2 feeds 4.
    gan = _bad(discriminator=models.make_apply(module, stateful=False), pack=2)
    state = gan.init(key, mlp_init(key, [LATENT, 8, 2]), d_params)
    with pytest.raises(Exception, match=r"pack=2 .* build it for 4 features"):
        jax.jit(gan.step)(state, jnp.ones((BATCH, 2)))


def test_a_state_with_ema_params_needs_a_gan_with_ema_decay():
    key = jax.random.key(0)
    g_params, d_params = mlp_init(key, [LATENT, 8, 2]), mlp_init(key, [2, 8, 1])
    state = steps.init_state(key, g_params, d_params, g_optimizer=ADAM, d_optimizer=ADAM, ema=True)
    step = steps.make_train_step(generator=generator, discriminator=discriminator, g_optimizer=ADAM,
                                 d_optimizer=ADAM, latent_dim=LATENT)
    with pytest.raises(ValueError, match="g_ema_params but the step has no ema_decay"):
        step(state, jnp.ones((BATCH, 2)))
    with pytest.raises(ValueError, match="g_ema_params but the step has no ema_decay"):
        _bad().step(state, jnp.ones((BATCH, 2)))
    with pytest.raises(ValueError, match="ema_decay is set but the state has no g_ema_params"):
        _bad(ema_decay=0.9).step(state._replace(g_ema_params=None), jnp.ones((BATCH, 2)))


# ---------------------------------------------------------------------------
# The package's import graph has no cycle.

PACKAGE = pathlib.Path(jgan.__file__).parent


def _jgan_modules():
    """``{dotted name: source path}`` of every module under jgan/, found without importing them."""
    found = {"jgan": PACKAGE / "__init__.py"}

    def walk(path, prefix):
        for info in pkgutil.iter_modules([str(path)]):
            name = f"{prefix}.{info.name}"
            if info.ispkg:
                found[name] = path / info.name / "__init__.py"
                walk(path / info.name, name)
            else:
                found[name] = path / f"{info.name}.py"

    walk(PACKAGE, "jgan")
    return found


def _imported_modules(name, source, modules):
    """The jgan modules that importing ``name`` runs: anywhere in its source (functions too).

    ``import a.b.c`` and ``from a.b import c`` run the packages ``a`` and
    ``a.b`` first, so each target brings its parent packages, except those
    that contain ``name`` (already running when it runs).
    """
    is_package = source.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # Relative: from . import x, from ._apply import y.
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            targets.add(module)
            targets.update(f"{module}.{alias.name}" for alias in node.names)  # Submodules imported by name.
    edges = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                edges.add(prefix)
    return edges


def _find_cycle(graph):
    """A cycle ``[a, b, ..., a]`` of a directed graph ``{node: successors}``, or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"a"}}) == ["a", "a"]


def test_no_import_cycle_between_jgan_modules():
    modules = _jgan_modules()
    graph = {name: _imported_modules(name, path, modules) for name, path in modules.items()}
    # The parser sees the edges it must: absolute, from-package, relative and re-exports.
    assert {"jgan.losses", "jgan.penalties", "jgan.cyclegan", "jgan.unroll"} <= graph["jgan.steps"]
    assert {"jgan.models._apply", "jgan.models._dcgan"} <= graph["jgan.models"]
    assert "jgan.metrics" in graph["jgan.objectives"]
    assert "jgan._validate" in graph["jgan.penalties"]
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ---------------------------------------------------------------------------
# Strict hyper-parameters, empty batches and the divergence signal (issue 13).


_G = lambda p, z: z * p  # noqa: E731
_D = lambda p, x: x[:, 0] * p  # noqa: E731
_LEGACY = dict(generator=_G, discriminator=_D, g_optimizer=optax.sgd(1.0), d_optimizer=optax.sgd(1.0), latent_dim=2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(unroll_steps=1, unroll_first_order="no"), TypeError, "unroll_first_order must be a bool"),
    (dict(gradient_penalty=1.0, gradient_penalty_one_sided="False"), TypeError, "gradient_penalty_one_sided must be a bool"),
    (dict(gradient_penalty=True), TypeError, "gradient_penalty must be a number, got bool"),
    (dict(gradient_penalty=1.0, gradient_penalty_target=-1), ValueError, "gradient_penalty_target must be >= 0"),
    (dict(gradient_penalty=float("inf")), ValueError, "gradient_penalty must be >= 0 and finite"),
    (dict(gradient_penalty="10"), TypeError, "gradient_penalty must be a number, got str"),
    (dict(weight_clip="0.01"), TypeError, "weight_clip must be a number"),
    (dict(ema_decay="0.99"), TypeError, "ema_decay must be a number"),
    (dict(ema_decay=True), TypeError, "ema_decay must be a number"),
    (dict(generator=None), TypeError, "generator must be a callable"),
    (dict(g_optimizer="adam"), TypeError, "g_optimizer must be an optax.GradientTransformation"),
    (dict(g_stateful=1), TypeError, "g_stateful must be a bool"),
    (dict(axis_name=0), TypeError, "axis_name must be a str"),
    (dict(loss=("hinge",)), TypeError, "loss must name a family"),
])
def test_the_keyword_interface_is_strict(kwargs, error, match):
    with pytest.raises(error, match=match):
        steps.make_train_step(**{**_LEGACY, **kwargs})


@pytest.mark.parametrize("build, error, match", [
    (lambda: GradientPenalty(1.0, one_sided="yes"), TypeError, "GradientPenalty one_sided must be a bool"),
    (lambda: GradientPenalty(True), TypeError, "GradientPenalty weight must be a number"),
    (lambda: R1(-1.0), ValueError, "R1 gamma must be >= 0"),
    (lambda: Unrolled(2, first_order=1), TypeError, "Unrolled first_order must be a bool"),
    (lambda: Unrolled(2.0), TypeError, "Unrolled steps must be a Python int"),
    (lambda: Adversarial(float("nan")), ValueError, "Adversarial weight must be >= 0 and finite"),
    (lambda: weight_clipping("0.1"), TypeError, "weight_clipping c must be a number"),
    (lambda: steps.init_state(jax.random.key(0), {}, {}, g_optimizer="adam", d_optimizer=optax.sgd(1.0)),
     TypeError, "g_optimizer must be an optax.GradientTransformation"),
    (lambda: steps.init_state(jax.random.key(0), {}, {}, g_optimizer=optax.sgd(1.0), d_optimizer=optax.sgd(1.0),
                              ema="yes"), TypeError, "ema must be a bool"),
])
def test_the_parts_are_strict(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_an_empty_batch_is_an_error_at_trace_time():
    gan = make_gan(generator=_G, discriminator=_D, g_optimizer=optax.sgd(1.0), d_optimizer=optax.sgd(1.0), prior=2)
    state = gan.init(jax.random.key(0), jnp.ones(()), jnp.ones(()))
    with pytest.raises(ValueError, match="real batch is empty"):
        jax.jit(gan.step)(state, jnp.zeros((0, 2)))


def test_sample_scale_sees_a_diverging_generator():
    """≈ 1 when G(z) spreads like the data, ≫ 1 when it is far out while every value is finite."""
    real = jax.random.normal(jax.random.key(0), (512, 2))
    np.testing.assert_allclose(steps.sample_scale(jax.random.normal(jax.random.key(1), (512, 2)), real), 1.0, atol=0.1)
    far = steps.sample_scale(1e4 * jax.random.normal(jax.random.key(1), (512, 2)), real)
    np.testing.assert_allclose(far, 1e4, rtol=0.1)
    # A constant real batch (no spread) gives a large but finite scale, not NaN or inf.
    assert np.isfinite(steps.sample_scale(real, jnp.ones((8, 2))))
    # In the step's metrics: a GAN whose generator is pushed to 1e3 reports it.
    gan = make_gan(generator=_G, discriminator=_D, g_optimizer=optax.sgd(0.0), d_optimizer=optax.sgd(1.0),
                   prior=2)
    _, metrics = gan.step(gan.init(jax.random.key(0), jnp.asarray(1e3), jnp.ones(())), real)
    assert float(metrics["sample_scale"]) > 100 and float(metrics["nonfinite"]) == 0
