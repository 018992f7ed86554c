"""Fault injection: training killed with SIGKILL at random moments, restarted, ends where an uninterrupted run ends.

Each attempt starts the run as a subprocess, waits until it is training (its
metrics file has grown), sleeps a random 0-2.5 s, which lands in steps,
evaluations and checkpoint writes alike, and kills it with SIGKILL; the same
command is restarted until it finishes by itself. The final parameters must
equal, bit for bit, those of a run that was never interrupted: checkpoints are
atomic (orbax writes a temporary folder and renames it) and the batches are a
pure function of (seed, step).

The short version (one seed, up to three kills) runs in `make test`; the
marked-slow one (five seeds, up to five kills each) with `make test-all`.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 120

RUN = f"""
import sys
from jaxsr.config import load_config
from jaxsr.train import loop
from tests.test_train import smooth_stacks
config = load_config("configs/tiny.py", ["--config.train.steps={STEPS}", "--config.train.checkpoint_every=10",
                                         "--config.train.eval_every=30", "--config.train.log_every=2"])
loop.train(config, sys.argv[1], None, stacks=smooth_stacks(seed=1), val_stacks=smooth_stacks(1, seed=2), show_progress=False)
"""


def _start(workdir: pathlib.Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", RUN, str(workdir)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _lines(path: pathlib.Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _final_params(workdir: pathlib.Path) -> dict:
    import jax
    from flax import nnx

    from jaxsr.train.checkpoint import load_for_inference

    model, _ = load_for_inference(workdir / "checkpoints" / str(STEPS))
    pure = nnx.to_pure_dict(nnx.state(model))
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(pure)}


def run_with_kills(workdir: pathlib.Path, seed: int, max_kills: int) -> dict:
    """Kills the run up to `max_kills` times, then lets it finish. Returns counts."""
    rng = np.random.default_rng(seed)
    metrics = workdir / "metrics.jsonl"
    kills = resumed_with_progress = 0
    while True:
        before = _lines(metrics)
        proc = _start(workdir)
        if kills < max_kills:
            deadline = time.monotonic() + 240
            while proc.poll() is None and _lines(metrics) <= before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(float(rng.uniform(0.0, 2.5)))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                kills += 1
                resumed_with_progress += _lines(metrics) > before
                continue
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        return {"kills": kills, "restarts": kills, "progress_between_kills": resumed_with_progress}


def _check_seed(tmp_path: pathlib.Path, seed: int, max_kills: int, reference: dict) -> dict:
    workdir = tmp_path / f"killed{seed}"
    counts = run_with_kills(workdir, seed, max_kills)
    got = _final_params(workdir)
    assert got.keys() == reference.keys()
    for k in reference:
        np.testing.assert_array_equal(got[k], reference[k], err_msg=f"seed {seed}: {k}")
    # Kills mid-save may leave orbax temporaries; none may pass for a checkpoint.
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == STEPS
    return counts


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("straight") / "run"
    proc = _start(workdir)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return _final_params(workdir)


@pytest.mark.slow  # kill run: real training processes killed and restarted
def test_sigkill_then_restart_equals_an_uninterrupted_run(tmp_path, reference):
    counts = _check_seed(tmp_path, seed=0, max_kills=3, reference=reference)
    assert counts["kills"] == 3 and counts["progress_between_kills"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_sigkill_harness_many_seeds(tmp_path, reference, seed):
    counts = _check_seed(tmp_path, seed=seed, max_kills=5, reference=reference)
    print(f"seed {seed}: {counts}")
    assert counts["kills"] >= 1
