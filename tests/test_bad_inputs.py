"""The bad-input matrix: every command that reads files, every kind of bad input.

Each case must give one line on stderr naming the file (or setting) and the
problem, a non-zero exit code (2 for usage and configuration errors), no
traceback, and nothing written. `reprocess` still processes the good files.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxsr import cli
from tests.test_nifti import _bad_files, write_nifti
from tests.test_nifti_fuzz import source_files, with_field
from tests.test_train import smooth_stacks

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.py")


def good_volume(path: pathlib.Path, slices: int = 6, spacing: float = 8.0) -> pathlib.Path:
    rng = np.random.default_rng(len(path.name))
    data = rng.integers(0, 300, (40, 36, slices, 3)).astype(np.int16)
    data[10:30, 8:28] += 900
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nifti(path, data, np.diag([1.5, 1.5, spacing, 1.0]))


def bad_volumes(folder: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """(expected problem regex, path): the reader's matrix plus what preprocessing rejects."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = [(e, p) for e, p in _bad_files(folder) if p.name.endswith((".nii", ".nii.gz")) and p.exists()]
    (folder / "full.nii.gz").unlink()  # the good file the truncated one was cut from
    zero = write_nifti(folder / "zero.nii.gz", np.zeros((16, 16, 5, 2), np.float32), np.eye(4))
    cases.append(("constant intensity", zero))
    return cases


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> pathlib.Path:
    from jaxsr.config import load_config
    from jaxsr.train import loop

    workdir = tmp_path_factory.mktemp("run") / "train"
    config = load_config(TINY, ["--config.train.steps=1"])
    loop.train(config, workdir, None, stacks=smooth_stacks(), val_stacks=smooth_stacks(1, seed=3), show_progress=False)
    return workdir


def run_cli(capsys, *argv) -> tuple[int, list[str]]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    # Log records and progress bars aside, stderr must hold exactly the error line.
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line and " WARNING " not in line and "%|" not in line]
    return code, lines


def jaxsr_process(*argv) -> subprocess.Popen:
    """`python -m jaxsr.cli ARGV` started as a user runs it, from the repository root."""
    return subprocess.Popen([sys.executable, "-m", "jaxsr.cli", *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)


def run_jaxsr(*argv) -> subprocess.CompletedProcess:
    proc = jaxsr_process(*argv)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_one_line(code, lines, expected_code, *fragments):
    assert code == expected_code, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for fragment in fragments:
        assert fragment in lines[0] or re.search(fragment, lines[0]), (fragment, lines[0])


def tree(root: pathlib.Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


# ----------------------------------------------------------------------------
# upsample


def test_upsample_rejects_every_bad_volume_and_writes_nothing(tmp_path, capsys, checkpoint):
    cases = bad_volumes(tmp_path / "in")
    assert len(cases) == 9  # 2D, 5D, one slice, NaN, Inf, truncated, fake header, text, constant
    out = tmp_path / "out"
    out.mkdir()
    for problem, path in cases:
        code, lines = run_cli(capsys, "upsample", path, out / "x.nii.gz", "--checkpoint", checkpoint, "--factor", 2)
        assert_one_line(code, lines, 1, str(path), problem)
    assert tree(out) == set()


def test_upsample_checkpoint_and_output_errors(tmp_path, capsys, checkpoint):
    src = good_volume(tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii.gz"
    code, lines = run_cli(capsys, "upsample", src, out, "--checkpoint", tmp_path / "nope", "--factor", 2)
    assert_one_line(code, lines, 1, str(tmp_path / "nope"), "no such checkpoint")

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    saved = json.loads((broken / "config.json").read_text())
    saved["model"]["base_features"] *= 2  # parameters no longer fit the config
    (broken / "config.json").write_text(json.dumps(saved))
    code, lines = run_cli(capsys, "upsample", src, out, "--checkpoint", broken, "--factor", 2)
    assert_one_line(code, lines, 1, str(broken), "does not match its config")
    (broken / "config.json").write_text("{not json")
    code, lines = run_cli(capsys, "upsample", src, out, "--checkpoint", broken, "--factor", 2)
    assert_one_line(code, lines, 1, "config.json", "unreadable config")

    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file, not a folder")
    code, lines = run_cli(capsys, "upsample", src, blocker / "out.nii.gz", "--checkpoint", checkpoint, "--factor", 2)
    assert_one_line(code, lines, 1, str(blocker), "not a folder")

    out.write_bytes(b"precious")
    code, lines = run_cli(capsys, "upsample", src, out, "--checkpoint", checkpoint, "--factor", 2)
    assert_one_line(code, lines, 1, str(out), "output exists")
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / "out.nii.gz.json").exists()

    with pytest.raises(SystemExit) as e:  # argparse's usage error
        run_cli(capsys, "upsample", src, tmp_path / "o2.nii.gz", "--checkpoint", checkpoint, "--factor", 0)
    assert e.value.code == 2 and "--factor: expected a positive integer, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "o2.nii.gz").exists()


def test_disk_full_while_writing_leaves_no_file(tmp_path, capsys, checkpoint, monkeypatch):
    src = good_volume(tmp_path / "in.nii.gz")
    real = pathlib.Path.write_bytes

    def fill_disk(self, data):
        if ".json" in self.name:  # the sidecar (written first) fits; the NIfTI does not
            return real(self, data)
        real(self, data[: len(data) // 2])  # as if the disk filled half-way through
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    # Outputs are encoded in memory and written by jaxsr.io.atomic through Path.write_bytes.
    monkeypatch.setattr(pathlib.Path, "write_bytes", fill_disk)
    (tmp_path / "out").mkdir()
    code, lines = run_cli(capsys, "upsample", src, tmp_path / "out" / "up.nii.gz", "--checkpoint", checkpoint, "--factor", 2)
    assert_one_line(code, lines, 1, str(tmp_path / "out" / "up.nii.gz"), "No space left on device")
    assert tree(tmp_path / "out") == set()


# ----------------------------------------------------------------------------
# reprocess


def test_reprocess_reports_bad_files_and_processes_the_rest(tmp_path, capsys, checkpoint):
    archive = tmp_path / "archive"
    cases = bad_volumes(archive / "bad")
    good = [good_volume(archive / "good" / f"g{i}.nii.gz") for i in range(2)]
    short = good_volume(archive / "short.nii.gz", slices=1)
    out = tmp_path / "out"
    code = cli.main(["reprocess", str(archive), str(out), "--checkpoint", str(checkpoint), "--factor", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    for g in good:
        assert (out / g.relative_to(archive)).exists()
    for problem, path in cases + [("single slice", short)]:
        rel = path.relative_to(archive)
        assert not (out / rel).exists()
        assert any(str(rel) in line or str(path) in line for line in err.splitlines()), (rel, err)
    produced = {p for p in tree(out) if p.endswith(".nii.gz")}
    assert produced == {str(g.relative_to(archive)) for g in good}


# ----------------------------------------------------------------------------
# evaluate and train, through the dataset readers


def acdc_like(root: pathlib.Path, bad: pathlib.Path | None = None, slices_of_test: int = 6, bad_patient: int = 4) -> pathlib.Path:
    """Five patients: 4 and 5 at 5 mm (test), 1-3 at 10 mm; `bad` replaces `bad_patient`'s cine."""
    for n in range(1, 6):
        folder = root / "training" / f"patient{n:03d}"
        cine = folder / f"patient{n:03d}_4d.nii.gz"
        is_test = n in (4, 5)
        good_volume(cine, slices=slices_of_test if is_test else 6, spacing=5.0 if is_test else 10.0)
        if bad is not None and n == bad_patient:
            shutil.copyfile(bad, cine)
        (folder / "Info.cfg").write_text("ED: 1\nES: 2\nGroup: NOR\nHeight: 170\nNbFrame: 3\nWeight: 70\n")
    return root


@pytest.mark.parametrize("case", ["nan", "truncated", "zero"])
def test_evaluate_and_train_reject_a_bad_volume_in_their_split(tmp_path, capsys, checkpoint, case):
    problem, bad = {p.name.split(".")[0]: (e, p) for e, p in bad_volumes(tmp_path / "bad")}[case]
    for command, patient in (("evaluate", 4), ("train", 1)):  # a test patient, a training patient
        if case == "zero":  # readable, so its spacing decides its split: give it the patient's
            bad = write_nifti(tmp_path / f"zero_{patient}.nii.gz", np.zeros((16, 16, 5, 2), np.float32),
                              np.diag([1.5, 1.5, 5.0 if patient == 4 else 10.0, 1.0]))
        data = acdc_like(tmp_path / command / "acdc", bad=bad, bad_patient=patient)
        cine = data / "training" / f"patient{patient:03d}" / f"patient{patient:03d}_4d.nii.gz"
        out = tmp_path / command / "out"
        if command == "evaluate":
            code, lines = run_cli(capsys, "evaluate", "--checkpoint", checkpoint, "--data", data, "--out", out)
        else:
            code, lines = run_cli(capsys, "train", "--config", TINY, "--workdir", out, "--data", data, "--no-progress")
        assert_one_line(code, lines, 1, str(cine), problem)
        assert not out.exists()


def test_evaluate_needs_three_slices_and_refuses_existing_output(tmp_path, capsys, checkpoint):
    data = acdc_like(tmp_path / "acdc", slices_of_test=2)
    code, lines = run_cli(capsys, "evaluate", "--checkpoint", checkpoint, "--data", data, "--out", tmp_path / "e")
    assert_one_line(code, lines, 1, str(data), "no volume in the 'test' split has 3 or more slices")
    assert not (tmp_path / "e").exists()
    data = acdc_like(tmp_path / "acdc2")
    (tmp_path / "e2").mkdir()
    (tmp_path / "e2" / "mine.txt").write_text("keep")
    code, lines = run_cli(capsys, "evaluate", "--checkpoint", checkpoint, "--data", data, "--out", tmp_path / "e2")
    assert_one_line(code, lines, 1, str(tmp_path / "e2"), "exists|not empty")
    assert tree(tmp_path / "e2") == {"mine.txt"}


@pytest.mark.parametrize("override, fragment", [
    ("--config.train.steps=abc", "expected an integer"),
    ("--config.train.steps=0", "expected a positive integer"),
    ("--config.model.nope=1", "unknown key 'nope'"),
    ("--config.optim.learning_rate=-1e-3", "expected a positive number"),
    ("--config.data.crop_size=30", "multiple of 2**model.num_blocks"),
    ("--config.data.loader=torch", "expected one of auto, device, numpy, tfdata"),
    ("--config.model.dtype=float16", "expected one of float32, bfloat16"),
])
def test_train_invalid_config_value_is_exit_2_and_writes_nothing(tmp_path, capsys, override, fragment):
    data = acdc_like(tmp_path / "acdc")
    workdir = tmp_path / "w"
    code, lines = run_cli(capsys, "train", "--config", TINY, "--workdir", workdir, "--data", data, override)
    assert_one_line(code, lines, 2, override.split("=")[0], fragment)
    assert not workdir.exists()


def test_train_refuses_a_workdir_of_another_model(tmp_path, capsys, checkpoint):
    data = acdc_like(tmp_path / "acdc")
    workdir = tmp_path / "w"
    shutil.copytree(checkpoint, workdir)
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    code, lines = run_cli(capsys, "train", "--config", TINY, "--workdir", workdir, "--data", data, "--config.model.base_features=8")
    assert_one_line(code, lines, 1, str(workdir), "different model config")
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before


# ----------------------------------------------------------------------------
# As a user sees it: a real process, its exit code and stderr


def test_real_process_exit_codes_and_debug_traceback(tmp_path, checkpoint):
    nan = dict((p.name, p) for _, p in bad_volumes(tmp_path / "bad"))["nan.nii.gz"]
    # Two of the reader fuzz test's mutants, of the kinds that once gave a
    # traceback and a two-line message.
    raw = source_files(tmp_path)["int16"]
    code132 = tmp_path / "code132.nii.gz"
    code132.write_bytes(gzip.compress(with_field(raw, 70, "<i2", 132)))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw[:1000])
    expected = {nan: "1 voxel(s) are NaN or Inf", code132: "bad NIfTI header (data code 132 not recognized)",
                cut: "truncated: 12x10x4x3 int16 voxels from byte 352 need 3232 bytes, the file holds 1000"}

    def upsample(path, *extra):
        return "upsample", path, tmp_path / f"out_{path.name}", "--checkpoint", checkpoint, "--factor", "2", *extra

    procs = {path: jaxsr_process(*upsample(path)) for path in expected}  # at once: most of each is start-up
    for path, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1
        assert err.splitlines() == [f"jaxsr upsample: error: {path}: {expected[path]}"], err
        assert not (tmp_path / f"out_{path.name}").exists()
    r = run_jaxsr(*upsample(nan, "--debug"))
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = run_jaxsr("train", "--config", TINY, "--workdir", tmp_path / "w", "--data", tmp_path, "--config.train.batch_size=-4")
    assert r.returncode == 2 and "--config.train.batch_size=-4" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()
