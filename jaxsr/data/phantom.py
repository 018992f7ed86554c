"""The synthetic cine phantom as an ACDC-layout dataset: jaxsr's built-in data.

    out_dir/phantom.json                    manifest (written last: its presence means complete)
    out_dir/training/patientNNN/Info.cfg    ED, ES, Group, Height, NbFrame, Weight (as ACDC)
    out_dir/training/patientNNN/patientNNN_4d.nii.gz
    out_dir/training/patientNNN/patientNNN_frameXX.nii.gz   ED and ES, 1-based frame numbers

Each patient is a beating-heart short-axis cine stack (see phantom_anatomy and
phantom_render). The *last* `n_test` patients (the highest numbers) are the test
set, and they are exactly the patients with 5 mm slice spacing, so a reader
that holds out 5 mm stacks (the paper's ACDC protocol) and one that reads the
manifest agree. Training patients have 6.5–10 mm spacing.

Files: int16 magnitudes (blood about 650–900, like scanner data), no scaling
(scl_slope 1). The affine is an oblique rotation times the zooms, qform and
sform codes 1 (scanner), xyzt units mm and s, pixdim[4] = time per frame in
seconds. Gzip streams carry no name or time stamp, so the same seed gives
byte-identical files.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import pathlib
import re
import shutil

import nibabel as nib
import numpy as np

from jaxsr.data.phantom_anatomy import Patient, PhantomSpec, sample_patient
from jaxsr.data.phantom_render import acquire, render_clean
from jaxsr.errors import ConfigError, UserError
from jaxsr.io.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

MANIFEST = "phantom.json"
FORMAT_VERSION = 1
PATIENT_DIR = re.compile(r"^patient\d{3}$")

__all__ = [
    "MANIFEST",
    "Patient",
    "PhantomSpec",
    "make_patient",
    "n_test_patients",
    "patient_volume",
    "write_phantom_dataset",
]


def n_test_patients(n_patients: int, fraction: float = 0.125) -> int:
    """About `fraction` of the patients, at least 2 from 6 patients on, 1 from 2."""
    if n_patients < 2:
        return 0
    if n_patients < 6:
        return 1
    return max(2, int(round(fraction * n_patients)))


def make_patient(seed: int, number: int, is_test: bool, spec: PhantomSpec | None = None) -> Patient:
    """Patient `number` (1-based) of the dataset with `seed`; independent of the dataset size."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(number, 0)))
    return sample_patient(rng, spec or PhantomSpec(), number, is_test)


def patient_volume(patient: Patient, seed: int, spec: PhantomSpec | None = None) -> np.ndarray:
    """The stored int16 cine (x, y, z, t) of `patient`: render, bias, Rician noise."""
    spec = spec or PhantomSpec()
    clean = render_clean(patient, z_step_mm=spec.z_step_mm)
    noise_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(patient.number, 1)))
    return acquire(patient, clean, noise_rng)


def write_phantom_dataset(
    out_dir: str | os.PathLike,
    n_patients: int,
    seed: int,
    *,
    overwrite: bool = False,
    spec: PhantomSpec | None = None,
) -> dict:
    """Writes `n_patients` phantom patients under out_dir/training; returns the manifest."""
    spec = spec or PhantomSpec()
    if int(n_patients) != n_patients or n_patients < 1 or n_patients > 999:
        raise ConfigError(f"--patients: must be an integer from 1 to 999, got {n_patients}")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"--seed: must be a non-negative integer, got {seed}")
    n_patients, seed = int(n_patients), int(seed)
    out = pathlib.Path(out_dir)
    _prepare(out, overwrite)
    n_test = n_test_patients(n_patients, spec.test_fraction)
    first_test = n_patients - n_test + 1
    training = out / "training"
    training.mkdir(parents=True, exist_ok=True)
    records = {}
    for number in range(1, n_patients + 1):
        patient = make_patient(seed, number, number >= first_test, spec)
        data = patient_volume(patient, seed, spec)
        _write_patient(training / patient.name, patient, data, overwrite)
        records[patient.name] = _record(patient)
        log.info(
            "%s: %s, %d slices x %.1f mm, %d frames, %s",
            patient.name,
            patient.group,
            patient.n_slices,
            patient.slice_spacing_mm,
            patient.n_frames,
            "test" if patient.is_test else "train",
        )
    manifest = {
        "generator": "jaxsr.data.phantom",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "n_patients": n_patients,
        "test_patients": [name for name, r in records.items() if r["is_test"]],
        "train_patients": [name for name, r in records.items() if not r["is_test"]],
        "test_rule": f"the last {n_test} patients; exactly those with {spec.test_spacing_mm} mm slice spacing",
        "intensity": "int16 magnitude, blood about 650-900, Rician noise",
        "time_unit": "pixdim[4] = seconds per frame (xyzt units mm, sec)",
        "spec": _jsonable(dataclasses.asdict(spec)),
        "patients": records,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(out / MANIFEST, text.encode(), overwrite=True)
    return manifest


def _prepare(out: pathlib.Path, overwrite: bool) -> None:
    """Refuses to write into a non-empty folder unless asked; clears an earlier phantom's patients."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out}: folder is not empty (pass --overwrite to replace a phantom dataset there)")
        if not (out / MANIFEST).exists():
            raise UserError(f"{out}: not empty and holds no {MANIFEST}; refusing to overwrite a folder jaxsr did not make")
        # Remove the earlier phantom's patient folders so none outlive a smaller new set.
        for child in sorted((out / "training").glob("patient*")):
            if child.is_dir() and PATIENT_DIR.match(child.name):
                shutil.rmtree(child)
        (out / MANIFEST).unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_patient(folder: pathlib.Path, patient: Patient, data: np.ndarray, overwrite: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(folder / "Info.cfg", info_cfg(patient).encode(), overwrite=overwrite)
    write_bytes_atomic(folder / f"{patient.name}_4d.nii.gz", nifti_gz_bytes(patient, data), overwrite=overwrite)
    for frame in sorted({patient.ed_frame, patient.es_frame}):
        name = f"{patient.name}_frame{frame:02d}.nii.gz"
        write_bytes_atomic(folder / name, nifti_gz_bytes(patient, data[..., frame - 1]), overwrite=overwrite)


def info_cfg(patient: Patient) -> str:
    """ACDC's Info.cfg, same keys, order and number formats."""
    return (
        f"ED: {patient.ed_frame}\n"
        f"ES: {patient.es_frame}\n"
        f"Group: {patient.group}\n"
        f"Height: {patient.height_cm:.1f}\n"
        f"NbFrame: {patient.n_frames}\n"
        f"Weight: {patient.weight_kg:.1f}\n"
    )


def nifti_image(patient: Patient, data: np.ndarray) -> nib.Nifti1Image:
    """int16 image with the patient's oblique geometry and a scanner-like header."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    image = nib.Nifti1Image(np.asarray(data, np.int16), patient.affine, header)
    header = image.header
    header.set_qform(patient.affine, code=1)
    header.set_sform(patient.affine, code=1)
    header.set_xyzt_units("mm", "sec")
    zooms = [patient.pixel_mm, patient.pixel_mm, patient.slice_spacing_mm]
    if data.ndim == 4:
        zooms.append(patient.frame_duration_s)
    header.set_zooms(tuple(zooms))
    header.set_slope_inter(1.0, 0.0)
    header["descrip"] = f"jaxsr phantom {patient.group} thk={patient.slice_thickness_mm:.1f}mm".encode()[:79]
    return image


def nifti_gz_bytes(patient: Patient, data: np.ndarray) -> bytes:
    """The .nii.gz file contents; gzip with mtime 0 and no file name, so bytes are reproducible."""
    raw = nifti_image(patient, data).to_bytes()
    return gzip.compress(raw, compresslevel=1, mtime=0)


def _record(patient: Patient) -> dict:
    return {
        "is_test": patient.is_test,
        "group": patient.group,
        "n_slices": patient.n_slices,
        "n_frames": patient.n_frames,
        "slice_spacing_mm": patient.slice_spacing_mm,
        "slice_thickness_mm": patient.slice_thickness_mm,
        "pixel_mm": round(patient.pixel_mm, 4),
        "matrix": list(patient.matrix),
        "ed_frame": patient.ed_frame,
        "es_frame": patient.es_frame,
        "frame_duration_s": round(patient.frame_duration_s, 6),
        "snr_myocardium": round(patient.snr, 2),
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
