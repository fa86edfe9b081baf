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
