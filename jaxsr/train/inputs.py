"""What the training step gets each step, from config.data.loader.

- "device": the training set lives on the device (jaxsr.train.device_data)
  and each batch is drawn inside the jitted step; the host only dispatches.
- "tfdata": jaxsr.data.pipeline, augmentation in TensorFlow's threads and a
  prefetch, for data too large for the device.
- "numpy": jaxsr.train.batches on the main thread; no TensorFlow in the
  process. Runs while the device computes the previous step.
- "auto": "device" when the slice table takes at most DEVICE_DATA_FRACTION
  of one device's memory, else "tfdata".

Every loader's batch `step` is a pure function of (seed, step), so a resumed
run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
from typing import Callable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsr.data import slice_table
from jaxsr.errors import UserError
from jaxsr.train import batches as batches_lib
from jaxsr.train import device_data

log = logging.getLogger(__name__)

# The rest is for parameters, optimizer moments and activations: the paper network at
# batch 32 and 128 x 128 needs ~1.5 GB, at batch 512 ~20 GB. ACDC's 70 training patients
# (~21k slices of up to ~300 x 300 at 1.4 mm) are ~8 GB as float32, within a quarter of an 80 GB GPU.
DEVICE_DATA_FRACTION = 0.25
# Host batches put on the device ahead of the step that takes them.
PREFETCH = 2


@dataclasses.dataclass(frozen=True)
class Inputs:
    loader: str  # "device", "numpy" or "tfdata": the one in use
    # stream(start) yields the step's `inputs` for steps start, start + 1, ...
    stream: Callable[[int], Iterator]
    # For "device", the step draws its batch with sample(inputs, step); else None.
    sample: Callable | None


def device_memory_bytes(device: jax.Device) -> int:
    """What one device can hold: its allocator's limit, or for CPU devices a share of the host's memory."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // jax.local_device_count()


def choose_loader(config, stacks: list[np.ndarray]) -> str:
    """config.data.loader, with "auto" resolved; every host makes the same choice."""
    loader = config.data.loader
    if loader != "auto":
        return loader
    need = slice_table.table_bytes(stacks, int(config.data.crop_size))
    have = device_memory_bytes(jax.local_devices()[0])
    fits = need <= DEVICE_DATA_FRACTION * have
    if jax.process_count() > 1:  # hosts must run the same step program
        from jax.experimental import multihost_utils

        fits = bool(multihost_utils.broadcast_one_to_all(np.int32(fits)))
    choice = "device" if fits else "tfdata"
    log.info("data.loader=auto: %s (the slice table is %.2f GB, a device holds %.1f GB)", choice, need / 1e9, have / 1e9)
    return choice


def make_inputs(config, stacks: list[np.ndarray], mesh: jax.sharding.Mesh) -> Inputs:
    loader = choose_loader(config, stacks)
    data, seed, triplets = config.data, int(config.seed), bool(config.data.triplets)
    global_batch = int(config.train.batch_size)
    batch_sharding = NamedSharding(mesh, P("data"))
    if loader == "device":
        need = slice_table.table_bytes(stacks, int(data.crop_size))
        have = device_memory_bytes(jax.local_devices()[0])
        if need > have:
            raise UserError(f"data.loader=device: the training slices need {need / 1e9:.2f} GB, more than a device's "
                            f"{have / 1e9:.2f} GB; use --config.data.loader=tfdata")
        table = device_data.put(stacks, int(data.crop_size), mesh)
        sample = device_data.sampler(data, batch_size=global_batch, seed=seed, triplets=triplets, sharding=batch_sharding)
        return Inputs(loader, lambda start: itertools.repeat(table), sample)

    local_batch = global_batch // jax.process_count()

    def host_batches(start: int) -> Iterator[dict]:
        if loader == "tfdata":
            from jaxsr.data import pipeline

            ds = pipeline.make_dataset(stacks, data, batch_size=local_batch, seed=seed, triplets=triplets,
                                       process_index=jax.process_index(), process_count=jax.process_count(), start_step=start)
            local = pipeline.numpy_batches(ds)
        else:
            local = (batches_lib.sample_batch(stacks, data, batch_size=local_batch, seed=seed, step=s,
                                              process_index=jax.process_index(), triplets=triplets) for s in itertools.count(start))
        on_device = ({k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in b.items()} for b in local)
        return _ahead(on_device, PREFETCH)

    return Inputs(loader, host_batches, None)


def _ahead(it: Iterator, n: int) -> Iterator:
    """`it`, kept n items ahead: their host-to-device copies run while earlier steps compute."""
    queue = collections.deque(itertools.islice(it, n))
    while queue:
        yield queue.popleft()
        queue.extend(itertools.islice(it, 1))
