"""Upsampling throughput: latent interpolation of an ACDC-sized 4D volume vs scipy.

Figures (output slices/s, factor 2, same volume and output grid for all):
- latent interpolation, device compute only (preprocessed stack in, slices out);
- the whole `jaxsr.upsample.upsample_volume` (CPU preprocessing and
  restoring the source grid included), also as volumes/s;
- scipy.ndimage.map_coordinates linear (order 1) and cubic B-spline (order 3)
  on the raw volume, frame by frame: what a user would otherwise run.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import tempfile
from typing import Any

import numpy as np

from benchmarks import common, workloads

log = logging.getLogger(__name__)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "config": workloads.TINY if quick else workloads.PAPER,
        "shape": (40, 48, 4, 3) if quick else workloads.ACDC_SHAPE,
        "spacing_mm": workloads.ACDC_SPACING,
        "factor": 2,
        "batch_size": 8 if quick else 64,
        "repeats": args.repeats or 2,  # one ACDC-sized volume is minutes on 2 CPU cores
    }


# Latent-compute timings by (shape, batch size, model): the reprocess suite reuses the
# upsample suite's measurement instead of repeating minutes of identical work.
COMPUTE_TIMINGS: dict[tuple, common.Timing] = {}


def compute_timing(interpolator, prepared, s: dict[str, Any], source: str) -> common.Timing:
    key = (tuple(s["shape"]), s["batch_size"], source, interpolator.n_devices)
    if key not in COMPUTE_TIMINGS:
        COMPUTE_TIMINGS[key] = common.time_repeats(
            lambda: interpolator.interpolate_stack(prepared.stack, prepared.positions),
            repeats=s["repeats"], warmup=1, block=lambda x: x)  # returns host arrays
    return COMPUTE_TIMINGS[key]


def model_and_config(s: dict[str, Any], checkpoint: str | None):
    if checkpoint:
        from jaxsr.train.checkpoint import load_for_inference

        model, config = load_for_inference(checkpoint)
        return model, config, f"checkpoint {checkpoint}"
    from jaxsr.config import load_config

    config = load_config(s["config"])
    # Random weights: speed does not depend on what the weights are.
    return workloads.make_model(config), config, f"{s['config']}, random init"


def scipy_resample(data: np.ndarray, positions: np.ndarray, order: int) -> np.ndarray:
    """Through-plane resampling of (X, Y, Z, T), frame by frame, with map_coordinates."""
    from scipy import ndimage

    nx, ny, _, nt = data.shape
    coords = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), positions, indexing="ij")).astype(np.float64)
    out = np.empty((nx, ny, positions.size, nt), np.float32)
    for t in range(nt):
        out[..., t] = ndimage.map_coordinates(data[..., t], coords, order=order, mode="mirror")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import nibabel as nib

    from jaxsr import interpolate, upsample
    from jaxsr.io.nifti import load

    s = settings(args)
    model, config, source = model_and_config(s, getattr(args, "checkpoint", None))
    interpolator = interpolate.LatentInterpolator(
        model, batch_size=s["batch_size"], size_multiple=interpolate.size_multiple_for(config))
    context = {"config": source, "batch_size": s["batch_size"], "dtype": str(config.model.get("dtype", "float32")),
               "devices": interpolator.n_devices}
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "volume.nii.gz"
        nib.save(workloads.phantom_volume(s["shape"], s["spacing_mm"]), str(path))
        volume = load(path)
    prepared = interpolate.prepare_volume(volume, config, factor=s["factor"])
    n_out = prepared.positions.size * volume.n_frames
    n_new = (prepared.positions.size - volume.n_slices) * volume.n_frames
    repeats = s["repeats"]

    compute = compute_timing(interpolator, prepared, s, source)
    figures.append(common.figure("latent compute (stack in, slices out)", compute, n_out, "slices", **context))
    full = common.time_repeats(lambda: upsample.upsample_volume(interpolator, config, volume, factor=s["factor"]),
                               repeats=repeats, warmup=1, block=lambda x: x)
    figures.append(common.figure("upsample_volume end to end", full, n_out, "slices", **context))
    figures.append(common.figure("upsample_volume end to end", full, 1, "volumes", **context))
    for name, order in (("scipy linear (order 1)", 1), ("scipy cubic B-spline (order 3)", 3)):
        timing = common.time_repeats(lambda: scipy_resample(volume.data, prepared.positions, order),
                                     repeats=repeats, warmup=1, block=lambda x: x)
        figures.append(common.figure(name, timing, n_out, "slices", note="CPU, 1 thread"))
    ae = figures[0]["median"]
    return {
        "model_source": workloads.model_source(),
        "settings": {**s, "model": source, "input_shape": list(volume.data.shape),
                     "preprocessed_shape": list(prepared.stack.shape), "output_slices": n_out, "new_slices": n_new,
                     "config": config.to_dict()},
        "figures": figures,
        "ratios": {"latent_compute_over_scipy_linear": ae / figures[3]["median"],
                   "latent_compute_over_scipy_bspline": ae / figures[4]["median"]},
    }
