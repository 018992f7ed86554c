"""DICOM cine series as input: a folder of single-frame DICOM files read as one Volume.

A series folder holds one file per slice and frame (DICOM Part 10 files: a
128-byte preamble, then 'DICM'). Its files are every regular file directly in
the folder except hidden ones, a DICOMDIR index, NIfTI files (inputs of their
own) and jaxsr's temporaries; each must be a DICOM file. One folder is one
input, one output and one manifest key: one volume.

Its files may be of one series (SeriesInstanceUID) or of several that make one
stack, as cine short-axis exports often have it (one series per slice
position, each acquired in its own breath-hold, holding all its frames). The
files of several series are read as one series with all those files would be,
once the series are seen to be one stack: every series has the orientation
(within 1e-4 per direction cosine), Rows x Columns and PixelSpacing of the
series whose orientation most files share, no series has a slice at another
series' slice position, every series has as many frames per slice position as
most series, and the slice positions of all of them are one even grid (as
below). Otherwise one line names the folder, what differs and two of the series
(by SeriesNumber and SeriesDescription where those tell the folder's series
apart, else by SeriesInstanceUID, each with a file name): a localizer or a
long-axis series beside short-axis ones, a repeated slice, a missing one.
Frames are matched by their order at each slice position, not by equal trigger
times, which differ between breath-holds.

Array layout, the same as nibabel's and dcm2niix's: a file's pixel array
(rows, columns) becomes data[x, y] with x = column index and y = row index, so
that array axes 0 and 1 are in-plane and axis 2 is through-plane, 4D (x, y, z, t).
In DICOM's patient coordinates (LPS), with ImageOrientationPatient = (row
cosines r, column cosines c) and PixelSpacing = (row spacing dr, column
spacing dc): voxel (x, y, z) lies at P0 + x·dc·r + y·dr·c + z·s, where P0 is
the first slice's ImagePositionPatient and s the step between slice
positions. The NIfTI affine is that, with its first two rows negated (RAS).

Slices are sorted by ImagePositionPatient projected on the slice normal r × c,
so the slice step points along the normal. The step comes from the positions
(not SliceThickness, which is the excitation thickness, not the spacing), and
every position must lie on the even grid from the first to the last slice
within 1e-3 of the step plus the rounding of the decimal strings: half a unit
in the writer's last decimal (the most decimals seen in the series; "12.5" or
"0" beside "3.125" lost nothing), per coordinate, twice (two positions make
the step). Files whose positions agree within that rounding (plus 0.1 µm) are
one slice. Frames at a slice are ordered by TriggerTime when every file has it,
else by TemporalPositionIdentifier, else by InstanceNumber; pixdim[4] is the
frame interval from TriggerTime (ms) in seconds: the median over slice
positions of each position's mean TriggerTime step (xyzt units mm and sec, as
the NIfTI inputs jaxsr writes itself), or 0 (unknown) without TriggerTime. A
series with one frame per slice is a 3D volume.

RescaleSlope/RescaleIntercept are applied per file (data float32), so series
rescaled differently still give one volume. When every file stores integers
with the same slope and intercept the header keeps that dtype and scaling, so
`--keep-dtype` writes the stored values back.

Refused, each with one VolumeError line naming the file (or the folder for
what is a property of the whole series): files that are not DICOM or that
pydicom cannot parse, missing or malformed ImageOrientationPatient,
ImagePositionPatient or PixelSpacing, mixed orientations, pixel spacings or
rows/columns in one series (several series: above), uneven slice gaps (a
missing slice among them), fewer frames at one slice than at the others, two
files at the same position and time, multi-frame (enhanced) files, colour
images, a single slice, and compressed transfer syntaxes that no installed
pydicom plugin decodes (the message names the plugins pydicom lists for it).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import pathlib
import struct
import zlib

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError

from jaxsr.errors import VolumeError
from jaxsr.io import nibabel_notes
from jaxsr.io.atomic import TEMP_MARKER
from jaxsr.io.nibabel_notes import one_line
from jaxsr.io.nifti import Volume, geometry_header, is_nifti_path

logger = logging.getLogger(__name__)

DICOM_SUFFIX = ".dcm"
DICOMDIR = "DICOMDIR"  # a media index, not an image: skipped in a series folder
PREAMBLE_BYTES = 128
MAGIC = b"DICM"
GAP_RTOL = 1e-3  # slice positions off the even grid by more than this fraction of the step are refused
SAME_SLICE_MM = 1e-4  # positions closer than this (plus the strings' rounding) are one slice
ORIENTATION_ATOL = 1e-4  # direction cosines differing by more than this are another orientation
UNIT_ATOL = 1e-3  # direction cosines must be unit vectors, orthogonal, to this

# What pydicom (and numpy under it) raise on malformed files: from pydicom's
# source and from fuzzing this reader (tests/test_dicom_fuzz.py). Programming
# errors (AttributeError, NameError, ...) are left to surface; pydicom's pixel
# decoding alone uses AttributeError for a missing element (caught there).
_PYDICOM_ERRORS = (InvalidDicomError, BytesLengthException, ValueError, TypeError, KeyError, IndexError,
                   struct.error, EOFError, OSError, NotImplementedError, RuntimeError, zlib.error, ArithmeticError,
                   MemoryError)

nibabel_notes.collect_logger("pydicom")


def has_dicom_magic(path: str | os.PathLike) -> bool:
    """Whether `path` is a DICOM Part 10 file: 'DICM' after the 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            f.seek(PREAMBLE_BYTES)
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def series_files(folder: str | os.PathLike) -> list[pathlib.Path]:
    """The files a series folder is read from (see the module docstring), sorted by name."""
    folder = pathlib.Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise VolumeError(folder, f"cannot list the folder ({one_line(e.strerror or e)})") from None
    names = [e.name for e in entries if _is_candidate(e)]
    return [folder / name for name in sorted(names)]


def _is_candidate(entry: os.DirEntry) -> bool:
    name = entry.name
    if name.startswith(".") or TEMP_MARKER in name or name == DICOMDIR or is_nifti_path(name):
        return False
    try:
        return entry.is_file()
    except OSError:
        return False


def holds_dicom(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a DICOM file directly: a .dcm name, else the 'DICM' magic.

    Cheap: names first (no I/O), then 132 bytes of each other file until one is DICOM.
    """
    try:
        files = series_files(folder)
    except VolumeError:
        return False
    return any(f.name.lower().endswith(DICOM_SUFFIX) for f in files) or any(has_dicom_magic(f) for f in files)


def series_sha256(folder: str | os.PathLike) -> str:
    """A digest of the series: its files' names and contents, in name order (stable for resume)."""
    digest = hashlib.sha256()
    for path in series_files(folder):
        name = path.name.encode("utf-8", "surrogateescape")
        digest.update(struct.pack("<Q", len(name)) + name)
        with open(path, "rb") as f:
            digest.update(struct.pack("<Q", os.fstat(f.fileno()).st_size))
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass
class _Image:
    """What one file contributes: its place in the series and its rescaled pixels (rows, columns)."""

    path: pathlib.Path
    series_uid: str | None
    series_number: str | None
    series_description: str | None
    orientation: np.ndarray  # (6,) row cosines, column cosines
    position: np.ndarray  # (3,) LPS mm
    position_text: tuple[str, ...]  # ImagePositionPatient's decimal strings, as written
    spacing: np.ndarray  # (2,) row spacing, column spacing
    trigger_time: float | None
    temporal_position: int | None
    instance: int | None
    stored_dtype: np.dtype
    slope: float
    intercept: float
    pixels: np.ndarray  # float32 (rows, columns), rescaled


def load_series(folder: str | os.PathLike) -> Volume:
    """Reads the DICOM series in `folder` as one (x, y, z) or (x, y, z, t) Volume; see the module docstring.

    Every problem raises one VolumeError line naming the file or the folder.
    What pydicom reports while reading (odd values it accepts) becomes one
    warning line for the folder, or a debug line when it is refused anyway.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise VolumeError(folder, "no such folder")
    def read(notes):
        files = series_files(folder)
        if not files:
            raise VolumeError(folder, "no DICOM files in the folder")
        return _assemble(folder, [_read_file(path) for path in files])

    return nibabel_notes.read_noting(folder, read, _log_notes)


def _log_notes(folder: pathlib.Path, notes: list[tuple[int, str]], level: int) -> None:
    # pydicom logs and warns the same text (misc.warn_and_log): keep one of each.
    said = dict.fromkeys(_without_category(message) for _, message in notes)
    if said:
        logger.log(level, "%s: DICOM header problems: %s", folder, one_line("; ".join(said)))


def _without_category(message: str) -> str:
    head, _, rest = message.partition(": ")
    return rest if rest and head.endswith("Warning") else message


# ----------------------------------------------------------------------------
# One file


def _read_file(path: pathlib.Path) -> _Image:
    if not has_dicom_magic(path):
        raise VolumeError(path, f"not a DICOM file (no '{MAGIC.decode()}' after the {PREAMBLE_BYTES}-byte preamble)")
    try:
        ds = pydicom.dcmread(path)
        return _image(path, ds)
    except VolumeError:
        raise
    except _PYDICOM_ERRORS as e:
        raise VolumeError(path, f"unreadable DICOM ({type(e).__name__}: {one_line(e)})") from None


def _image(path: pathlib.Path, ds: pydicom.Dataset) -> _Image:
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "") and int(frames) != 1:
        raise VolumeError(path, f"a multi-frame (enhanced) DICOM file ({int(frames)} frames); "
                                "jaxsr reads series of single-frame files")
    samples = ds.get("SamplesPerPixel")
    if samples not in (None, "") and int(samples) != 1:
        raise VolumeError(path, f"a colour image (SamplesPerPixel {int(samples)}); expected a greyscale MR image")
    if "PixelData" not in ds:
        raise VolumeError(path, "no pixel data (not an image, or a truncated file)")
    orientation = _numbers(path, ds, "ImageOrientationPatient", 6)
    row, column = orientation[:3], orientation[3:]
    if not (np.allclose([np.linalg.norm(row), np.linalg.norm(column)], 1.0, atol=UNIT_ATOL, rtol=0)
            and abs(float(row @ column)) <= UNIT_ATOL):
        raise VolumeError(path, f"ImageOrientationPatient {_values(orientation)} is not two orthogonal unit vectors")
    position = _numbers(path, ds, "ImagePositionPatient", 3)
    spacing = _numbers(path, ds, "PixelSpacing", 2)
    if not np.all(spacing > 0):
        raise VolumeError(path, f"PixelSpacing {_values(spacing)} is not positive")
    rows, columns = _count(path, ds, "Rows"), _count(path, ds, "Columns")
    slope = _optional_number(path, ds, "RescaleSlope", 1.0)
    intercept = _optional_number(path, ds, "RescaleIntercept", 0.0)
    if slope == 0:
        raise VolumeError(path, "RescaleSlope is 0")
    stored = _pixels(path, ds)
    if stored.shape != (rows, columns):
        raise VolumeError(path, f"pixel array {stored.shape} does not match Rows x Columns = {rows} x {columns}")
    pixels = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    if not np.all(np.isfinite(pixels)):
        raise VolumeError(path, "rescaled pixel values are not finite")
    uid, number, description = (ds.get(keyword) for keyword in ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription"))
    return _Image(path, str(uid) if uid else None, None if number in (None, "") else str(number),
                  one_line(description, limit=40) if description else None, orientation, position,
                  _texts(ds, "ImagePositionPatient"),
                  spacing, _optional_number(path, ds, "TriggerTime", None), _optional_int(ds, "TemporalPositionIdentifier"),
                  _optional_int(ds, "InstanceNumber"), stored.dtype, slope, intercept, pixels)


def _pixels(path: pathlib.Path, ds: pydicom.Dataset) -> np.ndarray:
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise VolumeError(path, f"compressed with {syntax.name} ({syntax}), which pydicom cannot decode") from None
        if not decoder.is_available:
            # pydicom's own list, as "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"
            plugins = "; ".join(decoder.missing_dependencies)
            raise VolumeError(path, f"compressed with {syntax.name} ({syntax}), which no installed pydicom plugin "
                                    f"decodes; pydicom's plugins for it: {plugins}")
    try:
        return np.asarray(ds.pixel_array)
    except AttributeError as e:  # pydicom's way of saying a required pixel module element is missing
        raise VolumeError(path, f"unreadable pixel data ({one_line(e)})") from None


def _numbers(path: pathlib.Path, ds: pydicom.Dataset, keyword: str, count: int) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or value == "":
        raise VolumeError(path, f"no {keyword}")
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        numbers = np.array([float(v) for v in values], np.float64)
    except (TypeError, ValueError):
        text = one_line("\\".join(str(v) for v in values), limit=80)  # as DICOM writes it, backslash-separated
        raise VolumeError(path, f"{keyword} '{text}' is not {count} numbers") from None
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise VolumeError(path, f"{keyword} {_values(numbers)} is not {count} finite numbers")
    return numbers


def _optional_number(path: pathlib.Path, ds: pydicom.Dataset, keyword: str, default: float | None) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VolumeError(path, f"{keyword} '{one_line(value, limit=80)}' is not a number") from None
    if not np.isfinite(number):
        raise VolumeError(path, f"{keyword} {number} is not a finite number")
    return number


def _optional_int(ds: pydicom.Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    return None if value is None or value == "" else int(value)


def _count(path: pathlib.Path, ds: pydicom.Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "" or int(value) < 1:
        raise VolumeError(path, f"{keyword} is missing or not positive")
    return int(value)


def _texts(ds: pydicom.Dataset, keyword: str) -> tuple[str, ...]:
    value = ds[keyword].value
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return tuple(str(getattr(v, "original_string", None) or v).strip() for v in values)


def _rounding(texts: list[str]) -> float:
    """How far the decimal strings `texts` may be from the values they were written from: the largest half unit.

    A writer rounds to a fixed number of decimals, the most seen among them (a
    shorter string, "12.5" or "0", lost nothing), unless the 16-character limit
    of a DICOM decimal string cut it shorter: then its own last digit counts.
    """
    digits = [_decimals(text) for text in texts]
    most = max((decimals for decimals, _ in digits), default=0)
    halves = []
    for text, (decimals, exponent) in zip(texts, digits):
        cut = len(text) >= 16 or exponent != 0  # at the length limit, or in exponent form: its own last digit
        halves.append(0.5 * 10.0 ** (exponent - (decimals if cut else most)))
    return max(halves, default=0.0)


def _decimals(text: str) -> tuple[int, int]:
    """(digits after the point, the exponent) of a decimal string."""
    mantissa, _, exponent = text.lower().partition("e")
    try:
        shift = int(exponent) if exponent else 0
    except ValueError:
        shift = 0
    return len(mantissa.partition(".")[2]), shift


def _values(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


# ----------------------------------------------------------------------------
# The series


def _assemble(folder: pathlib.Path, images: list[_Image]) -> Volume:
    series: dict[str | None, list[_Image]] = {}
    for image in images:
        series.setdefault(image.series_uid, []).append(image)
    if len(series) > 1:
        _check_one_stack(folder, series, images)
    # One series, or several that make one stack: the same path, on all the files.
    first = images[0]
    for image in images[1:]:
        _check_same_grid(image, series[image.series_uid][0])
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    rounding = _rounding([text for image in images for text in image.position_text])
    slices = _slices(folder, images, normal, rounding)
    if len(slices) < 2:
        raise VolumeError(folder, f"a single slice position ({len(images)} file(s)); through-plane interpolation needs at least 2")
    positions = np.stack([s[0].position for s in slices])
    step = _even_step(folder, slices, positions, rounding)
    frames = _frames(folder, slices)
    data = np.stack([np.stack([image.pixels.T for image in frame_images], axis=-1) for frame_images in frames], axis=2)
    if data.shape[3] == 1:
        data = data[..., 0]
    affine = np.eye(4)
    affine[:3, 0] = row * first.spacing[1]  # x: along a row, column spacing apart
    affine[:3, 1] = column * first.spacing[0]  # y: down a column, row spacing apart
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    affine[:2] *= -1  # LPS -> RAS
    return Volume(np.ascontiguousarray(data, np.float32), affine, _header(images, affine, data.shape, frames),
                  str(folder))


def _check_same_grid(image: _Image, first: _Image) -> None:
    if not np.allclose(image.orientation, first.orientation, atol=ORIENTATION_ATOL, rtol=0):
        raise VolumeError(image.path, f"ImageOrientationPatient {_values(image.orientation)} differs from "
                                      f"{first.path.name}'s {_values(first.orientation)}: mixed orientations in one series")
    if image.pixels.shape != first.pixels.shape:
        raise VolumeError(image.path, f"Rows x Columns {image.pixels.shape[0]} x {image.pixels.shape[1]} differ from "
                                      f"{first.path.name}'s {first.pixels.shape[0]} x {first.pixels.shape[1]}")
    if not np.allclose(image.spacing, first.spacing, rtol=1e-4, atol=0):
        raise VolumeError(image.path, f"PixelSpacing {_values(image.spacing)} differs from {first.path.name}'s "
                                      f"{_values(first.spacing)}")


def _slices(folder: pathlib.Path, images: list[_Image], normal: np.ndarray, rounding: float) -> list[list[_Image]]:
    """The images grouped by position (within twice the strings' rounding, per coordinate), in order along the normal."""
    ordered = sorted(images, key=lambda i: (float(i.position @ normal), i.path.name))
    same = 2 * np.sqrt(3) * rounding + SAME_SLICE_MM
    slices: list[list[_Image]] = []
    for image in ordered:
        if slices:
            anchor = slices[-1][0]
            if np.linalg.norm(image.position - anchor.position) <= same:
                slices[-1].append(image)
                continue
            if abs(float((image.position - anchor.position) @ normal)) <= same:
                raise VolumeError(image.path, f"ImagePositionPatient {_values(image.position)} is at the depth of "
                                              f"{anchor.path.name}'s {_values(anchor.position)} but shifted in-plane")
        slices.append([image])
    return slices


@dataclasses.dataclass
class _Grid:
    """Slice positions against the even grid from the first to the last."""

    step: np.ndarray  # (3,) LPS mm
    spacing: float
    tolerance: float
    off: np.ndarray  # (n,) each position's distance from its grid point, mm

    @classmethod
    def fit(cls, positions: np.ndarray, rounding: float) -> _Grid:
        n = len(positions)
        step = (positions[-1] - positions[0]) / (n - 1)
        spacing = float(np.linalg.norm(step))
        off = np.linalg.norm(positions - (positions[0] + np.arange(n)[:, None] * step), axis=1)
        return cls(step, spacing, GAP_RTOL * spacing + 2 * np.sqrt(3) * rounding, off)

    @property
    def even(self) -> bool:
        return bool(self.off.max() <= self.tolerance)

    def describe(self, gaps: np.ndarray) -> str:
        return f"the even {self.spacing:.4g} mm grid of the {len(self.off)} slice positions (tolerance " \
               f"{self.tolerance:.2g} mm; gaps {_values(gaps)} mm)"


def _even_step(folder: pathlib.Path, slices: list[list[_Image]], positions: np.ndarray, rounding: float) -> np.ndarray:
    """The step from slice to slice; every slice must lie on the even grid from the first to the last."""
    grid = _Grid.fit(positions, rounding)
    if not grid.even:
        worst = int(np.argmax(grid.off))
        gaps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        raise VolumeError(slices[worst][0].path, f"uneven slice gaps: this slice is {grid.off[worst]:.3g} mm off "
                                                 f"{grid.describe(gaps)}")
    return grid.step


def _frames(folder: pathlib.Path, slices: list[list[_Image]]) -> list[list[_Image]]:
    """Each slice's images in frame order."""
    counts = [len(s) for s in slices]
    most = max(counts)
    images = [image for s in slices for image in s]
    if most > 1:
        key_name, key = _frame_key(folder, images)
        for i, s in enumerate(slices):
            s.sort(key=lambda image: (key(image), image.path.name))
            for a, b in zip(s, s[1:]):
                if key(a) == key(b):
                    raise VolumeError(b.path, f"the same position and {key_name} ({key(b):g}) as {a.path.name}: "
                                              "a duplicated frame")
    short = [i for i, c in enumerate(counts) if c != most]
    if short:
        i = short[0]
        raise VolumeError(folder, f"missing frames: slice {i} ({slices[i][0].path.name}) has {counts[i]} frame(s), "
                                  f"others {most} ({len(short)} slice(s) short)")
    return slices


def _frame_key(folder: pathlib.Path, images: list[_Image]):
    for name, attribute in (("TriggerTime", "trigger_time"), ("TemporalPositionIdentifier", "temporal_position"),
                            ("InstanceNumber", "instance")):
        if all(getattr(image, attribute) is not None for image in images):
            return name, lambda image, attribute=attribute: getattr(image, attribute)
    raise VolumeError(folder, "several files per slice position but no TriggerTime, TemporalPositionIdentifier "
                              "or InstanceNumber to order them")


def _frame_interval_s(frames: list[list[_Image]]) -> float:
    """The median over slices of the mean TriggerTime step, in seconds; 0 when unknown."""
    if len(frames[0]) < 2 or any(image.trigger_time is None for s in frames for image in s):
        return 0.0
    steps = [(s[-1].trigger_time - s[0].trigger_time) / (len(s) - 1) for s in frames]
    interval = float(np.median(steps)) / 1000.0
    return interval if np.isfinite(interval) and interval > 0 else 0.0


def _header(images: list[_Image], affine: np.ndarray, shape: tuple[int, ...], frames: list[list[_Image]]) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    header["qform_code"] = header["sform_code"] = 1  # scanner: DICOM patient coordinates
    if len(shape) == 4:
        header.set_data_shape(shape)
        header.set_zooms((1.0, 1.0, 1.0, _frame_interval_s(frames)))
    header = geometry_header(header, affine, shape)
    header["descrip"] = b"jaxsr: DICOM series"
    first = images[0]
    uniform = all(i.stored_dtype == first.stored_dtype and i.slope == first.slope and i.intercept == first.intercept
                  for i in images)
    if uniform and first.stored_dtype.kind in "iu" and first.stored_dtype.itemsize <= 4:
        header.set_data_dtype(first.stored_dtype)
        header.set_slope_inter(first.slope, first.intercept)
    return header


# ----------------------------------------------------------------------------
# Several series in one folder: one stack, or refused


def _check_one_stack(folder: pathlib.Path, series: dict[str | None, list[_Image]], images: list[_Image]) -> None:
    """Refuses series that are not slices of one stack, in one line naming two of them.

    The reference is the series whose orientation most files share (a localizer
    beside a cine is then the odd one out); every series must have its
    orientation, Rows x Columns and PixelSpacing (first files compared), no
    slice position of another series, all their positions one even grid, and
    as many frames per slice position as most series (positions first: a file
    off its series' position is a gap, not a frame count). What is left (a
    series at odds with itself) the one-series path finds, naming the file.
    """
    names = _series_names(series)
    firsts = {uid: group[0] for uid, group in series.items()}
    orientations = np.stack([image.orientation for image in images])
    support = {uid: int(np.sum(np.all(np.abs(orientations - first.orientation) <= ORIENTATION_ATOL, axis=1)))
               for uid, first in firsts.items()}
    reference = max(support, key=support.get)  # the first of the most supported
    ref = firsts[reference]

    def refuse(kind: str, detail: str) -> None:
        raise VolumeError(folder, f"holds {len(series)} DICOM series that are not one stack, {kind}: {detail}")

    for uid, first in firsts.items():
        if not np.allclose(first.orientation, ref.orientation, atol=ORIENTATION_ATOL, rtol=0):
            refuse("different orientations", f"{names[uid]} has ImageOrientationPatient {_values(first.orientation)}, "
                                              f"{names[reference]} {_values(ref.orientation)}")
    for uid, first in firsts.items():
        if first.pixels.shape != ref.pixels.shape:
            refuse("different Rows x Columns", f"{names[uid]} has {first.pixels.shape[0]} x {first.pixels.shape[1]}, "
                                                f"{names[reference]} {ref.pixels.shape[0]} x {ref.pixels.shape[1]}")
    for uid, first in firsts.items():
        if not np.allclose(first.spacing, ref.spacing, rtol=1e-4, atol=0):
            refuse("different PixelSpacing", f"{names[uid]} has {_values(first.spacing)}, "
                                              f"{names[reference]} {_values(ref.spacing)}")

    normal = np.cross(ref.orientation[:3], ref.orientation[3:])
    rounding = _rounding([text for image in images for text in image.position_text])
    same = 2 * np.sqrt(3) * rounding + SAME_SLICE_MM
    slices = {uid: _slices(folder, group, normal, rounding) for uid, group in series.items()}
    stack = sorted(((float(s[0].position @ normal), s[0].path.name, uid) for uid, in_series in slices.items()
                    for s in in_series))
    anchors = {(uid, s[0].path.name): s[0] for uid, in_series in slices.items() for s in in_series}
    for (depth_a, name_a, a), (depth_b, _, b) in zip(stack, stack[1:]):
        if a != b and depth_b - depth_a <= same:
            refuse("two series at one slice position", f"{names[a]} and {names[b]} both have a slice at "
                                                        f"{_values(anchors[a, name_a].position)}")

    positions = np.stack([anchors[uid, name].position for _, name, uid in stack])
    grid = _Grid.fit(positions, rounding)
    if not grid.even:
        gaps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        i = int(np.argmax(np.abs(gaps - grid.spacing)))  # the most uneven gap, between the series named
        a, b = stack[i][2], stack[i + 1][2]
        if a == b:
            return  # within one series: the one-series path names the file off the grid
        refuse("uneven slice gaps", f"{names[a]} and {names[b]} are {gaps[i]:.4g} mm apart, against "
                                     f"{grid.describe(gaps)}")

    counts = {uid: {len(s) for s in in_series} for uid, in_series in slices.items()}
    uniform = {uid: min(c) for uid, c in counts.items() if len(c) == 1}  # the others: the one-series path
    if uniform:
        most = max(collections.Counter(uniform.values()).items(), key=lambda item: item[1])[0]
        typical = next(uid for uid, count in uniform.items() if count == most)
        for uid, count in uniform.items():
            if count != most:
                refuse("different frame counts", f"{names[uid]} has {count} frame(s) per slice position, "
                                                  f"{names[typical]} {most}")


def _series_names(series: dict[str | None, list[_Image]]) -> dict[str | None, str]:
    """How a message names each series: "series 7 'SA 3' (IM0000.dcm)" by SeriesNumber (and SeriesDescription)
    where those tell the folder's series apart, else by SeriesInstanceUID; with the name of its first file."""
    labels = {uid: (group[0].series_number, group[0].series_description) for uid, group in series.items()}
    by_number = all(number is not None for number, _ in labels.values()) and len(set(labels.values())) == len(labels)
    names = {}
    for uid, (number, description) in labels.items():
        if by_number:
            who = f"series {number}" + (f" '{description}'" if description else "")
        else:
            who = f"series {uid or '(no SeriesInstanceUID)'}"
        names[uid] = f"{who} ({series[uid][0].path.name})"
    return names
