"""Classical through-plane interpolation: linear, cubic B-spline, Lanczos (a = 3).

These are the paper's baselines. They take the same fractional slice
`positions` as the autoencoder (input-slice coordinates; integer = acquired
slice), so both land on the identical output grid: no half-slice shift.

Every method here is linear in the data along z and the same for every
in-plane voxel and frame, so it is one (P, Z) weight matrix `W` built once in
float64 numpy (geometry only, tiny) and applied on the accelerator as a single
contraction `out[x, y, p, t] = sum_z W[p, z] * stack[x, y, z, t]`. That makes
all three methods exactly vectorised over voxels and frames, and jit-compiled.

Edge handling is whole-sample mirroring (… c b | a b c d | c b a …), the
classic B-spline boundary and scipy's ``mode='mirror'``; positions are never
outside [0, Z-1], so only the kernel tails see the mirrored samples.

- linear: exact at integers, linear between (the boundary never matters).
- bspline: interpolating cubic B-spline, i.e. the coefficients solve the
  prefilter system, as ``scipy.ndimage.map_coordinates(order=3,
  prefilter=True, mode='mirror')``.
- lanczos: kernel sinc(x)·sinc(x/3) on |x| < 3 over the 6 nearest samples
  (indices mirrored at the edges), divided by the sum of its 6 weights, so a
  constant stays constant near the edges and with few slices.

Rows for positions within 1e-6 of an integer are set to pick that acquired
slice exactly, so all methods return acquired slices bit-for-bit.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr.io.nifti import output_positions

log = logging.getLogger(__name__)

METHODS = ("linear", "bspline", "lanczos")
LANCZOS_A = 3
# Positions this close to an integer are that acquired slice; positions this
# far outside [0, Z-1] are rounding of the grid arithmetic and are clipped.
_POSITION_TOL = 1e-6


def mirror_index(index: np.ndarray, n: int) -> np.ndarray:
    """Whole-sample symmetric reflection of integer indices into [0, n-1]."""
    index = np.asarray(index, np.int64)
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    r = np.mod(index, period)
    return np.where(r > n - 1, period - r, r)


def _check_positions(positions, n_slices: int) -> np.ndarray:
    p = np.asarray(positions, np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"positions must be a non-empty 1D array, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("positions must be finite")
    lo, hi = p.min(), p.max()
    if lo < -_POSITION_TOL or hi > n_slices - 1 + _POSITION_TOL:
        raise ValueError(
            f"positions must lie in [0, {n_slices - 1}] (input slice coordinates of a "
            f"{n_slices}-slice stack), got [{lo:g}, {hi:g}]"
        )
    return np.clip(p, 0.0, n_slices - 1)


def _scatter(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int) -> np.ndarray:
    """(P, n) matrix accumulating vals[p, j] into column mirror(cols[p, j])."""
    w = np.zeros((rows.shape[0], n), np.float64)
    np.add.at(w, (np.broadcast_to(rows, cols.shape), mirror_index(cols, n)), vals)
    return w


def _linear_weights(p: np.ndarray, n: int) -> np.ndarray:
    left = np.minimum(np.floor(p), n - 1)
    t = p - left
    cols = np.stack([left, left + 1], axis=1).astype(np.int64)
    vals = np.stack([1.0 - t, t], axis=1)
    return _scatter(np.arange(p.size)[:, None], cols, vals, n)


def _cubic_bspline(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return np.where(
        ax < 1.0,
        2.0 / 3.0 - ax**2 + 0.5 * ax**3,
        np.where(ax < 2.0, (2.0 - ax) ** 3 / 6.0, 0.0),
    )


def _bspline_prefilter_inverse(n: int) -> np.ndarray:
    """M^-1 where M c = f samples the mirrored cubic B-spline at the integers.

    With mirror boundary c[-1] = c[1] and c[n] = c[n-2], so the end rows of
    the tridiagonal (1, 4, 1)/6 system fold their outer tap inwards.
    """
    if n == 1:
        return np.ones((1, 1))
    m = np.zeros((n, n))
    for k in range(n):
        for j in (k - 1, k, k + 1):
            m[k, mirror_index(j, n)] += 4.0 / 6.0 if j == k else 1.0 / 6.0
    return np.linalg.inv(m)


def _bspline_weights(p: np.ndarray, n: int) -> np.ndarray:
    base = np.floor(p)
    cols = (base[:, None] + np.arange(-1, 3)[None, :]).astype(np.int64)
    vals = _cubic_bspline(p[:, None] - cols)
    sample = _scatter(np.arange(p.size)[:, None], cols, vals, n)
    return sample @ _bspline_prefilter_inverse(n)


def lanczos_kernel(x: np.ndarray, a: int = LANCZOS_A) -> np.ndarray:
    """sinc(x)·sinc(x/a) on |x| < a, else 0 (np.sinc is the normalised sinc)."""
    x = np.asarray(x, np.float64)
    return np.where(np.abs(x) < a, np.sinc(x) * np.sinc(x / a), 0.0)


def _lanczos_weights(p: np.ndarray, n: int, a: int = LANCZOS_A) -> np.ndarray:
    base = np.floor(p)
    cols = (base[:, None] + np.arange(-a + 1, a + 1)[None, :]).astype(np.int64)
    vals = lanczos_kernel(p[:, None] - cols, a)
    # Normalise per output slice: the 2a weights do not sum to 1 between
    # samples, and the renormalisation keeps flat regions flat.
    vals = vals / vals.sum(axis=1, keepdims=True)
    return _scatter(np.arange(p.size)[:, None], cols, vals, n)


_WEIGHT_FNS = {"linear": _linear_weights, "bspline": _bspline_weights, "lanczos": _lanczos_weights}


def resampling_weights(positions, n_slices: int, method: str) -> np.ndarray:
    """(P, n_slices) float64 matrix W with output slice p = sum_z W[p, z] * slice z."""
    if method not in _WEIGHT_FNS:
        raise ValueError(f"unknown interpolation method {method!r}; choose one of {METHODS}")
    if n_slices < 1:
        raise ValueError("the stack has no slices")
    p = _check_positions(positions, n_slices)
    w = _WEIGHT_FNS[method](p, n_slices)
    # Acquired slices are returned as they are, not up to rounding.
    nearest = np.rint(p)
    on_slice = np.abs(p - nearest) < _POSITION_TOL
    w[on_slice] = 0.0
    w[np.nonzero(on_slice)[0], nearest[on_slice].astype(np.int64)] = 1.0
    return w


@jax.jit
def _apply_weights(stack: jax.Array, weights: jax.Array) -> jax.Array:
    # HIGHEST: on GPUs the default float32 matmul may run in TF32 (~1e-3 error).
    return jnp.einsum(
        "xyz...,pz->xyp...", stack, weights, precision=jax.lax.Precision.HIGHEST
    )


def resample_slices(stack, positions, method: str) -> jax.Array:
    """Interpolate `stack` (X, Y, Z[, T]) at fractional slice `positions` along axis 2.

    Returns a float32 jax array (X, Y, len(positions)[, T]). Raises ValueError
    for an unknown method, a stack that is not 3D/4D, or positions outside
    [0, Z-1].
    """
    stack = jnp.asarray(stack, jnp.float32)
    if stack.ndim not in (3, 4):
        raise ValueError(f"stack must be (X, Y, Z) or (X, Y, Z, T), got shape {stack.shape}")
    weights = resampling_weights(positions, stack.shape[2], method)
    log.debug("%s resampling of %s onto %d slices", method, stack.shape, weights.shape[0])
    return _apply_weights(stack, jnp.asarray(weights, jnp.float32))


def upsample_through_plane(stack, factor: int, method: str) -> jax.Array:
    """`factor`-fold through-plane upsampling: acquired slice i lands at output i·factor.

    Same grid as ``scipy.ndimage.zoom(..., grid_mode=False)`` to
    (Z-1)·factor + 1 slices, and as the autoencoder's `output_positions`.
    """
    n_slices = np.shape(stack)[2]
    return resample_slices(stack, output_positions(n_slices, factor=factor), method)
