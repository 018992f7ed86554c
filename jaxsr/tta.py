"""Test-time self-ensembling over the 8 in-plane symmetries (rot90 x flip), as one model.

For a symmetry g of the slice plane (the dihedral group D4: 4 rotations, each
with and without a flip), the ensemble's slice at alpha between x0 and x1 is

    mean over g of  g^-1 D((1 - alpha)·E(g x0) + alpha·E(g x1)).

`SymmetryEnsemble` is that as an encode/decode pair, so that every inference
path (the device pipeline, the host reference, the residual mix) runs it
unchanged. Its latent holds the 8 latents side by side on the channel axis,
each turned back to the slice's own orientation, g^-1 E(g x): a symmetry only
permutes latent pixels, so blending the stacked latents blends each one, and
decode turns each group forward again, decodes it and averages the 8 images
turned back. The in-plane size must be a multiple of 2**num_blocks (the
interpolator pads to that), so that g maps the pooling grid onto itself.

Cost: 8 encodes and 8 decodes per slice, and latents 8 times as wide.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.mixes import TTA_CHOICES

# (k, flip): g(x) = rot90(flip(x) if flip else x, k) on the in-plane axes of NHWC arrays.
SYMMETRIES = tuple((k, flip) for flip in (False, True) for k in range(4))


def apply(x: jax.Array, k: int, flip: bool) -> jax.Array:
    """g(x) for NHWC x."""
    if flip:
        x = jnp.flip(x, axis=2)
    return jnp.rot90(x, k, axes=(1, 2))


def invert(y: jax.Array, k: int, flip: bool) -> jax.Array:
    """g^-1(y) for NHWC y: apply(invert(y, g), g) == y."""
    y = jnp.rot90(y, -k, axes=(1, 2))
    return jnp.flip(y, axis=2) if flip else y


class SymmetryEnsemble(nnx.Module):
    """`model` (eval mode, with encode/decode of NHWC arrays) averaged over the 8 in-plane symmetries."""

    def __init__(self, model: Any):
        self.model = model

    def encode(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([invert(self.model.encode(apply(x, k, f)), k, f) for k, f in SYMMETRIES], axis=-1)

    def decode(self, z: jax.Array) -> jax.Array:
        groups = jnp.split(z, len(SYMMETRIES), axis=-1)
        images = [invert(self.model.decode(apply(zg, k, f)), k, f) for zg, (k, f) in zip(groups, SYMMETRIES)]
        return sum(images[1:], images[0]) / len(images)


def check_tta(tta: int) -> int:
    """`tta` itself, or ValueError naming the choices."""
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {tta!r}")
    return tta


def ensembled(model: Any, tta: int) -> Any:
    """The model that inference runs: `model` itself (tta=1) or its 8-symmetry ensemble (tta=8)."""
    return SymmetryEnsemble(model) if check_tta(tta) == 8 else model
