"""The fallback toward linear interpolation (jaxsr.fallback) and its confidence map (`upsample --confidence`).

- The weights agree with an independent scipy implementation of the module's formula.
- 0 where the model reconstructs the acquired slices exactly: the map is 0 and
  the fallback changes nothing.
- A model that reproduces nothing, on slices linear along z (linear interpolation
  exact): the fallback returns the linear blend.
- Fewer than 3 slices: no left-out estimate, weights 0.
- `jaxsr upsample --confidence MAP --fallback`: MAP on OUT's grid, 0 at the kept
  slices, in [0, 1]; the sidecar records the fallback; a MAP that exists or is OUT is refused.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from jaxsr import cli, fallback
from jaxsr.interpolate import LatentInterpolator, interpolator_for
from jaxsr.upsample import UpsampleSettings, confidence_volume
from tests.test_interpolate import make_volume, oblique_affine, tiny_config
from tests.test_preprocess_device import ZeroDecoder
from tests.test_upsample_cli import fake_checkpoint, model_and_config, write_int16_volume  # noqa: F401 (fixtures)

U = 2.0**-24
POSITIONS = np.array([0.0, 0.5, 1.0, 1.25, 1.5, 2.0, 2.75, 3.0])


class Identity:
    """The latent is the image: D(E(x)) = x exactly."""

    def encode(self, x):
        return x

    def decode(self, z):
        return z


def scipy_weights(stack: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """The module docstring's formula in float64 with scipy's gaussian_filter (mode 'nearest')."""
    def energy(r):
        return ndimage.gaussian_filter(r.astype(np.float64) ** 2, (fallback.SIGMA_PX, fallback.SIGMA_PX, 0, 0),
                                       mode="nearest", truncate=fallback.TRUNCATE)

    e_ae = energy(stack - recon)
    inner = stack[:, :, 1:-1] - 0.5 * (stack[:, :, :-2] + stack[:, :, 2:])
    e_lin = energy(np.concatenate([inner[:, :, :1], inner, inner[:, :, -1:]], axis=2))
    return e_ae / np.maximum(e_ae + e_lin, 1e-12)


def rows(stack: np.ndarray) -> np.ndarray:
    """(X, Y, Z, T) -> (T·Z, X, Y, 1), the interpolator's row layout."""
    nx, ny, nz, nt = stack.shape
    return np.transpose(stack, (3, 2, 0, 1)).reshape(nt * nz, nx, ny, 1)


def test_weights_match_scipy():
    rng = np.random.default_rng(0)
    stack = rng.random((24, 20, 5, 2)).astype(np.float32)
    recon = (stack + rng.normal(0, 0.3, stack.shape)).astype(np.float32)
    centre, below, above = fallback.leave_one_out_rows(5, 2, 10)
    got = np.asarray(fallback.acquired_weights(jnp.asarray(rows(stack)), jnp.asarray(rows(recon)), centre, below,
                                               above, True))
    want = rows(scipy_weights(stack, recon))
    # Each energy is a sum of (2r + 1)^2 = 289 positive float32 products: within gamma_289 ~ 289 u of exact;
    # w = a / (a + b) of two such sums moves by at most 2 x that, relative, and w <= 1.
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * 289 * 4 * U)
    assert 0.05 < float(np.median(want)) < 0.95  # neither energy dominates everywhere: the test sees the formula


def test_exact_reconstruction_gives_a_zero_map_and_changes_nothing():
    rng = np.random.default_rng(1)
    stack = rng.random((16, 20, 4, 2)).astype(np.float32)
    interpolator = LatentInterpolator(Identity(), batch_size=8, size_multiple=4)
    np.testing.assert_array_equal(interpolator.acquired_weights(stack), np.zeros_like(stack))
    plain = interpolator.interpolate_stack(stack, POSITIONS[:-2], keep_originals=False)
    with_fallback = interpolator.interpolate_stack(stack, POSITIONS[:-2], keep_originals=False, fallback=True)
    np.testing.assert_array_equal(with_fallback, plain)


def test_a_model_that_reproduces_nothing_falls_back_to_linear():
    rng = np.random.default_rng(2)
    base = rng.random((16, 12, 1, 2)).astype(np.float32) + 0.5
    stack = base * (1.0 + 0.2 * np.arange(5, dtype=np.float32))[None, None, :, None]  # linear in z
    interpolator = LatentInterpolator(ZeroDecoder(), batch_size=8, size_multiple=4)
    got = interpolator.interpolate_stack(stack, POSITIONS, keep_originals=False, fallback=True)
    lower = np.minimum(np.floor(POSITIONS).astype(int), 3)
    a = (POSITIONS - lower)[None, None, :, None]
    linear = (1 - a) * stack[:, :, lower] + a * stack[:, :, lower + 1]
    # w = e_ae / (e_ae + e_lin) with e_lin of rounding alone (~u^2 x^2 against x^2): 1 - w ~ 1e-12;
    # the blend's 3 roundings and the (1 - w)·0 + w·linear step: 8 u of the largest value.
    np.testing.assert_allclose(got, linear, rtol=0, atol=8 * U * float(stack.max()))
    plain = interpolator.interpolate_stack(stack, POSITIONS, keep_originals=False)
    assert np.abs(plain).max() == 0.0  # the model alone gives nothing


def test_fewer_than_three_slices_have_no_estimate_and_weigh_zero():
    stack = np.random.default_rng(3).random((8, 8, 2, 1)).astype(np.float32)
    interpolator = LatentInterpolator(ZeroDecoder(), batch_size=8, size_multiple=4)
    assert not fallback.has_leave_one_out(2)
    np.testing.assert_array_equal(interpolator.acquired_weights(stack), np.zeros_like(stack))


def test_confidence_volume_is_on_the_output_grid_and_zero_at_kept_slices(rng):
    volume = make_volume((20, 16, 4, 2), oblique_affine((1.4, 1.4, 8.0)), rng)
    interpolator = interpolator_for(ZeroDecoder(), tiny_config(), batch_size=8)
    settings = UpsampleSettings(factor=2)
    conf = confidence_volume(interpolator, tiny_config(), volume, settings)
    assert conf.data.shape == (20, 16, 7, 2)
    np.testing.assert_array_equal(conf.data[:, :, ::2], 0.0)
    new = conf.data[:, :, 1::2]
    assert new.min() >= 0.0 and new.max() <= 1.0 and float(np.median(new)) > 0.5  # the zero decoder is unsure
    replaced = confidence_volume(interpolator, tiny_config(), volume, UpsampleSettings(factor=2, replace_originals=True))
    assert float(np.median(replaced.data[:, :, ::2])) > 0.5


def test_upsample_writes_the_map_and_records_the_fallback(tmp_path, rng, fake_checkpoint):
    ckpt, _ = fake_checkpoint
    src, out, conf = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", tmp_path / "conf.nii.gz"
    write_int16_volume(src, rng)
    base = ["upsample", str(src), str(out), "--checkpoint", str(ckpt), "--factor", "2"]
    assert cli.main(base + ["--fallback", "--confidence", str(conf)]) == 0
    image, out_image = nib.load(str(conf)), nib.load(str(out))
    assert image.shape == out_image.shape == (24, 20, 7, 2)
    np.testing.assert_array_equal(image.affine, out_image.affine)
    data = image.get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(data[:, :, ::2], 0.0)
    assert data.min() >= 0.0 and data.max() <= 1.0
    sidecar = json.loads((tmp_path / "out.nii.gz.json").read_text())
    assert sidecar["fallback"] is True and sidecar["config"]["inference"]["fallback"] is True
    assert cli.main(base + ["--overwrite"]) == 0
    assert json.loads((tmp_path / "out.nii.gz.json").read_text())["fallback"] is False  # the recipe's default


def test_a_map_that_exists_or_is_out_is_refused(tmp_path, rng, fake_checkpoint, capsys):
    ckpt, seen = fake_checkpoint
    src, out, conf = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", tmp_path / "conf.nii.gz"
    write_int16_volume(src, rng)
    conf.write_bytes(b"mine")
    base = ["upsample", str(src), str(out), "--checkpoint", str(ckpt), "--factor", "2"]
    assert cli.main(base + ["--confidence", str(conf)]) == 1
    assert cli.main(base + ["--confidence", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{conf}: output exists" in err and "must name another file than OUT" in err
    assert conf.read_bytes() == b"mine" and not out.exists() and seen == []
