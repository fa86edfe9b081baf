"""Transposed convolutions on CPU: the image generators per ConvTranspose method, and the WGAN-GP critic step.

Section ``generators``: for each image generator at its example's default
size, the gradient of ``mean(G(z)²)`` in the generator's parameters (one
forward and one backward pass; BatchNorm in training mode) under ``jax.jit``,
with the transposed convolutions computed by each ``jgan.models.ConvTranspose``
method (the networks' ``upsample_method``):

- ``transpose``: flax's ``nn.ConvTranspose`` (``lax.conv_transpose`` and its
  derivatives), what the networks computed before;
- ``auto``: the default; on CPU the kernel derivative in the sub-pixel form;
- ``subpixel``: the whole layer as a sub-pixel convolution.

The networks, at the sizes of the examples' ``Config`` defaults:

- ``dcgan``: the ``DCGANGenerator`` of ``examples.dcgan`` and
  ``examples.wgan_gp`` (digits, 32x32x1, ``features`` 16, batch 64, latent
  100). ``examples.conditional_gan``'s generator is this network as its body
  (its input is the latent and a 10-d label embedding): the same transposed
  convolutions.
- ``dcgan_cifar10``: the same at 32x32x3 (``--dataset cifar10``).
- ``cyclegan``: the ``ResnetGenerator`` of ``examples.cyclegan`` (32x32x1,
  ``features`` 16, 3 blocks, batch 8).

The script checks that the methods' gradients agree (largest difference
below 1e-4 of the largest gradient entry) before timing them.

Section ``critic``: the critic of ``examples.wgan_gp``
(``DCGANDiscriminator(normalization="layer")``, 32x32x1, ``features`` 16,
batch 64, Adam with β = (0, 0.9)), plain and with ``GradientPenalty(10)``
(whose input gradient is differentiated again), on fixed real and generated
batches:

- ``1 critic update``: the gradient of the Wasserstein critic loss in the
  critic's parameters (as ``make_gan``'s discriminator objective computes
  it) and the Adam update;
- ``5 critic updates, unrolled``: five of them in one straight-line program;
- ``5 critic updates, lax.scan``: the same five as the body of ``lax.scan``
  (how ``make_gan`` ran its ``d_steps`` before it wrote them out as
  straight-line code, ``jgan._scan.unrolled_scan``);
- ``train step``: the whole ``make_gan(**presets.wgan_gp().gan_kwargs())``
  step of ``examples.wgan_gp`` (5 critic updates, each after a generator
  forward pass, then the generator's update).

Timing: every program is compiled (wall seconds reported), called 3 times to
warm up, then called ``--repeats`` times round-robin over all the programs of
the run, so that drifting load from other processes affects them alike;
reported are the median and interquartile range of a call's wall time
(``jax.block_until_ready``) in milliseconds, and the convolution instructions
of the compiled program (a loop body's counted once), with in parentheses
those whose dimension labels are not ``b01f_01io->b01f`` (NHWC inputs, HWIO
kernel): XLA:CPU runs that form fast (Eigen) and is far slower on others,
such as ``lax.conv_transpose``'s kernel derivative (``01fb_o01i->f01b``) and
a strided convolution's kernel derivative inside a ``lax.scan`` body
(``f01b_i01o->01bf``).

Usage::

    python -m benchmarks.conv_transpose --out runs/bench
    python -m benchmarks.conv_transpose --sections generators --networks dcgan --repeats 50

Results go to ``--out`` as ``conv_transpose.md`` (the tables) and
``conv_transpose.json``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from benchmarks.unroll_k import header
from examples import _harness as harness
from examples import cyclegan, dcgan, wgan_gp
from examples._harness import option
from jgan import data, losses, models, presets, steps

METHODS = ("transpose", "auto", "subpixel")
NETWORKS = ("dcgan", "dcgan_cifar10", "cyclegan")
SECTIONS = ("generators", "critic")
AGREEMENT = 1e-4  # Largest gradient difference between methods, relative to the largest entry.
# The dimension labels of XLA:CPU's fast (Eigen) convolutions: batch, spatial, feature x spatial, in, out.
CANONICAL = "b01f_01io->b01f"


# ---------------------------------------------------------------------------
# Programs: (function, arguments, description).


def generator_program(network: str, method: str):
    """The gradient of ``mean(G(z)²)`` in G's parameters, with ``upsample_method=method``."""
    key, init_key = jax.random.split(jax.random.key(0))
    if network == "cyclegan":
        config = cyclegan.Config()
        shape = (config.image_size, config.image_size, 1)  # The offline digits_inverted domains.
        module = models.ResnetGenerator(channels=1, features=config.features, n_blocks=config.n_blocks,
                                        upsample_method=method)
        x = jax.random.uniform(key, (config.batch_size, *shape), minval=-1.0, maxval=1.0)
        params, _ = models.init_model(module, init_key, x[:1])
        apply = models.make_apply(module, stateful=False)

        def loss(params, x):
            return jnp.mean(jnp.square(apply(params, x)))

        description = (f"ResnetGenerator {shape[0]}x{shape[1]}x{shape[2]}, features {config.features},"
                       f" {config.n_blocks} blocks, batch {config.batch_size}")
        return jax.grad(loss), (params, x), description

    config = dcgan.Config(dataset="cifar10" if network == "dcgan_cifar10" else "digits")
    height, _, channels = data.image_dataset_spec(config.dataset, image_size=config.image_size).image_shape
    module = models.DCGANGenerator(image_size=height, channels=channels, features=config.features,
                                   upsample_method=method)
    z = jax.random.normal(key, (config.batch_size, config.latent_dim))
    params, model_state = models.init_model(module, init_key, z[:1])
    apply = models.make_apply(module, stateful=True)

    def loss(params, model_state, z):
        return jnp.mean(jnp.square(apply(params, model_state, z)[0]))

    description = (f"DCGANGenerator {height}x{height}x{channels}, features {config.features},"
                   f" batch {config.batch_size}, latent {config.latent_dim}")
    return jax.grad(loss), (params, model_state, z), description


def critic_program(penalty: bool, updates: int = 1, scan: bool = False):
    """``updates`` WGAN critic updates (gradient and Adam), with or without ``GradientPenalty``.

    With ``scan`` the updates run in ``lax.scan``, as ``make_gan`` runs its
    ``d_steps``; otherwise one after another in one straight-line program.
    """
    config = wgan_gp.Config()
    height, _, channels = data.image_dataset_spec(config.dataset, image_size=config.image_size).image_shape
    module = models.DCGANDiscriminator(features=config.features, normalization="layer")
    keys = jax.random.split(jax.random.key(0), 4)
    real = jax.random.uniform(keys[0], (config.batch_size, height, height, channels), minval=-1.0, maxval=1.0)
    fake = jax.random.uniform(keys[1], real.shape, minval=-1.0, maxval=1.0)
    d_params, _ = models.init_model(module, keys[2], real[:1])
    apply = models.make_apply(module, stateful=False)
    preset = presets.wgan_gp(learning_rate=config.learning_rate, penalty=config.penalty, n_critic=config.n_critic)
    family = losses.loss_family(preset.loss)
    regularizers = preset.d_regularizers if penalty else ()
    optimizer = preset.d_optimizer

    def critic_loss(d_params, real, fake, key):  # As jgan.steps.make_gan's discriminator objective.
        def critic(x):
            return apply(d_params, x)

        total = family.d_loss(critic(real), critic(fake))
        for regularizer in regularizers:
            term, _ = regularizer(critic, real, fake, key=key, draw=lambda k, sampler, n: sampler(k, n))
            total = total + term
        return total

    def update(carry, key):
        d_params, opt_state = carry
        grads = jax.grad(critic_loss)(d_params, real, fake, key)
        updates, opt_state = optimizer.update(grads, opt_state, d_params)
        return optax.apply_updates(d_params, updates), opt_state

    def run(d_params, opt_state, key):
        keys = jax.random.split(key, updates)
        if scan:
            return lax.scan(lambda carry, key: (update(carry, key), None), (d_params, opt_state), keys)[0]
        carry = (d_params, opt_state)
        for key in keys:  # The reference: a straight-line program.
            carry = update(carry, key)
        return carry

    description = (f"DCGANDiscriminator(normalization='layer') {height}x{height}x{channels},"
                   f" features {config.features}, batch {config.batch_size}")
    return run, (d_params, optimizer.init(d_params), keys[3]), description


def train_step_program(penalty: bool):
    """``examples.wgan_gp``'s whole train step (``make_gan``), with or without the penalty."""
    config = wgan_gp.Config()
    height, _, channels = data.image_dataset_spec(config.dataset, image_size=config.image_size).image_shape
    g_module = models.DCGANGenerator(image_size=height, channels=channels, features=config.features)
    d_module = models.DCGANDiscriminator(features=config.features, normalization="layer")
    preset = presets.wgan_gp(learning_rate=config.learning_rate, penalty=config.penalty, n_critic=config.n_critic)
    gan_kwargs = preset.gan_kwargs()
    if not penalty:
        gan_kwargs["d_regularizers"] = ()
    gan = steps.make_gan(generator=models.make_apply(g_module, stateful=True),
                         discriminator=models.make_apply(d_module, stateful=False),
                         prior=config.latent_dim, g_stateful=True, batches="sliced", **gan_kwargs)
    state = harness.init_gan(gan, jax.random.key(0), g_module, d_module, (jnp.zeros((1, config.latent_dim)),),
                             (jnp.zeros((1, height, height, channels)),), g_stateful=True)
    # A fresh real batch for each critic update, as the example feeds them.
    real = jax.random.uniform(jax.random.key(1), (config.n_critic, config.batch_size, height, height, channels),
                              minval=-1.0, maxval=1.0)
    description = f"make_gan(**presets.wgan_gp()), n_critic {config.n_critic}, batch {config.batch_size}"
    return gan.step, (state, real), description


# ---------------------------------------------------------------------------
# Measurement.


def compile_program(fn, args) -> tuple[object, dict]:
    """The compiled program, its compile time and its convolutions (all, and those not NHWC x HWIO)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    labels = [re.search(r"dim_labels=([^,\s]+)", line).group(1)
              for line in compiled.as_text().splitlines() if " convolution(" in line]
    return compiled, dict(compile_s=seconds, convolutions=len(labels),
                          other_layout=sum(label != CANONICAL for label in labels))


def time_round_robin(programs: dict, repeats: int, warmup: int = 3) -> dict:
    """Median and quartiles of each program's wall time (ms), the programs called in turn."""
    for compiled, args in programs.values():
        for _ in range(warmup):
            jax.block_until_ready(compiled(*args))
    times = {name: [] for name in programs}
    for _ in range(repeats):
        for name, (compiled, args) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times[name].append(time.perf_counter() - start)
    return {name: dict(ms=1e3 * float(np.median(t)), q1_ms=1e3 * float(np.percentile(t, 25)),
                       q3_ms=1e3 * float(np.percentile(t, 75)))
            for name, t in times.items()}


def check_methods_agree(network: str, gradients: dict) -> float:
    """The largest difference between each method's gradient and ``transpose``'s, relative to its largest entry."""
    reference = jax.tree.leaves(gradients["transpose"]) if "transpose" in gradients else None
    worst = 0.0
    for method, grads in gradients.items():
        if reference is None or method == "transpose":
            continue
        for a, b in zip(jax.tree.leaves(grads), reference):
            worst = max(worst, float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))))
    if not worst <= AGREEMENT:
        raise ValueError(f"{network}: the methods' gradients differ by {worst:.2e} of the largest entry.")
    return worst


def _cell(row: dict) -> str:
    return f"{row['ms']:.2f} [{row['q1_ms']:.2f}, {row['q3_ms']:.2f}]"


def _convolutions(row: dict) -> str:
    return f"{row['convolutions']} ({row['other_layout']})"


def generators_table(rows: list[dict]) -> str:
    lines = ["| network | method | compile (s) | convolutions (other layout) | forward + backward (ms), median [IQR]"
             " | transpose / method |",
             "| --- | --- | ---: | ---: | --- | ---: |"]
    transpose = {r["network"]: r["ms"] for r in rows if r["method"] == "transpose"}
    for row in rows:
        ratio = f"{transpose[row['network']] / row['ms']:.2f}" if row["network"] in transpose else "–"
        lines.append(f"| {row['network']}: {row['description']} | {row['method']} | {row['compile_s']:.2f}"
                     f" | {_convolutions(row)} | {_cell(row)} | {ratio} |")
    return "\n".join(lines)


def critic_table(rows: list[dict]) -> str:
    lines = ["| program | penalty | compile (s) | convolutions (other layout) | step (ms), median [IQR]"
             " | with / without penalty |",
             "| --- | --- | ---: | ---: | --- | ---: |"]
    plain = {r["program"]: r["ms"] for r in rows if not r["penalty"]}
    order = list(plain)
    for row in sorted(rows, key=lambda r: (order.index(r["program"]), r["penalty"])):
        lines.append(f"| {row['program']}: {row['description']} | {'GradientPenalty(10)' if row['penalty'] else 'none'}"
                     f" | {row['compile_s']:.2f} | {_convolutions(row)} | {_cell(row)}"
                     f" | {row['ms'] / plain[row['program']]:.2f} |")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The benchmark's command line."""

    sections: tuple[str, ...] = option(SECTIONS, "what to measure", choices=SECTIONS)
    networks: tuple[str, ...] = option(NETWORKS, "the generators of the generators section", choices=NETWORKS)
    methods: tuple[str, ...] = option(METHODS, "ConvTranspose methods to time", choices=METHODS)
    repeats: int = option(30, "timed calls per program (round-robin over all programs)")
    out: str = option("runs/bench", "the output directory")

    def validate(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {self.repeats}.")


def main(argv: Sequence[str] | None = None) -> dict:
    """The command line (``python -m benchmarks.conv_transpose --help`` lists the flags); returns the rows."""
    return harness.main(Settings, _benchmark, argv=argv, doc=__doc__, prog="python -m benchmarks.conv_transpose",
                        out=None, resume=False, quiet=False)


def _benchmark(args: Settings, _, stop) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = header()
    print(head, flush=True)

    jobs = {}  # (section, name, variant) -> (fn, args, description)
    if "generators" in args.sections:
        for network in args.networks:
            for method in args.methods:
                jobs["generators", network, method] = generator_program(network, method)
    if "critic" in args.sections:
        n_critic = wgan_gp.Config().n_critic
        for penalty in (False, True):
            jobs["critic", "1 critic update", penalty] = critic_program(penalty)
            jobs["critic", f"{n_critic} critic updates, unrolled", penalty] = critic_program(penalty, n_critic)
            jobs["critic", f"{n_critic} critic updates, lax.scan", penalty] = critic_program(
                penalty, n_critic, scan=True)
            jobs["critic", "train step", penalty] = train_step_program(penalty)

    programs, stats = {}, {}
    for job, (fn, fn_args, description) in jobs.items():
        compiled, stats[job] = compile_program(fn, fn_args)
        stats[job]["description"] = description
        programs[job] = (compiled, fn_args)
        print(f"{job}: compiled in {stats[job]['compile_s']:.2f}s, {stats[job]['convolutions']} convolutions",
              flush=True)
    agreement = {}
    for network in args.networks if "generators" in args.sections else ():
        gradients = {m: programs["generators", network, m][0](*programs["generators", network, m][1])
                     for m in args.methods}
        agreement[network] = check_methods_agree(network, gradients)

    for job, timing in time_round_robin(programs, args.repeats).items():
        stats[job].update(timing)

    generator_rows = [dict(network=n, method=m, **stats[s, n, m]) for (s, n, m) in stats if s == "generators"]
    critic_rows = [dict(program=n, penalty=p, **stats[s, n, p]) for (s, n, p) in stats if s == "critic"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    parts = [head]
    if generator_rows:
        worst = ", ".join(f"{n} {w:.1e}" for n, w in agreement.items())
        parts += ["Generators: gradient of mean(G(z)^2) in G's parameters.", generators_table(generator_rows),
                  f"Largest gradient difference from transpose's, relative to the largest entry: {worst}."]
    if critic_rows:
        parts += ["WGAN-GP critic (examples.wgan_gp).", critic_table(critic_rows)]
    report = "\n\n".join(parts) + f"\n\nload average at end: {load}\n"
    print("\n" + report)
    harness.write_text(out / "conv_transpose.md", report)
    result = dict(generators=generator_rows, critic=critic_rows, agreement=agreement)
    harness.write_json(out / "conv_transpose.json", result, indent=1)
    print(f"wrote {out}/conv_transpose.md and conv_transpose.json")
    return result


if __name__ == "__main__":
    main()
