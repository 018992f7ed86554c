"""Datasets: an ACDC tree or any folder of NIfTI volumes, split reproducibly."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np

from jaxsr.errors import UserError
from jaxsr.io import nifti

ACDC_TEST = ("patient035", "patient075", "patient081", "patient082", "patient084", "patient085",
             "patient088", "patient092", "patient094", "patient095", "patient096", "patient099")
SPLITS = ("train", "validation", "test")


def _acdc_root(data_dir: pathlib.Path) -> pathlib.Path | None:
    for root in (data_dir, data_dir / "database"):
        if (root / "training").is_dir():
            return root / "training"
    return None


def _hash_fraction(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 2**32


def volumes_for_split(data_dir, split: str) -> list[pathlib.Path]:
    data_dir = pathlib.Path(data_dir)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such data folder")
    training = _acdc_root(data_dir)
    if training is not None:
        files = sorted(training.glob("patient*/patient*_4d.nii.gz"))
        if not files:
            raise UserError(f"{training}: no patientNNN_4d.nii.gz files")
        out = []
        for f in files:
            patient = f.parent.name
            spacing = nifti.load(f).slice_spacing_mm if len(files) != 100 else None
            is_test = patient in ACDC_TEST if spacing is None else spacing <= 5.5
            if split == "test":
                if is_test:
                    out.append(f)
                continue
            if is_test:
                continue
            val = _hash_fraction(patient) < 18 / 88
            if (split == "validation") == val:
                out.append(f)
        return out
    files = sorted(p for p in data_dir.rglob("*") if nifti.is_nifti_path(p) and not p.name.startswith("."))
    if not files:
        raise UserError(f"{data_dir}: no .nii or .nii.gz files")
    bounds = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}[split]
    return [f for f in files if bounds[0] <= _hash_fraction(str(f.relative_to(data_dir))) < bounds[1]]


def load_stacks(data_dir, split: str, target_mm: float = 1.4) -> list[np.ndarray]:
    from jaxsr.data.preprocess import preprocess_volume

    return [preprocess_volume(nifti.load(f), target_mm)[0] for f in volumes_for_split(data_dir, split)]
