"""Training: the step learns, data parallelism is exact, resume is exact, the NaN guard, configs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import ndimage

from jaxsr import parallel
from jaxsr.config import apply_override, load_config
from jaxsr.errors import ConfigError
from jaxsr.train import loop
from jaxsr.train import state as state_lib
from jaxsr.train import step as step_lib


def smooth_stacks(n=3, seed=0, shape=(40, 36, 5, 2)):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = ndimage.gaussian_filter(rng.random(shape), (3, 3, 1, 0))
        out.append(((x - x.min()) / np.ptp(x)).astype(np.float32))
    return out


def tiny(*overrides):
    return load_config("configs/tiny.py", list(overrides))


def params_of(state):
    model_state = state[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(model_state))}


def create_state_float64(config, create_state=state_lib.init_train_state):  # bound here: tests patch init_train_state with this
    """`init_train_state` with every parameter, moment and conv/norm computation in float64.

    Call inside `jax.enable_x64()`. Equivalence across device counts is compared in float64
    because float32 cannot show it: 3 Adam steps of the tiny model on 1 vs 2 devices differed by
    1.2e-4 (loss, relative) and 2.1e-3 (a parameter, absolute) on this 2-core EPYC, 2026-12-01.
    Adam's first steps move each parameter by about lr whatever its gradient's size, so a
    reduction-order change that flips a near-zero gradient moves that parameter by up to 2 lr.
    """
    model, optimizer = create_state(config)
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "dtype"):
            module.dtype = jnp.float64
    state = nnx.state((model, optimizer))
    nnx.update((model, optimizer), jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, state))
    return model, optimizer


# In float64 the 1/2/4/8-device runs of 3 steps differed by at most 6.6e-16 (loss, relative) and
# 3.3e-16 (parameters, absolute), measured as above. Scaling float32's worst amplification
# (2.1e-3 / float32 eps 1.2e-7 = 1.8e4) to float64 eps (2.2e-16) predicts 4e-12; 1e-9 leaves a
# 250x margin, while a real data-parallel bug (per-device batch statistics, a gradient averaged
# over the wrong count) moves the loss by more than 1e-3.
FLOAT64_DEVICE_TOL = 1e-9


def run_steps(config, batch, devices, n, create_state=state_lib.init_train_state):
    model, optimizer = create_state(config)
    graphdef, state = nnx.split((model, optimizer))
    mesh = parallel.make_mesh(devices)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    step = step_lib.build_step(graphdef, config.loss)
    losses = []
    for _ in range(n):
        b = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
        state, metrics = step(state, b)
        losses.append(float(metrics["loss"]))
    return state, losses


@pytest.fixture(scope="module")
def fixed_batch():
    from jaxsr.train.batches import sample_batch

    return sample_batch(smooth_stacks(), tiny().data, batch_size=8, seed=0, step=0, triplets=True)


def test_loss_falls_on_a_fixed_batch(fixed_batch):
    _, losses = run_steps(tiny(), fixed_batch, jax.devices(), 12)
    assert losses[-1] < 0.5 * losses[0]


def test_eight_devices_match_one(fixed_batch):
    assert jax.device_count() == 8
    with jax.enable_x64():  # see create_state_float64 for why, FLOAT64_DEVICE_TOL for the bound
        batch = {k: v.astype(np.float64) for k, v in fixed_batch.items()}
        state8, losses8 = run_steps(tiny(), batch, jax.devices(), 3, create_state_float64)
        state1, losses1 = run_steps(tiny(), batch, jax.devices()[:1], 3, create_state_float64)
    assert losses1[-1] < losses1[0]  # the steps did move the parameters
    np.testing.assert_allclose(losses8, losses1, rtol=FLOAT64_DEVICE_TOL)
    p8, p1 = params_of(state8), params_of(state1)
    assert all(v.dtype == np.float64 for v in p1.values())
    worst = max(float(np.max(np.abs(p8[k] - p1[k]))) for k in p8)
    assert worst < FLOAT64_DEVICE_TOL, worst


def test_batch_is_sharded_and_params_replicated(fixed_batch):
    state, _ = run_steps(tiny(), fixed_batch, jax.devices(), 1)
    leaf = jax.tree.leaves(state)[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8


@pytest.mark.parametrize("loader", ["device", "numpy", "tfdata"])
def test_interrupted_and_resumed_run_equals_straight_run(tmp_path, loader):
    stacks, val = smooth_stacks(seed=1), smooth_stacks(1, seed=2)
    config = tiny("--config.train.steps=4", "--config.train.checkpoint_every=100", f"--config.data.loader={loader}")
    straight = loop.train(config, tmp_path / "a", None, stacks=stacks, val_stacks=val, show_progress=False)
    loop.train(config, tmp_path / "b", None, stacks=stacks, val_stacks=val, show_progress=False, stop_after=2)
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    resumed = loop.train(config, tmp_path / "b", None, stacks=stacks, val_stacks=val, show_progress=False)
    assert straight["loader"] == resumed["loader"] == loader
    a, b = params_of(straight["state"]), params_of(resumed["state"])
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("loader", ["device", "numpy"])
def test_resumed_on_half_the_devices_continues_the_run(tmp_path, monkeypatch, loader):
    # Compared in float64 because in float32 a change of device count alone moves parameters
    # by up to 2e-3 (create_state_float64).
    stacks, val = smooth_stacks(seed=1), smooth_stacks(1, seed=2)
    config = tiny("--config.train.steps=4", "--config.train.checkpoint_every=100", f"--config.data.loader={loader}")
    monkeypatch.setattr(state_lib, "init_train_state", create_state_float64)
    with jax.enable_x64():
        straight = loop.train(config, tmp_path / "a", None, stacks=stacks, val_stacks=val, show_progress=False)
        loop.train(config, tmp_path / "b", None, stacks=stacks, val_stacks=val, show_progress=False, stop_after=2)
        other = loop.train(config, tmp_path / "b", None, stacks=stacks, val_stacks=val, show_progress=False, devices=jax.devices()[:4])
    a, b = params_of(straight["state"]), params_of(other["state"])
    assert all(v.dtype == np.float64 for v in b.values())
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) < FLOAT64_DEVICE_TOL


def test_unknown_loader_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="loader='torch'"):
        loop.train(tiny("--config.data.loader=torch"), tmp_path, None, stacks=smooth_stacks(), val_stacks=[], show_progress=False)


def test_auto_loader_keeps_data_that_fits_on_the_device(tmp_path):
    out = loop.train(tiny("--config.train.steps=1"), tmp_path, None, stacks=smooth_stacks(), val_stacks=[], show_progress=False)
    assert tiny().data.loader == "auto" and out["loader"] == "device"


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    stacks, val = smooth_stacks(seed=1), smooth_stacks(1, seed=2)
    config = tiny("--config.train.steps=4", "--config.train.checkpoint_every=1")
    loop.train(config, tmp_path, None, stacks=stacks, val_stacks=val, show_progress=False, stop_after=2)
    poisoned = [np.full_like(s, np.nan) for s in stacks]
    with pytest.raises(loop.NonFiniteLoss, match="step 3.*last good checkpoint.*step 2"):
        loop.train(config, tmp_path, None, stacks=poisoned, val_stacks=val, show_progress=False)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == 2


def test_nan_between_checks_is_named_at_its_step_and_never_saved(tmp_path):
    """A NaN in one slice reaches the loss at the first step whose batch draws it; the guard,
    read only at log and checkpoint steps, names that step and saves nothing after it."""
    from jaxsr.train import device_data
    from jaxsr.train.checkpoint import load_for_inference

    stacks = smooth_stacks(seed=1)
    stacks[1][:, :, 0, 1] = np.nan  # slice 0 of frame 1: only triplets starting there read it
    config = tiny("--config.train.steps=12", "--config.train.log_every=12", "--config.train.eval_every=12",
                  "--config.train.checkpoint_every=3", "--config.data.loader=device", "--config.seed=6")
    sample = jax.jit(device_data.sampler(config.data, batch_size=8, seed=6, triplets=True))
    table = device_data.put(stacks, 32, parallel.make_mesh())
    first_bad = next(s + 1 for s in range(12) if np.isnan(np.asarray(sample(table, s)["triplet"])).any())
    assert first_bad > 3 and first_bad % 3, first_bad  # the seed puts it after a checkpoint, between two
    with pytest.raises(loop.NonFiniteLoss, match=rf"loss became nan .* at step {first_bad};"):
        loop.train(config, tmp_path, None, stacks=stacks, val_stacks=[], show_progress=False)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved[-1] == first_bad // 3 * 3
    model, _ = load_for_inference(tmp_path / "checkpoints" / str(saved[-1]))
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(nnx.state(model)))


@pytest.mark.parametrize("loader", ["device", "numpy", "tfdata"])
def test_no_device_to_host_transfer_between_log_steps(tmp_path, monkeypatch, loader):
    """Every read of a jax.Array's value (float(), np.asarray, jax.device_get, printing) goes
    through ArrayImpl._value; it raises here after any step that is not a log, evaluation or
    checkpoint step. (jax.transfer_guard_device_to_host does not fire on CPU devices, whose
    buffers are host memory: measured on jax 0.10.2.)"""
    from jax._src.array import ArrayImpl

    steps, log_every, eval_every, checkpoint_every = 13, 4, 6, 100
    checks = {s for s in range(1, steps + 1) if s % log_every == 0 or s % eval_every == 0 or s == steps}
    allowed = {"now": True}
    value = ArrayImpl._value

    def guarded(self):
        if not allowed["now"]:
            raise AssertionError("device-to-host transfer between log steps")
        return value.fget(self)

    build = step_lib.build_loop_step

    def build_watched(*args, **kwargs):
        step_fn = build(*args, **kwargs)
        done = {"n": 0}

        def watched(*a):
            out = step_fn(*a)
            done["n"] += 1
            allowed["now"] = done["n"] in checks  # until the next step is dispatched
            return out

        return watched

    monkeypatch.setattr(ArrayImpl, "_value", property(guarded))
    monkeypatch.setattr(step_lib, "build_loop_step", build_watched)
    config = tiny(f"--config.train.steps={steps}", f"--config.train.log_every={log_every}", f"--config.train.eval_every={eval_every}",
                  f"--config.train.checkpoint_every={checkpoint_every}", f"--config.data.loader={loader}")
    val = [smooth_stacks(1, seed=2, shape=(40, 36, 6, 4))[0]]  # enough triplets for one validation batch
    out = loop.train(config, tmp_path, None, stacks=smooth_stacks(seed=1), val_stacks=val, show_progress=False)
    allowed["now"] = False  # the check can fail: the old per-step float(loss) is caught
    with pytest.raises(AssertionError, match="between log steps"):
        float(jax.tree.leaves(out["state"])[0].sum())
    allowed["now"] = True
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [4, 8, 12, 13]
    assert [r["step"] for r in records if "val/val_loss" in r] == [6, 12, 13]
    # The loop's own rate is logged at every log step after the compiling one.
    assert all(r["loop/images_per_s"] > 0 for r in records if "train/loss" in r)


def test_config_overrides():
    config = tiny("--config.train.steps=7", "--config.optim.learning_rate=2e-4", "--config.data.rot90=false", "--config.model.dtype=bfloat16", "--config.data.gamma_range=(0.9,1.1)")
    assert config.train.steps == 7 and config.optim.learning_rate == 2e-4
    assert config.data.rot90 is False and config.model.dtype == "bfloat16" and tuple(config.data.gamma_range) == (0.9, 1.1)
    for bad, message in [
        ("--config.train.stepz=3", "unknown key 'stepz'"),
        ("--config.train.steps=many", "expected an integer"),
        ("--config.train.steps=1.5", "expected an integer"),
        ("--config.data.rot90=3", "expected true or false"),
        ("--config.train.steps", "expected --config.KEY=VALUE"),
    ]:
        with pytest.raises(ConfigError, match=message):
            apply_override(tiny(), bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("configs/nope.py")


PREEMPT_SCRIPT = """
import sys
from jaxsr.config import load_config
from jaxsr.train import loop
from tests.test_train import smooth_stacks
config = load_config("configs/tiny.py", ["--config.train.steps=100000", "--config.train.checkpoint_every=100000"])
try:
    loop.train(config, sys.argv[1], None, stacks=smooth_stacks(seed=1), val_stacks=[], show_progress=False)
except loop.Preempted:
    sys.exit(143)
"""


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-c", PREEMPT_SCRIPT, str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and saved[0] >= 2
    assert f"saved {tmp_path / 'checkpoints' / str(saved[0])}" in out and "resume" in out
