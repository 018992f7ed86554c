"""The peak an MFU is taken against: that of the precision the convolutions actually run in.

- float32 on an NVIDIA GPU of compute capability 8.0 or later (Ampere, Hopper,
  ...) runs as TF32: XLA's default precision for float32 convolutions and
  dots there (and cuDNN's in PyTorch with allow_tf32). Older GPUs: plain FP32.
- float32 on a TPU runs as one bfloat16 pass (XLA's default precision): bf16.
- bfloat16 anywhere: the bf16 dense peak.
- CPU: no vendor figure; the best of 5 runs of a jitted n x n matmul in the
  same dtype, measured in the jaxsr worker on the benchmark's own cores.

Vendor figures are dense (no 2:4 sparsity), per chip, from the data sheets.
"""

from __future__ import annotations

# device_kind substring -> {precision: dense FLOP/s}; the first matching key wins (specific before general).
VENDOR_PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12},
    "H100": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12},  # SXM
    "H200": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12},
    "L4": {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12},
    "V100": {"fp32": 15.7e12},  # no TF32, no bf16 units
    "TPU v4": {"bf16": 275e12},
    "TPU v5 lite": {"bf16": 197e12},  # v5e
    "TPU v5": {"bf16": 459e12},  # v5p
    "TPU v6 lite": {"bf16": 918e12},  # v6e
}


def precision_used(backend: str, dtype: str, compute_capability: str | None = None) -> str:
    """'fp32', 'tf32' or 'bf16': what the convolutions run in for this compute dtype."""
    if dtype == "bfloat16":
        return "bf16"
    if backend == "tpu":
        return "bf16"
    if backend == "gpu" and compute_capability and float(compute_capability) >= 8.0:
        return "tf32"
    return "fp32"


def vendor_peak(device_kind: str, precision: str) -> float | None:
    for key, peaks in VENDOR_PEAK_FLOPS.items():
        if key.lower() in device_kind.lower():
            return peaks.get(precision)
    return None


def measured_matmul_peak(dtype: str = "float32", n: int | None = None, repeats: int = 5) -> dict:
    """FLOP/s of one jitted n x n matmul (2 n^3 FLOPs) on the default device; the best repeat is the peak.

    Other processes only ever slow a repeat down, so the fastest one is the
    closest to what the cores can do.
    """
    import time

    import jax
    import jax.numpy as jnp

    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    key = jax.random.key(0)
    a = jax.random.normal(key, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(matmul(a, b))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        times.append(time.perf_counter() - t0)
    return {"n": n, "dtype": dtype, "repeats": repeats, "flops_per_s": 2.0 * n**3 / min(times),
            "median_flops_per_s": 2.0 * n**3 / sorted(times)[len(times) // 2]}


def peak_for(info: dict, dtype: str, measure) -> dict:
    """{'precision', 'flops_per_s', 'source'} for one compute dtype; `measure(dtype)` runs the CPU matmul."""
    precision = precision_used(info["backend"], dtype, info.get("compute_capability"))
    vendor = vendor_peak(info["device_kind"], precision)
    if vendor:
        return {"precision": precision, "flops_per_s": vendor, "source": f"vendor data sheet, {info['device_kind']}, dense"}
    if info["backend"] != "cpu":
        return {"precision": precision, "flops_per_s": None, "source": f"no {precision} figure for {info['device_kind']}"}
    m = measure(dtype)
    return {"precision": precision, "flops_per_s": m["flops_per_s"],
            "source": f"measured: best of {m['repeats']} jitted {m['n']}x{m['n']} {dtype} matmuls on the benchmark's CPUs",
            "measured": m}
