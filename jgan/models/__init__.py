"""Flax linen networks for GANs and adapters to jgan's apply conventions.

This is the only part of jgan that imports flax. ``make_apply`` turns a module
into the ``apply`` function that ``jgan.steps`` takes:

- stateless: ``apply(params, x, *args) -> out`` (the MLPs);
- stateful: ``apply(params, model_state, x, *args) -> (out, new_model_state)``
  (the DCGAN networks, whose BatchNorm statistics live in ``model_state``).

Example::

    generator = DCGANGenerator(image_size=32, channels=3)
    g_params, g_state = init_model(generator, key, jnp.zeros((1, 100)))
    g_apply = make_apply(generator, stateful=True)
    images, g_state = g_apply(g_params, g_state, z)
"""

from jgan.models._apply import init_model
from jgan.models._apply import make_apply
from jgan.models._apply import split_variables
from jgan.models._dcgan import DCGANDiscriminator
from jgan.models._dcgan import DCGANGenerator
from jgan.models._mlp import MLPDiscriminator
from jgan.models._mlp import MLPGenerator

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLPDiscriminator",
    "MLPGenerator",
    "init_model",
    "make_apply",
    "split_variables",
]
