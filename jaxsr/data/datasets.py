"""Datasets: an ACDC tree or any folder of NIfTI volumes, split reproducibly.

ACDC (Bernard et al., IEEE TMI 2018) as distributed:
`[database/]training/patientNNN/{Info.cfg, patientNNN_4d.nii.gz, patientNNN_frameXX.nii.gz}`.
The paper's split holds out the 12 patients with 5 mm slices (ACDC_TEST) and
splits the other low-resolution patients 70 train / 18 validation with a fixed
seed. A tree in ACDC layout that is not ACDC itself (the phantom) holds out its
thin-slice (<= 5.5 mm) patients instead, and splits the rest in the same ratio.

Any other folder of .nii/.nii.gz volumes (3D or 4D, any names, nested) and
DICOM series folders (each one volume, jaxsr.io.dicom) splits 80/10/10 by a
stable hash of each input's path relative to the folder, so adding inputs
never moves an existing one to another split.

The "all-train" split is for fitting a model to the archive one means to
upsample (the method needs no high-resolution data, so that is legitimate):
every volume trains, every VALIDATION_EVERY-th of them (sorted, the first
included) also validates. That validation is in-sample: its loss says how
well the model fits these scans, not how it does on unseen ones.

A split is a JSON file listing relative paths per split. Training writes it
to its workdir on the first run and reads it on every later one, so a run and
its resumptions see the same patients even if the folder changes; the test
split needs no file (it is fixed by name or slice thickness).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

import numpy as np

from jaxsr.data.split_kinds import ALL_TRAIN, HELD_OUT, SPLIT_KINDS, VALIDATION_EVERY
from jaxsr.errors import UserError
from jaxsr.io import nifti
from jaxsr.io.volumes import load_volume

ACDC_TEST = ("patient035", "patient075", "patient081", "patient082", "patient084", "patient085",
             "patient088", "patient092", "patient094", "patient095", "patient096", "patient099")
SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0
VALIDATION_FRACTION = 18 / 88  # the paper: 70 train / 18 validation of the 88 low-resolution patients
THIN_SLICE_MM = 5.5
INFO_INT_KEYS = ("ED", "ES", "NbFrame")
INFO_FLOAT_KEYS = ("Height", "Weight")


# ----------------------------------------------------------------------------
# ACDC layout


def read_info_cfg(path) -> dict:
    """Info.cfg as {'ED': int, 'ES': int, 'Group': str, 'Height': float, 'NbFrame': int, 'Weight': float}.

    Frames (ED, ES) stay 1-based as in the file; `frame_index` converts.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read Info.cfg ({e.__class__.__name__}: {e})") from None
    info: dict = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise UserError(f"{path}: line {number} is not 'Key: value': {line.strip()!r}")
        key, value = key.strip(), value.strip()
        try:
            info[key] = int(value) if key in INFO_INT_KEYS else float(value) if key in INFO_FLOAT_KEYS else value
        except ValueError:
            raise UserError(f"{path}: {key} is {value!r}, not a number") from None
    missing = [k for k in ("ED", "ES", "Group", "NbFrame") if k not in info]
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)}")
    for key in ("ED", "ES"):
        if not 1 <= info[key] <= info["NbFrame"]:
            raise UserError(f"{path}: {key}={info[key]} outside frames 1..{info['NbFrame']}")
    return info


def frame_index(info: dict, key: str) -> int:
    """0-based index into the 4D file's time axis of Info.cfg's 1-based ED or ES."""
    return int(info[key]) - 1


@dataclasses.dataclass(frozen=True)
class AcdcPatient:
    name: str
    folder: pathlib.Path
    info: dict
    cine: pathlib.Path  # patientNNN_4d.nii.gz
    frames: dict  # {'ED': path, 'ES': path} of the patientNNN_frameXX.nii.gz files that exist


def acdc_root(data_dir) -> pathlib.Path | None:
    """The `training` folder of an ACDC tree (with or without `database/`), else None."""
    data_dir = pathlib.Path(data_dir)
    for root in (data_dir, data_dir / "database"):
        if (root / "training").is_dir():
            return root / "training"
    return None


def read_acdc(data_dir) -> list[AcdcPatient]:
    training = acdc_root(data_dir)
    if training is None:
        raise UserError(f"{data_dir}: not an ACDC tree (no training/ or database/training/ folder)")
    patients = []
    for folder in sorted(p for p in training.glob("patient*") if p.is_dir()):
        cine = folder / f"{folder.name}_4d.nii.gz"
        if not cine.exists():
            raise UserError(f"{folder}: no {cine.name}")
        info = read_info_cfg(folder / "Info.cfg")
        frames = {}
        for key in ("ED", "ES"):
            f = folder / f"{folder.name}_frame{info[key]:02d}.nii.gz"
            if f.exists():
                frames[key] = f
        patients.append(AcdcPatient(folder.name, folder, info, cine, frames))
    if not patients:
        raise UserError(f"{training}: no patientNNN folders")
    return patients


# ----------------------------------------------------------------------------
# Splits


def _hash_fraction(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 2**32


def _is_acdc_itself(names: list[str]) -> bool:
    # The real ACDC training set numbers its patients 001-100 and holds all 12 test patients.
    return set(ACDC_TEST) <= set(names)


def make_split(data_dir, seed: int = SPLIT_SEED, *, kind: str = HELD_OUT) -> dict:
    """The split of `data_dir` as {'kind', 'seed', 'train': [...], 'validation': [...], 'test': [...]}.

    Entries are paths relative to `data_dir` (POSIX), sorted. kind=ALL_TRAIN:
    see `all_train_split`.
    """
    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such data folder")
    if kind == ALL_TRAIN:
        return all_train_split(data_dir)
    if kind != HELD_OUT:
        raise UserError(f"unknown split kind {kind!r}; expected one of {', '.join(SPLIT_KINDS)}")
    if acdc_root(data_dir) is not None:
        patients = read_acdc(data_dir)
        names = [p.name for p in patients]
        if _is_acdc_itself(names):
            test = set(ACDC_TEST)
        else:
            test = {p.name for p in patients if nifti.load(p.cine).slice_spacing_mm <= THIN_SLICE_MM}
        rest = sorted(set(names) - test)
        order = np.random.default_rng(seed).permutation(len(rest))
        n_val = int(round(len(rest) * VALIDATION_FRACTION))
        val = {rest[i] for i in order[:n_val]}
        rel = {p.name: p.cine.relative_to(data_dir).as_posix() for p in patients}
        groups = {"test": test, "validation": val, "train": set(rest) - val}
        split = {k: sorted(rel[n] for n in groups[k]) for k in SPLITS}
        return {"kind": "acdc", "seed": seed, **split}
    bounds = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
    rel = _folder_volumes(data_dir)
    split = {k: [r for r in rel if lo <= _hash_fraction(r) < hi] for k, (lo, hi) in bounds.items()}
    return {"kind": "folder", "seed": None, **split}


def _folder_volumes(data_dir: pathlib.Path) -> list[str]:
    """Every .nii/.nii.gz and DICOM series folder under `data_dir` (as reprocess walks it), relative, sorted."""
    from jaxsr.io.archive import find_volumes

    found = find_volumes(data_dir)
    if not found:
        raise UserError(f"{data_dir}: no .nii or .nii.gz files or DICOM series folders")
    return [rel.as_posix() for rel in found]


def all_train_split(data_dir) -> dict:
    """Every volume of `data_dir` in 'train' (ACDC: every patient's cine, the test patients' too), none in 'test';
    'validation' is every VALIDATION_EVERY-th of them, so it is in-sample."""
    data_dir = pathlib.Path(data_dir)
    if acdc_root(data_dir) is not None:
        rel = sorted(p.cine.relative_to(data_dir).as_posix() for p in read_acdc(data_dir))
    else:
        rel = _folder_volumes(data_dir)
    return {"kind": ALL_TRAIN, "seed": None, "train": rel, "validation": rel[::VALIDATION_EVERY], "test": []}


def read_split(path) -> dict:
    path = pathlib.Path(path)
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the split file ({e.__class__.__name__}: {e})") from None
    if not isinstance(split, dict) or any(not isinstance(split.get(k), list) for k in SPLITS):
        raise UserError(f"{path}: not a split file (needs lists 'train', 'validation' and 'test')")
    if split.get("kind") == ALL_TRAIN:
        train = set(split["train"])
        outside = [e for e in split["validation"] + split["test"] if e not in train]
        if outside:
            raise UserError(f"{path}: an all-train split lists {outside[0]} outside 'train'")
        return split
    seen: dict = {}
    for k in SPLITS:
        for entry in split[k]:
            if entry in seen:
                raise UserError(f"{path}: {entry} is in both {seen[entry]} and {k}")
            seen[entry] = k
    return split


def write_split(path, split: dict) -> None:
    from jaxsr.io.atomic import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(split, indent=1) + "\n").encode(), overwrite=True)


def resolve_split(data_dir, split_file=None, kind: str | None = None) -> dict:
    """The split in `split_file` when it exists; else made (of `kind`, default held-out; written there, if given).

    A `kind` the existing file does not hold is an error: a run keeps the split it started with.
    """
    if split_file is not None and pathlib.Path(split_file).exists():
        split = read_split(split_file)
        if kind is not None and (split.get("kind") == ALL_TRAIN) != (kind == ALL_TRAIN):
            raise UserError(f"{split_file}: the split is {split.get('kind')}, not {kind}; "
                            "a run keeps its split (use a new --workdir)")
        return split
    split = make_split(data_dir, kind=kind or HELD_OUT)
    if split_file is not None:
        write_split(split_file, split)
    return split


def volumes_for_split(data_dir, split: str, split_file=None) -> list[pathlib.Path]:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    data_dir = pathlib.Path(data_dir)
    paths = [data_dir / r for r in resolve_split(data_dir, split_file)[split]]
    missing = [p for p in paths if not p.exists()]
    if missing:
        where = f"split file {split_file}" if split_file else "the split"
        raise UserError(f"{missing[0]}: listed in {where} ({split}) but missing ({len(missing)} missing in all)")
    return paths


def preprocess_files(paths, target_mm: float | None) -> list[np.ndarray]:
    """Each volume read and preprocessed as in the paper: (X, Y, Z[, T]) in [0, 1] at `target_mm` in-plane (None: native)."""
    return preprocess_files_and_gaps(paths, target_mm)[0]


def preprocess_files_and_gaps(paths, target_mm: float | None) -> tuple[list[np.ndarray], list[float]]:
    """preprocess_files' stacks, and each volume's slice gap in mm (what jaxsr.train.gap_rule reads)."""
    from jaxsr.data.preprocess import preprocess_volume

    volumes = (load_volume(f) for f in paths)
    pairs = [(preprocess_volume(v, target_mm)[0], float(v.slice_spacing_mm)) for v in volumes]
    return [s for s, _ in pairs], [g for _, g in pairs]


def load_stacks(data_dir, split: str, target_mm: float | None, split_file=None) -> list[np.ndarray]:
    return preprocess_files(volumes_for_split(data_dir, split, split_file), target_mm)
