"""`jaxsr upsample`: outputs, sidecar, dtype policy, spacing, refusing to overwrite."""

from __future__ import annotations

import hashlib
import json
import pathlib

import nibabel as nib
import numpy as np
import pytest

from jaxsr import cli, mixes
from jaxsr.train import checkpoint as checkpoint_lib
from tests.test_interpolate import oblique_affine, tiny_config, tiny_model


@pytest.fixture(scope="module")
def model_and_config():
    config = tiny_config()
    return tiny_model(config), config


@pytest.fixture
def fake_checkpoint(monkeypatch, model_and_config, tmp_path):
    """Checkpoint-free path: the command gets the tiny model directly."""
    seen = []

    def load_model(path):
        seen.append(path)
        return model_and_config

    monkeypatch.setattr(checkpoint_lib, "load_for_inference", load_model)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    return folder, seen


def write_int16_volume(path, rng, shape=(24, 20, 4, 2), spacing=(1.75, 1.6, 8.0)):
    data = rng.integers(0, 900, size=shape).astype(np.int16)
    data[6:18, 5:15] += 1500
    affine = oblique_affine(spacing)
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    if len(shape) == 4:
        image.header.set_zooms(image.header.get_zooms()[:3] + (0.04,))
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, str(path))
    return data, affine


def test_upsample_writes_volume_and_sidecar(tmp_path, rng, fake_checkpoint):
    ckpt, seen = fake_checkpoint
    src, out = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz"
    raw, affine = write_int16_volume(src, rng)
    assert cli.main(["upsample", str(src), str(out), "--checkpoint", str(ckpt), "--factor", "2"]) == 0
    assert seen == [ckpt]
    image = nib.load(str(out))
    assert image.shape == (24, 20, 7, 2) and image.get_data_dtype() == np.float32
    np.testing.assert_allclose(image.affine[:3, 2], affine[:3, 2] / 2, atol=1e-6)
    np.testing.assert_allclose(image.header.get_zooms(), (1.75, 1.6, 4.0, 0.04), rtol=1e-6)
    source = nib.load(str(src)).get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(image.get_fdata(dtype=np.float32)[:, :, ::2], source)
    sidecar = json.loads((tmp_path / "out.nii.gz.json").read_text())
    assert sidecar["method"] == "jaxsr-latent-interpolation"
    assert sidecar["factor"] == 2 and sidecar["spacing_mm"] is None
    assert sidecar["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert sidecar["source"]["path"] == str(src.resolve())
    assert sidecar["checkpoint"] == str(ckpt.resolve())
    assert sidecar["mix"] == mixes.DEFAULT_MIX
    assert sidecar["config"]["model"]["num_blocks"] == 2
    assert sidecar["output"]["shape"] == [24, 20, 7, 2]
    assert isinstance(sidecar["jaxsr_version"], str) and sidecar["jaxsr_version"]


def test_keep_dtype_round_trips_acquired_slices(tmp_path, rng, fake_checkpoint):
    ckpt, _ = fake_checkpoint
    src, out = tmp_path / "in.nii", tmp_path / "out.nii"
    raw, _ = write_int16_volume(src, rng)
    args = ["upsample", str(src), str(out), "--checkpoint", str(ckpt), "--factor", "3", "--keep-dtype"]
    assert cli.main(args) == 0
    image = nib.load(str(out))
    assert image.get_data_dtype() == np.int16
    stored = np.asarray(image.dataobj.get_unscaled())
    np.testing.assert_array_equal(stored[:, :, ::3], raw)
    assert image.dataobj.slope == 0.5 and image.dataobj.inter == 10.0


def test_spacing_flag_sets_header_and_affine(tmp_path, rng, fake_checkpoint):
    ckpt, _ = fake_checkpoint
    src, out = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz"
    _, affine = write_int16_volume(src, rng, shape=(24, 20, 4), spacing=(1.75, 1.6, 10.0))
    assert cli.main(["upsample", str(src), str(out), "--checkpoint", str(ckpt), "--spacing", "2.5"]) == 0
    image = nib.load(str(out))
    assert image.shape == (24, 20, 13)  # 0 .. 30 mm every 2.5 mm
    assert image.header.get_zooms()[2] == pytest.approx(2.5)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, 2]), 2.5, rtol=1e-6)
    np.testing.assert_allclose(image.affine[:3, 2], affine[:3, 2] / 4, atol=1e-6)
    sidecar = json.loads((tmp_path / "out.nii.gz.json").read_text())
    assert sidecar["spacing_mm"] == 2.5 and sidecar["factor"] is None


def test_refuses_to_overwrite(tmp_path, rng, fake_checkpoint, capsys):
    ckpt, seen = fake_checkpoint
    src, out = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz"
    write_int16_volume(src, rng)
    out.write_bytes(b"precious")
    code = cli.main(["upsample", str(src), str(out), "--checkpoint", str(ckpt), "--factor", "2"])
    assert code == 1
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / "out.nii.gz.json").exists() and seen == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "in.nii.gz", "out.nii.gz"]
    assert cli.main(["upsample", str(src), str(out), "--checkpoint", str(ckpt), "--factor", "2", "--overwrite"]) == 0
    assert nib.load(str(out)).shape == (24, 20, 7, 2)


def test_bad_input_is_a_one_line_error(tmp_path, fake_checkpoint, capsys):
    ckpt, seen = fake_checkpoint
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    assert cli.main(["upsample", str(bad), str(tmp_path / "o.nii.gz"), "--checkpoint", str(ckpt), "--factor", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "bad.nii.gz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.nii.gz").exists()
    assert seen == []  # refused before the (slow) model load
    with pytest.raises(SystemExit):
        cli.main(["upsample", str(bad), str(tmp_path / "o.nii.gz"), "--checkpoint", str(ckpt), "--factor", "0"])


def write_checkpoint(workdir: pathlib.Path, overrides: list[str] = ()) -> pathlib.Path:
    """A training workdir as `jaxsr train` leaves it: config.json (the tiny config with
    `overrides`) and one orbax step holding the (model, optimizer) train state."""
    import orbax.checkpoint as ocp
    from flax import nnx

    from jaxsr.config import load_config, to_json
    from jaxsr.models.autoencoder import AutoEncoder

    config = load_config("tiny", list(overrides))
    workdir.mkdir()
    (workdir / checkpoint_lib.CONFIG_FILE).write_text(to_json(config))
    model = AutoEncoder(config.model, rngs=nnx.Rngs(7))
    manager, _ = checkpoint_lib.managers(workdir, keep=1)
    pure = {"0": nnx.to_pure_dict(nnx.state(model)), "1": {}}
    manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(pure), extra=ocp.args.JsonSave({})), force=True)
    manager.wait_until_finished()
    return workdir


def test_upsample_from_a_real_checkpoint(tmp_path, rng):
    """Through jaxsr.train.checkpoint.load_for_inference."""
    workdir = write_checkpoint(tmp_path / "run")
    src, out = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz"
    write_int16_volume(src, rng)
    assert cli.main(["upsample", str(src), str(out), "--checkpoint", str(workdir), "--factor", "2"]) == 0
    image = nib.load(str(out))
    assert image.shape == (24, 20, 7, 2)
    sidecar = json.loads((tmp_path / "out.nii.gz.json").read_text())
    assert sidecar["config"] == json.loads((workdir / checkpoint_lib.CONFIG_FILE).read_text())


def test_batch_size_flag_default_is_the_interpolators():
    from jaxsr import interpolate
    from jaxsr.commands import common

    args = cli.build_parser().parse_args(["upsample", "a.nii", "b.nii", "--checkpoint", "c", "--factor", "2"])
    assert args.batch_size == common.BATCH_SIZE == interpolate.DEFAULT_BATCH_SIZE
