"""jaxsr's own CPU kernels for the 3x3 convolutions (conv3x3_cpu.cc), compiled on first use, called via jax.ffi.

Why a hand-written kernel: on CPU, XLA's convolutions run this network's few-channel, high-resolution
layers at a fraction of the FMA rate (the weight gradient worst), and every formulation expressible in
XLA (Winograd, FFT, blocked layouts, bfloat16) was measured and lost there (benchmarks/README.md).

The C++ source ships with the package and is compiled here, once per machine, with the system's C++
compiler ($CXX, else `c++`) and `-march=native`, so the kernels use the vector units of the CPU they
run on. The shared library is cached under $JAXSR_NATIVE_DIR, else $XDG_CACHE_HOME/jaxsr/native, else
~/.cache/jaxsr/native, named by a hash of everything that decides the binary (source, XLA FFI headers,
compiler, flags, CPU), so a new jax, compiler or node type builds its own copy, and processes that build
at once each write a temporary file and rename it into place (an atomic replace of identical content).
Without a compiler (or on a failed build) `available()` is False and `conv_impl=auto` keeps to XLA and
Winograd; naming `conv_impl=native` then fails with the compiler's message.

float32 only, on the CPU backend. The kernels see the whole batch: under vmap the forward folds the
mapped axis into the images, other cases map sequentially. With several devices XLA would gather the
operands onto one (a custom call has no sharding rule), so `auto` offers it on a single device only.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp

from jaxsr.errors import ConfigError

log = logging.getLogger(__name__)

SOURCE = pathlib.Path(__file__).with_name("conv3x3_cpu.cc")
DIR_ENV_VAR = "JAXSR_NATIVE_DIR"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
# jax.ffi target name -> the handler symbol in conv3x3_cpu.cc
TARGETS = {"jaxsr_conv3x3_forward": "Conv3x3Forward", "jaxsr_conv3x3_input_gradient": "Conv3x3InputGradient",
           "jaxsr_conv3x3_weight_gradient": "Conv3x3WeightGradient"}

_loaded: dict[str, object] = {}  # "library": the ctypes.CDLL once registered, or "error": why it is unavailable


class NativeUnavailable(ConfigError):
    """conv_impl=native asked for where the kernels cannot be built or run."""


def build_dir() -> pathlib.Path:
    if os.environ.get(DIR_ENV_VAR):
        return pathlib.Path(os.environ[DIR_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxsr" / "native"


def compiler() -> str | None:
    """The C++ compiler's path: $CXX, else c++ on PATH; None when there is none."""
    return shutil.which(os.environ.get("CXX") or "c++")


def _cpu_identity() -> str:
    """The CPU's model and feature flags, which -march=native compiles for."""
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = ("model name", "flags", "Features", "CPU part")  # x86 and arm spellings
    seen = [line for line in lines if line.split(":")[0].strip() in keep]
    return "\n".join(dict.fromkeys(seen))  # first core's lines (identical cores repeat them)


def library_path(cxx: str) -> pathlib.Path:
    """Where the library for this source, jax, compiler, flags and CPU is cached."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), *(p.read_bytes() for p in sorted(pathlib.Path(jax.ffi.include_dir()).rglob("*.h"))),
                 version.encode(), " ".join(FLAGS).encode(), _cpu_identity().encode()):
        h.update(hashlib.sha256(part).digest())
    return build_dir() / f"conv3x3_cpu-{h.hexdigest()[:20]}.so"


def build() -> pathlib.Path:
    """The compiled library's path, compiling it first when this machine has none; NativeUnavailable on failure."""
    cxx = compiler()
    if cxx is None:
        raise NativeUnavailable(f"conv_impl=native: no C++ compiler ({os.environ.get('CXX') or 'c++'} not found; set $CXX)")
    path = library_path(cxx)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    os.close(fd)
    try:
        done = subprocess.run([cxx, *FLAGS, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", tmp],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise NativeUnavailable(f"conv_impl=native: {cxx} failed to compile {SOURCE.name}: {last}")
        os.replace(tmp, path)  # atomic: another process's identical build may have landed meanwhile
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("compiled %s into %s", SOURCE.name, path)
    return path


def load() -> None:
    """Builds (or finds) the library and registers its kernels with XLA, once per process."""
    if "library" in _loaded:
        return
    if "error" in _loaded:
        raise NativeUnavailable(str(_loaded["error"]))
    try:
        if jax.default_backend() != "cpu":
            raise NativeUnavailable(f"conv_impl=native: CPU kernels, but jax's backend is {jax.default_backend()}")
        library = ctypes.CDLL(str(build()))
        for target, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    except (NativeUnavailable, OSError) as error:
        _loaded["error"] = error if isinstance(error, NativeUnavailable) else f"conv_impl=native: {error}"
        raise NativeUnavailable(str(_loaded["error"])) from None
    _loaded["library"] = library


def available() -> bool:
    """Whether the kernels can run here (builds them on the first call); logs why not, once."""
    try:
        load()
    except NativeUnavailable as error:
        if not _loaded.get("warned"):
            log.warning("%s; conv_impl=auto uses XLA and Winograd only", error)
            _loaded["warned"] = True
        return False
    return True


def _check(x: jax.Array, other: jax.Array) -> None:
    if x.dtype != jnp.float32 or other.dtype != jnp.float32:
        raise NativeUnavailable(f"conv_impl=native computes in float32, not {x.dtype}/{other.dtype} (model.dtype)")


def _map_each(f, axis_size: int, in_batched, a: jax.Array, b: jax.Array) -> tuple[jax.Array, bool]:
    """A custom_vmap rule's fallback: f on each mapped entry in turn, an unmapped operand broadcast to the axis."""
    a, b = (v if batched else jnp.broadcast_to(v, (axis_size, *v.shape)) for v, batched in zip((a, b), in_batched))
    return jax.lax.map(lambda pair: f(*pair), (a, b)), True


def _image_conv(target: str, doc: str):
    """forward(x, w) or input_gradient(dy, w) by `target`: images in, images out, one kernel for all of them."""

    @jax.custom_batching.custom_vmap
    def conv(x: jax.Array, w: jax.Array) -> jax.Array:
        _check(x, w)
        load()
        channels = w.shape[-1] if target == "jaxsr_conv3x3_forward" else w.shape[-2]
        return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(x.shape[:-1] + (channels,), jnp.float32))(x, w)

    @conv.def_vmap
    def _vmap(axis_size, in_batched, x, w):
        if in_batched == [True, False]:  # one kernel for every image: fold the mapped axis into the batch
            y = conv(x.reshape(-1, *x.shape[2:]), w)
            return y.reshape(axis_size, -1, *y.shape[1:]), True
        return _map_each(conv, axis_size, in_batched, x, w)

    conv.__doc__ = doc
    return conv


forward = _image_conv("jaxsr_conv3x3_forward", "The 3x3 'same' stride-1 conv of x (NHWC) with w (HWIO), float32.")
input_gradient = _image_conv("jaxsr_conv3x3_input_gradient",
                             "dL/dx (NHWC) of the conv of x with w (HWIO) given dy = dL/dconv, float32.")


@jax.custom_batching.custom_vmap
def weight_gradient(x: jax.Array, dy: jax.Array) -> jax.Array:
    """dL/dw (3, 3, cin, cout) of the conv of x (NHWC) given dy = dL/dconv, float32."""
    _check(x, dy)
    load()
    out = jax.ShapeDtypeStruct((3, 3, x.shape[-1], dy.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call("jaxsr_conv3x3_weight_gradient", out)(x, dy)


@weight_gradient.def_vmap
def _weight_gradient_vmap(axis_size, in_batched, x, dy):
    return _map_each(weight_gradient, axis_size, in_batched, x, dy)  # each mapped entry sums over its own images
