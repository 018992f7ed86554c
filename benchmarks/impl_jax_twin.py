"""The plain-JAX twin: the paper network as functions over a dict of arrays.

No Flax: `jax.lax.conv_general_dilated`, hand-written batch norm, pooling and
upsampling, `jax.grad`, optax's Adam (the optimiser jaxsr uses), one jit per
workload. Built from benchmarks.net_spec, weights keyed by their NNX paths. It
is the peer that runs where PyTorch is not installed, and the float64
reference of the equivalence check (jax_enable_x64 around that call only).
"""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks import net_spec, worker

BN_EPS = 1e-5  # flax nnx.BatchNorm's and torch.nn.BatchNorm2d's default
BN_MOMENTUM = 0.9  # jaxsr.models.autoencoder's (torch's momentum=0.1 is the same rule)


def _conv(params, conv: net_spec.Conv, x, dtype, slope: float):
    y = lax.conv_general_dilated(x.astype(dtype), params[conv.name + "/kernel"].astype(dtype), (1, 1),
                                 ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y + params[conv.name + "/bias"].astype(dtype)
    return jnp.where(y >= 0, y, slope * y) if conv.activation else y


def _norm(params, norm: net_spec.Norm, x, dtype, train: bool, stats: dict):
    """Batch statistics in float32 when training (recorded in `stats`), running ones otherwise."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if train:
        mean = jnp.mean(x32, axis=(0, 1, 2))
        var = jnp.var(x32, axis=(0, 1, 2))
        stats[norm.name] = (mean, var)
    else:
        mean, var = params[norm.name + "/mean"], params[norm.name + "/var"]
    y = (x32 - mean) * lax.rsqrt(var + BN_EPS) * params[norm.name + "/scale"] + params[norm.name + "/bias"]
    return y.astype(dtype)


def _resample(kind: str, x):
    n, h, w, c = x.shape
    if kind == "pool":
        return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def _apply(layers, params, x, *, dtype, slope, train, stats):
    for layer in layers:
        if isinstance(layer, net_spec.Conv):
            x = _conv(params, layer, x, dtype, slope)
        elif isinstance(layer, net_spec.Norm):
            x = _norm(params, layer, x, dtype, train, stats)
        else:
            x = _resample(layer.kind, x)
    return x


def autoencode(model_config, params, x, *, dtype=jnp.float32, train: bool = False, stats: dict | None = None):
    """decode(encode(x)); the latent and the output in float32 (float64 for a float64 reference), as jaxsr does."""
    stats = {} if stats is None else stats
    wide = jnp.promote_types(dtype, jnp.float32)
    slope = float(model_config.negative_slope)
    z = _apply(net_spec.encoder_layers(model_config), params, x, dtype=dtype, slope=slope, train=train, stats=stats)
    z = z.astype(wide)
    y = _apply(net_spec.decoder_layers(model_config), params, z, dtype=dtype, slope=slope, train=train, stats=stats)
    return y.astype(wide)


def mse_loss(model_config, trainable, frozen, x, dtype=jnp.float32):
    """(the paper's MSE reconstruction loss in training mode, the batch statistics)."""
    stats: dict = {}
    recon = autoencode(model_config, {**frozen, **trainable}, x, dtype=dtype, train=True, stats=stats)
    return jnp.mean((recon - x.astype(recon.dtype)) ** 2), stats


def split(model_config, params: dict) -> tuple[dict, dict]:
    """(trainable, running statistics)."""
    names = set(net_spec.trainable_names(model_config))
    return {k: v for k, v in params.items() if k in names}, {k: v for k, v in params.items() if k not in names}


@functools.lru_cache(maxsize=None)
def _evaluator(model_items: tuple):
    """One jitted evaluation per network (the config as a hashable tuple), reused across weights."""
    model_config = types.SimpleNamespace(**dict(model_items))

    @jax.jit
    def evaluate(params, x):
        trainable, frozen = split(model_config, params)
        (loss, _), grads = jax.value_and_grad(lambda t: mse_loss(model_config, t, frozen, x, x.dtype), has_aux=True)(trainable)
        return {"forward": autoencode(model_config, params, x, dtype=x.dtype), "loss": loss,
                **{"grad/" + k: v for k, v in grads.items()}}

    return evaluate


def loss_and_grads(model_config, params: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Eval-mode output, training-mode loss and gradients, in the dtype of `params`."""
    evaluate = _evaluator(tuple(sorted(vars(model_config).items())))
    return {k: np.asarray(v) for k, v in evaluate(params, x).items()}


def make_train_step(model_config, learning_rate: float, dtype):
    """One jitted Adam step on the MSE loss; running statistics follow jaxsr's momentum."""
    import optax

    tx = optax.adam(learning_rate)

    def step(carry, x):
        trainable, frozen, opt_state = carry
        (loss, stats), grads = jax.value_and_grad(
            lambda t: mse_loss(model_config, t, frozen, x, dtype), has_aux=True)(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        frozen = dict(frozen)
        for name, (mean, var) in stats.items():
            frozen[name + "/mean"] = BN_MOMENTUM * frozen[name + "/mean"] + (1 - BN_MOMENTUM) * mean
            frozen[name + "/var"] = BN_MOMENTUM * frozen[name + "/var"] + (1 - BN_MOMENTUM) * var
        return (trainable, frozen, opt_state), loss

    return tx, jax.jit(step, donate_argnums=(0,))


class Worker(worker.JaxImpl):
    """The twin in its own process (benchmarks.worker)."""

    def info(self) -> dict:
        return worker.jax_info(f"jax {jax.__version__} plain lax twin")

    def load(self, model: dict, weights: str, learning_rate: float) -> dict:
        self.model_config = types.SimpleNamespace(**model)
        self.weights = dict(np.load(weights))
        self.learning_rate = learning_rate
        trainable, _ = split(self.model_config, self.weights)
        return {"parameters": int(sum(v.size for v in trainable.values()))}

    def check(self, inputs: str, out: str, float64: bool = False) -> None:
        x = np.load(inputs)["x"]
        dtype = np.float64 if float64 else np.float32
        with jax.enable_x64(float64):
            params = {k: jnp.asarray(v, dtype) for k, v in self.weights.items()}
            result = loss_and_grads(self.model_config, params, jnp.asarray(x, dtype))
        np.savez(out, **result)

    def build(self, kind: str, batch: int, image_size: int, dtype: str):
        device = jax.local_devices()[0]
        compute = jnp.dtype(dtype)
        x = jax.device_put(worker.random_images(batch, image_size), device)
        params = jax.device_put({k: jnp.asarray(v) for k, v in self.weights.items()}, device)
        if kind == "infer":
            forward = jax.jit(lambda p, images: autoencode(self.model_config, p, images, dtype=compute))
            return lambda: forward(params, x)
        trainable, frozen = split(self.model_config, params)
        tx, step = make_train_step(self.model_config, self.learning_rate, compute)
        # Committed to the device like the step's outputs, or the second call would compile again.
        return worker.carried(step, jax.device_put((trainable, frozen, tx.init(trainable)), device), x)
