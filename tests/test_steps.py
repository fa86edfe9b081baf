"""jgan.steps: the train step against Python-loop twins, invariants, bad input, learning."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgan import losses as L
from jgan import presets, steps

from nets import affine_generator, discriminator, generator, mlp, mlp_init

LATENT = 3


def _setup(key=0, d_in=2, latent=LATENT, ema=False, **step_kwargs):
    key = jax.random.key(key)
    g_opt = step_kwargs.pop("g_optimizer", None)
    d_opt = step_kwargs.pop("d_optimizer", None)
    g_params = mlp_init(jax.random.fold_in(key, 1), [latent, 16, d_in])
    d_params = mlp_init(jax.random.fold_in(key, 2), [d_in * step_kwargs.get("pack", 1), 16, 1])
    g_opt = g_opt or optax.adam(1e-3)
    d_opt = d_opt or optax.adam(1e-3)
    state = steps.init_state(key, g_params, d_params, g_optimizer=g_opt, d_optimizer=d_opt, ema=ema)
    step = steps.make_train_step(
        generator=generator, discriminator=discriminator, g_optimizer=g_opt,
        d_optimizer=d_opt, latent_dim=latent, **step_kwargs)
    return state, step


def _real(n=32, d=2, key=7):
    return jax.random.normal(jax.random.key(key), (n, d)) + 1.0


class StepVariantsTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_one_step_runs_and_reports(self):
        state, step = _setup()
        new_state, metrics = self.variant(step)(state, _real())
        assert int(new_state.step) == 1
        assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm",
                                "g_grad_norm", "sample_scale", "nonfinite"}
        chex.assert_tree_all_finite(metrics)
        assert float(metrics["nonfinite"]) == 0.0
        for k in ("d_real", "d_fake"):  # Probabilities for a sigmoid discriminator.
            assert 0.0 < float(metrics[k]) < 1.0
        chex.assert_trees_all_equal_structs(new_state, state)
        # Both networks moved.
        assert not np.allclose(new_state.g_params[0][0], state.g_params[0][0])
        assert not np.allclose(new_state.d_params[0][0], state.d_params[0][0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_same_seed_same_result(self):
        state, step = _setup(gradient_penalty=1.0, d_steps=2, loss="wasserstein")
        run = self.variant(step)
        a, _ = run(state, _real())
        b, _ = run(state, _real())
        chex.assert_trees_all_equal(a, b)
        c, _ = run(state._replace(key=jax.random.key(99)), _real())
        assert not np.allclose(a.g_params[0][0], c.g_params[0][0])


def test_compiled_step_traces_once():
    state, step = _setup(d_steps=2, unroll_steps=2)
    chex.clear_trace_counter()
    compiled = jax.jit(chex.assert_max_traces(step, n=1))
    for _ in range(3):
        state, _ = compiled(state, _real())
    with pytest.raises(AssertionError):  # The guard is live: a new shape retraces.
        compiled(state, _real(n=16))


@pytest.mark.parametrize("sliced", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_k_discriminator_updates_then_one_generator_update_equal_a_python_loop(k, sliced):
    """Goodfellow's Algorithm 1 with SGD, against a Python loop of its own."""
    lr = 0.1
    # A generator that ignores z makes the twin independent of the latent draws.
    gen = lambda p, z: p["c"] + 0.0 * z[:, :2]  # noqa: E731
    g_params = {"c": jnp.array([0.5, -1.0])}
    d_params = mlp_init(jax.random.key(1), [2, 8, 1])
    sgd = optax.sgd(lr)
    step = steps.make_train_step(generator=gen, discriminator=discriminator, g_optimizer=sgd,
                                 d_optimizer=sgd, latent_dim=4, loss="non_saturating", d_steps=k)
    state = steps.init_state(jax.random.key(0), g_params, d_params, g_optimizer=sgd, d_optimizer=sgd)
    real = _real(n=8 * k)
    batch = real.reshape(k, 8, 2) if sliced else real
    new_state, _ = jax.jit(step)(state, batch)

    d = d_params
    for i in range(k):
        x = batch[i] if sliced else batch
        fake = gen(g_params, jnp.zeros((x.shape[0], 4)))
        grads = jax.grad(lambda p: L.minimax_discriminator_loss(
            discriminator(p, x), discriminator(p, fake)))(d)
        d = jax.tree.map(lambda p, g: p - lr * g, d, grads)
    n = batch.shape[1] if sliced else batch.shape[0]
    g_grads = jax.grad(lambda p: L.non_saturating_generator_loss(
        discriminator(d, gen(p, jnp.zeros((n, 4))))))(g_params)
    g = jax.tree.map(lambda p, gr: p - lr * gr, g_params, g_grads)
    chex.assert_trees_all_close(new_state.d_params, d, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(new_state.g_params, g, rtol=1e-5, atol=1e-6)


def test_optimizer_counts_show_k_and_1_updates():
    state, step = _setup(d_steps=4)
    new_state, _ = step(state, _real())
    assert int(new_state.d_opt_state[0].count) == 4
    assert int(new_state.g_opt_state[0].count) == 1


def test_each_update_draws_a_fresh_latent_batch():
    # A stateful generator that stores the mean of its latent batch in its state.
    def gen(p, s, z):
        return generator(p, z), {"z_means": jnp.append(s["z_means"][1:], jnp.mean(z))}

    key = jax.random.key(0)
    g_params = mlp_init(key, [LATENT, 8, 2])
    d_params = mlp_init(key, [2, 8, 1])
    opt = optax.sgd(0.01)
    state = steps.init_state(key, g_params, d_params, g_optimizer=opt, d_optimizer=opt,
                             g_model_state={"z_means": jnp.zeros(4)})
    step = steps.make_train_step(generator=gen, discriminator=discriminator, g_optimizer=opt,
                                 d_optimizer=opt, latent_dim=LATENT, d_steps=3, g_stateful=True)
    new_state, _ = step(state, _real())
    z_means = np.asarray(new_state.g_model_state["z_means"])  # 3 D updates + 1 G update.
    assert len(set(np.round(z_means, 6))) == 4


def test_stateful_networks_thread_their_state():
    """Counts calls: k D updates call D on real and fake, the G update once more."""
    k = 3

    def gen(p, s, z):
        return generator(p, z), s + 1

    def disc(p, s, x):
        return discriminator(p, x), s + 1

    key = jax.random.key(0)
    opt = optax.adam(1e-3)
    state = steps.init_state(key, mlp_init(key, [LATENT, 8, 2]), mlp_init(key, [2, 8, 1]),
                             g_optimizer=opt, d_optimizer=opt,
                             g_model_state=jnp.zeros((), jnp.int32),
                             d_model_state=jnp.zeros((), jnp.int32))
    step = steps.make_train_step(generator=gen, discriminator=disc, g_optimizer=opt,
                                 d_optimizer=opt, latent_dim=LATENT, d_steps=k,
                                 g_stateful=True, d_stateful=True)
    new_state, _ = jax.jit(step)(state, _real())
    assert int(new_state.g_model_state) == k + 1
    assert int(new_state.d_model_state) == 2 * k + 1


@pytest.mark.parametrize("unroll, expected_d_calls", [(0, 2 * 2 + 1), (2, 2 * 2)])
def test_unrolled_passes_leave_the_stored_discriminator_state_alone(unroll, expected_d_calls):
    """With K > 0 the generator's forward passes run θ_D^K, not the stored D."""

    def disc(p, s, x):
        return discriminator(p, x), s + 1

    key = jax.random.key(0)
    opt = optax.adam(1e-3, eps_root=1e-12)
    state = steps.init_state(key, mlp_init(key, [LATENT, 8, 2]), mlp_init(key, [2, 8, 1]),
                             g_optimizer=opt, d_optimizer=opt,
                             d_model_state=jnp.zeros((), jnp.int32))
    step = steps.make_train_step(generator=generator, discriminator=disc, g_optimizer=opt,
                                 d_optimizer=opt, latent_dim=LATENT, d_steps=2,
                                 unroll_steps=unroll, d_stateful=True)
    new_state, _ = jax.jit(step)(state, _real())
    assert int(new_state.d_model_state) == expected_d_calls


def test_unroll_remat_gives_the_same_step():
    state, plain = _setup(unroll_steps=3)
    _, remat = _setup(unroll_steps=3, unroll_remat=True)
    a, _ = jax.jit(plain)(state, _real())
    b, _ = jax.jit(remat)(state, _real())
    chex.assert_trees_all_close(a.g_params, b.g_params, rtol=1e-5, atol=1e-6)


def test_model_state_flags_must_match_the_state():
    state, step = _setup()
    with pytest.raises(ValueError, match="g_stateful=False"):
        step(state._replace(g_model_state={"batch_stats": jnp.zeros(2)}), _real())
    _, stateful_step = _setup(d_stateful=True)
    with pytest.raises(ValueError, match="pass d_model_state to init_state"):
        stateful_step(state, _real())


def test_ema_of_generator_weights():
    decay = 0.9
    state, step = _setup(ema=True, ema_decay=decay)
    chex.assert_trees_all_equal(state.g_ema_params, state.g_params)
    new_state, _ = step(state, _real())
    expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p,
                            state.g_ema_params, new_state.g_params)
    chex.assert_trees_all_close(new_state.g_ema_params, expected, rtol=1e-6)
    _, plain_step = _setup(ema_decay=decay)
    with pytest.raises(ValueError, match="ema=True"):
        plain_step(state._replace(g_ema_params=None), _real())


def test_weight_clip_keeps_the_discriminator_in_the_box():
    p = presets.wgan(learning_rate=1e-2)
    state, step = _setup(**p.step_kwargs())
    assert float(max(jnp.max(jnp.abs(x)) for x in jax.tree.leaves(state.d_params))) > 0.01
    state, metrics = jax.jit(step)(state, _real())
    leaves = jax.tree.leaves(state.d_params)
    assert max(float(jnp.max(jnp.abs(x))) for x in leaves) <= 0.01
    assert "wasserstein" in metrics
    np.testing.assert_allclose(metrics["wasserstein"], metrics["d_real"] - metrics["d_fake"], rtol=1e-5)


def test_penalty_metrics_and_their_weight_in_the_loss():
    state, step = _setup(loss="wasserstein", gradient_penalty=10.0, r1=2.0, r2=4.0)
    _, metrics = step(state, _real())
    for name in ("gradient_penalty", "r1", "r2"):
        assert float(metrics[name]) > 0
    # The penalties change the discriminator's update.
    _, plain = _setup(loss="wasserstein")
    assert not np.allclose(step(state, _real())[0].d_params[0][0], plain(state, _real())[0].d_params[0][0])


def test_pack_samples_concatenates_along_the_last_axis():
    x = jnp.arange(6 * 2).reshape(6, 2)
    np.testing.assert_array_equal(steps.pack_samples(x, 3), np.arange(12).reshape(2, 6))
    images = jax.random.normal(jax.random.key(0), (6, 4, 4, 3))
    packed = steps.pack_samples(images, 2)
    assert packed.shape == (3, 4, 4, 6)
    for j in range(3):
        for i in range(2):
            np.testing.assert_array_equal(packed[j, ..., 3 * i:3 * (i + 1)], images[2 * j + i])
    np.testing.assert_array_equal(steps.pack_samples(jnp.arange(4.0), 2), [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="must divide the batch"):
        steps.pack_samples(images, 4)


def test_pacgan_discriminator_sees_packed_inputs():
    seen = []

    def disc(p, x):
        seen.append(x.shape)
        return discriminator(p, x)

    key = jax.random.key(0)
    opt = optax.adam(1e-3)
    state = steps.init_state(key, mlp_init(key, [LATENT, 8, 2]), mlp_init(key, [8, 8, 1]),
                             g_optimizer=opt, d_optimizer=opt)
    step = steps.make_train_step(generator=generator, discriminator=disc, g_optimizer=opt,
                                 d_optimizer=opt, latent_dim=LATENT, pack=4)
    step(state, _real(n=32))
    assert set(seen) == {(8, 8)}


def test_conditional_labels_reach_both_networks():
    classes = 3

    def gen(p, z, y):
        return generator(p, jnp.concatenate([z, jax.nn.one_hot(y, classes)], -1))

    def disc(p, x, y):
        return discriminator(p, jnp.concatenate([x, jax.nn.one_hot(y, classes)], -1))

    key = jax.random.key(0)
    opt = optax.adam(1e-2)
    state = steps.init_state(key, mlp_init(key, [LATENT + classes, 8, 2]),
                             mlp_init(key, [2 + classes, 8, 1]), g_optimizer=opt, d_optimizer=opt)
    step = jax.jit(steps.make_train_step(generator=gen, discriminator=disc, g_optimizer=opt,
                                         d_optimizer=opt, latent_dim=LATENT, d_steps=2))
    x = _real()
    labels_a = jnp.zeros(32, jnp.int32)
    labels_b = jnp.arange(32, dtype=jnp.int32) % classes
    a, _ = step(state, {"x": x, "label": labels_a})
    b, _ = step(state, {"x": x, "label": labels_b})
    # The label columns of both first layers get gradients that depend on the labels.
    assert not np.allclose(a.g_params[0][0][LATENT:], b.g_params[0][0][LATENT:])
    assert not np.allclose(a.d_params[0][0][2:], b.d_params[0][0][2:])
    # Sliced conditional batches work too.
    step(state, {"x": x.reshape(2, 16, 2), "label": labels_b.reshape(2, 16)})
    with pytest.raises(ValueError, match="not supported"):
        steps.make_train_step(generator=gen, discriminator=disc, g_optimizer=opt, d_optimizer=opt,
                              latent_dim=LATENT, pack=2)(state, {"x": x, "label": labels_a})


def test_user_loss_pair():
    calls = []

    def d_loss(r, f):
        calls.append("d")
        return jnp.mean(jnp.square(r - 2.0)) + jnp.mean(jnp.square(f + 2.0))

    def g_loss(f):
        calls.append("g")
        return jnp.mean(jnp.square(f - 2.0))

    state, step = _setup(loss=(d_loss, g_loss))
    _, metrics = step(state, _real())
    assert calls == ["d", "g"]
    chex.assert_tree_all_finite(metrics)


def test_nonfinite_losses_are_reported_and_can_stop_training():
    key = jax.random.key(0)
    opt = optax.adam(1e-3)
    state = steps.init_state(key, mlp_init(key, [LATENT, 8, 2]), mlp_init(key, [2, 8, 1]),
                             g_optimizer=opt, d_optimizer=opt)
    step = steps.make_train_step(generator=generator, g_optimizer=opt, d_optimizer=opt,
                                 discriminator=lambda p, x: discriminator(p, x) * jnp.log(x[:, 0]),
                                 latent_dim=LATENT)
    _, metrics = jax.jit(step)(state, _real() - 10.0)  # log of negative numbers.
    assert float(metrics["nonfinite"]) == 1.0
    with pytest.raises(steps.NonFiniteError, match="at step 7"):
        steps.check_finite(metrics, step=7)
    steps.check_finite(_setup()[1](state, _real())[1])  # A healthy step passes.


class TestBadInput:

    def test_hyper_parameters(self):
        with pytest.raises(ValueError, match="Unknown loss 'nonsaturating'"):
            _setup(loss="nonsaturating")
        with pytest.raises(TypeError, match="pair"):
            _setup(loss=(L.hinge_discriminator_loss,))
        with pytest.raises(ValueError, match="d_steps must be >= 1"):
            _setup(d_steps=0)
        with pytest.raises(ValueError, match="unroll_steps must be >= 0"):
            _setup(unroll_steps=-1)
        with pytest.raises(TypeError, match="unroll_steps must be a Python int"):
            _setup(unroll_steps=2.0)
        with pytest.raises(ValueError, match="pack must be >= 1"):
            _setup(pack=0)
        for name in ("gradient_penalty", "r1", "r2", "weight_clip"):
            with pytest.raises(ValueError, match=f"{name} must be >= 0"):
                _setup(**{name: -1.0})
        with pytest.raises(ValueError, match="ema_decay"):
            _setup(ema_decay=1.0)
        with pytest.raises(ValueError, match="latent_dim"):
            steps.make_train_step(generator=generator, discriminator=discriminator,
                                  g_optimizer=optax.sgd(1.0), d_optimizer=optax.sgd(1.0))

    def test_shapes_at_trace_time(self):
        state, step = _setup()
        compiled = jax.jit(step)
        with pytest.raises(ValueError, match="do not match the generator's samples"):
            compiled(state, _real(d=3))
        with pytest.raises(ValueError, match="needs k = d_steps = 1"):
            compiled(state, _real(n=32).reshape(2, 16, 2))
        with pytest.raises(ValueError, match=r"\[batch\] or \[batch, 1\]"):
            steps.make_train_step(generator=generator, discriminator=lambda p, x: mlp(p, x) * jnp.ones(2),
                                  g_optimizer=optax.sgd(1.0), d_optimizer=optax.sgd(1.0),
                                  latent_dim=LATENT)(state, _real())
        with pytest.raises(ValueError, match="must divide the batch"):
            _setup(pack=3)[1](state, _real(n=32))
        with pytest.raises(ValueError, match="'x'"):
            step(state, {"images": _real()})


@pytest.mark.slow
@pytest.mark.parametrize("loss, kwargs, b1, b2", [
    ("non_saturating", {}, 0.5, 0.999),
    # The one-sided penalty: with the two-sided one, a critic that is affine
    # on the data, f = c·x, minimises d·c + λ(|c| − 1)² at c = 1 − d/(2λ) > 0
    # while the generator overshoots by d < 2λ, so it keeps pushing the wrong
    # way (measured: μ ends near 3 + 2λ). relu(‖∇‖ − 1)² has no such barrier.
    ("wasserstein", {"gradient_penalty": 10.0, "gradient_penalty_one_sided": True, "d_steps": 5},
     0.0, 0.9),
])
def test_learns_a_one_dimensional_gaussian(loss, kwargs, b1, b2):
    """N(3, 0.5²) from N(0, 1) in a thousand steps, jitted as one scan."""
    mu, sigma, batch, n, lr = 3.0, 0.5, 256, 1000, 1e-2
    # The generator's rate decays; the discriminator's stays, so it keeps up.
    g_opt = optax.adam(optax.cosine_decay_schedule(lr, n, alpha=1e-3), b1=b1, b2=b2)
    d_opt = optax.adam(lr, b1=b1, b2=b2)
    key = jax.random.key(0)
    g_params = {"mu": jnp.zeros(()), "sigma": jnp.ones(())}
    d_params = mlp_init(jax.random.fold_in(key, 2), [1, 32, 32, 1])
    state = steps.init_state(key, g_params, d_params, g_optimizer=g_opt, d_optimizer=d_opt)
    step = steps.make_train_step(generator=affine_generator, discriminator=discriminator,
                                 g_optimizer=g_opt, d_optimizer=d_opt, latent_dim=1, loss=loss,
                                 **kwargs)
    k = kwargs.get("d_steps", 1)

    @jax.jit
    def train(state):
        def body(state, i):
            x = mu + sigma * jax.random.normal(jax.random.fold_in(jax.random.key(1), i), (k, batch, 1))
            return step(state, x if k > 1 else x[0])
        return jax.lax.scan(body, state, jnp.arange(n))

    state, metrics = train(state)
    assert float(jnp.max(metrics["nonfinite"])) == 0.0
    samples = affine_generator(state.g_params, jax.random.normal(jax.random.key(2), (20000, 1)))
    assert abs(float(samples.mean()) - mu) < 0.1
    assert abs(float(samples.std()) - sigma) < 0.1


@pytest.mark.parametrize("k", [1, 3])
def test_unrolled_generator_minimises_metz_surrogate_including_the_real_term(k, x64):
    """G's gradient is that of V(θ_G, θ_D^K) (Metz et al. eq. 12), real-data term included."""
    lr = 0.1
    gen = lambda p, z: p["c"] + 0.0 * z[:, :2]  # noqa: E731  (ignores z: no draws to replicate)
    g_params = {"c": jnp.array([0.5, -1.0])}
    d_params = mlp_init(jax.random.key(1), [2, 8, 1], jnp.float64)
    real = _real(n=8).astype(jnp.float64)
    step = steps.make_train_step(generator=gen, discriminator=discriminator, g_optimizer=optax.sgd(1.0),
                                 d_optimizer=optax.sgd(lr), latent_dim=4, loss="minimax", unroll_steps=k)
    state = steps.init_state(jax.random.key(0), g_params, d_params, g_optimizer=optax.sgd(1.0),
                             d_optimizer=optax.sgd(lr))
    new_state, _ = step(state, real)
    step_grad = g_params["c"] - new_state.g_params["c"]  # SGD with lr 1.

    def d_loss(d, c):
        fake = jnp.broadcast_to(c, real.shape)
        return L.minimax_discriminator_loss(discriminator(d, real), discriminator(d, fake))

    def sgd_step(d, c):
        return jax.tree.map(lambda p, g: p - lr * g, d, jax.grad(d_loss)(d, c))

    d1 = sgd_step(d_params, g_params["c"])  # The discriminator's own update comes first.

    def surrogate(c, real_term=True):
        d = d1
        for _ in range(k):  # Python loop twin of the scan.
            d = sgd_step(d, c)
        fake_logits = discriminator(d, jnp.broadcast_to(c, real.shape))
        value = jnp.mean(jax.nn.log_sigmoid(-fake_logits))  # E log(1 − D_K(G(z)))
        if real_term:
            value = value + jnp.mean(jax.nn.log_sigmoid(discriminator(d, real)))  # E log D_K(x)
        return value

    np.testing.assert_allclose(step_grad, jax.grad(surrogate)(g_params["c"]), rtol=1e-9, atol=1e-12)
    fake_only = jax.grad(lambda c: surrogate(c, real_term=False))(g_params["c"])
    assert not np.allclose(step_grad, fake_only, rtol=1e-3)  # The real term matters.


def test_sinkhorn_generator_objective_is_the_divergence_of_the_batches():
    """With adversarial_weight = 0 and SGD(1), G moves by −λ·∇S_ε(G(z), x)."""
    from jgan.metrics import sinkhorn_divergence

    lam, eps, iters = 0.5, 0.3, 20
    z = jax.random.normal(jax.random.key(3), (32, LATENT))
    sgd = optax.sgd(1.0)
    state, step = _setup(
        g_optimizer=sgd, adversarial_weight=0.0, sinkhorn_weight=lam, sinkhorn_epsilon=eps,
        sinkhorn_iterations=iters, latent_sampler=lambda key, n: z[:n])
    real = _real()
    new_state, metrics = jax.jit(step)(state, real)

    def objective(g_params):
        return sinkhorn_divergence(generator(g_params, z), real, epsilon=eps, num_iterations=iters).divergence

    value, grads = jax.value_and_grad(objective)(state.g_params)
    np.testing.assert_allclose(metrics["sinkhorn"], value, rtol=1e-5)
    expected = jax.tree.map(lambda p, g: p - lam * g, state.g_params, grads)
    chex.assert_trees_all_close(new_state.g_params, expected, rtol=1e-5, atol=1e-6)
    assert float(value) > 0
    # Both terms on: the objective's gradient is the sum of the two.
    _, step_both = _setup(g_optimizer=sgd, sinkhorn_weight=lam, sinkhorn_epsilon=eps,
                          sinkhorn_iterations=iters, latent_sampler=lambda key, n: z[:n])
    _, step_adv = _setup(g_optimizer=sgd, latent_sampler=lambda key, n: z[:n])
    both, _ = jax.jit(step_both)(state, real)
    adv, _ = jax.jit(step_adv)(state, real)
    moved = jax.tree.map(lambda a, b, p: a + b - p, adv.g_params, new_state.g_params, state.g_params)
    chex.assert_trees_all_close(both.g_params, moved, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    {"sinkhorn_weight": -1.0}, {"sinkhorn_weight": 1.0, "sinkhorn_epsilon": 0.0},
    {"sinkhorn_weight": 1.0, "sinkhorn_iterations": 0}, {"adversarial_weight": float("nan")}])
def test_sinkhorn_objective_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        _setup(**kwargs)


@pytest.mark.slow
def test_sinkhorn_generator_learns_a_two_dimensional_gaussian():
    """Minibatch OT alone (no discriminator term) fits N(μ, σ²I) with an affine G."""
    mu, sigma, batch, n = jnp.array([2.0, -1.0]), 0.5, 128, 300
    g_opt = optax.adam(optax.cosine_decay_schedule(5e-2, n, alpha=1e-2))
    d_opt = optax.sgd(0.0)
    key = jax.random.key(0)
    g_params = {"mu": jnp.zeros(2), "sigma": jnp.ones(())}
    d_params = mlp_init(jax.random.fold_in(key, 2), [2, 8, 1])
    state = steps.init_state(key, g_params, d_params, g_optimizer=g_opt, d_optimizer=d_opt)
    step = steps.make_train_step(generator=affine_generator, discriminator=discriminator,
                                 g_optimizer=g_opt, d_optimizer=d_opt, latent_dim=2,
                                 adversarial_weight=0.0, sinkhorn_weight=1.0,
                                 sinkhorn_epsilon=0.05, sinkhorn_iterations=50)

    @jax.jit
    def train(state):
        def body(state, i):
            x = mu + sigma * jax.random.normal(jax.random.fold_in(jax.random.key(1), i), (batch, 2))
            return step(state, x)
        return jax.lax.scan(body, state, jnp.arange(n))

    state, metrics = train(state)
    assert float(jnp.max(metrics["nonfinite"])) == 0.0
    assert float(metrics["sinkhorn"][-20:].mean()) < 0.5 * float(metrics["sinkhorn"][:20].mean())
    np.testing.assert_allclose(state.g_params["mu"], mu, atol=0.1)
    np.testing.assert_allclose(abs(float(state.g_params["sigma"])), sigma, atol=0.1)
