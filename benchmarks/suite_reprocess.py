"""Archive reprocessing: end to end (read, preprocess, compute, restore, write) vs compute only.

N phantom volumes (int16 .nii.gz as ACDC ships them) go through
`jaxsr.reprocess.reprocess_archive`; compute only is N times the median
latent-compute time of one volume (measured here on the same volume size).
The ratio end-to-end / compute-only is 1.0 when the reader and writer threads
hide all I/O and CPU work behind the device.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time
from typing import Any

from benchmarks import common, suite_upsample, workloads


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxsr import interpolate
    from jaxsr.io.nifti import load
    from jaxsr.reprocess import UpsampleSettings, reprocess_archive

    s = suite_upsample.settings(args)
    s["volumes"] = 2 if args.quick else 3
    s["workers"] = 2
    model, config, source = suite_upsample.model_and_config(s, getattr(args, "checkpoint", None))
    interpolator = interpolate.LatentInterpolator(
        model, batch_size=s["batch_size"], size_multiple=interpolate.size_multiple_for(config))
    context = {"config": source, "batch_size": s["batch_size"], "devices": interpolator.n_devices}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        inputs = workloads.write_phantoms(tmp / "in", s["volumes"], s["shape"], s["spacing_mm"])
        volume = load(inputs[0])
        prepared = interpolate.prepare_volume(volume, config, factor=s["factor"])
        n_out = prepared.positions.size * volume.n_frames
        compute = suite_upsample.compute_timing(interpolator, prepared, s, source)
        runs = []
        for r in range(1 if not args.quick else s["repeats"]):
            out = tmp / f"out{r}"  # a fresh folder: nothing to resume
            t0 = time.perf_counter()
            summary = reprocess_archive(interpolator, config, tmp / "in", out, UpsampleSettings(factor=s["factor"]),
                                        workers=s["workers"], progress=False)
            runs.append(time.perf_counter() - t0)
            if summary.failed:
                raise RuntimeError(f"reprocessing failed: {summary.failed[:2]}")
        end_to_end = common.Timing(first_call_s=float("nan"), repeats_s=runs)
        n = s["volumes"]
        figures = [
            common.figure("archive end to end", end_to_end, n, "volumes", **context),
            common.figure("archive end to end", end_to_end, n * n_out, "slices", **context),
            common.figure("compute only (per volume x N)", compute, 1, "volumes", **context),
        ]
    ratios = sorted(t / (n * compute.median_s) for t in runs)
    figures.append({"name": "end to end / compute only", "unit": "ratio", "median": statistics.median(ratios),
                    "min": ratios[0], "max": ratios[-1], "iqr": ratios[-1] - ratios[0], "repeats": len(ratios),
                    **context})
    figures[0]["first_call_s"] = None  # compiled programs are already warm from the compute timing
    figures[1]["first_call_s"] = None
    return {"settings": {**s, "model": source, "output_slices_per_volume": n_out, "config": config.to_dict()},
            "figures": figures}
