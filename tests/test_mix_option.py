"""`--mix residual` (issue 16 item 3): the detail-preserving mix in the inference path, the CLIs and evaluate.

The model is the tiny AutoEncoder with its output head scaled (`detail_model`):
freshly initialised, its decoder returns ~1e-2 everywhere, which would make the
residual mix indistinguishable from linear interpolation; scaled, D(z) is O(1)
and nonlinear in z, so the residuals x - D(E(x)) and the latent mix both matter.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from jaxsr import cli, interpolate, mixes, upsample
from jaxsr.io.nifti import output_positions
from jaxsr.residual_mix import residual_mix_rows
from jaxsr.train import checkpoint as checkpoint_lib
from tests.test_interpolate import LinearCodec, tiny_config, tiny_model
from tests.test_residual_mix import TOL
from tests.test_upsample_cli import write_int16_volume

# The model's output against the same network called directly (another batch
# composition, the latent mix rounded once from float64): 1.1e-6 measured at
# |D| <= 1 (float32 rounding carried through the decoder's convolutions). A wrong
# pair, a missing residual or the plain latent mix is off by ~1e-1.
FORMULA_TOL = 1e-5


def detail_model():
    model = tiny_model()
    head = model.decoder.head2
    head.kernel[...] = head.kernel[...] * 40
    head.bias[...] = head.bias[...] + 0.5
    return model


@pytest.fixture(scope="module")
def model():
    return detail_model()


@pytest.fixture(scope="module")
def interpolator(model):
    return interpolate.interpolator_for(model, tiny_config(), batch_size=16)


@pytest.mark.parametrize("shape", [(28, 20, 4, 2), (28, 20, 5)])
def test_acquired_slices_come_back_exactly_in_model_space(interpolator, rng, shape):
    """keep_originals=False: the integer positions are the model's own output, which the residual mix makes x_n."""
    stack = rng.uniform(size=shape).astype(np.float32)
    positions = output_positions(shape[2], factor=3)
    out = interpolator.interpolate_stack(stack, positions, keep_originals=False, mix=mixes.RESIDUAL)
    np.testing.assert_array_equal(out[:, :, ::3], stack)
    latent = interpolator.interpolate_stack(stack, positions, keep_originals=False, mix=mixes.LATENT)
    assert np.abs(latent[:, :, ::3] - stack).max() > 0.1  # the plain mix gives the reconstructions there


def test_residual_mix_equals_the_formula_from_the_models_own_encode_decode(model, interpolator, rng):
    """x̂ = D(z_a) + (1-a)(x_n - D(z_n)) + a(x_{n+1} - D(z_{n+1})) in float64 from direct encode/decode calls."""
    nx, ny, nz, nt = 28, 20, 4, 2
    stack = rng.uniform(size=(nx, ny, nz, nt)).astype(np.float32)
    positions = np.array([0.0, 0.25, 0.5, 1.0, 1.6, 2.0, 2.9, 3.0])
    got = interpolator.interpolate_stack(stack, positions, keep_originals=False, mix=mixes.RESIDUAL)

    # The interpolator's input: (T, Z) rows, edge-padded to the 32 x 32 size bucket.
    x = np.pad(stack, ((0, 4), (0, 12), (0, 0), (0, 0)), mode="edge").transpose(3, 2, 0, 1)
    z = np.asarray(model.encode(jnp.asarray(x.reshape(nt * nz, 32, 32, 1))), np.float64)
    z = z.reshape((nt, nz) + z.shape[1:])
    recon = np.asarray(model.decode(jnp.asarray(z.reshape((-1,) + z.shape[2:]), jnp.float32)), np.float64)
    recon = recon.reshape(nt, nz, 32, 32)
    n = np.minimum(np.floor(positions), nz - 2).astype(int)
    a = positions - n
    z_a = (1 - a)[None, :, None, None, None] * z[:, n] + a[None, :, None, None, None] * z[:, n + 1]
    decoded = np.asarray(model.decode(jnp.asarray(z_a.reshape((-1,) + z.shape[2:]), jnp.float32)), np.float64)
    decoded = decoded.reshape(nt, positions.size, 32, 32)
    w = a[None, :, None, None]
    x = x.astype(np.float64)
    want = decoded + (1 - w) * (x[:, n] - recon[:, n]) + w * (x[:, n + 1] - recon[:, n + 1])
    want = want[:, :, :nx, :ny].transpose(2, 3, 1, 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=FORMULA_TOL)
    latent = interpolator.interpolate_stack(stack, positions, keep_originals=False)
    assert np.abs(latent - want).max() > 100 * FORMULA_TOL


def test_a_decoder_linear_along_the_mix_keeps_every_slice_inside_its_neighbours_range(rng):
    """encode = 2x, decode = x/2: the correction D(z_a) - (1-a)·D(z_n) - a·D(z_{n+1}) is rounding alone."""
    interpolator = interpolate.interpolator_for(LinearCodec(), tiny_config(), batch_size=16)
    stack = rng.uniform(size=(20, 18, 4, 2)).astype(np.float32)
    positions = output_positions(4, factor=4)
    out = interpolator.interpolate_stack(stack, positions, keep_originals=False, mix=mixes.RESIDUAL)
    plan = interpolate.plan_slices(positions, 4)
    below, above = stack[:, :, plan.lower], stack[:, :, plan.lower + 1]
    assert np.all(out >= np.minimum(below, above) - TOL) and np.all(out <= np.maximum(below, above) + TOL)


def test_rows_take_the_reconstruction_at_alpha_0_and_1(rng):
    """Even where the decoded row differs from the reconstruction (another batch, another summation order)."""
    images, recon = (jnp.asarray(rng.uniform(size=(3, 6, 5, 1)).astype(np.float32)) for _ in range(2))
    decoded = recon[jnp.array([0, 1, 1])] + 1e-3
    first, second, alpha = jnp.array([0, 0, 1]), jnp.array([1, 1, 2]), jnp.array([0.0, 1.0, 0.5], jnp.float32)
    out = np.asarray(residual_mix_rows(decoded, images, recon, first, second, alpha))
    np.testing.assert_array_equal(out[0], images[0])
    np.testing.assert_array_equal(out[1], images[1])
    want = 0.5 * (images[1] + images[2]) + decoded[2] - 0.5 * (recon[1] + recon[2])
    np.testing.assert_allclose(out[2], want, rtol=0, atol=4e-7)


def test_device_path_acquired_slices_and_new_ones_differ_from_the_latent_mix(interpolator, rng):
    from tests.test_preprocess_device import smooth_volume

    volume = smooth_volume(rng, (40, 36, 4, 2), (1.75, 1.6, 8.0))
    latent = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=2)
    residual = upsample.upsample_volume(interpolator, tiny_config(), volume, factor=2, mix=mixes.RESIDUAL)
    np.testing.assert_array_equal(residual.data[:, :, ::2], volume.data)
    span = float(np.ptp(volume.data))
    assert np.abs(residual.data[:, :, 1::2] - latent.data[:, :, 1::2]).max() > 0.05 * span
    with pytest.raises(ValueError, match="mix must be one of"):
        upsample.upsample_volume(interpolator, tiny_config(), volume, factor=2, mix="bogus")


# ----------------------------------------------------------------------------
# The commands


@pytest.fixture
def fake_checkpoint(monkeypatch, model, tmp_path):
    monkeypatch.setattr(checkpoint_lib, "load_for_inference", lambda path: (model, tiny_config()))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    return folder


def test_upsample_records_the_mix_and_keeps_acquired_slices(tmp_path, rng, fake_checkpoint):
    src = tmp_path / "in.nii.gz"
    raw, _ = write_int16_volume(src, rng)
    outputs = {}
    for mix in mixes.MIXES:
        out = tmp_path / f"{mix}.nii.gz"
        assert cli.main(["upsample", str(src), str(out), "--checkpoint", str(fake_checkpoint), "--factor", "2",
                         "--mix", mix]) == 0
        assert json.loads((tmp_path / f"{mix}.nii.gz.json").read_text())["mix"] == mix
        outputs[mix] = np.asarray(nib.load(str(out)).dataobj)
        np.testing.assert_array_equal(outputs[mix][:, :, ::2], raw * 0.5 + 10.0)  # scl_slope 0.5, inter 10
    assert np.abs(outputs["residual"][:, :, 1::2] - outputs["latent"][:, :, 1::2]).max() > 1.0


@pytest.mark.parametrize("preprocess", ["device", "scipy"])
def test_reprocess_records_the_mix_on_both_paths(tmp_path, rng, fake_checkpoint, preprocess):
    src = tmp_path / "in" / "a.nii.gz"
    src.parent.mkdir()
    raw, _ = write_int16_volume(src, rng, shape=(24, 20, 3))
    out_dir = tmp_path / "out"
    assert cli.main(["reprocess", str(src.parent), str(out_dir), "--checkpoint", str(fake_checkpoint), "--factor", "2",
                     "--mix", "residual", "--preprocess", preprocess, "--no-progress", "--workers", "1"]) == 0
    sidecar = json.loads((out_dir / "a.nii.gz.json").read_text())
    assert sidecar["mix"] == "residual" and sidecar["preprocess"] == preprocess
    np.testing.assert_array_equal(np.asarray(nib.load(str(out_dir / "a.nii.gz")).dataobj)[:, :, ::2], raw * 0.5 + 10.0)


@pytest.mark.parametrize("command", ["upsample", "reprocess"])
def test_mix_flag_default_and_bad_values(command, capsys):
    parser = cli.build_parser()
    args = [command, "a.nii", "b.nii", "--checkpoint", "c", "--factor", "2"]
    assert parser.parse_args(args).mix is None  # the checkpoint's recipe decides (tests/test_tta.py)
    assert parser.parse_args(args + ["--mix", "residual"]).mix == "residual"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(args + ["--mix", "detail"])
    assert exit_info.value.code == 2
    assert "--mix: invalid choice: 'detail'" in capsys.readouterr().err
