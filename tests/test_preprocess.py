"""Preprocessing: percentile rescaling vs numpy, in-plane resampling vs scipy, inverses."""

import numpy as np
import pytest
from scipy import ndimage

from jaxsr.data import preprocess
from jaxsr.errors import VolumeError
from jaxsr.io import nifti
from tests.test_nifti import oblique_affine, write_nifti


def test_percentile_normalise_matches_numpy(rng):
    x = rng.gamma(2.0, 100.0, size=(20, 30, 4)).astype(np.float32)
    y, scale = preprocess.percentile_normalise(x)
    lo, hi = np.percentile(x, [1, 99])
    np.testing.assert_allclose(y, np.clip((x - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert y.min() == 0 and y.max() == 1 and y.dtype == np.float32
    inside = (x > lo) & (x < hi)
    np.testing.assert_allclose(scale.restore(y)[inside], x[inside], rtol=1e-4)


def test_constant_volume_is_a_clear_error(tmp_path):
    path = write_nifti(tmp_path / "zeros.nii.gz", np.zeros((8, 8, 3), np.float32), np.eye(4))
    with pytest.raises(VolumeError, match="zeros.nii.gz.*constant intensity"):
        preprocess.preprocess_volume(nifti.load(path), 1.4)


def test_inplane_resampling_agrees_with_world_coordinates(tmp_path, rng):
    """Every output voxel samples the input at the world point its affine names."""
    x = ndimage.gaussian_filter(rng.random((40, 36, 3)), 2.0).astype(np.float32)
    affine = oblique_affine(spacing=(1.75, 1.6, 8.0))
    vol = nifti.load(write_nifti(tmp_path / "in.nii.gz", x, affine))
    data, prep = preprocess.preprocess_volume(vol, 1.4)
    assert data.shape[:2] == (50, 41) and data.shape[2:] == (3, 1)  # 40*1.75/1.4, 36*1.6/1.4
    np.testing.assert_allclose(np.linalg.norm(prep.affine[:3, :2], axis=0), [1.4 * 40 * 1.75 / 1.4 / 50, 1.4 * 36 * 1.6 / 1.4 / 41], rtol=1e-5)
    # Independent reference: map each output voxel through the affines to the
    # input grid and interpolate there with scipy (upsampling: no anti-aliasing).
    out_ijk = np.stack(np.meshgrid(np.arange(50), np.arange(41), [1], indexing="ij"), -1).reshape(-1, 3)
    world = prep.affine @ np.c_[out_ijk, np.ones(len(out_ijk))].T
    in_ijk = np.linalg.inv(vol.affine) @ world
    ref = ndimage.map_coordinates(vol.data[:, :, 1], in_ijk[:2], order=3, mode="mirror").reshape(50, 41)
    ours = prep.intensity.restore(data[:, :, 1, 0])
    # Compare away from the border and from the clamped 1st/99th percentile tails.
    unclamped = (data[:, :, 1, 0] > 0) & (data[:, :, 1, 0] < 1)
    unclamped[:4], unclamped[-4:], unclamped[:, :4], unclamped[:, -4:] = False, False, False, False
    assert unclamped.sum() > 1000
    np.testing.assert_allclose(ours[unclamped], ref[unclamped], atol=2e-3 * np.ptp(x))


def test_shrinking_is_antialiased(rng):
    checker = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)[..., None]
    small = preprocess.resample_inplane(checker, (32, 32))
    # A one-voxel checkerboard has no representable content at half resolution.
    assert np.ptp(small[4:-4, 4:-4]) < 0.1


def test_restore_returns_to_the_source_grid(tmp_path, rng):
    x = ndimage.gaussian_filter(rng.random((30, 34, 2, 3)), 3.0).astype(np.float32) * 500 + 100
    vol = nifti.load(write_nifti(tmp_path / "in.nii.gz", x, np.diag([1.2, 1.3, 9.0, 1.0])))
    data, prep = preprocess.preprocess_volume(vol, 1.4)
    back = prep.restore(data)
    assert back.shape == x.shape
    lo, hi = np.percentile(back, [5, 95])
    inside = (x > lo) & (x < hi)
    np.testing.assert_allclose(back[inside], x[inside], rtol=0.02)
