"""Orbax checkpoints: the last N steps plus the best by validation loss.

The train state is saved as a pure dict of arrays and restored onto an
abstract target built from the current model, so a run resumes on any number
of devices (the target's shardings decide where arrays land).
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxsr.errors import CheckpointError

LAST = "checkpoints"
BEST = "best"
CONFIG_FILE = "config.json"


def managers(workdir: pathlib.Path, keep: int) -> tuple[ocp.CheckpointManager, ocp.CheckpointManager]:
    last = ocp.CheckpointManager(
        (workdir / LAST).absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    )
    best = ocp.CheckpointManager(
        (workdir / BEST).absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m["val_loss"], best_mode="min", create=True, enable_async_checkpointing=False
        ),
    )
    return last, best


def save(manager: ocp.CheckpointManager, step: int, state, extra: dict, metrics: dict | None = None) -> None:
    pure = nnx.to_pure_dict(state)
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(pure), extra=ocp.args.JsonSave(extra)), metrics=metrics, force=True)
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, shardings=None) -> tuple[object, dict]:
    """Restores `step` onto `abstract_state`; arrays land with `shardings` (default: replicated)."""
    pure = nnx.to_pure_dict(abstract_state)
    if shardings is not None:
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), pure, shardings)
    else:
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), pure)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), extra=ocp.args.JsonRestore()))
    nnx.replace_by_pure_dict(abstract_state, restored["state"])
    return abstract_state, restored["extra"]


def load_for_inference(path: str | pathlib.Path):
    """(model in eval mode, config) from a training workdir (best, else latest) or a step folder."""
    from jaxsr.config import from_json
    from jaxsr.models.autoencoder import AutoEncoder

    path = pathlib.Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or training folder")
    if (path / CONFIG_FILE).exists():
        workdir, step_dir = path, None
    elif (path.parent.parent / CONFIG_FILE).exists() and path.name.isdigit():
        workdir, step_dir = path.parent.parent, path
    else:
        raise CheckpointError(f"{path}: not a jaxsr training folder or checkpoint (no {CONFIG_FILE})")
    try:
        config = from_json((workdir / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{workdir / CONFIG_FILE}: unreadable config ({e})") from None
    model = AutoEncoder(config.model, rngs=nnx.Rngs(0))
    abstract = nnx.state(model)
    if step_dir is not None:
        manager = ocp.CheckpointManager(step_dir.parent.absolute(), options=ocp.CheckpointManagerOptions(read_only=True))
        step = int(step_dir.name)
    else:
        manager, step = None, None
        for sub in (BEST, LAST):
            if (workdir / sub).is_dir():
                candidate = ocp.CheckpointManager((workdir / sub).absolute(), options=ocp.CheckpointManagerOptions(read_only=True))
                if candidate.latest_step() is not None:
                    manager, step = candidate, candidate.latest_step()
                    break
        if manager is None:
            raise CheckpointError(f"{workdir}: no checkpoint saved yet")
    try:
        pure = _model_part(manager, step)
        _check_fits(nnx.to_pure_dict(abstract), pure, path)
        nnx.replace_by_pure_dict(abstract, pure)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: checkpoint does not match its config ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    nnx.update(model, abstract)
    model.eval()
    return model, config


def _check_fits(expected: dict, stored: dict, path) -> None:
    """Same parameter names and shapes, else CheckpointError naming the first difference.

    replace_by_pure_dict would accept arrays of any shape, and a model whose
    config.json was edited would then fail (or worse, run) far from the cause.
    """
    def shapes(tree):
        # Orbax stores list indices as strings: compare paths as "a/0/b".
        return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path_): np.shape(v)
                for path_, v in jax.tree_util.tree_leaves_with_path(tree)}

    want, have = shapes(expected), shapes(stored)
    for key in sorted(want.keys() | have.keys()):
        if want.get(key) != have.get(key):
            raise CheckpointError(f"{path}: checkpoint does not match its config ({key}: stored {have.get(key, 'nothing')}, "
                                  f"config needs {want.get(key, 'nothing')})")


def _model_part(manager, step):
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    state = restored["state"]
    # The train state is (model, optimizer): the model is element 0.
    return state[0] if 0 in state else state["0"]
