"""Every command's input: a NIfTI file or a folder holding a DICOM series (or several making one stack).

`load_volume` picks the reader (jaxsr.io.nifti, jaxsr.io.dicom); `input_sha256`
is the digest manifests and sidecars key an input by (the file's bytes; for a
series folder its files' names and bytes); `output_name` is where an input's
NIfTI result goes under OUT: the same relative path, a series folder's with
.nii.gz added (a/b/series1 -> a/b/series1.nii.gz). Outputs are always NIfTI.
"""

from __future__ import annotations

import os
import pathlib

from jaxsr.errors import VolumeError
from jaxsr.io import dicom, nifti
from jaxsr.io.archive import sha256_file
from jaxsr.io.nifti import Volume

SERIES_OUTPUT_SUFFIX = ".nii.gz"


def load_volume(path: str | os.PathLike) -> Volume:
    """The volume at `path`: a DICOM series folder or a NIfTI file; anything else one VolumeError line."""
    path = pathlib.Path(path)
    if path.is_dir():
        return dicom.load_series(path)
    if not path.exists():
        raise VolumeError(path, "no such file or folder")
    if not nifti.is_nifti_path(path):
        if path.is_file() and dicom.has_dicom_magic(path):
            raise VolumeError(path, "a single DICOM file: give the folder holding its series")
        raise VolumeError(path, "neither a NIfTI file (.nii, .nii.gz) nor a folder holding a DICOM series")
    return nifti.load(path)


def input_sha256(path: str | os.PathLike) -> str:
    """The digest of an input: its bytes, or a series folder's names and bytes (jaxsr.io.dicom.series_sha256)."""
    path = pathlib.Path(path)
    return dicom.series_sha256(path) if path.is_dir() else sha256_file(path)


def output_name(rel: str | os.PathLike) -> pathlib.Path:
    """The output path (relative to OUT) of the input at `rel` (relative to IN)."""
    rel = pathlib.Path(rel)
    return rel if nifti.is_nifti_path(rel) else rel.with_name(rel.name + SERIES_OUTPUT_SUFFIX)
