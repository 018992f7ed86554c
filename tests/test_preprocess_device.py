"""Preprocessing and restore on the device (jaxsr.data.preprocess_jax, jaxsr.device_pipeline) against the scipy path.

Tolerances come from float32 rounding, not from runs. Both paths compute the
same linear in-plane map of float32 input x, L = Mx ⊗ My with M = Z·G per
axis (G: the Gaussian when shrinking, Z: scipy's cubic B-spline zoom), and
differ only by rounding (u = 2^-24):
- the device path: two float32 matmuls of lengths nx and ny with float32
  matrices, |error| <= (nx + ny + 4)·u·(|Mx| |x| |My|ᵀ);
- scipy: float32 after each Gaussian pass and at the end, the spline in
  float64, |error| <= 4·u·(|Zx||Gx|) |x| (|Zy||Gy|)ᵀ.
With Λ = ‖Z‖∞ per axis (G is a convex combination, so ‖|Z||G|‖∞ <= ‖Z‖∞ and
|M| <= |Z||G|), the two differ by at most β = (nx + ny + 8)·u·Λx·Λy·max|x|.
A wrong matrix (no anti-aliasing, a half-voxel shift) is off by ~1e-2 of the
range, a thousand times more.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxsr import device_pipeline, interpolate, mixes, upsample
from jaxsr.data import preprocess, preprocess_jax
from jaxsr.errors import VolumeError
from jaxsr.io import nifti
from tests.test_interpolate import LinearCodec, make_volume, oblique_affine, tiny_config, tiny_model

U = 2.0**-24


def zoom_norm(n_in: int, n_out: int) -> float:
    """Λ = ‖Z‖∞ of scipy's cubic B-spline zoom alone (no Gaussian), from the unit vectors."""
    if n_in == n_out:
        return 1.0
    eye = np.eye(n_in)
    z = np.stack([ndimage.zoom(e, n_out / n_in, order=3, mode="grid-mirror", grid_mode=True) for e in eye], axis=1)
    return float(np.abs(z).sum(axis=1).max())


def resample_bound(in_xy, out_xy, max_abs: float) -> float:
    """β above: how far the device and scipy resampling of data with max |x| = max_abs may differ."""
    lam = zoom_norm(in_xy[0], out_xy[0]) * zoom_norm(in_xy[1], out_xy[1])
    return (in_xy[0] + in_xy[1] + 8) * U * lam * max_abs


def smooth_volume(rng, shape, spacing) -> nifti.Volume:
    volume = make_volume(shape, oblique_affine(spacing), rng)
    data = ndimage.gaussian_filter(volume.data, (1.0, 1.0) + (0,) * (len(shape) - 2)) + rng.normal(0, 5, shape)
    return volume.with_data(data.astype(np.float32))


# (shape, spacing): shrink and enlarge, per axis and together, one axis unchanged.
CASES = [
    ((40, 36, 3, 2), (1.75, 1.6, 8.0)),  # enlarge both (50 x 41)
    ((48, 44, 3), (1.0, 0.9, 8.0)),  # shrink both (34 x 28), anti-aliased
    ((37, 50, 4, 2), (2.1, 1.0, 6.0)),  # enlarge x, shrink y
    ((30, 33, 3, 3), (1.4, 2.0, 10.0)),  # x unchanged, enlarge y
]


@pytest.fixture(scope="module")
def interpolator():
    return interpolate.interpolator_for(LinearCodec(), tiny_config(), batch_size=16)


def device_prepare(interpolator, volume):
    """The device path's model input and (lo, hi) for `volume`, cropped to the valid region, as (X', Y', Z, T)."""
    plan = device_pipeline.plan_volume(interpolator, tiny_config(), volume, factor=2)
    (nx, ny, nz, nt), (px, py) = plan.source_shape, plan.prepared_xy
    (bx, by), (mx, my) = plan.raw_xy, plan.model_xy
    ranks, fractions = preprocess_jax.percentile_ranks(plan.n_source * px * py)
    images, lo, hi = preprocess_jax.prepare_images(
        jnp.asarray(device_pipeline.host_layout(volume, plan)),
        preprocess_jax.padded_matrix(nx, px, mx, bx, edge=True), preprocess_jax.padded_matrix(ny, py, my, by, edge=True),
        np.array([plan.n_source, px, py], np.int32), ranks, fractions)
    images = np.asarray(images)[: nz * nt, ..., 0]
    stack = images.reshape(nt, nz, mx, my).transpose(2, 3, 1, 0)
    return stack, float(lo), float(hi), images


@pytest.mark.parametrize("shape,spacing", CASES)
def test_device_preprocessing_matches_scipy(interpolator, rng, shape, spacing):
    volume = smooth_volume(rng, shape, spacing)
    reference, prep = preprocess.preprocess_volume(volume, 1.4)
    stack, lo, hi, images = device_prepare(interpolator, volume)
    px, py = reference.shape[:2]
    max_x = float(np.abs(volume.data).max())
    beta = resample_bound(shape[:2], (px, py), max_x)
    r_max = zoom_norm(shape[0], px) * zoom_norm(shape[1], py) * max_x
    # Order statistics move at most β with the data; each path's lerp rounds within 4u·max|r|.
    assert abs(lo - prep.intensity.lo_value) <= beta + 4 * U * r_max
    assert abs(hi - prep.intensity.hi_value) <= beta + 4 * U * r_max
    span = prep.intensity.hi_value - prep.intensity.lo_value
    tol = (4 * beta + 12 * U * r_max) / span + 4 * U  # through (r - lo) / (hi - lo) and the clip
    err = np.abs(stack[:px, :py] - reference)
    assert err.max() <= tol, (err.max(), tol)
    assert err.max() > 0 or np.array_equal(stack[:px, :py], reference)
    # The padding the model sees is edge padding, bit for bit (as np.pad(mode='edge') on the host path).
    np.testing.assert_array_equal(stack[px:], np.broadcast_to(stack[px - 1 : px], stack[px:].shape))
    np.testing.assert_array_equal(stack[:, py:], np.broadcast_to(stack[:, py - 1 : py], stack[:, py:].shape))
    print(f"{shape} -> {(px, py)}: max error {err.max():.2e}, bound {tol:.2e}")


@pytest.mark.parametrize("shape,spacing", CASES)
def test_device_restore_matches_scipy(interpolator, rng, shape, spacing):
    volume = smooth_volume(rng, shape, spacing)
    stack, prep = preprocess.preprocess_volume(volume, 1.4)
    px, py = stack.shape[:2]
    plan = device_pipeline.plan_volume(interpolator, tiny_config(), volume, factor=2)
    (bx, by), (mx, my) = plan.raw_xy, plan.model_xy
    nz, nt = stack.shape[2:]
    # The model's output layout: rows (t, z), (x, y) padded; what lies in the padding must not matter.
    images = np.full((nt * nz, mx, my), 7.0, np.float32)
    images[:, :px, :py] = stack.transpose(3, 2, 0, 1).reshape(nt * nz, px, py)
    lo, hi = prep.intensity.lo_value, prep.intensity.hi_value
    back = preprocess_jax.restore_images(
        jnp.asarray(images), preprocess_jax.padded_matrix(px, shape[0], bx, mx, edge=False),
        preprocess_jax.padded_matrix(py, shape[1], by, my, edge=False), jnp.float32(lo), jnp.float32(hi))
    ours = np.asarray(back)[:, : shape[1], : shape[0]].reshape(nt, nz, shape[1], shape[0]).T
    reference = prep.restore(stack)
    span = hi - lo
    tol = resample_bound((px, py), shape[:2], 1.0) * span + 3 * U * float(np.abs(reference).max())
    err = np.abs(ours.reshape(reference.shape) - reference)
    assert err.max() <= tol, (err.max(), tol)
    print(f"{(px, py)} -> {shape[:2]}: max error {err.max():.2e}, bound {tol:.2e}")


def test_order_statistics_are_exact(rng):
    x = rng.normal(0, 100, 5000).astype(np.float32)
    x[:40] = x[40]  # ties
    x[100:110] = -0.0
    x[110:120] = 0.0
    valid = rng.random(x.size) > 0.2
    q = (0.0, 1.0, 37.5, 50.0, 99.0, 100.0)
    ranks, fractions = preprocess_jax.percentile_ranks(int(valid.sum()), q)
    lower, upper = preprocess_jax.order_statistics(jnp.asarray(x), jnp.asarray(valid), jnp.asarray(ranks))
    ordered = np.sort(x[valid])
    np.testing.assert_array_equal(np.asarray(lower), ordered[ranks])
    np.testing.assert_array_equal(np.asarray(upper), ordered[np.minimum(ranks + 1, ordered.size - 1)])
    got = preprocess_jax.masked_percentiles(jnp.asarray(x), jnp.asarray(valid), jnp.asarray(ranks), jnp.asarray(fractions))
    ref = np.percentile(x[valid].astype(np.float64), q)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=4 * U * np.abs(x).max())


def end_to_end_tol(volume, ref, mix_ops_u: float) -> float:
    """Device against scipy path for a model linear in its input: prepare, a convex mix (plus mix_ops_u·u
    of its own rounding per path, doubled between them), restore."""
    shape = volume.data.shape
    _, prep = preprocess.preprocess_volume(volume, 1.4)
    px, py = prep.shape_xy
    span = prep.intensity.hi_value - prep.intensity.lo_value
    max_x = float(np.abs(volume.data).max())
    r_max = zoom_norm(shape[0], px) * zoom_norm(shape[1], py) * max_x
    tol_y = (4 * resample_bound(shape[:2], (px, py), max_x) + 12 * U * r_max) / span + 4 * U + 2 * mix_ops_u * U
    lam_back = zoom_norm(px, shape[0]) * zoom_norm(py, shape[1])
    # Mixing is a convex combination (no growth); restore scales the model-input difference by Λ·span.
    return (tol_y * lam_back + resample_bound((px, py), shape[:2], 1.0)) * span + 4 * U * float(np.abs(ref.data).max())


@pytest.mark.parametrize("mix", mixes.MIXES)
def test_device_upsampling_matches_scipy_end_to_end(interpolator, rng, mix):
    """With encode = 2x, decode = x/2 the model is linear, so the bound carries through: prepare, mix, restore.

    The residual mix adds the decoder's deviation from linear blending of its
    reconstructions, for this model rounding alone: 5 float32 operations on
    values <= 1 (model space), at most 6·u per path, 12·u between them.
    """
    shape, spacing = (40, 36, 4, 2), (1.75, 1.6, 8.0)
    volume = smooth_volume(rng, shape, spacing)
    for replace in (False, True):
        ref = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=3, replace_originals=replace,
                                          preprocess="scipy", mix=mix)
        out = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=3, replace_originals=replace,
                                          mix=mix)
        assert out.data.shape == ref.data.shape == (40, 36, 10, 2)
        np.testing.assert_array_equal(out.affine, ref.affine)
        if not replace:
            np.testing.assert_array_equal(out.data[:, :, ::3], volume.data)
        err = np.abs(out.data - ref.data).max()
        tol = end_to_end_tol(volume, ref, 6.0 if mix == mixes.RESIDUAL else 0.0)
        assert err <= tol, (replace, err, tol)


class ZeroDecoder:
    """A model that reproduces nothing: the fallback then gives (all but) all weight to linear interpolation."""

    def encode(self, x):
        return x[:, ::4, ::4]

    def decode(self, z):
        return jnp.zeros(z.shape[:1] + (z.shape[1] * 4, z.shape[2] * 4, 1), z.dtype)


@pytest.mark.parametrize("mix", mixes.MIXES)
def test_device_fallback_matches_scipy_end_to_end(rng, mix):
    """Slices linear in z, a decoder of zeros: linear's left-out error is rounding alone (e_lin <= ~u^2 against
    e_ae ~ x^2), so w = 1 to within 1e-9 wherever the image is not 0, and both paths return their linear blend,
    a convex mix: the latent bound plus 3 operations of the blend per path (the residual mix's 6 besides)."""
    shape, spacing = (40, 36, 4, 2), (1.75, 1.6, 8.0)
    base = smooth_volume(rng, shape[:2] + (1, 2), spacing)
    data = base.data * (1.0 + 0.25 * np.arange(4, dtype=np.float32)[None, None, :, None]) + 50.0
    volume = base.with_data(data.astype(np.float32))
    interpolator = interpolate.interpolator_for(ZeroDecoder(), tiny_config(), batch_size=16)
    ref = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=3, preprocess="scipy", mix=mix,
                                   fallback=True)
    out = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=3, mix=mix, fallback=True)
    plain = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=3, mix=mix)
    np.testing.assert_array_equal(out.data[:, :, ::3], volume.data)
    err = np.abs(out.data - ref.data).max()
    tol = end_to_end_tol(volume, ref, 3.0 + (6.0 if mix == mixes.RESIDUAL else 0.0))
    assert err <= tol, (err, tol)
    if mix == mixes.LATENT:  # the residual mix of a zero decoder is the linear blend already
        assert np.abs(plain.data - ref.data).max() > 100 * tol  # without the fallback the zero decoder shows


def test_device_model_path_matches_interpolate_stack(rng):
    """encode_rows / mix_rows / decode_rows give interpolate_stack's slices for the same model input."""
    model = tiny_model()
    interpolator = interpolate.interpolator_for(model, tiny_config(), batch_size=16)
    stack = rng.uniform(size=(28, 20, 3, 2)).astype(np.float32)
    positions = nifti.output_positions(3, factor=3)
    expected = interpolator.interpolate_stack(stack, positions, keep_originals=False)
    plan = interpolate.plan_slices(positions, 3)
    images = np.pad(stack, ((0, 4), (0, 12), (0, 0), (0, 0)), mode="edge").transpose(3, 2, 0, 1).reshape(6, 32, 32, 1)
    rows = device_pipeline.row_bucket(6, interpolator)
    images = jnp.asarray(np.concatenate([images, np.zeros((rows - 6, 32, 32, 1), np.float32)]))
    latents = interpolator.encode_rows(images, 6)
    pad = device_pipeline.row_bucket(14, interpolator) - 14  # decoded rows whole batches, as plan_volume pads them
    first = np.pad((np.arange(2)[:, None] * 3 + plan.lower[None, :]).ravel(), (0, pad))
    alpha = np.pad(np.tile(plan.alpha, 2), (0, pad))
    mixed = device_pipeline.mix_rows(latents, first, first + 1, alpha)
    decoded = np.concatenate([np.asarray(d) for _, d in interpolator.decode_rows(mixed, 14)])[:14, :28, :20, 0]
    np.testing.assert_allclose(decoded.reshape(2, 7, 28, 20).transpose(2, 3, 1, 0), expected, atol=2e-5)


def test_constant_volume_is_refused_naming_the_file(interpolator):
    volume = make_volume((16, 16, 4), np.eye(4), np.random.default_rng(0))
    volume = volume.with_data(np.full((16, 16, 4), 3.0, np.float32))
    with pytest.raises(VolumeError, match="mem.nii.gz.*constant intensity"):
        upsample.upsample_volume(interpolator, tiny_config(), volume, factor=2)


def test_row_buckets():
    assert [device_pipeline.count_bucket(c) for c in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]


def test_mixed_sizes_in_one_bucket_compile_nothing_new(rng):
    """After one volume, others of different matrix, slice and frame counts in the same buckets reuse every program."""
    model = tiny_model()
    interpolator = interpolate.interpolator_for(model, tiny_config(), batch_size=16)
    first = smooth_volume(rng, (40, 36, 4, 3), (1.75, 1.6, 8.0))
    upsample.upsample_volume(interpolator, tiny_config(), first, factor=2)
    before = device_pipeline.compiled_programs()
    plans = set()
    # (x, y) -> (50, 41) ... (54, 39): all in the 64 x 64 bucket; 12-16 source rows, one batch of 16.
    for shape in [(42, 34, 4, 3), (38, 33, 5, 3), (43, 36, 3, 5), (40, 35, 4, 4)]:
        volume = smooth_volume(rng, shape, (1.75, 1.6, 8.0))
        plan = device_pipeline.plan_volume(interpolator, tiny_config(), volume, factor=2)
        plans.add((plan.raw_xy, plan.model_xy, plan.rows))
        out = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=2)
        np.testing.assert_array_equal(out.data[:, :, ::2], volume.data)
    assert device_pipeline.compiled_programs() == before, plans
