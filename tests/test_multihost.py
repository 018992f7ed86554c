"""Two local processes joined with jax.distributed train a few steps and agree."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import jax
    from jaxsr import parallel
    parallel.maybe_initialize_distributed()
    import numpy as np
    from jaxsr.config import load_config
    from jaxsr.train import loop
    from tests.test_train import smooth_stacks
    assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.device_count())
    config = load_config("configs/tiny.py", ["--config.train.steps=2", "--config.train.eval_every=100", "--config.train.checkpoint_every=100"])
    out = loop.train(config, sys.argv[1], None, stacks=smooth_stacks(seed=1), val_stacks=[], show_progress=False)
    leaves = jax.tree.leaves(out["state"][0])
    total = float(sum(np.asarray(jax.device_get(l.addressable_data(0))).astype(np.float64).sum() for l in leaves))
    print("RESULT", json.dumps({"process": jax.process_index(), "checksum": total}))
    """
)


def test_two_processes_agree(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = []
    for i in range(2):
        env = dict(os.environ, JAXSR_COORDINATOR=f"localhost:{port}", JAXSR_NUM_PROCESSES="2", JAXSR_PROCESS_ID=str(i),
                   XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu", PYTHONPATH=os.getcwd())
        procs.append(subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "work")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.split("RESULT", 1)[1]))
    assert results[0]["checksum"] == pytest.approx(results[1]["checksum"], rel=1e-6)
