"""Training throughput of the jitted train step, FLOP utilisation, scaling, and the PyTorch peer.

For each configuration (configs/acdc_paper.py, configs/acdc_followup.py),
compute dtype and global batch size: the trainer's own step
(jaxsr.train.step), jitted once with donation on a 1-D 'data' mesh over all
local devices, batch sharded along it, fed a fixed random batch (so input cost
is not counted; the input suite measures it). Per figure: images/s (median and
spread over repeats, compile time apart), FLOPs per step from XLA's compiled
cost analysis (per-device program x devices), achieved FLOP/s and its fraction
of the peak (vendor figure on known GPUs/TPUs, a measured matmul on CPU), then
scaling over 1, 2, 4, 8 devices when present, and the PyTorch eager peer.

On CPU all 'devices' of --xla_force_host_platform_device_count share the same
cores, so the peak is the host's (one matmul on all threads), not x devices.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from benchmarks import common, peak, torch_peer, workloads

log = logging.getLogger(__name__)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    split = lambda text: [t for t in text.split(",") if t]  # noqa: E731
    return {
        "configs": split(args.configs) if args.configs else [workloads.PAPER, workloads.FOLLOWUP],
        "tiny_model": quick,
        "image_size": 32 if quick else None,  # None: the config's crop size (128)
        "batch_sizes": [int(b) for b in split(args.batch_sizes)] if args.batch_sizes else ([8] if quick else [8, 32]),
        "dtypes": split(args.dtypes) if args.dtypes else ["float32", "bfloat16"],
        "repeats": args.repeats or (3 if quick else 5),
        "peer": not args.no_peer,
        "device_counts": [int(n) for n in split(getattr(args, "device_counts", "1,2,4,8") or "")],
        "peak_matmul_n": 256 if quick else None,
    }


def cost_flops(compiled) -> float | None:
    """'flops' from compiled.cost_analysis(): a dict in jax >= 0.4.3x, a list of dicts before."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def forward_flops(config, image_size: int) -> dict[str, float | None]:
    """Forward pass of one image: XLA's count (1 device, eval mode) beside the conv formula."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model = workloads.make_model(config)
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
    compiled = fn.lower(state, x).compile()
    return {"xla": cost_flops(compiled), "conv_formula": workloads.forward_conv_flops(config.model, image_size)}


def bench_config(name: str, s: dict[str, Any], dtype: str):
    config = workloads.load_config(name)
    if s["tiny_model"]:
        config = workloads.tiny(config)
    with config.unlocked():
        config.model.dtype = dtype
        if s["image_size"]:
            config.data.crop_size = s["image_size"]
    return config


def measure(config, batch_size: int, devices, repeats: int) -> dict[str, Any]:
    """images/s and FLOPs of the trainer's step on `devices`."""
    from benchmarks import trainer_adapter

    bench = trainer_adapter.build(config, batch_size, devices)
    flops_device = cost_flops(bench.compiled)
    timing = common.time_repeats(bench.step, repeats=repeats, warmup=2)
    timing.first_call_s = bench.compile_s + timing.first_call_s  # lower+compile, then the first run
    return {"timing": timing, "flops_per_step": None if flops_device is None else flops_device * len(devices),
            "parameters": bench.parameters, "step_source": bench.source}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    s = settings(args)
    devices = jax.local_devices()
    backend = jax.default_backend()
    peaks = {d: peak.peak_flops(d, n=s["peak_matmul_n"]) for d in s["dtypes"]}
    # CPU 'devices' share the host's cores; accelerators add up.
    peak_scale = 1 if backend == "cpu" else len(devices)
    figures, details = [], []
    flops_check = {}
    jax_rates = {}
    for name in s["configs"]:
        for dtype in s["dtypes"]:
            config = bench_config(name, s, dtype)
            size = int(config.data.crop_size)
            if dtype == s["dtypes"][0]:
                flops_check[name] = forward_flops(config, size)
            for batch in s["batch_sizes"]:
                context = {"config": name + (" (tiny)" if s["tiny_model"] else ""), "batch_size": batch,
                           "dtype": dtype, "devices": len(devices), "image_size": size}
                m = measure(config, batch, devices, s["repeats"])
                fig = common.figure("train step", m["timing"], batch, "images", **context)
                figures.append(fig)
                jax_rates[(name, dtype, batch)] = fig
                row = {**context, "parameters": m["parameters"], "flops_per_step": m["flops_per_step"],
                       "step_source": m["step_source"]}
                if m["flops_per_step"]:
                    rate = m["flops_per_step"] / batch  # FLOPs per image
                    figures.append(common.derived("achieved FLOP/s", fig, rate, "FLOP/s", **context))
                    total_peak = peaks[dtype]["per_device_flops_per_s"] * peak_scale
                    figures.append(common.derived(f"fraction of peak ({peaks[dtype]['source']})", fig,
                                                  rate / total_peak, "fraction", **context))
                    row["peak_flops_per_s"] = total_peak
                details.append(row)
    result: dict[str, Any] = {"settings": s, "model_source": workloads.model_source(),
                              "step_source": sorted({d["step_source"] for d in details}),
                              "peaks": peaks, "steps": details, "forward_flops_per_image": flops_check}
    result["scaling"] = scaling(s, devices, figures)
    result["peer"] = peer(s, jax_rates, figures)
    s.pop("_one_device", None)
    result["figures"] = figures
    return result


def scaling(s: dict[str, Any], devices, figures: list) -> dict[str, Any]:
    """Paper config, first dtype, largest batch over 1, 2, 4, 8 devices (those present)."""
    counts = [n for n in s["device_counts"] if n <= len(devices)]
    if len(counts) >= 2 and s["tiny_model"]:
        counts = [counts[0], counts[-1]]  # quick: the two ends only
    if len(counts) < 2:
        return {"skipped": f"{len(devices)} local device(s), counts {s['device_counts']}: nothing to scale over"}
    name, dtype, batch = s["configs"][0], s["dtypes"][0], max(s["batch_sizes"])
    config = bench_config(name, s, dtype)
    out = {"config": name, "dtype": dtype, "batch_size": batch, "images_per_s": {}}
    base = None
    for n in counts:
        if batch % n:
            continue
        m = measure(config, batch, devices[:n], s["repeats"])
        fig = common.figure(f"scaling: {n} device(s)", m["timing"], batch, "images",
                            config=name + (" (tiny)" if s["tiny_model"] else ""),
                            batch_size=batch, dtype=dtype, devices=n, image_size=int(config.data.crop_size))
        figures.append(fig)
        base = base or fig["median"]
        out["images_per_s"][n] = fig["median"]
        if n == 1:  # reused by the peer comparison on CPU
            s.setdefault("_one_device", {})[(name, dtype, batch)] = fig
        out.setdefault("speedup", {})[n] = fig["median"] / base
    return out


def peer(s: dict[str, Any], jax_rates: dict, figures: list) -> dict[str, Any]:
    """PyTorch eager, same architecture, batch, image size and threads; ratio jaxsr / PyTorch."""
    if not s["peer"]:
        return {"skipped": "--no-peer"}
    ok, why = torch_peer.available()
    if not ok:
        figures.append({"name": "PyTorch eager peer", "skipped": why})
        return {"skipped": why}
    if "float32" not in s["dtypes"]:
        return {"skipped": "the peer runs float32 only"}
    import jax

    threads = common.threads_used_by_xla()
    out: dict[str, Any] = {"threads": threads, "thread_rule": "torch.set_num_threads = CPUs XLA's CPU pool uses",
                           "runs": []}
    if jax.default_backend() != "cpu":
        out["note"] = "jaxsr runs on the accelerator, the peer on the host CPU: a hardware comparison, not a framework one"
    for name in s["configs"]:
        config = bench_config(name, s, "float32")
        if config.data.get("triplets") and (config.loss.get("interp_weight") or config.loss.get("interp_ssim_weight")):
            # The peer trains the paper's MSE autoencoder only; a step with the triplet
            # interpolation loss does more work per image and would not compare.
            out.setdefault("not_compared", {})[name] = "triplet interpolation loss (the peer is MSE only)"
            continue
        size = int(config.data.crop_size)
        jax_params = workloads.param_count(workloads.make_model(config))
        for batch in s["batch_sizes"]:
            r = torch_peer.train_throughput(config.model, batch_size=batch, image_size=size, steps=s["repeats"],
                                            threads=threads, learning_rate=float(config.optim.learning_rate))
            context = {"config": name + (" (tiny)" if s["tiny_model"] else ""), "batch_size": batch,
                       "dtype": "float32", "devices": 1, "image_size": size, "note": f"{threads} threads"}
            timing = common.Timing(first_call_s=r["first_step_s"], repeats_s=r["step_s"])
            fig = common.figure("PyTorch eager train step", timing, batch, "images", **context)
            figures.append(fig)
            mine = jax_rates[(name, "float32", batch)]
            if jax.default_backend() == "cpu" and mine["devices"] > 1:
                # Fake CPU devices split the same cores; the peer is one process on all of them,
                # and so is jaxsr on one CPU device (XLA's pool spans every core).
                mine = s.get("_one_device", {}).get((name, "float32", batch))
                if mine is None:
                    m = measure(config, batch, jax.local_devices()[:1], s["repeats"])
                    mine = common.figure("train step", m["timing"], batch, "images", **context)
            ratio = mine["median"] / fig["median"]
            figures.append({"name": "jaxsr / PyTorch", "unit": "ratio", "median": ratio,
                            "min": mine["min"] / fig["max"], "max": mine["max"] / fig["min"],
                            "iqr": mine["max"] / fig["min"] - mine["min"] / fig["max"],
                            "repeats": min(mine["repeats"], fig["repeats"]), **context})
            out["runs"].append({**context, "torch": r["framework"], "torch_parameters": r["parameters"],
                                "jax_parameters": jax_params, "parameters_match": r["parameters"] == jax_params,
                                "torch_images_per_s": fig["median"], "jaxsr_images_per_s": mine["median"],
                                "ratio_jaxsr_over_torch": ratio})
            if r["parameters"] != jax_params:
                log.warning("%s: PyTorch peer has %d parameters, jaxsr %d", name, r["parameters"], jax_params)
    return out
