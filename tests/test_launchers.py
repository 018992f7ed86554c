"""The reprocessing launchers: they parse, a dry run prints the shard commands, the local one runs them all."""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LOCAL = REPO / "launch" / "local_reprocess.sh"
SLURM = REPO / "launch" / "slurm_reprocess_array.sbatch"
ARGS = ["in dir", "out", "--checkpoint", "ck", "--factor", "2"]


def run(script, *args, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_VISIBLE_DEVICES"))}
    environment.update(env)
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=environment, timeout=60)


@pytest.mark.parametrize("script", [LOCAL, SLURM], ids=["local", "slurm"])
def test_launchers_parse(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_local_dry_run_prints_one_shard_per_visible_gpu():
    result = run(LOCAL, "--dry-run", *ARGS, CUDA_VISIBLE_DEVICES="0,1,2,3", JAXSR="jaxsr")
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines()]
    assert commands == [
        ["env", f"CUDA_VISIBLE_DEVICES={i}", "jaxsr", "reprocess", "in dir", "out", "--shard", f"{i}/4", "--no-progress", *ARGS[2:]]
        for i in range(4)
    ]
    two = run(LOCAL, "--dry-run", "--gpus", "3,5", *ARGS, JAXSR="jaxsr")
    assert [shlex.split(line)[1:2] + shlex.split(line)[7:8] for line in two.stdout.splitlines()] == [
        ["CUDA_VISIBLE_DEVICES=3", "0/2"], ["CUDA_VISIBLE_DEVICES=5", "1/2"]]
    assert not (pathlib.Path("out") / ".jaxsr").exists()  # a dry run makes nothing


def test_slurm_dry_run_prints_this_tasks_shard():
    result = run(SLURM, "--dry-run", *ARGS, SLURM_ARRAY_TASK_ID="5", SLURM_ARRAY_TASK_MIN="2", SLURM_ARRAY_TASK_COUNT="8",
                 SLURM_CPUS_PER_TASK="6", JAXSR="jaxsr")
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == ["jaxsr", "reprocess", "in dir", "out", "--shard", "3/8", "--workers", "3",
                                          "--no-progress", *ARGS[2:]]
    outside = run(SLURM, "--dry-run", *ARGS)
    assert outside.returncode != 0 and "--array" in outside.stderr


def test_local_launcher_runs_every_shard_and_reports_the_worst_exit(tmp_path):
    """A stand-in jaxsr records each call; shard 1 'fails'; all shards still run and the launcher exits 1."""
    calls = tmp_path / "calls"
    calls.mkdir()
    fake = tmp_path / "jaxsr"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$CUDA_VISIBLE_DEVICES $*" > {calls}/"$$"\n'
        'case " $* " in *" --shard 1/3 "*) echo "1 failed" >&2; exit 1 ;; esac\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    out = tmp_path / "out"
    result = run(LOCAL, "--gpus", "0,1,2", str(tmp_path / "in"), str(out), "--factor", "2", JAXSR=str(fake))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = sorted(p.read_text().strip() for p in calls.iterdir())
    shards = sorted(line.split()[:1] + line.split()[4:6] for line in lines if " reprocess " in f" {line} ")
    assert shards == [["0", "--shard", "0/3"], ["1", "--shard", "1/3"], ["2", "--shard", "2/3"]]
    assert any(" status " in f" {line} " for line in lines)  # the merged report at the end
    assert "1 failed" in (out / ".jaxsr" / "logs" / "shard-1-of-3.log").read_text()
    assert "shard 1/3 exited 1" in result.stdout
