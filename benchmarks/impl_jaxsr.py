"""jaxsr in its own process (benchmarks.worker): the code a user runs, nothing re-implemented.

- the training step is `jaxsr.train.step.build_step` on a `jaxsr.parallel`
  mesh, the state made by `jaxsr.train.state.init_train_state`;
- inference is the model's encode + decode, one jit;
- `jaxsr train`'s own throughput is `jaxsr.train.loop.train` on in-memory
  stacks (`train_in_memory`, the one place the benchmarks call the loop).

This process is where the weights come from: `create` exports the model's
parameters and batch statistics to an .npz that the peers load.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsr
from benchmarks import flops, peak, worker


def train_in_memory(config, workdir: pathlib.Path, stacks: list[np.ndarray]) -> dict:
    """`jaxsr train` on in-memory (X, Y, Z, T) stacks in [0, 1], no validation; loop.train's result."""
    from jaxsr.train import loop

    return loop.train(config, workdir, None, stacks=stacks, val_stacks=[], show_progress=False)


def random_stacks(size: int, seed: int = 0, count: int = 2) -> list[np.ndarray]:
    """Stacks a little larger than the crop, with enough slices for triplets."""
    rng = np.random.default_rng(seed)
    return [rng.random((size + 16, size + 16, 6, 4), dtype=np.float32) for _ in range(count)]


def variant(config, **changes):
    """A copy of `config` with dotted keys changed ('model.dtype': 'bfloat16')."""
    config = config.copy_and_resolve_references()
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def _randomise_batch_stats(model, seed: int = 1) -> None:
    """Non-trivial running statistics, so that the peers' eval-mode batch norm is checked too."""
    rng = np.random.default_rng(seed)
    for _, module in nnx.iter_graph(model):
        if isinstance(module, nnx.BatchNorm):
            shape = module.mean[...].shape
            module.mean[...] = rng.normal(0.0, 0.1, shape).astype(np.float32)
            module.var[...] = rng.uniform(0.5, 1.5, shape).astype(np.float32)


class Worker(worker.JaxImpl):
    weights = None  # nnx.State of the exported parameters and batch statistics, once `create` ran

    def info(self) -> dict:
        import flax

        from jaxsr import host_memory

        return {**worker.jax_info(f"jaxsr {jaxsr.version()} (jax {jax.__version__}, flax {flax.__version__})"),
                "keep_freed_memory": host_memory.active}

    def create(self, config: str, overrides: list[str], weights: str) -> dict:
        """Loads the config, makes the model and writes its weights to `weights` (.npz, NNX paths)."""
        from jaxsr.config import load_config

        self.weights = None
        self.config = load_config(config, overrides)
        model, _ = self._train_state(self.config)
        _randomise_batch_stats(model)
        self.weights = nnx.state(model, (nnx.Param, nnx.BatchStat))
        flat = {"/".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(self.weights)}
        np.savez(weights, **flat)
        c = self.config
        return {"model": c.model.to_dict(), "learning_rate": float(c.optim.learning_rate),
                "crop_size": int(c.data.crop_size),
                "mse_only": not (c.data.triplets and (c.loss.interp_weight or c.loss.interp_ssim_weight)),
                "log_every": int(c.train.log_every), "loader": str(c.data.loader),
                "parameters": int(sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param))))}

    def _train_state(self, config):
        """jaxsr's own initial (model, optimizer), then the exported weights (the same for every dtype)."""
        from jaxsr.train.state import init_train_state

        model, optimizer = init_train_state(config)
        if self.weights is not None:
            nnx.update(model, jax.tree.map(jnp.array, self.weights))  # copies: the step donates its state
        return model, optimizer

    def check(self, inputs: str, out: str, float64: bool = False) -> None:
        """Eval-mode output, training-mode loss and gradients of jaxsr's loss, float32."""
        from jaxsr.train import step as step_lib

        if float64:
            raise ValueError("jaxsr's model computes in float32 or bfloat16; the float64 reference is the twin's")
        x = np.load(inputs)["x"]
        model, _ = self._train_state(variant(self.config, **{"model.dtype": "float32"}))

        @nnx.jit
        def evaluate(m, images):
            m.eval()
            forward = m(images)
            m.train()
            loss, grads = nnx.value_and_grad(lambda mm: step_lib.losses(mm, {"image": images}, self.config.loss)[0])(m)
            return forward, loss, grads

        forward, loss, grads = evaluate(model, x)
        result = {"forward": np.asarray(forward), "loss": np.asarray(loss)}
        result.update({"grad/" + "/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(grads)})
        np.savez(out, **result)

    def build(self, kind: str, batch: int, image_size: int, dtype: str):
        from jaxsr import parallel
        from jaxsr.train import step as step_lib

        config = variant(self.config, **{"model.dtype": dtype, "data.crop_size": image_size, "train.batch_size": batch})
        model, optimizer = self._train_state(config)
        mesh = parallel.make_mesh(jax.local_devices()[:1])  # one chip, as every peer
        replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        rng = np.random.default_rng(0)
        images = {"image": worker.random_images(batch, image_size)}
        if config.data.triplets:
            images["triplet"] = rng.random((batch, image_size, image_size, 3), dtype=np.float32)
        images = jax.device_put(images, sharded)
        if kind == "infer":
            model.eval()
            graphdef, state = nnx.split(model)
            state = jax.device_put(state, replicated)
            forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
            self.lowered = forward.lower(state, images["image"])
            return lambda: forward(state, images["image"])
        graphdef, state = nnx.split((model, optimizer))
        state = jax.device_put(state, replicated)
        step = step_lib.build_step(graphdef, config.loss)
        self.lowered = step.lower(state, images)
        return worker.carried(step, state, images)

    def xla_flops(self) -> float | None:
        """XLA's FLOPs of the prepared workload's unoptimised program (per call)."""
        return flops.xla_flops(self.lowered)

    def peak(self, dtype: str, n: int | None = None) -> dict:
        return peak.measured_matmul_peak(dtype, n=n)

    def loop(self, steps: int, batch: int, image_size: int, dtype: str, log_every: int) -> dict:
        """`jaxsr train`'s images/s as the loop itself logs them (`loop/images_per_s`).

        The loop times itself between its host syncs, from the end of the compiling
        first step, leaving out evaluation and checkpoints: the rate a user sees in
        metrics.jsonl. One run of `steps` steps; the median of its logged rates.
        """
        from jaxsr.train import loop as loop_lib

        config = variant(self.config, **{"model.dtype": dtype, "data.crop_size": image_size,
                                         "train.batch_size": batch, "train.steps": steps, "train.log_every": log_every,
                                         "train.checkpoint_every": steps, "train.eval_every": steps})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train_in_memory(config, pathlib.Path(tmp), random_stacks(image_size))
            wall = time.perf_counter() - t0
            lines = (pathlib.Path(tmp) / loop_lib.METRICS_FILE).read_text().splitlines()
        rates = [r["loop/images_per_s"] for r in map(json.loads, lines) if "loop/images_per_s" in r]
        return {"steps": steps, "log_every": log_every, "logged_rates": rates, "wall_s": wall,
                "images_per_s": float(np.median(rates)) if rates else None}
