"""Achievable FLOP/s: measured with a large matmul, or the vendor figure."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks import common


def measured_matmul_peak(dtype: str = "float32", n: int | None = None, repeats: int = 5) -> dict:
    """FLOP/s of one jitted n x n matmul on the default device (2 n^3 FLOPs).

    On CPU XLA runs the dot on every thread of its pool, so this is the host's
    peak for dense work, whatever --xla_force_host_platform_device_count says.
    """
    backend = jax.default_backend()
    n = n or (2048 if backend == "cpu" else 8192)
    key = jax.random.key(0)
    a = jax.random.normal(key, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y)
    timing = common.time_repeats(lambda: matmul(a, b), repeats=repeats, warmup=2)
    flops = 2.0 * n**3
    return {
        "n": n,
        "dtype": dtype,
        "flops_per_s": flops / timing.median_s,
        "best_flops_per_s": flops / min(timing.repeats_s),
        "timing": timing.summary(),
    }


def peak_flops(dtype: str = "float32", n: int | None = None) -> dict:
    """The vendor peak for known accelerators, else a measured matmul peak (CPU)."""
    kind = jax.devices()[0].device_kind
    vendor = common.vendor_peak(kind, dtype)
    measured = measured_matmul_peak(dtype, n=n)
    # On CPU the best repeat is the peak: other processes only ever slow a repeat down.
    per_device = vendor if vendor else measured["best_flops_per_s"]
    return {
        "device_kind": kind,
        "source": "vendor" if vendor else "measured matmul",
        "per_device_flops_per_s": per_device,
        "measured_matmul": measured,
    }
