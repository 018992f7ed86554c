"""How a new slice is made from its neighbours' latents: the names of the mixes and the default, and the ensembles.

- 'latent' (the paper): decode the blended latent, D((1 - a)·z_n + a·z_{n+1}).
- 'residual' (jaxsr.residual_mix, beyond the paper): the same decode plus the
  neighbours' reconstruction residuals blended with the same alpha, so the
  acquired slices come back exactly at a = 0 and 1 and the detail the decoder
  cannot reproduce is kept.

- tta (jaxsr.tta): 1, or 8 to average over the in-plane rot90/flip symmetries.

Kept free of jax so that the command line can offer the choices without importing it.
"""

from __future__ import annotations

LATENT = "latent"
RESIDUAL = "residual"
MIXES = (LATENT, RESIDUAL)
# The paper's mix: the base config's recipe (config.inference.mix, which the CLI follows) and the library's default.
DEFAULT_MIX = LATENT
TTA_CHOICES = (1, 8)  # no ensemble, or all 8 symmetries of the slice plane


def check_mix(mix: str) -> str:
    """`mix` itself, or ValueError naming the choices."""
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    return mix
