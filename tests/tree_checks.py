"""Comparisons of whole states shared by the step tests."""

import chex
import jax
import jax.numpy as jnp


def key_bits(tree):
    """The tree with every typed PRNG key replaced by its bits (so keys compare as data)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


def assert_close_to_roundoff(actual, expected):
    """Equal to float32 round-off (rtol 1e-5, atol 1e-6); PRNG keys compare as their bits."""
    chex.assert_trees_all_close(key_bits(actual), key_bits(expected), rtol=1e-5, atol=1e-6)
