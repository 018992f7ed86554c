"""Several DICOM series in one folder as one stack (one series per slice position): the same volume as one
series and as the NIfTI it was made from, and one line naming two series when they are not one stack."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from jaxsr.io import dicom
from tests.test_dicom import (AFFINE_ATOL, INTERCEPT, SHAPE, SLOPE, dicom_file, ds_text, edit, make_cine, refused,
                              right_handed_affine, write_series)

NZ, NT = SHAPE[2], SHAPE[3]


def slice_files(folder, z):
    """The files of slice position z (its series), as write_series names them (z-major)."""
    return [folder / f"IM{z * NT + t:04d}.dcm" for t in range(NT)]


@pytest.fixture
def stack(tmp_path):
    """The cine as one series per slice position; the NIfTI's Volume, the folder, the stored integers."""
    return make_cine(tmp_path / "cine.nii", tmp_path / "stack", series_per_slice=True)


def prefix(folder, n=NZ):
    return f"{folder}: holds {n} DICOM series that are not one stack, "


def test_one_series_per_slice_is_the_volume_one_series_gives(stack, tmp_path):
    reference, folder, raw = stack
    uids = {pydicom.dcmread(path).SeriesInstanceUID for path in folder.iterdir()}
    assert len(uids) == NZ  # what is tested: five series, one per slice position
    write_series(tmp_path / "one", raw, right_handed_affine(), slope=SLOPE, intercept=INTERCEPT)
    one, merged = dicom.load_series(tmp_path / "one"), dicom.load_series(folder)
    np.testing.assert_array_equal(merged.data, reference.data)
    np.testing.assert_array_equal(merged.data, one.data)
    np.testing.assert_array_equal(merged.affine, one.affine)  # the same strings, the same arithmetic
    np.testing.assert_allclose(merged.affine, reference.affine, rtol=0, atol=AFFINE_ATOL)
    assert merged.header.binaryblock == one.header.binaryblock  # exactly what one series would be
    assert merged.frame_duration == pytest.approx(0.04)
    assert merged.header.get_data_dtype() == np.int16 and merged.header.get_slope_inter() == (SLOPE, INTERCEPT)


def test_shuffled_files_and_interleaved_series_give_the_same_volume(stack, tmp_path):
    reference, _, raw = stack
    pairs = [(z, t) for z in range(NZ) for t in range(NT)]
    order = [pairs[i] for i in np.random.default_rng(4).permutation(len(pairs))]
    write_series(tmp_path / "shuffled", raw, right_handed_affine(), slope=SLOPE, intercept=INTERCEPT, order=order,
                 series_per_slice=True)
    np.testing.assert_array_equal(dicom.load_series(tmp_path / "shuffled").data, reference.data)
    # Two series, each holding every other slice position (two breath-holds, interleaved).
    write_series(tmp_path / "two", raw, right_handed_affine(), slope=SLOPE, intercept=INTERCEPT)
    odd = generate_uid()
    for z in range(1, NZ, 2):
        for path in slice_files(tmp_path / "two", z):
            edit(path, SeriesInstanceUID=odd, SeriesNumber=8)
    volume = dicom.load_series(tmp_path / "two")
    np.testing.assert_array_equal(volume.data, reference.data)
    np.testing.assert_allclose(volume.affine, reference.affine, rtol=0, atol=AFFINE_ATOL)


def test_trigger_times_of_other_breath_holds_match_frames_by_order(stack):
    # Series z at heart rates 5 % apart, starting 3.7 ms later each: mean steps 36, 38, 40, 42, 44 ms
    # (median 40 ms); no two slices share a trigger time, the frames still pair by order.
    reference, folder, _ = stack
    for z in range(NZ):
        for t, path in enumerate(slice_files(folder, z)):
            edit(path, TriggerTime=f"{3.7 * z + t * 40.0 * (1 + 0.05 * (z - 2)):.3f}")
    volume = dicom.load_series(folder)
    np.testing.assert_array_equal(volume.data, reference.data)
    assert volume.frame_duration == pytest.approx(0.040)


def test_series_rescaled_differently_give_one_float_volume(stack):
    reference, folder, raw = stack
    for path in slice_files(folder, 1):
        edit(path, RescaleSlope="2", RescaleIntercept="5")
    volume = dicom.load_series(folder)
    np.testing.assert_array_equal(volume.data[:, :, 1], raw[:, :, 1] * 2.0 + 5.0)
    np.testing.assert_array_equal(np.delete(volume.data, 1, axis=2), np.delete(reference.data, 1, axis=2))
    assert volume.header.get_data_dtype() == np.float32  # no one scaling: --keep-dtype keeps nothing stored


# ----------------------------------------------------------------------------
# Series that are not one stack: one line naming the folder, what differs, two series


@pytest.mark.parametrize("series_per_slice", [False, True], ids=["one-cine-series", "series-per-slice"])
def test_a_localizer_beside_the_cine_is_refused_naming_it(tmp_path, series_per_slice):
    reference, folder, _ = make_cine(tmp_path / "cine.nii", tmp_path / "s", series_per_slice=series_per_slice)
    uid = generate_uid()
    for i, orientation in enumerate([(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), (0, 1, 0, 0, 0, -1)]):  # tri-plane
        # Named to sort first: the reference is the orientation most files share, not the first file's.
        dicom_file(folder / f"000_loc{i}.dcm", np.zeros((16, 16), np.int16), orientation=orientation,
                   position=(-100, -100, 0), spacing=(12.5, 12.5), series_uid=uid,
                   extra={"SeriesNumber": 1, "SeriesDescription": "Localizer"})
    cine = f"series 101 'cine slice 0' (IM0000.dcm)" if series_per_slice else "series 7 (IM0000.dcm)"
    orientation = dicom._values([float(v) for v in pydicom.dcmread(folder / "IM0000.dcm").ImageOrientationPatient])
    assert refused(folder) == (f"{prefix(folder, NZ + 1 if series_per_slice else 2)}different orientations: "
                               f"series 1 'Localizer' (000_loc0.dcm) has ImageOrientationPatient (1, 0, 0, 0, 1, 0), "
                               f"{cine} {orientation}")


def test_a_series_of_another_matrix_or_pixel_spacing_is_refused(stack, tmp_path):
    _, folder, _ = stack
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    for path in slice_files(folder, 2):
        edit(path, Rows=5, Columns=24)  # the same number of pixels
    assert refused(folder) == (f"{prefix(folder)}different Rows x Columns: series 103 'cine slice 2' (IM0006.dcm) has "
                               "5 x 24, series 101 'cine slice 0' (IM0000.dcm) 10 x 12")
    for path in slice_files(other, 3):
        edit(path, PixelSpacing=["1.500000", "1.300000"])
    assert refused(other) == (f"{prefix(other)}different PixelSpacing: series 104 'cine slice 3' (IM0009.dcm) has "
                              "(1.5, 1.3), series 101 'cine slice 0' (IM0000.dcm) (1.5, 1.25)")


def test_a_series_with_fewer_frames_is_refused_naming_it(stack, tmp_path):
    _, folder, _ = stack
    by_uid = tmp_path / "by_uid"
    shutil.copytree(folder, by_uid)
    (folder / "IM0014.dcm").unlink()  # slice 4, frame 2
    assert refused(folder) == (f"{prefix(folder)}different frame counts: series 105 'cine slice 4' (IM0012.dcm) has "
                               "2 frame(s) per slice position, series 101 'cine slice 0' (IM0000.dcm) 3")
    # SeriesNumber the same throughout, no SeriesDescription: named by SeriesInstanceUID.
    for path in by_uid.iterdir():
        edit(path, SeriesNumber=7, SeriesDescription=None)
    (by_uid / "IM0014.dcm").unlink()
    first, last = (pydicom.dcmread(by_uid / f).SeriesInstanceUID for f in ("IM0000.dcm", "IM0012.dcm"))
    assert refused(by_uid) == (f"{prefix(by_uid)}different frame counts: series {last} (IM0012.dcm) has 2 frame(s) per "
                               f"slice position, series {first} (IM0000.dcm) 3")


def test_two_series_at_one_slice_position_are_refused(stack, tmp_path):
    _, folder, _ = stack
    repeat = generate_uid()
    for t, path in enumerate(slice_files(folder, 2)):  # slice 2 acquired again
        shutil.copy(path, folder / f"R{t}.dcm")
        edit(folder / f"R{t}.dcm", SeriesInstanceUID=repeat, SeriesNumber=201, SOPInstanceUID=generate_uid())
    position = dicom._values([float(v) for v in pydicom.dcmread(folder / "IM0006.dcm").ImagePositionPatient])
    assert refused(folder) == (f"{prefix(folder, NZ + 1)}two series at one slice position: series 103 'cine slice 2' "
                               f"(IM0006.dcm) and series 201 'cine slice 2' (R0.dcm) both have a slice at {position}")
    # One cine series, a second single-frame series of the same slices beside it.
    reference, one, raw = make_cine(tmp_path / "c.nii", tmp_path / "one")
    write_series(one, raw[:, :, :, :1], reference.affine, name="other{:03d}.dcm", series_uid="1.2.3.99")
    for path in one.glob("other*.dcm"):
        edit(path, SeriesNumber=9)
    position = dicom._values([float(v) for v in pydicom.dcmread(one / "IM0000.dcm").ImagePositionPatient])
    assert refused(one) == (f"{prefix(one, 2)}two series at one slice position: series 7 (IM0000.dcm) and series 9 "
                            f"(other000.dcm) both have a slice at {position}")


def test_uneven_gaps_across_series_are_refused_naming_the_series_beside_the_gap(stack, tmp_path):
    _, folder, _ = stack
    shifted = tmp_path / "shifted"
    shutil.copytree(folder, shifted)
    for path in slice_files(folder, 2):  # a breath-hold left out: a missing slice
        path.unlink()
    message = refused(folder)
    assert message.startswith(f"{prefix(folder, NZ - 1)}uneven slice gaps: series 102 'cine slice 1' (IM0003.dcm) and "
                              "series 104 'cine slice 3' (IM0009.dcm) are 16 mm apart, against the even 10.67 mm grid "
                              "of the 4 slice positions (tolerance 0.011 mm; gaps (8, 16, 8) mm)"), message
    # 20 um along the normal, over the tolerance of 8 mm slices (as for one series, tests/test_dicom.py).
    ds = pydicom.dcmread(shifted / "IM0006.dcm")
    lps = np.array([float(v) for v in ds.ImagePositionPatient])
    normal = np.cross(np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float))
    for path in slice_files(shifted, 2):
        edit(path, ImagePositionPatient=ds_text(lps + 0.02 * normal, 6))
    message = refused(shifted)
    assert message.startswith(f"{prefix(shifted)}uneven slice gaps: series ") and "'cine slice 2'" in message, message
    assert "grid of the 5 slice positions (tolerance 0.008 mm;" in message


def test_a_series_at_odds_with_itself_is_still_named_by_its_file(stack, tmp_path):
    _, folder, raw = stack
    edit(folder / "IM0007.dcm", ImageOrientationPatient=["1", "0", "0", "0", "1", "0"])  # series 103's second file
    message = refused(folder)
    assert message.startswith(f"{folder / 'IM0007.dcm'}: ImageOrientationPatient (1, 0, 0, 0, 1, 0) differs from "
                              "IM0006.dcm's"), message
    assert message.endswith("mixed orientations in one series")
    # Slices 0, 2, 4 in series A, 1, 3 in B; slice 2 gone: the most uneven gap, 1 to 3, is B's own,
    # so the line is the one-series one, naming a file furthest off the grid: slice 1's or 3's first
    # (both 2.67 mm off, a tie that rounding breaks).
    two = tmp_path / "two"
    write_series(two, raw, right_handed_affine(), slope=SLOPE, intercept=INTERCEPT)
    odd = generate_uid()
    for z in (1, 3):
        for path in slice_files(two, z):
            edit(path, SeriesInstanceUID=odd, SeriesNumber=8)
    for path in slice_files(two, 2):
        path.unlink()
    message = refused(two)
    assert any(message.startswith(f"{two / name}: uneven slice gaps: this slice is 2.67 mm off the even 10.67 mm "
                                  "grid of the 4 slice positions") for name in ("IM0003.dcm", "IM0009.dcm")), message
