"""The synthetic cine phantom: reproducible, ACDC-shaped, anatomically plausible, hard to interpolate."""

from __future__ import annotations

import dataclasses
import pathlib

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from jaxsr.cli import main as cli_main
from jaxsr.data import phantom
from jaxsr.data import phantom_render as render
from jaxsr.data.phantom_anatomy import PhantomSpec, contraction
from jaxsr.io import nifti

# Small images and few frames so that each test takes a second or two.
TINY = PhantomSpec(fov_mm=(105.0, 115.0), pixel_mm=(1.5, 1.8), matrix=(56, 80), frames=(6, 8), test_slices=(12, 14))
INFO_KEYS = ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _info(path: pathlib.Path) -> dict[str, str]:
    pairs = [line.split(": ", 1) for line in path.read_text().splitlines()]
    return dict(pairs)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    out = tmp_path_factory.mktemp("phantom") / "data"
    manifest = phantom.write_phantom_dataset(out, 6, seed=11, spec=TINY)
    return out, manifest


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, tiny_dataset):
    out, _ = tiny_dataset
    again = tmp_path / "again"
    phantom.write_phantom_dataset(again, 6, seed=11, spec=TINY)
    assert _files(out) == _files(again)
    other = tmp_path / "other"
    phantom.write_phantom_dataset(other, 1, seed=12, spec=TINY)
    name = "training/patient001/patient001_4d.nii.gz"
    assert _files(other)[name] != _files(out)[name]


def test_patient_does_not_depend_on_dataset_size(tmp_path, tiny_dataset):
    out, _ = tiny_dataset
    small = tmp_path / "small"
    phantom.write_phantom_dataset(small, 1, seed=11, spec=TINY)
    name = "training/patient001/patient001_4d.nii.gz"
    assert _files(small)[name] == _files(out)[name]


def test_layout_info_cfg_and_manifest(tiny_dataset):
    out, manifest = tiny_dataset
    names = [f"patient{i:03d}" for i in range(1, 7)]
    assert sorted(p.name for p in (out / "training").iterdir()) == names
    assert manifest["test_patients"] == ["patient005", "patient006"]
    assert manifest["train_patients"] == names[:4]
    for name in names:
        folder = out / "training" / name
        info_text = (folder / "Info.cfg").read_text()
        info = _info(folder / "Info.cfg")
        assert list(info) == INFO_KEYS
        assert info_text.endswith("\n")
        assert info["ED"] == "1"
        assert info["Group"] in ("NOR", "DCM", "HCM", "MINF", "RV")
        assert 140 < float(info["Height"]) < 200 and 35 < float(info["Weight"]) < 140
        assert info["Height"].count(".") == 1 and info["Weight"].count(".") == 1
        n_frames = int(info["NbFrame"])
        es = int(info["ES"])
        assert 2 <= es <= n_frames // 2 + 1
        expected = {"Info.cfg", f"{name}_4d.nii.gz", f"{name}_frame01.nii.gz", f"{name}_frame{es:02d}.nii.gz"}
        assert {p.name for p in folder.iterdir()} == expected
        image = nib.load(folder / f"{name}_4d.nii.gz")
        assert image.shape[3] == n_frames
        ed_image = nib.load(folder / f"{name}_frame01.nii.gz")
        es_image = nib.load(folder / f"{name}_frame{es:02d}.nii.gz")
        data = np.asarray(image.dataobj)
        np.testing.assert_array_equal(np.asarray(ed_image.dataobj), data[..., 0])
        np.testing.assert_array_equal(np.asarray(es_image.dataobj), data[..., es - 1])
        np.testing.assert_allclose(es_image.affine, image.affine)
        record = manifest["patients"][name]
        assert record["es_frame"] == es and record["n_frames"] == n_frames
        assert record["is_test"] == (name in manifest["test_patients"])


def test_geometry_and_header(tiny_dataset):
    out, manifest = tiny_dataset
    for name, record in manifest["patients"].items():
        path = out / "training" / name / f"{name}_4d.nii.gz"
        image = nib.load(path)
        header = image.header
        volume = nifti.load(path)
        assert image.get_data_dtype() == np.int16
        assert volume.is_4d and volume.n_frames == record["n_frames"]
        assert TINY.frames[0] <= volume.n_frames <= TINY.frames[1]
        sx, sy, sz = volume.spacing
        assert sx == pytest.approx(sy) and TINY.pixel_mm[0] <= sx <= TINY.pixel_mm[1]
        if record["is_test"]:
            assert sz == pytest.approx(5.0)
            assert TINY.test_slices[0] <= volume.n_slices <= TINY.test_slices[1]
        else:
            assert 6.5 <= sz <= 10.0
            assert TINY.slices[0] <= volume.n_slices <= TINY.slices[1]
        assert record["slice_thickness_mm"] <= sz + 1e-9
        # Direction cosines: a proper rotation, oblique (not aligned with any world axis).
        directions = volume.affine[:3, :3] / np.array([sx, sy, sz])
        np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-5)
        assert np.linalg.det(directions) == pytest.approx(1.0, abs=1e-5)
        assert np.max(np.abs(directions)) < 0.99
        assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
        np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-4)
        assert header.get_xyzt_units() == ("mm", "sec")
        frame_s = float(header["pixdim"][4])
        assert frame_s == pytest.approx(record["frame_duration_s"], rel=1e-5)
        assert 0.6 <= frame_s * volume.n_frames <= 1.2  # a plausible RR interval in seconds
        data = np.asarray(image.dataobj)
        assert data.min() >= 0 and 400 < np.percentile(data, 99.5) < 2000


def test_acdc_style_readers_hold_out_exactly_the_5mm_patients(tiny_dataset):
    out, manifest = tiny_dataset
    five_mm = sorted(
        name for name in manifest["patients"] if nifti.load(out / "training" / name / f"{name}_4d.nii.gz").spacing[2] == 5.0
    )
    assert five_mm == manifest["test_patients"]


def test_n_test_patients():
    assert [phantom.n_test_patients(n) for n in (1, 2, 5, 6, 16, 24, 40, 100)] == [0, 1, 1, 2, 2, 3, 5, 12]


def _lv_cavity_area(patient, image: np.ndarray, position: float, frame: int) -> float:
    """Pixels of the bright blood pool connected to the LV centre."""
    h = patient.heart
    w = position * patient.slice_spacing_mm
    w_mid = (patient.n_slices - 1) * patient.slice_spacing_mm / 2
    c = contraction(np.array([frame / patient.n_frames]), h.es_phase)[0]
    dw = w - w_mid
    centre = np.array(h.centre) + np.array(h.tilt) * dw + np.array(h.bend) * (dw / 50) ** 2 + np.array(h.es_shift) * c
    x, y = render.scene_grid(patient)
    i, j = np.unravel_index(np.argmin((x - centre[0]) ** 2 + (y - centre[1]) ** 2), x.shape)
    labels, _ = ndimage.label(image > 0.6)
    assert labels[i, j] > 0, "the LV centre is not in a blood pool"
    return float(np.sum(labels == labels[i, j]))


def _position_at(patient, s: float, frame: int = 0) -> float:
    """Slice coordinate of normalised long-axis level s (0 base, 1 apex) at a frame."""
    h = patient.heart
    c = contraction(np.array([frame / patient.n_frames]), h.es_phase)[0]
    length = h.length_mm * (1 - h.shortening * c)
    return (h.w_apex - length + s * length) / patient.slice_spacing_mm


def _normal_patient(seed: int = 3):
    for number in range(1, 40):
        patient = phantom.make_patient(seed, number, False, TINY)
        if patient.group == "NOR" and patient.slice_spacing_mm == 10.0:
            return patient
    raise AssertionError("no normal 10 mm patient drawn")


def test_lv_blood_pool_smaller_at_end_systole():
    patient = _normal_patient()
    es = patient.es_frame - 1
    for s in (0.3, 0.5):
        ed_pos, es_pos = _position_at(patient, s, 0), _position_at(patient, s, es)
        ed = render.render_clean(patient, [ed_pos], frames=[0])[:, :, 0, 0]
        end_systole = render.render_clean(patient, [es_pos], frames=[es])[:, :, 0, 0]
        ed_area = _lv_cavity_area(patient, ed, ed_pos, 0)
        es_area = _lv_cavity_area(patient, end_systole, es_pos, es)
        assert es_area < 0.7 * ed_area, (s, ed_area, es_area)


def test_lv_cross_section_shrinks_non_linearly_towards_apex():
    patient = _normal_patient()
    levels = (0.35, 0.6, 0.85)
    areas = []
    for s in levels:
        pos = _position_at(patient, s)
        image = render.render_clean(patient, [pos], frames=[0], thickness_mm=1.0)[:, :, 0, 0]
        areas.append(_lv_cavity_area(patient, image, pos, 0))
    assert areas[0] > areas[1] > areas[2] > 0
    # Ellipsoidal, not conical: the area falls faster towards the apex.
    assert areas[0] - areas[1] < areas[1] - areas[2]


def test_linear_through_plane_interpolation_fails_on_a_10mm_stack():
    patient = _normal_patient()
    n = patient.n_slices
    acquired = render.render_clean(patient)
    truth = render.render_clean(patient, np.arange(n - 1) + 0.5)
    linear = 0.5 * (acquired[:, :, :-1] + acquired[:, :, 1:])
    error = np.abs(linear - truth)
    heart = truth.std(axis=3) > 0.02  # pixels that move over the cycle
    per_gap = np.array([error[:, :, k][heart[:, :, k]].mean() for k in range(n - 1) if heart[:, :, k].any()])
    # Blood is 1 and myocardium 0.25: a 0.05 mean error in the heart is a visible ghost.
    assert error[heart].mean() > 0.04, per_gap
    assert per_gap.max() > 0.07, per_gap
    # The static surroundings change little between slices: the difficulty is in the heart.
    assert error[~heart].mean() < 0.5 * error[heart].mean()


def test_partial_volume_blurs_along_z():
    patient = _normal_patient()
    pos = _position_at(patient, 0.9)  # the apex cap, where content changes fastest along z
    slab = render.render_clean(patient, [pos], frames=[0], thickness_mm=6.0, z_step_mm=1.0)[:, :, 0, 0]
    thin = [
        render.render_clean(patient, [pos + d / patient.slice_spacing_mm], frames=[0], thickness_mm=1.0)[:, :, 0, 0]
        for d in render.slab_offsets(6.0, 1.0)
    ]
    # The slab is the average of thin slices through it (static lung detail is
    # drawn at the slab centre, hence the small tolerance).
    assert np.mean(np.abs(slab - np.mean(thin, axis=0))) < 2e-3
    centre = render.render_clean(patient, [pos], frames=[0], thickness_mm=1.0)[:, :, 0, 0]
    assert np.max(np.abs(slab - centre)) > 0.1


def test_rician_noise_matches_the_requested_snr():
    patient = dataclasses.replace(_normal_patient(), snr=20.0)
    clean = np.full(patient.matrix + (4, 4), render.MYO, np.float32)
    stored = render.acquire(patient, clean, np.random.default_rng(0)).astype(np.float64)
    bias = render.bias_field(patient)[:, :, None, None]
    ratio = stored / (bias * patient.blood_level)  # undo the coil field
    snr = render.MYO / ratio.std()
    assert snr == pytest.approx(20.0, rel=0.1)


def test_cli_writes_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["phantom", str(out), "--patients", "1", "--seed", "5"]) == 0
    assert (out / "phantom.json").exists()
    assert (out / "training" / "patient001" / "patient001_4d.nii.gz").exists()
    first = _files(out)
    assert cli_main(["phantom", str(out), "--patients", "1", "--seed", "5"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert _files(out) == first
    assert cli_main(["phantom", str(out), "--patients", "1", "--seed", "5", "--overwrite"]) == 0
    assert _files(out) == first
    assert cli_main(["phantom", str(tmp_path / "bad"), "--patients", "0"]) == 2
