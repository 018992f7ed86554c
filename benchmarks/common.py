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


def versions() -> dict[str, str]:
    import jaxsr

    out = {"python": platform.python_version(), "jaxsr": jaxsr.version()}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-cpu", "numpy", "scipy", "dm-pix", "torch"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def environment() -> dict[str, Any]:
    """Host facts and versions; no jax backend is started (the train suite's workers need the chip)."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE (benchmarks.processes' default for workers)"),
        "versions": versions(),
    }


def device_facts() -> dict[str, Any]:
    """This process's jax backend and devices: called once the suites are done."""
    import jax

    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
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


def figure(name: str, timing: Timing, items_per_repeat: float, unit: str, **context: Any) -> dict[str, Any]:
    """One measured rate (items/s) with its spread over repeats and the first call apart."""
    return rate_figure(name, [items_per_repeat / t for t in timing.repeats_s], f"{unit}/s",
                       median_s=timing.median_s, first_call_s=timing.first_call_s, **context)


def rate_figure(name: str, rates: list[float], unit: str, **context: Any) -> dict[str, Any]:
    """A figure from rates measured directly (one per timing round)."""
    ordered = sorted(rates)
    return {"name": name, "unit": unit, "median": statistics.median(ordered), "min": ordered[0],
            "max": ordered[-1], "iqr": _iqr(ordered), "repeats": len(ordered), **context}


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
