"""Which implementation runs each 3x3 conv: chosen by measurement per layer, like cuDNN's benchmark mode.

`model.conv_impl` is 'lax' (XLA's convolution), 'winograd2' / 'winograd4' (jaxsr.models.winograd),
'native' (jaxsr's own CPU kernels, jaxsr.models.native_conv) or 'auto': for each (backend, shape, dtype,
direction) the first trace times every implementation that can run it (`candidates`; jitted,
the fastest of repeated calls after a warm-up, `probe_seconds`) and keeps the fastest, in this process and in a JSON file
shared by every process on the machine (`cache_path`), so that later runs, resumed runs and other
processes trace the same program without timing again. Directions: 'fwd' and 'dw' (weight gradient)
are timed; the input gradient of cin -> cout is the forward conv of cout -> cin with the transposed
kernel, so it uses that problem's 'fwd' entry.

'auto' keeps XLA's convolution without timing where timing cannot pay: dtypes other than float32 and
bfloat16 (float64 is for reference computations), and convs under `MIN_PROBE_FLOPS`, where a probe's
compilations (about a second) cost more than Winograd could save in thousands of steps; the test
configs' convs are all below it, so the test suite traces exactly the programs it did before. In a multi-process run 'auto' is lax:
every process must trace the same program, and hosts timing on their own (or reading their own
cache files) could choose differently; name an implementation there to use Winograd.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
from jax import lax

from jaxsr.models import conv_impls, native_conv, winograd

log = logging.getLogger(__name__)

IMPLS = conv_impls.IMPLS
CHOICES = ("auto",) + IMPLS
ENV_VAR = "JAXSR_CONV_CHOICE_CACHE"  # the cache file's path, overriding the default location
WARMUP, REPEATS, MAX_REPEATS = 2, 5, 50
PROBE_SECONDS = 0.1  # timed calls go on (up to MAX_REPEATS) until they add up to this
# 2*N*H*W*9*cin*cout below this: lax without timing. 5e7 FLOPs take ~0.25 ms at 200 GFLOP/s, so even a
# 4x faster conv saves < 0.2 ms a call, against ~1 s of probe compilations.
MIN_PROBE_FLOPS = 5e7
PROBED_DTYPES = ("float32", "bfloat16")

_memo: dict[str, str] = {}  # this process's choices, by cache key


def cache_path() -> pathlib.Path:
    """$JAXSR_CONV_CHOICE_CACHE, else next to JAX's compilation cache when one is set, else the XDG cache dir."""
    if os.environ.get(ENV_VAR):
        return pathlib.Path(os.environ[ENV_VAR])
    jax_cache = jax.config.jax_compilation_cache_dir
    if jax_cache:
        return pathlib.Path(jax_cache).parent / "jaxsr_conv_choice.json"
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxsr" / "conv_choice.json"


def cache_key(direction: str, x_shape: tuple[int, ...], cout: int, dtype) -> str:
    """One entry per backend and device kind, jax version (XLA's speed changes with it), problem, direction and
    the implementations timed: a choice made before an implementation existed, or where it could not run, is not
    reused where it can."""
    device = jax.devices()[0]
    n, h, w, cin = x_shape
    return (f"{device.platform}/{device.device_kind}/jax{jax.__version__}/{direction}/{n}x{h}x{w}/{cin}->{cout}/"
            f"{jnp.dtype(dtype).name}/{','.join(candidates(dtype))}")


def _problem(direction: str, impl: str, x_shape, cout: int, dtype):
    """A jitted call of one direction by one implementation and its random arguments."""
    n, h, w, cin = x_shape
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, x_shape, dtype)
    if direction == "fwd":
        wt = (jax.random.normal(kw, (3, 3, cin, cout)) / (9 * cin) ** 0.5).astype(dtype)
        return jax.jit(lambda a, b: conv_impls.conv_forward(impl, a, b)), (x, wt)
    dy = jax.random.normal(kw, (n, h, w, cout), dtype)
    return jax.jit(lambda a, b: conv_impls.conv_weight_gradient(impl, a, b, (3, 3, cin, cout))), (x, dy)


def probe_seconds(direction: str, impl: str, x_shape: tuple[int, ...], cout: int, dtype) -> float:
    """Fastest of at least `REPEATS` calls (and PROBE_SECONDS) of one direction by one implementation, after
    compiling and `WARMUP` calls.

    The minimum, not the median: interference (another process, a page fault in a fresh buffer) only adds
    time, and three calls' median still moved by up to 4x between probes of one problem (2026-12-07).
    """
    with jax.ensure_compile_time_eval():  # called while a model is traced: run now, do not stage into the trace
        f, args = _problem(direction, impl, x_shape, cout, dtype)
        for _ in range(WARMUP):
            jax.block_until_ready(f(*args))
        times: list[float] = []
        while len(times) < REPEATS or (sum(times) < PROBE_SECONDS and len(times) < MAX_REPEATS):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t0)
    return min(times)


def read_cache(path: pathlib.Path) -> dict:
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:  # a damaged cache costs a re-measurement, not a failed run
        log.warning("%s: unreadable conv choice cache (%s); measuring again", path, error)
        return {}
    return table if isinstance(table, dict) else {}


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _store(path: pathlib.Path, key: str, entry: dict, valid: tuple[str, ...]) -> str:
    """Adds `entry` under the file lock by read-merge-write and an atomic rename; returns the impl now on file.

    A key another process stored meanwhile is kept, and its choice returned: every process then traces
    the same program for the same problem.
    """
    with _locked(path):
        table = read_cache(path)
        if isinstance(table.get(key), dict) and table[key].get("impl") in valid:
            return table[key]["impl"]
        table[key] = entry
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name + ".", suffix=".tmp", delete=False) as f:
            json.dump(table, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(f.name, path)
    return entry["impl"]


def candidates(dtype) -> tuple[str, ...]:
    """What 'auto' may choose for `dtype`: 'native' only in float32 on a single CPU device where it builds."""
    native = (jnp.dtype(dtype) == jnp.float32 and jax.device_count() == 1 and jax.devices()[0].platform == "cpu"
              and native_conv.available())
    return tuple(impl for impl in IMPLS if impl != "native" or native)


def probed(x_shape: tuple[int, ...], cout: int, dtype) -> bool:
    """Whether 'auto' times this problem at all (else it is lax: module docstring)."""
    n, h, w, cin = x_shape
    return (jnp.dtype(dtype).name in PROBED_DTYPES and 2 * n * h * w * 9 * cin * cout >= MIN_PROBE_FLOPS
            and jax.process_count() == 1)


def choose(direction: str, x_shape: tuple[int, ...], cout: int, dtype) -> str:
    """The fastest implementation of one 'fwd' or 'dw' problem: from this process, the cache file, or timed now."""
    if not probed(x_shape, cout, dtype):
        return "lax"
    key = cache_key(direction, x_shape, cout, dtype)
    if key in _memo:
        return _memo[key]
    path = cache_path()
    valid = candidates(dtype)
    entry = read_cache(path).get(key)
    if isinstance(entry, dict) and entry.get("impl") in valid:
        _memo[key] = entry["impl"]
        return entry["impl"]
    seconds = {impl: probe_seconds(direction, impl, tuple(x_shape), cout, dtype) for impl in valid}
    best = min(seconds, key=seconds.get)
    _memo[key] = _store(path, key, {"impl": best, "seconds": seconds}, valid)
    log.info("conv %s %s: %s (%s)", key, _memo[key], best, ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in seconds.items()))
    return _memo[key]


def check_name(conv_impl: str) -> None:
    if conv_impl not in CHOICES:
        raise ValueError(f"conv_impl={conv_impl!r}: expected one of {', '.join(CHOICES)}")


@dataclasses.dataclass(frozen=True)
class Chosen:
    """conv_impl='auto''s (forward, input gradient, weight gradient) for one problem, each chosen when first asked.

    conv_impls.conv3x3 asks for [0] when the forward is traced and for [1] and [2] only when its gradient is:
    inference never times (or compiles) the gradient directions. Frozen, hence hashable: a custom_vjp static.
    """

    x_shape: tuple[int, ...]
    cout: int
    dtype: str

    def __getitem__(self, direction: int) -> str:
        n, h, w, cin = self.x_shape
        if direction == 1:  # the input gradient: the forward conv of the transposed problem
            return choose("fwd", (n, h, w, self.cout), cin, self.dtype)
        return choose(("fwd", None, "dw")[direction], self.x_shape, self.cout, self.dtype)


def resolve(conv_impl: str, x_shape: tuple[int, ...], cout: int, dtype) -> tuple[str, str, str]:
    """(forward, input gradient, weight gradient) implementations for `model.conv_impl`, all chosen now."""
    check_name(conv_impl)
    if conv_impl != "auto":
        return (conv_impl,) * 3
    chosen = Chosen(tuple(x_shape), cout, jnp.dtype(dtype).name)
    return chosen[0], chosen[1], chosen[2]


def conv(conv_impl: str, x: jax.Array, w: jax.Array) -> jax.Array:
    """The 3x3 'same' stride-1 conv of x (NHWC) and w (HWIO) by `conv_impl`; plain lax when every direction is lax."""
    check_name(conv_impl)
    cout = w.shape[-1]
    # the transposed problem (the input gradient's) has the same FLOPs, so this one decides for all three
    if conv_impl == "lax" or (conv_impl == "auto" and not probed(x.shape, cout, x.dtype)):
        return winograd.lax_conv(x, w)  # jax's own autodiff: the exact program of before conv_impl existed
    impls = (conv_impl,) * 3 if conv_impl != "auto" else Chosen(tuple(x.shape), cout, jnp.dtype(x.dtype).name)
    return conv_impls.conv3x3(impls, x, w)


@dataclasses.dataclass(frozen=True)
class ConvGeneralDilated:
    """A stand-in for lax.conv_general_dilated in nnx.Conv(conv_general_dilated=...) that routes by `conv_impl`.

    The module keeps nnx.Conv's parameters (kernel, bias: the checkpoint layout) and its dtype promotion;
    frozen, so equal settings give equal graph definitions. Anything but the 3x3 'same' stride-1 ungrouped
    NHWC conv goes to lax unchanged.
    """

    conv_impl: str

    def __post_init__(self):
        check_name(self.conv_impl)  # refused when the model is built, not at its first call

    def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
        plain = (rhs.ndim == 4 and rhs.shape[:2] == (3, 3) and tuple(window_strides) == (1, 1)
                 and [tuple(p) for p in padding] == [(1, 1), (1, 1)] and tuple(lhs_dilation or (1, 1)) == (1, 1)
                 and tuple(rhs_dilation or (1, 1)) == (1, 1) and feature_group_count == 1 and precision is None
                 and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
                 == lax.conv_dimension_numbers(lhs.shape, rhs.shape, winograd.DIMENSION_NUMBERS)
                 and all(v is None for v in kwargs.values()))
        if not plain:
            return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision, **kwargs)
        return conv(self.conv_impl, lhs, rhs)
