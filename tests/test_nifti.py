"""NIfTI I/O: geometry round-trips, header fields kept, atomic writes, bad input."""

import gzip
import os
import pathlib

import nibabel as nib
import numpy as np
import pytest

from jaxsr.errors import UserError, VolumeError
from jaxsr.io import atomic, nifti


def oblique_affine(spacing=(1.4, 1.6, 8.0), seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag(spacing)
    affine[:3, 3] = rng.normal(scale=50, size=3)
    return affine


def write_nifti(path, data, affine, *, frame_s=0.035, description=b"cine test"):
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    zooms = list(image.header.get_zooms())
    if data.ndim == 4:
        zooms[3] = frame_s
    image.header.set_zooms(zooms)
    image.header["descrip"] = description
    image.to_filename(str(path))
    return path


def world(affine, ijk):
    return (affine @ np.append(np.asarray(ijk, float), 1.0))[:3]


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("four_d", [False, True])
def test_reslice_keeps_world_positions_of_acquired_slices(tmp_path, k, four_d):
    affine = oblique_affine()
    shape = (6, 5, 4, 3) if four_d else (6, 5, 4)
    src = write_nifti(tmp_path / "in.nii.gz", np.random.rand(*shape).astype(np.float32), affine)
    vol = nifti.load(src)
    positions = nifti.output_positions(vol.n_slices, factor=k)
    out_shape = (6, 5, len(positions)) + shape[3:]
    out = nifti.resliced(vol, np.zeros(out_shape, np.float32), nifti.positions_step(positions))
    nifti.save(out, tmp_path / "out.nii.gz")
    back = nifti.load(tmp_path / "out.nii.gz")
    for i, j, z in [(0, 0, 0), (5, 4, 3), (2, 3, 1)]:
        np.testing.assert_allclose(world(back.affine, (i, j, z * k)), world(vol.affine, (i, j, z)), atol=1e-3)
    # New slices lie on the line between their neighbours.
    mid = world(back.affine, (1, 1, 1))
    np.testing.assert_allclose(mid, world(vol.affine, (1, 1, 0)) + (world(vol.affine, (1, 1, 1)) - world(vol.affine, (1, 1, 0))) / k, atol=1e-3)
    assert back.spacing[2] == pytest.approx(vol.spacing[2] / k, rel=1e-5)
    assert back.spacing[:2] == pytest.approx(vol.spacing[:2], rel=1e-6)


def test_header_fields_survive(tmp_path):
    affine = oblique_affine()
    src = write_nifti(tmp_path / "in.nii.gz", np.random.rand(4, 4, 3, 5).astype(np.float32), affine, frame_s=0.042)
    vol = nifti.load(src)
    out = nifti.resliced(vol, np.zeros((4, 4, 5, 5), np.float32), 0.5)
    nifti.save(out, tmp_path / "out.nii")
    hdr = nib.load(str(tmp_path / "out.nii")).header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 2
    assert hdr.get_xyzt_units() == ("mm", "sec")
    assert float(hdr["pixdim"][4]) == pytest.approx(0.042)
    assert bytes(hdr["descrip"]).rstrip(b"\0") == b"cine test"
    assert hdr.get_data_shape() == (4, 4, 5, 5)


def test_spacing_positions_give_asked_spacing():
    positions = nifti.output_positions(5, spacing=3.0, slice_spacing_mm=8.0)
    assert positions[0] == 0 and positions[-1] <= 4 + 1e-12
    np.testing.assert_allclose(np.diff(positions) * 8.0, 3.0)
    assert len(positions) == 11  # 0, 3, ..., 30 mm within 32 mm
    assert nifti.resliced_affine(np.diag([1.0, 1.0, 8.0, 1.0]), 3.0 / 8.0)[2, 2] == pytest.approx(3.0)


def test_factor_positions():
    np.testing.assert_array_equal(nifti.output_positions(3, factor=2), [0, 0.5, 1, 1.5, 2])
    with pytest.raises(UserError):
        nifti.output_positions(1, factor=2)


def test_keep_dtype_roundtrip(tmp_path):
    affine = np.diag([1.5, 1.5, 10, 1])
    raw = np.arange(4 * 4 * 3, dtype=np.int16).reshape(4, 4, 3)
    image = nib.Nifti1Image(raw, affine)
    image.header.set_slope_inter(2.0, 10.0)
    image.to_filename(str(tmp_path / "in.nii.gz"))
    vol = nifti.load(tmp_path / "in.nii.gz")
    np.testing.assert_array_equal(vol.data, raw * 2.0 + 10.0)
    nifti.save(vol, tmp_path / "out.nii.gz", dtype=np.int16)
    back = nib.load(str(tmp_path / "out.nii.gz"))
    assert back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(back.dataobj.get_unscaled()), raw)
    np.testing.assert_array_equal(back.get_fdata(), vol.data)


def test_save_never_overwrites_unless_asked(tmp_path):
    src = write_nifti(tmp_path / "in.nii.gz", np.random.rand(4, 4, 3).astype(np.float32), np.eye(4))
    vol = nifti.load(src)
    before = src.read_bytes()
    with pytest.raises(UserError, match="exists"):
        nifti.save(vol.with_data(vol.data * 0), src)
    assert src.read_bytes() == before
    nifti.save(vol.with_data(vol.data * 0), src, overwrite=True)
    assert np.all(nifti.load(src).data == 0)


def test_atomic_save_leaves_nothing_when_writing_fails(tmp_path, monkeypatch):
    vol = nifti.load(write_nifti(tmp_path / "in.nii.gz", np.random.rand(4, 4, 3).astype(np.float32), np.eye(4)))

    def half_write(self, data):  # the disk fills part way through the file
        with open(self, "wb") as f:
            f.write(data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_write)
    with pytest.raises(UserError, match="No space left"):
        nifti.save(vol, tmp_path / "out.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


def test_unwritable_folder(tmp_path):
    vol = nifti.load(write_nifti(tmp_path / "in.nii.gz", np.random.rand(4, 4, 3).astype(np.float32), np.eye(4)))
    with pytest.raises(UserError, match="does not exist"):
        nifti.save(vol, tmp_path / "missing" / "out.nii.gz")


def test_remove_stale_temporaries(tmp_path):
    stale = atomic.temporary_name(tmp_path / "sub" / "a.nii.gz")
    stale.parent.mkdir()
    stale.write_bytes(b"x")
    keep = tmp_path / "sub" / "a.nii.gz"
    keep.write_bytes(b"y")
    assert atomic.remove_stale_temporaries(tmp_path) == [stale]
    assert keep.exists() and not stale.exists()


def _bad_files(tmp_path):
    good = np.random.rand(4, 4, 3).astype(np.float32)
    yield "2D image", write_nifti(tmp_path / "flat.nii.gz", good[:, :, 0], np.eye(4))
    yield "5D image", write_nifti(tmp_path / "five.nii.gz", good.reshape(4, 4, 3, 1, 1).repeat(2, axis=4), np.eye(4))
    yield "single slice", write_nifti(tmp_path / "one.nii.gz", good[:, :, :1], np.eye(4))
    nan = good.copy()
    nan[1, 1, 1] = np.nan
    yield "NaN or Inf", write_nifti(tmp_path / "nan.nii.gz", nan, np.eye(4))
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    yield "NaN or Inf", write_nifti(tmp_path / "inf.nii.gz", inf, np.eye(4))
    full = write_nifti(tmp_path / "full.nii.gz", np.random.rand(32, 32, 8).astype(np.float32), np.eye(4))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    yield "truncated|corrupt|unreadable", truncated
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    yield "not a NIfTI|unreadable", fake
    text = tmp_path / "text.nii.gz"
    text.write_text("hello")
    yield "corrupt|not a NIfTI|unreadable", text
    yield "not a NIfTI file name", tmp_path / "volume.mha"
    yield "no such file", tmp_path / "missing.nii.gz"


def test_every_bad_input_raises_volume_error_naming_the_file(tmp_path):
    cases = list(_bad_files(tmp_path))
    assert len(cases) == 10
    for expected, path in cases:
        with pytest.raises(VolumeError, match=expected) as info:
            nifti.load(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
