"""Detail-preserving interpolation: the latent mix plus the neighbours' reconstruction residuals.

The paper decodes a new slice between acquired slices x_n and x_{n+1} from the
blended latent z_a = (1 - a)·z_n + a·z_{n+1}. Whatever the decoder cannot
reproduce of x_n and x_{n+1} (their residuals x - D(E(x))) is lost, so every
new slice is capped by the reconstruction fidelity. This option adds the
residuals back, blended with the same alpha:

    x̂ = D(z_a) + (1 - a)·(x_n - D(z_n)) + a·(x_{n+1} - D(z_{n+1}))

which is the same as linear interpolation of the acquired slices plus the
autoencoder's *deviation* from linear blending of its own reconstructions:

    x̂ = [(1 - a)·x_n + a·x_{n+1}] + [D(z_a) - (1 - a)·D(z_n) - a·D(z_{n+1})]

The second form is what is computed. When the decoded endpoint equals the
reconstruction bit for bit (D(z_0) = D(z_n): z_0 = 1·z_n + 0·z_{n+1} exactly),
then at a = 0 the correction is D(z_n) - 1·D(z_n) - 0·D(z_{n+1}) = 0 exactly and
the blend is 1·x_n + 0·x_{n+1} = x_n exactly, so x̂ = x_n bit for bit (likewise
x_{n+1} at a = 1), where the first form would only give x_n up to one rounding
of x_n - D(z_n). Finite inputs are assumed (0·inf is nan).

A residual weight rho < 1 (config.inference.residual_weight) adds only that
share of the residuals, x̂ = D(z_a) + rho·[(1 - a)·r_n + a·r_{n+1}], between the
latent mix (rho = 0) and the above (rho = 1); on noisy scans part of each
residual is noise the new slice does not share (benchmarks/suite_real). With
rho < 1 the acquired slices come back only up to (1 - rho)·r at a = 0 and 1.

Range (rho = 1): x̂ deviates from linear interpolation by exactly the correction, so
pointwise min(x_n, x_{n+1}) - |c| <= x̂ <= max(x_n, x_{n+1}) + |c| with
c = D(z_a) - (1 - a)·D(z_n) - a·D(z_{n+1}), up to float rounding. Only when the
decoder is linear along the mix (c = 0) is x̂ guaranteed inside its inputs'
range. Nothing is clipped here: callers clip as they do the plain mix (the
evaluation protocol clips every method's output to the data range [0, 1]).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def residual_mix(decoded: jax.Array, x0: jax.Array, x1: jax.Array, recon0: jax.Array, recon1: jax.Array,
                 alpha: jax.Array, weight: float = 1.0) -> jax.Array:
    """x̂ for one slice pair and one alpha; all images of one shape, alpha a scalar.

    decoded: D(z_a), the decoded latent mix at `alpha`; x0, x1: the acquired
    slices x_n, x_{n+1}; recon0, recon1: their reconstructions D(z_n), D(z_{n+1}).
    Elementwise, so it vmaps over alphas, pairs and frames.
    """
    a = jnp.asarray(alpha, decoded.dtype)
    w0, w1 = 1 - a, a
    if weight != 1.0:  # a static float: the weighted form, no bit-for-bit endpoints to keep
        return decoded + weight * (w0 * (x0 - recon0) + w1 * (x1 - recon1))
    blend = w0 * x0 + w1 * x1
    correction = decoded - w0 * recon0 - w1 * recon1
    return blend + correction


def residual_mix_rows(decoded: jax.Array, images: jax.Array, recon: jax.Array, first: jax.Array, second: jax.Array,
                      alpha: jax.Array, weight: float = 1.0) -> jax.Array:
    """Decoded rows (B, H, W, 1) mixed with the acquired rows they came from: residual_mix vmapped over rows.

    images, recon: (R, H, W, 1) acquired slices (model input) and their
    reconstructions, the row layout the latents were encoded in; first,
    second, alpha: (B,) each decoded row's pair of acquired rows and weight,
    as mixed in the latents (jaxsr.interpolate, jaxsr.device_pipeline).

    At alpha exactly 0 or 1 the endpoint's reconstruction stands in for the
    decoded row: mathematically the same image, but a decoder run in another
    batch (another size, other neighbours) may sum in another order on some
    backends, and the acquired slice must come back bit for bit.
    """

    def one_row(d, i, j, a):
        x0, x1, r0, r1 = images[i], images[j], recon[i], recon[j]
        d = jnp.where(a == 0, r0, jnp.where(a == 1, r1, d))
        return residual_mix(d, x0, x1, r0, r1, a, weight)

    return jax.vmap(one_row)(decoded, first, second, alpha)


@functools.partial(jax.jit, static_argnames="weight")
def residual_mix_batch(decoded: jax.Array, images: jax.Array, recon: jax.Array, first: jax.Array, second: jax.Array,
                       alpha: jax.Array, start: jax.Array, weight: float = 1.0) -> jax.Array:
    """residual_mix_rows for one decoded batch, rows [start, start + B) of the index arrays.

    The start is traced, so one program serves every batch of a size; the
    index arrays must hold whole batches (a shorter one would be clamped).
    """

    def take(v):
        return jax.lax.dynamic_slice_in_dim(v, start, decoded.shape[0])

    return residual_mix_rows(decoded, images, recon, take(first), take(second), take(alpha), weight)
