"""Image similarity per slice: SSIM and PSNR (dm-pix) and pixel-domain VIF.

Every metric takes two batches `a` (reference) and `b` (test) of grayscale
NHWC images, shape (N, H, W, 1), float with values in [0, 1], and returns
one float32 score per image, shape (N,). Channel-first input such as
(N, 1, H, W) is refused: dm-pix would silently treat H as the channel axis.

- ssim: dm_pix.ssim with data range 1.0, 11x11 Gaussian window, sigma 1.5,
  k1 0.01, k2 0.03, averaged over the 'valid' part of the map (the window
  never leaves the image; the same region scikit-image averages over).
- psnr: -10·log10(MSE) for data range 1.0 (dm_pix.psnr). Identical images
  give +inf; that is the true value, so it is kept, and summaries must use
  order statistics (median) or clip it.
- vif: VIFp, the pixel-domain visual information fidelity of Sheikh & Bovik
  (2006), four scales, Gaussian windows 17/9/5/3 with sigma N/5, on the
  'valid' region, as in the reference MATLAB vifvec/vifp_mscale and
  `sewar.full_ref.vifp`. Its noise variance sigma_nsq = 2 is defined for
  0–255 images; VIF is invariant to scaling images and noise together, so
  we work on [0, 1] images with sigma_nsq = 2 / 255² (and the reference's
  1e-10 threshold scaled likewise). This equals
  sewar.full_ref.vifp(255·a, 255·b, sigma_nsq=2). It is undefined (nan) when
  the reference image is flat everywhere.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

DATA_RANGE = 1.0
SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# VIFp is specified on 0–255 images; see the module docstring for the scaling.
VIF_SIGMA_NSQ_255 = 2.0
VIF_EPS_255 = 1e-10
_VIF_SCALE = 255.0
VIF_WINDOWS = (17, 9, 5, 3)


def _check_pair(a, b, name: str, min_size: int) -> tuple[jax.Array, jax.Array]:
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"{name}: images differ in shape, {a.shape} vs {b.shape}")
    if a.ndim != 4:
        raise ValueError(f"{name}: expected NHWC images (N, H, W, 1), got shape {a.shape}")
    if a.shape[-1] != 1:
        hint = " (channel-first? move the channel axis last)" if a.shape[1] == 1 else ""
        raise ValueError(
            f"{name}: expected one channel last, NHWC (N, H, W, 1), got shape {a.shape}{hint}"
        )
    if min(a.shape[1:3]) < min_size:
        raise ValueError(f"{name}: images of {a.shape[1]}x{a.shape[2]} are smaller than {min_size}")
    return a, b


@jax.jit
def _ssim(a: jax.Array, b: jax.Array) -> jax.Array:
    return dm_pix.ssim(
        a, b, max_val=DATA_RANGE, filter_size=SSIM_FILTER_SIZE,
        filter_sigma=SSIM_FILTER_SIGMA, k1=SSIM_K1, k2=SSIM_K2,
    )


def ssim(a, b) -> jax.Array:
    """Mean SSIM per image pair, (N,) float32; images (N, H, W, 1) in [0, 1]."""
    a, b = _check_pair(a, b, "ssim", SSIM_FILTER_SIZE)
    return _ssim(a, b)


@jax.jit
def _psnr(a: jax.Array, b: jax.Array) -> jax.Array:
    # dm_pix.psnr assumes a data range of 1.0: -10 log10(mean squared error).
    return dm_pix.psnr(a, b)


def psnr(a, b) -> jax.Array:
    """PSNR in dB per image pair for data range 1.0, (N,) float32; +inf if identical."""
    a, b = _check_pair(a, b, "psnr", 1)
    return _psnr(a, b)


def _gaussian_window(size: int) -> np.ndarray:
    """The reference's fspecial('gaussian', size, size/5) as a (size, size, 1, 1) HWIO kernel."""
    half = size // 2
    x, y = np.mgrid[-half: half + 1, -half: half + 1]
    g = np.exp(-(x**2 + y**2) / (2.0 * (size / 5.0) ** 2))
    g[g < np.finfo(np.float64).eps * g.max()] = 0.0
    g /= g.sum()
    return g.astype(np.float32)[:, :, None, None]


def _filter_valid(x: jax.Array, window: np.ndarray) -> jax.Array:
    # HIGHEST: the local variances are differences of large, close numbers,
    # so TF32/bf16 convolutions on GPUs would ruin them.
    return jax.lax.conv_general_dilated(
        x, jnp.asarray(window), window_strides=(1, 1), padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST,
    )


def vif_min_size() -> int:
    """Smallest image side for which every VIFp scale keeps at least one pixel."""
    size = 1
    while True:
        n = size
        ok = True
        for scale, w in enumerate(VIF_WINDOWS):
            if scale > 0:
                n = (n - w + 1 + 1) // 2  # valid filter, then keep every other pixel
            if n - w + 1 < 1:
                ok = False
                break
        if ok:
            return size
        size += 1


@jax.jit
def _vif(ref: jax.Array, dist: jax.Array) -> jax.Array:
    scale2 = _VIF_SCALE**2
    sigma_nsq = VIF_SIGMA_NSQ_255 / scale2
    eps = VIF_EPS_255 / scale2
    num = jnp.zeros(ref.shape[0], jnp.float32)
    den = jnp.zeros(ref.shape[0], jnp.float32)
    for scale, size in enumerate(VIF_WINDOWS):
        win = _gaussian_window(size)
        if scale > 0:
            ref = _filter_valid(ref, win)[:, ::2, ::2]
            dist = _filter_valid(dist, win)[:, ::2, ::2]
        mu1 = _filter_valid(ref, win)
        mu2 = _filter_valid(dist, win)
        sigma1_sq = jnp.maximum(_filter_valid(ref * ref, win) - mu1 * mu1, 0.0)
        sigma2_sq = jnp.maximum(_filter_valid(dist * dist, win) - mu2 * mu2, 0.0)
        sigma12 = _filter_valid(ref * dist, win) - mu1 * mu2

        # The reference's special cases, in its order.
        g = sigma12 / (sigma1_sq + eps)
        sv_sq = sigma2_sq - g * sigma12
        flat1 = sigma1_sq < eps
        g = jnp.where(flat1, 0.0, g)
        sv_sq = jnp.where(flat1, sigma2_sq, sv_sq)
        sigma1_sq = jnp.where(flat1, 0.0, sigma1_sq)
        flat2 = sigma2_sq < eps
        g = jnp.where(flat2, 0.0, g)
        sv_sq = jnp.where(flat2, 0.0, sv_sq)
        negative = g < 0
        sv_sq = jnp.where(negative, sigma2_sq, sv_sq)
        g = jnp.where(negative, 0.0, g)
        sv_sq = jnp.maximum(sv_sq, eps)

        num += jnp.sum(jnp.log10(1.0 + g * g * sigma1_sq / (sv_sq + sigma_nsq)), axis=(1, 2, 3))
        den += jnp.sum(jnp.log10(1.0 + sigma1_sq / sigma_nsq), axis=(1, 2, 3))
    return num / den


def vif(a, b) -> jax.Array:
    """Pixel-domain VIF of test images `b` against references `a`, (N,) float32.

    1 for identical images (unless flat), lower for distortions; can exceed 1
    for contrast-enhanced `b`. nan where `a` is flat everywhere.
    """
    a, b = _check_pair(a, b, "vif", vif_min_size())
    return _vif(a, b)


