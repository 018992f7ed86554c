"""Test set-up: 8 fake CPU devices for JAX, no GPUs for TensorFlow.

This must run before jax is imported anywhere, which conftest guarantees.
"""

import os
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# conv_impl=auto remembers its per-layer timings in a cache file: the tests' goes to a fresh temporary
# folder (subprocesses inherit it), never the user's ~/.cache.
_cache = tempfile.mkdtemp(prefix="jaxsr-test-")
os.environ.setdefault("JAXSR_CONV_CHOICE_CACHE", os.path.join(_cache, "conv_choice.json"))
# conv_impl=native compiles its CPU kernels once per machine into a cache folder: the tests' is their own too.
os.environ.setdefault("JAXSR_NATIVE_DIR", os.path.join(_cache, "native"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)
