"""SSIM, PSNR and VIFp against scikit-image, sewar and known answers."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from sewar.full_ref import vifp as sewar_vifp
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxsr import metrics


def _smooth(rng, size, sigma=3.0):
    x = ndi.gaussian_filter(rng.random((size, size)), sigma)
    return (x - x.min()) / (x.max() - x.min())


def _mri_like(rng, size):
    # A textured disc on an exactly zero background, with a clipped bright
    # patch: the flat regions that stress VIF's special cases.
    yy, xx = np.mgrid[:size, :size] - size / 2
    disc = (xx**2 + yy**2) < (0.35 * size) ** 2
    img = np.where(disc, 0.2 + 0.6 * _smooth(rng, size, 2.0), 0.0)
    img[size // 2 - 3: size // 2 + 3, size // 2 - 3: size // 2 + 3] = 1.0
    return img


def _pairs(rng, size):
    """(reference, distorted) pairs of common kinds, as float32 2D images."""
    out = []
    for ref in (_smooth(rng, size), _mri_like(rng, size)):
        noisy = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1)
        blurred = ndi.gaussian_filter(ref, 1.2)
        shifted = np.roll(ref, 1, axis=0)
        contrast = 0.8 * ref + 0.1
        out += [(ref, d) for d in (noisy, blurred, shifted, contrast)]
    return [(r.astype(np.float32), d.astype(np.float32)) for r, d in out]


def _nhwc(*images):
    return np.stack(images)[..., None]


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(42)
    return _pairs(rng, 48) + _pairs(rng, 64)


def test_ssim_matches_skimage(pairs):
    for ref, dist in pairs:
        ours = float(metrics.ssim(_nhwc(ref), _nhwc(dist))[0])
        # skimage filters with reflect padding, then averages over the map
        # without its 5-pixel border: exactly dm-pix's 'valid' region.
        theirs = structural_similarity(
            ref.astype(np.float64), dist.astype(np.float64), gaussian_weights=True,
            sigma=1.5, use_sample_covariance=False, data_range=1.0,
        )
        assert abs(ours - theirs) < 1e-4, (ours, theirs)


def test_psnr_matches_skimage_and_offset_formula(pairs, rng):
    for ref, dist in pairs:
        ours = float(metrics.psnr(_nhwc(ref), _nhwc(dist))[0])
        theirs = peak_signal_noise_ratio(
            ref.astype(np.float64), dist.astype(np.float64), data_range=1.0
        )
        assert abs(ours - theirs) < 1e-3, (ours, theirs)
    base = (0.8 * rng.random((32, 32))).astype(np.float32)
    for offset in (0.01, 0.1, 0.2):
        ours = float(metrics.psnr(_nhwc(base), _nhwc(base + np.float32(offset)))[0])
        assert ours == pytest.approx(-10 * np.log10(offset**2), abs=1e-3)


def test_vif_matches_sewar(pairs):
    for ref, dist in pairs:
        ours = float(metrics.vif(_nhwc(ref), _nhwc(dist))[0])
        # sewar's VIFp is defined on 0-255 images with sigma_nsq = 2.
        theirs = sewar_vifp(255.0 * ref.astype(np.float64), 255.0 * dist.astype(np.float64))
        assert ours == pytest.approx(theirs, rel=1e-3), (ours, theirs)


def test_vif_is_not_scale_blind(pairs):
    # Guard against a wrong noise scale: with sigma_nsq = 2 on [0, 1] images
    # (instead of 2/255²) VIF of noisy images would be far from sewar's.
    ref, dist = pairs[0]
    theirs_wrong_scale = sewar_vifp(ref.astype(np.float64), dist.astype(np.float64))
    ours = float(metrics.vif(_nhwc(ref), _nhwc(dist))[0])
    assert abs(ours - theirs_wrong_scale) > 0.05


def test_identical_images(rng):
    img = _nhwc(_mri_like(rng, 48).astype(np.float32))
    assert float(metrics.ssim(img, img)[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.vif(img, img)[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(metrics.psnr(img, img)[0]) == np.inf


def test_distortion_lowers_scores(pairs):
    ref, dist = pairs[0]  # smooth image and its noisy copy
    a, b = _nhwc(ref), _nhwc(dist)
    assert float(metrics.ssim(a, b)[0]) < 0.95
    assert float(metrics.vif(a, b)[0]) < 0.9
    assert float(metrics.psnr(a, b)[0]) < 30.0


def test_batch_equals_single_calls(pairs):
    refs = [r for r, _ in pairs if r.shape == (48, 48)]
    dists = [d for r, d in pairs if r.shape == (48, 48)]
    a, b = _nhwc(*refs), _nhwc(*dists)
    for metric in (metrics.ssim, metrics.psnr, metrics.vif):
        batch = np.asarray(metric(a, b))
        assert batch.shape == (len(refs),) and batch.dtype == np.float32
        single = [float(metric(a[i: i + 1], b[i: i + 1])[0]) for i in range(len(refs))]
        np.testing.assert_allclose(batch, single, rtol=1e-5)


@pytest.mark.parametrize(
    "shape",
    [(2, 1, 48, 48), (48, 48), (2, 48, 48), (2, 48, 48, 3), (48, 48, 1)],
)
def test_wrong_layout_raises(shape):
    x = np.zeros(shape, np.float32)
    for metric in (metrics.ssim, metrics.psnr, metrics.vif):
        with pytest.raises(ValueError):
            metric(x, x)


def test_mismatched_or_too_small_raises():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.ssim(np.zeros((1, 48, 48, 1)), np.zeros((1, 48, 40, 1)))
    with pytest.raises(ValueError, match="smaller"):
        metrics.vif(np.zeros((1, 32, 32, 1)), np.zeros((1, 32, 32, 1)))
    with pytest.raises(ValueError, match="smaller"):
        metrics.ssim(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)))
