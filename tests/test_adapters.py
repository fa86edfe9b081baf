"""Tests for the flax adapters of jgan.models: linen and NNX modules as apply functions.

Each adapter is checked against the library it wraps (``module.apply`` for
linen, calling the NNX module itself), BatchNorm against its closed form, and
gradients against ``nnx.grad`` and finite differences. The apply functions
are also driven through a ``lax.scan`` training loop written only against
jgan's two calling conventions.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jgan import models

EPS = 1e-5  # flax BatchNorm's default epsilon
MOMENTUM = 0.99  # flax BatchNorm's default momentum (linen and NNX)


class LinenMLP(nn.Module):
    """A linen MLP without a ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        x = jax.nn.tanh(nn.Dense(8)(x))
        return nn.Dense(2)(x)


class LinenBatchNormNet(nn.Module):
    """A linen network whose BatchNorm follows a ``train`` argument."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Dense(4)(x)
        return nn.BatchNorm(use_running_average=not train)(x)


class LinenFixedBatchNorm(nn.Module):
    """A linen network without ``train`` whose BatchNorm always uses batch statistics."""

    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=False)(nn.Dense(4)(x))


class LinenKwargs(nn.Module):
    """Takes ``**kwargs``: doubles its output when ``train`` is passed as True."""

    @nn.compact
    def __call__(self, x, **kwargs):
        scale = 2.0 if kwargs.get("train") else 1.0
        return scale * nn.Dense(2)(x)


def _inputs(key=0, batch=6, features=3):
    return jax.random.normal(jax.random.key(key), (batch, features)) * 2.0 + 0.5


def _batch_norm(x, mean, var, scale, bias):
    """BatchNorm's closed form with given statistics."""
    return (x - mean) / jnp.sqrt(var + EPS) * scale + bias


# ----------------------------------------------------------------------------
# Linen.


def test_linen_module_without_train_is_applied_statelessly():
    module = LinenMLP()
    x = _inputs()
    params, state = models.init_model(module, jax.random.key(1), x)
    assert state == {}
    apply = models.make_apply(module, stateful=False)
    chex.assert_trees_all_close(apply(params, x), module.apply({"params": params}, x))
    # Stateful with an empty state is the same network.
    out, new_state = models.make_apply(module, stateful=True)(params, {}, x)
    chex.assert_trees_all_close(out, module.apply({"params": params}, x))
    assert new_state == {}


def test_linen_train_is_passed_through_kwargs():
    module = LinenKwargs()
    x = _inputs()
    params, _ = models.init_model(module, jax.random.key(1), x)
    plain = module.apply({"params": params}, x)
    chex.assert_trees_all_close(models.make_apply(module, stateful=False)(params, x), 2.0 * plain)
    chex.assert_trees_all_close(models.make_apply(module, stateful=False, train=False)(params, x), plain)


def test_linen_batch_norm_train_mode_equals_module_apply_and_updates_statistics():
    module = LinenBatchNormNet()
    x = _inputs()
    params, state = models.init_model(module, jax.random.key(1), x)
    assert set(state) == {"batch_stats"}
    out, new_state = models.make_apply(module, stateful=True)(params, state, x)
    ref_out, ref_state = module.apply({"params": params, **state}, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(out, ref_out)
    chex.assert_trees_all_close(new_state, dict(ref_state))
    # Closed form: normalised with the batch statistics, running averages
    # moved from (0, 1) towards them.
    h = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    mean, var = h.mean(0), h.var(0)
    bn = params["BatchNorm_0"]
    np.testing.assert_allclose(out, _batch_norm(h, mean, var, bn["scale"], bn["bias"]), rtol=1e-4, atol=1e-5)
    stats = new_state["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], (1 - MOMENTUM) * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], MOMENTUM + (1 - MOMENTUM) * var, rtol=1e-5)


def test_linen_batch_norm_eval_mode_uses_running_averages():
    module = LinenBatchNormNet()
    x = _inputs()
    params, state = models.init_model(module, jax.random.key(1), x)
    _, state = models.make_apply(module, stateful=True)(params, state, x)
    y = _inputs(key=2)
    out, same_state = models.make_apply(module, stateful=True, train=False)(params, state, y)
    assert same_state is state
    h = y @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    stats, bn = state["batch_stats"]["BatchNorm_0"], params["BatchNorm_0"]
    np.testing.assert_allclose(out, _batch_norm(h, stats["mean"], stats["var"], bn["scale"], bn["bias"]), rtol=1e-4, atol=1e-5)


def test_linen_module_without_train_with_fixed_batch_norm_is_stateful():
    module = LinenFixedBatchNorm()
    x = _inputs()
    params, state = models.init_model(module, jax.random.key(1), x)
    np.testing.assert_array_equal(state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)
    out, new_state = jax.jit(models.make_apply(module, stateful=True))(params, state, x)
    ref_out, ref_state = module.apply({"params": params, **state}, x, mutable=["batch_stats"])
    chex.assert_trees_all_close(out, ref_out)
    chex.assert_trees_all_close(new_state, dict(ref_state))
    assert not np.allclose(new_state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)
    with pytest.raises(ValueError, match="stateful=True"):
        models.make_apply(module, stateful=False)(params, x)
    with pytest.raises(ValueError, match="immutable"):
        models.make_apply(module, stateful=True, train=False)(params, state, x)


def test_jgan_module_still_receives_train():
    """A jgan DCGAN critic: train mode normalises with batch statistics, eval mode does not."""
    module = models.DCGANDiscriminator(features=4)
    x = jax.random.uniform(jax.random.key(3), (4, 28, 28, 1), minval=-1.0, maxval=1.0)
    params, state = models.init_model(module, jax.random.key(1), x)
    out, new_state = models.make_apply(module, stateful=True)(params, state, x)
    ref_out, ref_state = module.apply({"params": params, **state}, x, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(out, ref_out)
    chex.assert_trees_all_close(new_state, dict(ref_state))
    eval_out, _ = models.make_apply(module, stateful=True, train=False)(params, state, x)
    chex.assert_trees_all_close(eval_out, module.apply({"params": params, **state}, x, train=False))
    assert not np.allclose(eval_out, out)
    with pytest.raises(ValueError, match="stateful=True"):
        models.make_apply(module, stateful=False)(params, x)


def test_linen_adapters_reject_other_objects():
    with pytest.raises(TypeError, match="linen"):
        models.make_apply(lambda x: x, stateful=False)
    with pytest.raises(TypeError, match="make_nnx_apply"):
        models.make_apply(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), stateful=False)
    with pytest.raises(TypeError, match="split_nnx_module"):
        models.init_model(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jax.random.key(0), jnp.zeros((1, 2)))


# ----------------------------------------------------------------------------
# NNX.


class NNXMLP(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.layers = nnx.List([nnx.Linear(3, 8, rngs=rngs, param_dtype=dtype), nnx.Linear(8, 2, rngs=rngs, param_dtype=dtype)])

    def __call__(self, x):
        return self.layers[1](jax.nn.tanh(self.layers[0](x)))


class NNXBatchNormNet(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.linear = nnx.Linear(3, 4, rngs=rngs, param_dtype=dtype)
        self.norm = nnx.BatchNorm(4, rngs=rngs, param_dtype=dtype)

    def __call__(self, x):
        return self.norm(self.linear(x))


def _bn_net(dtype=jnp.float32):
    module = NNXBatchNormNet(rngs=nnx.Rngs(0), dtype=dtype)
    # Non-trivial scale and bias, so that they show up in outputs and gradients.
    module.norm.scale[...] = jnp.array([0.5, 1.0, 1.5, 2.0], dtype)
    module.norm.bias[...] = jnp.array([0.1, -0.2, 0.3, 0.0], dtype)
    return module


def _state_of(module, variable_type):
    return nnx.to_pure_dict(nnx.state(module, variable_type))


def test_nnx_mlp_is_stateless_and_equals_the_module():
    module = NNXMLP(rngs=nnx.Rngs(0))
    x = _inputs()
    params, state = models.split_nnx_module(module)
    assert state == {}
    chex.assert_trees_all_equal(params, _state_of(module, nnx.Param))
    assert set(params["layers"]) == {0, 1}
    apply = models.make_nnx_apply(module)  # stateful=None: stateless here
    chex.assert_trees_all_close(apply(params, x), module(x))
    # Different parameters give the output of a module holding them.
    shifted = jax.tree.map(lambda p: p + 0.1, params)
    reference = nnx.clone(module)
    nnx.update(reference, jax.tree.map(lambda p: p + 0.1, nnx.state(reference, nnx.Param)))
    chex.assert_trees_all_close(apply(shifted, x), reference(x))
    # stateful=True is allowed without state: the state is {}.
    out, new_state = models.make_nnx_apply(module, stateful=True)(params, {}, x)
    chex.assert_trees_all_close(out, module(x))
    assert new_state == {}


def test_nnx_batch_norm_train_mode_equals_the_module_and_returns_its_statistics():
    module = _bn_net()
    module.eval()  # the adapter's mode, not the module's, decides
    x = _inputs()
    params, state = models.split_nnx_module(module)
    out, new_state = models.make_nnx_apply(module, train=True)(params, state, x)

    reference = nnx.clone(module)
    reference.train()
    chex.assert_trees_all_close(out, reference(x))
    chex.assert_trees_all_close(new_state, _state_of(reference, nnx.BatchStat))
    # Closed form: batch statistics, running averages moved from (0, 1).
    h = module.linear(x)
    mean, var = h.mean(0), h.var(0)
    np.testing.assert_allclose(out, _batch_norm(h, mean, var, module.norm.scale[...], module.norm.bias[...]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_state["norm"]["mean"], (1 - MOMENTUM) * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state["norm"]["var"], MOMENTUM + (1 - MOMENTUM) * var, rtol=1e-5)
    # Pure: the module and the given state are untouched, and the module
    # kept its own (eval) mode.
    chex.assert_trees_all_equal(_state_of(module, nnx.BatchStat), state)
    np.testing.assert_array_equal(state["norm"]["mean"], 0.0)
    assert module.norm.use_running_average


def test_nnx_batch_norm_eval_mode_uses_running_averages_and_keeps_the_state():
    module = _bn_net()
    x, y = _inputs(), _inputs(key=2)
    params, state = models.split_nnx_module(module)
    _, state = models.make_nnx_apply(module)(params, state, x)
    out, same_state = models.make_nnx_apply(module, train=False)(params, state, y)
    assert same_state is state

    trained = models.merge_nnx_module(module, params, state)
    trained.eval()
    chex.assert_trees_all_close(out, trained(y))
    h = module.linear(y)
    expected = _batch_norm(h, state["norm"]["mean"], state["norm"]["var"], module.norm.scale[...], module.norm.bias[...])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_nnx_apply_is_jittable_without_retracing():
    module = _bn_net()
    x = _inputs()
    params, state = models.split_nnx_module(module)
    apply = models.make_nnx_apply(module)
    eager_out, eager_state = apply(params, state, x)
    jitted = jax.jit(chex.assert_max_traces(apply, n=1))
    out, new_state = jitted(params, state, x)
    chex.assert_trees_all_close(out, eager_out, rtol=1e-6)
    chex.assert_trees_all_close(new_state, eager_state, rtol=1e-6)
    # New values of the same structure: no second trace.
    jitted(jax.tree.map(lambda p: p * 1.1, params), new_state, x + 1.0)
    stateless = jax.jit(models.make_nnx_apply(NNXMLP(rngs=nnx.Rngs(0))))
    mlp_params, _ = models.split_nnx_module(NNXMLP(rngs=nnx.Rngs(0)))
    chex.assert_shape(stateless(mlp_params, x), (x.shape[0], 2))


def test_nnx_gradients_equal_nnx_grad_of_the_module():
    module = _bn_net()
    x = _inputs()
    target = jnp.arange(4.0)
    params, state = models.split_nnx_module(module)
    apply = models.make_nnx_apply(module)

    def loss(params):
        out, _ = apply(params, state, x)
        return jnp.sum((out - target) ** 2 * jnp.arange(1.0, 7.0)[:, None])

    def module_loss(network):
        return jnp.sum((network(x) - target) ** 2 * jnp.arange(1.0, 7.0)[:, None])

    reference = nnx.clone(module)
    reference.train()
    expected = nnx.to_pure_dict(nnx.grad(module_loss)(reference))
    grads = jax.jit(jax.grad(loss))(params)
    chex.assert_trees_all_close(grads, expected, rtol=1e-5, atol=2e-5)
    # A bias before a train-mode BatchNorm is subtracted with the batch mean:
    # its gradient is zero; every other gradient is not.
    np.testing.assert_allclose(grads["linear"]["bias"], 0.0, atol=2e-5)
    for g in jax.tree.leaves({**grads, "linear": {"kernel": grads["linear"]["kernel"]}}):
        assert np.abs(g).max() > 1e-2


def test_nnx_gradients_match_finite_differences(x64):
    module = _bn_net(dtype=jnp.float64)
    x = _inputs().astype(jnp.float64)
    params, state = models.split_nnx_module(module)
    state = jax.tree.map(lambda s: s.astype(jnp.float64), state)  # NNX keeps BatchStat in float32
    apply = models.make_nnx_apply(module)

    def loss(params):
        out, _ = apply(params, state, x)
        return jnp.sum(jnp.sin(out) * jnp.arange(1.0, 7.0)[:, None])

    jax.test_util.check_grads(loss, (params,), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


def test_nnx_rng_state_is_model_state_and_advances_in_train_mode():
    class Dropped(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 16, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.dropout(self.linear(x))

    module = Dropped(nnx.Rngs(0, dropout=1))
    x = _inputs()
    params, state = models.split_nnx_module(module)
    assert set(state["dropout"]["rngs"]) == {"count", "key"}
    apply = jax.jit(models.make_nnx_apply(module))
    first, state_1 = apply(params, state, x)
    second, state_2 = apply(params, state_1, x)
    assert int(state_2["dropout"]["rngs"]["count"]) == int(state["dropout"]["rngs"]["count"]) + 2
    assert not np.array_equal(first == 0, second == 0)  # fresh masks
    eval_out, same = models.make_nnx_apply(module, train=False)(params, state_2, x)
    assert same is state_2
    chex.assert_trees_all_close(eval_out, module.linear(x))


def test_merge_nnx_module_returns_a_module_holding_the_trained_variables():
    module = _bn_net()
    x = _inputs()
    params, state = models.split_nnx_module(module)
    params = jax.tree.map(lambda p: p + 0.5, params)
    _, state = models.make_nnx_apply(module)(params, state, x)
    trained = models.merge_nnx_module(module, params, state)
    assert isinstance(trained, NNXBatchNormNet) and trained is not module
    chex.assert_trees_all_equal(_state_of(trained, nnx.Param), params)
    chex.assert_trees_all_equal(_state_of(trained, nnx.BatchStat), state)
    # The original keeps its own values.
    np.testing.assert_array_equal(module.norm.mean[...], 0.0)
    assert not np.allclose(module.linear.kernel[...], trained.linear.kernel[...])
    # Round trip.
    chex.assert_trees_all_equal(models.split_nnx_module(trained), (params, state))


def test_nnx_adapters_reject_misuse():
    module = _bn_net()
    params, state = models.split_nnx_module(module)
    with pytest.raises(ValueError, match="stateful=False.*BatchStat|BatchStat.*stateful=False"):
        models.make_nnx_apply(module, stateful=False)
    with pytest.raises(ValueError, match="model_state"):
        models.make_nnx_apply(module)(params, {}, _inputs())
    with pytest.raises(ValueError, match="params"):
        models.make_nnx_apply(module)({"linear": params["linear"]}, state, _inputs())
    with pytest.raises(ValueError, match="params"):
        models.merge_nnx_module(module, {}, state)
    for function in (models.make_nnx_apply, models.split_nnx_module):
        with pytest.raises(TypeError, match="nnx"):
            function(lambda x: x)
    with pytest.raises(TypeError, match="make_apply"):
        models.make_nnx_apply(LinenMLP())
    with pytest.raises(TypeError, match="nnx"):
        models.merge_nnx_module(LinenMLP(), params, state)


# ----------------------------------------------------------------------------
# The calling conventions, end to end.


def _stateless_training(apply, params, x, steps=5, lr=0.05):
    """SGD on mean(out²) through ``apply(params, x) -> out``, as a scan."""

    def step(params, _):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(apply(p, x) ** 2))(params)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

    return jax.lax.scan(step, params, None, length=steps)


def _stateful_training(apply, params, state, x, steps=5, lr=0.05):
    """SGD through ``apply(params, state, x) -> (out, state)``, the state threaded in the carry."""

    def step(carry, _):
        params, state = carry

        def loss(p):
            out, new_state = apply(p, state, x)
            return jnp.mean((out - 1.0) ** 2), new_state

        (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return (jax.tree.map(lambda p, g: p - lr * g, params, grads), new_state), value

    return jax.lax.scan(step, (params, state), None, length=steps)


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_stateless_convention_end_to_end(kind):
    x = _inputs()
    if kind == "linen":
        params, _ = models.init_model(LinenMLP(), jax.random.key(0), x)
        apply = models.make_apply(LinenMLP(), stateful=False)
    else:
        module = NNXMLP(rngs=nnx.Rngs(0))
        params, _ = models.split_nnx_module(module)
        apply = models.make_nnx_apply(module, stateful=False)
    new_params, losses = jax.jit(lambda p: _stateless_training(apply, p, x))(params)
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_stateful_convention_end_to_end(kind):
    x = _inputs()
    if kind == "linen":
        params, state = models.init_model(LinenBatchNormNet(), jax.random.key(0), x)
        apply = models.make_apply(LinenBatchNormNet(), stateful=True)
    else:
        module = _bn_net()
        params, state = models.split_nnx_module(module)
        apply = models.make_nnx_apply(module, stateful=True)
    (new_params, new_state), losses = jax.jit(lambda p, s: _stateful_training(apply, p, s, x))(params, state)
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert losses[-1] < losses[0]
    # Five updates of the running mean from 0 towards the batch mean.
    assert not np.allclose(jax.tree.leaves(new_state)[0], jax.tree.leaves(state)[0])
