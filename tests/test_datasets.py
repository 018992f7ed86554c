"""ACDC reader, folder datasets and the JSON split file."""

from __future__ import annotations

import json
import pathlib

import nibabel as nib
import numpy as np
import pytest

from jaxsr.data import datasets
from jaxsr.errors import UserError

INFO = "ED: {ed}\nES: {es}\nGroup: {group}\nHeight: 172.0\nNbFrame: {nb}\nWeight: 70.5\n"


def _nifti(path: pathlib.Path, shape, spacing=(1.5, 1.5, 10.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(len(str(path))).integers(0, 500, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag(list(spacing) + [1.0])), str(path))


def _acdc_tree(root: pathlib.Path, numbers, *, frames: int = 2, spacing_of=lambda n: 10.0) -> pathlib.Path:
    for n in numbers:
        folder = root / "training" / f"patient{n:03d}"
        _nifti(folder / f"patient{n:03d}_4d.nii.gz", (4, 4, 3, frames), (1.5, 1.5, spacing_of(n)))
        _nifti(folder / f"patient{n:03d}_frame01.nii.gz", (4, 4, 3), (1.5, 1.5, spacing_of(n)))
        (folder / "Info.cfg").write_text(INFO.format(ed=1, es=frames, group="NOR", nb=frames))
    return root


@pytest.fixture(scope="module")
def acdc(tmp_path_factory) -> pathlib.Path:
    return _acdc_tree(tmp_path_factory.mktemp("acdc") / "ACDC" / "database", range(1, 101))


def test_info_cfg_parsed_with_types_and_frames_one_based(tmp_path):
    path = tmp_path / "Info.cfg"
    path.write_text(INFO.format(ed=1, es=12, group="DCM", nb=30))
    info = datasets.read_info_cfg(path)
    assert info == {"ED": 1, "ES": 12, "Group": "DCM", "Height": 172.0, "NbFrame": 30, "Weight": 70.5}
    assert datasets.frame_index(info, "ED") == 0 and datasets.frame_index(info, "ES") == 11


@pytest.mark.parametrize("text, problem", [
    ("ED 1\nES: 2\nGroup: NOR\nNbFrame: 3\n", "line 1 is not 'Key: value': 'ED 1'"),
    ("ED: one\nES: 2\nGroup: NOR\nNbFrame: 3\n", "ED is 'one', not a number"),
    ("ED: 1\nGroup: NOR\nNbFrame: 3\n", "missing ES"),
    ("ED: 1\nES: 4\nGroup: NOR\nNbFrame: 3\n", "ES=4 outside frames 1..3"),
    ("ED: 0\nES: 2\nGroup: NOR\nNbFrame: 3\n", "ED=0 outside frames 1..3"),
])
def test_bad_info_cfg_is_one_line_naming_file(tmp_path, text, problem):
    path = tmp_path / "Info.cfg"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        datasets.read_info_cfg(path)
    assert str(e.value) == f"{path}: {problem}"


def test_acdc_reader_finds_patients_frames_with_or_without_database_folder(acdc):
    top = acdc.parent
    with_db, without = datasets.read_acdc(top), datasets.read_acdc(acdc)
    assert [p.name for p in with_db] == [p.name for p in without] == [f"patient{n:03d}" for n in range(1, 101)]
    p = with_db[41]
    assert p.cine.name == "patient042_4d.nii.gz" and p.info["NbFrame"] == 2
    assert set(p.frames) == {"ED"} and p.frames["ED"].name == "patient042_frame01.nii.gz"  # ES frame file absent


def test_acdc_split_is_the_papers(acdc):
    split = datasets.make_split(acdc)
    names = {k: [pathlib.PurePosixPath(r).parent.name for r in v] for k, v in split.items() if k in datasets.SPLITS}
    assert sorted(names["test"]) == sorted(datasets.ACDC_TEST)
    assert len(names["train"]) == 70 and len(names["validation"]) == 18
    union = set().union(*map(set, names.values()))
    assert len(union) == 100 == sum(map(len, names.values()))  # disjoint and covering
    assert datasets.make_split(acdc) == split  # the fixed seed reproduces it
    other = datasets.make_split(acdc, seed=1)
    assert other["test"] == split["test"] and set(other["validation"]) != set(split["validation"])


def test_split_file_is_written_once_and_then_wins(tmp_path, acdc):
    split_file = tmp_path / "split.json"
    train = datasets.volumes_for_split(acdc, "train", split_file)
    saved = json.loads(split_file.read_text())
    assert [acdc / r for r in saved["train"]] == train
    # A hand-edited split file is what every later run uses.
    saved["validation"].append(saved["train"].pop())
    split_file.write_text(json.dumps(saved))
    assert len(datasets.volumes_for_split(acdc, "train", split_file)) == 69
    assert len(datasets.volumes_for_split(acdc, "validation", split_file)) == 19


def test_split_file_errors_name_the_file(tmp_path, acdc):
    bad = tmp_path / "split.json"
    bad.write_text('{"train": ["a"], "validation": ["a"], "test": []}')
    with pytest.raises(UserError, match=f"^{bad}: a is in both train and validation$"):
        datasets.read_split(bad)
    bad.write_text('{"train": ["training/patient999/patient999_4d.nii.gz"], "validation": [], "test": []}')
    with pytest.raises(UserError, match="patient999_4d.nii.gz: listed in split file .* but missing"):
        datasets.volumes_for_split(acdc, "train", bad)
    bad.write_text("not json")
    with pytest.raises(UserError, match="cannot read the split file"):
        datasets.read_split(bad)


def test_acdc_layout_that_is_not_acdc_holds_out_thin_slices(tmp_path):
    root = _acdc_tree(tmp_path / "phantom", range(1, 12), spacing_of=lambda n: 5.0 if n in (3, 7) else 10.0)
    split = datasets.make_split(root)
    assert [pathlib.PurePosixPath(r).parent.name for r in split["test"]] == ["patient003", "patient007"]
    assert len(split["validation"]) == 2 and len(split["train"]) == 7  # round(9 * 18 / 88) = 2


def test_folder_dataset_split_is_stable_disjoint_and_covering(tmp_path):
    root = tmp_path / "vols"
    names = [f"site{i % 3}/scan_{i:02d}.nii{'.gz' if i % 2 else ''}" for i in range(40)]
    for i, name in enumerate(names):
        _nifti(root / name, (4, 4, 3) if i % 4 else (4, 4, 3, 2))
    (root / "notes.txt").write_text("not a volume")
    split = datasets.make_split(root)
    got = [r for k in datasets.SPLITS for r in split[k]]
    assert sorted(got) == sorted(names)  # disjoint and covering, the text file ignored
    assert 20 <= len(split["train"]) <= 38
    _nifti(root / "site9" / "new.nii.gz", (4, 4, 3))
    again = datasets.make_split(root)
    for k in datasets.SPLITS:  # adding a file moves no existing one
        assert set(split[k]) <= set(again[k])


def test_empty_or_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such data folder"):
        datasets.make_split(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .nii or .nii.gz files"):
        datasets.make_split(tmp_path / "empty")
    (tmp_path / "acdc" / "training" / "patient001").mkdir(parents=True)
    with pytest.raises(UserError, match="patient001: no patient001_4d.nii.gz"):
        datasets.make_split(tmp_path / "acdc")


# ----------------------------------------------------------------------------
# all-train: fitting the archive one means to upsample


def test_all_train_split_holds_every_volume_in_training(tmp_path, acdc):
    root = tmp_path / "vols"
    names = sorted(f"site{i % 3}/scan_{i:02d}.nii.gz" for i in range(12))
    for name in names:
        _nifti(root / name, (4, 4, 3))
    split = datasets.make_split(root, kind=datasets.ALL_TRAIN)
    assert split["kind"] == "all-train" and split["train"] == names and split["test"] == []
    assert split["validation"] == names[::datasets.VALIDATION_EVERY] == names[0:12:5]  # in-sample, deterministic
    # ACDC: every patient trains, the 12 test patients too.
    acdc_split = datasets.make_split(acdc, kind=datasets.ALL_TRAIN)
    assert [pathlib.PurePosixPath(r).parent.name for r in acdc_split["train"]] == [f"patient{n:03d}" for n in range(1, 101)]
    assert set(acdc_split["validation"]) <= set(acdc_split["train"]) and len(acdc_split["validation"]) == 20
    # Its file reads back (validation inside train is what this kind means), and training keeps it.
    split_file = tmp_path / "split.json"
    assert datasets.resolve_split(root, split_file, datasets.ALL_TRAIN) == split
    assert datasets.read_split(split_file) == split
    assert datasets.volumes_for_split(root, "train", split_file) == [root / n for n in names]
    with pytest.raises(UserError, match=f"^{split_file}: the split is all-train, not held-out; "):
        datasets.resolve_split(root, split_file, datasets.HELD_OUT)
    held_out = tmp_path / "held_out.json"
    datasets.resolve_split(root, held_out)
    with pytest.raises(UserError, match=f"^{held_out}: the split is folder, not all-train; "):
        datasets.resolve_split(root, held_out, datasets.ALL_TRAIN)
    split_file.write_text(json.dumps({**split, "validation": ["elsewhere.nii.gz"]}))
    with pytest.raises(UserError, match=f"^{split_file}: an all-train split lists elsewhere.nii.gz outside 'train'$"):
        datasets.read_split(split_file)
    with pytest.raises(UserError, match="unknown split kind 'all'"):
        datasets.make_split(root, kind="all")
