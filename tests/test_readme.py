"""The README's code runs as written (the training example with fewer iterations)."""

import pathlib
import re

import jax.numpy as jnp

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_training_example_runs():
    example = _blocks()[0]
    assert "range(3000)" in example, "the README example changed: update this test"
    namespace = {}
    exec(compile(example.replace("range(3000)", "range(3)"), str(README), "exec"), namespace)
    assert int(namespace["state"].step) == 3
    assert float(namespace["m"]["nonfinite"]) == 0.0
    assert namespace["samples"].shape == (2500, 2)


def test_readme_nnx_example_runs():
    (example,) = [b for b in _blocks() if "nnx.Module" in b]
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    logits, state = namespace["d_apply"](namespace["d_params"], namespace["d_state"], jnp.ones((8, 4)))
    assert logits.shape == (8,)
    assert set(state) == set(namespace["d_state"])
