"""Images/s of the tf.data pipeline (jaxsr.data.pipeline) on this machine.

A phantom dataset is written to a temporary folder and its training volumes
preprocessed; then the pipeline delivers batches of 128 x 128 crops with rot90
and gamma, single slices and triplets, timed after a warm-up (buffers filled).
Beside it the numpy sampler the demo trains with (jaxsr.train.batches).

    python -m benchmarks.pipeline_throughput [--patients 8] [--batch-size 32] [--batches 50] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import tempfile
import time

import ml_collections


def _rate(next_batch, batches: int, batch_size: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        next_batch()
    t0 = time.perf_counter()
    for _ in range(batches):
        next_batch()
    return batches * batch_size / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args(argv)

    from jaxsr.configs import default
    from jaxsr.data import datasets, phantom, pipeline
    from jaxsr.train import batches as batches_lib

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        phantom.write_phantom_dataset(pathlib.Path(tmp), args.patients, 0)
        phantom_s = time.perf_counter() - t0
        stacks = datasets.load_stacks(tmp, "train", default.get_config().data.target_spacing_mm)
    cfg = ml_collections.ConfigDict({"crop_size": args.crop, "rot90": True, "intensity_aug": True, "gamma_range": (0.7, 1.5)})
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "phantom_patients": args.patients,
        "phantom_seconds": round(phantom_s, 1),
        "training_slices": int(sum(s.shape[2] * s.shape[3] for s in stacks)),
        "batch_size": args.batch_size,
        "crop": args.crop,
    }
    for triplets in (False, True):
        it = pipeline.numpy_batches(pipeline.make_dataset(stacks, cfg, batch_size=args.batch_size, seed=0, triplets=triplets))
        result[f"tfdata_{'triplet' if triplets else 'slice'}_images_per_s"] = round(_rate(lambda: next(it), args.batches, args.batch_size), 1)
        step = iter(range(10**9))
        sample = lambda: batches_lib.sample_batch(stacks, cfg, batch_size=args.batch_size, seed=0, step=next(step), triplets=triplets)
        result[f"numpy_{'triplet' if triplets else 'slice'}_images_per_s"] = round(_rate(sample, args.batches, args.batch_size), 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
