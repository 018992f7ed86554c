"""The fallback toward linear interpolation: where the model cannot reproduce the slices it stands between.

On noisy scans the autoencoder reconstructs each acquired slice only up to its
noise and fine texture, and a new slice decoded between two such slices can
be further from the truth than their linear blend (benchmarks/suite_real: the
EPI). Per acquired slice n and pixel, two local error energies, squares
smoothed in-plane by a Gaussian of SIGMA_PX model pixels:

- the model's:  e_ae(n)  = smooth(|x_n - D(E(x_n))|^2), its own reconstruction error;
- linear's:     e_lin(n) = smooth(|x_n - (x_{n-1} + x_{n+1}) / 2|^2), its error
  on slice n left out (the end slices take their inner neighbour's; a stack of
  fewer than 3 slices has no such estimate, and its weights are 0).

Each estimate is weighted by the other's error energy, as inverse-variance
weighting does: w(n) = e_ae / (e_ae + e_lin), 0 where the model reconstructs
the slice exactly. A new slice at fraction a between n and n+1 is

    (1 - w)·y + w·((1 - a)·x_n + a·x_{n+1}),   w = (1 - a)·w(n) + a·w(n+1),

y the mix's slice (jaxsr.mixes), all in the model's [0, 1] space before the
restore. `jaxsr upsample --confidence` writes w itself on the output grid.
Rows follow the interpolator's layout: acquired row t·Z + n of frame t.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SIGMA_PX = 2.0  # the local window, in model pixels (1.4 mm by default: a few mm)
TRUNCATE = 4.0  # kernel radius in sigmas, as scipy.ndimage.gaussian_filter's default
_TINY = 1e-12  # 0 / 0 where both energies vanish (a flat region): w = 0, the model's slice


def gaussian_kernel(sigma: float = SIGMA_PX, truncate: float = TRUNCATE) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate·sigma + 0.5), normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def smooth(x: jax.Array, kernel: np.ndarray) -> jax.Array:
    """(R, H, W, 1) smoothed along H and W, edges extended (scipy's mode='nearest')."""
    r = kernel.size // 2
    padded = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    k = jnp.asarray(kernel, x.dtype)
    dims = ("NHWC", "HWIO", "NHWC")
    along_h = jax.lax.conv_general_dilated(padded, k.reshape(-1, 1, 1, 1), (1, 1), "VALID", dimension_numbers=dims)
    return jax.lax.conv_general_dilated(along_h, k.reshape(1, -1, 1, 1), (1, 1), "VALID", dimension_numbers=dims)


def leave_one_out_rows(n_slices: int, n_frames: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, below, above) per acquired row, padded to `rows`: whose left-out error each row takes.

    Interior slice n: n itself between n - 1 and n + 1; the end slices take
    their inner neighbour's. Fewer than 3 slices have no left-out estimate:
    every entry is the row itself, and acquired_weights is told so (`usable`).
    """
    n = np.arange(n_slices)
    centre = np.clip(n, 1, max(n_slices - 2, 0)) if n_slices >= 3 else n
    below, above = (centre - 1, centre + 1) if n_slices >= 3 else (n, n)
    frames = np.arange(n_frames)[:, None] * n_slices
    out = []
    for v in (centre, below, above):
        padded = np.zeros(rows, np.int32)
        padded[: n_slices * n_frames] = (frames + v[None, :]).ravel()
        out.append(padded)
    return tuple(out)


def has_leave_one_out(n_slices: int) -> bool:
    return n_slices >= 3


@jax.jit
def acquired_weights(images: jax.Array, recon: jax.Array, centre: jax.Array, below: jax.Array, above: jax.Array,
                     usable: jax.Array) -> jax.Array:
    """w(n) for every acquired row (R, H, W, 1): images, their reconstructions D(E(x)), the leave-one-out rows.

    usable: False for a stack of fewer than 3 slices (no linear estimate to
    compare with): every weight is 0 then, the model's slices unchanged.
    """
    kernel = gaussian_kernel()
    e_ae = smooth(jnp.square(images - recon), kernel)
    left_out = images[centre] - 0.5 * (images[below] + images[above])
    e_lin = smooth(jnp.square(left_out), kernel)
    w = e_ae / jnp.maximum(e_ae + e_lin, _TINY)
    return jnp.where(usable, w, jnp.zeros_like(w))


def blend_rows(rows: jax.Array, first: jax.Array, second: jax.Array, alpha: jax.Array) -> jax.Array:
    """(1 - a)·rows[first] + a·rows[second] for each decoded row (B, H, W, 1): acquired images or their weights."""
    a = alpha.astype(rows.dtype)[:, None, None, None]
    return (1 - a) * rows[first] + a * rows[second]


def fallback_rows(decoded: jax.Array, images: jax.Array, weights: jax.Array, first: jax.Array, second: jax.Array,
                  alpha: jax.Array) -> jax.Array:
    """Decoded rows (B, H, W, 1) moved toward the linear blend of their acquired rows by the blended weights."""
    w = blend_rows(weights, first, second, alpha)
    return (1 - w) * decoded + w * blend_rows(images, first, second, alpha)


@jax.jit
def fallback_batch(decoded: jax.Array, images: jax.Array, weights: jax.Array, first: jax.Array, second: jax.Array,
                   alpha: jax.Array, start: jax.Array) -> jax.Array:
    """fallback_rows for one decoded batch, rows [start, start + B) of the index arrays (as residual_mix_batch)."""

    def take(v):
        return jax.lax.dynamic_slice_in_dim(v, start, decoded.shape[0])

    return fallback_rows(decoded, images, weights, take(first), take(second), take(alpha))
