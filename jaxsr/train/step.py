"""Loss and the one jitted, data-parallel train step."""

from __future__ import annotations

import functools

import dm_pix
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxsr.train import guard


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
    lr = float(optim_cfg.learning_rate)
    warmup = int(optim_cfg.warmup_steps)
    if optim_cfg.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(total_steps, warmup + 1), end_value=lr * 0.05)
    elif warmup:
        schedule = optax.linear_schedule(0.0, lr, warmup)
    else:
        schedule = lr
    parts = []
    if float(optim_cfg.clip_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(optim_cfg.clip_norm)))
    parts.append(optax.adam(schedule))
    return optax.chain(*parts)


def _mean_ssim(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Batch-mean SSIM of the prediction clipped to [0, 1]: jaxsr.metrics' SSIM (dm-pix's defaults)."""
    return jnp.mean(dm_pix.ssim(jnp.clip(prediction, 0, 1), target, max_val=1.0))


def losses(model, batch: dict, loss_cfg) -> tuple[jax.Array, dict]:
    """MSE reconstruction, plus 1 - SSIM of it and the triplet interpolation loss when weighted."""
    x = batch["image"]
    recon = model(x)
    mse = jnp.mean((recon - x) ** 2)
    total, metrics = mse, {"recon_mse": mse}
    w_recon_ssim = float(loss_cfg.recon_ssim_weight)
    if w_recon_ssim:
        recon_ssim = _mean_ssim(recon, x)
        metrics["recon_ssim"] = recon_ssim
        total = total + w_recon_ssim * (1.0 - recon_ssim)
    w_mse = float(loss_cfg.interp_weight)
    w_ssim = float(loss_cfg.interp_ssim_weight)
    if (w_mse or w_ssim) and "triplet" in batch:
        t = batch["triplet"]
        z = model.encode(jnp.concatenate([t[..., 0:1], t[..., 2:3]], axis=0))
        z0, z2 = jnp.split(z, 2, axis=0)
        middle = model.decode(0.5 * z0 + 0.5 * z2)
        target = t[..., 1:2]
        interp_mse = jnp.mean((middle - target) ** 2)
        metrics["interp_mse"] = interp_mse
        total = total + w_mse * interp_mse
        if w_ssim:
            ssim = _mean_ssim(middle, target)
            metrics["interp_ssim"] = ssim
            total = total + w_ssim * (1.0 - ssim)
    metrics["loss"] = total
    return total, metrics


def train_step(model, optimizer, batch, loss_cfg):
    def loss_fn(m):
        return losses(m, batch, loss_cfg)

    (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return metrics


def _update(graphdef, loss_cfg, state, batch_at):
    """One optimizer update of the merged state on batch_at(number of updates so far)."""
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    done = optimizer.step[...]
    metrics = train_step(model, optimizer, batch_at(done), loss_cfg)
    return nnx.state((model, optimizer)), done + 1, metrics


def build_step(graphdef, loss_cfg):
    """One jit of a pure function of (state, batch); the state buffers are donated."""

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state, batch):
        state, _, metrics = _update(graphdef, loss_cfg, state, lambda _: batch)
        return state, metrics

    return step


def build_loop_step(graphdef, loss_cfg, sample=None):
    """The training loop's step: (state, health, inputs) -> (state, health, metrics), state and health donated.

    `inputs` is the batch, or with `sample` what sample(inputs, step) draws
    batch `step` from (the on-device data, jaxsr.train.device_data): the
    step index is the optimizer's count of updates, so a restored state
    draws the batches an uninterrupted run would. `health` is the on-device
    NaN guard (jaxsr.train.guard).
    """

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(state, health, inputs):
        batch_at = (lambda _: inputs) if sample is None else functools.partial(sample, inputs)
        state, done, metrics = _update(graphdef, loss_cfg, state, batch_at)
        return state, guard.update(health, done, metrics), metrics

    return step


def build_eval(graphdef_model):
    @jax.jit
    def evaluate(model_state, batch):
        model = nnx.merge(graphdef_model, model_state)
        model.eval()
        x = batch["image"]
        recon = model(x)
        out = {"recon_mse": jnp.mean((recon - x) ** 2, axis=(1, 2, 3)), "recon_psnr": dm_pix.psnr(jnp.clip(recon, 0, 1), x)}
        if "triplet" in batch:
            t = batch["triplet"]
            z0, z2 = model.encode(t[..., 0:1]), model.encode(t[..., 2:3])
            middle = jnp.clip(model.decode(0.5 * z0 + 0.5 * z2), 0, 1)
            out["interp_psnr"] = dm_pix.psnr(middle, t[..., 1:2])
            out["interp_mse"] = jnp.mean((middle - t[..., 1:2]) ** 2, axis=(1, 2, 3))
        return out

    return evaluate
