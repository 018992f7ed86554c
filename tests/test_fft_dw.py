"""The FFT weight gradient (benchmarks.fft_dw, a formulation benchmarks/conv_layers.py times) against lax in float64.

Tolerance, per entry dW[a, b, i, o], to first order in the unit roundoff u (Higham, Accuracy and Stability
of Numerical Algorithms: Sec. 3.1 for sums of products, Sec. 24.1 for the FFT). Write xp_n, g_n for image
n's padded input channel i and zero-padded output gradient channel o on the P x Q grid, X_n, G_n for their
spectra, and S = Σ_n ‖xp_n‖₂ ‖g_n‖₂.

- The FFTs: a mixed-radix transform is a chain of passes, and a radix-r pass forms each output as a sum
  of r products with twiddles, normwise within (r + 5)u of exact (gamma_r for the sum, a complex
  product and the twiddle's own rounding); the real-input transform adds a post-processing pass (5u).
  So ‖X̂_n - X_n‖₂ ≤ phi ‖X_n‖₂ with phi = (5 + Σ_{passes} (r + 5)) u per axis, summed over both axes
  (the radices are N's prime factors: 2, 3, 5, 13, 17 on the grids here and in the network).
- The sum over images of X_n conj(G_n) (N terms, one complex product: (N + 3)u), then the lag sums,
  over q (Q' = Q//2 + 1 terms) and over p (P terms), each with a rounded complex factor (3u):
  k = N + Q' + P + 8 for 'fft_bins'; 'fft_rows' sums images and columns as one sum (N·Q' terms) after
  the factor is folded into G: k = N·Q' + P + 8.
- Magnitudes: every error above is a multiple of Σ_f w_f |X_n[f]| |G_n[f]| / (PQ) (or of the same with
  one spectrum's error in place of the spectrum), and by Cauchy-Schwarz and Parseval
  (‖X_n‖₂² = PQ ‖xp_n‖₂², the half spectrum with its weights standing for the whole) that is at most
  ‖xp_n‖₂ ‖g_n‖₂ (times phi for an error term). Hence

      |dW_computed - dW| ≤ (2·phi + k·u) · S,

  and lax's own float64 error gamma_{NHW+1}(u64) · dW(|x|, |dy|) on top, as in test_winograd. A wrong
  tap is off by O(|dW|) ~ sqrt(NHW) · |x| |dy|, orders of magnitude above.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import fft_dw
from tests.test_winograd import U32, U64, UB, _case, _reference

SHAPES = [((2, 8, 8, 3), 5), ((3, 7, 13, 4), 1), ((1, 1, 3, 1), 2), ((2, 16, 16, 2), 3)]  # odd, even, 1-row


def prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


def phi(n: int, u: float) -> float:
    """The real-input FFT's normwise relative error along one axis of length n (module docstring)."""
    return (5 + sum(r + 5 for r in prime_factors(n))) * u


def bound(impl: str, x: np.ndarray, dy: np.ndarray, u: float) -> np.ndarray:
    """(2·phi + k·u) · Σ_n ‖xp_n‖ ‖g_n‖ per (i, o), broadcast over the taps: [1, 1, cin, cout]."""
    n, h, w, _ = x.shape
    p, q = fft_dw.grid(h, w)
    k = (n + q // 2 + 1 if impl == "fft_bins" else n * (q // 2 + 1)) + p + 8
    norms_x = np.sqrt((x.astype(np.float64) ** 2).sum(axis=(1, 2)))  # [N, cin]: padding adds nothing to a norm
    norms_g = np.sqrt((dy.astype(np.float64) ** 2).sum(axis=(1, 2)))  # [N, cout]
    return ((2 * (phi(p, u) + phi(q, u)) + k * u) * norms_x.T @ norms_g)[None, None]


def _fft_dw(impl, x, dy, dtype):
    return np.asarray(jax.jit(lambda a, b: fft_dw.weight_gradient(impl, a, b))(
        jnp.asarray(x, dtype), jnp.asarray(dy, dtype)), np.float64)


@pytest.mark.parametrize("impl", fft_dw.IMPLS)
@pytest.mark.parametrize("shape,cout", SHAPES)
def test_float32_within_the_derived_bound_of_float64_lax(impl, shape, cout):
    x, w, dy = (a.astype(np.float32).astype(np.float64) for a in _case(shape, cout))
    ref, own = _reference(x, w, dy)
    got = _fft_dw(impl, x, dy, jnp.float32)
    assert got.shape == ref[2].shape
    assert np.all(np.abs(got - ref[2]) <= bound(impl, x, dy, U32) + own[2]), np.max(np.abs(got - ref[2]))


@pytest.mark.parametrize("impl", fft_dw.IMPLS)
def test_float64_matches_lax_to_rounding(impl):
    """In float64 the bound is ~1e-13 relative: the lags, weights and padding are exact."""
    x, w, dy = _case((2, 7, 10, 3), 4, seed=1)
    ref, own = _reference(x, w, dy)
    with jax.enable_x64():
        dw = _fft_dw(impl, x, dy, jnp.float64)
    assert np.all(np.abs(dw - ref[2]) <= bound(impl, x, dy, U64) + own[2])


@pytest.mark.parametrize("impl", fft_dw.IMPLS)
def test_bfloat16_inputs_within_the_bound_and_rounded_once(impl):
    """bfloat16 in: the FFTs run in float32 (the bound above), then the result is rounded to bfloat16 (u_b |dW|)."""
    x, w, dy = (np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in _case((2, 8, 6, 4), 3, seed=2))
    ref, own = _reference(x, w, dy)
    got = jax.jit(lambda a, b: fft_dw.weight_gradient(impl, a, b))(jnp.asarray(x, jnp.bfloat16), jnp.asarray(dy, jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    b32 = bound(impl, x, dy, U32) + own[2]
    assert np.all(np.abs(np.asarray(got, np.float64) - ref[2]) <= b32 + UB * (np.abs(ref[2]) + b32))


def test_the_bound_catches_a_swapped_tap():
    x, w, dy = (a.astype(np.float32).astype(np.float64) for a in _case((2, 8, 8, 3), 5))
    ref, own = _reference(x, w, dy)
    dw = _fft_dw("fft_rows", x, dy, jnp.float32)
    dw[0, 0], dw[0, 1] = dw[0, 1].copy(), dw[0, 0].copy()
    assert not np.all(np.abs(dw - ref[2]) <= bound("fft_rows", x, dy, U32) + own[2])


def test_unknown_fft_contraction_is_refused():
    with pytest.raises(ValueError, match="^'fft': expected one of fft_bins, fft_rows$"):
        fft_dw.weight_gradient("fft", jnp.ones((1, 4, 4, 1)), jnp.ones((1, 4, 4, 1)))
