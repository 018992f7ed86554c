"""loss.recon_ssim_weight: off is the MSE loss bit for bit; on adds w·(1 - SSIM) of the reconstruction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage
from skimage.metrics import structural_similarity

from jaxsr.config import load_config
from jaxsr.train import state as state_lib
from jaxsr.train import step as step_lib

# Against scikit-image's float64 SSIM of the same clipped reconstruction, the loss's SSIM
# differed by 1.7e-7 and the loss by 3.3e-7 (float32 rounding; 2-core EPYC, 2026-12-02).
# 1e-5 is 30x that, while a wrong term moves them by more than 1e-3: SSIM of the unclipped
# reconstruction by 1.2e-3, a 7x7 window by 1.3e-2, a missing or doubled weight by w·(1 - SSIM).
SKIMAGE_TOL = 1e-5


def tiny(*overrides):
    # The triplet term off, so that the loss is the reconstruction terms alone.
    return load_config("configs/tiny.py", ["--config.loss.interp_weight=0.0", *overrides])


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random((4, 32, 32, 1)), (0, 1.5, 1.5, 0))
    return {"image": jnp.asarray((x - x.min()) / np.ptp(x), jnp.float32)}


def degrade(x):
    """A known 'reconstruction': blurred, brightened past 1 in places (so clipping matters), noisy."""
    noise = jax.random.normal(jax.random.key(1), x.shape) * 0.05
    return jnp.asarray(ndimage.gaussian_filter(np.asarray(x), (0, 1, 1, 0))) * 1.4 - 0.2 + noise


def skimage_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM over the batch with jaxsr.metrics' definition (Gaussian 11x11, sigma 1.5, range 1)."""
    return float(np.mean([structural_similarity(r[..., 0], t[..., 0], data_range=1.0, gaussian_weights=True,
                                                sigma=1.5, use_sample_covariance=False)
                          for r, t in zip(reference.astype(np.float64), test.astype(np.float64))]))


def test_weight_zero_is_the_mse_loss_bit_for_bit(batch):
    config = tiny()
    model, _ = state_lib.init_train_state(config)
    model.train()
    loss, metrics = step_lib.losses(model, batch, config.loss)
    mse = jnp.mean((model(batch["image"]) - batch["image"]) ** 2)
    assert np.asarray(loss).tobytes() == np.asarray(mse).tobytes()
    assert "recon_ssim" not in metrics


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_weight_adds_one_minus_ssim_of_the_reconstruction(batch, weight):
    config = tiny(f"--config.loss.recon_ssim_weight={weight}")
    loss, metrics = step_lib.losses(degrade, batch, config.loss)  # the loss only calls model(x) here
    x = np.asarray(batch["image"])
    recon = np.asarray(degrade(batch["image"]), np.float64)
    assert recon.max() > 1.05 and recon.min() < -0.05  # clipping is exercised
    ssim = skimage_ssim(x, np.clip(recon, 0.0, 1.0))
    assert 0.3 < ssim < 0.9  # far from 0 and 1: a wrong window or a missing clip shows
    np.testing.assert_allclose(float(metrics["recon_ssim"]), ssim, atol=SKIMAGE_TOL)
    np.testing.assert_allclose(float(loss), np.mean((recon - x) ** 2) + weight * (1.0 - ssim), atol=SKIMAGE_TOL)


def test_gradient_is_finite_and_reaches_every_parameter(batch):
    config = tiny("--config.loss.recon_ssim_weight=1.0")
    model, _ = state_lib.init_train_state(config)
    model.train()
    grads = nnx.grad(lambda m: step_lib.losses(m, batch, config.loss)[0])(model)
    leaves = jax.tree.leaves(nnx.to_pure_dict(grads))
    assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert all(np.abs(np.asarray(g)).max() > 0 for g in leaves)
