"""DICOM series end to end: `jaxsr reprocess` and `jaxsr upsample` of a series folder against the NIfTI route of the same data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest

from jaxsr import cli
from jaxsr.io import archive, nifti, volumes
from jaxsr.train import checkpoint as checkpoint_lib
from tests.test_dicom import AFFINE_ATOL, INTERCEPT, SHAPE, SLOPE, make_cine
from tests.test_interpolate import tiny_config, tiny_model

# Both outputs store their affine as float32 (sform): |entries| < 100 mm round by
# at most 100 * 2^-24 = 6e-6 mm each, on top of the DICOM strings' AFFINE_ATOL.
OUTPUT_AFFINE_ATOL = AFFINE_ATOL + 2 * 6e-6


@pytest.fixture(scope="module")
def model_and_config():
    config = tiny_config()
    return tiny_model(config), config


@pytest.fixture
def archives(request, tmp_path, monkeypatch, model_and_config):
    """IN with the cine as a DICOM series folder (and a broken series beside it), NIF with it as NIfTI;
    the NIfTI's Volume and the stored integers. Parametrised indirectly: True writes one series per slice position."""
    monkeypatch.setattr(checkpoint_lib, "load_for_inference", lambda path: model_and_config)
    reference, series, raw = make_cine(tmp_path / "nif" / "p1" / "cine_sa.nii", tmp_path / "in" / "p1" / "cine_sa",
                                       series_per_slice=getattr(request, "param", False))
    broken = tmp_path / "in" / "p2" / "cine_sa"
    shutil.copytree(series, broken)
    (broken / "IM0007.dcm").write_bytes((broken / "IM0007.dcm").read_bytes()[:200])  # truncated
    return tmp_path / "in", tmp_path / "nif", reference, raw


def reprocess(in_dir, out_dir, ckpt):
    return cli.main(["reprocess", str(in_dir), str(out_dir), "--checkpoint", str(ckpt), "--factor", "2",
                     "--workers", "1", "--no-progress"])


@pytest.mark.parametrize("archives", [False, True], indirect=True, ids=["one-series", "series-per-slice"])
def test_a_series_folder_reprocesses_to_the_nifti_routes_geometry_and_resumes(archives, tmp_path, capsys, request):
    in_dir, nif_dir, reference, _ = archives
    uids = {pydicom.dcmread(path).SeriesInstanceUID for path in (in_dir / "p1" / "cine_sa").iterdir()}
    assert len(uids) == (SHAPE[2] if request.node.callspec.params["archives"] else 1)
    assert [p.as_posix() for p in archive.find_volumes(in_dir)] == ["p1/cine_sa", "p2/cine_sa"]
    assert reprocess(nif_dir, tmp_path / "nif_out", tmp_path) == 0
    assert reprocess(in_dir, tmp_path / "out", tmp_path) == 1  # the broken series fails, alone
    err = capsys.readouterr().err
    assert "1 failed" in err and f"{in_dir / 'p2' / 'cine_sa' / 'IM0007.dcm'}: " in err

    out = tmp_path / "out" / "p1" / "cine_sa.nii.gz"
    from_nifti = nib.load(str(tmp_path / "nif_out" / "p1" / "cine_sa.nii"))
    from_dicom = nib.load(str(out))
    assert from_dicom.shape == from_nifti.shape == (12, 10, 9, 3)
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, rtol=0, atol=OUTPUT_AFFINE_ATOL)
    np.testing.assert_allclose(from_dicom.affine[:3, 2], reference.affine[:3, 2] / 2, atol=OUTPUT_AFFINE_ATOL)
    # Same voxels in, same model: the acquired slices come back as they were, the new ones agree.
    np.testing.assert_array_equal(from_dicom.get_fdata(dtype=np.float32)[:, :, ::2], reference.data)
    np.testing.assert_allclose(from_dicom.get_fdata(dtype=np.float32), from_nifti.get_fdata(dtype=np.float32),
                               rtol=0, atol=1e-3)
    assert from_dicom.header.get_xyzt_units() == ("mm", "sec")
    assert float(from_dicom.header["pixdim"][4]) == pytest.approx(0.04)
    sidecar = json.loads((tmp_path / "out" / "p1" / "cine_sa.nii.gz.json").read_text())
    assert sidecar["source"]["path"] == str((in_dir / "p1" / "cine_sa").resolve())
    assert sidecar["source"]["sha256"] == volumes.input_sha256(in_dir / "p1" / "cine_sa")
    assert not [p for p in (tmp_path / "out").rglob("*") if "p2" in p.parts and p.is_file()]  # nothing for the bad one

    records = {r.input: r for r in archive.read_records(tmp_path / "out")}
    assert records["p1/cine_sa"].status == "ok" and records["p1/cine_sa"].output == "p1/cine_sa.nii.gz"
    assert records["p2/cine_sa"].status == "failed" and "\n" not in records["p2/cine_sa"].error

    assert cli.main(["status", str(tmp_path / "out"), "--input", str(in_dir), "--json"]) == 1  # 1: some failed
    status = json.loads(capsys.readouterr().out)
    assert status["done"]["files"] == ["p1/cine_sa"] and status["failed"]["files"] == ["p2/cine_sa"]
    assert status["pending"]["count"] == 0

    # Rerun: the done series is skipped by its digest; a changed file makes it redone.
    before = out.read_bytes()
    assert reprocess(in_dir, tmp_path / "out", tmp_path) == 1
    assert "1 already done" in capsys.readouterr().err
    victim = in_dir / "p1" / "cine_sa" / "IM0004.dcm"
    victim.write_bytes(victim.read_bytes())  # same bytes, new mtime: still done
    assert reprocess(in_dir, tmp_path / "out", tmp_path) == 1
    assert "1 already done" in capsys.readouterr().err
    shutil.rmtree(in_dir / "p2")
    (in_dir / "p1" / "cine_sa" / "IM0004.dcm").rename(in_dir / "p1" / "cine_sa" / "IM0004b.dcm")
    assert reprocess(in_dir, tmp_path / "out", tmp_path) == 0
    assert "1 upsampled, 0 already done, 0 failed" in capsys.readouterr().out
    assert out.read_bytes() == before  # renamed, same images: same output bytes


def test_upsample_takes_a_series_folder(archives, tmp_path):
    in_dir, nif_dir, _, raw = archives
    series = in_dir / "p1" / "cine_sa"
    for source, target in ((series, tmp_path / "d.nii.gz"), (nif_dir / "p1" / "cine_sa.nii", tmp_path / "n.nii.gz")):
        assert cli.main(["upsample", str(source), str(target), "--checkpoint", str(tmp_path), "--factor", "2"]) == 0
    d, n = nib.load(str(tmp_path / "d.nii.gz")), nib.load(str(tmp_path / "n.nii.gz"))
    np.testing.assert_allclose(d.affine, n.affine, rtol=0, atol=OUTPUT_AFFINE_ATOL)
    assert json.loads((tmp_path / "d.nii.gz.json").read_text())["source"]["sha256"] == volumes.input_sha256(series)
    # --keep-dtype: the series' one integer type and scaling, the acquired slices' stored integers back.
    assert cli.main(["upsample", str(series), str(tmp_path / "k.nii"), "--checkpoint", str(tmp_path), "--factor", "2",
                     "--keep-dtype"]) == 0
    kept = nib.load(str(tmp_path / "k.nii"))
    assert kept.get_data_dtype() == np.int16 and (kept.dataobj.slope, kept.dataobj.inter) == (SLOPE, INTERCEPT)
    np.testing.assert_array_equal(np.asarray(kept.dataobj.get_unscaled())[:, :, ::2], raw)
    # A bad series is refused before the model is loaded, in one line naming the file.
    assert cli.main(["upsample", str(in_dir / "p2" / "cine_sa"), str(tmp_path / "x.nii.gz"), "--checkpoint",
                     str(tmp_path / "missing"), "--factor", "2"]) == 1
    assert not (tmp_path / "x.nii.gz").exists()


def test_a_series_folder_and_a_nifti_with_its_output_name_are_refused_together(archives, tmp_path, capsys):
    in_dir, _, reference, _ = archives
    nifti.save(reference, in_dir / "p1" / "cine_sa.nii.gz")  # the series' output name
    assert reprocess(in_dir, tmp_path / "out", tmp_path) == 1
    err = capsys.readouterr().err
    assert f"{in_dir / 'p1' / 'cine_sa.nii.gz'}: its output {tmp_path / 'out' / 'p1' / 'cine_sa.nii.gz'} is also " \
           f"{in_dir / 'p1' / 'cine_sa'}'s; rename one of them" in err
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # refused before anything is written


def test_a_bad_series_is_one_stderr_line_from_the_command(tmp_path):
    _, broken, _ = make_cine(tmp_path / "cine.nii", tmp_path / "broken")
    (broken / "IM0007.dcm").write_bytes((broken / "IM0007.dcm").read_bytes()[:200])  # truncated
    run = subprocess.run([sys.executable, "-m", "jaxsr", "upsample", str(broken), str(tmp_path / "x.nii.gz"),
                          "--checkpoint", str(tmp_path / "missing"), "--factor", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.splitlines() == [f"jaxsr upsample: error: {broken / 'IM0007.dcm'}: no pixel data (not an image, "
                                       "or a truncated file)"]
    assert not (tmp_path / "x.nii.gz").exists()
