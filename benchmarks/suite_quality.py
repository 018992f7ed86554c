"""Quality beside speed: SSIM, PSNR (dm-pix) and VIF of the autoencoder and the three baselines.

Runs the paper's protocol through jaxsr.evaluate (drop every other slice,
reconstruct it, score it against the dropped original; 'dropped' variant) on
a held-out split: --data-dir's 'test' split, or phantom volumes made on the
fly. The model is --checkpoint's, or else a tiny model trained briefly here on
the phantom's training volumes (said in the JSON under 'model'): a quality
*regression* check, not the paper's numbers.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import tempfile
import time
from typing import Any

from benchmarks import workloads

log = logging.getLogger(__name__)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "config": workloads.TINY,
        # Phantom patients; the last eighth (at least 1) are held out for testing, as the phantom defines.
        "patients": 4 if quick else 12,
        "phantom_spec": ({"fov_mm": (72.0, 80.0), "frames": (2, 3), "slices": (6, 8), "test_slices": (8, 10)}
                         if quick else {"frames": (4, 6)}),
        "crop_size": 48 if quick else 64,  # VIF needs >= 41 pixels; divisible by 2**num_blocks
        "train_steps": 40 if quick else 300,
        "train_batch_size": 8,
    }


def model_for(args, s: dict[str, Any], train_paths: list[pathlib.Path], workdir: pathlib.Path):
    """--checkpoint's model, or the tiny config trained here by `jaxsr train`'s loop on the training volumes."""
    import json

    from flax import nnx

    if getattr(args, "checkpoint", None):
        from jaxsr.train.checkpoint import load_for_inference

        model, config = load_for_inference(args.checkpoint)
        return model, config, {"source": "checkpoint", "checkpoint": str(args.checkpoint)}
    from jaxsr.config import load_config, target_spacing

    from benchmarks import impl_jaxsr

    steps = s["train_steps"]
    config = impl_jaxsr.variant(load_config(s["config"]), **{
        "data.crop_size": s["crop_size"], "optim.learning_rate": 3e-3,  # a few hundred steps, not days at 1e-5
        "train.steps": steps, "train.batch_size": s["train_batch_size"], "train.log_every": 1,
        "train.checkpoint_every": steps, "train.eval_every": steps})
    stacks = workloads.training_stacks(train_paths, target_spacing(config))
    t0 = time.perf_counter()
    trained = impl_jaxsr.train_in_memory(config, workdir, stacks)
    model, _ = nnx.merge(trained["graphdef"], trained["state"])
    model.eval()
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    info = {"source": "briefly trained tiny model", "config": s["config"], "steps": steps,
            "batch_size": s["train_batch_size"], "learning_rate": 3e-3, "first_loss": losses[0],
            "last_loss": losses[-1], "train_s": time.perf_counter() - t0,
            "trainer": "jaxsr.train.loop.train (benchmarks.impl_jaxsr.train_in_memory)",
            "model_source": workloads.model_source()}
    return model, config, info


def run(args: argparse.Namespace) -> dict[str, Any]:
    from jaxsr import evaluate, interpolate, stats
    from jaxsr.config import target_spacing
    from jaxsr.scores import PRIMARY

    s = settings(args)
    with tempfile.TemporaryDirectory() as tmp:
        if getattr(args, "data_dir", None):
            train_paths = evaluate.list_volumes(args.data_dir, "train")
            test_paths = evaluate.list_volumes(args.data_dir, "test")
            data = {"source": str(args.data_dir), "split": "test", "test_volumes": len(test_paths)}
        else:
            train_paths, test_paths, data = workloads.phantom_split(pathlib.Path(tmp) / "phantom", s)
        model, config, model_info = model_for(args, s, train_paths, pathlib.Path(tmp) / "train")
        methods = {evaluate.AE: evaluate.autoencoder_method(interpolate.interpolator_for(model, config)), **evaluate.baseline_methods()}
        t0 = time.perf_counter()
        evaluation = evaluate.evaluate_volumes(test_paths, methods, evaluate.default_metrics(),
                                               crop_size=s["crop_size"],
                                               target_mm=target_spacing(config),
                                               n_examples=0, through_plane_factor=0)
        eval_s = time.perf_counter() - t0
    summary = stats.summarise(evaluation.scores)
    block = summary["variants"][PRIMARY]
    figures, table = [], {}
    for method, scores in block["methods"].items():
        table[method] = {}
        for metric in evaluate.METRICS:
            stat = scores[metric]
            table[method][metric] = stat
            figures.append({"name": f"{method} {metric}", "unit": metric.upper() + (" dB" if metric == "psnr" else ""),
                            "median": stat["median"], "min": stat["q25"], "max": stat["q75"],
                            "iqr": stat["q75"] - stat["q25"], "repeats": stat["n"],
                            "note": f"q25..q75 over {stat['n']} dropped slices"})
    n_slices = evaluation.counts["slices_scored"]
    figures.append({"name": "evaluation (all methods and metrics)", "unit": "slices/s",
                    "median": n_slices / eval_s, "min": n_slices / eval_s, "max": n_slices / eval_s, "iqr": 0.0,
                    "repeats": 1, "note": "one run, compile included"})
    return {"settings": s, "data": data, "model": model_info, "variant": PRIMARY,
            "quality": table, "wilcoxon": block.get("wilcoxon"), "counts": evaluation.counts,
            "evaluation_s": eval_s, "figures": figures}
