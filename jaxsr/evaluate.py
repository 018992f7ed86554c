"""The paper's evaluation protocol: drop every other slice, reconstruct it, score it.

For each volume and frame of a split: preprocess as in training (1..99
percentile to [0, 1], the config's in-plane spacing), centre-crop 128 x 128
in-plane (or keep the full field of view; a smaller image is zero-padded,
i.e. background), keep the even slices 0, 2, 4, ... and reconstruct the odd ones at positions 0.5, 1.5, ... in
kept-slice coordinates with the autoencoder and each baseline. An odd last
slice of an even-length stack has no right neighbour and is skipped (logged
and counted in the summary).

Two variants are scored, each slice on its own (SSIM, PSNR, VIF; see
jaxsr.scores): 'dropped', the verdict, and 'all', where each method's output
at a kept slice is what it returns at that integer position (the baselines
the original, the autoencoder its encode -> decode reconstruction). So the
autoencoder function must NOT keep originals (`keep_originals=False`); this
module puts originals back itself where it wants them (the through-plane
figure).

The autoencoder is scored twice: 'ae', the paper's latent mix, and
'ae_residual', the detail-preserving mix (jaxsr.residual_mix; at a kept slice
it returns the acquired slice itself, like the baselines), each with the rest
of the checkpoint's recipe (config.inference: the ensemble, the fallback).

Every method is a function `(stack (X, Y, Z, T), positions (P,)) -> (X, Y, P, T)`,
which makes the protocol testable without a model. All frames of a volume go
through each method in one call, and all methods' slices through each metric
in one batched call (chunks padded to a few fixed sizes, so jitted metrics
compile a handful of times, not once per volume). Predictions are clipped to
[0, 1] before scoring: the metrics' data range is 1 and B-spline and Lanczos
overshoot.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import pathlib
import platform
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

import jaxsr
from jaxsr import stats
from jaxsr.errors import UserError
from jaxsr.io.atomic import atomic_folder, check_folder_output
from jaxsr.mixes import LATENT, RESIDUAL
from jaxsr.scores import AE, AE_RESIDUAL, BASELINES, METRICS, MetricFn, ScoreTable, score_methods

if TYPE_CHECKING:  # jax is imported only when a model is evaluated
    from jaxsr.interpolate import LatentInterpolator

log = logging.getLogger(__name__)

InterpolateFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

DEFAULT_CROP = 128


# ----------------------------------------------------------------------------
# Which slices are kept, dropped and scored


@dataclasses.dataclass(frozen=True)
class DropPlan:
    """Drop-every-other-slice bookkeeping for a stack of `n_slices` slices.

    kept: original indices kept (0, 2, 4, ...).
    dropped: original indices reconstructed and scored in the primary variant
      (odd, each with both neighbours kept).
    positions: where `dropped` lie in kept-slice coordinates (0.5, 1.5, ...).
    skipped: original indices never scored (the odd last slice of an even stack).
    all_positions: 0, 0.5, 1, ... up to the last kept slice (kept-slice coordinates).
    covered: the original index at each of `all_positions` (0, 1, 2, ...).
    """

    n_slices: int
    kept: np.ndarray
    dropped: np.ndarray
    positions: np.ndarray
    skipped: np.ndarray
    all_positions: np.ndarray
    covered: np.ndarray


def drop_every_other(n_slices: int) -> DropPlan:
    """The plan for one stack; needs at least 3 slices (two kept around one dropped)."""
    if n_slices < 3:
        raise ValueError(f"{n_slices} slices: dropping every other slice needs at least 3")
    kept = np.arange(0, n_slices, 2)
    covered = np.arange(0, kept[-1] + 1)
    dropped = covered[1::2]
    skipped = np.arange(kept[-1] + 1, n_slices)
    return DropPlan(
        n_slices=n_slices,
        kept=kept,
        dropped=dropped,
        positions=dropped / 2.0,
        skipped=skipped,
        all_positions=covered / 2.0,
        covered=covered,
    )


def crop_inplane(stack: np.ndarray, size: int | None) -> np.ndarray:
    """Centre crop (or zero-pad, when smaller) axes 0 and 1 to size x size; None keeps all."""
    if size is None:
        return stack
    out = stack
    for axis in (0, 1):
        n = out.shape[axis]
        if n > size:
            start = (n - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        elif n < size:
            pad = [(0, 0)] * out.ndim
            pad[axis] = ((size - n) // 2, size - n - (size - n) // 2)
            out = np.pad(out, pad)  # zeros: background after percentile scaling
    return out


# ----------------------------------------------------------------------------
# One stack


def _to_images(stack: np.ndarray) -> np.ndarray:
    """(X, Y, P, T) -> (T·P, X, Y, 1), frame-major: row t·P + p."""
    x, y, p, t = stack.shape
    return np.ascontiguousarray(np.transpose(stack, (3, 2, 0, 1)).reshape(t * p, x, y, 1))


@dataclasses.dataclass
class VolumeResult:
    """Scores of one volume, its plan and each method's output at `plan.all_positions`."""

    name: str
    stack: np.ndarray  # (X, Y, Z, T) as scored (cropped)
    plan: DropPlan
    outputs: dict[str, np.ndarray]  # method -> (X, Y, len(all_positions), T), clipped to [0, 1]
    scores: ScoreTable
    seconds: dict[str, float]


def evaluate_stack(
    stack: np.ndarray,
    methods: Mapping[str, InterpolateFn],
    metrics: Mapping[str, MetricFn],
    *,
    name: str = "volume",
) -> VolumeResult:
    """Runs the protocol on one preprocessed, cropped stack (X, Y, Z, T) in [0, 1]."""
    stack = np.asarray(stack, np.float32)
    if stack.ndim == 3:
        stack = stack[..., None]
    plan = drop_every_other(stack.shape[2])
    if plan.skipped.size:
        log.info("%s: slice %s has no right neighbour after dropping every other slice; not scored",
                 name, ", ".join(map(str, plan.skipped)))
    kept = stack[:, :, plan.kept, :]
    truth = _to_images(stack[:, :, plan.covered, :])
    seconds: dict[str, float] = {}
    outputs, preds = {}, []
    for method, fn in methods.items():
        t0 = time.perf_counter()
        out = np.asarray(fn(kept, plan.all_positions), np.float32)
        seconds[method] = time.perf_counter() - t0
        expected = stack.shape[:2] + (plan.all_positions.size, stack.shape[3])
        if out.shape != expected:
            raise ValueError(f"method {method!r} returned shape {out.shape}, expected {expected}")
        outputs[method] = np.clip(out, 0.0, 1.0)
        preds.append(_to_images(outputs[method]))

    t0 = time.perf_counter()
    scores = score_methods(truth, preds, metrics)
    seconds["metrics"] = time.perf_counter() - t0

    n_frames, n_pos = stack.shape[3], plan.covered.size
    frame = np.repeat(np.arange(n_frames), n_pos)
    slice_ = np.tile(plan.covered, n_frames)
    is_dropped = np.tile(plan.covered % 2 == 1, n_frames)
    tables = []
    for i, method in enumerate(outputs):
        rows = slice(i * frame.size, (i + 1) * frame.size)
        for variant, mask in (("dropped", is_dropped), ("all", np.ones_like(is_dropped))):
            k = int(mask.sum())
            columns = {
                "volume": np.full(k, name, object),
                "frame": frame[mask],
                "slice": slice_[mask],
                "method": np.full(k, method, object),
                "variant": np.full(k, variant, object),
            }
            for metric in METRICS:
                values = scores[metric][rows] if metric in scores else np.full(frame.size, np.nan)
                columns[metric] = values[mask]
            tables.append(ScoreTable(columns))
    return VolumeResult(name, stack, plan, outputs, ScoreTable.concat(tables), seconds)


# ----------------------------------------------------------------------------
# Figures' raw material: a few qualitative slices and one through-plane view


@dataclasses.dataclass
class QualitativeExample:
    """One dropped slice: its two kept neighbours, the original and each method's result."""

    volume: str
    frame: int
    slice: int
    left: np.ndarray  # (X, Y)
    right: np.ndarray
    truth: np.ndarray
    results: dict[str, np.ndarray]


@dataclasses.dataclass
class ThroughPlaneExample:
    """A long-axis cut (fixed x) through one frame: acquired slices and each method's upsampling.

    `acquired`: (Y, Z); `upsampled[method]`: (Y, len(positions)) at `positions`
    (acquired-slice coordinates, step 1/factor), acquired slices kept as they are.
    """

    volume: str
    frame: int
    column: int
    inplane_mm: float
    slice_mm: float
    factor: int
    positions: np.ndarray
    acquired: np.ndarray
    upsampled: dict[str, np.ndarray]


def qualitative_example(result: VolumeResult, frame: int | None = None, slice_: int | None = None) -> QualitativeExample:
    """The middle dropped slice of `frame` (default 0) of an evaluated volume."""
    plan = result.plan
    frame = 0 if frame is None else frame
    slice_ = int(plan.dropped[plan.dropped.size // 2]) if slice_ is None else slice_
    index = int(np.nonzero(plan.covered == slice_)[0][0])
    s = result.stack
    return QualitativeExample(
        volume=result.name,
        frame=frame,
        slice=slice_,
        left=s[:, :, slice_ - 1, frame],
        right=s[:, :, slice_ + 1, frame],
        truth=s[:, :, slice_, frame],
        results={m: out[:, :, index, frame] for m, out in result.outputs.items()},
    )


def through_plane_example(
    stack: np.ndarray,
    methods: Mapping[str, InterpolateFn],
    *,
    name: str,
    inplane_mm: float,
    slice_mm: float,
    factor: int = 4,
    frame: int = 0,
    column: int | None = None,
) -> ThroughPlaneExample:
    """Upsamples one frame of `stack` (X, Y, Z, T) by `factor` with each method and cuts at x = column."""
    from jaxsr.io.nifti import output_positions

    stack = np.asarray(stack, np.float32)
    if stack.ndim == 3:
        stack = stack[..., None]
    one = stack[..., frame : frame + 1]
    positions = output_positions(one.shape[2], factor=factor)
    column = one.shape[0] // 2 if column is None else column
    acquired_at = np.isclose(positions, np.round(positions))
    upsampled = {}
    for method, fn in methods.items():
        out = np.clip(np.asarray(fn(one, positions), np.float32), 0.0, 1.0)
        # Acquired slices as acquired, as `jaxsr upsample` writes them.
        out[:, :, acquired_at, :] = one[:, :, np.round(positions[acquired_at]).astype(int), :]
        upsampled[method] = out[column, :, :, 0]
    return ThroughPlaneExample(name, frame, column, float(inplane_mm), float(slice_mm), int(factor),
                               positions, one[column, :, :, 0], upsampled)


# ----------------------------------------------------------------------------
# Many volumes


@dataclasses.dataclass
class Evaluation:
    scores: ScoreTable
    examples: list[QualitativeExample]
    through_plane: ThroughPlaneExample | None
    counts: dict[str, Any]
    seconds: dict[str, float]


def evaluate_volumes(
    paths: Sequence[str | os.PathLike],
    methods: Mapping[str, InterpolateFn],
    metrics: Mapping[str, MetricFn],
    *,
    target_mm: float | None,
    crop_size: int | None = DEFAULT_CROP,
    n_examples: int = 3,
    through_plane_factor: int = 4,
    progress: bool = False,
) -> Evaluation:
    """Loads, preprocesses (to `target_mm` in-plane; None: each volume's own) and evaluates each volume; collects the figures' examples.

    Volumes with fewer than 3 slices are skipped with a warning (counted).
    """
    from jaxsr.data.preprocess import preprocess_volume
    from jaxsr.io.volumes import load_volume

    tables, examples = [], []
    through_plane = None
    seconds = {"load": 0.0, "examples": 0.0}
    counts = {"volumes": 0, "frames": 0, "slices_scored": 0, "slices_scored_all": 0,
              "slices_skipped_no_neighbour": 0, "volumes_skipped": []}
    iterator: Iterable = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="evaluate", unit="volume")
    for path in iterator:
        t0 = time.perf_counter()
        volume = load_volume(path)
        data, _ = preprocess_volume(volume, target_mm=target_mm)
        stack = crop_inplane(data, crop_size)
        seconds["load"] += time.perf_counter() - t0
        name = volume.name
        if stack.shape[2] < 3:
            log.warning("%s: %d slices; needs at least 3 to drop every other one, skipped", name, stack.shape[2])
            counts["volumes_skipped"].append(name)
            continue
        result = evaluate_stack(stack, methods, metrics, name=name)
        for k, v in result.seconds.items():
            seconds[k] = seconds.get(k, 0.0) + v
        tables.append(result.scores)
        n_frames = stack.shape[3]
        counts["volumes"] += 1
        counts["frames"] += n_frames
        counts["slices_scored"] += n_frames * result.plan.dropped.size
        counts["slices_scored_all"] += n_frames * result.plan.covered.size
        counts["slices_skipped_no_neighbour"] += n_frames * result.plan.skipped.size
        t0 = time.perf_counter()
        if len(examples) < n_examples:
            examples.append(qualitative_example(result))
        if through_plane is None and through_plane_factor:
            shown = {m: fn for m, fn in methods.items() if m in (AE, AE_RESIDUAL, "linear")} or dict(methods)
            through_plane = through_plane_example(
                stack, shown, name=name, inplane_mm=volume.spacing[1] if target_mm is None else target_mm, slice_mm=volume.slice_spacing_mm,
                factor=through_plane_factor)
        seconds["examples"] += time.perf_counter() - t0
    return Evaluation(ScoreTable.concat(tables), examples, through_plane, counts, seconds)


# ----------------------------------------------------------------------------
# Default methods and metrics, and the whole run behind `jaxsr evaluate`


def list_volumes(data_dir: str | os.PathLike, split: str) -> list[pathlib.Path]:
    from jaxsr.data import datasets

    return list(datasets.volumes_for_split(data_dir, split))


def baseline_methods(names: Sequence[str] = BASELINES) -> dict[str, InterpolateFn]:
    from jaxsr import baselines

    return {name: (lambda stack, positions, _m=name: baselines.resample_slices(stack, positions, _m)) for name in names}


def default_metrics() -> dict[str, MetricFn]:
    from jaxsr import metrics

    return {"ssim": metrics.ssim, "psnr": metrics.psnr, "vif": metrics.vif}


def autoencoder_method(interpolator: LatentInterpolator, mix: str = LATENT, fallback: bool = False,
                       residual_weight: float = 1.0) -> InterpolateFn:
    """The autoencoder as a protocol method: its own output at integer positions too (mix: jaxsr.mixes;
    fallback: jaxsr.fallback; residual_weight: jaxsr.residual_mix)."""

    def fn(stack: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return interpolator.interpolate_stack(stack, positions, keep_originals=False, mix=mix, fallback=fallback,
                                              residual_weight=residual_weight)

    return fn


def autoencoder_methods(interpolator: LatentInterpolator, recipe: Any = None) -> dict[str, InterpolateFn]:
    """Both mixes as protocol methods, whatever the recipe's mix: 'ae' (the paper's) and 'ae_residual',
    each with the recipe's fallback and residual weight (config.inference; None: neither)."""
    fallback = bool(recipe.fallback) if recipe is not None else False
    weight = float(recipe.residual_weight) if recipe is not None else 1.0
    return {AE: autoencoder_method(interpolator, LATENT, fallback),
            AE_RESIDUAL: autoencoder_method(interpolator, RESIDUAL, fallback, weight)}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"python": platform.python_version(), "jaxsr": jaxsr.version()}
    for pkg in ("jax", "jaxlib", "flax", "numpy", "scipy", "matplotlib", "dm-pix"):
        try:
            found[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return found


def _device() -> str:
    try:
        import jax

        d = jax.devices()[0]
        return f"{d.platform}: {getattr(d, 'device_kind', d)} x{jax.device_count()}"
    except Exception:  # noqa: BLE001 - a report must not fail over a label
        return "unknown"


def run_evaluation(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "test",
    *,
    full_fov: bool = False,
    crop_size: int = DEFAULT_CROP,
    max_volumes: int | None = None,
    overwrite: bool = False,
    through_plane_factor: int = 4,
    n_examples: int = 3,
    significance: float = stats.DEFAULT_SIGNIFICANCE,
    progress: bool = False,
) -> dict:
    """`jaxsr evaluate`: scores.csv, summary.json, figures/*.png and index.html in `out_dir`.

    Everything is written to a temporary sibling folder first and moved into
    place at the end, so a crash leaves no half report. Returns the summary.
    """
    from jaxsr import interpolate, report
    from jaxsr.config import target_spacing
    from jaxsr.data.preprocess import inplane_label

    check_folder_output(out_dir, overwrite=overwrite)  # before the slow parts
    started = time.perf_counter()
    interpolator, config = interpolate.load_interpolator(checkpoint)
    paths = list(list_volumes(data_dir, split))
    if max_volumes is not None:
        paths = paths[:max_volumes]
    if not paths:
        raise UserError(f"{data_dir}: no volumes in the {split!r} split")
    target_mm = target_spacing(config)
    if full_fov is False and crop_size < 1:
        raise UserError(f"crop size must be positive, got {crop_size}")
    crop = None if full_fov else crop_size
    methods = {**autoencoder_methods(interpolator, config.inference), **baseline_methods()}
    log.info("evaluating %d volume(s) from %s (%s split), crop %s", len(paths), data_dir, split,
             "full field of view" if crop is None else f"{crop}x{crop}")
    evaluation = evaluate_volumes(paths, methods, default_metrics(), crop_size=crop, target_mm=target_mm,
                                  n_examples=n_examples, through_plane_factor=through_plane_factor, progress=progress)
    if len(evaluation.scores) == 0:
        raise UserError(f"{data_dir}: no volume in the {split!r} split has 3 or more slices")
    # The verdict is about the mix the recipe upsamples with (config.inference.mix); both are scored.
    reference = AE_RESIDUAL if config.inference.mix == RESIDUAL else AE
    summary = stats.summarise(evaluation.scores, significance=significance, reference=reference)
    evaluation.seconds["total"] = time.perf_counter() - started
    summary["settings"] = {
        "checkpoint": str(pathlib.Path(checkpoint).resolve()),
        "config": json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else str(config),
        "data_dir": str(pathlib.Path(data_dir).resolve()),
        "split": split,
        "crop": "full field of view" if crop is None else f"{crop}x{crop} centre crop (zero-padded when smaller)",
        "target_spacing_mm": inplane_label(None) if target_mm is None else target_mm,
        "volumes": [pathlib.Path(p).name for p in paths],
        "counts": evaluation.counts,
        "seconds": {k: round(v, 3) for k, v in evaluation.seconds.items()},
        "versions": versions(),
        "device": _device(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    with atomic_folder(out_dir, overwrite=overwrite) as folder:
        report.write_outputs(folder, evaluation, summary)
    log.info("evaluation written to %s in %.1f s", out_dir, evaluation.seconds["total"])
    return summary
