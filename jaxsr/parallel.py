"""Distributed start-up and the device mesh; a single-process run needs none of the former."""

from __future__ import annotations

import logging
import os

import jax
from jax.sharding import AxisType

log = logging.getLogger(__name__)


def maybe_initialize_distributed() -> None:
    """Joins a multi-process job when the environment describes one (SLURM, TPU pod, explicit)."""
    if jax.distributed.is_initialized() if hasattr(jax.distributed, "is_initialized") else False:
        return
    explicit = os.environ.get("JAXSR_COORDINATOR")
    if explicit:
        jax.distributed.initialize(
            coordinator_address=explicit,
            num_processes=int(os.environ["JAXSR_NUM_PROCESSES"]),
            process_id=int(os.environ["JAXSR_PROCESS_ID"]),
        )
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()  # picks up SLURM / TPU environment
    else:
        return
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D 'data' mesh over every device of every host (or `devices`)."""
    if devices is not None:
        return jax.sharding.Mesh(devices, ("data",), axis_types=(AxisType.Auto,))
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
