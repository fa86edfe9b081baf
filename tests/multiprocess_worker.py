"""One process of the runs of tests/test_multiprocess.py (not a test file).

Run once per process, each with its own ``--process-id``::

    python tests/multiprocess_worker.py --num-processes 2 --process-id 0 \
        --port 12345 --devices 2 --out OUT --checkpoints CKPT

The process configures JAX's CPU platform with ``--devices`` devices, joins
the run through :func:`jgan.parallel.initialize` (with more than one
process), and trains two GANs data-parallel over every device of every
process, each global batch assembled from this process's rows:

- the mixture of Gaussians of ``examples/mog.py`` (flax MLPs, unrolled
  discriminator, EMA; small widths);
- a DCGAN of ``jgan.models`` at a tiny width on 28x28 digits (BatchNorm
  statistics in the model state).

Both train ``2 * --steps`` steps in one state pytree; the first ``--steps``
are each checkpointed in ``--checkpoints`` (``max_to_keep=2``). The latest
checkpoint is then restored into a freshly initialised template (another
seed, replicated over the mesh) and trained the remaining steps. The final
states of both (the uninterrupted and the resumed), the metrics of every
step and facts about the checkpoints go to ``OUT/process_<id>.npz`` and
``OUT/process_<id>.json``.

With ``--only-initialize`` it joins the run and exits (the bad-input test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

# JAX and jgan are imported inside the functions: the platform and the device
# count must be set before anything (a module creating an array) starts JAX.

def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True, help="CPU devices of this process")
    parser.add_argument("--out", help="directory of the results")
    parser.add_argument("--checkpoints", help="the checkpoint directory (shared by the processes)")
    parser.add_argument("--steps", type=int, default=3, help="steps before and after the checkpoint")
    parser.add_argument("--initialization-timeout", type=int, default=60)
    parser.add_argument("--only-initialize", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = _parse(argv)
    start = time.perf_counter()
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.devices)

    from jgan import parallel

    if args.num_processes > 1:
        parallel.initialize(
            f"localhost:{args.port}", args.num_processes, args.process_id,
            initialization_timeout=args.initialization_timeout,
        )
    if args.only_initialize:
        print(f"process {jax.process_index()} of {jax.process_count()} joined", flush=True)
        return
    print(f"joined after {time.perf_counter() - start:.1f} s ({time.process_time():.1f} s of CPU)", flush=True)
    results, facts = _train(args)
    print(f"done after {time.perf_counter() - start:.1f} s ({time.process_time():.1f} s of CPU)", flush=True)
    os.makedirs(args.out, exist_ok=True)
    name = os.path.join(args.out, f"process_{jax.process_index()}")
    np.savez(name + ".npz", **results)
    with open(name + ".json", "w") as f:
        json.dump(facts, f)


# Sizes: small enough to compile in seconds, big enough to exercise every part.
MOG_BATCH = 64
MOG_HIDDEN = (32, 32)
MOG_LATENT = 2
MOG_UNROLL = 1
IMAGE_BATCH = 16
IMAGE_SIZE = 28
IMAGE_FEATURES = 4
IMAGE_LATENT = 8


class _Clock:
    """Prints the wall and CPU seconds since the last call (where a slow run spends its time)."""

    def __init__(self):
        self.last = time.perf_counter(), time.process_time()

    def __call__(self, what):
        now = time.perf_counter(), time.process_time()
        print(f"{what}: {now[0] - self.last[0]:.1f} s ({now[1] - self.last[1]:.1f} s of CPU)", flush=True)
        self.last = now


def _gans():
    """The two GANs (``jgan.steps.GAN``) and their initialisation ``key -> state``."""
    import jax
    import jax.numpy as jnp
    import optax

    from jgan import models, steps

    def adam(lr):  # examples/mog.py's optimizer (b1 = 0.5, tiny eps_root).
        return optax.adam(lr, b1=0.5, eps_root=1e-16)

    mog_g = models.MLPGenerator(out_features=2, hidden=MOG_HIDDEN)
    mog_d = models.MLPDiscriminator(hidden=MOG_HIDDEN)
    mog = steps.make_gan(
        generator=models.make_apply(mog_g, stateful=False),
        discriminator=models.make_apply(mog_d, stateful=False),
        g_optimizer=adam(1e-3), d_optimizer=adam(1e-4), prior=MOG_LATENT,
        loss="non_saturating", unroll=steps.Unrolled(MOG_UNROLL), ema_decay=0.99,
    )
    image_g = models.DCGANGenerator(image_size=IMAGE_SIZE, channels=1, features=IMAGE_FEATURES)
    image_d = models.DCGANDiscriminator(features=IMAGE_FEATURES)
    image = steps.make_gan(
        generator=models.make_apply(image_g, stateful=True),
        discriminator=models.make_apply(image_d, stateful=True),
        g_optimizer=adam(2e-4), d_optimizer=adam(2e-4), prior=IMAGE_LATENT,
        loss="non_saturating", ema_decay=0.9, g_stateful=True, d_stateful=True,
    )

    def init(key):
        keys = jax.random.split(key, 6)
        g_params, _ = models.init_model(mog_g, keys[0], jnp.zeros((1, MOG_LATENT)))
        d_params, _ = models.init_model(mog_d, keys[1], jnp.zeros((1, 2)))
        mog_state = mog.init(keys[2], g_params, d_params)
        g_params, g_state = models.init_model(image_g, keys[3], jnp.zeros((1, IMAGE_LATENT)))
        d_params, d_state = models.init_model(image_d, keys[4], jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1)))
        image_state = image.init(keys[5], g_params, d_params, g_model_state=g_state, d_model_state=d_state)
        return {"mog": mog_state, "image": image_state}

    jitted = jax.jit(init)  # One program, not one per operation.

    def fast_init(key):
        # The initial values are arbitrary here; threefry's partitionable mode
        # (JAX's default, kept for the steps) compiles the initialisers about
        # four times slower (8.5 s against 1.9 s for the discriminator, loaded CPU).
        with jax.threefry_partitionable(False):
            return jitted(key)

    return mog, image, fast_init


def _train(args):
    import jax

    from jgan import checkpoint, data, parallel

    mog, image, init = _gans()
    mesh = parallel.batch_mesh()
    replicated = parallel.replicated(mesh)

    # Each GAN's step, compiled for the replicated state and the sharded batch.
    gan_steps = {name: jax.jit(gan.step, out_shardings=replicated) for name, gan in (("mog", mog), ("image", image))}

    def step(states, batches):
        out = {name: gan_steps[name](states[name], batches[name]) for name in states}
        return {name: out[name][0] for name in out}, {name: out[name][1] for name in out}

    spec = data.mixture("ring")
    digits, _ = data.digits(image_size=IMAGE_SIZE)
    mog_rows = parallel.process_rows(MOG_BATCH, mesh)
    image_rows = parallel.process_rows(IMAGE_BATCH, mesh)

    def batch(i):
        """Step ``i``'s global batches (the same numpy on every process): this process's rows, assembled."""
        mixture = np.asarray(data.sample_mixture(jax.random.fold_in(jax.random.key(7), i), MOG_BATCH, spec))
        images = digits[i * IMAGE_BATCH:(i + 1) * IMAGE_BATCH]
        local = {"mog": mixture[mog_rows], "image": images[image_rows]}
        return parallel.global_batch(local, mesh)

    listed = []  # What each save leaves, as this process sees it as soon as the save returns.
    if jax.process_index() == 0 and jax.process_count() > 1:
        # Process 0 empties the deleted steps late: another process that
        # returned from save before the clean-up ends would see them.
        empty_trash = checkpoint._empty_trash

        def late_empty_trash(directory):
            time.sleep(0.5)
            empty_trash(directory)

        checkpoint._empty_trash = late_empty_trash

    def train(states, start, stop, save=False):
        metrics = []
        for i in range(start, stop):
            states, m = step(states, batch(i))
            metrics.append(m)
            if save:
                checkpoint.save(args.checkpoints, states, step=i + 1, metadata={"saved_by": jax.process_count()},
                                max_to_keep=2)
                listed.append({"steps": checkpoint.all_steps(args.checkpoints),
                               "entries": sorted(os.listdir(args.checkpoints))})
        return states, metrics

    n = args.steps
    clock = _Clock()
    states = parallel.replicate(init(jax.random.key(0)), mesh)
    clock("initialised")
    half, first_metrics = train(states, 0, n, save=True)
    clock(f"{n} steps (compiled), each checkpointed")
    straight, second_metrics = train(half, n, 2 * n)
    clock(f"{n} more steps")

    template = parallel.replicate(init(jax.random.key(1)), mesh)
    clock("template initialised")
    restored, metadata = checkpoint.restore(args.checkpoints, template)
    clock("restored")
    leaves = jax.tree.leaves(restored)
    facts = {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "mog_rows": [mog_rows.start, mog_rows.stop],
        "listed_after_each_save": listed,
        "all_steps": checkpoint.all_steps(args.checkpoints),
        "metadata": metadata,
        "restored_replicated": all(leaf.sharding == replicated for leaf in leaves),
        "restored_fully_addressable": any(leaf.is_fully_addressable for leaf in leaves),
        "entries": sorted(os.listdir(args.checkpoints)),
    }
    resumed, resumed_metrics = train(restored, n, 2 * n)
    clock(f"{n} steps resumed")
    try:  # A process-local leaf cannot be saved by several processes.
        checkpoint.save(os.path.join(args.out, f"local_{jax.process_index()}"), {"local": np.ones(2)}, step=1)
        facts["local_leaf_error"] = None
    except ValueError as error:
        facts["local_leaf_error"] = str(error)

    results = {
        "straight": straight,
        "resumed": resumed,
        "metrics": first_metrics + second_metrics,
        "resumed_metrics": resumed_metrics,
    }
    flat, _ = jax.tree_util.tree_flatten_with_path(parallel.to_host(results))
    return {jax.tree_util.keystr(path): value for path, value in flat}, facts


if __name__ == "__main__":
    sys.exit(main())
