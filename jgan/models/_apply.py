"""Adapters from flax modules to the apply conventions of ``jgan.steps``.

The core of jgan never imports flax. It calls networks through one of two
conventions:

- stateless: ``apply(params, x, *args) -> out``;
- stateful: ``apply(params, model_state, x, *args) -> (out, new_model_state)``,
  where ``model_state`` holds every non-parameter variable (BatchNorm
  statistics).

``*args`` is optionally a ``labels`` array for conditional networks.

Flax linen modules go through :func:`init_model` and :func:`make_apply`.
A module whose ``__call__`` takes a ``train`` argument (every jgan module
does) is called as ``module(x, *args, train=...)``; any other module as
``module(x, *args)``. BatchNorm statistics live in
``model_state = {"batch_stats": ...}``.
"""

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
from flax import nnx

Params = Any
ModelState = dict[str, Any]


def split_variables(variables: Mapping[str, Any]) -> tuple[Params, ModelState]:
    """Splits flax linen variables into parameters and model state.

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


_NNX_NAMES = {"make_apply": "make_nnx_apply", "init_model": "split_nnx_module"}


def _check_linen_module(module: Any, caller: str) -> None:
    if isinstance(module, nn.Module):
        return
    hint = f"; use {_NNX_NAMES[caller]} for a flax.nnx.Module" if isinstance(module, nnx.Module) else ""
    raise TypeError(f"{caller} takes a flax linen module (flax.linen.Module), got {type(module).__name__}{hint}.")



def _accepts_train(module: nn.Module) -> bool:
    """Whether ``module.__call__`` takes a ``train`` keyword (or ``**kwargs``)."""
    call = getattr(module, "__call__", None)
    if call is None:
        return False
    try:
        parameters = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):  # no signature to read: pass nothing
        return False
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(
        p.kind == inspect.Parameter.VAR_KEYWORD or (p.name == "train" and p.kind in keyword_kinds) for p in parameters
    )


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

    ``train`` reaches the module only if its ``__call__`` takes a ``train``
    argument (or ``**kwargs``). A module without one (``nn.Dense``, an MLP, a
    network whose BatchNorm has ``use_running_average`` fixed) is called as
    ``module(x, *args)``, and ``train`` only decides whether ``model_state`` is
    mutable: such a module that updates its statistics needs ``train=True``.

    Misuse is reported when the function is first called (or traced) with a
    ``ValueError``: a module that reads a collection absent from the variables
    it was given (a BatchNorm network applied statelessly, or statefully with
    ``model_state={}``), or one that updates its ``model_state`` where it is
    immutable (``train=False``).

    Args:
      module: a flax linen module, called as ``module(x, *args, train=...)``
        or, without a ``train`` argument, as ``module(x, *args)``.
      stateful: whether the apply function takes and returns ``model_state``.
      train: the ``train`` flag passed to the module (BatchNorm uses batch
        statistics when ``True``, running averages when ``False``).

    Returns:
      the apply function in the convention chosen by ``stateful``.

    Raises:
      TypeError: if ``module`` is not a flax linen module.
    """
    _check_linen_module(module, "make_apply")
    train_kwargs = {"train": train} if _accepts_train(module) else {}

    def _call(variables, x, args, mutable):
        try:
            return module.apply(variables, x, *args, mutable=mutable, **train_kwargs)
        except flax.errors.ScopeCollectionNotFound as error:
            given = sorted(variables)
            raise ValueError(
                f"{type(module).__name__} reads a variable collection absent from the "
                f"variables it was given ({given}). A module with BatchNorm needs "
                "make_apply(module, stateful=True) and the model_state returned by "
                "init_model / split_variables."
            ) from error
        except flax.errors.ModifyScopeVariableError as error:
            raise ValueError(
                f"{type(module).__name__} updates its model_state in a call where it is "
                f"immutable (make_apply(..., stateful={stateful}, train={train})). A module "
                "without a train argument that updates BatchNorm statistics (its "
                "use_running_average fixed to False) needs stateful=True and train=True."
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
    """Initialises a flax linen module and splits its variables.

    A module with a ``train`` argument is initialised in evaluation mode
    (``train=False``); any other module as ``module(x, *args)``. Either way
    BatchNorm running averages start at mean 0 and variance 1 whatever the
    sample, so ``sample_input`` only provides shapes and dtypes (a batch of
    zeros will do).

    Args:
      module: a flax linen module, as in :func:`make_apply`.
      key: the PRNG key for parameter initialisation.
      sample_input: an input batch, e.g. latents ``[batch, latent_dim]`` or
        images ``[batch, height, width, channels]``.
      *args: further sample inputs, e.g. ``labels`` ``[batch]``.

    Returns:
      ``(params, model_state)`` as in :func:`split_variables`.

    Raises:
      TypeError: if ``module`` is not a flax linen module.
    """
    _check_linen_module(module, "init_model")
    train_kwargs = {"train": False} if _accepts_train(module) else {}
    variables = module.init(key, sample_input, *args, **train_kwargs)
    return split_variables(variables)
