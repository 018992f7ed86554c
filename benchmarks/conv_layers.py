"""Where a training step's CPU time goes: forward, input-gradient and weight-gradient GFLOP/s per conv shape.

    python -m benchmarks.conv_layers [--batch 8] [--rounds 3] [--impls xla,winograd2,winograd4,torch_passive] [--out FILE]

One question: is there a convolution formulation (or XLA CPU flag) that beats
`lax.conv_general_dilated` where jaxsr loses to PyTorch, the weight gradient?
Every distinct 3x3 conv shape of the paper network (benchmarks.net_spec at
the default config, 128x128 crops) is timed for its three convolutions:

- `xla`: lax.conv_general_dilated (NHWC/HWIO) and its jax.vjp, as jaxsr trains;
- `xla_onednn`, `xla_xnnpack`: the same under XLA_FLAGS=--xla_cpu_use_{onednn,xnnpack}=true;
- `taps`: the weight gradient as nine matmuls, one per kernel tap, over all pixels;
- `strips`: the weight gradient as a conv over row strips (halo 1) stacked into the
  contracted images dim, so the contracted dim is 2x longer and the kernel half as tall;
- `fft_bins`, `fft_rows`: the weight gradient through the FFT (benchmarks.fft_dw's two contractions);
- `winograd2`, `winograd4`: all three by jaxsr.models.winograd, Winograd F(2x2,3x3) / F(4x4,3x3)
  (the input gradient as the forward conv of the output gradient with the transposed kernel, as the
  model's custom vjp computes it); `xla_bf16`, `winograd4_bf16`: the same in bfloat16 (inputs and
  kernel rounded to bfloat16; Winograd's transforms in float32, its matmul bfloat16 x bfloat16 -> float32);
- `native`: all three by jaxsr's own CPU kernels (jaxsr.models.native_conv, compiled here on first use);
- `blocked`: all three in the channel-blocked layout N x C/8 x H x W x 8 (benchmarks.blocked_conv,
  oneDNN's layout: per tap one contraction over channel block and lane), the arrays held blocked
  (the conversions from and to NHWC are outside the timing, as in a network kept blocked throughout);
- `torch`: PyTorch eager, NCHW, the aten::convolution_backward autograd calls;
  `torch_passive` the same with OMP_WAIT_POLICY=PASSIVE (its threads sleep, not spin, while waiting).

`taps`, `strips` and the FFT forms change only the weight gradient (forward and input gradient
stay XLA's); every alternative is checked against XLA's vjp before timing (tests/test_conv.py
and tests/test_winograd.py check them with derived bounds). Each implementation runs in its own process,
pinned to the same CPUs with the same threads (benchmarks.processes.worker_env),
and the rounds interleave them (A B C, A B C, ...) so that load from other
processes on a shared machine hits all alike. Per figure: the median over
rounds of each round's median of `--repeats` calls, and the min..max over rounds.
FLOPs are 2 * N * H * W * 9 * cin * cout per convolution (all three alike).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, Callable

from benchmarks import net_spec
from benchmarks.processes import REPO, worker_env
from benchmarks.rounds import spread

# each implementation's environment on top of worker_env's (threads, no fake devices)
IMPL_ENV: dict[str, dict[str, str]] = {
    "xla": {}, "taps": {}, "strips": {}, "fft_bins": {}, "fft_rows": {}, "blocked": {},
    "winograd2": {}, "winograd4": {}, "native": {}, "xla_bf16": {}, "winograd4_bf16": {},
    "xla_onednn": {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}, "xla_xnnpack": {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"},
    # PyTorch's OpenMP threads spin while they wait, which costs it most on an oversubscribed machine
    "torch": {}, "torch_passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}
IMPLS = sorted(IMPL_ENV)
PASSES = ("fwd", "dx", "dw")


def layer_shapes(image_size: int = 128) -> list[tuple[int, int, int]]:
    """(cin, cout, spatial size) of every distinct conv of the paper network, in network order."""
    from jaxsr.configs import default

    seen: list[tuple[int, int, int]] = []
    for c in net_spec.convs(default.get_config().model):
        shape = (c.cin, c.cout, image_size // 2**c.level)
        if shape not in seen:
            seen.append(shape)
    return seen


def conv_flops(batch: int, cin: int, cout: int, size: int) -> int:
    return 2 * batch * size * size * 9 * cin * cout


# -- the alternative weight-gradient formulations (jax) ---------------------------------------------------
def dw_taps(x, g):
    """dW[i, j] = x shifted by tap (i, j), as (pixels, cin), transposed times g as (pixels, cout)."""
    import jax.numpy as jnp

    n, h, w, cin = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    gm = g.reshape(-1, g.shape[-1])
    return jnp.stack([jnp.stack([xp[:, i:i + h, j:j + w, :].reshape(-1, cin).T @ gm for j in range(3)])
                      for i in range(3)])


def dw_strips(x, g, strips: int = 2):
    """The backward-filter conv with the image cut into `strips` row strips (1-row halo) that join the contracted dim."""
    import jax.numpy as jnp
    from jax import lax

    n, h, w, cin = x.shape
    rows = h // strips
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    xs = jnp.stack([xp[:, s * rows:s * rows + rows + 2] for s in range(strips)]).reshape(strips * n, rows + 2, w + 2, cin)
    gs = g.reshape(n, strips, rows, w, -1).transpose(1, 0, 2, 3, 4).reshape(strips * n, rows, w, -1)
    # cin plays the batch, the stacked strips the contracted features, the gradient strips the kernel
    out = lax.conv_general_dilated(xs, gs, (1, 1), "VALID", dimension_numbers=("CHWN", "IHWO", "CHWN"))
    return out.transpose(1, 2, 3, 0)


def _fft_dw(impl: str) -> Callable:
    def dw(x, g):
        from benchmarks import fft_dw

        return fft_dw.weight_gradient(impl, x, g)
    return dw


DW_FORMULATIONS: dict[str, Callable] = {"taps": dw_taps, "strips": dw_strips,
                                        "fft_bins": _fft_dw("fft_bins"), "fft_rows": _fft_dw("fft_rows")}


def xla_conv(x, w):
    from jax import lax

    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def xla_dw(x, w, g):
    import jax

    return jax.vjp(lambda k: xla_conv(x, k), w)[1](g)[0]


# -- the child process: one implementation, every shape --------------------------------------------------
# conv_layers impl -> (jaxsr.models.winograd impl for all three passes, dtype)
ALL_PASSES = {"winograd2": ("winograd2", "float32"), "winograd4": ("winograd4", "float32"), "native": ("native", "float32"),
              "xla_bf16": ("lax", "bfloat16"), "winograd4_bf16": ("winograd4", "bfloat16")}


def _check(impl: str, name: str, got, ref, dtype: str, shape) -> None:
    """Same function first: relative 2-norm error against XLA's float32 within 1e-4 in float32, 2**-4 in bfloat16.

    Measured worst cases (these shapes): F(4x4) float32 2e-5 (the 1->32 @ 128² weight gradient, a sum over
    all 8192 tiles); F(4x4) bfloat16 0.024 (its transforms grow |V| past |y|, and V is rounded to bfloat16).
    A wrong tap or lost border is off by O(1).
    """
    import numpy as np

    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    error = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    if not error <= (2.0**-4 if dtype == "bfloat16" else 1e-4):
        raise SystemExit(f"benchmarks/conv_layers.py: {impl} {name} differs from XLA's float32 for {shape}: relative error {error:.3g}")


def _jax_passes(impl: str, batch: int, cin: int, cout: int, size: int) -> dict[str, Callable[[], Any]]:
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    x = jax.device_put(rng.standard_normal((batch, size, size, cin), dtype=np.float32))
    w = jax.device_put((rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype(np.float32))
    g = jax.device_put(rng.standard_normal((batch, size, size, cout), dtype=np.float32))
    fwd = jax.jit(xla_conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda a: xla_conv(a, w), x)[1](g)[0])
    dw = jax.jit(xla_dw)
    if impl in DW_FORMULATIONS:
        mine = jax.jit(DW_FORMULATIONS[impl])
        ref, got = np.asarray(dw(x, w, g)), np.asarray(mine(x, g))
        if not np.allclose(got, ref, rtol=1e-4, atol=1e-3 * float(np.abs(ref).max())):
            raise SystemExit(f"benchmarks/conv_layers.py: {impl} weight gradient differs from XLA's "
                             f"for {(batch, size, cin, cout)}: max error {np.abs(got - ref).max():.3g}")
        dw = jax.jit(lambda x, w, g: mine(x, g))
    if impl in ALL_PASSES or impl == "blocked":  # every pass replaced: XLA's three results to check against
        refs = {"fwd": fwd(x, w), "dx": dx(x, w, g), "dw": dw(x, w, g)}
    if impl in ALL_PASSES:
        from jaxsr.models import conv_impls

        kind, dtype = ALL_PASSES[impl]
        x, w, g = (a.astype(dtype) for a in (x, w, g))
        fwd = jax.jit(lambda x, w: conv_impls.conv_forward(kind, x, w))
        dx = jax.jit(lambda x, w, g: conv_impls.conv_input_gradient(kind, g, w))
        dw = jax.jit(lambda x, w, g: conv_impls.conv_weight_gradient(kind, x, g, w.shape))
        for name, got in (("fwd", fwd(x, w)), ("dx", dx(x, w, g)), ("dw", dw(x, w, g))):
            _check(impl, name, got, refs[name], dtype, (batch, size, cin, cout))
    if impl == "blocked":
        from benchmarks import blocked_conv as bc

        x, w, g = bc.to_blocked(x), bc.kernel_to_blocked(w), bc.to_blocked(g)
        fwd = jax.jit(bc.forward)
        dx = jax.jit(lambda x, w, g: bc.input_gradient(g, w))
        dw = jax.jit(lambda x, w, g: bc.weight_gradient(x, g))
        for name, got in (("fwd", bc.from_blocked(fwd(x, w), cout)), ("dx", bc.from_blocked(dx(x, w, g), cin)),
                          ("dw", bc.kernel_from_blocked(dw(x, w, g), cin, cout))):
            _check(impl, name, got, refs[name], "float32", (batch, size, cin, cout))
    return {name: (lambda f=f: f(x, w, g).block_until_ready()) if name != "fwd" else (lambda: fwd(x, w).block_until_ready())
            for name, f in (("fwd", fwd), ("dx", dx), ("dw", dw))}


def _torch_passes(threads: int, batch: int, cin: int, cout: int, size: int) -> dict[str, Callable[[], Any]]:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch, cin, size, size), dtype=np.float32))
    w = torch.from_numpy((rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal((batch, cout, size, size), dtype=np.float32))
    back = torch.ops.aten.convolution_backward  # what autograd calls for Conv2d

    def grad(mask):
        return lambda: back(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

    with torch.no_grad():
        return {"fwd": lambda: torch.nn.functional.conv2d(x, w, padding=1),
                "dx": grad([True, False, False]), "dw": grad([False, True, False])}


def child(impl: str, batch: int, threads: int, repeats: int) -> None:
    """Compiles every shape, says 'ready', then answers each stdin line with one round of timings (JSON)."""
    import statistics

    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints go to stderr; stdout carries the protocol
    shapes = layer_shapes()
    make = (lambda *s: _torch_passes(threads, batch, *s)) if impl.startswith("torch") else (lambda *s: _jax_passes(impl, batch, *s))
    calls = {shape: make(*shape) for shape in shapes}
    for passes in calls.values():
        for f in passes.values():
            f(), f()  # compile, warm up
    proto.write("ready\n")
    proto.flush()
    for _ in sys.stdin:
        result = []
        for shape, passes in calls.items():
            row = {}
            for name, f in passes.items():
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    f()
                    times.append(time.perf_counter() - t0)
                row[name] = statistics.median(times)
            result.append(row)
        proto.write(json.dumps(result) + "\n")
        proto.flush()


# -- the parent: interleaved rounds ----------------------------------------------------------------------
def measure(impls: list[str], batch: int, rounds: int, repeats: int, cpus: list[int]) -> dict[str, Any]:
    threads = len(cpus)
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    procs = {}
    for impl in impls:
        env = worker_env(threads)
        for name, value in IMPL_ENV[impl].items():
            env[name] = f"{env[name]} {value}" if name == "XLA_FLAGS" and env.get(name) else value  # keep the user's flags
        command = ["taskset", "-c", ",".join(map(str, cpus)), sys.executable, "-m", "benchmarks.conv_layers",
                   "--child", impl, "--batch", str(batch), "--repeats", str(repeats)]
        procs[impl] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        for impl, p in procs.items():
            if p.stdout.readline().strip() != "ready":
                raise SystemExit(f"benchmarks/conv_layers.py: the {impl} process failed to start (status {p.wait()})")
        seconds: dict[str, list] = {impl: [] for impl in impls}
        for _ in range(rounds):
            for impl, p in procs.items():
                time.sleep(0.1)  # lets the previous process's spinning threads go idle
                p.stdin.write("round\n")
                p.stdin.flush()
                seconds[impl].append(json.loads(p.stdout.readline()))
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    layers = []
    for i, (cin, cout, size) in enumerate(layer_shapes()):
        flops = conv_flops(batch, cin, cout, size)
        layers.append({"cin": cin, "cout": cout, "size": size, "gflop": flops / 1e9,
                       "gflops": {impl: {name: spread([flops / 1e9 / r[i][name] for r in seconds[impl]])
                                         for name in PASSES} for impl in impls}})
    # other processes' load on these cores, the 1/5/15-minute averages as the rounds began and ended
    result = {"batch": batch, "rounds": rounds, "repeats": repeats, "cpus": cpus, "threads": threads, "started": started,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "layers": layers}
    return result | {"network_ms": network_ms(result)}


def network_ms(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Milliseconds per step in the network's convs, from the median rates: fwd, dx (none for the input layer), dw."""
    from jaxsr.configs import default

    by_shape = {(l["cin"], l["cout"], l["size"]): l for l in result["layers"]}
    size = max(l["size"] for l in result["layers"])
    out = {}
    for impl in result["layers"][0]["gflops"]:
        ms = dict.fromkeys(PASSES, 0.0)
        for i, c in enumerate(net_spec.convs(default.get_config().model)):
            layer = by_shape[(c.cin, c.cout, size // 2**c.level)]
            for name in PASSES:
                if not (i == 0 and name == "dx"):  # the image needs no gradient
                    ms[name] += 1e3 * layer["gflop"] / layer["gflops"][impl][name]["median"]
        out[impl] = ms | {"train": sum(ms.values())}
    return out


def table(result: dict[str, Any]) -> str:
    impls = list(result["layers"][0]["gflops"])
    head = f"{'cin->cout @ size':>18} " + " ".join(f"{impl + ' ' + p:>15}" for impl in impls for p in PASSES)
    lines = [f"GFLOP/s, batch {result['batch']}, median over {result['rounds']} interleaved rounds", head]
    for layer in result["layers"]:
        cells = " ".join(f"{layer['gflops'][impl][p]['median']:>15.1f}" for impl in impls for p in PASSES)
        lines.append(f"{layer['cin']:>6}->{layer['cout']:<4} @ {layer['size']:>4} {cells}")
    lines.append("ms per step in the network's convs (fwd / dx / dw = train):")
    for impl, ms in result["network_ms"].items():
        lines.append(f"  {impl:>14}: {ms['fwd']:.0f} / {ms['dx']:.0f} / {ms['dw']:.0f} = {ms['train']:.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conv_layers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="calls per figure per round (their median is the round's)")
    parser.add_argument("--impls", default="xla,winograd2,winograd4,torch_passive", help=f"comma-separated, of {','.join(IMPLS)}")
    parser.add_argument("--cpus", default=None, help="comma-separated CPU ids (default: all this process may use)")
    parser.add_argument("--out", default="", help="JSON results file")
    parser.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.batch, len(os.sched_getaffinity(0)), args.repeats)
        return
    impls = [i for i in args.impls.split(",") if i]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        raise SystemExit(f"benchmarks/conv_layers.py: unknown --impls {','.join(unknown)} (choose from {','.join(IMPLS)})")
    cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else sorted(os.sched_getaffinity(0))
    result = measure(impls, args.batch, args.rounds, args.repeats, cpus)
    print(table(result))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
