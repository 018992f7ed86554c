"""Archive reprocessing: manifest, bad files, shards, resuming after kill -9."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from jaxsr import cli
from jaxsr.interpolate import interpolator_for
from jaxsr.io import archive
from jaxsr.io.atomic import TEMP_MARKER
from jaxsr.reprocess import reprocess_archive
from jaxsr.reprocess_pipeline import SLEEP_ENV
from jaxsr.upsample import UpsampleSettings
from jaxsr.train import checkpoint as checkpoint_lib
from tests.test_interpolate import oblique_affine, tiny_config, tiny_model

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_and_config():
    config = tiny_config()
    return tiny_model(config), config


def write_volume(path: pathlib.Path, rng, shape) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = 500.0 * (rng.uniform(size=shape[:2]) > 0.7)
    data = (rng.uniform(0, 300, size=shape) + blob.reshape(shape[:2] + (1,) * (len(shape) - 2))).astype(np.float32)
    affine = oblique_affine((1.6, 1.5, 8.0))
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    nib.save(image, str(path))


def make_archive(root: pathlib.Path, rng) -> list[str]:
    files = {
        "a/p1.nii.gz": (24, 20, 3, 2),
        "a/p2.nii.gz": (30, 26, 4, 2),
        "b/p3.nii": (20, 20, 3),
        "b/c/p4.nii.gz": (24, 20, 4),
    }
    for rel, shape in files.items():
        write_volume(root / rel, rng, shape)
    (root / "notes.txt").write_text("not a volume")
    return sorted(files)


def outputs_of(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file but the manifests (OUT_DIR/.jaxsr), with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and archive.STATE_DIR not in p.relative_to(folder).parts
    }


def test_find_volumes_pattern_and_shards(tmp_path, rng):
    names = make_archive(tmp_path / "in", rng)
    (tmp_path / "in" / "a" / f".p9.nii.gz{TEMP_MARKER}1-ab.nii.gz").write_bytes(b"x")
    found = [p.as_posix() for p in archive.find_volumes(tmp_path / "in")]
    assert found == names
    assert [p.as_posix() for p in archive.find_volumes(tmp_path / "in", "a/*")] == ["a/p1.nii.gz", "a/p2.nii.gz"]
    assert [p.as_posix() for p in archive.find_volumes(tmp_path / "in", "*.nii")] == ["b/p3.nii"]
    shards = [archive.take_shard(found, i, 3) for i in range(3)]
    assert sorted(sum(shards, [])) == found and sum(map(len, shards)) == len(found)
    assert archive.parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(Exception):
            archive.parse_shard(bad)


def test_manifest_survives_a_torn_line(tmp_path):
    manifest = archive.Manifest(tmp_path / "m.jsonl")
    manifest.append(archive.Record("a", "1", "a", "failed", 0.1, "boom"))
    with open(manifest.path, "ab") as f:
        f.write(b'{"input": "b", "inpu')  # killed mid-write
    manifest.append(archive.Record("a", "1", "a", "ok", 0.2))
    records = manifest.read()
    assert [(r.input, r.status) for r in records] == [("a", "failed"), ("a", "ok")]
    assert manifest.latest()["a"].status == "ok"


def test_reprocess_archive_with_a_corrupt_file(tmp_path, rng, monkeypatch, model_and_config, capsys):
    monkeypatch.setattr(checkpoint_lib, "load_for_inference", lambda path: model_and_config)
    names = make_archive(tmp_path / "in", rng)
    corrupt = tmp_path / "in" / "b" / "broken.nii.gz"
    corrupt.write_bytes((tmp_path / "in" / "a" / "p1.nii.gz").read_bytes()[:300])  # truncated
    out = tmp_path / "out"
    args = ["reprocess", str(tmp_path / "in"), str(out), "--checkpoint", str(tmp_path), "--factor", "2", "--workers", "2", "--no-progress"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "1 failed" in err and "broken.nii.gz" in err
    for rel in names:
        image = nib.load(str(out / rel))
        source = nib.load(str(tmp_path / "in" / rel))
        assert image.shape[2] == 2 * source.shape[2] - 1
        np.testing.assert_array_equal(image.get_fdata()[:, :, ::2], source.get_fdata())
        assert (out / (rel + ".json")).is_file()
    assert not (out / "b" / "broken.nii.gz").exists()
    records = archive.read_records(out)
    status = {r.input: r.status for r in records}
    assert status == {**{n: "ok" for n in names}, "b/broken.nii.gz": "failed"}
    failed = [r for r in records if r.status == "failed"][0]
    assert "broken.nii.gz" in failed.error and "\n" not in failed.error and failed.input_sha256
    ok_sha = {r.input: r.input_sha256 for r in records if r.status == "ok"}
    assert ok_sha["a/p1.nii.gz"] == archive.sha256_file(tmp_path / "in" / "a" / "p1.nii.gz")

    # Rerun: the done ones are skipped, the failed one is retried (and fails again).
    before = outputs_of(out)
    mtimes = {rel: (out / rel).stat().st_mtime_ns for rel in names}
    assert cli.main(args) == 1
    assert "4 already done" in capsys.readouterr().err
    assert {rel: (out / rel).stat().st_mtime_ns for rel in names} == mtimes
    assert outputs_of(out) == before
    assert [r.status for r in archive.read_records(out)].count("failed") == 2

    # Fixed input and one changed input: exactly those two are processed.
    write_volume(corrupt, rng, (20, 20, 3))
    write_volume(tmp_path / "in" / "a" / "p2.nii.gz", rng, (30, 26, 4, 2))
    assert cli.main(args) == 0
    assert "2 upsampled, 3 already done, 0 failed" in capsys.readouterr().out
    assert (out / "b" / "broken.nii.gz").is_file()


def test_shards_split_the_work(tmp_path, rng, model_and_config):
    model, config = model_and_config
    names = make_archive(tmp_path / "in", rng)
    done = []
    for i in range(2):
        summary = reprocess_archive(interpolator_for(model, config), config, tmp_path / "in", tmp_path / "out", UpsampleSettings(factor=2), shard=(i, 2), workers=1, progress=False)
        done.append(summary.ok)
        assert not summary.failed and not summary.skipped
    assert sorted(done[0] + done[1]) == names and not set(done[0]) & set(done[1])


_KILLED_RUN = """
import sys
from tests.test_interpolate import tiny_config, tiny_model
from jaxsr.interpolate import interpolator_for
from jaxsr.reprocess import reprocess_archive
from jaxsr.upsample import UpsampleSettings
config = tiny_config()
reprocess_archive(interpolator_for(tiny_model(config), config), config, sys.argv[1], sys.argv[2],
                  UpsampleSettings(factor=3, checkpoint=sys.argv[3]), workers=2, progress=False)
"""


@pytest.mark.slow  # kill run: a real reprocess process killed between files
def test_kill_then_rerun_matches_an_uninterrupted_run(tmp_path, rng, model_and_config):
    model, config = model_and_config
    names = make_archive(tmp_path / "in", rng)
    ckpt = str(tmp_path / "ckpt")
    reference = reprocess_archive(interpolator_for(model, config), config, tmp_path / "in", tmp_path / "ref", UpsampleSettings(factor=3, checkpoint=ckpt), workers=2, progress=False)
    assert sorted(reference.ok) == names
    expected = outputs_of(tmp_path / "ref")

    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), **{SLEEP_ENV: "1.5"})
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(tmp_path / "in"), str(out), ckpt],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    manifest = out / archive.STATE_DIR / archive.manifest_name()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.exists() and '"ok"' in manifest.read_text():
                break
            time.sleep(0.05)
        time.sleep(0.4)  # somewhere in the second file's sleep or compute
    finally:
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    partial = outputs_of(out)
    assert 0 < len([k for k in partial if not k.endswith(".json")]) < len(names)
    for rel, data in partial.items():
        assert TEMP_MARKER in rel or data == expected[rel], f"{rel} is partial"

    # Leave a stale temporary as a writer killed mid-file would.
    stale = out / "b" / "c" / f".p4.nii.gz{TEMP_MARKER}99999-dead.nii.gz"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")
    resumed = reprocess_archive(interpolator_for(model, config), config, tmp_path / "in", out, UpsampleSettings(factor=3, checkpoint=ckpt), workers=2, progress=False)
    assert not resumed.failed and sorted(resumed.ok + resumed.skipped) == names and resumed.skipped
    assert outputs_of(out) == expected
    assert not [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    latest = archive.latest_records(out)
    assert sorted(latest) == names and all(r.status == "ok" for r in latest.values())
    sidecar = json.loads((out / "a" / "p1.nii.gz.json").read_text())
    assert sidecar["factor"] == 3 and sidecar["checkpoint"] == os.path.abspath(ckpt)


def test_a_volume_the_device_cannot_hold_is_redone_on_the_host_path(tmp_path, rng, model_and_config, monkeypatch):
    """RESOURCE_EXHAUSTED from the whole-volume programs: the scipy path (the model streamed in batches) takes over."""
    from jaxsr import upsample

    model, config = model_and_config
    names = make_archive(tmp_path / "in", rng)
    wait, calls = upsample.DeviceStages.wait, []

    def wait_or_run_out(self, started):
        calls.append(started)
        if len(calls) == 2:  # the watcher waits in file order: a/p2
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2TiB")
        wait(self, started)

    monkeypatch.setattr(upsample.DeviceStages, "wait", wait_or_run_out)
    summary = reprocess_archive(interpolator_for(model, config), config, tmp_path / "in", tmp_path / "out",
                                UpsampleSettings(factor=2), workers=2, progress=False)
    assert sorted(summary.ok) == names and not summary.failed
    sidecars = {rel: json.loads((tmp_path / "out" / (rel + ".json")).read_text())["preprocess"] for rel in names}
    assert sidecars == {**dict.fromkeys(names, "device"), "a/p2.nii.gz": "scipy"}
    source = nib.load(str(tmp_path / "in" / "a" / "p2.nii.gz")).get_fdata()
    np.testing.assert_array_equal(nib.load(str(tmp_path / "out" / "a" / "p2.nii.gz")).get_fdata()[:, :, ::2], source)


def test_progress_lines_show_volumes_per_second_and_the_eta(tmp_path, rng, model_and_config, monkeypatch):
    import io

    from jaxsr import progress

    model, config = model_and_config
    names = make_archive(tmp_path / "in", rng)
    stream = io.StringIO()

    class EveryVolume(progress.Progress):  # a line per update instead of every 30 s
        def __init__(self, total, **kwargs):
            super().__init__(total, stream=stream, every_s=0.0, tty=False, **kwargs)

    monkeypatch.setattr(progress, "Progress", EveryVolume)
    reprocess_archive(interpolator_for(model, config), config, tmp_path / "in", tmp_path / "out", UpsampleSettings(factor=2),
                      workers=2, progress=True)
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"reprocess: volume {i}/4 ({25 * i}%)" for i in range(1, 5)]
    assert all(re.search(r", [0-9.]+ volumes/s, failed 0, device_busy \d+%, ETA \d+s$", line) for line in lines), lines
    assert len(names) == 4
