"""The core imports only its declared dependencies (jax, jaxlib, optax, numpy).

``pyproject.toml`` lists jax, jaxlib, optax and numpy as jgan's only
dependencies; flax, orbax, matplotlib, tqdm, scikit-learn, TensorFlow and
torch are extras (and chex a dev dependency). These tests import the core in
a fresh interpreter (the one running the tests) so that nothing the test
session already imported can hide an import:

- after importing every core module, none of those packages is in
  ``sys.modules``;
- with those packages made unimportable (a meta-path finder raises
  ``ModuleNotFoundError`` for them, as a machine without them would), the
  core still imports and a small GAN built with ``make_gan`` trains a step.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

# The modules a user of the core imports (DESIGN.md, "Layers": the math and
# training layers, with the presets of the seed algorithms).
CORE_MODULES = (
    "jgan",
    "jgan.losses",
    "jgan.penalties",
    "jgan.augment",
    "jgan.unroll",
    "jgan.objectives",
    "jgan.steps",
    "jgan.loop",
    "jgan.metrics",
    "jgan.presets",
    "jgan.cyclegan",
)

# Top-level names of the packages that are extras or dev dependencies.
NOT_CORE = (
    "flax",
    "orbax",
    "tensorflow",
    "tensorflow_datasets",
    "torch",
    "matplotlib",
    "tqdm",
    "sklearn",
    "chex",
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_python(code: str) -> str:
    """Runs ``code`` in a fresh interpreter (this one's executable) from the repository root."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    # One device is enough here: do not inherit conftest's forced 8 CPU devices.
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"the subprocess failed (exit {result.returncode}):\n{result.stderr[-4000:]}"
    )
    return result.stdout.strip().splitlines()[-1]


def test_core_leaves_extras_out_of_sys_modules():
    code = textwrap.dedent(
        f"""
        import json, sys
        for name in {CORE_MODULES!r}:
            __import__(name)
        not_core = set({NOT_CORE!r})
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in not_core)))
        """
    )
    imported = json.loads(_run_python(code))
    assert imported == [], f"the core imported packages that are not core dependencies: {imported}"


def test_core_imports_and_trains_without_extras_installed():
    code = textwrap.dedent(
        f"""
        import importlib.abc, json, sys

        BLOCKED = set({NOT_CORE!r})

        class Blocker(importlib.abc.MetaPathFinder):
            # What a machine without the extras installed says.
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
                return None

        sys.meta_path.insert(0, Blocker())
        already = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not already, already

        for name in {CORE_MODULES!r}:
            __import__(name)

        import jax, jax.numpy as jnp, optax
        from jgan import metrics, presets, steps

        def g_apply(params, z):
            return jnp.tanh(z @ params["w"] + params["b"])

        def d_apply(params, x):
            return (x @ params["w"] + params["b"])[:, 0]

        key = jax.random.key(0)
        kg, kd, kx = jax.random.split(key, 3)
        g_params = {{"w": jax.random.normal(kg, (2, 2)), "b": jnp.zeros(2)}}
        d_params = {{"w": jax.random.normal(kd, (2, 1)), "b": jnp.zeros(1)}}
        gan = steps.make_gan(
            generator=g_apply, discriminator=d_apply,
            g_optimizer=optax.adam(1e-3), d_optimizer=optax.adam(1e-3),
            prior=2, unroll=steps.Unrolled(2), ema_decay=0.9,
        )
        state = gan.init(key, g_params, d_params)
        state, m = jax.jit(gan.step)(state, jax.random.normal(kx, (8, 2)))
        steps.check_finite(m, step=0)
        samples = gan.sample(state, key, 16)
        assert samples.shape == (16, 2), samples.shape
        cov = metrics.mode_coverage(samples, jnp.zeros((1, 2)), std=1.0)
        presets.wgan_gp()
        print(json.dumps({{
            "d_loss": float(m["d_loss"]),
            "modes": int(cov.modes),
            "imported": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
        }}))
        """
    )
    result = json.loads(_run_python(code))
    assert result["imported"] == []
    # A finite step; the mixture has one mode at the origin, N(0, 1) samples
    # within 3 sigma of it capture it.
    assert result["modes"] == 1
    assert abs(result["d_loss"]) < 1e6
