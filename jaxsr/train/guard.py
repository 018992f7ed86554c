"""The NaN guard, kept on the device so that the loop reads it only when it reads anything.

The step folds each step's loss and gradient norm into a small record: were
all finite so far, and if not, the first step that was not and its values.
The loop fetches the record at its log, evaluation and checkpoint steps
(never in between) and stops before a non-finite state is evaluated or
saved, naming the step where training first went wrong.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def initial() -> dict[str, jax.Array]:
    return {"finite": jnp.array(True), "first_bad_step": jnp.array(0, jnp.int32),
            "loss": jnp.array(0.0, jnp.float32), "grad_norm": jnp.array(0.0, jnp.float32)}


def update(health: dict, step: jax.Array, metrics: dict) -> dict:
    """`health` after step `step` (1-based) gave `metrics` (traceable)."""
    loss, grad_norm = metrics["loss"].astype(jnp.float32), metrics["grad_norm"].astype(jnp.float32)
    finite_now = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    first = health["finite"] & ~finite_now
    return {"finite": health["finite"] & finite_now,
            "first_bad_step": jnp.where(first, step.astype(jnp.int32), health["first_bad_step"]),
            "loss": jnp.where(first, loss, health["loss"]),
            "grad_norm": jnp.where(first, grad_norm, health["grad_norm"])}


def problem(health: dict) -> str | None:
    """None when all was finite, else what went wrong where (`health` fetched to the host)."""
    if bool(np.asarray(health["finite"])):
        return None
    return (f"loss became {float(health['loss'])} (gradient norm {float(health['grad_norm'])}) "
            f"at step {int(health['first_bad_step'])}")
