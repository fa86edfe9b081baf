"""jgan.unroll: the unrolled discriminator against Python-loop twins, derivatives, errors.

The twins below are written from the update equations with ``jax.grad`` and
hand-written SGD / Adam (not optax), so a mistake in how the scan carries the
optimizer state, or in what the gradient flows through, shows up as a
mismatch.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.test_util import check_grads

from jgan import losses as L
from jgan import steps, unroll
from jgan.unroll import unroll_discriminator

from nets import discriminator, generator, mlp

LATENT = 3
N = 16

# The programs here are tiny and each is compiled once: compile time dominates, so the
# jitted side compiles without LLVM's optimisation passes. The twins run eagerly (their
# primitives are compiled once and cached across tests).
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _normal(seed, shape, dtype=jnp.float32, scale=1.0):
    """Test data from numpy (jax.random would compile one program per shape and dtype)."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), dtype)


def _mlp_params(seed, sizes, dtype=jnp.float32):
    """tests/nets.py's ``mlp_init`` layout and scale (random biases), drawn with numpy."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        params.append((jnp.asarray(rng.standard_normal((fan_in, fan_out)) * bound, dtype),
                       jnp.asarray(rng.uniform(-bound, bound, fan_out), dtype)))
    return params


# --- Hand-written optimizers: (init, update) on pytrees, no optax. -------------------


def sgd_init(params):
    return ()


def sgd_update(grads, state, params, *, lr):
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), state


def adam_init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return (jnp.zeros([], jnp.int32), zeros, zeros)


def adam_update(grads, state, params, *, lr, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0):
    """Kingma & Ba, Algorithm 1 (ε outside the root; ε_root inside, as optax)."""
    count, mu, nu = state
    count = count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
    c1 = 1 - b1 ** count.astype(jnp.result_type(float))
    c2 = 1 - b2 ** count.astype(jnp.result_type(float))
    params = jax.tree.map(
        lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2 + eps_root) + eps), params, mu, nu)
    return params, (count, mu, nu)


def to_optax_adam_state(state):
    """The optax.adam state holding the same moments as the hand-written one."""
    count, mu, nu = state
    return (optax.ScaleByAdamState(count=count, mu=mu, nu=nu), optax.EmptyState())


OPTIMIZERS = {
    # name: (optax transformation, hand-written init, hand-written update)
    "sgd": (optax.sgd(0.3), sgd_init, functools.partial(sgd_update, lr=0.3)),
    "adam": (optax.adam(0.05, b1=0.5), adam_init, functools.partial(adam_update, lr=0.05, b1=0.5)),
}


# --- A small GAN in float64: fake samples depend on θ_G. ------------------------------


def _problem(dtype=jnp.float64, activation=jax.nn.leaky_relu):
    g_params = _mlp_params(1, [LATENT, 8, 2], dtype)
    d_params = _mlp_params(2, [2, 8, 1], dtype)
    z = _normal(3, (N, LATENT), dtype)
    real = _normal(4, (N, 2), dtype, scale=0.5) + 1.0
    gen = lambda p, z: mlp(p, z, activation)  # noqa: E731
    disc = lambda p, x: mlp(p, x, activation)[:, 0]  # noqa: E731
    return g_params, d_params, z, real, gen, disc


def _d_loss(d_params, fake, real, disc):
    return L.minimax_discriminator_loss(disc(d_params, real), disc(d_params, fake))


def _surrogate(g_params, d_params, d_opt_state, z, real, gen, disc, *, optimizer, steps,
               **options):
    """f_K(θ_G) = non-saturating loss of G on D after K unrolled updates (jgan)."""
    fake = gen(g_params, z)
    d_k, _ = unroll_discriminator(
        d_params, d_opt_state, loss_fn=lambda d: _d_loss(d, fake, real, disc),
        optimizer=optimizer, steps=steps, **options)
    return L.non_saturating_generator_loss(disc(d_k, fake))


def _twin_surrogate(g_params, d_params, d_state, z, real, gen, disc, *, update, steps):
    """The same objective as a Python loop of hand-written updates."""
    fake = gen(g_params, z)
    d = d_params
    for _ in range(steps):
        grads = jax.grad(_d_loss)(d, fake, real, disc)
        d, d_state = update(grads, d_state, d)
    return L.non_saturating_generator_loss(disc(d, fake))


def _warm_adam_state(d_params):
    """A non-initial Adam state (count 3, non-zero moments), to test that it is carried."""
    leaves, tree = jax.tree.flatten(d_params)
    mu = [_normal(10 + i, x.shape, x.dtype, scale=0.1) for i, x in enumerate(leaves)]
    nu = [_normal(20 + i, x.shape, x.dtype, scale=0.1) ** 2 for i, x in enumerate(leaves)]
    return (jnp.asarray(3, jnp.int32), jax.tree.unflatten(tree, mu), jax.tree.unflatten(tree, nu))


# --- 1. The gradient through K updates equals a Python-loop twin. ---------------------


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_generator_gradient_through_k_updates_equals_a_python_loop(x64, name):
    ks = (1, 3, 5)
    optimizer, init, update = OPTIMIZERS[name]
    g_params, d_params, z, real, gen, disc = _problem()
    state = init(d_params) if name == "sgd" else _warm_adam_state(d_params)
    opt_state = optimizer.init(d_params) if name == "sgd" else to_optax_adam_state(state)

    @jit  # One program for the three K (one compile instead of three).
    def jgan_value_and_grads(g_params, d_params, opt_state):
        return [jax.value_and_grad(_surrogate)(g_params, d_params, opt_state, z, real, gen, disc,
                                               optimizer=optimizer, steps=k) for k in ks]

    def twin_value_and_grads(k):
        return jax.value_and_grad(_twin_surrogate)(g_params, d_params, state, z, real, gen, disc,
                                                   update=update, steps=k)

    plain = twin_value_and_grads(0)[1]
    for k, (value, grads) in zip(ks, jgan_value_and_grads(g_params, d_params, opt_state)):
        twin_value, twin_grads = twin_value_and_grads(k)
        np.testing.assert_allclose(value, twin_value, rtol=1e-10, err_msg=f"K = {k}")
        _assert_trees_close(grads, twin_grads, rtol=1e-5, atol=1e-8, what=f"K = {k}")
        # The check has teeth: the unrolled gradient is not the plain GAN's (K = 0).
        assert _max_abs_diff(grads, plain) > 1e-3, k


def _assert_trees_close(actual, expected, *, rtol, atol, what):
    chex.assert_trees_all_equal_structs(actual, expected)
    for i, (a, b) in enumerate(zip(jax.tree.leaves(actual), jax.tree.leaves(expected))):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{what}, leaf {i}")


def test_unrolled_parameters_and_state_equal_a_python_loop(x64):
    """The primal outputs: θ_D^K and Adam's moments after K updates."""
    optimizer, _, update = OPTIMIZERS["adam"]
    g_params, d_params, z, real, gen, disc = _problem()
    state = _warm_adam_state(d_params)
    fake = gen(g_params, z)
    loss_fn = lambda d: _d_loss(d, fake, real, disc)  # noqa: E731
    unroll = functools.partial(unroll_discriminator, loss_fn=loss_fn, optimizer=optimizer, steps=4)
    d_k, s_k = jit(unroll)(d_params, to_optax_adam_state(state))

    def twin(d, s):
        for _ in range(4):
            d, s = update(jax.grad(loss_fn)(d), s, d)
        return d, s

    d, s = twin(d_params, state)
    chex.assert_trees_all_close(d_k, d, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(s_k, to_optax_adam_state(s), rtol=1e-10, atol=1e-12)


def _max_abs_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y)))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --- 2. K = 0 is the identity. --------------------------------------------------------


def test_zero_steps_return_the_inputs():
    d_params = _mlp_params(0, [2, 4, 1])
    opt_state = optax.adam(1e-3).init(d_params)
    calls = []
    out = unroll_discriminator(d_params, opt_state, loss_fn=lambda d: calls.append(1) or 0.0,
                               optimizer=optax.adam(1e-3), steps=0)
    assert out[0] is d_params and out[1] is opt_state
    assert not calls  # The loss is never traced.


def _build_step(**kwargs):
    key = jax.random.key(0)
    pack = kwargs.get("pack", 1)
    g_params = _mlp_params(1, [LATENT, 8, 2])
    d_params = _mlp_params(2, [2 * pack, 8, 1])
    g_opt = kwargs.pop("g_optimizer", optax.adam(1e-2))
    d_opt = kwargs.pop("d_optimizer", optax.adam(1e-2))
    state = steps.init_state(key, g_params, d_params, g_optimizer=g_opt, d_optimizer=d_opt)
    step = steps.make_train_step(generator=generator, discriminator=discriminator,
                                 g_optimizer=g_opt, d_optimizer=d_opt, latent_dim=LATENT, **kwargs)
    return state, step


def _real(n=N, key=7):
    return _normal(key, (n, 2), scale=0.5) + 1.0


def test_train_step_with_zero_unroll_steps_is_the_ordinary_step():
    sgd = dict(g_optimizer=optax.sgd(0.1), d_optimizer=optax.sgd(0.1))
    state, ordinary = _build_step(**sgd)
    _, unrolled_0 = _build_step(unroll_steps=0, **sgd)
    chex.assert_trees_all_equal(jit(unrolled_0)(state, _real()),
                                jit(ordinary)(state, _real()))


# --- 3. First order: the final D as a constant. --------------------------------------


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_first_order_uses_the_final_discriminator_as_a_constant(x64, name):
    k = 3
    optimizer, init, update = OPTIMIZERS[name]
    g_params, d_params, z, real, gen, disc = _problem()

    surrogate_grad = jit(jax.grad(_surrogate), static_argnames=(
        "gen", "disc", "optimizer", "steps", "first_order"))
    first = surrogate_grad(g_params, d_params, optimizer.init(d_params), z, real, gen, disc,
                           optimizer=optimizer, steps=k, first_order=True)

    def copy_and_train(d_params):  # Copy D, take K steps on the current samples.
        fake = gen(g_params, z)
        d, s = jax.tree.map(jnp.copy, d_params), init(d_params)
        for _ in range(k):
            d, s = update(jax.grad(_d_loss)(d, fake, real, disc), s, d)
        return d

    d_const = jax.tree.map(np.asarray, copy_and_train(d_params))  # Data, not a function of θ_G.
    expected = jax.grad(
        lambda g: L.non_saturating_generator_loss(disc(d_const, gen(g, z))))(g_params)
    chex.assert_trees_all_close(first, expected, rtol=1e-5, atol=1e-8)

    full = surrogate_grad(g_params, d_params, optimizer.init(d_params), z, real, gen, disc,
                          optimizer=optimizer, steps=k)
    assert _max_abs_diff(first, full) > 1e-3  # The second-order terms matter.


# --- 4. Finite differences. ----------------------------------------------------------


def test_surrogate_gradient_matches_finite_differences(x64):
    optimizer, _, _ = OPTIMIZERS["adam"]  # The harder case: Adam's state depends on θ_G too.
    # tanh: smooth everywhere, so central differences are accurate.
    g_params, d_params, z, real, gen, disc = _problem(activation=jnp.tanh)
    opt_state = optimizer.init(d_params)

    @jax.jit  # Plain jit: check_grads differentiates through it.
    def f_k(g):
        return _surrogate(g, d_params, opt_state, z, real, gen, disc, optimizer=optimizer, steps=3)

    check_grads(f_k, (g_params,), order=1, modes=("rev",))


# --- 5. Rematerialisation: the same result in less memory. ---------------------------


def test_remat_gives_the_same_gradient_and_stores_parameters_not_activations():
    """At K = 20, XLA's temporary memory holds every update's activations unless remat."""
    batch, width, k = 256, 32, 20
    d_params = _mlp_params(2, [2, width, width, 1])
    g_params = _mlp_params(1, [LATENT, width, 2])
    z, real = _normal(3, (batch, LATENT)), _normal(4, (batch, 2))
    optimizer = optax.adam(1e-2, eps_root=1e-8)
    opt_state = optimizer.init(d_params)

    def compiled_grad(remat):
        grad = jit(jax.grad(functools.partial(
            _surrogate, gen=generator, disc=discriminator, optimizer=optimizer, steps=k,
            remat=remat)))
        return grad.lower(g_params, d_params, opt_state, z, real).compile()

    plain, remat = compiled_grad(False), compiled_grad(True)
    _assert_trees_close(remat(g_params, d_params, opt_state, z, real),
                        plain(g_params, d_params, opt_state, z, real),
                        rtol=1e-5, atol=1e-7, what="remat=True")
    activations = k * 2 * batch * width * 4  # One hidden layer on both batches, float32.
    plain_bytes = plain.memory_analysis().temp_size_in_bytes
    remat_bytes = remat.memory_analysis().temp_size_in_bytes
    assert plain_bytes > activations  # Every update's activations are kept (6.5 MB here)...
    assert remat_bytes < plain_bytes / 4  # ... or recomputed (0.95 MB: parameters, moments).


def test_remat_policy_is_passed_to_checkpoint():
    policy_calls = []

    def policy(prim, *args, **params):
        policy_calls.append(prim)
        return jax.checkpoint_policies.dots_saveable(prim, *args, **params)

    g_params, d_params, z, real, gen, disc = _problem(dtype=jnp.float32)
    optimizer = optax.sgd(0.1)
    surrogate = functools.partial(
        _surrogate, d_params=d_params, d_opt_state=optimizer.init(d_params), z=z, real=real,
        gen=gen, disc=disc, optimizer=optimizer, steps=3)
    jax.make_jaxpr(jax.grad(surrogate))(g_params)
    assert not policy_calls
    jax.make_jaxpr(jax.grad(functools.partial(surrogate, remat=policy)))(g_params)
    assert policy_calls  # Consulted when the scan body is partially evaluated.


def test_remat_must_be_a_bool_or_a_policy():
    with pytest.raises(TypeError, match="remat must be a bool, 'auto' or a jax.checkpoint policy"):
        unroll_discriminator({}, (), loss_fn=lambda d: 0.0, optimizer=optax.sgd(0.1), steps=1,
                             remat="dots")


# --- 6. Adam through dead ReLU units needs eps_root > 0 (as documented). -------------


def test_adam_defaults_through_a_dead_relu_unit_give_the_eps_root_limit():
    """eps_root = 0 (optax.adam's default) is safe: finite, and the limit of eps_root → 0."""
    g_params, d_params, z, real, _, _ = _problem(dtype=jnp.float32)
    w, b = d_params[0]
    d_params = [(w, b.at[0].set(-100.0)), *d_params[1:]]  # Unit 0 is dead on every input.
    disc = lambda p, x: mlp(p, x, jax.nn.relu)[:, 0]  # noqa: E731

    @jit
    def grads(g_params):
        out = []
        for eps_root in (0.0, 1e-30):  # The reference is plain optax, no safe roots needed.
            optimizer = optax.adam(1e-2, eps_root=eps_root)
            out.append(jax.grad(_surrogate)(g_params, d_params, optimizer.init(d_params), z, real,
                                            generator, disc, optimizer=optimizer, steps=2))
        return out

    default, limit = grads(g_params)
    chex.assert_tree_all_finite(default)
    chex.assert_trees_all_close(default, limit, rtol=1e-5, atol=1e-7)


def test_safe_root_update_keeps_values_and_finite_derivatives():
    opt = optax.adam(1e-3)
    params = {"w": jnp.array([0.0, 1.0, 2.0])}
    state = opt.init(params)
    safe = unroll.safe_root_update(opt.update)

    def f(g, update):
        u, s = update(g, state, params)
        return jnp.sum(u["w"]) + jnp.sum(s[0].nu["w"])

    g = {"w": jnp.array([0.0, 0.5, -1.0])}
    chex.assert_trees_all_equal(safe(g, state, params), opt.update(g, state, params))
    plain, safe_grad = jax.grad(f)(g, opt.update)["w"], jax.grad(f)(g, safe)["w"]
    assert np.isnan(plain[0])  # optax's own derivative at g = 0 is 0·∞.
    np.testing.assert_array_equal(safe_grad[1:], plain[1:])  # Unchanged where √'s derivative is finite.
    # At step 1, m̂ = g and ν̂ = g², so the update is −lr·g/(|g| + eps): slope −lr/eps at g = 0.
    np.testing.assert_allclose(safe_grad[0], -1e-3 / 1e-8, rtol=1e-3)


OPTIMIZERS_WITH_ROOTS = {
    "adam": optax.adam(1e-2), "adamw": optax.adamw(1e-2), "rmsprop": optax.rmsprop(1e-2),
    "adagrad": optax.adagrad(1e-2), "adabelief": optax.adabelief(1e-2), "yogi": optax.yogi(1e-2),
    "amsgrad": optax.amsgrad(1e-2), "nadam": optax.nadam(1e-2), "adafactor": optax.adafactor(1e-2),
    "lamb": optax.lamb(1e-2), "clipped_adam": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS_WITH_ROOTS))
def test_unrolled_optimizers_with_roots(name):
    """Safe roots change nothing where optax's derivative is finite, and are finite at dead units."""
    optimizer = OPTIMIZERS_WITH_ROOTS[name]
    g_params, d_params, z, real, _, _ = _problem(dtype=jnp.float32)
    relu_disc = lambda p, x: mlp(p, x, jax.nn.relu)[:, 0]  # noqa: E731
    w, b = d_params[0]
    dead = [(w, b.at[0].set(-100.0)), *d_params[1:]]  # Unit 0 is dead on every input.

    def grads(d_params, disc, safe):
        loss_fn = lambda d, fake: _d_loss(d, fake, real, disc)  # noqa: E731

        def surrogate(g_params):
            fake = generator(g_params, z)
            update = unroll.safe_root_update(optimizer.update) if safe else optimizer.update
            d, state = d_params, optimizer.init(d_params)
            for _ in range(2):  # A Python-loop twin: plain optax when not safe.
                updates, state = update(jax.grad(loss_fn)(d, fake), state, d)
                d = optax.apply_updates(d, updates)
            return L.non_saturating_generator_loss(disc(d, fake))

        return jax.jit(jax.grad(surrogate))(g_params)

    healthy_disc = lambda p, x: mlp(p, x, jax.nn.leaky_relu)[:, 0]  # noqa: E731
    plain = grads(d_params, healthy_disc, safe=False)
    chex.assert_tree_all_finite(plain)
    chex.assert_trees_all_close(grads(d_params, healthy_disc, safe=True), plain, rtol=1e-5, atol=1e-8)
    chex.assert_tree_all_finite(grads(dead, relu_disc, safe=True))
    # And through the library's scan:
    surrogate = functools.partial(_surrogate, gen=generator, disc=relu_disc, optimizer=optimizer, steps=2)
    scanned = jax.jit(jax.grad(surrogate))(g_params, dead, optimizer.init(dead), z, real)
    chex.assert_tree_all_finite(scanned)


def test_unrolling_an_optimizer_with_a_root_under_control_flow_is_refused():
    def update(updates, state, params=None):
        root = jax.lax.cond(True, jnp.sqrt, jnp.sqrt, jnp.abs(updates))
        return root, state

    with pytest.raises(TypeError, match="first_order=True"):
        jax.grad(lambda g: jnp.sum(unroll.safe_root_update(update)(g, ())[0]))(jnp.ones(3))


# --- 7. One program per K. ------------------------------------------------------------


def test_one_trace_per_k():
    sgd = dict(g_optimizer=optax.sgd(0.1), d_optimizer=optax.sgd(0.1))
    state, _ = _build_step(**sgd)
    step_for_k = {k: _build_step(unroll_steps=k, **sgd)[1] for k in (1, 4, 6)}

    def step(state, batch, k):
        return step_for_k[k](state, batch)

    chex.clear_trace_counter()
    compiled = jit(chex.assert_max_traces(step, n=2), static_argnames="k")
    for _ in range(3):  # Repeated calls reuse the program.
        compiled(state, _real(), k=1)
    compiled(state, _real(), k=4)  # A new K is a new program...
    compiled(state, _real(), k=4)
    with pytest.raises(AssertionError):  # ... and the guard counts it.
        compiled(state, _real(), k=6)


@pytest.mark.parametrize("first_order, remat, traced", [
    (False, "auto", 2),  # The default's cost analysis (remat_choice) traces the update once more.
    (False, False, 1),
    (True, "auto", 1),  # A first-order unroll has no backward pass to choose for.
])
def test_program_size_does_not_grow_with_k(first_order, remat, traced):
    """The K updates are one scan: the loss is traced a fixed number of times and the program is the same size."""
    g_params, d_params, z, real, gen, disc = _problem(dtype=jnp.float32)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(d_params)
    sizes, traces = {}, {}
    for k in (1, 20):
        count = []

        def loss_fn(d, fake):
            count.append(1)
            return _d_loss(d, fake, real, disc)

        def f(g):
            fake = gen(g, z)
            d_k, _ = unroll_discriminator(d_params, opt_state, loss_fn=lambda d: loss_fn(d, fake),
                                          optimizer=optimizer, steps=k, first_order=first_order, remat=remat)
            return L.non_saturating_generator_loss(disc(d_k, fake))

        sizes[k] = len(str(jax.make_jaxpr(jax.grad(f))(g_params)))
        traces[k] = len(count)
    assert traces[1] == traces[20] == traced
    assert sizes[1] == pytest.approx(sizes[20], rel=0.01)


# --- 8. Bad input. --------------------------------------------------------------------


@pytest.mark.parametrize("steps_, error, match", [
    (-1, ValueError, "steps must be >= 0"),
    (2.0, TypeError, "must be a Python int"),
    (True, TypeError, "must be a Python int"),
    (np.float32(3), TypeError, "must be a Python int"),
    (jnp.asarray(3), TypeError, "must be a Python int"),
])
def test_steps_must_be_a_static_nonnegative_int(steps_, error, match):
    d_params = _mlp_params(0, [2, 4, 1])
    with pytest.raises(error, match=match):
        unroll_discriminator(d_params, (), loss_fn=lambda d: 0.0, optimizer=optax.sgd(0.1),
                             steps=steps_)


def _bad_optimizer(new_state):
    def init(params):
        return jnp.zeros([], jnp.int32)

    def update(updates, state, params=None):
        return updates, new_state(state)

    return optax.GradientTransformation(init, update)


@pytest.mark.parametrize("new_state", [
    lambda s: s.astype(jnp.float32),  # dtype changes
    lambda s: jnp.zeros([2], jnp.int32),  # shape changes
    lambda s: (s, s),  # structure changes
], ids=["dtype", "shape", "structure"])
def test_optimizer_state_that_a_scan_cannot_carry_is_a_clear_error(new_state):
    optimizer = _bad_optimizer(new_state)
    d_params = _mlp_params(0, [2, 4, 1])
    x = _real()
    with pytest.raises(TypeError, match="optimizer state"):
        unroll_discriminator(d_params, optimizer.init(d_params),
                             loss_fn=lambda d: jnp.mean(discriminator(d, x)),
                             optimizer=optimizer, steps=2)


# --- 9. The train step: every loss family, d_steps, pack, against a twin. ------------


def _twin_train_step(g_params, d_params, d_state, z, real, *, family, update, g_lr, d_steps,
                     unroll_steps, pack):
    """Goodfellow's Algorithm 1 with an unrolled generator loss, by hand (SGD for G).

    ``fake`` is drawn once from the fixed ``z`` (the step's latent sampler returns it too).
    """
    packed = lambda x: x.reshape(x.shape[0] // pack, -1)  # noqa: E731  (consecutive samples)

    def d_loss(d, fake):
        return family.d_loss(discriminator(d, packed(real)), discriminator(d, packed(fake)))

    fake = lax.stop_gradient(generator(g_params, z))
    for _ in range(d_steps):
        d_params, d_state = update(jax.grad(d_loss)(d_params, fake), d_state, d_params)

    def g_loss(g):
        fake = generator(g, z)
        d, s = d_params, d_state
        for _ in range(unroll_steps):
            d, s = update(jax.grad(d_loss)(d, fake), s, d)
        fake_out = discriminator(d, packed(fake))
        real_out = discriminator(d, packed(real))
        # A relativistic generator loss also reads D_K on the real batch.
        adversarial = family.g_loss(fake_out, real_out) if family.relativistic else family.g_loss(fake_out)
        if not unroll_steps:
            return adversarial
        # Metz et al.'s surrogate also holds the real-data term, which depends
        # on G through the K updates (tests/test_steps.py checks the minimax
        # case against E log D_K(x) + E log(1 − D_K(G(z))) written out).
        real_term = family.d_loss(real_out, lax.stop_gradient(fake_out))
        return adversarial - real_term

    grads = jax.grad(g_loss)(g_params)
    return jax.tree.map(lambda p, g: p - g_lr * g, g_params, grads), d_params


FAMILY_CASES = [  # Each family once; d_steps = 2, pack = 2 and Adam spread over them.
    ("minimax", {}),
    ("non_saturating", dict(d_steps=2)),
    ("maximum_likelihood", dict(pack=2)),
    ("wasserstein", dict(d_steps=2, pack=2)),
    ("hinge", dict(d_optimizer="adam")),
    ("least_squares", dict(d_optimizer="adam", d_steps=2)),
    # SGD: a relativistic loss depends only on differences of D's outputs, so the
    # gradient of D's output bias is exactly 0, and the twin's hand-written Adam
    # (unlike make_gan, which differentiates √ν safely at 0) gives NaN there.
    ("relativistic_average", {}),
    ("relativistic_average_least_squares", dict(pack=2)),
    ("relativistic_average_hinge", dict(d_steps=2)),
]


def test_every_loss_family_is_covered():
    assert {family for family, _ in FAMILY_CASES} == set(steps.LOSSES)


@pytest.mark.parametrize("family, kwargs", FAMILY_CASES)
def test_unrolled_train_step_equals_a_python_loop(x64, family, kwargs):
    """Every loss family, with d_steps = 2, pack = 2 and Adam, against a hand-written step."""
    k, g_lr, d_lr = 3, 0.1, 0.2
    kwargs = dict(kwargs)
    d_steps, pack = kwargs.get("d_steps", 1), kwargs.get("pack", 1)
    if kwargs.pop("d_optimizer", "sgd") == "adam":
        d_opt, d_init, d_update = optax.adam(d_lr), adam_init, functools.partial(
            adam_update, lr=d_lr)
    else:
        d_opt, d_init, d_update = optax.sgd(d_lr), sgd_init, functools.partial(
            sgd_update, lr=d_lr)
    key = jax.random.key(0)
    g_params = _mlp_params(1, [LATENT, 8, 2], jnp.float64)
    d_params = _mlp_params(2, [2 * pack, 8, 1], jnp.float64)
    z = _normal(3, (N, LATENT), jnp.float64)
    real = _real().astype(jnp.float64)
    g_opt = optax.sgd(g_lr)
    state = steps.init_state(key, g_params, d_params, g_optimizer=g_opt, d_optimizer=d_opt)
    step = steps.make_train_step(
        generator=generator, discriminator=discriminator, g_optimizer=g_opt, d_optimizer=d_opt,
        latent_sampler=lambda key, n: z[:n], loss=family, unroll_steps=k, **kwargs)
    new_state, metrics = jit(step)(state, real)

    def twin(unroll_steps):
        return _twin_train_step(
            g_params, d_params, d_init(d_params), z, real, family=steps.LOSSES[family],
            update=d_update, g_lr=g_lr, d_steps=d_steps, unroll_steps=unroll_steps, pack=pack)

    g_twin, d_twin = twin(k)
    assert float(metrics["nonfinite"]) == 0.0
    chex.assert_trees_all_close(new_state.d_params, d_twin, rtol=1e-8, atol=1e-10)
    chex.assert_trees_all_close(new_state.g_params, g_twin, rtol=1e-5, atol=1e-8)
    g_plain, _ = twin(0)
    assert _max_abs_diff(new_state.g_params, g_plain) > 1e-6  # Unrolling changed G's update.


# --- 10. The default remat policy: chosen by cost, the same result either way. -------


def test_matmul_flops_count_products_and_convolutions():
    """2·m·k·n per product, 2·(output size)·(kernel size / output features) per convolution, × scan length."""
    a, b = jnp.zeros((5, 7)), jnp.zeros((7, 3))
    x, w = jnp.zeros((2, 9, 9, 4)), jnp.zeros((3, 3, 4, 6))  # NHWC, HWIO

    def f(a, b, x, w):
        conv = lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        looped, _ = lax.scan(lambda c, _: (c @ jnp.zeros((3, 3)), None), a @ b, None, length=4)
        return conv, jnp.tanh(looped)  # Elementwise work is not counted.

    conv_out = 2 * 5 * 5 * 6  # batch × 5 × 5 positions × 6 features
    expected = 2 * 5 * 7 * 3 + 2 * conv_out * (3 * 3 * 4) + 4 * (2 * 5 * 3 * 3)
    assert unroll._matmul_flops(jax.make_jaxpr(f)(a, b, x, w).jaxpr) == expected


def _unrolled_case(d_sizes, batch, family):
    """A make_gan step with Unrolled(3) on an MLP discriminator of ``d_sizes`` (float64)."""
    g_params = _mlp_params(1, [LATENT, 8, 2], jnp.float64)
    d_params = _mlp_params(2, d_sizes, jnp.float64)
    real = _normal(4, (batch, 2), jnp.float64, scale=0.5) + 1.0
    z = _normal(3, (batch, LATENT), jnp.float64)

    def state_and_step(remat):
        gan = steps.make_gan(generator=generator, discriminator=discriminator, g_optimizer=optax.adam(0.05),
                             d_optimizer=optax.adam(0.1), prior=lambda key, n: z[:n], loss=family,
                             unroll=steps.Unrolled(3) if remat == "default" else steps.Unrolled(3, remat=remat))
        return gan.init(jax.random.key(0), g_params, d_params), gan.step

    return state_and_step, real


# The choice is the loss's business only through the program: every non-relativistic
# family, and one relativistic one (their unrolled step is checked against a twin above).
REMAT_FAMILIES = sorted(name for name, family in steps.LOSSES.items() if not family.relativistic)


@pytest.mark.parametrize("family", REMAT_FAMILIES + ["relativistic_average"])
@pytest.mark.parametrize("d_sizes, batch, chosen", [([2, 8, 1], 32, True), ([2, 256, 256, 1], 256, False)])
def test_default_remat_policy_gives_the_plain_gradients(x64, family, d_sizes, batch, chosen, monkeypatch):
    """Unrolled(K)'s default gives remat=False's step to float precision, for every loss family.

    The small discriminator stores far more bytes per FLOP than the threshold and is
    recomputed; the 256-wide one is stored: both branches of the default are covered.
    """
    choices = []
    choose = unroll.remat_choice
    monkeypatch.setattr(unroll, "remat_choice", lambda *a: choices.append(choose(*a)) or choices[-1])
    state_and_step, real = _unrolled_case(d_sizes, batch, family)
    state, default_step = state_and_step("default")
    _, plain_step = state_and_step(False)
    a, metrics = jit(default_step)(state, real)
    b, _ = jit(plain_step)(state, real)
    assert choices == [chosen]
    assert float(metrics["nonfinite"]) == 0.0
    chex.assert_trees_all_close(a.g_params, b.g_params, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(a.g_opt_state, b.g_opt_state, rtol=1e-12, atol=1e-14)


def test_remat_choice_follows_the_threshold(monkeypatch):
    """Bytes stored per FLOP against REMAT_BYTES_PER_FLOP: 0 always recomputes, infinity never."""
    d_params = _mlp_params(2, [2, 16, 1])
    optimizer = optax.adam(0.1)
    x = _real()

    def update(carry, _):
        params, opt_state = carry
        grads = jax.grad(lambda d: jnp.mean(discriminator(d, x) ** 2))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    carry = (d_params, optimizer.init(d_params))
    monkeypatch.setattr(unroll, "REMAT_BYTES_PER_FLOP", 0.0)
    assert unroll.remat_choice(update, carry) is True
    monkeypatch.setattr(unroll, "REMAT_BYTES_PER_FLOP", float("inf"))
    assert unroll.remat_choice(update, carry) is False
