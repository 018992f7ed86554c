"""How accurate is Winograd on a trained model, and does training with it follow the same curve as XLA's conv?

    python -m benchmarks.winograd_accuracy [--config phantom_demo] [--steps 200] [--out FILE]

One question, two measurements:

1. Training curves: `jaxsr.train.loop.train` on the same phantom stacks (jaxsr.data.phantom, four
   patients, each cine scaled to [0, 1]) with model.conv_impl = lax, winograd2 and winograd4, the
   same seed; the loss logged every `--log-every` steps, side by side, and each Winograd curve's
   largest relative deviation from lax's.
2. Per-layer error on real activations: the lax-trained model is run on a batch of phantom crops;
   each conv's actual input and kernel are recorded, and the conv recomputed by lax, F(2x2) and
   F(4x4) (both point sets) in float32, forward, input gradient and weight gradient (the output
   gradient is the real one of the training loss), against lax in float64. Relative 2-norm error
   per layer and direction, and the worst over layers.

Accuracy, not speed: the one process runs everything (nothing here is timed).
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import tempfile
import time

import numpy as np

log = logging.getLogger(__name__)
IMPLS = ("lax", "winograd2", "winograd4")


def phantom_stacks(patients: int = 4, seed: int = 0) -> list[np.ndarray]:
    """(x, y, z, t) phantom cines in [0, 1] (each divided by its maximum)."""
    from jaxsr.data import phantom

    out = []
    for number in range(1, patients + 1):
        v = phantom.patient_volume(phantom.make_patient(seed, number, False), seed).astype(np.float32)
        out.append(v / v.max())
    return out


def _config(config_name: str, impl: str, steps: int, log_every: int):
    from benchmarks.impl_jaxsr import variant
    from jaxsr.config import load_config

    return variant(load_config(config_name), **{"model.conv_impl": impl, "train.steps": steps, "train.log_every": log_every,
                                                "train.checkpoint_every": steps, "train.eval_every": steps})


def training_curves(config_name: str, steps: int, log_every: int, stacks, lax_workdir: pathlib.Path) -> dict:
    """{impl: {'steps', 'loss', ...}}: the logged training loss of the same run by each conv; lax's run kept in lax_workdir."""
    from benchmarks.impl_jaxsr import train_in_memory
    from jaxsr.train import loop

    curves = {}
    for impl in IMPLS:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = lax_workdir if impl == "lax" else pathlib.Path(tmp)
            t0 = time.perf_counter()
            train_in_memory(_config(config_name, impl, steps, log_every), workdir, stacks)
            rows = [r for r in map(json.loads, (workdir / loop.METRICS_FILE).read_text().splitlines()) if "train/loss" in r]
        curves[impl] = {"steps": [r["step"] for r in rows], "loss": [r["train/loss"] for r in rows], "wall_s": time.perf_counter() - t0}
        log.info("%s: %d steps, final loss %.5f", impl, steps, rows[-1]["train/loss"])
    lax_loss = np.asarray(curves["lax"]["loss"])
    for impl in IMPLS[1:]:
        loss = np.asarray(curves[impl]["loss"])
        curves[impl]["max_relative_deviation_from_lax"] = float(np.max(np.abs(loss - lax_loss) / lax_loss))
    return curves


def recorded_convs(model, batch: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """[(layer, x, w, dy)]: every conv's real input and kernel, and the reconstruction MSE's gradient at its output.

    Each conv's output gets a zero 'probe' added; the loss's gradient with respect to the probes is the
    gradient at every conv output, from one backward pass.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    convs = [("/".join(map(str, path)), m) for path, m in nnx.iter_modules(model) if isinstance(m, nnx.Conv)]
    inner = {name: m.conv_general_dilated for name, m in convs}
    seen: dict[str, tuple] = {}
    probes: dict[str, object] = {}

    def recording(name):
        def conv(lhs, rhs, *args, **kwargs):
            seen[name] = (lhs, rhs)
            return inner[name](lhs, rhs, *args, **kwargs) + probes[name]
        return conv

    def loss(values):
        probes.update(values)
        return jnp.mean((model(batch) - batch) ** 2)

    for name, m in convs:  # outside any trace: nnx modules refuse changes made under jax.grad
        m.conv_general_dilated = recording(name)
    try:
        loss({name: 0.0 for name, _ in convs})
        concrete = {name: (np.asarray(x), np.asarray(w)) for name, (x, w) in seen.items()}
        grads = jax.grad(loss)({name: jnp.zeros(x.shape[:3] + (w.shape[-1],), jnp.float32) for name, (x, w) in concrete.items()})
    finally:
        for name, m in convs:
            m.conv_general_dilated = inner[name]
    return [(name, *concrete[name], np.asarray(grads[name])) for name, _ in convs]


def layer_errors(model, batch: np.ndarray) -> list[dict]:
    """Per conv: each variant's float32 relative 2-norm error against lax in float64, fwd / dx / dw."""
    import jax
    import jax.numpy as jnp

    from jaxsr.models import winograd

    variants = {"lax": None, "winograd2": winograd.transforms(2), "winograd4": winograd.transforms(4),
                "winograd4 (0, ±1, ±2, ∞)": winograd.transforms(4, winograd.LAVIN_GRAY_POINTS_4)}

    def directions(mats):
        def run(x, w, dy):
            if mats is None:
                y, vjp = jax.vjp(winograd.lax_conv, x, w)
                return (y, *vjp(dy))
            return (winograd.winograd_conv(x, w, mats), winograd.winograd_conv(dy, winograd.transposed_kernel(w), mats),
                    winograd.winograd_weight_gradient(x, dy, mats))
        return jax.jit(run)

    rows = []
    for name, x, w, dy in recorded_convs(model, batch):
        with jax.enable_x64():
            ref = [np.asarray(a) for a in directions(None)(*(jnp.asarray(a, jnp.float64) for a in (x, w, dy)))]
        row = {"layer": name, "x_shape": list(x.shape), "cout": int(w.shape[-1]), "relative_error": {}}
        for vname, mats in variants.items():
            got = directions(mats)(*(jnp.asarray(a, jnp.float32) for a in (x, w, dy)))
            row["relative_error"][vname] = {d: float(np.linalg.norm(np.asarray(g, np.float64) - r) / np.linalg.norm(r))
                                            for d, g, r in zip(("fwd", "dx", "dw"), got, ref)}
        rows.append(row)
    return rows


def phantom_crops(stacks, batch: int, size: int) -> np.ndarray:
    """`batch` random size x size slices of the stacks, (batch, size, size, 1)."""
    rng = np.random.default_rng(3)
    crops = []
    for i in range(batch):
        v = stacks[i % len(stacks)]
        x0, y0 = rng.integers(0, v.shape[0] - size), rng.integers(0, v.shape[1] - size)
        crops.append(v[x0:x0 + size, y0:y0 + size, rng.integers(v.shape[2]), rng.integers(v.shape[3])])
    return np.stack(crops)[..., None]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.winograd_accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="phantom_demo")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8, help="phantom crops for the per-layer errors")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from jaxsr.train import checkpoint

    stacks = phantom_stacks()
    with tempfile.TemporaryDirectory() as lax_workdir:
        curves = training_curves(args.config, args.steps, args.log_every, stacks, pathlib.Path(lax_workdir))
        model, config = checkpoint.load_for_inference(lax_workdir)
    print("step  " + "  ".join(f"{i:>10}" for i in IMPLS))
    for k, step in enumerate(curves["lax"]["steps"]):
        print(f"{step:>4}  " + "  ".join(f"{curves[i]['loss'][k]:>10.5f}" for i in IMPLS))
    for impl in IMPLS[1:]:
        print(f"{impl}: largest relative deviation of the logged loss from lax's: {curves[impl]['max_relative_deviation_from_lax']:.3g}")
    rows = layer_errors(model, phantom_crops(stacks, args.batch, int(config.data.crop_size)))
    names = list(rows[0]["relative_error"])
    print("relative 2-norm error against float64 lax, fwd / dx / dw, per layer of the lax-trained model:")
    for r in rows:
        print(f"{r['layer']:>24} {str(r['x_shape']):>18}->{r['cout']:<4} " +
              "  ".join(f"{n}: " + "/".join(f"{r['relative_error'][n][d]:.1e}" for d in ("fwd", "dx", "dw")) for n in names))
    worst = {n: {d: max(r["relative_error"][n][d] for r in rows) for d in ("fwd", "dx", "dw")} for n in names}
    print("worst over layers:", json.dumps(worst))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({
            "config": args.config, "steps": args.steps, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "curves": curves, "layers": rows, "worst": worst}, indent=1))


if __name__ == "__main__":
    main()
