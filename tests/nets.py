"""Hand-written networks for the core's tests: the core takes plain apply functions."""

import jax
import jax.numpy as jnp


def mlp_init(key, sizes, dtype=jnp.float32):
    """Parameters of an MLP with layer widths ``sizes`` (a list of (w, b) pairs).

    Biases are random (U(±1/√fan_in), as PyTorch initialises them): with zero
    biases a ReLU-family critic is positively homogeneous, and on 1-D data of
    one sign the bias gradients of the real and fake terms cancel exactly, so
    a WGAN critic stays f(x) = c·x forever.
    """
    params = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        k_w, k_b = jax.random.split(jax.random.fold_in(key, i))
        bound = 1.0 / jnp.sqrt(fan_in).astype(dtype)
        w = jax.random.normal(k_w, (fan_in, fan_out), dtype) * bound
        b = jax.random.uniform(k_b, (fan_out,), dtype, -bound, bound)
        params.append((w, b))
    return params


def mlp(params, x, activation=jax.nn.leaky_relu):
    """``x [batch, in] -> [batch, out]``."""
    x = x.reshape(x.shape[0], -1)
    for w, b in params[:-1]:
        x = activation(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def generator(params, z):
    return mlp(params, z)


def discriminator(params, x):
    return mlp(params, x)[:, 0]


def affine_generator(params, z):
    """x = μ + σ·z: the location-scale family, which contains any 1-D Gaussian."""
    return params["mu"] + params["sigma"] * z
