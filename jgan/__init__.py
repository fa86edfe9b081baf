"""jgan: Generative Adversarial Networks in JAX as pure, compiled functions.

Submodules are imported explicitly (``from jgan import steps``); the core
(``losses``, ``penalties``, ``unroll``, ``steps``, ``metrics``) never imports
flax, so it works with any network library that gives an ``apply`` function.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
