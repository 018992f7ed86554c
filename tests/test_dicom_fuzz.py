"""Fuzzing the DICOM series reader: every mutated series is a usable Volume or one VolumeError line naming it.

Mutants of a small oblique cine (6 files: 3 slices x 2 frames, int16,
rescaled), written as one series and as one series per slice position: random
bytes anywhere in a file, random bytes in its header, a deleted element, an
element set to a nonsense value, a truncated file, a missing file, a stray
non-DICOM file; and the files of one slice position given another
SeriesInstanceUID (their own, another slice's, or one file alone), moved along
the normal or in-plane, or turned. Nothing may reach stderr (pydicom's logger
and warnings included), each folder gives at most one log line, and a
relabelled series that loads is the original volume.
"""

from __future__ import annotations

import collections
import logging
import pathlib
import re
import shutil
import struct
import warnings

import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.tag import Tag
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import generate_uid

from jaxsr.errors import UserError
from jaxsr.io import dicom
from tests.test_dicom import LPS, SLOPE, INTERCEPT, ds_text, right_handed_affine, write_series

SEED = 23
MUTANTS = 420  # per layout, 42 of each kind (every NONSENSE entry at least once): about 5 s
KINDS = ("bytes", "header-bytes", "delete", "nonsense", "truncate", "drop-file", "stray-file",
         "series-uid", "series-move", "series-turn")
SHAPE = (6, 5, 3, 2)
AFFINE = right_handed_affine(spacing=(1.4, 1.6, 7.5))

# Values that parse but make no sense, or that no reader here can follow.
NONSENSE = [
    ("ImagePositionPatient", ["nan", "0", "0"]), ("ImagePositionPatient", ["1e308", "1e308", "0"]),
    ("ImagePositionPatient", ["1", "2"]), ("ImagePositionPatient", ["abc", "0", "0"]),
    ("ImagePositionPatient", ["0", "0", "0"]), ("ImagePositionPatient", ["-31.5", "47.25", "12.25"]),
    ("ImageOrientationPatient", ["0", "0", "0", "0", "0", "0"]), ("ImageOrientationPatient", ["1", "0", "0", "1", "0", "0"]),
    ("ImageOrientationPatient", ["0", "1", "0", "1", "0", "0"]), ("PixelSpacing", ["0", "1"]),
    ("PixelSpacing", ["-1.5", "1.25"]), ("PixelSpacing", ["inf", "1"]), ("PixelSpacing", ["3.0", "1.25"]),
    ("Rows", 0), ("Rows", 10), ("Columns", 3), ("BitsAllocated", 8), ("BitsAllocated", 13),
    ("PixelRepresentation", 0), ("SamplesPerPixel", 3), ("NumberOfFrames", "4"), ("RescaleSlope", "0"),
    ("RescaleSlope", "1e300"), ("RescaleSlope", "x"), ("RescaleIntercept", "nan"), ("TriggerTime", "inf"),
    ("TriggerTime", "0"), ("TriggerTime", "oops"), ("InstanceNumber", "x"), ("SeriesInstanceUID", "1.2.3.4.5"),
    ("PhotometricInterpretation", "RGB"), ("PhotometricInterpretation", "PALETTE COLOR"),
    ("PixelData", b"\0\1" * 7), ("PixelData", b""),
] + [("TransferSyntaxUID", uid) for uid in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5",
                                           "1.2.3.4.5.6", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")]


def slice_files(folder: pathlib.Path, z: int) -> list[pathlib.Path]:
    """The files of slice position z, as write_series names them (z-major): in one layout a series of its own."""
    return [folder / f"IM{z * SHAPE[3] + t:04d}.dcm" for t in range(SHAPE[3])]


def mutate_series(folder: pathlib.Path, kind: str, rng: np.random.Generator) -> None:
    """Relabels, moves or turns the files of one slice position (by far, or by less than the reader's tolerances)."""
    z = int(rng.integers(0, SHAPE[2]))
    files = slice_files(folder, z)
    lps = LPS @ AFFINE
    normal, in_plane = lps[:3, 2], lps[:3, 0]
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        if kind == "series-uid":
            choice = rng.integers(0, 3) if i == 0 else choice
            if i == 0:
                other = pydicom.dcmread(slice_files(folder, (z + 1) % SHAPE[2])[0]).SeriesInstanceUID
                uid = (generate_uid(), other, generate_uid())[choice]  # its own, another slice's, one file's
            if choice == 2 and i > 0:
                continue
            ds.SeriesInstanceUID = uid
        elif kind == "series-move":
            if i == 0:
                along = (-1.0, 1.0, 0.5, 2.0, 0.01, 1e-4, 0.0)[rng.integers(0, 7)]
                shift = along * normal + (0.0, 1e-4, 0.3)[rng.integers(0, 3)] * in_plane
            ds.ImagePositionPatient = ds_text(np.array([float(v) for v in ds.ImagePositionPatient]) + shift, 6)
        else:  # series-turn: about the in-plane row direction
            if i == 0:
                angle = (1e-6, 1e-3, 0.05, np.pi / 2)[rng.integers(0, 4)]
                axis = in_plane / np.linalg.norm(in_plane)
                k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
                turn = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k  # Rodrigues
            cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
            ds.ImageOrientationPatient = ds_text(np.concatenate([turn @ cosines[:3], turn @ cosines[3:]]), 8)
        ds.save_as(path)


def pixel_offset(raw: bytes) -> int:
    """Where the PixelData element starts (its tag, explicit VR little endian)."""
    return raw.rindex(b"\xe0\x7f\x10\x00OW")


def mutate(folder: pathlib.Path, kind: str, rng: np.random.Generator, n: int) -> None:
    """Mutant `n` of `kind` (the nonsense values are taken in turn, so each is tried)."""
    files = sorted(folder.iterdir())
    victim = files[rng.integers(0, len(files))]
    raw = bytearray(victim.read_bytes())
    if kind == "bytes":
        for _ in range(rng.integers(1, 6)):
            raw[rng.integers(0, len(raw))] = rng.integers(0, 256)
    elif kind == "header-bytes":
        end = pixel_offset(raw) + 12
        for _ in range(rng.integers(1, 6)):
            raw[rng.integers(128, end)] = rng.integers(0, 256)
    elif kind == "truncate":
        raw = raw[: rng.integers(0, len(raw))]
    elif kind == "drop-file":
        victim.unlink()
        return
    elif kind == "stray-file":
        size = int(rng.integers(0, 400))
        stray = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        if rng.integers(0, 2) and size > 132:
            stray[128:132] = b"DICM"  # looks like DICOM, is not
        (folder / f"stray{rng.integers(0, 10**6)}.dcm").write_bytes(bytes(stray))
        return
    else:
        ds = pydicom.dcmread(victim)
        if kind == "delete":
            elements = [e.keyword for e in ds if e.keyword] + ["TransferSyntaxUID"]
            keyword = elements[rng.integers(0, len(elements))]
            delattr(ds.file_meta if keyword == "TransferSyntaxUID" else ds, keyword)
        else:
            keyword, value = NONSENSE[n % len(NONSENSE)]
            if keyword == "TransferSyntaxUID":
                ds.file_meta.TransferSyntaxUID = value
            else:
                set_raw(ds, keyword, value)
        # Written as it was encoded (explicit VR little endian), whatever the meta now says.
        head, body = DicomBytesIO(), DicomBytesIO()
        head.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(head, ds.file_meta, enforce_standard=False)
        body.is_little_endian, body.is_implicit_VR = True, False
        write_dataset(body, ds)
        victim.write_bytes(head.getvalue() + body.getvalue())
        return
    victim.write_bytes(bytes(raw))


def set_raw(ds: pydicom.Dataset, keyword: str, value) -> None:
    """Sets element `keyword` to `value` as stored bytes, past pydicom's own checks of the value."""
    tag = Tag(keyword)
    vr = dictionary_VR(tag)
    if isinstance(value, bytes):
        stored, vr = value, "OW"
    elif isinstance(value, int):
        stored = struct.pack("<H", value)
    else:
        text = "\\".join(value) if isinstance(value, list) else value
        stored = text.encode("ascii")
        stored += b" " * (len(stored) % 2)
    ds[tag] = RawDataElement(tag, vr, len(stored), stored, 0, False, True)


def reason(message: str, folder: pathlib.Path) -> str:
    """The kind of problem: the message after the path, up to its first detail."""
    problem = re.sub(rf"^{re.escape(str(folder))}(/[^:]+)?: ", "", message)
    problem = re.sub(r"^holds \d+ DICOM series that are not one stack, ", "not one stack, ", problem)
    return re.split(r" \(|: | '| \d| -?[\d.]+", problem, maxsplit=1)[0] or problem


def assert_usable(volume) -> None:
    assert volume.data.dtype == np.float32 and volume.data.ndim in (3, 4) and volume.n_slices >= 2
    assert np.all(np.isfinite(volume.data))
    assert np.all(np.isfinite(volume.affine)) and abs(np.linalg.det(volume.affine[:3, :3])) > 1e-12
    spacing = np.asarray(volume.spacing)
    assert np.all(np.isfinite(spacing)) and np.all(spacing > 0)


@pytest.mark.parametrize("series_per_slice", [False, True], ids=["one-series", "series-per-slice"])
def test_every_mutant_is_a_usable_volume_or_one_error_line(tmp_path, capfd, caplog, series_per_slice):
    caplog.set_level(logging.DEBUG, logger="jaxsr")
    rng = np.random.default_rng(SEED)
    raw = rng.integers(-200, 1500, SHAPE).astype(np.int16)
    source = tmp_path / "source"
    write_series(source, raw, AFFINE, slope=SLOPE, intercept=INTERCEPT, series_per_slice=series_per_slice)
    original_volume = dicom.load_series(source)
    original = original_volume.data
    capfd.readouterr()
    outcomes = collections.Counter()
    # Writing a mutant (pydicom told to set nonsense) warns; reading it must not.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
        try:
            for i in range(MUTANTS):
                kind = KINDS[i % len(KINDS)]
                folder = tmp_path / f"m{i:03d}_{kind}"
                shutil.copytree(source, folder)
                if kind.startswith("series-"):
                    mutate_series(folder, kind, rng)
                else:
                    mutate(folder, kind, rng, i // len(KINDS))
                caplog.clear()
                try:
                    volume = dicom.load_series(folder)
                except UserError as e:
                    message = str(e)
                    assert "\n" not in message and message.startswith(f"{folder}"), message
                    outcomes[kind, "refused", reason(message, folder)] += 1
                else:
                    # Fewer bytes or files can never hold the whole series.
                    assert kind not in ("truncate", "drop-file"), folder
                    assert_usable(volume)
                    if kind == "bytes" and volume.data.shape == SHAPE:  # only a few voxels can change
                        assert np.count_nonzero(volume.data != original) <= 5, folder
                    if kind.startswith("series-"):  # loaded: relabelled, or moved or turned within tolerance
                        np.testing.assert_array_equal(volume.data, original)
                    if kind == "series-uid":  # nothing moved: the same geometry too
                        np.testing.assert_array_equal(volume.affine, original_volume.affine)
                    outcomes[kind, "loaded", ""] += 1
                log_lines = [r.getMessage() for r in caplog.records if r.name.startswith("jaxsr")]
                assert len(log_lines) <= 1 and all("\n" not in line for line in log_lines), log_lines
                shutil.rmtree(folder)
        finally:
            pydicom_config.settings.writing_validation_mode = None
    assert capfd.readouterr().err == ""

    for (kind, outcome, why), n in sorted(outcomes.items()):
        print(f"{n:4d} {kind:13s} {outcome:8s} {why}")
    by_kind = collections.Counter()
    for (kind, outcome, _), n in outcomes.items():
        by_kind[kind, outcome] += n
    per_kind = MUTANTS // len(KINDS)
    assert by_kind["truncate", "refused"] == by_kind["drop-file", "refused"] == per_kind
    assert by_kind["stray-file", "refused"] == per_kind  # a stray file is never part of the series
    assert by_kind["bytes", "loaded"] > 0 and by_kind["header-bytes", "refused"] > 0
    assert by_kind["delete", "loaded"] > 0 and by_kind["delete", "refused"] > 0
    for kind in ("series-uid", "series-move", "series-turn"):
        assert by_kind[kind, "loaded"] > 0 and by_kind[kind, "refused"] > 0, kind
    reasons = {why for (_, outcome, why) in outcomes if outcome == "refused"}
    expected = {"unreadable DICOM", "not a DICOM file", "compressed with JPEG-LS Lossless Image Compression",
                "not one stack, two series at one slice position"}
    if series_per_slice:
        expected |= {"not one stack, different orientations", "not one stack, different frame counts",
                     "not one stack, uneven slice gaps"}
    else:
        expected |= {"missing frames", "uneven slice gaps"}
    assert expected <= reasons, reasons
