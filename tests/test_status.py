"""`jaxsr status`: merged manifests, done / failed / pending, exit codes, time; a bad file in one shard."""

from __future__ import annotations

import json

import pytest

from jaxsr import cli
from jaxsr.interpolate import interpolator_for
from jaxsr.io import archive
from jaxsr.reprocess import reprocess_archive
from jaxsr.status import archive_status, busy_seconds
from jaxsr.upsample import UpsampleSettings
from tests.test_reprocess import make_archive, model_and_config  # noqa: F401  (fixture)


def status_json(capsys, *argv) -> tuple[int, dict]:
    code = cli.main(["status", *map(str, argv), "--json"])
    return code, json.loads(capsys.readouterr().out)


def record(rel, status, finished, seconds=1.0, error=None, **times):
    return archive.Record(rel, "sha-" + rel, rel, status, seconds, error, finished=finished, **times)


def test_manifests_merge_by_finish_time_and_keep_reading_the_old_one(tmp_path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    for rel in ("a/1.nii.gz", "a/2.nii.gz", "a/3.nii.gz"):
        (out / rel).write_bytes(b"x")
    legacy = archive.Manifest(out / archive.MANIFEST_NAME)  # a run from before per-shard manifests
    legacy.append(archive.Record("a/1.nii.gz", "s", "a/1.nii.gz", "failed", 2.0, "boom"))
    legacy.append(archive.Record("a/1.nii.gz", "s", "a/1.nii.gz", "ok", 2.0))
    legacy.append(archive.Record("a/2.nii.gz", "s", "a/2.nii.gz", "ok", 2.0))
    state = out / archive.STATE_DIR
    shard0 = archive.Manifest(state / archive.manifest_name((0, 2)))
    shard1 = archive.Manifest(state / archive.manifest_name((1, 2)))
    state.mkdir()
    shard1.append(record("a/2.nii.gz", "failed", finished=100.0, error="a/2.nii.gz: disk full"))
    shard0.append(record("a/3.nii.gz", "failed", finished=101.0, error="x"))
    shard1.append(record("a/3.nii.gz", "ok", finished=102.0, device_s=0.5, read_s=0.1))
    with open(shard0.path, "ab") as f:
        f.write(b'{"input": "a/4.nii.gz", "sta')  # killed mid-line
    latest = archive.latest_records(out)
    assert {k: v.status for k, v in latest.items()} == {"a/1.nii.gz": "ok", "a/2.nii.gz": "failed", "a/3.nii.gz": "ok"}

    status = archive_status(out)
    assert status.done == ["a/1.nii.gz", "a/3.nii.gz"]
    assert status.failed == {"a/2.nii.gz": "a/2.nii.gz: disk full"}
    assert status.pending == [] and status.exit_code == 1
    assert [m["file"] for m in status.manifests] == ["manifest.jsonl", ".jaxsr/manifest-shard-0-of-2.jsonl",
                                                    ".jaxsr/manifest-shard-1-of-2.jsonl"]
    assert status.wall_s == pytest.approx(3.0)  # [99, 100] U [100, 101] U [101, 102]; legacy lines carry no times


def test_text_names_every_per_volume_time(tmp_path, capsys):
    """The text output, read back: each mean under its full name (it once printed 'secon' for the total)."""
    out = tmp_path / "out"
    manifest = archive.Manifest(out / archive.STATE_DIR / archive.manifest_name())
    (out / archive.STATE_DIR).mkdir(parents=True)
    times = {"device_s": 1.5, "read_s": 0.25, "decode_s": 0.5, "encode_s": 0.75, "write_s": 0.125}
    for i, finished in enumerate((10.0, 13.0)):  # busy [8, 10] U [9, 13]: 5 s
        (out / f"{i}.nii.gz").write_bytes(b"x")
        manifest.append(record(f"{i}.nii.gz", "ok", finished, seconds=2.0 + 2 * i, **times))
    assert cli.main(["status", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{out}: 2 done, 0 failed, 0 pending"
    assert lines[1] == ("  time: 5.0 s with volumes in flight, 0.4 volumes/s; per volume: total 3.000 s, "
                        "device 1.500 s, read 0.250 s, decode 0.500 s, encode 0.750 s, write 0.125 s")
    assert lines[2] == "  .jaxsr/manifest-shard-0-of-1.jsonl: 2 records, 2 ok, 0 failed, device busy 60%"  # 2 x 1.5 s of 5


def test_busy_seconds_is_the_union_of_intervals():
    records = [record("a", "ok", finished=f, seconds=s) for f, s in [(10, 4), (9, 2), (20, 1), (30, 0.5), (30.25, 0.5)]]
    assert busy_seconds(records) == pytest.approx(4 + 1 + 0.75)


def test_status_exit_codes_and_pending_against_the_input(tmp_path, capsys, rng):
    names = make_archive(tmp_path / "in", rng)
    out = tmp_path / "out"
    (out / archive.STATE_DIR).mkdir(parents=True)
    code, report = status_json(capsys, out, "--input", tmp_path / "in")
    assert code == 3 and report["pending"] == {"count": 4, "files": names} and report["done"]["count"] == 0
    manifest = archive.Manifest(out / archive.STATE_DIR / archive.manifest_name())
    for i, rel in enumerate(names):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"x")
        manifest.append(record(rel, "ok", finished=1000.0 + i))
    code, report = status_json(capsys, out, "--input", tmp_path / "in")
    assert code == 0 and report["done"] == {"count": 4, "files": names}
    assert report["failed"]["count"] == 0 and report["pending"]["count"] == 0
    assert report["volumes_per_s"] == pytest.approx(4 / 4.0)
    (out / names[0]).unlink()  # an output deleted since: to be redone
    code, report = status_json(capsys, out, "--input", tmp_path / "in")
    assert code == 3 and report["pending"]["files"] == [names[0]]
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 1
    assert "output folder does not exist" in capsys.readouterr().err


def test_a_bad_file_in_one_shard_is_reported_and_the_other_shards_are_unaffected(tmp_path, capsys, rng, model_and_config):
    model, config = model_and_config
    names = make_archive(tmp_path / "in", rng)
    bad = tmp_path / "in" / "b" / "c" / "p0.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    files = [p.as_posix() for p in archive.find_volumes(tmp_path / "in")]
    shards = [archive.take_shard(files, i, 2) for i in range(2)]
    bad_shard = next(i for i in range(2) if "b/c/p0.nii.gz" in shards[i])
    assert len(shards[bad_shard]) == 3  # the bad file shares its shard with good ones
    out = tmp_path / "out"
    interpolator = interpolator_for(model, config)
    summaries = {}
    for i in sorted(range(2), key=lambda i: i == bad_shard):  # the bad file's shard last
        if i == bad_shard:  # the others done: its files are pending
            code, report = status_json(capsys, out, "--input", tmp_path / "in")
            assert code == 3 and report["pending"]["files"] == shards[i] and report["done"]["count"] == len(shards[1 - i])
        summaries[i] = reprocess_archive(interpolator, config, tmp_path / "in", out, UpsampleSettings(factor=2),
                                         shard=(i, 2), workers=2, progress=False)
    for i, summary in summaries.items():
        expected = set(shards[i]) - {"b/c/p0.nii.gz"}
        assert sorted(summary.ok) == sorted(expected) and len(summary.failed) == (i == bad_shard)
    code, report = status_json(capsys, out, "--input", tmp_path / "in")
    assert code == 1
    assert report["failed"]["files"] == ["b/c/p0.nii.gz"]
    assert "p0.nii.gz" in report["failed"]["errors"]["b/c/p0.nii.gz"] and "\n" not in report["failed"]["errors"]["b/c/p0.nii.gz"]
    assert report["done"]["files"] == names and report["pending"]["count"] == 0
    assert sorted(m["file"] for m in report["manifests"]) == [f".jaxsr/manifest-shard-{i}-of-2.jsonl" for i in range(2)]
    assert all(r.device_s is not None and r.read_s is not None and r.encode_s is not None for r in archive.read_records(out) if r.status == "ok")
    assert cli.main(["status", str(out), "--input", str(tmp_path / "in")]) == 1
    text = capsys.readouterr().out
    assert "4 done, 1 failed, 0 pending of 5" in text and "failed: b/c/p0.nii.gz: " in text
