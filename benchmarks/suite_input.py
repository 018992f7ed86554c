"""Input pipeline: tf.data training batches per second beside the train step's consumption.

A phantom dataset (jaxsr.data.phantom) is made on the fly; its training volumes
go through the project's pipeline (jaxsr.data.pipeline) to global batches of
the paper's crops and augmentations. The figure is images/s delivered to the
host, timed over several batches per repeat after the pipeline has warmed up
(buffers filled). Beside it the train step's images/s at the same batch size
and configuration: the run is input-bound when the pipeline is slower.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import tempfile
import time
from typing import Any

import numpy as np

from benchmarks import common, suite_train, workloads

log = logging.getLogger(__name__)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "config": workloads.TINY if quick else workloads.PAPER,
        "batch_size": 8 if quick else 32,
        "crop_size": 32 if quick else 128,
        "batches_per_repeat": 4 if quick else 20,
        "repeats": args.repeats or (3 if quick else 5),
        "patients": 4 if quick else 8,
        "phantom_spec": {"fov_mm": (72.0, 80.0), "frames": (2, 3), "slices": (6, 8), "test_slices": (8, 10)}
        if quick else {"frames": (10, 12)},
    }


def batches(config, stacks: list[np.ndarray], s: dict[str, Any]):
    """(iterator of host batches of jaxsr.data.pipeline, its description)."""
    from jaxsr.data import pipeline

    data = config.data.copy_and_resolve_references()
    data.crop_size = s["crop_size"]
    ds = pipeline.make_dataset(stacks, data, batch_size=s["batch_size"], seed=0, triplets=bool(data.triplets))
    return (b["image"] for b in pipeline.numpy_batches(ds)), "jaxsr.data.pipeline.make_dataset (tf.data, parallel map, prefetch)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxsr.config import load_config, target_spacing

    s = settings(args)
    config = load_config(s["config"], [f"--config.data.crop_size={s['crop_size']}"])
    with tempfile.TemporaryDirectory() as tmp:
        train_paths, _, data = workloads.phantom_split(pathlib.Path(tmp) / "phantom", s)
        stacks = workloads.training_stacks(train_paths, target_spacing(config))
        t0 = time.perf_counter()
        it, source = batches(config, stacks, s)
        first = next(it)
        setup_s = time.perf_counter() - t0
        for _ in range(s["batches_per_repeat"]):  # fill the shuffle and prefetch buffers
            next(it)

        def pull():
            for _ in range(s["batches_per_repeat"]):
                batch = next(it)
            return batch

        timing = common.time_repeats(pull, repeats=s["repeats"], warmup=1, block=lambda x: x)
        # What the trainer itself feeds its step: jaxsr.train.batches.sample_batch (numpy, per step).
        sampler = trainer_sampler(config, stacks, s)
    shape = tuple(np.asarray(first).shape)
    context = {"config": s["config"], "batch_size": s["batch_size"], "image_size": s["crop_size"]}
    pipe = common.figure("tf.data pipeline", timing, s["batches_per_repeat"] * s["batch_size"], "images",
                         **context, note="host, " + source.split(" ")[0])
    pipe["first_call_s"] = setup_s
    figures = [pipe]
    if sampler is not None:
        sample_timing, sampler_source = sampler
        figures.append(common.figure("trainer's batch sampler", sample_timing,
                                     s["batches_per_repeat"] * s["batch_size"], "images", **context,
                                     note="host, " + sampler_source))
    m = suite_train.jaxsr_alone(args, s["config"], [], "train", s["batch_size"], s["crop_size"], "float32",
                                s["repeats"])
    step = common.rate_figure("train step consumption", m["rates"], "images/s", **context, dtype="float32",
                              first_call_s=m["prepare"]["first_call_s"], note="jaxsr worker, 1 device")
    figures.append(step)
    feeds = {f["name"]: f["median"] / step["median"] for f in figures[:-1]}
    return {"settings": s, "data": data, "pipeline": source, "batch_shape": shape,
            "input_bound": pipe["median"] < step["median"],
            "input_over_step": feeds, "step_source": "jaxsr.train.step.build_step (benchmarks.impl_jaxsr)",
            "figures": figures}


def trainer_sampler(config, stacks: list[np.ndarray], s: dict[str, Any]):
    """Timing of jaxsr.train.batches.sample_batch (the default loader) on the same stacks."""
    from jaxsr.train import batches as batches_lib

    counter = {"step": 0}

    def pull():
        for _ in range(s["batches_per_repeat"]):
            counter["step"] += 1
            batch = batches_lib.sample_batch(stacks, config.data, batch_size=s["batch_size"], seed=0,
                                             step=counter["step"], triplets=bool(config.data.triplets))
        return batch

    timing = common.time_repeats(pull, repeats=s["repeats"], warmup=1, block=lambda x: x)
    return timing, "jaxsr.train.batches.sample_batch (numpy, 1 thread)"
