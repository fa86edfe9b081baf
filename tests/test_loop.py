"""Tests of jgan.loop: run_steps against Python loops, non-finite handling, jit and vmap."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from nets import discriminator, generator, mlp_init

from jgan import loop, steps

LATENT = 4
BATCH = 16


def _gan(g_learning_rate=1e-2):
    return steps.make_gan(
        generator=generator,
        discriminator=discriminator,
        g_optimizer=optax.sgd(g_learning_rate),
        d_optimizer=optax.adam(1e-3),
        prior=LATENT,
    )


def _init(gan, seed):
    key = jax.random.key(seed)
    g_params = mlp_init(jax.random.fold_in(key, 1), [LATENT, 8, 2])
    d_params = mlp_init(jax.random.fold_in(key, 2), [2, 8, 1])
    return gan.init(jax.random.fold_in(key, 3), g_params, d_params)


def _real(key, i):
    """The real batch of step ``i``: a shifted Gaussian."""
    return 1.0 + 0.1 * jax.random.normal(jax.random.fold_in(key, i), (BATCH, 2))


def _python_loop(step, state, data, indices):
    """The twin of run_steps: the jitted step, one call per step."""
    jitted = jax.jit(step)
    history = []
    for i in indices:
        state, metrics = jitted(state, data(jnp.int32(i)))
        history.append(metrics)
    return state, {k: np.stack([np.asarray(m[k]) for m in history]) for k in history[0]}


def _plain(tree):
    """``tree`` with its PRNG keys as their raw data, which chex can compare."""

    def plain(x):
        if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(plain, tree)


def _assert_close(x, y, rtol=1e-6, atol=1e-7):
    chex.assert_trees_all_close(_plain(x), _plain(y), rtol=rtol, atol=atol)


def _assert_equal(x, y):
    chex.assert_trees_all_equal(_plain(x), _plain(y))


# ---------------------------------------------------------------------------
# A toy step that overflows float32 at a known step.


def _toy_step(state, factor):
    """x <- x·factor; 1e10 per step overflows float32 (max 3.4e38) from 1.0 at step 3."""
    x = state["x"] * factor
    new_state = {"x": x, "count": state["count"] + 1, "key": state["key"]}
    return new_state, {"x": x, "nonfinite": 1.0 - jnp.isfinite(x).astype(jnp.float32)}


def _toy_state(x=1.0):
    return {"x": jnp.float32(x), "count": jnp.int32(0), "key": jax.random.key(0)}


def _factor(i):
    return jnp.float32(1e10)


OVERFLOW_STEP = 3  # 1e10, 1e20, 1e30 are finite, 1e40 is not.


# ---------------------------------------------------------------------------
# Equivalence with a Python loop.


@pytest.mark.parametrize("on_nonfinite", ["continue", "skip", "stop"])
def test_run_steps_equals_a_python_loop_of_the_jitted_step(on_nonfinite):
    gan = _gan()
    state = _init(gan, 0)
    key = jax.random.key(7)
    data = functools.partial(_real, key)
    start = 5
    run = jax.jit(
        functools.partial(loop.run_steps, gan.step, data=data, num_steps=6, on_nonfinite=on_nonfinite)
    )
    final, metrics, info = run(state, start=start)
    expected_state, expected_metrics = _python_loop(gan.step, state, data, range(start, start + 6))
    _assert_close(final, expected_state)
    extra = {"skipped": np.zeros(6, np.float32)} if on_nonfinite == "skip" else {}
    _assert_close(metrics, {**expected_metrics, **extra})
    assert int(final.step) == 6
    assert metrics["d_loss"].shape == (6,)
    _assert_equal(info, loop.RunInfo(jnp.int32(6), jnp.int32(0), jnp.int32(-1)))


def test_stacked_batches_equal_the_data_function():
    gan = _gan()
    state = _init(gan, 0)
    key = jax.random.key(3)
    data = functools.partial(_real, key)
    stacked = jax.vmap(data)(jnp.arange(4))
    from_function = loop.run_steps(gan.step, state, data, 4)
    from_stack = jax.jit(loop.run_steps, static_argnums=(0, 3))(gan.step, state, stacked, 4)
    _assert_close(from_stack, from_function)


def test_vmap_over_seeds_equals_separate_runs():
    gan = _gan()
    seeds = [0, 1, 2]
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[_init(gan, s) for s in seeds])
    keys = jax.random.split(jax.random.key(11), 3)

    def train(state, key):
        return loop.run_steps(gan.step, state, functools.partial(_real, key), 5, on_nonfinite="stop")

    batched = jax.jit(jax.vmap(train))(states, keys)
    for s in range(3):
        single = jax.jit(train)(jax.tree.map(lambda x: x[s], states), keys[s])
        _assert_close(jax.tree.map(lambda x: x[s], batched), single, rtol=1e-5, atol=1e-6)
    # The seeds did differ.
    assert not np.allclose(batched[0].g_params[0][0][0], batched[0].g_params[0][0][1])


# ---------------------------------------------------------------------------
# Non-finite updates.


def test_continue_reports_the_overflowing_step_and_keeps_going():
    state, metrics, info = loop.run_steps(_toy_step, _toy_state(), _factor, 5)
    np.testing.assert_array_equal(metrics["nonfinite"], [0, 0, 0, 1, 1])
    assert np.isinf(state["x"]) and int(state["count"]) == 5
    assert (int(info.updates), int(info.nonfinite), int(info.first_nonfinite)) == (5, 2, OVERFLOW_STEP)
    with pytest.raises(steps.NonFiniteError, match=f"2 non-finite step.*first at step {OVERFLOW_STEP}"):
        loop.check_run(info)


def test_skip_leaves_the_last_finite_state_and_counts_the_skips():
    state, metrics, info = loop.run_steps(_toy_step, _toy_state(), _factor, 6, on_nonfinite="skip")
    # Every step from the overflowing one on overflows again and is skipped.
    np.testing.assert_array_equal(metrics["skipped"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(state["x"], 1e30, rtol=1e-6)
    assert int(state["count"]) == OVERFLOW_STEP
    assert (int(info.updates), int(info.nonfinite), int(info.first_nonfinite)) == (3, 3, OVERFLOW_STEP)
    loop.check_run(info, max_nonfinite=3)
    with pytest.raises(steps.NonFiniteError):
        loop.check_run(info, max_nonfinite=2)


def test_skip_continues_after_a_transient_non_finite_step():
    factor = lambda i: jnp.where(i == 2, jnp.inf, 2.0)  # noqa: E731
    state, metrics, info = loop.run_steps(_toy_step, _toy_state(), factor, 5, on_nonfinite="skip")
    np.testing.assert_array_equal(metrics["skipped"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(metrics["x"], [2, 4, np.inf, 8, 16])
    assert float(state["x"]) == 16.0 and int(state["count"]) == 4
    assert (int(info.updates), int(info.nonfinite), int(info.first_nonfinite)) == (4, 1, 2)


def test_stop_returns_the_state_before_the_bad_step():
    state, metrics, info = loop.run_steps(
        _toy_step, _toy_state(), _factor, 6, on_nonfinite="stop", start=100
    )
    np.testing.assert_allclose(state["x"], 1e30, rtol=1e-6)
    assert int(state["count"]) == OVERFLOW_STEP
    assert (int(info.updates), int(info.nonfinite), int(info.first_nonfinite)) == (3, 1, 100 + OVERFLOW_STEP)
    # The stopping step's metrics are its own; the later ones are zeros.
    np.testing.assert_array_equal(metrics["nonfinite"], [0, 0, 0, 1, 0, 0])
    np.testing.assert_allclose(metrics["x"], [1e10, 1e20, 1e30, np.inf, 0, 0], rtol=1e-6)
    assert "skipped" not in metrics
    with pytest.raises(steps.NonFiniteError, match=f"at step {100 + OVERFLOW_STEP}"):
        loop.check_run(info)


def test_stop_does_not_resume_after_a_transient_non_finite_step():
    factor = lambda i: jnp.where(i == 2, jnp.inf, 2.0)  # noqa: E731
    state, _, info = loop.run_steps(_toy_step, _toy_state(), factor, 5, on_nonfinite="stop")
    assert float(state["x"]) == 4.0 and int(state["count"]) == 2
    assert (int(info.updates), int(info.first_nonfinite)) == (2, 2)


@pytest.mark.parametrize("on_nonfinite", ["skip", "stop"])
def test_under_vmap_each_seed_handles_its_own_non_finite_steps(on_nonfinite):
    # Seed 1 starts at 1e-30: 1e10 per step stays finite for 6 steps.
    xs = jnp.array([1.0, 1e-30, 1.0], jnp.float32)
    states = jax.vmap(_toy_state)(xs)
    run = jax.vmap(lambda s: loop.run_steps(_toy_step, s, _factor, 6, on_nonfinite=on_nonfinite))
    final, metrics, info = jax.jit(run)(states)
    for s in range(3):
        single = loop.run_steps(_toy_step, _toy_state(xs[s]), _factor, 6, on_nonfinite=on_nonfinite)
        _assert_equal(jax.tree.map(lambda x: x[s], (final, metrics, info)), single)
    np.testing.assert_array_equal(info.first_nonfinite, [OVERFLOW_STEP, -1, OVERFLOW_STEP])
    np.testing.assert_allclose(final["x"], [1e30, 1e30, 1e30], rtol=1e-6)
    np.testing.assert_array_equal(final["count"], [3, 6, 3])
    with pytest.raises(steps.NonFiniteError, match=r"2 of 3 runs \(seed 0: .* from step 3, seed 2"):
        loop.check_run(info)


def test_gan_stops_at_the_step_whose_learning_rate_is_infinite():
    k = 4
    gan = _gan(g_learning_rate=lambda count: jnp.where(count < k, 1e-2, jnp.inf))
    state = _init(gan, 0)
    data = functools.partial(_real, jax.random.key(5))
    reference, _ = _python_loop(gan.step, state, data, range(k))

    stopped, metrics, info = jax.jit(
        functools.partial(loop.run_steps, gan.step, data=data, num_steps=7, on_nonfinite="stop")
    )(state)
    _assert_close(stopped, reference)
    chex.assert_tree_all_finite(_plain(stopped))
    assert (int(info.updates), int(info.nonfinite), int(info.first_nonfinite)) == (k, 1, k)
    np.testing.assert_array_equal(metrics["nonfinite"], [0, 0, 0, 0, 1, 0, 0])

    # "skip": the optimizer's count stays at k, so every later update is skipped too.
    skipped, metrics, info = loop.run_steps(gan.step, state, data, 7, on_nonfinite="skip")
    _assert_close(skipped, reference)
    np.testing.assert_array_equal(metrics["skipped"], [0, 0, 0, 0, 1, 1, 1])
    assert (int(info.updates), int(info.nonfinite), int(info.first_nonfinite)) == (k, 3, k)


def test_gan_seed_with_a_corrupt_batch_leaves_the_other_seeds_unaffected():
    gan = _gan()
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[_init(gan, s) for s in range(3)])
    keys = jax.random.split(jax.random.key(2), 3)
    corrupt = jnp.array([False, True, False])

    def train(state, key, bad, on_nonfinite):
        def data(i):  # Seed 1's batch of step 2 holds a NaN.
            return jnp.where(bad & (i == 2), jnp.nan, _real(key, i))

        return loop.run_steps(gan.step, state, data, 5, on_nonfinite=on_nonfinite)

    for on_nonfinite in ("skip", "stop"):
        final, _, info = jax.jit(jax.vmap(functools.partial(train, on_nonfinite=on_nonfinite)))(
            states, keys, corrupt
        )
        clean = jax.jit(jax.vmap(functools.partial(train, on_nonfinite="continue")))(
            states, keys, jnp.zeros(3, bool)
        )[0]
        for s in (0, 2):
            _assert_equal(jax.tree.map(lambda x: x[s], final), jax.tree.map(lambda x: x[s], clean))
        chex.assert_tree_all_finite(_plain(final))
        np.testing.assert_array_equal(info.first_nonfinite, [-1, 2, -1])
        np.testing.assert_array_equal(info.updates, [5, 4 if on_nonfinite == "skip" else 2, 5])
        np.testing.assert_array_equal(final.step, [5, 4 if on_nonfinite == "skip" else 2, 5])


# ---------------------------------------------------------------------------
# Compilation.


@pytest.mark.parametrize("on_nonfinite", ["continue", "skip", "stop"])
def test_the_step_is_traced_once_and_a_second_call_does_not_recompile(on_nonfinite):
    gan = _gan()
    chex.clear_trace_counter()
    counted = chex.assert_max_traces(gan.step, n=1)
    key = jax.random.key(0)
    run = jax.jit(
        functools.partial(loop.run_steps, counted, num_steps=3, on_nonfinite=on_nonfinite),
        static_argnames="data",
    )
    data = functools.partial(_real, key)
    state, _, _ = run(_init(gan, 0), data=data, start=jnp.int32(0))
    # New values of the same shapes (a traced start included): no retrace.
    state, _, _ = run(state, data=data, start=state.step)
    state, _, _ = run(_init(gan, 1), data=data, start=jnp.int32(3))
    assert int(state.step) == 3
    with pytest.raises(AssertionError):  # The guard is live: another data function retraces.
        run(state, data=functools.partial(_real, jax.random.key(1)), start=jnp.int32(0))


# ---------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_steps=2.0), TypeError, "num_steps must be a Python int"),
        (dict(num_steps=True), TypeError, "num_steps must be a Python int"),
        (dict(num_steps=0), ValueError, "num_steps must be >= 1"),
        (dict(on_nonfinite="raise"), ValueError, "on_nonfinite must be one of"),
        (dict(on_nonfinite=None), ValueError, "on_nonfinite must be one of"),
        (dict(step=None), TypeError, "step must be a callable"),
        (dict(start=1.5), TypeError, "start must be an integer scalar"),
        (dict(start=jnp.zeros(2, jnp.int32)), ValueError, "start must be a scalar"),
        (dict(data="batches"), TypeError, "data must be a callable"),
        (dict(data=jnp.ones((3, 2))), ValueError, "leading axis of num_steps = 4"),
        (dict(step=lambda s, b: (s, {"loss": s})), ValueError, r"metrics\['nonfinite'\]"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    args = dict(step=_toy_step, state=_toy_state(), data=_factor, num_steps=4)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        loop.run_steps(**args)


def test_check_run_refuses_what_is_not_a_run_info():
    with pytest.raises(TypeError, match="info must be a RunInfo"):
        loop.check_run({"nonfinite": 0})
    with pytest.raises(ValueError, match="max_nonfinite must be >= 0"):
        loop.check_run(loop.RunInfo(jnp.int32(1), jnp.int32(0), jnp.int32(-1)), max_nonfinite=-1)


# --- Straight-line loops (jgan._scan) ------------------------------------------------


@pytest.mark.parametrize("length", [1, 3])
def test_unrolled_scan_equals_lax_scan(length):
    from jgan._scan import unrolled_scan

    def f(carry, x):
        a, b = carry
        return (a * x["u"] + b, b - jnp.sum(x["v"])), {"y": a + x["u"], "z": jnp.outer(x["v"], b)}

    rng = np.random.default_rng(0)
    init = (jnp.asarray(rng.normal(size=3), jnp.float32), jnp.asarray(rng.normal(size=3), jnp.float32))
    xs = {"u": jnp.asarray(rng.normal(size=(length, 3)), jnp.float32),
          "v": jnp.asarray(rng.normal(size=(length, 4)), jnp.float32)}
    expected = jax.lax.scan(f, init, xs)
    actual = unrolled_scan(f, init, xs, length)
    chex.assert_trees_all_close(actual, expected, rtol=1e-6)
    # And no loop is left in the program.
    assert "scan" not in str(jax.make_jaxpr(lambda i, x: unrolled_scan(f, i, x, length))(init, xs))


def _primitives(jaxpr):
    from jax.extend import core as jcore

    for eqn in jaxpr.eqns:
        yield eqn.primitive.name
        for sub in jcore.jaxprs_in_params(eqn.params):
            yield from _primitives(sub)


def test_critic_updates_and_a_one_step_chunk_have_no_loop():
    """XLA:CPU runs strided convolutions' kernel derivatives 15-35x slower inside loops."""
    opt = optax.sgd(0.1)
    gan = steps.make_gan(generator=generator, discriminator=discriminator, g_optimizer=opt, d_optimizer=opt,
                         prior=LATENT, d_steps=3)
    state = gan.init(jax.random.key(0), mlp_init(jax.random.key(1), [LATENT, 8, 2]),
                     mlp_init(jax.random.key(2), [2, 8, 1]))
    real = jnp.zeros((16, 2))
    step_prims = set(_primitives(jax.make_jaxpr(gan.step)(state, real).jaxpr))
    assert not step_prims & {"scan", "while"}, step_prims & {"scan", "while"}
    one = jax.make_jaxpr(lambda s, b: loop.run_steps(gan.step, s, b, 1))(state, real[None]).jaxpr
    assert not set(_primitives(one)) & {"scan", "while"}
    two = jax.make_jaxpr(lambda s, b: loop.run_steps(gan.step, s, b, 2))(state, jnp.stack([real, real])).jaxpr
    assert "scan" in set(_primitives(two))  # Longer chunks stay one compiled loop.
