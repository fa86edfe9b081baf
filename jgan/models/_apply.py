"""Adapters from flax linen modules to the apply conventions of ``jgan.steps``.

The core of jgan never imports flax. It calls networks through one of two
conventions:

- stateless: ``apply(params, x, *args) -> out``;
- stateful: ``apply(params, model_state, x, *args) -> (out, new_model_state)``,
    where ``model_state`` holds every non-parameter collection (BatchNorm
    statistics live in ``{"batch_stats": ...}``).

``*args`` is optionally a ``labels`` array for conditional networks. Every jgan
module is called as ``module(x, *args, train=...)``.
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax

Params = Any
ModelState = dict[str, Any]


def split_variables(variables: Mapping[str, Any]) -> tuple[Params, ModelState]:
    """Splits flax variables into parameters and model state.

    Args:
        variables: the collections returned by ``module.init``, e.g.
            ``{"params": ..., "batch_stats": ...}``.

    Returns:
        ``(params, model_state)``: ``params`` is the ``"params"`` collection
        (``{}`` if the module has no parameters) and ``model_state`` a dict of
        every other collection (``{}`` if there is none).
    """
    params = variables.get("params", {})
    model_state = {name: value for name, value in variables.items() if name != "params"}
    return params, model_state


def make_apply(module: nn.Module, *, stateful: bool, train: bool = True) -> Callable[..., Any]:
    """Makes an apply function for ``jgan.steps`` from a flax linen module.

    The returned function is pure and closes over ``module`` only (a hashable,
    static description), so it can be passed to ``jax.jit`` directly.

    With ``stateful=True`` the function is
    ``apply(params, model_state, x, *args) -> (out, new_model_state)``. In
    training mode every collection of ``model_state`` is mutable, so BatchNorm
    normalises with the batch statistics and returns updated running averages;
    with ``train=False`` it normalises with the running averages and returns
    ``model_state`` unchanged. An empty ``model_state`` (``{}``) is allowed and
    returned as ``{}``, so a step can treat a network without BatchNorm (e.g. an
    MLP generator) and one with it the same way.

    With ``stateful=False`` the function is ``apply(params, x, *args) -> out``;
    it is for modules whose only collection is ``"params"``.

    Misuse is reported when the function is first called (or traced): a module
    that reads a collection absent from the variables it was given (a BatchNorm
    network applied statelessly, or statefully with ``model_state={}``) raises
    ``ValueError``.

    Args:
        module: a flax linen module called as ``module(x, *args, train=...)``.
        stateful: whether the apply function takes and returns ``model_state``.
        train: the ``train`` flag passed to the module (BatchNorm uses batch
            statistics when ``True``, running averages when ``False``).

    Returns:
        the apply function in the convention chosen by ``stateful``.
    """

    def _call(variables, x, args, mutable):
        try:
            return module.apply(variables, x, *args, train=train, mutable=mutable)
        except flax.errors.ScopeCollectionNotFound as error:
            given = sorted(variables)
            raise ValueError(
                f"{type(module).__name__} reads a variable collection absent from the "
                f"variables it was given ({given}). A module with BatchNorm needs "
                "make_apply(module, stateful=True) and the model_state returned by "
                "init_model / split_variables."
            ) from error

    if stateful:

        def stateful_apply(params, model_state, x, *args):
            variables = {"params": params, **model_state}
            if not train:
                return _call(variables, x, args, False), model_state
            out, new_state = _call(variables, x, args, list(model_state))
            return out, dict(new_state)

        return stateful_apply

    def stateless_apply(params, x, *args):
        return _call({"params": params}, x, args, False)

    return stateless_apply


def init_model(module: nn.Module, key: jax.Array, sample_input: jax.Array, *args: Any) -> tuple[Params, ModelState]:
    """Initialises a module and splits its variables.

    The module is initialised in evaluation mode (``train=False``): BatchNorm
    running averages start at mean 0 and variance 1 whatever the sample, so
    ``sample_input`` only provides shapes and dtypes (a batch of zeros will do).

    Args:
        module: a flax linen module called as ``module(x, *args, train=...)``.
        key: the PRNG key for parameter initialisation.
        sample_input: an input batch, e.g. latents ``[batch, latent_dim]`` or
            images ``[batch, height, width, channels]``.
        *args: further sample inputs, e.g. ``labels`` ``[batch]``.

    Returns:
        ``(params, model_state)`` as in :func:`split_variables`.
    """
    variables = module.init(key, sample_input, *args, train=False)
    return split_variables(variables)
