"""Fuzzing the NIfTI reader: every mutated file is a usable Volume or one UserError line naming it.

Mutants of a small oblique 4D file (int16 and float32): random header bytes,
random data bytes, truncations, as .nii and .nii.gz, plus corrupted and cut gzip
streams. Nothing may reach stderr (nibabel's own text included), and each file
gives at most one log line. tests/test_bad_inputs.py runs two of these mutants
through `jaxsr upsample` in a real process.
"""

from __future__ import annotations

import collections
import gzip
import logging
import re

import numpy as np
import pytest

from jaxsr.errors import UserError
from jaxsr.io import nifti
from tests.test_nifti import oblique_affine, write_nifti

SEED = 17
MUTANTS_PER_SOURCE = 300  # 600 in all: about 1 s
HEADER_BYTES = 348
DATA_START = 352  # nibabel writes no extensions: vox_offset 352
KINDS = ("header", "data", "truncate", "gzip-stream", "gzip-cut")


def source_files(folder) -> dict[str, bytes]:
    """A 12x10x4x3 oblique cine as int16 (scaled) and as float32, uncompressed bytes."""
    rng = np.random.default_rng(SEED)
    raw = rng.integers(0, 400, (12, 10, 4, 3)).astype(np.int16)
    out = {}
    for name, data in (("int16", raw), ("float32", raw.astype(np.float32) / 7.0)):
        path = write_nifti(folder / f"source_{name}.nii", data, oblique_affine(spacing=(1.4, 1.6, 8.0), seed=3))
        out[name] = path.read_bytes()
    return out


def mutate(raw: bytes, kind: str, rng: np.random.Generator) -> tuple[str, bytes]:
    """(suffix, file bytes) of one mutant of `raw` (an uncompressed .nii)."""
    b = bytearray(raw)
    if kind == "header":
        for _ in range(rng.integers(1, 5)):
            b[rng.integers(0, HEADER_BYTES)] = rng.integers(0, 256)
    elif kind == "data":
        for _ in range(rng.integers(1, 9)):
            b[rng.integers(DATA_START, len(b))] = rng.integers(0, 256)
    elif kind == "truncate":
        b = b[: rng.integers(0, len(b))]
    if kind in ("header", "data", "truncate"):
        gz = bool(rng.integers(0, 2))
        return (".nii.gz", gzip.compress(bytes(b), mtime=0)) if gz else (".nii", bytes(b))
    stream = bytearray(gzip.compress(raw, mtime=0))
    if kind == "gzip-stream":  # anywhere, the 10-byte gzip header and the CRC trailer included
        for _ in range(rng.integers(1, 4)):
            stream[rng.integers(0, len(stream))] = rng.integers(0, 256)
        return ".nii.gz", bytes(stream)
    return ".nii.gz", bytes(stream[: rng.integers(0, len(stream))])


def reason(message: str, path) -> str:
    """The kind of problem: the message after the path, up to its first detail."""
    problem = message.removeprefix(f"{path}: ")
    return re.split(r" \(|: | =| \d", problem, maxsplit=1)[0] or problem


def assert_usable(volume: nifti.Volume) -> None:
    assert volume.data.dtype == np.float32 and volume.data.ndim in (3, 4) and volume.n_slices >= 2
    assert np.all(np.isfinite(volume.data))
    assert np.all(np.isfinite(volume.affine)) and abs(np.linalg.det(volume.affine[:3, :3])) > 1e-12
    spacing = np.asarray(volume.spacing)
    assert np.all(np.isfinite(spacing)) and np.all(spacing > 0)
    np.testing.assert_allclose(np.linalg.norm(volume.affine[:3, :3], axis=0), spacing, rtol=0.01)


def test_every_mutant_is_a_usable_volume_or_one_error_line(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="jaxsr")
    sources = source_files(tmp_path)
    originals = {name: nifti.load(tmp_path / f"source_{name}.nii").data for name in sources}
    capfd.readouterr()
    rng = np.random.default_rng(SEED)
    outcomes = collections.Counter()
    for name, raw in sources.items():
        for i in range(MUTANTS_PER_SOURCE):
            kind = KINDS[i % len(KINDS)]
            suffix, blob = mutate(raw, kind, rng)
            path = tmp_path / f"{name}_{i:03d}_{kind}{suffix}"
            path.write_bytes(blob)
            caplog.clear()
            try:
                volume = nifti.load(path)
            except UserError as e:
                message = str(e)
                assert "\n" not in message and str(path) in message, message
                outcomes[kind, "refused", reason(message, path)] += 1
            else:
                # A shortened file can never hold what its header describes.
                assert kind not in ("truncate", "gzip-cut"), path
                assert_usable(volume)
                if kind == "data" and name == "int16":  # any bytes are valid int16: only those voxels change
                    changed = np.count_nonzero(volume.data != originals[name])
                    assert changed <= 8, (path, changed)
                outcomes[kind, "loaded", ""] += 1
            log_lines = [r.getMessage() for r in caplog.records if r.name.startswith("jaxsr")]
            assert len(log_lines) <= 1 and all("\n" not in line for line in log_lines), log_lines
            path.unlink()
    assert capfd.readouterr().err == ""  # nibabel's own handler and warnings reached nothing

    for (kind, outcome, why), n in sorted(outcomes.items()):
        print(f"{n:4d} {kind:12s} {outcome:8s} {why}")
    by_kind = collections.Counter()
    for (kind, outcome, _), n in outcomes.items():
        by_kind[kind, outcome] += n
    # Truncations are always refused; int16 data mutations always load; the
    # paths that nibabel's errors take are all exercised.
    assert by_kind["truncate", "loaded"] == by_kind["gzip-cut", "loaded"] == 0
    assert by_kind["data", "loaded"] >= MUTANTS_PER_SOURCE // len(KINDS)
    assert by_kind["header", "loaded"] > 0 and by_kind["header", "refused"] > 0
    reasons = {why for (_, outcome, why) in outcomes if outcome == "refused"}
    assert {"bad NIfTI header", "truncated", "truncated or corrupt compressed data"} <= reasons, reasons


def with_field(raw: bytes, offset: int, dtype, value) -> bytes:
    """`raw` with `value` (as `dtype`) written at byte `offset`."""
    b = bytearray(raw)
    v = np.asarray(value, dtype).tobytes()
    b[offset : offset + len(v)] = v
    return bytes(b)


# Header fields that parse but make no sense, with the reason each must give.
# Offsets from the NIfTI-1 header layout.
NONSENSE = {
    "datatype uint8 for int16 data": ([(70, "<i2", 2), (72, "<i2", 8)], "bytes more than its header describes"),
    "datatype float64 for int16 data": ([(70, "<i2", 64), (72, "<i2", 64)], "truncated: 12x10x4x3 float64"),
    "complex datatype": ([(70, "<i2", 32), (72, "<i2", 64)], "datatype complex64 is not a real-valued intensity image"),
    "unknown datatype": ([(70, "<i2", 132)], r"bad NIfTI header \(data code 132 not recognized\)"),
    "zero pixdim": ([(80, "<f4", 0.0)], r"pixdim\[1:4\] = \(0, 1.6, 8\) mm are not all positive"),
    "negative pixdim": ([(84, "<f4", -1.6)], "are not all positive"),
    "NaN pixdim": ([(88, "<f4", np.nan)], "are not all positive"),
    "NaN frame time": ([(92, "<f4", np.nan)], r"frame time pixdim\[4\]"),
    "NaN in the sform": ([(280, "<f4", np.nan)], "affine is singular or not finite"),
    "absurd dims": ([(42, "<i2", 30000), (44, "<i2", 30000)], "truncated: 30000x30000x4x3 int16 voxels from byte 352 need 21600000352 bytes"),
    "zero dim": ([(44, "<i2", 0)], "empty image"),
    "vox offset inside the header": ([(108, "<f4", 280.0)], "vox offset 280 too low"),
    "vox offset past the end": ([(108, "<f4", 1e6)], "truncated"),
    "huge scl_slope": ([(112, "<f4", 3e38)], "NaN or Inf"),
    "bad magic": ([(344, "S4", b"xyz\0")], "not a NIfTI file"),
    "pair magic": ([(344, "S4", b"ni1\0")], "NIfTI pair header"),
}


@pytest.mark.parametrize("case", NONSENSE)
def test_nonsense_header_is_refused_with_its_reason(tmp_path, case):
    raw = source_files(tmp_path)["int16"]
    fields, expected = NONSENSE[case]
    for offset, dtype, value in fields:
        raw = with_field(raw, offset, dtype, value)
    for suffix, blob in ((".nii", raw), (".nii.gz", gzip.compress(raw))):
        path = tmp_path / f"bad{suffix}"
        path.write_bytes(blob)
        with pytest.raises(UserError) as info:
            nifti.load(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert re.search(expected, message), message


def test_a_repaired_header_loads_with_one_warning_line(tmp_path, caplog, capfd):
    raw = source_files(tmp_path)["int16"]
    path = tmp_path / "repaired.nii"
    path.write_bytes(with_field(with_field(raw, 0, "<i4", 349), 254, "<i2", 514))  # sizeof_hdr, sform_code
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="jaxsr"):
        volume = nifti.load(path)
    assert_usable(volume)
    lines = [r for r in caplog.records if r.name.startswith("jaxsr")]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING, lines
    assert lines[0].getMessage() == (f"{path}: header problems: sizeof_hdr should be 348; "
                                     "set sizeof_hdr to 348; sform_code 514 not valid; setting to 0")
    assert capfd.readouterr().err == ""


def test_pixdim_disagreeing_with_the_sform_loads_on_the_affine_with_one_warning(tmp_path, caplog, capfd):
    # A registration tool may scale the sform and leave pixdim: the affine places the voxels.
    raw = source_files(tmp_path)["int16"]
    path = tmp_path / "rescaled.nii"
    path.write_bytes(with_field(raw, 88, "<f4", 5.0))  # pixdim[3]: 8 mm in the sform, 5 in pixdim
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="jaxsr"):
        volume = nifti.load(path)
    assert_usable(volume)
    # In-plane pixdim agrees with the sform, so its exact float32 value stays; the
    # slice spacing is the sform's 8 mm (to float32 rounding of its entries), not pixdim's 5.
    assert volume.spacing[:2] == tuple(float(np.float32(v)) for v in (1.4, 1.6))
    assert volume.slice_spacing_mm == pytest.approx(8.0, rel=1e-6)
    lines = [r for r in caplog.records if r.name.startswith("jaxsr")]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING, lines
    assert "pixdim[1:4] = (1.4, 1.6, 5) mm but the affine places voxels" in lines[0].getMessage()
    assert "using the affine" in lines[0].getMessage()
    assert capfd.readouterr().err == ""
