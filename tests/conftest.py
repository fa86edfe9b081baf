"""Test configuration shared by every test file.

Eight host devices are forced on the CPU *before* JAX initialises its backend,
so that the multi-device tests (tests/test_multidevice.py) can run in the same
pytest process as everything else. Single-device code is unaffected: arrays
live on device 0 unless a test asks otherwise.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import gc  # noqa: E402

import jax  # noqa: E402  (must come after XLA_FLAGS is set)
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops every compiled program after each test file.

    XLA:CPU maps each compiled program's machine code into the process, and a
    program stays mapped while a jit cache holds it. Over the whole suite
    (thousands of programs) the mappings reached the kernel's limit
    (``vm.max_map_count``, 65,530), where the next compilation's ``mmap``
    fails and XLA dies with a segmentation fault (measured: the count of
    ``/proc/self/maps`` lines climbed to 64,687 before the crash, in whichever
    test compiled next). Clearing the caches between files keeps the count to
    one file's programs.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def x64():
    """Runs the test body with 64-bit floats enabled (for closed-form checks)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny untrained stand-in for the stacked digits' mode-counting classifier (28x28, one channel): its path."""
    import jax.numpy as jnp

    from jgan import models  # flax: imported only by the tests that use it

    path = tmp_path_factory.mktemp("classifier") / "classifier.msgpack"
    module = models.DigitClassifier(features=(4, 4, 4))
    params = module.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    models.save_classifier(path, module, params, image_size=28)
    return str(path)
