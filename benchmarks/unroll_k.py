"""Unrolled-GAN train step versus K: compile time, step time and memory.

The setup is the mixture-of-Gaussians experiment of Metz et al. (2016),
appendix A: generator and discriminator are MLPs with two hidden layers of
128 ReLU units, the latent dimension is 256, the batch 512, both optimizers
Adam. For each K it builds ``jgan.steps.make_gan(unroll=Unrolled(K))`` and
measures three programs of the same train step:

- ``scan``: jgan as shipped; the K discriminator updates run in ``lax.scan``.
- ``loop``: the K updates as a Python loop of optax updates, traced into one
  fully unrolled program (the reference: one straight-line program that XLA
  can optimise across updates, whose size and compile time grow with K): an
  ``Unrolled`` subclass whose ``unroll`` method is the loop; everything else
  is the same step, and the script checks that both programs compute the
  same update.
- ``first_order``: ``Unrolled(K, first_order=True)`` (gradients stopped
  through the updates; an ablation).

Load from other processes only ever adds time, so each program is compiled
``--compile-repeats`` times (interleaved with the others) and the fastest is
reported, and step times are taken round-robin over all programs, so that
drifting load affects them alike. Reported per program:

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

    python -m benchmarks.unroll_k --ks 0 1 5 10 20 --memory-ks 100 --out runs/bench
    # unroll_discriminator's remat option and lax.scan unroll factors:
    python -m benchmarks.unroll_k --ks 1 5 10 20 --memory-ks 100 --out runs/bench_options \
        --variants scan scan_remat scan_remat_dots scan_unroll2 scan_unroll5

``--memory-ks`` adds compile-only rows (compile time and temp memory) for
large K, where the fully unrolled program is left out (its compile time grows
linearly with K). Results go to ``--out`` as ``unroll_k.md`` (the table),
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
    "scan": unroll.Unrolled,
    "loop": PythonLoop,
    "first_order": functools.partial(unroll.Unrolled, first_order=True),
    # Options of Unrolled, and scan unroll factors, to measure them.
    "scan_remat": functools.partial(unroll.Unrolled, remat=True),
    "scan_remat_dots": functools.partial(unroll.Unrolled, remat=jax.checkpoint_policies.dots_saveable),
    "scan_unroll2": functools.partial(ScanUnrollFactor, factor=2),
    "scan_unroll5": functools.partial(ScanUnrollFactor, factor=5),
}


def mog_setup():
    """Parameters, optimizers, networks and one batch of the ring of 8 Gaussians."""
    key = jax.random.key(0)
    g_module, d_module = MLPGenerator(out_features=2), MLPDiscriminator()
    g_opt = optax.adam(LEARNING_RATE, b1=B1)
    d_opt = optax.adam(LEARNING_RATE, b1=B1, eps_root=EPS_ROOT)
    nets = dict(generator=make_apply(g_module, stateful=False),
                discriminator=make_apply(d_module, stateful=False),
                g_optimizer=g_opt, d_optimizer=d_opt, prior=LATENT)
    state = harness.init_gan(steps.make_gan(**nets), key, g_module, d_module,
                             (jnp.zeros((1, LATENT)),), (jnp.zeros((1, 2)),))
    real = data.ring(jax.random.fold_in(key, 3), BATCH)
    return state, nets, real


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
    """Largest relative difference of the generator's loss and gradient norm, scan versus loop.

    (The parameters themselves are a poor check after one Adam step from a fresh state: it
    moves each by about ±lr whatever the gradient's size, so round-off in a near-zero
    gradient entry flips its update.)
    """
    if "scan" not in programs or "loop" not in programs:
        return float("nan")
    a = programs["scan"](state, real)[1]
    b = programs["loop"](state, real)[1]
    return max(abs(float(a[m]) - float(b[m])) / abs(float(b[m])) for m in ("g_loss", "g_grad_norm"))


def header() -> str:
    device = jax.devices()[0]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"jax {jax.__version__}, jaxlib {jaxlib.__version__}"
            f" on {device.platform.upper()} ({device.device_kind}), {os.cpu_count()} CPU cores,"
            f" {platform.processor() or platform.machine()}, Python {platform.python_version()};"
            f" load average at start {load}")


def markdown_table(rows: list[dict]) -> str:
    rows = sorted(rows, key=lambda r: r["k"])
    lines = ["| K | program | lower (s) | compile (s) | lower + compile, CPU (s)"
             " | step (ms), median [IQR] | step / loop | temp (MiB) |",
             "| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |"]
    by_k = {}
    for row in rows:
        by_k.setdefault(row["k"], {})[row["variant"]] = row
    for row in rows:
        loop = by_k[row["k"]].get("loop")
        if "step_ms" in row:
            step = f"{row['step_ms']:.1f} [{row['step_q1_ms']:.1f}, {row['step_q3_ms']:.1f}]"
            rel = f"{row['step_ms'] / loop['step_ms']:.2f}" if loop and "step_ms" in loop else "–"
        else:
            step, rel = "–", "–"
        temp = "–" if row["temp_mib"] is None else f"{row['temp_mib']:.1f}"
        lines.append(f"| {row['k']} | {row['variant']} | {row['lower_s']:.2f}"
                     f" | {row['compile_s']:.2f} | {row['compile_cpu_s']:.2f} | {step} | {rel}"
                     f" | {temp} |")
    return "\n".join(lines)


def compile_ratios(rows: list[dict]) -> str:
    """(lower + compile)(K) / (lower + compile)(K = 1), in wall time and in CPU time."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = {r["k"]: r for r in rows if r["variant"] == variant}
        if 1 not in mine or not any(k > 1 for k in mine):
            continue
        wall = {k: r["lower_s"] + r["compile_s"] for k, r in mine.items()}
        cpu = {k: r["compile_cpu_s"] for k, r in mine.items()}
        parts = [f"K={k}: {wall[k] / wall[1]:.2f} (CPU {cpu[k] / cpu[1]:.2f})"
                 for k in sorted(mine) if k > 1]
        out.append(f"- {variant}: compile(K) / compile(K=1), wall (CPU): " + ", ".join(parts))
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    plt = harness.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["k"])
        ks = [r["k"] for r in mine]
        axes[0].plot(ks, [r["lower_s"] + r["compile_s"] for r in mine], "o-", label=variant)
        timed = [r for r in mine if "step_ms" in r]
        if timed:
            axes[1].errorbar([r["k"] for r in timed], [r["step_ms"] for r in timed],
                             yerr=[[r["step_ms"] - r["step_q1_ms"] for r in timed],
                                   [r["step_q3_ms"] - r["step_ms"] for r in timed]],
                             fmt="o-", capsize=3, label=variant)
        axes[2].plot(ks, [r["temp_mib"] for r in mine], "o-", label=variant)
    axes[0].set(xlabel="K (unrolled discriminator updates)", ylabel="lower + compile (s)",
                title="compile time")
    axes[1].set(xlabel="K", ylabel="ms per train step (median, IQR)", title="step time")
    axes[2].set(xlabel="K", ylabel="MiB", title="XLA temp buffers")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Unrolled GAN train step, MoG MLPs (2×128 ReLU, latent 256, batch 512, Adam)")
    fig.tight_layout()
    harness.save_figure(path, fig, dpi=120)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The benchmark's command line."""

    ks: tuple[int, ...] = option((0, 1, 5, 10, 20), "values of K to time")
    variants: tuple[str, ...] = option(("scan", "loop", "first_order"), "programs to measure", choices=sorted(VARIANTS))
    repeats: int = option(30, "timed calls per program (round-robin over all programs)")
    compile_repeats: int = option(3, "compilations per program; the fastest is reported")
    memory_ks: tuple[int, ...] = option((), "values of K to compile only (compile time and memory; no loop)")
    out: str = option("runs/bench", "the output directory")

    def validate(self) -> None:
        if min((*self.ks, *self.memory_ks), default=0) < 0 or self.repeats < 1 or self.compile_repeats < 1:
            raise ValueError("--ks and --memory-ks must be >= 0, --repeats and --compile-repeats >= 1.")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """The command line (``python -m benchmarks.unroll_k --help`` lists the flags); returns the rows."""
    return harness.main(Settings, _benchmark, argv=argv, doc=__doc__, prog="python -m benchmarks.unroll_k",
                        out=None, resume=False, quiet=False)


def _benchmark(args: Settings, _, stop) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    head = header()
    print(head, flush=True)
    state, nets, real = mog_setup()
    build("scan", 0, state, nets, real)  # Warm the compiler; the first compile is slower.

    # Compile every program compile_repeats times, interleaved, and keep the fastest time:
    # load from other processes only ever adds to a compile time.
    jobs = [(k, v, True) for k in args.ks for v in args.variants]
    jobs += [(k, v, False) for k in args.memory_ks for v in args.variants if v != "loop"]
    rows, programs = {}, {}
    for _ in range(args.compile_repeats):
        for k, variant, timed in jobs:
            compiled, stats = build(variant, k, state, nets, real)
            print(f"K={k} {variant}: lower {stats['lower_s']:.2f}s compile"
                  f" {stats['compile_s']:.2f}s temp {stats['temp_mib']:.1f} MiB", flush=True)
            row = rows.setdefault((k, variant), dict(k=k, variant=variant, **stats))
            row["lower_s"] = min(row["lower_s"], stats["lower_s"])
            row["compile_s"] = min(row["compile_s"], stats["compile_s"])
            row["compile_cpu_s"] = min(row["compile_cpu_s"], stats["compile_cpu_s"])
            if timed:
                programs[k, variant] = compiled

    for k in args.ks:
        mine = {v: programs[k, v] for v in args.variants}
        mismatch = check_same_update(mine, state, real)
        if not mismatch <= 1e-4 and not np.isnan(mismatch):
            raise ValueError(f"K={k}: scan and loop disagree (relative difference {mismatch:.2e}).")

    # Step times: round-robin over every program, so that drifting load affects all alike.
    for key, stats in time_round_robin(programs, state, real, args.repeats).items():
        rows[key].update(stats)
    rows = list(rows.values())

    table = markdown_table(rows)
    ratios = compile_ratios(rows)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report = f"{head}\n\n{table}\n\n{ratios}\n\nload average at end: {load}\n"
    print("\n" + report)
    harness.write_text(out / "unroll_k.md", report)
    harness.write_json(out / "unroll_k.json", rows, indent=1)
    plot(rows, out / "unroll_k.png")
    print(f"wrote {out}/unroll_k.md, unroll_k.json and unroll_k.png")
    return rows


if __name__ == "__main__":
    main()
