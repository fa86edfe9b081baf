"""Unrolled-GAN train step versus K: compile time, step time and memory, against a fully unrolled graph and PyTorch.

The setup is the mixture-of-Gaussians experiment of Metz et al. (2016): MLP
generator and discriminator, latent dimension 256, batch 512 of the 8-Gaussian
ring, both optimizers Adam (β1 = 0.5). Four network sizes (``--networks``):

- ``metz``: Metz et al.'s released notebook, G 256-128-128-2 and D 2-128-1, tanh;
- ``mlp32``: G 2×128, D 2×32 hidden ReLU units;
- ``mlp128``: G and D 2×128 ReLU (jgan's MoG networks, the paper's appendix A);
- ``mlp512``: G and D 2×512 ReLU.

For each network and K it builds ``jgan.steps.make_gan(unroll=Unrolled(K))``
and measures programs of the same train step:

- ``scan``: jgan as shipped (``Unrolled(K)``: the K discriminator updates in
  ``lax.scan``, ``remat="auto"`` choosing per network whether the backward
  pass recomputes each update; see ``jgan.unroll.remat_choice``);
- ``scan_store`` / ``scan_remat``: the scan with ``remat=False`` / ``True``;
- ``loop``: the K updates as a Python loop of optax updates, traced into one
  fully unrolled program (the reference: one straight-line program that XLA
  can optimise across updates, whose size and compile time grow with K): an
  ``Unrolled`` subclass whose ``unroll`` method is the loop; everything else
  is the same step, and the script checks that every program computes the
  same update as the loop (generator loss and gradient norm to 1e-4);
- ``first_order``: ``Unrolled(K, first_order=True)`` (an ablation);
- ``torch`` (``--torch``): the same step in PyTorch with ``torch.func``, true
  second order through K functional Adam updates (:class:`TorchStep`), checked
  against jgan's generator loss and gradient norm on the same latents (both
  in float64, to 1e-10)
  and timed with 1 and with one-per-core intra-op threads (the faster is
  reported; torch's worker threads spin, and on a loaded 2-core machine two of
  them ran 40x slower than one).

Load from other processes only ever adds time, so each program is compiled
``--compile-repeats`` times (interleaved with the others) and the fastest is
reported, and step times are taken round-robin over all programs of a network,
so that drifting load affects them alike. Reported per program:

- lower: tracing and lowering to StableHLO (``jax.jit(step).lower``), seconds;
- compile: XLA compilation of the lowered program (``.compile()``), seconds;
- lower + compile, CPU: the process CPU time of both (XLA compiles kernels on
  several threads, so it exceeds the wall time; it is less sensitive to load
  from other processes than the wall time);
- step: median wall time of a compiled call (``jax.block_until_ready``) after
  warm-up, milliseconds, with the interquartile range;
- temp: the size of XLA's temporary buffers in the compiled executable
  (``compiled.memory_analysis().temp_size_in_bytes``), MiB: the working memory
  of a step beyond its inputs and outputs (what the unrolled residuals occupy).

Usage::

    python -m benchmarks.unroll_k --ks 1 5 10 20 50 --variants scan scan_store scan_remat loop \\
        --memory-ks 100 --out runs/bench

``--memory-ks`` adds compile-only rows (compile time and temp memory) for
large K; the fully unrolled loop is built only up to ``--loop-max-k``. Results
go to ``--out`` as ``unroll_k.md`` (the table and the targets' ratios),
``unroll_k.json`` and ``unroll_k.png`` (the plot).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

from examples import _harness as harness
from examples._harness import option
from jgan import data, steps, unroll
from jgan.models import MLPDiscriminator, MLPGenerator, make_apply

LATENT = 256
BATCH = 512
LEARNING_RATE = 1e-4  # Adam with β1 = 0.5 for both networks (the rate does not affect timings).
B1 = 0.5
# The measured tables used eps_root = 1e-8 for the discriminator's Adam; the
# unrolled updates no longer need it (jgan.unroll.safe_root_update), kept so
# the programs stay those measured.
EPS_ROOT = 1e-8


class PythonLoop(unroll.Unrolled):
    """The K updates as a Python loop: K optax updates traced one after another."""

    def unroll(self, d_params, d_opt_state, *, loss_fn, optimizer, axis_name=None):
        if self.first_order or axis_name is not None:
            raise NotImplementedError("The reference covers the full-gradient, single-device case.")
        update = unroll.safe_root_update(optimizer.update)  # As the library's scan does.
        for _ in range(self.steps):
            grads = jax.grad(loss_fn)(d_params)
            updates, d_opt_state = update(grads, d_opt_state, d_params)
            d_params = optax.apply_updates(d_params, updates)
        return d_params, d_opt_state


@dataclasses.dataclass(frozen=True)
class ScanUnrollFactor(unroll.Unrolled):
    """The library's scan with a ``lax.scan`` unroll factor (an option it does not offer)."""

    factor: int = dataclasses.field(default=1, kw_only=True)

    def unroll(self, d_params, d_opt_state, *, loss_fn, optimizer, axis_name=None):
        update_fn = unroll.safe_root_update(optimizer.update)

        def update(carry, _):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params)
            updates, opt_state = update_fn(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (d_params, d_opt_state), _ = jax.lax.scan(update, (d_params, d_opt_state), None,
                                                  length=self.steps, unroll=self.factor)
        return d_params, d_opt_state


VARIANTS = {
    # name: K -> the unroll part of make_gan
    "scan": unroll.Unrolled,  # jgan's default
    "loop": PythonLoop,
    "first_order": functools.partial(unroll.Unrolled, first_order=True),
    # Options of Unrolled, and scan unroll factors, to measure them.
    "scan_store": functools.partial(unroll.Unrolled, remat=False),
    "scan_remat": functools.partial(unroll.Unrolled, remat=True),
    "scan_remat_dots": functools.partial(unroll.Unrolled, remat=jax.checkpoint_policies.dots_saveable),
    "scan_unroll2": functools.partial(ScanUnrollFactor, factor=2),
    "scan_unroll5": functools.partial(ScanUnrollFactor, factor=5),
}


@dataclasses.dataclass(frozen=True)
class Network:
    """The hidden layers of the generator and the discriminator, and their activation."""

    g_hidden: tuple[int, ...]
    d_hidden: tuple[int, ...]
    activation: str  # "relu" or "tanh"

    def modules(self):
        act = getattr(jax.nn, self.activation)
        return (MLPGenerator(out_features=2, hidden=self.g_hidden, activation=act),
                MLPDiscriminator(hidden=self.d_hidden, activation=act))


NETWORKS = {
    # Metz et al.'s released notebook: G 256-128-128-2, D 2-128-1, tanh.
    "metz": Network((128, 128), (128,), "tanh"),
    # A narrow discriminator: two hidden layers of 32 ReLU units.
    "mlp32": Network((128, 128), (32, 32), "relu"),
    # jgan's MoG networks (appendix A of the paper): two hidden layers of 128 ReLU units each.
    "mlp128": Network((128, 128), (128, 128), "relu"),
    # Four times wider.
    "mlp512": Network((512, 512), (512, 512), "relu"),
}


def mog_setup(network: str = "mlp128"):
    """Parameters, optimizers, networks and one batch of the ring of 8 Gaussians."""
    key = jax.random.key(0)
    g_module, d_module = NETWORKS[network].modules()
    g_opt = optax.adam(LEARNING_RATE, b1=B1)
    d_opt = optax.adam(LEARNING_RATE, b1=B1, eps_root=EPS_ROOT)
    nets = dict(generator=make_apply(g_module, stateful=False),
                discriminator=make_apply(d_module, stateful=False),
                g_optimizer=g_opt, d_optimizer=d_opt, prior=LATENT)
    state = harness.init_gan(steps.make_gan(**nets), key, g_module, d_module,
                             (jnp.zeros((1, LATENT)),), (jnp.zeros((1, 2)),))
    real = data.ring(jax.random.fold_in(key, 3), BATCH)
    return state, nets, real


# ---------------------------------------------------------------------------
# The competitor: the same train step in PyTorch, with torch.func.


class TorchStep:
    """The same train step in PyTorch (``torch.func``), true second order through K Adam updates.

    One discriminator update (non-saturating GAN loss on logits, Adam), then the
    generator's update on Metz et al.'s surrogate: its loss on D_K(G(z)) minus the
    discriminator's real-data loss under D_K, where D_K is the discriminator after
    K functional Adam updates whose gradients come from ``torch.func.grad`` inside
    the generator's ``torch.func.grad`` (so the outer gradient differentiates
    through every inner one). The networks are the flax ones, their parameters
    copied (``x @ kernel + bias``). ``z`` is given, so that :func:`check_torch`
    can compare the generator's update with jgan's on the same draws.
    """

    def __init__(self, state, network: Network, k: int):
        import torch
        from torch.func import grad

        self.torch, self.k = torch, k
        act = getattr(torch, network.activation)
        to = lambda tree: {"/".join(str(getattr(p, "key", p)) for p in path): torch.tensor(np.asarray(x))
                           for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
        self.g, self.d = to(state.g_params), to(state.d_params)
        zeros = lambda tree: {n: torch.zeros_like(v) for n, v in tree.items()}
        self.g_adam = (torch.tensor(0.0), zeros(self.g), zeros(self.g))
        self.d_adam = (torch.tensor(0.0), zeros(self.d), zeros(self.d))

        def mlp(params, x, layers):
            for i in range(layers):
                x = act(x @ params[f"Dense_{i}/kernel"] + params[f"Dense_{i}/bias"])
            return x @ params[f"Dense_{layers}/kernel"] + params[f"Dense_{layers}/bias"]

        softplus = torch.nn.functional.softplus
        self.generate = lambda g, z: mlp(g, z, len(network.g_hidden))
        discriminate = lambda d, x: mlp(d, x, len(network.d_hidden))[:, 0]
        d_loss = lambda d, real, fake: (softplus(-discriminate(d, real)).mean()
                                        + softplus(discriminate(d, fake)).mean())

        def adam(params, grads, opt, eps_root):
            count, mu, nu = opt
            count = count + 1
            mu = {n: B1 * mu[n] + (1 - B1) * grads[n] for n in params}
            nu = {n: 0.999 * nu[n] + 0.001 * grads[n] ** 2 for n in params}
            new = {n: params[n] - LEARNING_RATE * (mu[n] / (1 - B1 ** count))
                   / (torch.sqrt(nu[n] / (1 - 0.999 ** count) + eps_root) + 1e-8) for n in params}
            return new, (count, mu, nu)

        def surrogate(g, d, d_opt, real, z):
            fake = self.generate(g, z)
            for _ in range(k):
                d, d_opt = adam(d, grad(d_loss)(d, real, fake), d_opt, EPS_ROOT)
            fake_out = discriminate(d, fake)
            real_out = discriminate(d, real)
            g_loss = softplus(-fake_out).mean()
            return g_loss - (softplus(-real_out).mean() + softplus(fake_out.detach()).mean()), g_loss

        self.adam, self.d_loss_grad = adam, grad(d_loss)
        self.surrogate_grad = grad(surrogate, has_aux=True)

    def __call__(self, real, z_d, z_g):
        """One train step; returns the generator's loss and gradient norm (and keeps the new state)."""
        torch = self.torch
        with torch.no_grad():
            fake = self.generate(self.g, z_d)
        self.d, d_adam = self.adam(self.d, self.d_loss_grad(self.d, real, fake), self.d_adam, EPS_ROOT)
        g_grads, g_loss = self.surrogate_grad(self.g, self.d, d_adam, real, z_g)
        self.d_adam = d_adam
        self.g, self.g_adam = self.adam(self.g, g_grads, self.g_adam, 0.0)
        norm = torch.sqrt(sum((v ** 2).sum() for v in g_grads.values()))
        return float(g_loss), float(norm)


def fixed_draws(key, n):
    """The latents a check step draws: one fixed array for both updates, so that torch gets the same."""
    return jax.random.normal(jax.random.key(7), (n, LATENT))


def check_torch(network: str, k: int) -> float:
    """Largest relative difference of the generator's loss and gradient norm, jgan versus torch, in float64.

    Both sides run in float64, where they agree to round-off (about 1e-16); in float32 the
    K second-order updates of the wider networks drift apart by up to 3e-4 (mlp512, K = 20).
    """
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with jax.enable_x64(True):
            state, nets, real = mog_setup(network)
            to64 = lambda tree: jax.tree.map(  # noqa: E731
                lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
            state, real = to64(state), real.astype(jnp.float64)
            draws = lambda key, n: fixed_draws(key, n).astype(jnp.float64)  # noqa: E731
            gan = steps.make_gan(**dict(nets, prior=draws), unroll=unroll.Unrolled(k))
            metrics = jax.jit(gan.step)(state, real)[1]
            z = torch.tensor(np.asarray(draws(None, BATCH)))
            g_loss, g_norm = TorchStep(state, NETWORKS[network], k)(torch.tensor(np.asarray(real)), z, z)
    finally:
        torch.set_default_dtype(previous)
    return max(abs(g_loss - float(metrics["g_loss"])) / abs(float(metrics["g_loss"])),
               abs(g_norm - float(metrics["g_grad_norm"])) / abs(float(metrics["g_grad_norm"])))


def time_torch(network: str, k: int, repeats: int, warmup: int = 3) -> dict:
    """Median and quartiles of the torch step's wall time (fresh draws each step, like jgan's).

    Timed with one intra-op thread and with one per core, interleaved; the faster is kept
    (on a loaded machine torch's spinning worker threads can make it 40x slower).
    """
    import torch

    torch.manual_seed(0)
    state, _, real = mog_setup(network)
    real = torch.tensor(np.asarray(real))
    threads = sorted({1, os.cpu_count() or 1})
    steps_ = {n: TorchStep(state, NETWORKS[network], k) for n in threads}
    times = {n: [] for n in threads}
    previous = torch.get_num_threads()
    try:
        for i in range(warmup + repeats):
            for n, step in steps_.items():
                torch.set_num_threads(n)
                z_d, z_g = torch.randn(BATCH, LATENT), torch.randn(BATCH, LATENT)
                start = time.perf_counter()
                step(real, z_d, z_g)
                if i >= warmup:
                    times[n].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    best = min(threads, key=lambda n: np.median(times[n]))
    t = times[best]
    return dict(step_ms=1e3 * float(np.median(t)), step_q1_ms=1e3 * float(np.percentile(t, 25)),
                step_q3_ms=1e3 * float(np.percentile(t, 75)), torch_threads=best)


def build(variant: str, k: int, state, nets, real):
    """Lowers and compiles one program; returns it with its timings and memory."""
    step = steps.make_gan(**nets, unroll=VARIANTS[variant](k) if k else None).step
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = jax.jit(step).lower(state, real)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
    memory = compiled.memory_analysis()
    temp = None if memory is None else memory.temp_size_in_bytes
    return compiled, dict(lower_s=t1 - t0, compile_s=t2 - t1, compile_cpu_s=c2 - c0,
                          temp_mib=None if temp is None else temp / 2**20)


def time_round_robin(programs: dict, state, real, repeats: int, warmup: int = 3) -> dict:
    """Median and quartiles of the wall time of each program, called in turn."""
    for compiled in programs.values():
        for _ in range(warmup):
            jax.block_until_ready(compiled(state, real))
    times = {name: [] for name in programs}
    for _ in range(repeats):
        for name, compiled in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(state, real))
            times[name].append(time.perf_counter() - start)
    return {name: dict(step_ms=1e3 * float(np.median(t)),
                       step_q1_ms=1e3 * float(np.percentile(t, 25)),
                       step_q3_ms=1e3 * float(np.percentile(t, 75)))
            for name, t in times.items()}


def check_same_update(programs: dict, state, real) -> float:
    """Largest relative difference of the generator's loss and gradient norm, each program versus the loop.

    (The parameters themselves are a poor check after one Adam step from a fresh state: it
    moves each by about ±lr whatever the gradient's size, so round-off in a near-zero
    gradient entry flips its update.)
    """
    if "loop" not in programs:
        return float("nan")
    b = programs["loop"](state, real)[1]
    worst = 0.0
    for name, program in programs.items():
        if name in ("loop", "first_order"):
            continue
        a = program(state, real)[1]
        worst = max(worst, *(abs(float(a[m]) - float(b[m])) / abs(float(b[m])) for m in ("g_loss", "g_grad_norm")))
    return worst


def header() -> str:
    device = jax.devices()[0]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"jax {jax.__version__}, jaxlib {jaxlib.__version__}"
            f" on {device.platform.upper()} ({device.device_kind}), {os.cpu_count()} CPU cores,"
            f" {platform.processor() or platform.machine()}, Python {platform.python_version()};"
            f" load average at start {load}")


def markdown_table(rows: list[dict]) -> str:
    """One table: a row per network, K and program; step / loop compares within a network and K."""
    order = {name: i for i, name in enumerate(NETWORKS)}
    rows = sorted(rows, key=lambda r: (order[r["network"]], r["k"]))
    lines = ["| network | K | program | lower (s) | compile (s) | lower + compile, CPU (s)"
             " | step (ms), median [IQR] | step / loop | temp (MiB) |",
             "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |"]
    by_key = {}
    for row in rows:
        by_key.setdefault((row["network"], row["k"]), {})[row["variant"]] = row
    fmt = lambda x, spec: "–" if x is None else format(x, spec)
    for row in rows:
        loop = by_key[row["network"], row["k"]].get("loop")
        if "step_ms" in row:
            step = f"{row['step_ms']:.1f} [{row['step_q1_ms']:.1f}, {row['step_q3_ms']:.1f}]"
            rel = f"{row['step_ms'] / loop['step_ms']:.2f}" if loop and "step_ms" in loop else "–"
        else:
            step, rel = "–", "–"
        lines.append(f"| {row['network']} | {row['k']} | {row['variant']} | {fmt(row.get('lower_s'), '.2f')}"
                     f" | {fmt(row.get('compile_s'), '.2f')} | {fmt(row.get('compile_cpu_s'), '.2f')}"
                     f" | {step} | {rel} | {fmt(row.get('temp_mib'), '.1f')} |")
    return "\n".join(lines)


def compile_ratios(rows: list[dict]) -> str:
    """(lower + compile)(K) / (lower + compile)(K = 1), in wall time and in CPU time."""
    out = []
    for network, variant in dict.fromkeys((r["network"], r["variant"]) for r in rows):
        mine = {r["k"]: r for r in rows if (r["network"], r["variant"]) == (network, variant)}
        if 1 not in mine or mine[1].get("compile_s") is None or not any(k > 1 for k in mine):
            continue
        wall = {k: r["lower_s"] + r["compile_s"] for k, r in mine.items()}
        cpu = {k: r["compile_cpu_s"] for k, r in mine.items()}
        parts = [f"K={k}: {wall[k] / wall[1]:.2f} (CPU {cpu[k] / cpu[1]:.2f})"
                 for k in sorted(mine) if k > 1]
        out.append(f"- {network}, {variant}: " + ", ".join(parts))
    return "\n".join(out)


def ratio_summary(rows: list[dict]) -> str:
    """The targets' ratios: jgan's default step over the loop's and torch's over jgan's, per network and K."""
    timed = {(r["network"], r["k"], r["variant"]): r["step_ms"] for r in rows if "step_ms" in r}
    out = []
    for network in NETWORKS:
        ks = sorted({k for n, k, _ in timed if n == network})
        parts = []
        for k in ks:
            scan = timed.get((network, k, "scan"))
            loop, torch_ms = timed.get((network, k, "loop")), timed.get((network, k, "torch"))
            if scan is None:
                continue
            cell = [f"scan/loop {scan / loop:.2f}"] if loop else []
            cell += [f"torch/scan {torch_ms / scan:.2f}"] if torch_ms else []
            if cell:
                parts.append(f"K={k}: " + ", ".join(cell))
        if parts:
            out.append(f"- {network}: " + "; ".join(parts))
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    plt = harness.pyplot()
    networks = [n for n in NETWORKS if any(r["network"] == n for r in rows)]
    fig, axes = plt.subplots(len(networks), 3, figsize=(15, 4.2 * len(networks)), squeeze=False)
    for axs, network in zip(axes, networks):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["network"] == network):
            mine = sorted((r for r in rows if (r["network"], r["variant"]) == (network, variant)),
                          key=lambda r: r["k"])
            compiled = [r for r in mine if r.get("compile_s") is not None]
            if compiled:
                axs[0].plot([r["k"] for r in compiled], [r["lower_s"] + r["compile_s"] for r in compiled],
                            "o-", label=variant)
                axs[2].plot([r["k"] for r in compiled], [r["temp_mib"] for r in compiled], "o-", label=variant)
            timed = [r for r in mine if "step_ms" in r]
            if timed:
                axs[1].errorbar([r["k"] for r in timed], [r["step_ms"] for r in timed],
                                yerr=[[r["step_ms"] - r["step_q1_ms"] for r in timed],
                                      [r["step_q3_ms"] - r["step_ms"] for r in timed]],
                                fmt="o-", capsize=3, label=variant)
        axs[0].set(xlabel="K (unrolled discriminator updates)", ylabel="lower + compile (s)",
                   title=f"{network}: compile time")
        axs[1].set(xlabel="K", ylabel="ms per train step (median, IQR)", title=f"{network}: step time",
                   yscale="log")
        axs[2].set(xlabel="K", ylabel="MiB", title=f"{network}: XLA temp buffers")
        for ax in axs:
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle("Unrolled GAN train step on the MoG ring (latent 256, batch 512, Adam)")
    fig.tight_layout()
    harness.save_figure(path, fig, dpi=110)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The benchmark's command line."""

    networks: tuple[str, ...] = option(tuple(NETWORKS), "network sizes", choices=tuple(NETWORKS))
    ks: tuple[int, ...] = option((0, 1, 5, 10, 20), "values of K to time")
    variants: tuple[str, ...] = option(("scan", "loop", "first_order"), "programs to measure",
                                       choices=sorted(VARIANTS))
    torch: bool = option(True, "also time the same step in PyTorch (torch.func)")
    torch_repeats: int = option(5, "timed calls of the torch step per thread setting")
    loop_max_k: int = option(20, "the largest K whose fully unrolled loop is built (its compile time grows with K)")
    repeats: int = option(30, "timed calls per program (round-robin over all programs)")
    compile_repeats: int = option(3, "compilations per program; the fastest is reported")
    memory_ks: tuple[int, ...] = option((), "values of K to compile only (compile time and memory; no loop)")
    out: str = option("runs/bench", "the output directory")

    def validate(self) -> None:
        if min((*self.ks, *self.memory_ks), default=0) < 0 or min(self.repeats, self.compile_repeats, self.torch_repeats) < 1:
            raise ValueError("--ks and --memory-ks must be >= 0, --repeats, --compile-repeats and --torch-repeats >= 1.")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """The command line (``python -m benchmarks.unroll_k --help`` lists the flags); returns the rows."""
    return harness.main(Settings, _benchmark, argv=argv, doc=__doc__, prog="python -m benchmarks.unroll_k",
                        out=None, resume=False, quiet=False)


def _benchmark_network(args: Settings, network: str) -> list[dict]:
    """Every row of one network: compiled programs, then step times round-robin, then torch."""
    state, nets, real = mog_setup(network)
    build("scan", 0, state, nets, real)  # Warm the compiler; the first compile is slower.

    # Compile every program compile_repeats times, interleaved, and keep the fastest time:
    # load from other processes only ever adds to a compile time.
    variants = [v for v in args.variants]
    jobs = [(k, v, True) for k in args.ks for v in variants if v != "loop" or k <= args.loop_max_k]
    jobs += [(k, v, False) for k in args.memory_ks for v in variants if v != "loop"]
    rows, programs = {}, {}
    for _ in range(args.compile_repeats):
        for k, variant, timed in jobs:
            compiled, stats = build(variant, k, state, nets, real)
            print(f"{network} K={k} {variant}: lower {stats['lower_s']:.2f}s compile"
                  f" {stats['compile_s']:.2f}s temp {stats['temp_mib']:.1f} MiB", flush=True)
            row = rows.setdefault((k, variant), dict(network=network, k=k, variant=variant, **stats))
            for name in ("lower_s", "compile_s", "compile_cpu_s"):
                row[name] = min(row[name], stats[name])
            if timed:
                programs[k, variant] = compiled

    for k in args.ks:
        mismatch = check_same_update({v: programs[k, v] for v in variants if (k, v) in programs}, state, real)
        if not mismatch <= 1e-4 and not np.isnan(mismatch):
            raise ValueError(f"{network}, K={k}: a program and the loop disagree (relative difference {mismatch:.2e}).")

    # Step times: round-robin over every program, so that drifting load affects all alike.
    for key, stats in time_round_robin(programs, state, real, args.repeats).items():
        rows[key].update(stats)
    rows = list(rows.values())
    if args.torch:
        for k in args.ks:
            mismatch = check_torch(network, k)
            if not mismatch <= 1e-10:
                raise ValueError(f"{network}, K={k}: torch and jgan disagree (relative difference {mismatch:.2e}).")
            stats = time_torch(network, k, args.torch_repeats, warmup=1)
            print(f"{network} K={k} torch: {stats['step_ms']:.1f} ms", flush=True)
            rows.append(dict(network=network, k=k, variant="torch", **stats))
    return rows


def _benchmark(args: Settings, _, stop) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = header()
    print(head, flush=True)
    rows = []
    for network in args.networks:
        rows += _benchmark_network(args, network)
        # The report so far, after each network: a long run that fails late keeps what it measured.
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        report = (f"{head}\n\n{markdown_table(rows)}\n\nThe targets' ratios (step time, median):"
                  f"\n\n{ratio_summary(rows)}\n\ncompile(K) / compile(K = 1), lower + compile, wall (CPU):"
                  f"\n\n{compile_ratios(rows)}\n\nload average at end: {load}\n")
        harness.write_text(out / "unroll_k.md", report)
        harness.write_json(out / "unroll_k.json", rows, indent=1)
    print("\n" + report)
    plot(rows, out / "unroll_k.png")
    print(f"wrote {out}/unroll_k.md, unroll_k.json and unroll_k.png")
    return rows


if __name__ == "__main__":
    main()
