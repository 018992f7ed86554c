"""The weight gradient of a 3x3 'same' convolution through the FFT, for benchmarks/conv_layers.py.

Issue 20 asked for it on the network's large 128² layers, where XLA:CPU's direct weight gradient is
slowest. It lost every layer to the best of XLA and Winograd F(4x4) on the 2-core AMD EPYC of
2026-12-03 (benchmarks/README.md), so the model does not use it; it is kept here, tested, as a
measured formulation.

dW[a, b, i, o] = Σ_{n,h,w} xp[n, h+a, w+b, i] · dy[n, h, w, o] (xp: x padded by 1) is the cross-correlation
of each image's padded input with its output gradient, read at the nine lags a, b ∈ {0, 1, 2}. On
P x Q = (H+2) x (W+2) grids the circular correlation has no wrap-around at those lags (h + a ≤ H + 1 < P),
so, with X = rfft2(xp), G = rfft2(dy zero-padded to P x Q) and E_P[a, p] = exp(2πi·a·p/P):

    dW[a, b] = 1/(PQ) · Re Σ_p E_P[a, p] Σ_q w_q E_Q[b, q] Σ_n X[n, p, q] conj(G[n, p, q])

(w_q = 2 for the half-spectrum's bins that stand for two, 1 for q = 0 and the Nyquist bin). Against
the direct form's 9·N·H·W multiply-adds per (i, o) pair, the sum over images takes ~N·H·W/2
complex ones per pair and the FFTs ~log(HW) per pixel and channel.

Two contractions of the same sum:
- 'fft_bins': per frequency bin, over the images (fewest multiplies, but [cin x N] @ [N x cout]
  matmuls, which XLA:CPU runs at ~7 GFLOP/s at batch 8), then the nine lags;
- 'fft_rows': per frequency row p, E_Q folded into the output gradient first and the sum over
  (images, q) as one [cin x N·Q'] @ [N·Q' x 3·cout] matmul (3x the multiplies, larger matmuls).

Its error bound is derived in tests/test_fft_dw.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

IMPLS = ("fft_bins", "fft_rows")


def grid(h: int, w: int) -> tuple[int, int]:
    """The FFT grid: the padded image's size, the smallest on which the nine lags do not wrap."""
    return h + 2, w + 2


@functools.lru_cache(maxsize=None)
def lag_matrices(p: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """(E_P [3, P], w_q E_Q / (PQ) [3, Q//2+1]) in complex128: the inverse transform read at lags 0, 1, 2."""
    q_half = q // 2 + 1
    weight = np.full(q_half, 2.0)
    weight[0] = 1.0
    if q % 2 == 0:
        weight[-1] = 1.0  # the Nyquist bin stands for itself only
    lags = np.arange(3)
    e_p = np.exp(2j * np.pi * np.outer(lags, np.arange(p)) / p)
    e_q = np.exp(2j * np.pi * np.outer(lags, np.arange(q_half)) / q) * weight / (p * q)
    return e_p, e_q


def _real_dtype(dtype) -> jnp.dtype:
    """The FFTs' input dtype: float64 for float64 inputs (reference computations), else float32 (bfloat16 is widened)."""
    return jnp.dtype(jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32)


def spectra(x: jax.Array, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """rfft2 of the padded input and of the zero-padded output gradient, channels first: [N, C, P, Q//2+1]."""
    n, h, w, _ = x.shape
    p, q = grid(h, w)
    real = _real_dtype(x.dtype)
    # channels-first before the FFT: its axes are then the minor ones (2x faster on XLA:CPU than axes=(1, 2))
    xp = jnp.pad(x.astype(real), ((0, 0), (1, 1), (1, 1), (0, 0))).transpose(0, 3, 1, 2)
    gp = jnp.pad(dy.astype(real), ((0, 0), (0, p - h), (0, q - w), (0, 0))).transpose(0, 3, 1, 2)
    return jnp.fft.rfft2(xp), jnp.fft.rfft2(gp)


def weight_gradient(impl: str, x: jax.Array, dy: jax.Array) -> jax.Array:
    """dL/dw [3, 3, cin, cout] of the 3x3 'same' stride-1 conv of x [N, H, W, cin] given dy [N, H, W, cout]."""
    if impl not in IMPLS:
        raise ValueError(f"{impl!r}: expected one of {', '.join(IMPLS)}")
    _, h, w, _ = x.shape
    big_x, big_g = spectra(x, dy)
    e_p, e_q = (jnp.asarray(m, big_x.dtype) for m in lag_matrices(*grid(h, w)))
    if impl == "fft_bins":
        c = jnp.einsum("nipq,nopq->pqio", big_x, jnp.conj(big_g))  # per bin, summed over images
        d = jnp.einsum("bq,pqio->piob", e_q, c)
    else:
        g_lags = jnp.conj(big_g)[..., None] * e_q.T  # [N, cout, P, Q', 3]: the column lags folded in
        d = jnp.einsum("nipq,nopqb->piob", big_x, g_lags)  # per row, summed over images and columns
    return jnp.einsum("ap,piob->abio", e_p, d).real.astype(x.dtype)
