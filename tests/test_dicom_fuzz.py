"""Fuzzing the DICOM series reader: every mutated series is a usable Volume or one VolumeError line naming it.

Mutants of a small oblique cine series (6 files: 3 slices x 2 frames, int16,
rescaled): random bytes anywhere in a file, random bytes in its header, a
deleted element, an element set to a nonsense value, a truncated file, a
missing file, a stray non-DICOM file. Nothing may reach stderr (pydicom's
logger and warnings included), and each series gives at most one log line.
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

from jaxsr.errors import UserError
from jaxsr.io import dicom
from tests.test_dicom import SLOPE, INTERCEPT, right_handed_affine, write_series

SEED = 23
MUTANTS = 420  # 60 of each kind (every NONSENSE entry at least once): about 3 s
KINDS = ("bytes", "header-bytes", "delete", "nonsense", "truncate", "drop-file", "stray-file")
SHAPE = (6, 5, 3, 2)

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
    return re.split(r" \(|: | '| \d| -?[\d.]+", problem, maxsplit=1)[0] or problem


def assert_usable(volume) -> None:
    assert volume.data.dtype == np.float32 and volume.data.ndim in (3, 4) and volume.n_slices >= 2
    assert np.all(np.isfinite(volume.data))
    assert np.all(np.isfinite(volume.affine)) and abs(np.linalg.det(volume.affine[:3, :3])) > 1e-12
    spacing = np.asarray(volume.spacing)
    assert np.all(np.isfinite(spacing)) and np.all(spacing > 0)


def test_every_mutant_is_a_usable_volume_or_one_error_line(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="jaxsr")
    rng = np.random.default_rng(SEED)
    raw = rng.integers(-200, 1500, SHAPE).astype(np.int16)
    source = tmp_path / "source"
    write_series(source, raw, right_handed_affine(spacing=(1.4, 1.6, 7.5)), slope=SLOPE, intercept=INTERCEPT)
    original = dicom.load_series(source).data
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
    reasons = {why for (_, outcome, why) in outcomes if outcome == "refused"}
    assert {"unreadable DICOM", "not a DICOM file", "missing frames", "uneven slice gaps", "compressed with JPEG-LS Lossless Image Compression", "holds"} <= reasons, reasons
