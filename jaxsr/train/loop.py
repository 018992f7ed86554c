"""The training loop: set up, restore, then data-parallel steps on a device mesh with validation and checkpoints.

In the steady state the host only dispatches steps: metrics stay on the
device except at log steps, the NaN guard is a record on the device
(jaxsr.train.guard) read when the loop reads anything, and with the "device"
loader the batches are drawn inside the step. Log, evaluation and checkpoint
steps are where the host waits for the device.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import signal
import time

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsr import parallel
from jaxsr.config import from_json, target_spacing, to_json, validate
from jaxsr.data import slice_table
from jaxsr.errors import UserError
from jaxsr.progress import Progress
from jaxsr.train import batches as batches_lib
from jaxsr.train import checkpoint as ckpt
from jaxsr.train import gap_rule
from jaxsr.train import guard
from jaxsr.train import inputs as inputs_lib
from jaxsr.train import state as state_lib
from jaxsr.train import step as step_lib

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.jsonl"


class NonFiniteLoss(UserError):
    """Training produced NaN/Inf; the last good checkpoint is kept."""


class Preempted(Exception):
    pass


@dataclasses.dataclass
class Run:
    """Everything `setup` prepared for `restore` and `loop`."""

    config: object  # as this training set trains with it (jaxsr.train.gap_rule); the workdir keeps the user's
    workdir: pathlib.Path
    mesh: jax.sharding.Mesh
    graphdef: object  # of (model, optimizer)
    model_graphdef: object  # of the model alone, for evaluation
    initial_state: object  # the freshly initialised (model, optimizer) state; `restore` fills it from a checkpoint
    inputs: inputs_lib.Inputs
    val: list  # validation batches, on the device
    last: object  # orbax managers: the last N steps, the best by validation loss
    best: object


def train(config, workdir, data_dir, *, stacks=None, val_stacks=None, slice_gaps_mm=None, show_progress: bool = True,
          stop_after: int | None = None, devices=None, split_kind: str | None = None) -> dict:
    """Trains (or resumes) in `workdir`; returns {'state', 'graphdef', 'val' (last validation metrics), 'loader', 'loss', 'steps'}.

    'loss' and 'steps' are the config.loss (a dict) and train.steps the run
    used, which the training set's slice gap decides (jaxsr.train.gap_rule).
    `stacks`/`val_stacks` (lists of (X, Y, Z[, T]) arrays in [0, 1]) replace the
    dataset in tests and benchmarks; `slice_gaps_mm` are the slice gaps of
    `stacks` in mm, which loss.interp_ssim_max_gap_mm needs. `stop_after`
    stops after that many steps of this call, as an interruption would.
    `devices` restricts the mesh (default: all devices). `split_kind`
    (datasets.SPLIT_KINDS) makes a new run's split; a resumed run keeps the
    one in its workdir (None: whichever, held-out for a new run).
    """
    run = setup(config, workdir, data_dir, stacks=stacks, val_stacks=val_stacks, slice_gaps_mm=slice_gaps_mm, devices=devices,
                split_kind=split_kind)
    state, start = restore(run)
    return loop(run, state, start, show_progress=show_progress, stop_after=stop_after)


def setup(config, workdir, data_dir, *, stacks=None, val_stacks=None, slice_gaps_mm=None, devices=None,
          split_kind: str | None = None) -> Run:
    """Checks the config and the workdir, loads the data, writes the run's config and split, builds the inputs."""
    validate(config)
    workdir = pathlib.Path(workdir)
    mesh = parallel.make_mesh(devices)
    n_dev, global_batch = mesh.devices.size, int(config.train.batch_size)
    if global_batch % n_dev:
        raise UserError(f"train.batch_size={global_batch} must be a multiple of the device count ({n_dev})")
    _check_same_model(config, workdir)
    # Data first: a bad volume must fail the run before anything is written.
    stacks, val_stacks, split, gaps = _load_data(config, workdir, data_dir, stacks, val_stacks, slice_gaps_mm, split_kind)
    trained = gap_rule.for_training_set(config, gaps)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / ckpt.CONFIG_FILE).write_text(to_json(config))
        (workdir / "config.py.txt").write_text(str(config))
        if split is not None and not (workdir / SPLIT_FILE).exists():
            from jaxsr.data import datasets

            datasets.write_split(workdir / SPLIT_FILE, split)
    model, optimizer = state_lib.init_train_state(trained)
    graphdef, state = nnx.split((model, optimizer))
    data_sharding = NamedSharding(mesh, P("data"))
    val = [jax.device_put(b, data_sharding) for b in batches_lib.eval_batches(
        val_stacks, config.data, batch_size=global_batch, max_batches=int(config.train.eval_batches))] if val_stacks else []
    last, best = ckpt.managers(workdir, int(config.train.keep_checkpoints))
    inputs = inputs_lib.make_inputs(config, stacks, mesh)
    return Run(trained, workdir, mesh, graphdef, nnx.graphdef(model), state, inputs, val, last, best)


def restore(run: Run) -> tuple[object, int]:
    """(state replicated over the mesh, first step): the latest checkpoint's, else the initial state at 0."""
    replicated = NamedSharding(run.mesh, P())
    start = run.last.latest_step()
    if start is None:
        return jax.device_put(run.initial_state, replicated), 0
    shardings = jax.tree.map(lambda _: replicated, nnx.to_pure_dict(run.initial_state))
    state, _ = ckpt.restore(run.last, start, run.initial_state, shardings)
    log.info("resumed from %s at step %d", run.workdir / ckpt.LAST, start)
    return jax.device_put(state, replicated), start


def loop(run: Run, state, start: int, *, show_progress: bool = True, stop_after: int | None = None) -> dict:
    """Steps from `start` to config.train.steps (or `stop_after` of them), evaluating and saving on schedule."""
    c = run.config.train
    steps, global_batch = int(c.steps), int(c.batch_size)
    step_fn = step_lib.build_loop_step(run.graphdef, run.config.loss, run.inputs.sample)
    eval_fn = step_lib.build_eval(run.model_graphdef)
    health = jax.device_put(guard.initial(), NamedSharding(run.mesh, P()))
    writer = _writer(run.workdir)
    preempt = {"signal": None}

    def on_signal(signum, _frame):
        preempt["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    progress = _progress(start, steps, global_batch, show_progress)
    meter = _Throughput(global_batch)
    last_eval: dict = {}
    try:
        source = run.inputs.stream(start)
        for current in range(start + 1, steps + 1):
            state, health, metrics = step_fn(state, health, next(source))
            if current == start + 1:  # the compiling step: the rate is timed from its end
                jax.block_until_ready(metrics)
                meter.restart(current)
            signalled = preempt["signal"]  # read once: one arriving later is seen after the next step
            stopping = bool(signalled) or (stop_after is not None and current - start >= stop_after)
            is_log = current % int(c.log_every) == 0 or current == steps
            is_eval = bool(run.val) and (current % int(c.eval_every) == 0 or current == steps)
            is_save = current % int(c.checkpoint_every) == 0 or current == steps or stopping
            if not (is_log or is_eval or is_save):
                if progress is not None:
                    progress.update(1)
                continue
            # The host waits for the device here, and only here.
            fetched, health_now = jax.device_get((metrics if is_log else None, health))
            bad = guard.problem(health_now)
            if bad:
                raise NonFiniteLoss(f"{run.workdir}: {bad}; stopped, the last good checkpoint is kept "
                                    f"(step {run.last.latest_step()}); try a lower optim.learning_rate or optim.clip_norm")
            if is_log:
                record = {"step": current, **{f"train/{k}": float(v) for k, v in fetched.items()}}
                rate = meter.rate(current)
                if rate is not None:
                    record["loop/images_per_s"] = rate
                _log(run.workdir, writer, record)
            if progress is not None:
                progress.update(1, **({"loss": float(fetched["loss"])} if is_log else {}))
            if is_eval:
                last_eval = _evaluate(eval_fn, state, run.val)
                _log(run.workdir, writer, {"step": current, **{f"val/{k}": v for k, v in last_eval.items()}})
            if is_save:
                extra = {"step": current}
                ckpt.save(run.last, current, state, extra)
                if is_eval:
                    ckpt.save(run.best, current, state, extra, metrics={"val_loss": last_eval["val_loss"]})
            if is_eval or is_save:
                meter.restart(current)  # evaluation and saving are not training throughput
            if signalled:
                path = run.workdir / ckpt.LAST / str(current)
                print(f"jaxsr train: received signal {signalled}; saved {path}; run the same command to resume", flush=True)
                raise Preempted()
            if stopping:
                break
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
    return {"state": state, "graphdef": run.graphdef, "val": last_eval, "loader": run.inputs.loader,
            "loss": run.config.loss.to_dict(), "steps": steps}


class _Throughput:
    """Images/s of the loop between two host syncs, leaving out what `restart` excludes."""

    def __init__(self, global_batch: int):
        self.global_batch = global_batch
        self.t0, self.step0 = None, None

    def restart(self, step: int) -> None:
        self.t0, self.step0 = time.perf_counter(), step

    def rate(self, step: int) -> float | None:
        """Images/s since the last restart (or rate call), the device having finished `step`."""
        now = time.perf_counter()
        rate = None
        if self.t0 is not None and step > self.step0 and now > self.t0:
            rate = (step - self.step0) * self.global_batch / (now - self.t0)
        self.t0, self.step0 = now, step
        return rate


def _check_same_model(config, workdir: pathlib.Path) -> None:
    config_path = workdir / ckpt.CONFIG_FILE
    if not config_path.exists():
        return
    try:
        saved = from_json(config_path.read_text()).model.to_dict()
    except (ValueError, AttributeError) as e:
        raise UserError(f"{config_path}: unreadable ({e}); use a new --workdir") from None
    # A key added since that run was saved reads as its default (config.from_json), so
    # an old run resumes when its model is the same one.
    now = config.model.to_dict()
    changed = [k for k in sorted(now.keys() | saved.keys()) if k not in now or k not in saved or now[k] != saved[k]]
    if changed:
        k = changed[0]
        raise UserError(f"{workdir}: holds a run with a different model config (model.{k}: saved "
                        f"{saved[k] if k in saved else 'nothing'}, now {now[k] if k in now else 'nothing'}); "
                        "use a new --workdir")


def _load_data(config, workdir: pathlib.Path, data_dir, stacks, val_stacks, gaps, split_kind: str | None):
    """(training stacks (X, Y, Z, T), validation stacks, the split to write or None, the training stacks' slice gaps or None).

    `gaps` are those of the given `stacks`; stacks read from files bring their own.

    The split is kept beside the checkpoints, so a resumed run trains on the
    same patients even if the data folder changed since. It is written by the
    caller, after the data loaded: a bad volume fails the run before anything is written.
    """
    from jaxsr.data import datasets

    split_path = workdir / SPLIT_FILE
    split = None
    if stacks is None or val_stacks is None:
        split = datasets.resolve_split(data_dir, split_path if split_path.exists() else None, split_kind)
    if gaps is not None and (stacks is None or len(gaps) != len(stacks)):
        raise ValueError(f"{len(gaps)} slice gaps for {0 if stacks is None else len(stacks)} given stacks")
    target_mm = target_spacing(config)
    loaded = {}
    if stacks is None:
        stacks, gaps = datasets.preprocess_files_and_gaps([pathlib.Path(data_dir) / r for r in split["train"]], target_mm)
        loaded = dict(zip(split["train"], stacks))
    if val_stacks is None:
        # all-train validates on training volumes: preprocessed once.
        val_stacks = [loaded[r] if r in loaded else datasets.preprocess_files([pathlib.Path(data_dir) / r], target_mm)[0]
                      for r in split["validation"]]
    stacks = [slice_table.as_4d(s) for s in stacks]
    val_stacks = [slice_table.as_4d(s) for s in val_stacks]
    if config.data.triplets:  # only stacks with a triplet train, and only their gaps count
        keep = [s.shape[2] >= 3 for s in stacks]
        stacks = [s for s, k in zip(stacks, keep) if k]
        gaps = None if gaps is None else [g for g, k in zip(gaps, keep) if k]
    if not stacks:
        raise UserError(f"{data_dir}: no training volumes" + (" with 3 or more slices (triplets)" if config.data.triplets else ""))
    return stacks, val_stacks, split, gaps


def _evaluate(eval_fn, state, val) -> dict:
    model_state = state[0]
    outs = jax.device_get([eval_fn(model_state, batch) for batch in val])
    result = {k: float(np.mean(np.concatenate([o[k] for o in outs]))) for k in outs[0]}
    result["val_loss"] = result["recon_mse"] + result.get("interp_mse", 0.0)
    return result


def _log(workdir: pathlib.Path, writer, record: dict) -> None:
    if jax.process_index() != 0:
        return
    with open(workdir / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer is not None:
        for k, v in record.items():
            if k != "step":
                writer.add_scalar(k, v, record["step"])
        writer.flush()


def _writer(workdir: pathlib.Path):
    if jax.process_index() != 0:
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(workdir / "tensorboard"))


def _progress(start: int, steps: int, global_batch: int, show: bool) -> Progress | None:
    if not show or jax.process_index() != 0:
        return None
    return Progress(steps, desc="train", unit="step", rate_unit="img", per_unit=global_batch, initial=start)
