"""One implementation in its own process, driven over stdin/stdout by benchmarks.processes.

    python -m benchmarks.worker --impl {jaxsr,jax_twin,torch} --cpus 0,1 --threads 2

The process pins itself to `--cpus` before jax or torch is imported (XLA sizes
its CPU thread pool from the affinity mask; torch gets `--threads`), then
answers one JSON request per line: {"cmd": NAME, "args": {...}} -> {"ok": true,
"result": ...} or {"ok": false, "error": "...", "oom": bool}. Anything a
library prints goes to stderr, so stdout carries only the protocol.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback

import numpy as np

IMPLS = {"jaxsr": "benchmarks.impl_jaxsr", "jax_twin": "benchmarks.impl_jax_twin", "torch": "benchmarks.impl_torch",
         "torch_kept_memory": "benchmarks.impl_torch"}
# the workers that keep freed host memory (jaxsr.host_memory): jaxsr, as its command line does, and PyTorch's twin
# worker that shows what the same policy gives PyTorch
KEEP_FREED_MEMORY = ("jaxsr", "torch_kept_memory")
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "out of memory", "OutOfMemoryError", "Out of memory")


def random_images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """The batch every implementation times on: (batch, size, size, 1) float32 in [0, 1]."""
    return np.random.default_rng(seed).random((batch, size, size, 1), dtype=np.float32)


class Impl:
    """What every implementation answers; subclasses fill in build/step/block."""

    def __init__(self, threads: int):
        self.threads = threads
        self.model_config = None
        self._step = None

    # -- the workload being timed ------------------------------------------------
    def prepare(self, kind: str, batch: int, image_size: int, dtype: str) -> dict:
        """Builds the workload and runs it twice: the first call (compile) and one warm-up."""
        self._step = None
        t0 = time.perf_counter()
        self._step = self.build(kind, batch, image_size, dtype)
        self.block(self._step())
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.block(self._step())
        return {"first_call_s": first, "warm_step_s": time.perf_counter() - t0}

    def run(self, steps: int) -> float:
        """Seconds for `steps` calls of the prepared workload, waiting for the last result."""
        t0 = time.perf_counter()
        out = None
        for _ in range(steps):
            out = self._step()
        self.block(out)
        return time.perf_counter() - t0

    def build(self, kind: str, batch: int, image_size: int, dtype: str):
        raise NotImplementedError

    def block(self, out) -> None:
        raise NotImplementedError


class JaxImpl(Impl):
    def block(self, out) -> None:
        import jax

        jax.block_until_ready(out)


def carried(step, state, *args):
    """A call of `step(state, *args) -> (state, out)` that keeps the new state for the next call (donation)."""
    holder = [state]

    def call():
        holder[0], out = step(holder[0], *args)
        return out

    return call


def jax_info(framework: str) -> dict:
    """Backend and device facts of a jax worker (the parent never initialises a backend itself)."""
    import jax

    device = jax.local_devices()[0]
    return {"framework": framework, "backend": jax.default_backend(), "device_kind": device.device_kind,
            "compute_capability": getattr(device, "compute_capability", None),
            "local_devices": jax.local_device_count(), "cpus": sorted(os.sched_getaffinity(0)),
            "threads": len(os.sched_getaffinity(0)),
            "thread_rule": "XLA's CPU pool has one thread per CPU of the affinity mask"}


def _serve(impl: Impl, proto) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "exit":
            break
        try:
            result = getattr(impl, request["cmd"])(**request.get("args", {}))
            reply = {"ok": True, "result": result}
        except Exception as error:  # reported to the parent, which decides what a failure means
            text = f"{type(error).__name__}: {error}"
            reply = {"ok": False, "error": text.splitlines()[0][:500] if text else type(error).__name__,
                     "oom": any(m in text for m in OOM_MARKERS), "traceback": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("--impl", choices=sorted(IMPLS), required=True)
    parser.add_argument("--cpus", required=True, help="comma-separated CPU ids to pin to")
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.impl in KEEP_FREED_MEMORY:  # first, before jax or torch start their threads
        from jaxsr import host_memory

        host_memory.keep_freed_memory()
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints go to stderr, the protocol keeps stdout
    impl = importlib.import_module(IMPLS[args.impl]).Worker(args.threads)
    proto.write(json.dumps({"ok": True, "result": "ready"}) + "\n")
    proto.flush()
    _serve(impl, proto)


if __name__ == "__main__":
    main()
