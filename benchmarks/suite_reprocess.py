"""Archive reprocessing: where the time goes, end to end against the device alone, memory and compiles.

Figures (jaxsr.reprocess.reprocess_archive, the device path):
- device only: one volume's programs from its host layout to its result ready
  (jaxsr.device_pipeline.dispatch, preprocessing, the model, restore and the
  output assembly, the copy to the device included), volumes/s;
- end to end, float32 outputs and --keep-dtype outputs: N int16 phantom
  .nii.gz volumes (as ACDC ships them) read, computed, gzipped (level
  jaxsr.io.nifti.GZIP_LEVEL, ISA-L) and written, volumes/s; end to end / (N x device
  only), 1.0 when the host hides completely behind the device; the run's
  device-busy fraction; and per volume, from the manifest lines, host seconds
  (read, decode, encode, write) and device seconds;
- compiled programs for archives of mixed matrix sizes, slice and frame
  counts (tiny model), the device path against the scipy path: for a first
  archive, and what a second one drawn alike still compiles;
- RSS over many small files (500; --quick 60): at the first tenth, half way and
  the end, and its growth.

On an accelerator the same command measures the GPU figures; the end-to-end
runs then take 16 volumes and half the CPUs as workers:

    python -m benchmarks.run --suite reprocess --out benchmarks/results/gpu-reprocess-$(date -u +%F).json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import tempfile
import threading
import time
from typing import Any

import numpy as np

from benchmarks import common, suite_upsample, workloads


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def settings(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    from jaxsr.io.nifti import GZIP_LEVEL

    s = suite_upsample.settings(args)
    accelerator = jax.default_backend() != "cpu"
    s.update(
        volumes=2 if args.quick else (16 if accelerator else 3),
        workers=max(2, (os.cpu_count() or 2) // 2) if accelerator else 2,
        gzip_level=GZIP_LEVEL,
        mixed_files=8 if args.quick else 24,
        rss_files=60 if args.quick else 500,
        rss_shape=(32, 28, 4, 3),
    )
    return s


def _records(out: pathlib.Path) -> list:
    from jaxsr.io import archive

    return [r for r in archive.read_records(out) if r.status == "ok"]


def end_to_end(interpolator, config, inputs: pathlib.Path, tmp: pathlib.Path, s: dict[str, Any],
               device_once, context: dict[str, Any]) -> list[dict[str, Any]]:
    """Interleaved rounds, float32 and --keep-dtype outputs: one device-only volume, then one fresh archive run.

    Each round's end-to-end / device-only ratio uses the device time measured
    just before it, so that load from other processes on a shared machine
    affects both alike.
    """
    from jaxsr.io import archive
    from jaxsr.reprocess import reprocess_archive
    from jaxsr.upsample import UpsampleSettings

    labels = {False: "float32", True: "--keep-dtype (int16)"}
    keys = ("device_s",) + archive.HOST_STAGES
    rates = {k: [] for k in labels}
    ratios = {k: [] for k in labels}
    busy = {k: [] for k in labels}
    stages = {k: {stage: [] for stage in keys} for k in labels}
    device_times = []
    for r in range(s["repeats"]):
        for keep_dtype in labels:
            device_s = device_once()
            device_times.append(device_s)
            out = tmp / f"out-{int(keep_dtype)}-{r}"  # a fresh folder: nothing to resume
            summary = reprocess_archive(interpolator, config, inputs, out,
                                        UpsampleSettings(factor=s["factor"], keep_dtype=keep_dtype),
                                        workers=s["workers"], progress=False)
            if summary.failed:
                raise RuntimeError(f"reprocessing failed: {summary.failed[:2]}")
            rates[keep_dtype].append(len(summary.ok) / summary.seconds)
            ratios[keep_dtype].append(summary.seconds / (len(summary.ok) * device_s))
            busy[keep_dtype].append(summary.device_busy)
            for record in _records(out):
                for k in keys:
                    stages[keep_dtype][k].append(getattr(record, k))
    figures = [common.rate_figure("device only (layout in, output slices ready)", [1 / t for t in device_times],
                                  "volumes/s", note="one volume before each archive run", **context)]
    for keep_dtype, label in labels.items():
        figures += [
            common.rate_figure(f"end to end, {label}", rates[keep_dtype], "volumes/s", **context),
            common.rate_figure(f"end to end / device only, {label}", ratios[keep_dtype], "ratio", **context),
            common.rate_figure(f"device busy, {label}", busy[keep_dtype], "fraction", **context),
        ]
        for k, values in stages[keep_dtype].items():
            figures.append(common.rate_figure(f"per volume: {k[:-2]}, {label}", values, "s", note="over volumes and runs"))
            figures[-1]["mean"] = statistics.fmean(values)
    return figures


def mixed_archive_compiles(tmp: pathlib.Path, n_files: int) -> dict[str, Any]:
    """Programs compiled for two archives of mixed shapes drawn alike, one after the other, on each path.

    From empty jit caches, tiny model. What the second archive still compiles
    is what a larger archive costs per file: the device path's buckets are
    mostly known by then, the scipy path compiles for every new exact shape.
    """
    import jax
    import nibabel as nib

    from jaxsr import device_pipeline, interpolate
    from jaxsr.config import load_config
    from jaxsr.reprocess import reprocess_archive
    from jaxsr.upsample import UpsampleSettings

    rng = np.random.default_rng(0)
    shapes = []
    for half in ("a", "b"):
        (tmp / "mixed" / half).mkdir(parents=True)
        for i in range(n_files // 2):
            shape = (int(rng.integers(40, 90)), int(rng.integers(40, 90)), int(rng.integers(3, 9)), int(rng.integers(2, 7)))
            nib.save(workloads.phantom_volume(shape, workloads.ACDC_SPACING, seed=i), str(tmp / "mixed" / half / f"v{i:02d}.nii.gz"))
            shapes.append(shape)
    config = load_config(workloads.TINY)
    out = {"files": 2 * (n_files // 2), "distinct_shapes": len(set(shapes)), "shapes": shapes}
    for path in ("device", "scipy"):
        jax.clear_caches()
        interpolator = interpolate.interpolator_for(workloads.make_model(config), config)
        for half in ("a", "b"):
            before = device_pipeline.compiled_programs()
            summary = reprocess_archive(interpolator, config, tmp / "mixed" / half, tmp / f"mixed-{path}-{half}",
                                        UpsampleSettings(factor=2, preprocess=path), workers=2, progress=False)
            if summary.failed:
                raise RuntimeError(f"reprocessing failed: {summary.failed[:2]}")
            out[f"{path}_path_programs_{half}"] = device_pipeline.compiled_programs() - before
    return out


def rss_over_files(tmp: pathlib.Path, n_files: int, shape) -> dict[str, Any]:
    """RSS sampled every 0.1 s while reprocessing n_files small volumes, against files done (manifest lines)."""
    import nibabel as nib

    from jaxsr import interpolate
    from jaxsr.config import load_config
    from jaxsr.io import archive
    from jaxsr.reprocess import reprocess_archive
    from jaxsr.upsample import UpsampleSettings

    folder = tmp / "many"
    for i in range(n_files):
        path = folder / f"p{i // 100:02d}" / f"v{i:03d}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        jitter = (i % 3, (i // 3) % 2, 0, 0)  # a few matrix sizes, as an archive has
        nib.save(workloads.phantom_volume(tuple(a + b for a, b in zip(shape, jitter)), workloads.ACDC_SPACING, seed=i), str(path))
    config = load_config(workloads.TINY)
    interpolator = interpolate.interpolator_for(workloads.make_model(config), config)
    out = tmp / "many-out"
    manifest = out / archive.STATE_DIR / archive.manifest_name()
    samples: list[tuple[int, float]] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.1):
            done = manifest.read_bytes().count(b"\n") if manifest.exists() else 0
            samples.append((done, _rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    start_rss = _rss_mb()
    sampler.start()
    summary = reprocess_archive(interpolator, config, folder, out, UpsampleSettings(factor=2), workers=2, progress=False)
    stop.set()
    sampler.join()

    def at(fraction):  # RSS when that fraction of the files was done
        target = max(1, int(fraction * n_files))
        return next((rss for done, rss in samples if done >= target), samples[-1][1])

    tenth, half, end = at(0.1), at(0.5), at(1.0)
    return {"files": n_files, "ok": len(summary.ok), "rss_before_mb": start_rss, "rss_at_10pct_mb": tenth,
            "rss_at_50pct_mb": half, "rss_at_end_mb": end, "rss_max_mb": max(rss for _, rss in samples),
            "growth_10pct_to_end_mb": end - tenth,
            "seconds": summary.seconds, "volumes_per_s": len(summary.ok) / summary.seconds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    from jaxsr import device_pipeline, interpolate
    from jaxsr.io.nifti import load

    s = settings(args)
    model, config, source = suite_upsample.model_and_config(s, getattr(args, "checkpoint", None))
    interpolator = interpolate.interpolator_for(model, config, batch_size=s["batch_size"])
    context = {"config": source, "batch_size": s["batch_size"], "devices": interpolator.n_devices}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        # Small volumes first: RSS growth is not hidden in memory the large ones freed.
        rss = rss_over_files(tmp, s["rss_files"], s["rss_shape"])
        compiles = mixed_archive_compiles(tmp, s["mixed_files"])
        inputs = workloads.write_phantoms(tmp / "in", s["volumes"], s["shape"], s["spacing_mm"])
        volume = load(inputs[0])
        plan = device_pipeline.plan_volume(interpolator, config, volume, factor=s["factor"])
        layout = device_pipeline.host_layout(volume, plan)

        def device_once() -> float:
            t0 = time.perf_counter()
            jax.block_until_ready(device_pipeline.dispatch(interpolator, plan, layout).out)
            return time.perf_counter() - t0

        first_call_s = device_once()  # compiles
        figures = end_to_end(interpolator, config, tmp / "in", tmp, s, device_once, context)
        figures[0]["first_call_s"] = first_call_s
    half = compiles["files"] // 2
    for path in ("device", "scipy"):
        first, second = compiles[f"{path}_path_programs_a"], compiles[f"{path}_path_programs_b"]
        figures.append(common.rate_figure(f"programs compiled, {path} path, {compiles['files']} mixed files", [first + second],
                                          "programs", note=f"{second} for the second {half}; tiny model"))
    figures.append(common.rate_figure(f"RSS over {rss['files']} small files (10%, 50%, end)",
                                      [rss["rss_at_10pct_mb"], rss["rss_at_50pct_mb"], rss["rss_at_end_mb"]], "MB",
                                      note=f"growth {rss['growth_10pct_to_end_mb']:+.1f} MB; tiny model"))
    return {
        "settings": {**s, "model": source, "output_slices_per_volume": plan.slices.positions.size * volume.n_frames,
                     "config": config.to_dict(), "buckets": {"rows": plan.rows, "raw_xy": plan.raw_xy, "model_xy": plan.model_xy}},
        "figures": figures,
        "compiles": compiles,
        "rss": rss,
    }
