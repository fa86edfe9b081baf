"""Generator objectives as parts of a GAN: ``make_gan(g_objectives=[...])``.

The generator minimises the sum of its objectives, in the order given. Each
is a small frozen part that sees the generated batch, the real batch and the
adversarial loss of the step (the Metz surrogate when the discriminator is
unrolled) and returns its weighted term and the metrics it reports. Write
your own by subclassing :class:`GeneratorObjective`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import NamedTuple

import jax
from jax import lax

from jgan._parallel import gather_rows
from jgan._validate import check_int, check_nonnegative, check_positive
from jgan.metrics import sinkhorn_divergence

__all__ = [
    "GeneratorInputs",
    "GeneratorObjective",
    "Adversarial",
    "SinkhornDivergence",
]


class GeneratorInputs(NamedTuple):
    """What a generator objective sees in a step.

    Attributes:
      fake: the generated batch G(z), ``[batch, ...]``, differentiable with
        respect to the generator's parameters.
      real: the real batch, ``[batch, ...]`` (a constant).
      adversarial: ``[]``, the generator's adversarial loss against the
        discriminator: its loss family's generator loss on D(G(z)), or the
        whole Metz et al. surrogate when the GAN is unrolled.
      axis_name: the mapped axis under ``shard_map`` / ``pmap``, where
        ``fake`` and ``real`` are this device's rows of the global batches
        (the term is then averaged over devices); ``None`` on one device
        and under ``jax.jit`` with sharded inputs. A term that is not a mean
        over rows must gather the global batches first, as
        :class:`SinkhornDivergence` does.
    """

    fake: jax.Array
    real: jax.Array
    adversarial: jax.Array
    axis_name: str | None = None


class GeneratorObjective(abc.ABC):
    """A term of the generator's objective: subclass it for your own."""

    @abc.abstractmethod
    def __call__(self, inputs: GeneratorInputs) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Returns ``(weighted term, metrics)`` for one step's :class:`GeneratorInputs`."""


@dataclasses.dataclass(frozen=True)
class Adversarial(GeneratorObjective):
    """``weight ·`` the adversarial loss (the default objective).

    Attributes:
      weight: the term's weight (``0`` keeps only the other objectives).
    """

    weight: float = 1.0

    def __post_init__(self):
        check_nonnegative(self.weight, "Adversarial weight")

    def __call__(self, inputs):
        return self.weight * inputs.adversarial, {}


@dataclasses.dataclass(frozen=True)
class SinkhornDivergence(GeneratorObjective):
    """``weight · S_ε(G(z), x)``, the debiased Sinkhorn divergence of the two batches.

    Minibatch optimal transport as a generator objective (Genevay et al.
    2018), with the samples flattened to vectors and the squared Euclidean
    cost. Gradients flow through the generated batch (implicitly, through
    the solver's fixed point). Reported as ``sinkhorn`` (without the weight).
    Data-parallel, the divergence is of the global batches (every device
    solves the whole problem), as on one device.

    Attributes:
      weight: the term's weight.
      epsilon: the entropic regularisation ε (absolute, in squared units of
        the data).
      iterations: a fixed number of Sinkhorn iterations (``lax.scan``, what a
        train step wants), or ``None`` to iterate to convergence.

    References:
      Genevay, Peyré, Cuturi, "Learning Generative Models with Sinkhorn
      Divergences", AISTATS 2018; Feydy et al. 2019.
    """

    weight: float = 1.0
    epsilon: float = dataclasses.field(default=0.1, kw_only=True)
    iterations: int | None = dataclasses.field(default=100, kw_only=True)

    def __post_init__(self):
        check_nonnegative(self.weight, "SinkhornDivergence weight")
        check_positive(self.epsilon, "SinkhornDivergence epsilon")
        if self.iterations is not None:
            check_int(self.iterations, "SinkhornDivergence iterations", minimum=1, static=True)

    def __call__(self, inputs):
        # Not a mean over rows: the transport plan couples every pair of samples.
        fake = gather_rows(inputs.fake, inputs.axis_name)
        real = gather_rows(lax.stop_gradient(inputs.real), inputs.axis_name)
        n = fake.shape[0]
        value = sinkhorn_divergence(
            fake.reshape(n, -1),
            real.reshape(n, -1),
            epsilon=self.epsilon,
            num_iterations=self.iterations,
        ).divergence
        return self.weight * value, {"sinkhorn": value}
