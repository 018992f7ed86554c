"""jaxsr.residual_mix: exact at the acquired slices, the residuals added linearly, vmap = loop.

Tolerances: inputs are float32 in [-1, 2] (so |every intermediate| <= 8); the
mix is 7 float32 operations, each off by at most half an ulp of its result,
i.e. <= 2**-24 * 8. Against a float64 evaluation of the defining formula the
error is therefore below 7 * 8 * 2**-24 ~= 3.3e-6; we allow 4e-6. Between two
float32 evaluations (vmap vs a loop, which may contract into FMAs differently)
the same bound applies.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.interpolate import plan_slices
from jaxsr.residual_mix import residual_mix, residual_mix_rows

TOL = 4e-6


def _images(rng, n=5, shape=(12, 10)):
    """x0, x1, recon0, recon1, decoded: float32 in [-1, 2] (reconstructions may overshoot)."""
    return [rng.uniform(-1.0, 2.0, shape).astype(np.float32) for _ in range(n)]


def _formula64(decoded, x0, x1, r0, r1, a, weight=1.0):
    """The issue's form, in float64: D(z_a) + rho·[(1-a)(x_n - D(z_n)) + a(x_{n+1} - D(z_{n+1}))]."""
    d, x0, x1, r0, r1 = (np.asarray(v, np.float64) for v in (decoded, x0, x1, r0, r1))
    a = np.float64(np.float32(a))
    return d + weight * ((1 - a) * (x0 - r0) + a * (x1 - r1))


def test_acquired_slices_exactly_at_alpha_0_and_1(rng):
    x0, x1, r0, r1, _ = _images(rng)
    # The decoded mix at a = 0 is D(z_n) itself (z_0 = 1·z_n + 0·z_{n+1} exactly), likewise at 1.
    at0 = np.asarray(residual_mix(jnp.asarray(r0), x0, x1, r0, r1, jnp.float32(0.0)))
    at1 = np.asarray(residual_mix(jnp.asarray(r1), x0, x1, r0, r1, jnp.float32(1.0)))
    np.testing.assert_array_equal(at0, x0)
    np.testing.assert_array_equal(at1, x1)


def test_matches_the_defining_formula(rng):
    x0, x1, r0, r1, d = _images(rng)
    for a in (0.0, 0.125, 1 / 3, 0.5, 0.7, 1.0):
        got = np.asarray(residual_mix(d, x0, x1, r0, r1, jnp.float32(a)))
        np.testing.assert_allclose(got, _formula64(d, x0, x1, r0, r1, a), rtol=0, atol=TOL)


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.8])
def test_a_residual_weight_adds_that_share_of_the_residuals(rng, weight):
    """rho = 0 is the latent mix itself; in between, the formula (TOL as above: the same few operations)."""
    x0, x1, r0, r1, d = _images(rng)
    for a in (0.0, 0.25, 0.5, 1.0):
        got = np.asarray(residual_mix(d, x0, x1, r0, r1, jnp.float32(a), weight))
        np.testing.assert_allclose(got, _formula64(d, x0, x1, r0, r1, a, weight), rtol=0, atol=TOL)
    if weight == 0.0:
        np.testing.assert_array_equal(np.asarray(residual_mix(d, x0, x1, r0, r1, jnp.float32(0.3), 0.0)), d)


def test_linear_in_the_residuals(rng):
    """With the decoder outputs fixed, x̂ - D(z_a) is the alpha-blend of the residuals x - D(z)."""
    r0, r1, d, e0, e1 = _images(rng)
    a = jnp.float32(0.3)

    def added(scale):
        x0, x1 = r0 + scale * e0, r1 + scale * e1
        return np.asarray(residual_mix(d, x0, x1, r0, r1, a), np.float64) - d

    blend = 0.7 * np.float64(e0) + np.float64(np.float32(0.3)) * e1
    np.testing.assert_allclose(added(1.0), blend, rtol=0, atol=TOL)
    np.testing.assert_allclose(added(0.0), 0.0, rtol=0, atol=TOL)
    np.testing.assert_allclose(added(-0.5), -0.5 * added(1.0), rtol=0, atol=2 * TOL)


def test_inside_the_inputs_range_when_the_decoder_is_linear_along_the_mix(rng):
    """D(z_a) = (1-a)·D(z_n) + a·D(z_{n+1}) makes x̂ linear interpolation: within [min, max] of x_n, x_{n+1}."""
    x0, x1, r0, r1, _ = _images(rng)
    lo, hi = np.minimum(x0, x1), np.maximum(x0, x1)
    for a in np.linspace(0.0, 1.0, 9, dtype=np.float32):
        d = (1 - a) * r0 + a * r1
        got = np.asarray(residual_mix(d, x0, x1, r0, r1, a))
        assert np.all(got >= lo - TOL) and np.all(got <= hi + TOL)
        # ... and decoders that are not linear along the mix leave it by exactly their deviation.
        bump = np.float32(0.25) * np.sin(np.arange(x0.size, dtype=np.float32)).reshape(x0.shape)
        off = np.asarray(residual_mix(d + bump, x0, x1, r0, r1, a)) - got
        np.testing.assert_allclose(off, bump, rtol=0, atol=TOL)


def test_vmap_over_alphas_matches_a_loop(rng):
    x0, x1, r0, r1, _ = _images(rng)
    alphas = np.linspace(0.0, 1.0, 7, dtype=np.float32)
    decoded = np.stack(_images(rng, n=7))
    batched = jax.jit(jax.vmap(residual_mix, in_axes=(0, None, None, None, None, 0)))(decoded, x0, x1, r0, r1, alphas)
    looped = np.stack([residual_mix(decoded[i], x0, x1, r0, r1, alphas[i]) for i in range(alphas.size)])
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=0, atol=TOL)


def _rows(stack):
    """(X, Y, Z, T) -> (T·Z, X, Y, 1): the frame-major row layout the latents are encoded in."""
    x, y, z, t = stack.shape
    return np.ascontiguousarray(np.transpose(stack, (3, 2, 0, 1)).reshape(t * z, x, y, 1))


def _mix_stack(stack, recon, decoded, plan):
    """residual_mix_rows on every (frame, position) of a stack; back to (X, Y, P, T)."""
    z, t, p = stack.shape[2], stack.shape[3], plan.positions.size
    first = (np.arange(t)[:, None] * z + plan.lower[None, :]).ravel().astype(np.int32)
    alpha = np.tile(plan.alpha, t).astype(np.float32)
    rows = [jnp.asarray(_rows(v)) for v in (decoded, stack, recon)]  # device arrays, as the product passes them
    got = np.asarray(residual_mix_rows(*rows, first, first + 1, alpha))
    return np.transpose(got[..., 0].reshape(t, p, *stack.shape[:2]), (2, 3, 1, 0))


def test_rows_version_picks_each_positions_own_pair(rng):
    """residual_mix_rows over a (X, Y, Z, T) stack's rows equals residual_mix applied pair by pair."""
    stack, recon = (rng.uniform(0, 1, (9, 8, 5, 2)).astype(np.float32) for _ in range(2))
    positions = np.array([0.25, 0.5, 1.0, 2.75, 3.5, 4.0])
    plan = plan_slices(positions, stack.shape[2])
    decoded = rng.uniform(0, 1, (9, 8, positions.size, 2)).astype(np.float32)
    got = _mix_stack(stack, recon, decoded, plan)
    assert got.shape == decoded.shape
    for p, (n, a) in enumerate(zip(plan.lower, plan.alpha)):
        if a in (0, 1):  # an acquired position: the slice itself, whatever was decoded there
            np.testing.assert_array_equal(got[:, :, p], stack[:, :, n + int(a)])
            continue
        want = _formula64(decoded[:, :, p], stack[:, :, n], stack[:, :, n + 1], recon[:, :, n], recon[:, :, n + 1], a)
        np.testing.assert_allclose(got[:, :, p], want, rtol=0, atol=TOL)


@pytest.mark.parametrize("position", [1.0, 4.0])
def test_rows_version_returns_acquired_slices_exactly(rng, position):
    """At an acquired position (alpha 0 or 1 of its pair) with D(z_a) = D(z_n), the slice itself."""
    stack, recon = (rng.uniform(0, 1, (6, 7, 5, 1)).astype(np.float32) for _ in range(2))
    plan = plan_slices([position], stack.shape[2])
    n = int(position)
    decoded = recon[:, :, n : n + 1]
    got = _mix_stack(stack, recon, decoded, plan)
    np.testing.assert_array_equal(got[:, :, 0], stack[:, :, n])
