"""Latent interpolation: known answers, vmap vs loop, one encode per slice, geometry."""

from __future__ import annotations

import jax
import ml_collections
import nibabel as nib
import numpy as np
import pytest
from flax import nnx

from jaxsr import interpolate, upsample
from jaxsr.io.nifti import Volume, output_positions


def tiny_config() -> ml_collections.ConfigDict:
    """The base config (every key, as a checkpoint's config has them) with a small model."""
    from jaxsr.configs import default

    config = default.get_config()
    config.model.update(num_blocks=2, base_features=8, bottleneck_features=16, latent_features=4, batch_norm=True)
    return config


class _TinyAE(nnx.Module):
    """Stand-in with the AutoEncoder interface (2 stride-2 blocks), used only if
    jaxsr.models.autoencoder is not importable."""

    def __init__(self, rngs: nnx.Rngs):
        self.e1 = nnx.Conv(1, 8, (3, 3), strides=2, rngs=rngs)
        self.e2 = nnx.Conv(8, 4, (3, 3), strides=2, rngs=rngs)
        self.d1 = nnx.ConvTranspose(4, 8, (3, 3), strides=2, rngs=rngs)
        self.d2 = nnx.ConvTranspose(8, 1, (3, 3), strides=2, rngs=rngs)

    def encode(self, x):
        return self.e2(nnx.leaky_relu(self.e1(x), 0.01))

    def decode(self, z):
        return nnx.sigmoid(self.d2(nnx.leaky_relu(self.d1(z), 0.01)))


def tiny_model(config=None):
    config = config or tiny_config()
    try:
        from jaxsr.models.autoencoder import AutoEncoder
    except ImportError:
        return _TinyAE(nnx.Rngs(0))
    model = AutoEncoder(config.model, rngs=nnx.Rngs(0))
    model.eval()
    return model


class LinearCodec:
    """encode = 2x, decode = x/2: latent interpolation is then exactly linear
    interpolation of intensities. Records every row the encoder really runs on."""

    def __init__(self):
        self.rows: list[np.ndarray] = []

    def _record(self, x):
        self.rows.extend(np.asarray(x))

    def encode(self, x):
        jax.debug.callback(self._record, x, partitioned=True)
        return 2.0 * x

    def decode(self, z):
        return 0.5 * z


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def interpolator(model):
    return interpolate.LatentInterpolator(model, batch_size=16)


def test_plan_slices_factor_and_spacing():
    plan = interpolate.plan_slices(output_positions(3, factor=2), 3)
    np.testing.assert_array_equal(plan.lower, [0, 0, 1, 1, 1])
    np.testing.assert_allclose(plan.alpha, [0, 0.5, 0, 0.5, 1])
    np.testing.assert_array_equal(plan.acquired, [0, -1, 1, -1, 2])
    plan = interpolate.plan_slices(output_positions(5, spacing=3.0, slice_spacing_mm=10.0), 5)
    assert plan.positions.size == 14 and plan.positions[-1] <= 4
    np.testing.assert_allclose(plan.lower + plan.alpha, plan.positions, atol=1e-6)
    assert set(plan.acquired[plan.acquired >= 0]) == {0, 3}
    with pytest.raises(ValueError):
        interpolate.plan_slices([0.0, 2.5], 3)  # no extrapolation


def test_batch_ladder():
    assert interpolate.batch_ladder_size(6, 8, 64) == 8
    assert interpolate.batch_ladder_size(9, 8, 64) == 16
    assert interpolate.batch_ladder_size(300, 8, 64) == 64
    assert interpolate.batch_ladder_size(3, 1, 64) == 4
    assert interpolate.batch_ladder_size(5, 8, 12) == 8  # cap rounded to the device count


def test_alpha_endpoints_give_the_end_latents_and_reconstructions(model, interpolator, rng):
    z = jax.numpy.asarray(rng.normal(size=(2, 3, 4, 4, 5)).astype(np.float32))
    mixed = interpolate.interpolate_latents(z, jax.numpy.array([0, 0, 1]), jax.numpy.array([0.0, 1.0, 1.0]))
    np.testing.assert_array_equal(mixed[:, 0], z[:, 0])
    np.testing.assert_array_equal(mixed[:, 1], z[:, 1])
    np.testing.assert_array_equal(mixed[:, 2], z[:, 2])

    stack = rng.uniform(size=(32, 32, 2, 1)).astype(np.float32)
    out = interpolator.interpolate_stack(stack, [0.0, 1.0], keep_originals=False)
    for n in range(2):
        recon = np.asarray(model.decode(model.encode(stack[None, :, :, n, 0, None])))[0, ..., 0]
        np.testing.assert_allclose(out[:, :, n, 0], recon, atol=1e-5)
    assert not np.allclose(out[:, :, 0, 0], out[:, :, 1, 0], atol=1e-3)


def test_vmapped_path_equals_per_alpha_per_frame_loop(model, interpolator, rng):
    stack = rng.uniform(size=(28, 20, 3, 2)).astype(np.float32)  # padded to 32x32 inside
    positions = output_positions(3, factor=3)
    out = interpolator.interpolate_stack(stack, positions, keep_originals=False)
    assert out.shape == (28, 20, 7, 2)
    padded = np.pad(stack, ((0, 4), (0, 12), (0, 0), (0, 0)), mode="edge")
    for t in range(2):
        for j, p in enumerate(positions):
            n = min(int(np.floor(p)), 1)
            a = np.float32(p - n)
            z0 = model.encode(padded[None, :, :, n, t, None])
            z1 = model.encode(padded[None, :, :, n + 1, t, None])
            expected = np.asarray(model.decode((1 - a) * z0 + a * z1))[0, :28, :20, 0]
            np.testing.assert_allclose(out[:, :, j, t], expected, atol=2e-5, err_msg=f"frame {t} position {p}")


@pytest.mark.parametrize("factor", [1, 2, 5])
def test_encoder_runs_once_per_acquired_slice(rng, factor):
    codec = LinearCodec()
    li = interpolate.LatentInterpolator(codec, batch_size=64)
    stack = rng.uniform(0.1, 1.0, size=(16, 16, 5, 3)).astype(np.float32)
    out = li.interpolate_stack(stack, output_positions(5, factor=factor), keep_originals=False)
    real = [r for r in codec.rows if np.any(r)]  # batch padding rows are zeros
    assert len(real) == 5 * 3
    assert len(codec.rows) == 16  # 15 slices padded to the 8-device ladder
    expected = sorted(stack[:, :, z, t].tobytes() for z in range(5) for t in range(3))
    # Rows are padded in-plane to the 32 bucket; the crop is the acquired slice.
    assert sorted(r[:16, :16, 0].tobytes() for r in real) == expected
    # With encode = 2x and decode = x/2, latent mixing is linear interpolation.
    j = 1 if factor > 1 else 0
    p = j / factor
    lin = (1 - p) * stack[:, :, 0] + p * stack[:, :, 1]
    np.testing.assert_allclose(out[:, :, j], lin, atol=1e-6)


def test_large_volume_is_decoded_in_chunks(rng):
    codec = LinearCodec()
    li = interpolate.LatentInterpolator(codec, batch_size=8)
    stack = rng.uniform(0.1, 1.0, size=(8, 8, 6, 4)).astype(np.float32)
    out = li.interpolate_stack(stack, output_positions(6, factor=4), keep_originals=True)
    assert len(codec.rows) == 24  # 3 encode batches of 8, each slice once
    z = np.arange(21) / 4
    n = np.minimum(np.floor(z).astype(int), 4)
    a = (z - n)[None, None, :, None]
    expected = (1 - a) * stack[:, :, n] + a * stack[:, :, n + 1]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_kept_slices_bit_identical_in_stack(interpolator, rng):
    stack = rng.uniform(size=(32, 32, 3, 1)).astype(np.float32)
    out = interpolator.interpolate_stack(stack, output_positions(3, factor=2))
    np.testing.assert_array_equal(out[:, :, ::2], stack)
    replaced = interpolator.interpolate_stack(stack, output_positions(3, factor=2), keep_originals=False)
    assert not np.array_equal(replaced[:, :, ::2], stack)
    np.testing.assert_array_equal(replaced[:, :, 1::2], out[:, :, 1::2])


# ---------------------------------------------------------------- volumes


def oblique_affine(spacing=(1.75, 1.6, 8.0)) -> np.ndarray:
    angle_a, angle_b = 0.4, -0.7
    ra = np.array([[1, 0, 0], [0, np.cos(angle_a), -np.sin(angle_a)], [0, np.sin(angle_a), np.cos(angle_a)]])
    rb = np.array([[np.cos(angle_b), 0, np.sin(angle_b)], [0, 1, 0], [-np.sin(angle_b), 0, np.cos(angle_b)]])
    affine = np.eye(4)
    affine[:3, :3] = ra @ rb @ np.diag(spacing)
    affine[:3, 3] = [-40.5, 12.25, 77.0]
    return affine


def make_volume(shape, affine, rng, frame_s=0.035) -> Volume:
    xx, yy = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    data = np.zeros(shape, np.float32)
    for z in range(shape[2]):
        disc = (xx**2 + yy**2 < (0.3 + 0.1 * z) ** 2).astype(np.float32)
        block = 200 * disc + 50 + 10 * rng.normal(size=shape[:2])
        data[:, :, z] = block[..., None] if len(shape) == 4 else block
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=2)
    header.set_xyzt_units("mm", "sec")
    zooms = list(header.get_zooms())
    if len(shape) == 4:
        zooms[3] = frame_s
    header.set_zooms(zooms)
    return Volume(data, affine, header, "mem.nii.gz")


def world(affine, ijk):
    ijk = np.asarray(ijk, np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


@pytest.mark.parametrize("shape", [(24, 20, 4), (24, 20, 3, 2)], ids=["3d", "4d"])
def test_upsample_geometry_oblique(model, rng, shape):
    config = tiny_config()
    affine = oblique_affine()
    volume = make_volume(shape, affine, rng)
    k = 3
    out = upsample.upsample_volume(interpolate.interpolator_for(model, config, batch_size=16), config, volume, factor=k)
    nz = shape[2]
    assert out.data.shape == shape[:2] + ((nz - 1) * k + 1,) + shape[3:]
    ij = np.array([[0, 0], [23, 0], [5, 19], [23, 19]], np.float64)
    for i in range(nz):
        for corner in ij:
            np.testing.assert_allclose(world(out.affine, [*corner, i * k]), world(affine, [*corner, i]), atol=1e-9)
    for i in range(nz - 1):
        start, stop = world(affine, [3, 4, i]), world(affine, [3, 4, i + 1])
        for m in range(1, k):
            np.testing.assert_allclose(world(out.affine, [3, 4, i * k + m]), start + (stop - start) * m / k, atol=1e-9)
    # Header: slice spacing divided by k, in-plane and time kept, codes kept.
    zooms = out.header.get_zooms()
    np.testing.assert_allclose(zooms[:3], (1.75, 1.6, 8.0 / k), rtol=1e-6)
    if len(shape) == 4:
        assert zooms[3] == pytest.approx(0.035)
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    np.testing.assert_allclose(out.header.get_sform(), out.affine, atol=1e-5)
    # Acquired slices bit-identical; new slices finite and in a plausible range.
    np.testing.assert_array_equal(out.data[:, :, ::k], volume.data)
    new = np.delete(out.data, np.s_[::k], axis=2)
    assert np.all(np.isfinite(new)) and new.min() > -200 and new.max() < 600


def test_replace_originals_uses_reconstructions(model, rng):
    volume = make_volume((24, 20, 3), oblique_affine(), rng)
    interpolator = interpolate.interpolator_for(model, tiny_config())
    kept = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=2)
    replaced = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=2, replace_originals=True)
    assert not np.array_equal(replaced.data[:, :, ::2], volume.data)
    np.testing.assert_allclose(replaced.data[:, :, 1::2], kept.data[:, :, 1::2], atol=1e-4)


def test_upsample_spacing_gives_the_asked_spacing(model, rng):
    volume = make_volume((24, 20, 5, 2), oblique_affine(spacing=(1.75, 1.6, 10.0)), rng)
    out = upsample.upsample_volume(interpolate.interpolator_for(model, tiny_config()), tiny_config(), volume, spacing=3.0)
    assert out.data.shape[2] == 14  # 0, 3, ..., 39 mm: no extrapolation past 40 mm
    assert out.header.get_zooms()[2] == pytest.approx(3.0)
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, 2]), 3.0, rtol=1e-9)
    np.testing.assert_allclose(out.affine[:3, 3], volume.affine[:3, 3])
    # Output slice 10 lies at 30 mm = acquired slice 3: copied bit for bit.
    np.testing.assert_array_equal(out.data[:, :, 10], volume.data[:, :, 3])
    np.testing.assert_array_equal(out.data[:, :, 0], volume.data[:, :, 0])


def test_matrix_sizes_in_one_bucket_reuse_compiled_code(interpolator, rng):
    positions = output_positions(3, factor=2)
    # The jit caches are per process: earlier tests may have compiled the 64 x 32 bucket already.
    interpolate._encode_batch.clear_cache()
    interpolate._decode_batch.clear_cache()
    interpolator.interpolate_stack(rng.uniform(size=(28, 20, 3, 2)).astype(np.float32), positions)
    encode_programs = interpolate._encode_batch._cache_size()
    decode_programs = interpolate._decode_batch._cache_size()
    for shape in [(30, 26, 3, 2), (32, 17, 3, 2), (25, 31, 3, 2)]:
        interpolator.interpolate_stack(rng.uniform(size=shape).astype(np.float32), positions)
    assert interpolate._encode_batch._cache_size() == encode_programs
    assert interpolate._decode_batch._cache_size() == decode_programs
    interpolator.interpolate_stack(rng.uniform(size=(40, 20, 3, 2)).astype(np.float32), positions)
    assert interpolate._encode_batch._cache_size() == encode_programs + 1  # the 64 x 32 bucket
