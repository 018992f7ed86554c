"""NIfTI volumes with their geometry: one small type, load, atomic save, reslicing.

Slices lie along the third array axis; 4D arrays are (x, y, z, t). The geometry
rule everything downstream relies on: after reslicing along z by a step `s`
(s = 1/k for a factor k, or target_spacing / slice_spacing), output slice j lies
at input slice coordinate j·s, so acquired slice i lands at output index i·k in
exactly the same world position, oblique affines included.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import os
import pathlib
import struct
import zlib

import nibabel as nib
import numpy as np
from isal import igzip
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from jaxsr.errors import ConfigError, VolumeError
from jaxsr.io import nibabel_notes
from jaxsr.io.atomic import atomic_output
from jaxsr.io.nibabel_notes import one_line

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# ISA-L's level 1 (of 0-3): the same ratio as zlib's level 1 on float32 decoder
# output (0.873 of the raw bytes) at 1/13 of the time (0.23 vs 3.0 s for a
# 216x256x19x30 float32 volume; separate processes, 3 interleaved rounds on the
# same 2 cores, per-round ratios 12.8-13.5), where zlib kept a reprocessing
# host's CPU busy gzipping instead of feeding the device. Any gzip reader reads it.
GZIP_LEVEL = 1

# What nibabel (and numpy under it) raise on malformed headers and data: from
# nibabel's source and from fuzzing the reader (tests/test_nifti_fuzz.py).
# Programming errors (AttributeError, NameError, ...) are left to surface.
_NIBABEL_ERRORS = (HeaderDataError, ImageFileError, ValueError, TypeError, KeyError, IndexError, struct.error,
                   EOFError, OSError, zlib.error, ArithmeticError, MemoryError)


def is_nifti_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """A 3D (x, y, z) or 4D (x, y, z, t) image with its geometry.

    `data` is float32 with any scl_slope/scl_inter applied. `header` is the
    source header (kept so that qform/sform codes, units, pixdim[4] and the
    description survive a round trip).
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: str | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three spatial array axes.

        The affine is what places the voxels in the world (a registration tool may
        scale an sform and leave pixdim as it was), so its column lengths decide.
        Where pixdim agrees with them to the float32 rounding of a stored sform
        (1e-7 relative; 1e-5 allowed), pixdim's exact value is kept: 5.0, not
        4.99999996.
        """
        columns = np.sqrt((np.asarray(self.affine, np.float64)[:3, :3] ** 2).sum(axis=0))
        zooms = np.asarray(self.header.get_zooms()[:3], np.float64)
        return tuple(float(z) for z in np.where(np.isclose(columns, zooms, rtol=1e-5, atol=0), zooms, columns))

    @property
    def slice_spacing_mm(self) -> float:
        return self.spacing[2]

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[2])

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[3]) if self.data.ndim == 4 else 1

    @property
    def is_4d(self) -> bool:
        return self.data.ndim == 4

    @property
    def frame_duration(self) -> float | None:
        """pixdim[4], the time between frames in the header's time unit."""
        return float(self.header["pixdim"][4]) if self.is_4d else None

    @property
    def name(self) -> str:
        return pathlib.Path(self.path).name if self.path else "<memory>"

    def with_data(self, data: np.ndarray, affine: np.ndarray | None = None) -> "Volume":
        """A new Volume holding `data`, with the header updated to match.

        The in-plane and slice spacing follow from `affine` (default: this
        volume's); qform/sform codes, units, pixdim[4] and the rest of the header
        are kept.
        """
        affine = self.affine if affine is None else np.asarray(affine, np.float64)
        header = geometry_header(self.header, affine, data.shape)
        return Volume(np.asarray(data, np.float32), affine.copy(), header, self.path)


def geometry_header(header: nib.Nifti1Header, affine: np.ndarray, shape: tuple[int, ...]) -> nib.Nifti1Header:
    """A copy of `header` for data of `shape` placed by `affine`."""
    out = header.copy()
    out.set_data_shape(shape)
    out.set_data_dtype(np.float32)
    qcode = int(header["qform_code"])
    scode = int(header["sform_code"])
    # set_qform recomputes pixdim[1:4] from the affine and keeps pixdim[4:]
    # (time per frame), which is exactly what reslicing needs.
    out.set_qform(affine, code=qcode if qcode > 0 else None)
    if qcode == 0:
        out["qform_code"] = 0
    out.set_sform(affine, code=scode if scode > 0 else None)
    if scode == 0:
        out["sform_code"] = 0
    zooms = list(out.get_zooms())
    zooms[:3] = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    out.set_zooms(tuple(zooms))
    return out


def load(path: str | os.PathLike) -> Volume:
    """Reads a 3D or 4D NIfTI file; every problem raises one VolumeError line naming it.

    Refused: anything nibabel cannot parse, a header that parses but is nonsense
    (voxel sizes that are not positive numbers, a shape and datatype that do not
    account for the file's bytes exactly, a non-finite or singular affine), and
    NaN or Inf voxels, which intensity scaling, the network and the metrics
    would all spread. What nibabel reports while reading (header fields it
    repaired) becomes one warning line for the file, or a debug line when the
    file is refused anyway.
    """
    path = pathlib.Path(path)
    if not is_nifti_path(path):
        raise VolumeError(path, "not a NIfTI file name (expected .nii or .nii.gz)")
    if not path.is_file():
        raise VolumeError(path, "no such file")
    return nibabel_notes.read_noting(path, lambda notes: _read(path, notes), _log_notes)


def _log_notes(path: pathlib.Path, notes: list[tuple[int, str]], level: int) -> None:
    if notes:
        said = "; ".join(dict.fromkeys(message for _, message in notes))
        logger.log(level, "%s: header problems: %s", path, said)


def _read(path: pathlib.Path, notes: list[tuple[int, str]]) -> Volume:
    raw = _file_bytes(path)
    image, raw_header = _parse(path, raw)
    _check_shape(path, image.shape)
    _check_header(path, image, raw_header, len(raw), notes)
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except _NIBABEL_ERRORS as e:
        raise VolumeError(path, f"unreadable voxel data ({one_line(e)})") from None
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise VolumeError(path, f"{bad} voxel(s) are NaN or Inf")
    affine = np.asarray(image.affine, np.float64)
    header = image.header.copy()
    # nibabel moves scl_slope/scl_inter into the data proxy on load; keep them in
    # the header so that --keep-dtype writes the source's stored values back.
    slope, inter = getattr(image.dataobj, "slope", 1.0), getattr(image.dataobj, "inter", 0.0)
    if np.issubdtype(image.get_data_dtype(), np.integer):
        header.set_slope_inter(float(slope), float(inter))
    return Volume(data, affine, header, str(path))


def _file_bytes(path: pathlib.Path) -> bytes:
    """The file's content, decompressed: nibabel parses it from memory, and the
    size check in _check_header is exact for .nii.gz too."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise VolumeError(path, f"truncated or corrupt compressed data ({one_line(e)})") from None
    except OSError as e:
        raise VolumeError(path, f"cannot read the file ({one_line(e.strerror or e)})") from None
    except MemoryError:
        raise VolumeError(path, "too large to read into memory") from None


def _parse(path: pathlib.Path, raw: bytes) -> tuple[nib.Nifti1Image, nib.Nifti1Header]:
    """The image, and its header as stored (nibabel's parse repairs some fields)."""
    # The magic decides the format (nibabel repairs a wrong sizeof_hdr, with a note).
    magic1, magic2 = raw[344:348], raw[4:8]
    if magic1 == b"n+1\0":
        image_class = nib.Nifti1Image
    elif magic2 == b"n+2\0":
        image_class = nib.Nifti2Image
    elif magic1 == b"ni1\0" or magic2 == b"ni2\0":
        raise VolumeError(path, "a NIfTI pair header: its voxels would be in a separate .img file")
    elif len(raw) < nib.Nifti1Header.sizeof_hdr:
        raise VolumeError(path, f"truncated: {len(raw)} bytes, less than a NIfTI header")
    else:
        raise VolumeError(path, "not a NIfTI file (no NIfTI-1 or NIfTI-2 magic string)")
    header_class = image_class.header_class
    if len(raw) < header_class.sizeof_hdr:
        raise VolumeError(path, f"truncated: {len(raw)} bytes, less than a NIfTI header")
    try:
        stored = header_class(raw[: header_class.sizeof_hdr], check=False)
        image = image_class.from_bytes(raw)
        if image_class is nib.Nifti2Image:
            image = nib.Nifti1Image.from_image(image)
    except _NIBABEL_ERRORS as e:
        raise VolumeError(path, f"bad NIfTI header ({one_line(e)})") from None
    return image, stored


def _check_header(path: pathlib.Path, image: nib.Nifti1Image, stored: nib.Nifti1Header, n_bytes: int,
                  notes: list[tuple[int, str]]) -> None:
    """Refuses a header that parsed but cannot describe this file's image; adds to `notes` what it repairs."""
    # nibabel replaces zero voxel sizes by 1 and negative ones by their absolute
    # value, and lets NaN through; each would silently change the geometry.
    pixdim = np.asarray(stored["pixdim"], np.float64)
    if not (np.all(np.isfinite(pixdim[1:4])) and np.all(pixdim[1:4] > 0)):
        raise VolumeError(path, f"voxel sizes pixdim[1:4] = {_mm(pixdim[1:4])} are not all positive numbers")
    if len(image.shape) == 4 and not np.isfinite(pixdim[4]):
        raise VolumeError(path, f"frame time pixdim[4] = {float(pixdim[4])} is not a number")
    affine = np.asarray(image.affine, np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(path, "the affine is singular or not finite")
    # The voxels are placed by the affine (the sform; a qform is built from
    # pixdim) and Volume.spacing follows it. A file written with one geometry
    # agrees to float32 rounding (1e-7); beyond 1% the user hears which was used.
    columns = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not np.allclose(columns, pixdim[1:4], rtol=0.01, atol=0):
        notes.append((logging.WARNING, f"pixdim[1:4] = {_mm(pixdim[1:4])} but the affine places voxels {_mm(columns)} apart; "
                                       "using the affine"))
    dtype = image.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise VolumeError(path, f"datatype {dtype} is not a real-valued intensity image")
    offset = int(image.dataobj.offset)
    need = offset + int(np.prod(image.shape, dtype=object)) * dtype.itemsize
    described = f"{'x'.join(map(str, image.shape))} {dtype} voxels from byte {offset}"
    if n_bytes < need:
        raise VolumeError(path, f"truncated: {described} need {need} bytes, the file holds {n_bytes}")
    if n_bytes > need:
        raise VolumeError(path, f"the file holds {n_bytes - need} bytes more than its header describes ({described}): wrong datatype or dimensions")


def _mm(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ") mm"


def _check_shape(path: pathlib.Path, shape: tuple[int, ...]) -> None:
    if len(shape) < 3:
        raise VolumeError(path, f"a {len(shape)}D image {tuple(shape)}; expected 3D (x, y, z) or 4D (x, y, z, t)")
    if len(shape) > 4:
        raise VolumeError(path, f"a {len(shape)}D image {tuple(shape)}; expected 3D (x, y, z) or 4D (x, y, z, t)")
    if min(shape) < 1:
        raise VolumeError(path, f"empty image {tuple(shape)}")
    if shape[2] < 2:
        raise VolumeError(path, f"a single slice (shape {tuple(shape)}); through-plane interpolation needs at least 2")


def save(volume: Volume, path: str | os.PathLike, *, overwrite: bool = False, dtype=np.float32) -> pathlib.Path:
    """Writes `volume` atomically; never replaces an existing file unless asked.

    float dtypes are written as is (scl_slope cleared). For an integer `dtype`
    the data is rounded and clipped to its range, using the source header's
    scl_slope/scl_inter when it had them so the stored values round-trip.
    """
    path = pathlib.Path(path)
    data = encode(volume, path, dtype)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return path


def encode(volume: Volume, path: str | os.PathLike, dtype=np.float32) -> bytes:
    """The file's bytes, as `save` writes them to `path`: gzipped when the name ends in .gz.

    Reproducible: the gzip header holds no file name and mtime 0 (as nibabel's
    DeterministicGzipFile), so a rerun writes the same bytes.
    """
    path = pathlib.Path(path)
    if not is_nifti_path(path):
        raise VolumeError(path, "output name must end in .nii or .nii.gz")
    from nibabel.fileholders import FileHolder

    image = to_nifti_image(volume, dtype)
    if not path.name.lower().endswith(".gz"):
        return image.to_bytes()
    buffer = io.BytesIO()
    with igzip.IGzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=buffer, mtime=0) as gz:
        image.to_file_map({"image": FileHolder(fileobj=gz), "header": FileHolder(fileobj=gz)})
    return buffer.getvalue()


def to_nifti_image(volume: Volume, dtype=np.float32) -> nib.Nifti1Image:
    dtype = np.dtype(dtype)
    header = geometry_header(volume.header, volume.affine, volume.data.shape)
    header.set_data_dtype(dtype)
    data = volume.data
    if np.issubdtype(dtype, np.integer):
        slope, inter = volume.header.get_slope_inter()
        slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
        inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
        info = np.iinfo(dtype)
        raw = np.clip(np.rint((data - inter) / slope), info.min, info.max).astype(dtype)
        header.set_slope_inter(slope, inter)
        data = raw
    else:
        data = data.astype(dtype)
        header.set_slope_inter(np.nan, np.nan)
    image = nib.Nifti1Image(data, volume.affine, header)
    # The constructor may touch the codes; put the source's back.
    image.header["qform_code"] = header["qform_code"]
    image.header["sform_code"] = header["sform_code"]
    if np.issubdtype(dtype, np.integer):
        # An integer array with the header's slope is written as is: the stored
        # integers keep the source's scaling instead of nibabel choosing a new one.
        image.header.set_slope_inter(header["scl_slope"], header["scl_inter"])
    return image


def output_positions(
    n_slices: int,
    *,
    factor: int | None = None,
    spacing: float | None = None,
    slice_spacing_mm: float | None = None,
) -> np.ndarray:
    """Input-slice coordinates of every output slice, first to last acquired slice.

    factor k: k - 1 new slices between each pair (acquired slice i at output
    index i·k). spacing s mm: slices every s / slice_spacing_mm input slices,
    starting at slice 0 and never extrapolating past the last one.
    """
    if (factor is None) == (spacing is None):
        raise ConfigError("give exactly one of factor and spacing")
    if n_slices < 2:
        raise ConfigError(f"{n_slices} slice(s): through-plane interpolation needs at least 2")
    if factor is not None:
        if int(factor) != factor or factor < 1:
            raise ConfigError(f"factor must be a positive integer, got {factor}")
        factor = int(factor)
        return np.arange((n_slices - 1) * factor + 1, dtype=np.float64) / factor
    if slice_spacing_mm is None or slice_spacing_mm <= 0:
        raise ConfigError("spacing needs the volume's slice spacing")
    if not np.isfinite(spacing) or spacing <= 0:
        raise ConfigError(f"spacing must be a positive number of mm, got {spacing}")
    step = float(spacing) / float(slice_spacing_mm)
    count = int(np.floor((n_slices - 1) / step + 1e-9)) + 1
    return np.arange(count, dtype=np.float64) * step


def resliced_affine(affine: np.ndarray, step: float) -> np.ndarray:
    """Affine of a volume whose slice j lies at input slice coordinate j·step."""
    out = np.array(affine, np.float64, copy=True)
    out[:3, 2] = out[:3, 2] * float(step)
    return out


def resliced(volume: Volume, data: np.ndarray, step: float) -> Volume:
    """`volume`'s geometry resliced along z by `step`, holding `data`."""
    return volume.with_data(data, resliced_affine(volume.affine, step))


def positions_step(positions: np.ndarray) -> float:
    """The constant step of `positions` (as made by output_positions)."""
    if len(positions) < 2:
        return 1.0
    steps = np.diff(positions)
    if not np.allclose(steps, steps[0], rtol=1e-9, atol=1e-12):
        raise ValueError("positions are not evenly spaced")
    return float(steps[0])
