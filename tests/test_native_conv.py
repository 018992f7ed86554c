"""jaxsr's own CPU conv kernels (jaxsr.models.native_conv): the same function as lax, their build and their choice.

Tolerance: the kernels compute each output entry as a plain sum of products (fwd: 9*cin terms, dx: 9*cout,
dW: N*H*W, in row-group partial sums), so the computed value lies within gamma_k(u32) * the same sum on
absolute values of the exact one, k one more than the terms (Higham, Sec. 3.1), in any order, with or without
FMA: test_winograd.direct_float32_bounds, which test_blocked_conv uses for the same reason. The reference is
lax in float64 with its own bound added. The shapes reach every code path of the kernels on AVX2 and AVX-512
(vector widths 8 and 16): output channels as two vectors, one vector and a scalar tail (1, 5, 17, 33, 40),
a single input channel, pixel blocks inside the row and at its edges (widths 1 to 21), one-row images.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsr.config import load_config
from jaxsr.models import conv_choice, conv_impls, native_conv
from jaxsr.models.autoencoder import AutoEncoder
from tests.test_winograd import _case, _reference, direct_float32_bounds

needs_compiler = pytest.mark.skipif(native_conv.compiler() is None, reason="no C++ compiler on this machine")
SHAPES = [((2, 8, 8, 3), 5), ((3, 7, 13, 4), 1), ((1, 1, 3, 1), 2), ((2, 9, 21, 40), 33), ((1, 5, 19, 1), 40),
          ((2, 6, 20, 17), 48), ((1, 3, 1, 33), 17), ((2, 4, 11, 32), 1)]
NATIVE = ("native",) * 3


@jax.jit
def _native_all(x, w, dy):
    y, vjp = jax.vjp(lambda a, b: conv_impls.conv3x3(NATIVE, a, b), x, w)
    return (y, *vjp(dy))


@needs_compiler
@pytest.mark.parametrize("shape,cout", SHAPES)
def test_every_direction_within_the_direct_bound_of_float64_lax(shape, cout):
    x, w, dy = (a.astype(np.float32).astype(np.float64) for a in _case(shape, cout))
    ref, own = _reference(x, w, dy)
    got = _native_all(*(jnp.asarray(a, jnp.float32) for a in (x, w, dy)))
    for name, g, r, o, b in zip(("fwd", "dx", "dw"), got, ref, own, direct_float32_bounds(x.shape, w.shape, own)):
        bound = b + o  # plus lax's own float64 error
        assert g.shape == r.shape and g.dtype == jnp.float32, name
        assert np.all(np.abs(np.asarray(g, np.float64) - r) <= bound), (name, np.max(np.abs(g - r) - bound))


@needs_compiler
def test_the_bound_catches_a_wrong_tap():
    """Two kernel taps swapped, or a weight-gradient entry moved: far outside the same bound."""
    x, w, dy = (a.astype(np.float32).astype(np.float64) for a in _case((2, 9, 21, 40), 33))
    ref, own = _reference(x, w, dy)
    bound = [b + o for b, o in zip(direct_float32_bounds(x.shape, w.shape, own), own)]
    swapped = w.copy()
    swapped[0, 0], swapped[0, 1] = w[0, 1], w[0, 0]
    y = np.asarray(native_conv.forward(jnp.asarray(x, jnp.float32), jnp.asarray(swapped, jnp.float32)), np.float64)
    assert not np.all(np.abs(y - ref[0]) <= bound[0])
    dw = np.asarray(native_conv.weight_gradient(jnp.asarray(x, jnp.float32), jnp.asarray(dy, jnp.float32)), np.float64)
    dw[0, 0], dw[0, 1] = dw[0, 1].copy(), dw[0, 0].copy()
    assert not np.all(np.abs(dw - ref[2]) <= bound[2])


@needs_compiler
def test_vmap_and_repeated_calls_give_the_per_call_results_bit_for_bit():
    """Forward and input gradient fold a mapped axis into the images, the weight gradient maps; threads change no bit."""
    x, w, dy = (jnp.asarray(a, jnp.float32) for a in _case((6, 10, 24, 16), 32, seed=3))
    xs, dys = x.reshape(3, 2, *x.shape[1:]), dy.reshape(3, 2, *dy.shape[1:])
    ys = jax.jit(jax.vmap(native_conv.forward, in_axes=(0, None)))(xs, w)
    np.testing.assert_array_equal(ys, np.stack([native_conv.forward(xs[i], w) for i in range(3)]))
    dxs = jax.jit(jax.vmap(native_conv.input_gradient, in_axes=(0, None)))(dys, w)
    np.testing.assert_array_equal(dxs, np.stack([native_conv.input_gradient(dys[i], w) for i in range(3)]))
    ws = jnp.stack([w, 2 * w, -w])
    np.testing.assert_array_equal(jax.vmap(native_conv.forward)(xs, ws),
                                  np.stack([native_conv.forward(xs[i], ws[i]) for i in range(3)]))
    dws = jax.jit(jax.vmap(native_conv.weight_gradient))(xs, dys)
    np.testing.assert_array_equal(dws, np.stack([native_conv.weight_gradient(xs[i], dys[i]) for i in range(3)]))
    first = native_conv.weight_gradient(x, dy)
    assert all(np.array_equal(first, native_conv.weight_gradient(x, dy)) for _ in range(5))


@needs_compiler
def test_the_model_trains_the_same_function_with_native_convs():
    """tiny with conv_impl=native: lax's output and gradients, from the same (checkpoint-compatible) parameters."""
    def model(impl):
        return AutoEncoder(load_config("tiny", [f"--config.model.conv_impl={impl}"]).model, rngs=nnx.Rngs(0))

    native, reference = model("native"), model("lax")
    x = jnp.asarray(np.random.default_rng(4).random((2, 32, 32, 1)), jnp.float32)

    def loss_and_grads(m):
        return nnx.value_and_grad(lambda mm: jnp.mean((mm(x) - x) ** 2))(m)

    (l_n, g_n), (l_r, g_r) = loss_and_grads(native), loss_and_grads(reference)
    # float32 sums in another order through ~20 layers: agreement to a few float32 ulps of the largest entries
    np.testing.assert_allclose(l_n, l_r, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(nnx.to_pure_dict(g_n)), jax.tree.leaves(nnx.to_pure_dict(g_r))):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(np.abs(b).max()))
    program = str(jax.make_jaxpr(lambda m: loss_and_grads(m)[1])(native))
    assert "conv_general_dilated" not in program and "jaxsr_conv3x3_forward" in program


def test_bfloat16_is_refused_in_one_line():
    x = jnp.zeros((1, 4, 4, 2), jnp.bfloat16)
    with pytest.raises(native_conv.NativeUnavailable, match=r"^conv_impl=native computes in float32, not bfloat16"):
        native_conv.forward(x, jnp.zeros((3, 3, 2, 2), jnp.bfloat16))


_BUILD = """
import sys
from jaxsr.models import native_conv
print(native_conv.build())
"""


@needs_compiler
def test_processes_building_at_once_leave_one_library(tmp_path):
    env = dict(os.environ, JAXSR_NATIVE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD], env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0] and len(set(outs)) == 1
    assert [f.name for f in tmp_path.iterdir()] == [os.path.basename(outs[0])]  # no temporary file left


_WITHOUT = """
import jax, jax.numpy as jnp
from jaxsr.models import conv_choice, native_conv
assert not native_conv.available()
assert "native" not in conv_choice.candidates(jnp.float32), conv_choice.candidates(jnp.float32)
try:
    native_conv.forward(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)))
except native_conv.NativeUnavailable as error:
    print(error)
"""


@pytest.mark.parametrize("cxx", ["/nonexistent/c++", "false"])
def test_without_a_working_compiler_auto_keeps_to_xla_and_native_says_why(tmp_path, cxx):
    env = dict(os.environ, JAXSR_NATIVE_DIR=str(tmp_path), JAX_PLATFORMS="cpu", CXX=cxx,
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    done = subprocess.run([sys.executable, "-c", _WITHOUT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert "\n" not in message and message.startswith("conv_impl=native: ")
    assert ("no C++ compiler" in message) if cxx.startswith("/") else ("failed to compile conv3x3_cpu.cc" in message)
    assert not list(tmp_path.iterdir())  # nothing half-built left behind


@needs_compiler
def test_auto_offers_native_on_one_cpu_device_only(monkeypatch):
    assert "native" not in conv_choice.candidates(jnp.float32)  # the tests' 8 fake devices: XLA would gather
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    assert conv_choice.candidates(jnp.float32) == conv_choice.IMPLS
    assert "native" not in conv_choice.candidates(jnp.bfloat16)


def test_the_library_is_named_by_what_decides_the_binary(monkeypatch):
    cxx = native_conv.compiler() or "true"
    path = native_conv.library_path(cxx)
    monkeypatch.setattr(native_conv, "_cpu_identity", lambda: "another CPU")
    assert native_conv.library_path(cxx) != path
    monkeypatch.undo()
    monkeypatch.setattr(native_conv, "FLAGS", native_conv.FLAGS + ("-DX",))
    assert native_conv.library_path(cxx) != path and native_conv.library_path(cxx).parent == path.parent


_OTHER_ISA = """
import sys
from jaxsr.models import native_conv
native_conv.FLAGS = native_conv.FLAGS + tuple(sys.argv[1:])
import tests.test_native_conv as t
for shape, cout in t.SHAPES:
    t.test_every_direction_within_the_direct_bound_of_float64_lax(shape, cout)
t.test_vmap_and_repeated_calls_give_the_per_call_results_bit_for_bit()
print("ok", native_conv.library_path(native_conv.compiler()).name)
"""


@needs_compiler
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 vector widths")
def test_the_avx2_kernels_too(tmp_path):
    """This machine's -march=native may pick AVX-512 (16-wide vectors); a CPU without it runs the 8-wide tiles:
    built here with AVX-512 switched off, in a process of its own, they must pass the same checks."""
    env = dict(os.environ, JAXSR_NATIVE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", _OTHER_ISA, "-mno-avx512f"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok conv3x3_cpu-")
