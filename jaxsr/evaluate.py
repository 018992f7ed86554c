"""The paper's evaluation protocol: drop every other slice, reconstruct it, score it.

For each volume and frame of a split: preprocess as in training (1..99
percentile to [0, 1], the config's in-plane spacing), centre-crop 128 x 128 in-plane (or keep the full field of
view; a smaller image is zero-padded, i.e. background), keep the even slices
0, 2, 4, ... and reconstruct the odd ones at positions 0.5, 1.5, ... in
kept-slice coordinates with the autoencoder and each baseline. An odd last
slice of an even-length stack has no right neighbour and is skipped (logged
and counted in the summary).

Two variants are scored, each slice on its own (SSIM, PSNR, VIF):
- 'dropped' (primary): the reconstructed slices against the dropped originals.
- 'all' (paper-compatible): every slice from 0 to the last kept one, where each
  method's output at a kept slice is what it returns at that integer position:
  the baselines return the original exactly, the autoencoder its own
  reconstruction (encode -> decode). So the autoencoder function must NOT
  keep originals (`keep_originals=False`); this module puts originals back
  itself where it wants them (the through-plane figure).

Every method is a function `(stack (X, Y, Z, T), positions (P,)) -> (X, Y, P, T)`,
which makes the protocol testable without a model. All frames of a volume go
through each method in one call, and all methods' slices through each metric
in one batched call (chunks padded to a few fixed sizes, so jitted metrics
compile a handful of times, not once per volume). Predictions are clipped to
[0, 1] before scoring: the metrics' data range is 1 and B-spline and Lanczos
overshoot.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import logging
import os
import pathlib
import platform
import shutil
import tempfile
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

import jaxsr
from jaxsr import stats
from jaxsr.errors import UserError

log = logging.getLogger(__name__)

InterpolateFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
MetricFn = Callable[[np.ndarray, np.ndarray], Any]

AE = "ae"
BASELINES = ("linear", "bspline", "lanczos")
METHODS = (AE,) + BASELINES
METRICS = ("ssim", "psnr", "vif")
PRIMARY = "dropped"
VARIANTS = {
    "dropped": "every other slice dropped, reconstructed from its two neighbours and scored against the original",
    "all": "paper-compatible: every slice scored, kept slices replaced by each method's output "
    "(the autoencoder's reconstructions; originals for the baselines)",
}
DEFAULT_CROP = 128
DEFAULT_SIGNIFICANCE = 0.001  # the paper reports p << 0.001
METRIC_CHUNK = 256
COLUMNS = ("volume", "frame", "slice", "method", "variant") + METRICS


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
# The per-slice score table


@dataclasses.dataclass
class ScoreTable:
    """Column-wise per-slice scores: one row per (volume, frame, slice, method, variant)."""

    columns: dict[str, np.ndarray]

    @classmethod
    def empty(cls) -> "ScoreTable":
        return cls({c: np.zeros(0, _dtype(c)) for c in COLUMNS})

    @classmethod
    def concat(cls, tables: Iterable["ScoreTable"]) -> "ScoreTable":
        tables = list(tables)
        if not tables:
            return cls.empty()
        return cls({c: np.concatenate([t.columns[c] for t in tables]) for c in COLUMNS})

    def __len__(self) -> int:
        return int(self.columns["slice"].size)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def select(self, *, method: str | None = None, variant: str | None = None) -> "ScoreTable":
        mask = np.ones(len(self), bool)
        if method is not None:
            mask &= self.columns["method"] == method
        if variant is not None:
            mask &= self.columns["variant"] == variant
        return ScoreTable({c: v[mask] for c, v in self.columns.items()})

    def keys(self) -> list[tuple]:
        """(volume, frame, slice) per row: what pairs two methods' scores."""
        return list(zip(self.columns["volume"].tolist(), self.columns["frame"].tolist(), self.columns["slice"].tolist()))

    def methods(self) -> list[str]:
        present = set(self.columns["method"].tolist())
        return [m for m in METHODS if m in present] + sorted(present - set(METHODS))

    def write_csv(self, path: str | os.PathLike) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for row in zip(*(self.columns[c].tolist() for c in COLUMNS)):
                writer.writerow([repr(v) if isinstance(v, float) else v for v in row])

    @classmethod
    def read_csv(cls, path: str | os.PathLike) -> "ScoreTable":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return cls({c: np.array([r[c] for r in rows], _dtype(c)) for c in COLUMNS})


def _dtype(column: str):
    if column in ("frame", "slice"):
        return np.int64
    if column in METRICS:
        return np.float64
    return object


# ----------------------------------------------------------------------------
# Scoring


def _bucket(m: int) -> int:
    """8, 16, 32, then multiples of 32: few compiled shapes, under 32 wasted images."""
    return max(8, 1 << (m - 1).bit_length()) if m <= 32 else -(-m // 32) * 32


def score_images(reference: np.ndarray, test: np.ndarray, metrics: Mapping[str, MetricFn], *, chunk: int = METRIC_CHUNK) -> dict[str, np.ndarray]:
    """Per-image scores of `test` against `reference`, both (N, H, W, 1).

    Each metric is called as fn(reference, test), the jaxsr.metrics order
    (VIF is not symmetric). A short chunk is padded to a bucket size (see
    `_bucket`) by repeating its first image (zeros would make VIF 0/0), so
    jitted metrics compile a few shapes; padded rows are discarded.
    """
    n = reference.shape[0]
    out = {name: np.empty(n, np.float64) for name in metrics}
    for start in range(0, n, chunk):
        a, b = reference[start : start + chunk], test[start : start + chunk]
        m = a.shape[0]
        size = _bucket(m)
        if size > m:
            a = np.concatenate([a, np.repeat(a[:1], size - m, axis=0)])
            b = np.concatenate([b, np.repeat(b[:1], size - m, axis=0)])
        for name, fn in metrics.items():
            out[name][start : start + m] = np.asarray(fn(a, b), np.float64).reshape(-1)[:m]
    return out


def _score_methods(truth: np.ndarray, preds: list[np.ndarray], metrics: Mapping[str, MetricFn]) -> dict[str, np.ndarray]:
    """Scores of each method's images (stacked method-major) against `truth`.

    A slice that a method returns bit for bit equal to the original (every
    baseline at a kept slice) is scored once as original vs original and the
    result reused: the metric of the same inputs is the same number, and this
    saves over a third of the work of the paper-compatible variant.
    """
    n = truth.shape[0]
    pred = np.concatenate(preds)
    same = np.all(pred.reshape(pred.shape[0], -1) == np.tile(truth.reshape(n, -1), (len(preds), 1)), axis=1)
    differ = np.nonzero(~same)[0]
    identical = np.unique(np.nonzero(same)[0] % n)
    reference = np.concatenate([truth[differ % n], truth[identical]])
    test = np.concatenate([pred[differ], truth[identical]])
    scored = score_images(reference, test, metrics) if reference.shape[0] else {m: np.zeros(0) for m in metrics}
    out = {}
    for name, values in scored.items():
        full = np.empty(pred.shape[0], np.float64)
        full[differ] = values[: differ.size]
        lookup = np.empty(n, np.float64)
        lookup[identical] = values[differ.size :]
        same_rows = np.nonzero(same)[0]
        full[same_rows] = lookup[same_rows % n]
        out[name] = full
    return out


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
    scores = _score_methods(truth, preds, metrics)
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
    target_mm: float,
    crop_size: int | None = DEFAULT_CROP,
    n_examples: int = 3,
    through_plane_factor: int = 4,
    progress: bool = False,
) -> Evaluation:
    """Loads, preprocesses (to `target_mm` in-plane) and evaluates each volume; collects the figures' examples.

    Volumes with fewer than 3 slices are skipped with a warning (counted).
    """
    from jaxsr.data.preprocess import preprocess_volume
    from jaxsr.io import nifti

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
        volume = nifti.load(path)
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
            shown = {m: fn for m, fn in methods.items() if m in (AE, "linear")} or dict(methods)
            through_plane = through_plane_example(
                stack, shown, name=name, inplane_mm=target_mm, slice_mm=volume.slice_spacing_mm,
                factor=through_plane_factor)
        seconds["examples"] += time.perf_counter() - t0
    return Evaluation(ScoreTable.concat(tables), examples, through_plane, counts, seconds)


# ----------------------------------------------------------------------------
# Summary statistics


def summarise(scores: ScoreTable, *, significance: float = DEFAULT_SIGNIFICANCE, reference: str = AE) -> dict:
    """Median/IQR per method and metric, one-sided Wilcoxon "reference better than X", winners.

    Per variant: {'methods': {m: {metric: {median, q25, q75, n}}},
    'wilcoxon': {baseline: {metric: {p, statistic, n_pairs, ...}}},
    'winners': {metric: {'best': [...], 'reference_wins': bool, 'significant_vs_all': bool, ...}}}.
    PSNR is capped at stats.PSNR_CAP_DB first (see jaxsr.stats). Pairs are
    matched on (volume, frame, slice); a slice missing for either method is left out.
    """
    summary: dict[str, Any] = {
        "reference": reference,
        "primary_variant": PRIMARY,
        "significance_level": significance,
        "psnr_cap_db": stats.PSNR_CAP_DB,
        "metrics": list(METRICS),
        "variants": {},
    }
    for variant, description in VARIANTS.items():
        table = scores.select(variant=variant)
        if len(table) == 0:
            continue
        methods = table.methods()
        per_method = {m: table.select(method=m) for m in methods}
        block: dict[str, Any] = {"description": description, "n_slices": {}, "methods": {}, "wilcoxon": {}, "winners": {}}
        for m, t in per_method.items():
            block["n_slices"][m] = len(t)
            block["methods"][m] = {metric: stats.median_iqr(stats.cap_scores(metric, t[metric])) for metric in METRICS}
        if reference in per_method:
            ref = per_method[reference]
            ref_index = {k: i for i, k in enumerate(ref.keys())}
            for m in methods:
                if m == reference:
                    continue
                other = per_method[m]
                pairs = [(ref_index[k], j) for j, k in enumerate(other.keys()) if k in ref_index]
                ri = np.array([p[0] for p in pairs], int)
                oi = np.array([p[1] for p in pairs], int)
                block["wilcoxon"][m] = {
                    metric: stats.wilcoxon_greater(
                        stats.cap_scores(metric, ref[metric][ri]), stats.cap_scores(metric, other[metric][oi]))
                    for metric in METRICS
                }
        for metric in METRICS:
            medians = {m: block["methods"][m][metric]["median"] for m in methods}
            best = stats.best_by_median(medians)
            others = {m: v for m, v in medians.items() if m != reference and v is not None}
            best_other = max(others, key=others.get) if others else None
            ps = [block["wilcoxon"][m][metric]["p"] for m in block["wilcoxon"]]
            block["winners"][metric] = {
                "best": best,
                "reference_median": medians.get(reference),
                "best_other": best_other,
                "best_other_median": others.get(best_other),
                "reference_wins": best == [reference],
                "significant_vs_all": bool(ps) and all(p is not None and p < significance for p in ps),
                "max_p": max((p for p in ps if p is not None), default=None),
            }
        summary["variants"][variant] = block
    return summary


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


def autoencoder_method(interpolator: Any) -> InterpolateFn:
    """The autoencoder (a jaxsr.interpolate.LatentInterpolator) as a protocol method:
    its own reconstructions at integer positions too."""

    def fn(stack: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return interpolator.interpolate_stack(stack, positions, keep_originals=False)

    return fn


def check_out_dir(out_dir: pathlib.Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"{out_dir}: folder exists and is not empty (pass --overwrite to replace it)")
    if not out_dir.parent.is_dir():
        raise UserError(f"{out_dir.parent}: output folder's parent does not exist")


def replace_dir(tmp: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Moves the finished `tmp` to `out_dir`; an old `out_dir` is set aside first and then deleted."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"python": platform.python_version(), "jaxsr": jaxsr.version()}
    for pkg in ("jax", "jaxlib", "flax", "numpy", "scipy", "matplotlib", "dm-pix"):
        try:
            found[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return found


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
    significance: float = DEFAULT_SIGNIFICANCE,
    progress: bool = False,
) -> dict:
    """`jaxsr evaluate`: scores.csv, summary.json, figures/*.png and index.html in `out_dir`.

    Everything is written to a temporary sibling folder first and moved into
    place at the end, so a crash leaves no half report. Returns the summary.
    """
    out_dir = pathlib.Path(out_dir)
    check_out_dir(out_dir, overwrite)
    started = time.perf_counter()
    from jaxsr import interpolate

    interpolator, config = interpolate.load_interpolator(checkpoint)
    paths = list(list_volumes(data_dir, split))
    if max_volumes is not None:
        paths = paths[:max_volumes]
    if not paths:
        raise UserError(f"{data_dir}: no volumes in the {split!r} split")
    target_mm = float(config.data.target_spacing_mm)
    if full_fov is False and crop_size < 1:
        raise UserError(f"crop size must be positive, got {crop_size}")
    crop = None if full_fov else crop_size
    methods = {AE: autoencoder_method(interpolator), **baseline_methods()}
    log.info("evaluating %d volume(s) from %s (%s split), crop %s", len(paths), data_dir, split,
             "full field of view" if crop is None else f"{crop}x{crop}")
    evaluation = evaluate_volumes(paths, methods, default_metrics(), crop_size=crop, target_mm=target_mm,
                                  n_examples=n_examples, through_plane_factor=through_plane_factor, progress=progress)
    if len(evaluation.scores) == 0:
        raise UserError(f"{data_dir}: no volume in the {split!r} split has 3 or more slices")
    summary = summarise(evaluation.scores, significance=significance)
    evaluation.seconds["total"] = time.perf_counter() - started
    summary["settings"] = {
        "checkpoint": str(pathlib.Path(checkpoint).resolve()),
        "config": json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else str(config),
        "data_dir": str(pathlib.Path(data_dir).resolve()),
        "split": split,
        "crop": "full field of view" if crop is None else f"{crop}x{crop} centre crop (zero-padded when smaller)",
        "target_spacing_mm": target_mm,
        "volumes": [pathlib.Path(p).name for p in paths],
        "counts": evaluation.counts,
        "seconds": {k: round(v, 3) for k, v in evaluation.seconds.items()},
        "versions": versions(),
        "device": _device(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.jaxsr-tmp-", dir=out_dir.parent))
    try:
        write_outputs(tmp, evaluation, summary)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("evaluation written to %s in %.1f s", out_dir, evaluation.seconds["total"])
    return summary


def write_outputs(folder: pathlib.Path, evaluation: Evaluation, summary: dict) -> None:
    """scores.csv, summary.json (with the verdict sentences), figures and index.html into `folder`."""
    from jaxsr import report

    evaluation.scores.write_csv(folder / "scores.csv")
    for variant in summary["variants"]:
        summary["variants"][variant]["verdicts"] = report.verdicts(summary, variant)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    report.write_report(folder, evaluation, summary)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _device() -> str:
    try:
        import jax

        d = jax.devices()[0]
        return f"{d.platform}: {getattr(d, 'device_kind', d)} x{jax.device_count()}"
    except Exception:  # noqa: BLE001 - a report must not fail over a label
        return "unknown"
