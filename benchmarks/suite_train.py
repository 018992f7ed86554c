"""Training and inference throughput of jaxsr beside its peers, each in its own process.

Implementations: jaxsr (benchmarks.impl_jaxsr: the trainer's step, the
model's encode + decode, `jaxsr train`'s loop), the plain-JAX twin
(benchmarks.impl_jax_twin) and PyTorch eager (benchmarks.impl_torch, when
installed; on CPU also as `torch_kept_memory`, with the host-memory policy
that jaxsr's command line sets, jaxsr.host_memory). All run pinned to the
same CPUs with the same thread count; the parent only coordinates and never
times anything itself.

Per configuration: jaxsr exports its weights, every peer loads them, and the
peers must compute the same function (benchmarks.equivalence) before any is
timed. Per workload (train step or inference, batch size, dtype): each
implementation compiles and warms up, then timing rounds interleave them
(benchmarks.rounds); images/s per implementation and the ratio jaxsr / peer
are reported per round and as median with min..max. FLOPs are the analytic
conv count (benchmarks.flops), XLA's unoptimised count beside it as a check;
MFU is against the peak of the precision actually used (benchmarks.peak).
Finally `jaxsr train`'s own images/s, as the loop logs them (it times itself
between its host syncs), beside the step alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import tempfile
import time
import types
from typing import Any

import numpy as np

from benchmarks import common, equivalence, flops, impl_torch, peak, processes, rounds
from jaxsr.configs import default

log = logging.getLogger(__name__)
SUBJECT, TWIN, TORCH = "jaxsr", "jax_twin", "torch"
# PyTorch with the host-memory policy `jaxsr` sets for itself (jaxsr.host_memory): on CPU it spares PyTorch
# the same page faults, so jaxsr's figure is shown against PyTorch both as users run it and like for like.
TORCH_KEPT = "torch_kept_memory"
TORCHES = (TORCH, TORCH_KEPT)
# The tiny config trains with the triplet interpolation loss; the peers implement the paper's MSE loss.
QUICK_CONFIG = ("tiny", ["--config.data.triplets=false", "--config.loss.interp_weight=0.0"])
ACCELERATOR_BATCHES = [16, 32, 64, 128, 256, 512]


def _split(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t]


def settings(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """What to run: quick (tiny network, seconds), CPU (the issue's table), accelerators (a batch sweep)."""
    accelerator = backend != "cpu"
    if args.quick:
        s = {"configs": [QUICK_CONFIG[0]], "overrides": QUICK_CONFIG[1], "train_batches": [8], "infer_batches": [8],
             "dtypes": ["float32"], "rounds": 3, "segment_s": 0.2, "loop_steps": 50, "peak_matmul_n": 256}
    else:
        s = {"configs": ["acdc_paper"], "overrides": [],
             "train_batches": ACCELERATOR_BATCHES if accelerator else [8, 32],
             "infer_batches": ACCELERATOR_BATCHES if accelerator else [32],
             "dtypes": ["float32", "bfloat16"] if accelerator else ["float32"],
             # On a lent accelerator device time is short: 3 rounds of 0.5 s segments per implementation.
             "rounds": 3 if accelerator else 5, "segment_s": 0.5 if accelerator else 2.0,
             "loop_steps": 300 if accelerator else 12,
             "peak_matmul_n": None}
    if args.configs:
        s["configs"] = _split(args.configs)
    if args.batch_sizes:
        s["train_batches"] = [int(b) for b in _split(args.batch_sizes)]
    if args.infer_batch_sizes:
        s["infer_batches"] = [int(b) for b in _split(args.infer_batch_sizes)]
    if args.dtypes:
        s["dtypes"] = _split(args.dtypes)
    if args.repeats:
        s["rounds"] = args.repeats
    if args.loop_steps is not None:
        s["loop_steps"] = args.loop_steps
    s["peers"] = [] if args.no_peer else (_split(args.peers) or [TWIN, TORCH] + ([] if accelerator else [TORCH_KEPT]))
    return s


def _cpus(args: argparse.Namespace) -> list[int]:
    return [int(c) for c in _split(args.cpus)] if args.cpus else sorted(os.sched_getaffinity(0))


def start_peers(pool: processes.Pool, wanted: list[str], info: dict) -> tuple[dict, dict]:
    """({name: worker}, {name: why skipped}); the twin starts for any peer: it is the float64 reference."""
    if not wanted:
        return {}, {}
    started, skipped = {TWIN: pool.start(TWIN)}, {}
    for name in (n for n in TORCHES if n in wanted):
        why = impl_torch.missing()
        if why is None and info["backend"] == "tpu":
            why = "no PyTorch peer on TPU"
        if why:
            skipped[name] = why
        else:
            try:
                started[name] = pool.start(name)
            except processes.WorkerError as error:
                skipped[name] = str(error)
    return started, skipped


def check_peers(jaxsr, peers: dict, created: dict, weights: pathlib.Path, tmp: pathlib.Path, backend: str) -> dict:
    """Loads the weights into every peer and compares outputs, loss and gradients (benchmarks.equivalence)."""
    device = "cuda" if backend == "gpu" else "cpu"
    report: dict[str, Any] = {"reference": "plain-JAX twin in float64",
                              "rule": "relative 2-norm error against the float64 reference; see benchmarks/equivalence.py"}
    loaded = {}
    for name, w in peers.items():
        try:
            got = w.call("load", model=created["model"], weights=str(weights), learning_rate=created["learning_rate"],
                         **({"device": device} if name in TORCHES else {}))
            if got["parameters"] != created["parameters"]:
                raise processes.WorkerError(name, f"{got['parameters']} parameters, jaxsr {created['parameters']}")
            loaded[name] = w
        except processes.WorkerError as error:
            report[name] = {"ok": False, "why": f"could not load jaxsr's weights: {error}"}
    if TWIN not in loaded:
        report[SUBJECT] = {"ok": False, "why": "no float64 reference (the twin did not load)"}
        return report
    size = created["crop_size"]
    images = tmp / "check_images.npz"
    np.savez(images, x=np.random.default_rng(7).random((2, size, size, 1), dtype=np.float32))
    report["images"] = [2, size, size, 1]

    def evaluate(w, name, float64=False):
        out = tmp / f"check_{name}_{'64' if float64 else '32'}.npz"
        w.call("check", inputs=str(images), out=str(out), float64=float64)
        return dict(np.load(out))

    reference = evaluate(loaded[TWIN], TWIN, float64=True)
    twin32 = evaluate(loaded[TWIN], TWIN)
    tol = report["tolerances"] = equivalence.tolerances(twin32, reference)
    report[SUBJECT] = equivalence.compare(evaluate(jaxsr, SUBJECT), reference, tol, "float32")
    report[TWIN] = equivalence.compare(twin32, reference, tol, "float32")
    for name, w in loaded.items():
        if name != TWIN:
            report[name] = equivalence.compare(evaluate(w, name), reference, tol, "float32")
            report[name + " (float64)"] = equivalence.compare(evaluate(w, name, True), reference, tol, "float64")
    return report


def _passed(report: dict, name: str) -> bool:
    checks = [v for k, v in report.items() if k == name or k == f"{name} (float64)"]
    return bool(checks) and all(v["ok"] for v in checks)


def peers_to_time(report: dict, peers: dict, wanted: list[str], config: str, figures: list) -> dict:
    """The wanted peers that, like jaxsr, compute the reference function; a figure says why for the others."""
    timed = {n: w for n, w in peers.items() if n in wanted and _passed(report, n) and _passed(report, SUBJECT)}
    for n in peers:
        if n in wanted and n not in timed:
            why = "; ".join(f"{k}: {v['why']}" for k, v in report.items()
                            if k.split(" ")[0] in (n, SUBJECT) and isinstance(v, dict) and not v.get("ok", True))
            figures.append({"name": f"peer {n} on {config}", "skipped": "not the same function: " + why})
    return timed


def measure(workers: dict, kind: str, batch: int, size: int, dtype: str, s: dict, created: dict,
            peaks: dict) -> dict[str, Any]:
    """One workload on every implementation: compile and warm up, interleaved rounds, FLOPs and MFU."""
    prepared, failed = {}, {}
    t0 = time.perf_counter()
    for name, w in workers.items():
        try:
            prepared[name] = w.call("prepare", kind=kind, batch=batch, image_size=size, dtype=dtype)
        except processes.WorkerError as error:
            if name == SUBJECT:
                raise
            failed[name] = {"error": str(error), "oom": error.oom}
    prepare_s = time.perf_counter() - t0
    timed = {name: workers[name] for name in prepared}
    log.info("%s batch %d %s: compiled on %s; %d interleaved rounds", kind, batch, dtype, ", ".join(timed), s["rounds"])
    measured = rounds.interleaved(timed, items_per_step=batch, rounds=s["rounds"], segment_s=s["segment_s"],
                                  warm_step_s={n: p["warm_step_s"] for n, p in prepared.items()})
    analytic = flops.per_image(kind, common_model(created), size)
    xla = workers[SUBJECT].call("xla_flops")
    peak_fps = peaks[dtype]["flops_per_s"]
    images_per_s = {name: rounds.spread(r) for name, r in measured["rates"].items()}
    return {
        "kind": kind, "batch_size": batch, "dtype": dtype, "image_size": size,
        "prepare": prepared, "failed": failed, "steps_per_segment": measured["steps_per_segment"],
        "images_per_s": images_per_s, "ratios": rounds.ratios(measured["rates"], SUBJECT),
        "flops_per_image": analytic,
        "xla_unoptimised_flops_per_image": None if xla is None else xla / batch,
        "mfu": {name: r["median"] * analytic / peak_fps if peak_fps else None for name, r in images_per_s.items()},
        "wall_s": {"prepare": prepare_s, "total": time.perf_counter() - t0},
    }


def common_model(created: dict) -> types.SimpleNamespace:
    return types.SimpleNamespace(**created["model"])


def figures_for(config: str, w: dict, peaks: dict) -> list[dict]:
    context = {"config": config, "batch_size": w["batch_size"], "dtype": w["dtype"], "image_size": w["image_size"]}
    what = "train step" if w["kind"] == "train" else "inference (encode+decode)"
    out = []
    for name, r in w["images_per_s"].items():
        fig = common.rate_figure(f"{what}: {name}", r["per_round"], "images/s", **context,
                                 first_call_s=w["prepare"][name]["first_call_s"])
        out.append(fig)
        if w["mfu"][name] is not None:
            p = peaks[w["dtype"]]
            out.append(common.derived(f"{what}: {name} MFU ({p['precision']})", fig,
                                      w["flops_per_image"] / p["flops_per_s"], "fraction", **context))
    for name, r in w["ratios"].items():
        out.append(common.rate_figure(f"{what}: {name}", r["per_round"], "ratio", **context,
                                      note="per round, interleaved"))
    for name, f in w["failed"].items():
        out.append({"name": f"{what}: {name}", "skipped": ("out of memory: " if f["oom"] else "") + f["error"][:200]})
    return out


def jaxsr_alone(args: argparse.Namespace, config: str, overrides: list[str], kind: str, batch: int, size: int,
                dtype: str, repeats: int) -> dict[str, Any]:
    """jaxsr's images/s for one workload in its own worker, no peers (the input suite's step figure)."""
    cpus = _cpus(args)
    with tempfile.TemporaryDirectory() as tmp, processes.Pool(cpus, args.threads or len(cpus), pathlib.Path(tmp)) as pool:
        jaxsr = pool.start(SUBJECT)
        jaxsr.call("create", config=config, overrides=overrides, weights=str(pathlib.Path(tmp) / "weights.npz"))
        prepared = jaxsr.call("prepare", kind=kind, batch=batch, image_size=size, dtype=dtype)
        measured = rounds.interleaved({SUBJECT: jaxsr}, items_per_step=batch, rounds=repeats, segment_s=1.0,
                                      warm_step_s={SUBJECT: prepared["warm_step_s"]})
    return {"prepare": prepared, "rates": measured["rates"][SUBJECT]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    cpus = _cpus(args)
    threads = args.threads or len(cpus)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, processes.Pool(cpus, threads, pathlib.Path(tmp)) as pool:
        tmp = pathlib.Path(tmp)
        jaxsr = pool.start(SUBJECT)
        info = jaxsr.call("info")
        s = settings(args, info["backend"])
        peers, skipped = start_peers(pool, s["peers"], info)
        peaks = {d: peak.peak_for(info, d, lambda dt: jaxsr.call("peak", dtype=dt, n=s["peak_matmul_n"]))
                 for d in s["dtypes"]}
        result: dict[str, Any] = {
            "settings": s, "cpus": cpus, "threads": threads,
            "workers": {name: w.call("info") for name, w in pool.workers.items()},
            "peers_skipped": skipped,
            "flops_counted": flops.COUNTED, "peaks": peaks, "configs": {}, "figures": []}
        for name, why in skipped.items():
            result["figures"].append({"name": f"peer {name}", "skipped": why})
        for config in s["configs"]:
            result["configs"][config] = bench_config(config, jaxsr, peers, s, peaks, info, tmp, result["figures"])
    # other processes' load on these cores (1/5/15-minute averages), and which conv each jaxsr layer ran
    result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
    result["conv_choices"] = conv_choices()
    return result


def conv_choices() -> dict[str, Any]:
    """model.conv_impl=auto's choices on this machine (its cache file, written by the jaxsr worker), keyed by problem."""
    from jaxsr.models import conv_choice

    path = conv_choice.cache_path()
    return {"file": str(path), "entries": conv_choice.read_cache(path)}


def bench_config(config: str, jaxsr, peers: dict, s: dict, peaks: dict, info: dict, tmp: pathlib.Path,
                 figures: list) -> dict[str, Any]:
    weights = tmp / f"{config}.weights.npz"
    t0 = time.perf_counter()
    created = jaxsr.call("create", config=config, overrides=s["overrides"], weights=str(weights))
    out: dict[str, Any] = {"overrides": s["overrides"], "parameters": created["parameters"], "model": created["model"],
                           "loader": created["loader"], "log_every": created["log_every"],
                           "workloads": [], "wall_s": {"create": time.perf_counter() - t0}}
    timed_peers = {}
    log.info("%s: %d parameters; weights exported", config, created["parameters"])
    if not peers:
        out["equivalence"] = {"skipped": "no peers"}
    elif created["mse_only"]:
        out["equivalence"] = check_peers(jaxsr, peers, created, weights, tmp, info["backend"])
        timed_peers = peers_to_time(out["equivalence"], peers, s["peers"], config, figures)
    else:
        out["equivalence"] = {"skipped": "triplet interpolation loss: the peers implement the paper's MSE loss"}
    out["wall_s"]["equivalence"] = time.perf_counter() - t0 - out["wall_s"]["create"]
    log.info("%s: equivalence checked; timing jaxsr beside %s", config, ", ".join(timed_peers) or "no peer")
    workers = {SUBJECT: jaxsr, **timed_peers}
    size = created["crop_size"]
    for dtype in s["dtypes"]:
        for kind, batches in (("train", s["train_batches"]), ("infer", s["infer_batches"])):
            for batch in batches:
                try:
                    w = measure(workers, kind, batch, size, dtype, s, created, peaks)
                except processes.WorkerError as error:
                    if not error.oom:
                        raise
                    # jaxsr (or a peer, mid-round) ran out of memory: larger batches would not fit either.
                    out["workloads"].append({"kind": kind, "batch_size": batch, "dtype": dtype, "oom": str(error)})
                    figures.append({"name": f"{kind} {config} batch {batch} {dtype}",
                                    "skipped": f"{error.impl} out of memory; the sweep stops here"})
                    break
                out["workloads"].append(w)
                figures.extend(figures_for(config, w, peaks))
    if s["loop_steps"]:
        t1 = time.perf_counter()
        out["loop"] = loop_figure(jaxsr, out, s, size, config, figures)
        out["wall_s"]["loop"] = time.perf_counter() - t1
    out["wall_s"]["total"] = time.perf_counter() - t0
    return out


def loop_figure(jaxsr, out: dict, s: dict, size: int, config: str, figures: list) -> dict[str, Any]:
    """`jaxsr train`'s images/s at the first train batch and dtype, over the step-only figure."""
    step = next((w for w in out["workloads"] if w.get("kind") == "train" and "images_per_s" in w), None)
    if step is None:
        return {"skipped": "no train step was measured"}
    # The base config's logging interval, whatever the config timed logs at (tiny logs every step): the loop
    # then fetches metrics as `jaxsr train` does by default, and nowhere else.
    log_every = int(default.get_config().train.log_every)
    loop = jaxsr.call("loop", steps=s["loop_steps"], batch=step["batch_size"], image_size=size, dtype=step["dtype"],
                      log_every=log_every)
    step_rate = step["images_per_s"][SUBJECT]["median"]
    loop["step_images_per_s"] = step_rate
    loop["loop_over_step"] = loop["images_per_s"] / step_rate if loop["images_per_s"] else None
    if loop["images_per_s"]:
        figures.append(common.rate_figure("jaxsr train loop", loop["logged_rates"], "images/s", config=config,
                                          batch_size=step["batch_size"], dtype=step["dtype"], image_size=size,
                                          note=f"as the loop logs it, {s['loop_steps']} steps, log_every={log_every}; "
                                               f"loop/step = {loop['loop_over_step']:.2f}"))
    return loop
