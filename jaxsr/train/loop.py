"""The training loop: data-parallel steps on a device mesh, validation, checkpoints, resume."""

from __future__ import annotations

import itertools
import json
import logging
import math
import pathlib
import signal

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsr import parallel
from jaxsr.config import from_json, to_json
from jaxsr.errors import UserError
from jaxsr.models.autoencoder import AutoEncoder
from jaxsr.progress import Progress
from jaxsr.train import batches as batches_lib
from jaxsr.train import checkpoint as ckpt
from jaxsr.train import step as step_lib

log = logging.getLogger(__name__)


class NonFiniteLoss(UserError):
    """Training produced NaN/Inf; the last good checkpoint is kept."""


class Preempted(Exception):
    pass


def create_state(config):
    model = AutoEncoder(config.model, rngs=nnx.Rngs(int(config.seed)))
    tx = step_lib.make_optimizer(config.optim, int(config.train.steps))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    return model, optimizer


SPLIT_FILE = "split.json"


def train(config, workdir, data_dir, *, stacks=None, val_stacks=None, show_progress: bool = True, stop_after: int | None = None, devices=None) -> dict:
    """Trains (or resumes) in `workdir`; returns the last validation metrics.

    `stacks`/`val_stacks` (lists of (X, Y, Z, T) arrays in [0, 1]) replace the
    dataset in tests. `stop_after` stops after that many steps of this call, as
    an interruption would. `devices` restricts the mesh (default: all devices).
    """
    from jaxsr.config import validate
    from jaxsr.data import datasets

    validate(config)
    workdir = pathlib.Path(workdir)
    mesh = parallel.make_mesh(devices)
    n_dev = mesh.devices.size
    global_batch = int(config.train.batch_size)
    if global_batch % n_dev:
        raise UserError(f"train.batch_size={global_batch} must be a multiple of the device count ({n_dev})")
    local_batch = global_batch // jax.process_count()
    triplets = bool(config.data.triplets)

    config_path = workdir / ckpt.CONFIG_FILE
    if config_path.exists():
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

    # Data first: a bad volume must fail the run before anything is written.
    # The split is kept beside the checkpoints, so a resumed run trains on the
    # same patients even if the data folder changed since.
    split_path = workdir / SPLIT_FILE
    split = None
    if stacks is None or val_stacks is None:
        split = datasets.read_split(split_path) if split_path.exists() else datasets.make_split(data_dir)
    target_mm = float(config.data.target_spacing_mm)
    if stacks is None:
        stacks = datasets.preprocess_files([pathlib.Path(data_dir) / r for r in split["train"]], target_mm)
    if val_stacks is None:
        val_stacks = datasets.preprocess_files([pathlib.Path(data_dir) / r for r in split["validation"]], target_mm)
    if triplets:
        stacks = [s for s in stacks if s.shape[2] >= 3]
    if not stacks:
        raise UserError(f"{data_dir}: no training volumes" + (" with 3 or more slices (triplets)" if triplets else ""))

    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        config_path.write_text(to_json(config))
        (workdir / "config.py.txt").write_text(str(config))
        if split is not None and not split_path.exists():
            datasets.write_split(split_path, split)

    model, optimizer = create_state(config)
    graphdef, state = nnx.split((model, optimizer))
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P("data"))
    last_mngr, best_mngr = ckpt.managers(workdir, int(config.train.keep_checkpoints))
    start = 0
    if last_mngr.latest_step() is not None:
        start = last_mngr.latest_step()
        shardings = jax.tree.map(lambda _: replicated, nnx.to_pure_dict(state))
        state, extra = ckpt.restore(last_mngr, start, state, shardings)
        log.info("resumed from %s at step %d", workdir / ckpt.LAST, start)
    state = jax.device_put(state, replicated)

    step_fn = step_lib.build_step(graphdef, config.loss)
    model_graphdef = nnx.graphdef(model)
    eval_fn = step_lib.build_eval(model_graphdef)
    val = batches_lib.eval_batches(val_stacks, config.data, batch_size=global_batch, max_batches=int(config.train.eval_batches)) if val_stacks else []

    steps = int(config.train.steps)
    seed = int(config.seed)
    metrics_file = workdir / "metrics.jsonl"
    writer = _writer(workdir)
    preempt = {"signal": None}

    def on_signal(signum, _frame):
        preempt["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    progress = _progress(start, steps, global_batch, show_progress)
    last_eval: dict = {}
    done_here = 0
    try:
        source = _batch_source(config, stacks, local_batch=local_batch, seed=seed, start=start, triplets=triplets)
        for step in range(start, steps):
            local = next(source)
            batch = {k: jax.make_array_from_process_local_data(data_sharding, v) for k, v in local.items()}
            new_state, metrics = step_fn(state, batch)
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLoss(
                    f"{workdir}: loss became {loss} at step {step + 1}; stopped, the last good checkpoint is kept "
                    f"(step {last_mngr.latest_step()}); try a lower optim.learning_rate or optim.clip_norm"
                )
            state = new_state
            done_here += 1
            current = step + 1
            if progress is not None:
                progress.update(1, loss=loss)  # already on the host, for the NaN check
            if current % int(config.train.log_every) == 0 or current == steps:
                record = {"step": current, **{f"train/{k}": float(v) for k, v in metrics.items()}}
                _log(metrics_file, writer, record)
            is_eval = val and (current % int(config.train.eval_every) == 0 or current == steps)
            if is_eval:
                last_eval = _evaluate(eval_fn, state, val, data_sharding)
                _log(metrics_file, writer, {"step": current, **{f"val/{k}": v for k, v in last_eval.items()}})
            if current % int(config.train.checkpoint_every) == 0 or current == steps or preempt["signal"] or (stop_after and done_here >= stop_after):
                extra = {"step": current}
                ckpt.save(last_mngr, current, state, extra)
                if is_eval:
                    ckpt.save(best_mngr, current, state, extra, metrics={"val_loss": last_eval["val_loss"]})
            if preempt["signal"]:
                path = workdir / ckpt.LAST / str(current)
                print(f"jaxsr train: received signal {preempt['signal']}; saved {path}; run the same command to resume", flush=True)
                raise Preempted()
            if stop_after and done_here >= stop_after:
                break
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
    return {"state": state, "graphdef": graphdef, "val": last_eval}


def _batch_source(config, stacks, *, local_batch: int, seed: int, start: int, triplets: bool):
    """This host's batches from step `start` on; both loaders are pure functions of (seed, step).

    'numpy': jaxsr.train.batches, no TensorFlow in the process.
    'tfdata': jaxsr.data.pipeline, parallel augmentation and prefetch for
    large datasets and fast accelerators.
    config.validate has already refused any other value.
    """
    if config.data.loader == "tfdata":
        from jaxsr.data import pipeline

        ds = pipeline.make_dataset(stacks, config.data, batch_size=local_batch, seed=seed, triplets=triplets,
                                   process_index=jax.process_index(), process_count=jax.process_count(), start_step=start)
        return pipeline.numpy_batches(ds)
    return (batches_lib.sample_batch(stacks, config.data, batch_size=local_batch, seed=seed, step=s,
                                     process_index=jax.process_index(), triplets=triplets) for s in itertools.count(start))


def _evaluate(eval_fn, state, val, sharding) -> dict:
    model_state = state[0]
    parts: dict[str, list] = {}
    for batch in val:
        out = eval_fn(model_state, {k: jax.device_put(v, sharding) for k, v in batch.items()})
        for k, v in out.items():
            parts.setdefault(k, []).append(np.asarray(v))
    result = {k: float(np.mean(np.concatenate(v))) for k, v in parts.items()}
    result["val_loss"] = result["recon_mse"] + result.get("interp_mse", 0.0)
    return result


def _log(path: pathlib.Path, writer, record: dict) -> None:
    if jax.process_index() != 0:
        return
    with open(path, "a") as f:
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
