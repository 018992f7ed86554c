"""What every benchmark shares: environment facts, repeat timing, JSON output."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable

# Peak dense bf16/fp32 FLOP/s per chip from vendor data sheets (dense, no sparsity).
VENDOR_PEAK_FLOPS = {
    # device_kind substring: (fp32 peak, bf16 peak)
    "H200": (67e12, 989e12),
    "H100": (67e12, 989e12),
    "A100": (19.5e12, 312e12),
    "V100": (15.7e12, 125e12),
    "L4": (30.3e12, 121e12),
    "TPU v4": (275e12, 275e12),
    "TPU v5 lite": (197e12, 197e12),
    "TPU v5e": (197e12, 197e12),
    "TPU v5p": (459e12, 459e12),
    "TPU v6": (918e12, 918e12),
}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-cpu", "numpy", "scipy", "dm-pix", "torch"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def environment() -> dict[str, Any]:
    import jax

    devices = jax.devices()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "versions": versions(),
    }


@dataclasses.dataclass
class Timing:
    """Seconds per repeat after warm-up; the first call (compile) is kept apart."""

    first_call_s: float
    repeats_s: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.repeats_s)

    def summary(self, items_per_repeat: float | None = None, unit: str = "items") -> dict[str, Any]:
        out = {
            "first_call_s": self.first_call_s,
            "median_s": self.median_s,
            "min_s": min(self.repeats_s),
            "max_s": max(self.repeats_s),
            "repeats": len(self.repeats_s),
        }
        if items_per_repeat:
            rates = sorted(items_per_repeat / t for t in self.repeats_s)
            out[f"{unit}_per_s"] = {
                "median": statistics.median(rates),
                "min": rates[0],
                "max": rates[-1],
                "iqr": _iqr(rates),
            }
        return out


def _iqr(values: list[float]) -> float:
    if len(values) < 4:
        return max(values) - min(values)
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def time_repeats(fn: Callable[[], Any], *, repeats: int, warmup: int = 1, block: Callable[[Any], Any] | None = None) -> Timing:
    """Times `fn` `repeats` times after `warmup` calls; `block` waits for async results."""
    block = block or _block

    t0 = time.perf_counter()
    block(fn())
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return Timing(first, times)


def _block(x):
    import jax

    return jax.block_until_ready(x)


def vendor_peak(device_kind: str, dtype: str) -> float | None:
    for key, (fp32, bf16) in VENDOR_PEAK_FLOPS.items():
        if key.lower() in device_kind.lower():
            return bf16 if dtype == "bfloat16" else fp32
    return None


def threads_used_by_xla() -> int:
    """Threads XLA's CPU backend runs intra-op work on: the CPUs this process may use.

    XLA sizes its Eigen pool with tsl::port::MaxParallelism(), the schedulable
    CPU count (affinity mask, so `taskset` and container limits are honoured).
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def figure(name: str, timing: Timing, items_per_repeat: float, unit: str, **context: Any) -> dict[str, Any]:
    """One measured rate (items/s) with its spread over repeats and the first call apart."""
    rates = sorted(items_per_repeat / t for t in timing.repeats_s)
    return {
        "name": name,
        "unit": f"{unit}/s",
        "median": statistics.median(rates),
        "min": rates[0],
        "max": rates[-1],
        "iqr": _iqr(rates),
        "repeats": len(rates),
        "median_s": timing.median_s,
        "first_call_s": timing.first_call_s,
        **context,
    }


def derived(name: str, base: dict[str, Any], scale: float, unit: str, **context: Any) -> dict[str, Any]:
    """A figure that is `scale` times a measured one (FLOP/s, fraction of peak): same spread."""
    out = {k: v for k, v in base.items() if k not in ("name", "unit")}
    out.update(name=name, unit=unit, median=base["median"] * scale, min=base["min"] * scale,
               max=base["max"] * scale, iqr=base["iqr"] * abs(scale), **context)
    return out


def write_json(result: dict[str, Any], path: str | os.PathLike | None) -> None:
    if path is None:
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    return str(x)
