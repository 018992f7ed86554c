"""Four shard processes on one output folder, SIGKILLed at random moments and rerun.

Each shard is a `reprocess_archive(..., shard=(i, 4))` subprocess with short
sleeps before each volume's compute and between writing each output's
temporary and renaming it (jaxsr.reprocess_pipeline.SLEEP_ENV, jaxsr.outputs.WRITE_SLEEP_ENV), so
that kills land in reads, compute and the middle of writes alike. A killed shard is restarted at once
with the same command while the others keep running; after every kill, every
file under its final name must already be byte-identical to the uninterrupted
reference (no partial outputs). When all shards have finished by themselves:
the outputs equal one uninterrupted unsharded run byte for byte, no temporary
file is left, every input has exactly one complete 'ok' line over all
manifests, and `jaxsr status --json` counts every file done once.

The reference is the same script unsharded, run first; it also fills a
persistent compilation cache that the shards then only read (a put is not
atomic, so no shard writes one that a kill could tear), which makes a restart
seconds instead of a recompile. Both versions are marked slow and run in
`make test-all`: the short one (8 files, up to 4 kills) and the long one (16
files, up to 10 kills, several seeds). A run whose shards all finish before
enough kills have landed is followed by another on a fresh folder (kill_until).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxsr import cli
from jaxsr.io import archive
from jaxsr.io.atomic import TEMP_MARKER
from jaxsr.outputs import WRITE_SLEEP_ENV
from jaxsr.reprocess_pipeline import SLEEP_ENV
from tests.test_reprocess import outputs_of, write_volume

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARDS = 4

SHARD_RUN = """
import sys
from tests.test_interpolate import tiny_config, tiny_model
from jaxsr.interpolate import interpolator_for
from jaxsr.reprocess import reprocess_archive
from jaxsr.upsample import UpsampleSettings
config = tiny_config()
summary = reprocess_archive(interpolator_for(tiny_model(config), config), config, sys.argv[1], sys.argv[2],
                            UpsampleSettings(factor=2, checkpoint=sys.argv[3]), shard=(int(sys.argv[4]), int(sys.argv[5])),
                            workers=2, progress=False)
sys.exit(1 if summary.failed else 0)
"""


def make_inputs(root: pathlib.Path, n_files: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n_files):
        rel = f"p{i % 3}/v{i:02d}.nii.gz"
        write_volume(root / rel, rng, (20 + 2 * (i % 3), 18 + (i % 2) * 4, 3 + i % 2, 2))
        names.append(rel)
    return sorted(names)


def start(inputs: pathlib.Path, out: pathlib.Path, ckpt: str, shard: int, shards: int, sleep_s: float) -> subprocess.Popen:
    cache = out.parent / "xla-cache"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
               **{SLEEP_ENV: str(sleep_s), WRITE_SLEEP_ENV: str(sleep_s / 2)})
    return subprocess.Popen([sys.executable, "-c", SHARD_RUN, str(inputs), str(out), ckpt, str(shard), str(shards)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def partial_files(out: pathlib.Path, expected: dict[str, bytes]) -> list[str]:
    """Final-named files whose bytes are not the finished output's."""
    return [rel for rel, data in outputs_of(out).items() if TEMP_MARKER not in rel and data != expected.get(rel)]


def run_with_kills(inputs: pathlib.Path, out: pathlib.Path, ckpt: str, expected: dict[str, bytes], *, seed: int,
                   max_kills: int, sleep_s: float) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    procs = {i: start(inputs, out, ckpt, i, SHARDS, sleep_s) for i in range(SHARDS)}
    counts = {"kills": 0, "reruns": 0, "partial_files_found": 0, "temporaries_after_kills": 0}
    deadline = time.monotonic() + 600
    while procs:
        assert time.monotonic() < deadline, "shards did not finish"
        time.sleep(float(rng.uniform(0.1, 0.6)))
        for i, proc in list(procs.items()):
            if proc.poll() is not None:
                _, err = proc.communicate()
                assert proc.returncode == 0, f"shard {i}: {err[-3000:]}"
                del procs[i]
        # Victims: shards that reached their run (their manifest exists), so kills land in real work.
        working = [i for i in procs if (out / archive.STATE_DIR / archive.manifest_name((i, SHARDS))).exists()]
        if counts["kills"] >= max_kills or not working:
            continue
        victim = int(rng.choice(working))
        time.sleep(float(rng.uniform(0.0, 4 * sleep_s)))  # into its reads, compute or writes
        if procs[victim].poll() is not None:
            continue  # finished meanwhile: collected above on the next round
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(timeout=60)
        counts["kills"] += 1
        counts["partial_files_found"] += len(partial_files(out, expected))
        counts["temporaries_after_kills"] += sum(TEMP_MARKER in p.name for p in out.rglob("*"))
        procs[victim] = start(inputs, out, ckpt, victim, SHARDS, sleep_s)
        counts["reruns"] += 1
    return counts


def check_finished(out: pathlib.Path, names: list[str], expected: dict[str, bytes], capsys) -> None:
    assert outputs_of(out) == expected
    assert not [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    ok_lines = [r.input for r in archive.read_records(out) if r.status == "ok"]
    assert sorted(ok_lines) == names  # each file done exactly once over all manifests
    capsys.readouterr()
    assert cli.main(["status", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["done"] == {"count": len(names), "files": names}
    assert report["failed"]["count"] == 0 and report["pending"]["count"] == 0
    assert len(report["manifests"]) == SHARDS


def reference_outputs(inputs: pathlib.Path, folder: pathlib.Path, ckpt: str) -> dict[str, bytes]:
    """One uninterrupted, unsharded run of the same script (which also fills the compilation cache)."""
    proc = start(inputs, folder, ckpt, 0, 1, 0.0)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return outputs_of(folder)


def kill_until(inputs: pathlib.Path, tmp: pathlib.Path, ckpt: str, expected: dict[str, bytes], names: list[str],
               capsys, *, seed: int, min_kills: int, max_kills: int, sleep_s: float, attempts: int = 3) -> dict[str, int]:
    """Kill runs on fresh output folders until `min_kills` kills have landed in all, each run checked in full.

    How many kills land in one run is up to the scheduler: when every shard slips
    through its kills and finishes, the run is over (CI once saw 4 of 10 that way).
    That says nothing about the product, so a short run is followed by another
    on a new folder, with another seed, rather than the test failing or waiting on luck.
    """
    total = {"runs": 0, "kills": 0, "reruns": 0, "partial_files_found": 0, "temporaries_after_kills": 0}
    for attempt in range(attempts):
        out = tmp / f"out{attempt}"
        counts = run_with_kills(inputs, out, ckpt, expected, seed=seed + 1000 * attempt,
                                max_kills=max_kills - total["kills"], sleep_s=sleep_s)
        assert counts["reruns"] == counts["kills"] and counts["partial_files_found"] == 0
        check_finished(out, names, expected, capsys)
        total["runs"] += 1
        for key, value in counts.items():
            total[key] += value
        if total["kills"] >= min_kills:
            break
    assert total["kills"] >= min_kills, total
    return total


@pytest.mark.slow  # kill run: real reprocess processes killed and rerun
def test_four_shards_killed_and_rerun_match_one_uninterrupted_run(tmp_path, capsys):
    names = make_inputs(tmp_path / "in", 8, seed=0)
    ckpt = str(tmp_path / "ckpt")
    expected = reference_outputs(tmp_path / "in", tmp_path / "ref", ckpt)
    counts = kill_until(tmp_path / "in", tmp_path, ckpt, expected, names, capsys,
                        seed=0, min_kills=2, max_kills=4, sleep_s=0.5)
    with capsys.disabled():
        print(f"\nkill test, 4 shards, {len(names)} files: {counts}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_four_shards_many_kills(tmp_path, capsys, seed):
    names = make_inputs(tmp_path / "in", 16, seed=seed)
    ckpt = str(tmp_path / "ckpt")
    expected = reference_outputs(tmp_path / "in", tmp_path / "ref", ckpt)
    counts = kill_until(tmp_path / "in", tmp_path, ckpt, expected, names, capsys,
                        seed=seed, min_kills=5, max_kills=10, sleep_s=0.3)
    with capsys.disabled():
        print(f"\nkill test seed {seed}, 4 shards, {len(names)} files: {counts}")
