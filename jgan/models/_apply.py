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

Flax NNX modules go through :func:`split_nnx_module`, :func:`make_nnx_apply`
and, to get a trained module back, :func:`merge_nnx_module`. ``params`` holds
the ``nnx.Param`` variables and ``model_state`` every other variable
(``nnx.BatchStat``, and the ``nnx.RngState`` of a module that owns ``Rngs``),
both as nested dicts of arrays (``nnx.to_pure_dict``).
"""

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
from flax import nnx

from jgan import _validate

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
    it was given (a BatchNorm or spectrally normalised network applied
    statelessly, or statefully with ``model_state={}``), or one that updates
    its ``model_state`` where it is immutable (``train=False``).

    Args:
      module: a flax linen module, called as ``module(x, *args, train=...)``
        or, without a ``train`` argument, as ``module(x, *args)``.
      stateful: whether the apply function takes and returns ``model_state``.
      train: the ``train`` flag passed to the module (BatchNorm uses batch
        statistics when ``True``, running averages when ``False``).

    Returns:
      the apply function in the convention chosen by ``stateful``.

    Raises:
      TypeError: if ``module`` is not a flax linen module, or ``stateful`` or
        ``train`` is not a bool.
    """
    _check_linen_module(module, "make_apply")
    stateful = _validate.check_bool(stateful, "stateful")
    train = _validate.check_bool(train, "train")
    train_kwargs = {"train": train} if _accepts_train(module) else {}

    def _call(variables, x, args, mutable):
        try:
            return module.apply(variables, x, *args, mutable=mutable, **train_kwargs)
        except (flax.errors.ScopeCollectionNotFound, flax.errors.InvalidRngError) as error:
            # A missing "batch_stats": BatchNorm reads the collection; spectral
            # normalisation (nn.SpectralNorm) asks for a "params" key to create u.
            if isinstance(error, flax.errors.InvalidRngError) and '"params"' not in str(error):
                raise
            given = sorted(variables)
            raise ValueError(
                f"{type(module).__name__} reads a variable collection absent from the "
                f"variables it was given ({given}). A module with BatchNorm or spectral "
                "normalisation (spectral_norm=True: the power iteration's u and sigma "
                "live in 'batch_stats') needs make_apply(module, stateful=True) and the "
                "model_state returned by init_model / split_variables."
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


# ----------------------------------------------------------------------------
# Flax NNX.


def _check_nnx_module(module: Any, caller: str) -> None:
    if isinstance(module, nnx.Module):
        return
    linen_name = {"make_nnx_apply": "make_apply", "split_nnx_module": "init_model"}.get(caller)
    hint = f"; use {linen_name} for a flax linen module" if linen_name and isinstance(module, nn.Module) else ""
    raise TypeError(f"{caller} takes a flax.nnx.Module, got {type(module).__name__}{hint}.")


def _split_nnx(module: nnx.Module) -> tuple[Any, Params, ModelState]:
    """``(graphdef, params, model_state)`` with the states as pure dicts."""
    graphdef, params, model_state = nnx.split(module, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(model_state)


def _check_structure(tree: Any, expected: Any, name: str, module_name: str) -> None:
    structure = jax.tree.structure(tree)
    if structure != expected:
        raise ValueError(
            f"{name} does not have the structure of {module_name}'s {name}: expected "
            f"{expected}, got {structure}. Take params and model_state from "
            "split_nnx_module(module) (nested dicts of arrays; after a checkpoint "
            "round trip, nnx.restore_int_paths restores integer keys)."
        )


def split_nnx_module(module: nnx.Module) -> tuple[Params, ModelState]:
    """Splits a flax NNX module into parameters and model state.

    ``module`` is left unchanged; its variables are already initialised (NNX
    modules create their variables in ``__init__``), so there is no key or
    sample input.

    Args:
      module: a ``flax.nnx.Module``.

    Returns:
      ``(params, model_state)``: ``params`` holds every ``nnx.Param`` and
      ``model_state`` every other variable (``nnx.BatchStat``; ``nnx.RngState``
      of a module that owns ``Rngs``), each a nested dict of arrays keyed by
      attribute name (list items by integer), ``{}`` if there is none.

    Raises:
      TypeError: if ``module`` is not a flax NNX module.
    """
    _check_nnx_module(module, "split_nnx_module")
    _, params, model_state = _split_nnx(module)
    return params, model_state


def make_nnx_apply(module: nnx.Module, *, stateful: bool | None = None, train: bool = True) -> Callable[..., Any]:
    """Makes an apply function for ``jgan.steps`` from a flax NNX module.

    The function rebuilds the module with ``nnx.merge`` from the static
    ``nnx.GraphDef`` of ``module`` (closed over; no array is) and the
    ``params`` and ``model_state`` of :func:`split_nnx_module`, then calls it
    as ``module(x, *args)``. It is pure and can be passed to ``jax.jit``;
    ``module`` itself is never called or changed.

    The mode is fixed here: with ``train=True`` the module is called in
    training mode (``module.train()``: BatchNorm normalises with the batch
    statistics, ``use_running_average=False``, and Dropout is active); with
    ``train=False`` in evaluation mode (``module.eval()``: running averages,
    no dropout). Both set these attributes on every submodule that has them,
    overriding what ``module`` was built with.

    With ``stateful=True`` the function is
    ``apply(params, model_state, x, *args) -> (out, new_model_state)``: in
    training mode ``new_model_state`` holds the updated variables (BatchNorm
    running averages); in evaluation mode it is ``model_state`` itself,
    unchanged. With ``stateful=False`` it is ``apply(params, x, *args) ->
    out``, for modules whose only variables are ``nnx.Param``. An RNG stream
    that a module owns (``nnx.Dropout(..., rngs=rngs)``) is model state: it
    advances in each training-mode call and comes back in
    ``new_model_state``, so thread the state to get fresh dropout masks (a key
    per call cannot be passed).

    Args:
      module: a ``flax.nnx.Module``, called as ``module(x, *args)``.
      stateful: the convention; ``None`` chooses stateful exactly when
        ``module`` has variables other than ``nnx.Param``. ``True`` is allowed
        for a module without them (``model_state`` is then ``{}``).
      train: training mode (``True``) or evaluation mode (``False``).

    Returns:
      the apply function in the chosen convention. It raises ``ValueError``
      when first called (or traced) with ``params`` or ``model_state`` whose
      tree structure is not that of :func:`split_nnx_module`.

    Raises:
      TypeError: if ``module`` is not a flax NNX module, ``stateful`` is
        neither a bool nor None, or ``train`` is not a bool.
      ValueError: if ``stateful=False`` and ``module`` has variables other than
        ``nnx.Param``.
    """
    _check_nnx_module(module, "make_nnx_apply")
    stateful = _validate.check_bool(stateful, "stateful", optional=True)
    train = _validate.check_bool(train, "train")
    name = type(module).__name__
    model = nnx.clone(module)  # new Variables sharing the arrays; `module` keeps its mode
    if train:
        model.train()
    else:
        model.eval()
    graphdef, params, model_state = _split_nnx(model)
    params_structure = jax.tree.structure(params)
    state_structure = jax.tree.structure(model_state)
    if stateful is None:
        stateful = bool(model_state)
    elif not stateful and model_state:
        kinds = sorted({type(v).__name__ for _, v in nnx.to_flat_state(nnx.state(module, nnx.Not(nnx.Param)))})
        raise ValueError(
            f"{name} has variables other than nnx.Param ({', '.join(kinds)}), which "
            "make_nnx_apply(module, stateful=False) would drop; use stateful=True "
            "(or leave stateful=None) and the model_state of split_nnx_module."
        )
    del model, params, model_state  # only the graphdef and the structures are closed over

    if stateful:

        def stateful_apply(params, model_state, x, *args):
            _check_structure(params, params_structure, "params", name)
            _check_structure(model_state, state_structure, "model_state", name)
            network = nnx.merge(graphdef, params, model_state)
            out = network(x, *args)
            if not train:
                return out, model_state
            _, _, new_state = _split_nnx(network)
            return out, new_state

        return stateful_apply

    def stateless_apply(params, x, *args):
        _check_structure(params, params_structure, "params", name)
        return nnx.merge(graphdef, params, {})(x, *args)

    return stateless_apply


def merge_nnx_module(module: nnx.Module, params: Params, model_state: ModelState) -> nnx.Module:
    """Builds a flax NNX module like ``module`` that holds the given variables.

    The inverse of :func:`split_nnx_module`: use it to get a trained module
    back, e.g. to call it, save it or hand it to NNX code. ``module`` only
    provides the structure and the mode (``train()``/``eval()``) of the result
    and is left unchanged.

    Args:
      module: the module that ``params`` and ``model_state`` were split from
        (or one of the same structure).
      params: ``nnx.Param`` values, as in :func:`split_nnx_module`.
      model_state: every other variable, as in :func:`split_nnx_module`
        (``{}`` for a module without any).

    Returns:
      a new module of the type of ``module``.

    Raises:
      TypeError: if ``module`` is not a flax NNX module.
      ValueError: if ``params`` or ``model_state`` does not have the tree
        structure of those of ``module``.
    """
    _check_nnx_module(module, "merge_nnx_module")
    graphdef, template_params, template_state = _split_nnx(module)
    name = type(module).__name__
    _check_structure(params, jax.tree.structure(template_params), "params", name)
    _check_structure(model_state, jax.tree.structure(template_state), "model_state", name)
    return nnx.merge(graphdef, params, model_state)
