"""Does an XLA CPU flag make jaxsr's whole train (or inference) step faster?

    python -m benchmarks.xla_flags [--kind train] [--batch 8] [--rounds 3] [--config acdc_paper] [--out FILE]

One jaxsr worker (benchmarks.worker) per flag setting, each in its own process
on the same CPUs with the same threads, timed in interleaved rounds
(benchmarks.rounds); the ratio to the default (no flag) is taken within each
round. The per-layer view of the same question is benchmarks/conv_layers.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
from typing import Any

from benchmarks import rounds
from benchmarks.processes import Worker

SETTINGS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "eigen_single_thread": "--xla_cpu_multi_thread_eigen=false",  # convs/matmuls on one thread, ops in parallel
}


def run(kind: str, batch: int, n_rounds: int, config: str, cpus: list[int]) -> dict[str, Any]:
    user_flags = os.environ.get("XLA_FLAGS", "")
    workers: dict[str, Worker] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name, flag in SETTINGS.items():
                os.environ["XLA_FLAGS"] = f"{user_flags} {flag}".strip()  # Worker takes its env from ours
                log_dir = pathlib.Path(tmp) / name  # each worker's stderr is log_dir/jaxsr.stderr.txt
                log_dir.mkdir()
                workers[name] = Worker("jaxsr", cpus, len(cpus), log_dir)
            os.environ["XLA_FLAGS"] = user_flags
            weights = str(pathlib.Path(tmp) / "weights.npz")
            prepared = {}
            for name, w in workers.items():
                w.call("create", config=config, overrides=[], weights=weights)
                prepared[name] = w.call("prepare", kind=kind, batch=batch, image_size=128, dtype="float32")
            measured = rounds.interleaved(workers, items_per_step=batch, rounds=n_rounds, segment_s=3.0,
                                          warm_step_s={n: p["warm_step_s"] for n, p in prepared.items()})
        finally:
            for w in workers.values():
                w.close()
    rates = measured["rates"]
    return {"kind": kind, "batch": batch, "config": config, "cpus": cpus, "flags": SETTINGS,
            "images_per_s": {n: rounds.spread(r) for n, r in rates.items()},
            "vs_default": {n: rounds.spread([a / b for a, b in zip(r, rates["default"])]) for n, r in rates.items()
                           if n != "default"}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.xla_flags", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("train", "infer"), default="train")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default="acdc_paper")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    result = run(args.kind, args.batch, args.rounds, args.config, sorted(os.sched_getaffinity(0)))
    for name, s in result["images_per_s"].items():
        ratio = result["vs_default"].get(name)
        tail = f"  x{ratio['median']:.3f} ({ratio['min']:.3f}..{ratio['max']:.3f}) vs default" if ratio else ""
        print(f"{args.kind} batch {args.batch} {name:>20}: {s['median']:.2f} images/s ({s['min']:.2f}..{s['max']:.2f}){tail}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
