"""The paper's preprocessing and its inverse in JAX, to run on the device next to the model.

jaxsr.data.preprocess (scipy, on the host) is the reference and the fallback;
this module computes the same maps:

- In-plane resampling. Along one axis the scipy path is linear: a Gaussian
  (when shrinking, mode 'nearest') then scipy's cubic B-spline zoom (spline
  prefilter and interpolation, 'grid-mirror', grid_mode). `resample_matrix` is
  that map as an (out, in) matrix, made on the host by running exactly those
  scipy calls on the unit vectors, so no spline code is rewritten and the only
  difference from scipy is float32 rounding. A slice is then two matmuls.
- Percentile scaling: the order statistics numpy's linear `percentile`
  interpolates between, found exactly by bisection on the float bits (XLA's
  CPU sort is ~10x slower than numpy's partition; 32 counting passes are not),
  over the valid voxels only; the ranks are computed on the host in float64.
- Restoring: resampling back with the reverse matrices, then the intensity map
  undone.

Callers pad shapes to buckets so that one compiled program serves every volume
in a bucket: matrix columns for padded input are zero (padding is ignored);
rows for padded output are zero, or copies of the last row where the model
expects edge padding (np.pad(mode='edge') of the scipy path, bit for bit).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from jaxsr.data.preprocess import PERCENTILES

# Full float32 matmuls: the default GPU precision (TF32) keeps 10 mantissa bits.
_HIGHEST = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=512)
def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64: preprocess.resample_inplane along one axis, as a matrix.

    Column j is that axis's scipy pipeline applied to the unit vector e_j.
    Read-only (cached).
    """
    if n_in == n_out:
        matrix = np.eye(n_in)
    else:
        zoom = n_out / n_in
        sigma = max(0.0, (1.0 / zoom - 1.0) / 2.0)  # resample_inplane's anti-aliasing rule
        columns = []
        for j in range(n_in):
            unit = np.zeros(n_in)
            unit[j] = 1.0
            if sigma > 0:
                unit = ndimage.gaussian_filter1d(unit, sigma, mode="nearest")
            columns.append(ndimage.zoom(unit, zoom, order=3, mode="grid-mirror", grid_mode=True))
        matrix = np.stack(columns, axis=1)
    if matrix.shape != (n_out, n_in):
        raise AssertionError(f"scipy zoom gave {matrix.shape} for {n_in} -> {n_out}")
    matrix.setflags(write=False)
    return matrix


def padded_matrix(n_in: int, n_out: int, rows: int, cols: int, *, edge: bool) -> np.ndarray:
    """resample_matrix(n_in, n_out) in the top-left of a (rows, cols) float32 matrix.

    Padded input columns are zero; padded output rows repeat the last row when
    `edge` (edge padding of the output), else are zero.
    """
    out = np.zeros((rows, cols), np.float32)
    out[:n_out, :n_in] = resample_matrix(n_in, n_out)
    if edge:
        out[n_out:, :n_in] = out[n_out - 1, :n_in]
    return out


def percentile_ranks(n_valid: int, percentiles=PERCENTILES) -> tuple[np.ndarray, np.ndarray]:
    """(lower ranks, fractions) of numpy's 'linear' percentile over n_valid values, in float64."""
    position = np.asarray(percentiles, np.float64) / 100.0 * (n_valid - 1)
    lower = np.floor(position)
    return lower.astype(np.int32), (position - lower).astype(np.float32)


def _sortable(x: jax.Array) -> jax.Array:
    """uint32 keys whose order is the float32 order (finite values)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    negative = bits >> 31 == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _unsortable(key: jax.Array) -> jax.Array:
    negative = key >> 31 == 0
    bits = jnp.where(negative, ~key, key & jnp.uint32(0x7FFFFFFF))
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def order_statistics(x: jax.Array, valid: jax.Array, ranks: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The ranks[i]-th and (ranks[i] + 1)-th smallest valid values of x (0-based), exactly.

    The second clamps to the largest valid value. Bisection over the 2**32
    keys: each of the 32 steps counts, for every rank at once, the valid keys
    at or below a midpoint.
    """
    keys = jnp.where(valid, _sortable(x), jnp.uint32(0xFFFFFFFF)).ravel()  # invalid: above every finite key
    ranks = ranks.astype(jnp.int32)

    def step(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        at_or_below = jnp.sum(keys[None, :] <= mid[:, None], axis=1, dtype=jnp.int32)
        enough = at_or_below >= ranks + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    start = (jnp.zeros_like(ranks, jnp.uint32), jnp.full(ranks.shape, 0xFFFFFFFF, jnp.uint32))
    found, _ = jax.lax.fori_loop(0, 32, step, start)
    # The next order statistic is the same value while ties last, else the next larger key.
    count = jnp.sum(keys[None, :] <= found[:, None], axis=1, dtype=jnp.int32)
    n_valid = jnp.sum(valid, dtype=jnp.int32)
    larger = jnp.min(jnp.where(keys[None, :] > found[:, None], keys[None, :], jnp.uint32(0xFFFFFFFF)), axis=1)
    next_key = jnp.where((count >= ranks + 2) | (ranks + 1 >= n_valid), found, larger)
    return _unsortable(found), _unsortable(next_key)


def masked_percentiles(x: jax.Array, valid: jax.Array, ranks: jax.Array, fractions: jax.Array) -> jax.Array:
    """numpy.percentile(x[valid], q) ('linear') for the q that `percentile_ranks` was given."""
    a, b = order_statistics(x, valid, ranks)
    t = fractions.astype(jnp.float32)
    # numpy's _lerp: the form that is exact at the end nearer to t.
    return jnp.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


@jax.jit
def prepare_images(raw: jax.Array, rows_x: jax.Array, rows_y: jax.Array, valid_shape: jax.Array,
                   ranks: jax.Array, fractions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Source slices to model input: resampled in-plane, scaled to [0, 1] by the valid voxels' percentiles.

    raw: (N, Yb, Xb) source slices as the host holds them (NIfTI's Fortran
    order seen from C: y before x), zero-padded. rows_x: (X', Xb), rows_y:
    (Y', Yb) from `padded_matrix` (edge rows). valid_shape: (n, x, y) of the
    real slices and resampled size. Returns images (N, X', Y', 1) in the
    model's (x, y) layout, and the intensities mapped to 0 and 1.
    """
    along_x = jnp.einsum("nyx,ax->nay", raw, rows_x, precision=_HIGHEST)
    resampled = jnp.einsum("nay,by->nab", along_x, rows_y, precision=_HIGHEST)
    n, a, b = (jax.lax.broadcasted_iota(jnp.int32, resampled.shape, axis) for axis in range(3))
    valid = (n < valid_shape[0]) & (a < valid_shape[1]) & (b < valid_shape[2])
    lo, hi = masked_percentiles(resampled, valid, ranks, fractions)
    images = jnp.clip((resampled - lo) / (hi - lo), 0.0, 1.0)
    return images[..., None], lo, hi


def restore_images(images: jax.Array, back_x: jax.Array, back_y: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Model output (N, X', Y') back to (N, Yb, Xb) source slices and intensities (inverse of prepare_images)."""
    along_x = jnp.einsum("nab,xa->nxb", images, back_x, precision=_HIGHEST)
    resampled = jnp.einsum("nxb,yb->nyx", along_x, back_y, precision=_HIGHEST)
    return resampled * (hi - lo) + lo
