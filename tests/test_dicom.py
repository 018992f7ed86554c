"""DICOM series input: geometry against NIfTI and hand-computed points, sorting, refusals, bundled files."""

from __future__ import annotations

import logging
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from jaxsr.errors import VolumeError
from jaxsr.io import archive, dicom, nifti, volumes

# Decimal strings as written here: positions and spacings to 6 decimals (rounding
# 5e-7 mm), direction cosines to 8 (5e-9, times a spacing under 10 mm: 5e-8 mm).
# Each affine entry then differs from the source's by at most 5e-7 + 5e-8 mm (the
# slice column, a difference of two positions over n - 1 steps, by 2 x 5e-7 / 4):
AFFINE_ATOL = 1e-6
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
BUNDLED = pathlib.Path(pydicom.data.get_testdata_file("MR_small.dcm")).parent  # shipped in the wheel, offline


def ds_text(values, decimals: int) -> list[str]:
    return [f"{float(v):.{decimals}f}" for v in values]


def dicom_file(path, pixels, *, orientation, position, spacing, series_uid, trigger_ms=None, instance=None,
               temporal=None, slope=1.0, intercept=0.0, drop=(), extra=None) -> pathlib.Path:
    """One MR image file; `pixels` is (rows, columns) int16; `drop`: keywords left out."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = "1.2.3.4", series_uid, 7
    ds.Modality = "MR"
    ds.ImageOrientationPatient = ds_text(orientation, 8)
    ds.ImagePositionPatient = ds_text(position, 6)
    ds.PixelSpacing = ds_text(spacing, 6)
    ds.SliceThickness = "6.5"  # not the spacing: the positions decide
    if trigger_ms is not None:
        ds.TriggerTime = f"{trigger_ms:.3f}"
    if instance is not None:
        ds.InstanceNumber = instance
    if temporal is not None:
        ds.TemporalPositionIdentifier = temporal
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    pixels = np.ascontiguousarray(pixels, np.int16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = pixels.tobytes()
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    for keyword in drop:
        delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    return pathlib.Path(path)


def write_series(folder, raw, affine, *, slope=1.0, intercept=0.0, frame_ms=40.0, order=None, series_uid=None,
                 name="IM{:04d}.dcm", series_per_slice=False) -> list[pathlib.Path]:
    """`raw` (x, y, z, t) int16 stored values placed by NIfTI `affine` (RAS), one file per slice and frame.

    Files are named in `order` (a permutation of the (z, t) pairs; default z-major).
    `series_per_slice`: each slice position its own series (SeriesNumber 101 + z,
    SeriesDescription 'cine slice z', InstanceNumber restarting), as breath-hold cine exports have it.
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS @ affine
    dc, dr = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = np.concatenate([lps[:3, 0] / dc, lps[:3, 1] / dr])
    series_uid = series_uid or generate_uid()
    slice_uids = [generate_uid() for _ in range(raw.shape[2])]
    pairs = [(z, t) for z in range(raw.shape[2]) for t in range(raw.shape[3])]
    order = pairs if order is None else order
    paths = []
    for n, (z, t) in enumerate(order):
        per_slice = dict(series_uid=slice_uids[z], instance=t + 1,
                         extra={"SeriesNumber": 101 + z, "SeriesDescription": f"cine slice {z}"})
        paths.append(dicom_file(folder / name.format(n), raw[:, :, z, t].T, orientation=orientation,
                                position=lps[:3, 3] + z * lps[:3, 2], spacing=(dr, dc), trigger_ms=t * frame_ms,
                                temporal=t + 1, slope=slope, intercept=intercept,
                                **(per_slice if series_per_slice else dict(series_uid=series_uid, instance=n + 1))))
    return paths


def right_handed_affine(spacing=(1.25, 1.5, 8.0), seed=5) -> np.ndarray:
    """An oblique affine whose slice axis points along row x column (as a sorted DICOM series has it)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 2] *= -1
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag(spacing)
    affine[:3, 3] = [-31.5, 47.25, 12.0]
    return affine


SHAPE = (12, 10, 5, 3)
SLOPE, INTERCEPT = 0.5, -12.0


def make_cine(nii: pathlib.Path, series: pathlib.Path, series_per_slice: bool = False):
    """The same oblique int16 cine as NIfTI `nii` (scl_slope/inter) and as DICOM series folder `series`
    (one series, or one per slice position: `series_per_slice`).

    Returns the NIfTI's Volume, the series folder and the stored integers.
    """
    import nibabel as nib

    rng = np.random.default_rng(3)
    raw = rng.integers(-300, 2000, SHAPE).astype(np.int16)
    raw[3:9, 2:8] += 1500  # a bright block: something for a model to keep
    affine = right_handed_affine()
    nii.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(raw, affine)
    image.header.set_slope_inter(SLOPE, INTERCEPT)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_zooms((1.25, 1.5, 8.0, 0.04))
    image.to_filename(str(nii))
    write_series(series, raw, affine, slope=SLOPE, intercept=INTERCEPT, frame_ms=40.0, series_per_slice=series_per_slice)
    return nifti.load(nii), series, raw


@pytest.fixture
def cine(tmp_path):
    return make_cine(tmp_path / "cine.nii", tmp_path / "series")


def test_oblique_series_matches_its_nifti(cine):
    reference, folder, raw = cine
    volume = dicom.load_series(folder)
    assert volume.data.shape == SHAPE and volume.data.dtype == np.float32
    np.testing.assert_allclose(volume.affine, reference.affine, rtol=0, atol=AFFINE_ATOL)
    np.testing.assert_array_equal(volume.data, reference.data)
    np.testing.assert_array_equal(volume.data, raw.astype(np.float64) * SLOPE + INTERCEPT)
    np.testing.assert_allclose(volume.spacing, (1.25, 1.5, 8.0), rtol=1e-6)  # not SliceThickness 6.5
    header = volume.header
    assert header.get_xyzt_units() == ("mm", "sec")
    assert int(header["qform_code"]) == int(header["sform_code"]) == 1
    assert volume.frame_duration == pytest.approx(0.04)  # TriggerTime 0, 40, 80 ms -> seconds
    assert header.get_data_dtype() == np.int16 and header.get_slope_inter() == (SLOPE, INTERCEPT)
    assert volume.path == str(folder)


def test_shuffled_file_names_give_the_same_volume(cine, tmp_path):
    reference, folder, raw = cine
    pairs = [(z, t) for z in range(SHAPE[2]) for t in range(SHAPE[3])]
    order = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]
    write_series(tmp_path / "shuffled", raw, right_handed_affine(), slope=SLOPE, intercept=INTERCEPT, order=order)
    a, b = dicom.load_series(folder), dicom.load_series(tmp_path / "shuffled")
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.affine, b.affine)


def test_known_voxel_lands_at_the_hand_computed_ras_point(tmp_path):
    # Rows run along (-0.8, 0.6, 0) and columns along (0.6, 0.8, 0) in LPS; the normal
    # (0.6, 0.8, 0) x (-0.8, 0.6, 0) = (0, 0, 1). Row spacing 2 mm, column spacing 3 mm,
    # slices 5 mm apart from (10, 20, 30). Pixel (row 1, column 2) of the second slice:
    # LPS (10, 20, 35) + 2 * 3 * (0.6, 0.8, 0) + 1 * 2 * (-0.8, 0.6, 0) = (12, 26, 35),
    # RAS (-12, -26, 35). In the volume it is x = column 2, y = row 1.
    uid = generate_uid()
    for z in (2, 0, 1):  # written out of order
        pixels = np.zeros((4, 3), np.int16)  # 4 rows, 3 columns
        if z == 1:
            pixels[1, 2] = 777
        dicom_file(tmp_path / f"s{z}.dcm", pixels, orientation=(0.6, 0.8, 0, -0.8, 0.6, 0),
                   position=(10, 20, 30 + 5 * z), spacing=(2.0, 3.0), series_uid=uid)
    volume = dicom.load_series(tmp_path)
    assert volume.data.shape == (3, 4, 3)  # (x = columns, y = rows, z); one frame: 3D
    assert volume.data[2, 1, 1] == 777 and np.count_nonzero(volume.data) == 1
    np.testing.assert_allclose(volume.affine @ [2, 1, 1, 1], [-12, -26, 35, 1], atol=1e-9)
    np.testing.assert_allclose(volume.spacing, (3.0, 2.0, 5.0))


def test_a_left_handed_source_is_resorted_to_the_same_world_points(tmp_path):
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 500, (6, 5, 4, 2)).astype(np.int16)
    affine = right_handed_affine(spacing=(1.4, 1.6, 7.0))
    affine[:3, 2] *= -1  # slices written against the normal
    write_series(tmp_path / "s", raw, affine)
    volume = dicom.load_series(tmp_path / "s")
    np.testing.assert_array_equal(volume.data, raw[:, :, ::-1].astype(np.float32))
    for i, j, k in [(0, 0, 0), (5, 4, 3), (2, 1, 2)]:
        np.testing.assert_allclose(volume.affine @ [i, j, 3 - k, 1], affine @ [i, j, k, 1], atol=AFFINE_ATOL)


def test_frames_fall_back_to_temporal_position_then_instance_number(tmp_path, cine):
    reference, _, raw = cine
    for dropped in (("TriggerTime",), ("TriggerTime", "TemporalPositionIdentifier")):
        folder = tmp_path / "-".join(dropped)
        paths = write_series(folder, raw, reference.affine, slope=SLOPE, intercept=INTERCEPT)
        for path in paths:
            ds = pydicom.dcmread(path)
            for keyword in dropped:
                delattr(ds, keyword)
            ds.save_as(path)
        volume = dicom.load_series(folder)
        np.testing.assert_array_equal(volume.data, reference.data)
        assert volume.frame_duration == 0.0  # unknown without TriggerTime


# ----------------------------------------------------------------------------
# Refusals: exactly one VolumeError line, naming the file (or the folder)


def refused(path, caplog=None) -> str:
    with pytest.raises(VolumeError) as info:
        volumes.load_volume(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def edit(path, **changes):
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


@pytest.mark.parametrize("keyword", ["ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"])
def test_missing_geometry_is_refused_naming_the_file(cine, keyword):
    _, folder, _ = cine
    victim = sorted(folder.iterdir())[4]
    edit(victim, **{keyword: None})
    assert refused(folder) == f"{victim}: no {keyword}"


def test_mixed_orientations_are_refused(cine):
    _, folder, _ = cine
    victim = sorted(folder.iterdir())[7]
    edit(victim, ImageOrientationPatient=["1", "0", "0", "0", "1", "0"])
    message = refused(folder)
    assert message.startswith(f"{victim}: ImageOrientationPatient (1, 0, 0, 0, 1, 0) differs from IM0000.dcm's")
    assert message.endswith("mixed orientations in one series")


def test_inconsistent_rows_and_columns_are_refused(cine):
    _, folder, _ = cine
    victim = sorted(folder.iterdir())[5]
    edit(victim, Rows=5, Columns=24)  # the same number of pixels
    assert refused(folder).startswith(f"{victim}: Rows x Columns 5 x 24 differ from IM0000.dcm's 10 x 12")


def test_uneven_slice_gap_is_refused_with_the_tolerance(cine):
    _, folder, _ = cine
    ds = pydicom.dcmread(folder / "IM0006.dcm")  # slice 2, frame 0
    lps = np.array([float(v) for v in ds.ImagePositionPatient])
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    moved = ds_text(lps + 0.02 * np.cross(row, col), 6)  # 20 um along the normal: over 1e-3 of 8 mm
    for n in (6, 7, 8):
        edit(folder / f"IM{n:04d}.dcm", ImagePositionPatient=moved)
    message = refused(folder)
    assert message.startswith(f"{folder / 'IM0006.dcm'}: uneven slice gaps: this slice is 0.02 mm off the even 8 mm grid")
    assert "(tolerance 0.008 mm;" in message


def test_a_slice_within_the_tolerance_loads(cine):
    _, folder, _ = cine
    ds = pydicom.dcmread(folder / "IM0006.dcm")
    lps = np.array([float(v) for v in ds.ImagePositionPatient])
    normal = np.cross(np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float))
    for n in (6, 7, 8):
        edit(folder / f"IM{n:04d}.dcm", ImagePositionPatient=ds_text(lps + 0.004 * normal, 6))
    assert dicom.load_series(folder).data.shape == SHAPE


def test_a_missing_slice_is_an_uneven_gap(cine):
    _, folder, _ = cine
    for n in (6, 7, 8):
        (folder / f"IM{n:04d}.dcm").unlink()
    assert "uneven slice gaps" in refused(folder)


def test_missing_and_duplicated_frames_are_refused(cine, tmp_path):
    _, folder, _ = cine
    twin = tmp_path / "twin"
    shutil.copytree(folder, twin)
    (folder / "IM0010.dcm").unlink()
    assert refused(folder) == f"{folder}: missing frames: slice 3 (IM0009.dcm) has 2 frame(s), others 3 (1 slice(s) short)"
    shutil.copy(twin / "IM0004.dcm", twin / "IM0004-copy.dcm")
    # Equal keys are ordered by name, and the second is named: '-' sorts before '.'.
    assert refused(twin) == (f"{twin / 'IM0004.dcm'}: the same position and TriggerTime (40) as IM0004-copy.dcm: "
                             "a duplicated frame")


def test_not_dicom_and_truncated_files_are_refused(cine):
    _, folder, _ = cine
    (folder / "notes.txt").write_text("acquired on a Tuesday\n")
    assert refused(folder) == f"{folder / 'notes.txt'}: not a DICOM file (no 'DICM' after the 128-byte preamble)"
    (folder / "notes.txt").unlink()
    victim = folder / "IM0003.dcm"
    victim.write_bytes(victim.read_bytes()[:-100])
    message = refused(folder)
    assert message.startswith(f"{victim}: unreadable DICOM (ValueError: The number of bytes of pixel data is less than expected")


def test_a_single_dicom_file_an_empty_folder_and_other_files_are_refused(cine, tmp_path):
    _, folder, _ = cine
    assert refused(folder / "IM0000.dcm") == f"{folder / 'IM0000.dcm'}: a single DICOM file: give the folder holding its series"
    (tmp_path / "scan.mha").write_bytes(b"ObjectType = Image\n")
    assert refused(tmp_path / "scan.mha") == (f"{tmp_path / 'scan.mha'}: neither a NIfTI file (.nii, .nii.gz) nor a "
                                              "folder holding a DICOM series")
    assert refused(tmp_path / "gone.nii.gz") == f"{tmp_path / 'gone.nii.gz'}: no such file or folder"
    (tmp_path / "empty").mkdir()
    assert refused(tmp_path / "empty") == f"{tmp_path / 'empty'}: no DICOM files in the folder"


def test_refusals_print_nothing_and_log_at_most_one_line(cine, capfd, caplog):
    _, folder, _ = cine
    victim = folder / "IM0002.dcm"
    raw = victim.read_bytes()
    assert raw.count(b"1.500000\\1.250000") == 1
    victim.write_bytes(raw.replace(b"1.500000\\1.250000", b"1.500000\\abcdefgh"))  # pydicom warns about the invalid DS
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="jaxsr"):
        message = refused(folder)
    assert message == f"{victim}: PixelSpacing '1.500000\\abcdefgh' is not 2 numbers"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("jaxsr")]
    assert len(lines) <= 1 and all("\n" not in line for line in lines), lines
    assert capfd.readouterr().err == ""


@pytest.mark.filterwarnings("ignore::UserWarning")  # pytest records warnings itself, before jaxsr's hook sees them
def test_what_pydicom_reports_while_reading_becomes_one_warning_line(cine, capfd, caplog):
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    reference, folder, _ = cine
    victim = folder / "IM0002.dcm"
    ds = pydicom.dcmread(victim)
    head, body = DicomBytesIO(), DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)  # says explicit VR
    body.is_little_endian, body.is_implicit_VR = True, True  # the data set is implicit VR
    write_dataset(body, ds)
    victim.write_bytes(head.getvalue() + body.getvalue())
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="jaxsr"):
        volume = dicom.load_series(folder)
    np.testing.assert_array_equal(volume.data, reference.data)
    lines = [r for r in caplog.records if r.name.startswith("jaxsr")]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    # pydicom logs and warns the same text: said once.
    assert lines[0].getMessage() == (f"{folder}: DICOM header problems: Expected explicit VR, but found implicit VR - "
                                     "using implicit VR for reading")
    assert capfd.readouterr().err == ""
    # In a process of its own (pytest hangs its capture handlers on every logger),
    # with logging set up as the CLI does, that line is all stderr gets.
    script = "import logging, sys; logging.basicConfig(); from jaxsr.io import dicom; dicom.load_series(sys.argv[1])"
    run = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [f"WARNING:jaxsr.io.dicom:{lines[0].getMessage()}"]


# ----------------------------------------------------------------------------
# pydicom's bundled files (in the wheel: nothing downloaded)


def bundled_series(tmp_path, name, slices=1) -> pathlib.Path:
    """A folder holding bundled file `name`, copied to `slices` positions 5 mm apart along its normal."""
    folder = tmp_path / name.removesuffix(".dcm")
    folder.mkdir()
    source = BUNDLED / name
    assert source.is_file(), source
    for z in range(slices):
        target = folder / f"{z}_{name}"
        shutil.copy(source, target)
        if z:
            ds = pydicom.dcmread(target)
            orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
            position = np.array([float(v) for v in ds.ImagePositionPatient])
            edit(target, ImagePositionPatient=ds_text(position + 5 * z * np.cross(orientation[:3], orientation[3:]), 4),
                 SOPInstanceUID=generate_uid())
    return folder


def decodable(name: str) -> bool:
    from pydicom.pixels import get_decoder

    syntax = pydicom.dcmread(BUNDLED / name, stop_before_pixels=True).file_meta.TransferSyntaxUID
    return not syntax.is_compressed or get_decoder(syntax).is_available


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_bundled_mr_files_make_a_series(tmp_path, name):
    if not decodable(name):  # JPEG 2000: pillow (a matplotlib dependency) decodes it where built with OpenJPEG
        pytest.skip(f"no pydicom plugin for {name} installed")
    reference = pydicom.dcmread(BUNDLED / "MR_small.dcm")
    volume = dicom.load_series(bundled_series(tmp_path, name, slices=3))
    assert volume.data.shape == (64, 64, 3)
    expected = reference.pixel_array.T.astype(np.float32)  # lossless encodings of the same pixels
    for z in range(3):
        np.testing.assert_array_equal(volume.data[:, :, z], expected)
    assert volume.spacing == pytest.approx((0.3125, 0.3125, 5.0), rel=1e-6)
    np.testing.assert_allclose(volume.affine[:3, 3], [83.9063, 91.2, 6.6406], atol=1e-9)  # LPS (-83.9063, -91.2, 6.6406)


@pytest.mark.parametrize("name, expected", [
    ("MR_small.dcm", "a single slice position (1 file(s)); through-plane interpolation needs at least 2"),
    ("MR_small_jpeg_ls_lossless.dcm", "compressed with JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80), "
                                      "which no installed pydicom plugin decodes; pydicom's plugins for it: "
                                      "gdcm - requires gdcm>=3.0.10; pylibjpeg - requires pylibjpeg>=2.0 and "
                                      "pylibjpeg-libjpeg>=2.1; pyjpegls - requires numpy and pyjpegls>=1.2"),
    ("JPEG2000.dcm", "no ImageOrientationPatient"),
    ("MR_truncated.dcm", "unreadable DICOM (ValueError: The number of bytes of pixel data is less than expected"),
    ("no_meta.dcm", "not a DICOM file (no 'DICM' after the 128-byte preamble)"),
    ("rtdose.dcm", "a multi-frame (enhanced) DICOM file (15 frames); jaxsr reads series of single-frame files"),
    ("SC_rgb.dcm" if (BUNDLED / "SC_rgb.dcm").is_file() else "SC_rgb_rle.dcm",
     "a colour image (SamplesPerPixel 3); expected a greyscale MR image"),
])
def test_bundled_files_that_cannot_be_a_series_are_refused_in_one_line(tmp_path, name, expected):
    if "compressed with" in expected and decodable(name):
        pytest.skip(f"a pydicom plugin for {name} is installed here")
    folder = bundled_series(tmp_path, name)
    where = folder if expected.startswith("a single slice") else folder / f"0_{name}"
    assert refused(folder).startswith(f"{where}: {expected}")


# ----------------------------------------------------------------------------
# The dispatcher and the archive walk


def test_archive_walk_yields_series_folders_beside_nifti_files(cine, tmp_path):
    reference, folder, raw = cine
    root = tmp_path / "archive"
    write_series(root / "p1" / "cine_sa", raw, reference.affine)
    write_series(root / "p2" / "dicom" / "series1", raw, reference.affine, name="{:04d}")  # no suffix: found by magic
    (root / "p2" / "dicom" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # an index file, not a series
    shutil.copy(tmp_path / "cine.nii", root / "p2" / "cine.nii")
    (root / "p3").mkdir()
    (root / "p3" / "notes.txt").write_text("not an input\n")
    found = [p.as_posix() for p in archive.find_volumes(root)]
    assert found == ["p1/cine_sa", "p2/cine.nii", "p2/dicom/series1"]
    assert not dicom.holds_dicom(root / "p3") and not dicom.holds_dicom(root / "p2" / "dicom")  # DICOMDIR alone
    assert [volumes.output_name(rel).as_posix() for rel in found] == ["p1/cine_sa.nii.gz", "p2/cine.nii",
                                                                      "p2/dicom/series1.nii.gz"]
    for rel in found:
        np.testing.assert_allclose(volumes.load_volume(root / rel).affine, reference.affine, atol=AFFINE_ATOL)
    with pytest.raises(Exception, match="holds DICOM files itself; give the folder above it"):
        archive.find_volumes(root / "p1" / "cine_sa")


def test_series_digest_is_stable_and_sees_names_and_bytes(cine, tmp_path):
    _, folder, _ = cine
    digest = volumes.input_sha256(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / ".DS_Store").write_bytes(b"finder")  # hidden: not part of the series
    assert volumes.input_sha256(copy) == digest
    (copy / "IM0001.dcm").rename(copy / "IM0001b.dcm")
    renamed = volumes.input_sha256(copy)
    assert renamed != digest
    data = bytearray((copy / "IM0002.dcm").read_bytes())
    data[-1] ^= 1
    (copy / "IM0002.dcm").write_bytes(bytes(data))
    assert volumes.input_sha256(copy) not in (digest, renamed)
    assert volumes.input_sha256(tmp_path / "cine.nii") == archive.sha256_file(tmp_path / "cine.nii")


def test_training_data_folders_take_series_folders_as_volumes(cine, tmp_path):
    from jaxsr.data import datasets
    from jaxsr.data.preprocess import preprocess_volume

    reference, _, raw = cine
    root = tmp_path / "data"
    write_series(root / "p1" / "cine_sa", raw, right_handed_affine(), slope=SLOPE, intercept=INTERCEPT)
    shutil.copy(tmp_path / "cine.nii", root / "p2.nii")
    split = datasets.all_train_split(root)
    assert split["train"] == ["p1/cine_sa", "p2.nii"]
    from_dicom, from_nifti = datasets.preprocess_files([root / rel for rel in split["train"]], target_mm=None)
    np.testing.assert_array_equal(from_dicom, from_nifti)
    np.testing.assert_array_equal(from_nifti, preprocess_volume(reference, None)[0])


def test_the_gap_tolerance_follows_the_writers_precision_not_each_strings(tmp_path):
    # Positions as a shortest-form writer gives them: "0", "-12.5", "2" lost nothing beside
    # "1.004", so the strings round by 5e-4 mm and the tolerance for 1 mm slices is
    # 1e-3 + 2 * sqrt(3) * 5e-4 = 2.7e-3 mm (reading "0" as rounded by 0.5 mm would allow 1.7 mm).
    uid = generate_uid()
    for name, middle in (("off", "1.004"), ("within", "1.002")):
        for z, text in enumerate(("0", middle, "2")):
            ds_file = tmp_path / name / f"{z}.dcm"
            ds_file.parent.mkdir(exist_ok=True)
            dicom_file(ds_file, np.full((4, 3), z, np.int16), orientation=(1, 0, 0, 0, 1, 0), position=(0, -12.5, 0),
                       spacing=(1.0, 1.0), series_uid=uid)
            edit(ds_file, ImagePositionPatient=["0", "-12.5", text])
    message = refused(tmp_path / "off")
    assert message.startswith(f"{tmp_path / 'off' / '1.dcm'}: uneven slice gaps: this slice is 0.004 mm off") and \
        "(tolerance 0.0027 mm;" in message, message
    volume = dicom.load_series(tmp_path / "within")
    assert volume.data.shape == (3, 4, 3) and list(volume.data[0, 0]) == [0, 1, 2]
    assert volume.slice_spacing_mm == pytest.approx(1.0)
