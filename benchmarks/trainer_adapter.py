"""The trainer's jitted step, set up for timing on a given set of devices.

`build(config, batch_size, devices)` returns a StepBench whose `step()` runs
one training step on a fixed random batch sharded over a 1-D 'data' mesh of
`devices` (parameters and optimiser state replicated), carrying the donated
state from call to call, plus the compiled executable (for its cost analysis)
and the compile time, through jaxsr.train.step and jaxsr.parallel.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np

from benchmarks import workloads

@dataclasses.dataclass
class StepBench:
    step: Callable[[], Any]  # one step on the fixed batch
    compiled: Any
    compile_s: float
    parameters: int
    source: str
    step_on: Callable[[np.ndarray], Any]  # one step on given host images (batch_size, H, W, 1)
    model: Callable[[], Any]  # the current model, eval mode


def build(config, batch_size: int, devices) -> StepBench:
    if len(devices) and batch_size % len(devices):
        raise ValueError(f"batch size {batch_size} is not a multiple of {len(devices)} devices")
    return _trainer(config, batch_size, devices)


def random_batch_dict(config, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """What jaxsr.train.batches.sample_batch yields: 'image', and 'triplet' when the config trains on triplets."""
    size = int(config.data.crop_size)
    rng = np.random.default_rng(seed)
    out = {"image": rng.random((batch_size, size, size, 1), dtype=np.float32)}
    if config.data.get("triplets", False):
        out["triplet"] = rng.random((batch_size, size, size, 3), dtype=np.float32)
    return out


def _trainer(config, batch_size: int, devices) -> StepBench:
    """jaxsr.train.step.build_step on a jaxsr.parallel mesh, state made by jaxsr.train.loop.create_state."""
    import jax
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxsr import parallel
    from jaxsr.train import loop
    from jaxsr.train import step as step_lib

    mesh = parallel.make_mesh(list(devices))
    model, optimizer = loop.create_state(config)
    parameters = workloads.param_count(model)
    graphdef, state = nnx.split((model, optimizer))
    state = jax.device_put(state, NamedSharding(mesh, P()))
    data_sharding = NamedSharding(mesh, P("data"))
    batch = {k: jax.device_put(v, data_sharding) for k, v in random_batch_dict(config, batch_size).items()}
    step_fn = step_lib.build_step(graphdef, config.loss)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def step_on(images):
        if isinstance(images, np.ndarray):
            images = {"image": images}
        images = {k: jax.device_put(v, data_sharding) for k, v in images.items()}
        holder["state"], metrics = compiled(holder["state"], images)
        return metrics["loss"]

    def current_model():
        m, _ = nnx.merge(graphdef, holder["state"])
        m.eval()
        return m

    def step():
        holder["state"], metrics = compiled(holder["state"], batch)
        return metrics["loss"]

    return StepBench(step, compiled, compile_s, parameters, "jaxsr.train.step.build_step", step_on, current_model)


def train_briefly(config, images: np.ndarray, *, steps: int, batch_size: int, devices, seed: int = 0):
    """A model trained for `steps` steps on random batches of `images` (N, H, W, 1); eval mode."""
    bench = build(config, batch_size, devices)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        idx = rng.choice(images.shape[0], batch_size, replace=images.shape[0] < batch_size)
        batch = images[idx]
        k = int(rng.integers(4))  # the paper's 90-degree rotations
        losses.append(bench.step_on(np.ascontiguousarray(np.rot90(batch, k, axes=(1, 2)))))
    return bench.model(), [float(x) for x in losses], bench.source
