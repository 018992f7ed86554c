"""Through-plane baselines against scipy.ndimage and a direct Lanczos evaluation."""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from jaxsr import baselines

METHODS = ("linear", "bspline", "lanczos")


def _positions(rng, n_slices, count=13):
    pos = np.sort(rng.uniform(0.0, n_slices - 1, count))
    pos[0], pos[-1] = 0.0, n_slices - 1.0
    return pos


def _scipy_resample(stack, positions, order):
    x, y, z = np.meshgrid(
        np.arange(stack.shape[0]), np.arange(stack.shape[1]), positions, indexing="ij"
    )
    return ndi.map_coordinates(
        stack.astype(np.float64), [x, y, z], order=order, mode="mirror", prefilter=True
    )


@pytest.mark.parametrize("n_slices", [2, 3, 6, 9])
@pytest.mark.parametrize("method,order", [("linear", 1), ("bspline", 3)])
def test_matches_scipy_map_coordinates(rng, n_slices, method, order):
    stack = rng.random((5, 6, n_slices)).astype(np.float32)
    positions = _positions(rng, n_slices)
    out = np.asarray(baselines.resample_slices(stack, positions, method))
    np.testing.assert_allclose(out, _scipy_resample(stack, positions, order), atol=1e-5)


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("method,order", [("linear", 1), ("bspline", 3)])
def test_upsample_matches_scipy_zoom_grid(rng, factor, method, order):
    n_slices = 7
    stack = rng.random((4, 5, n_slices)).astype(np.float32)
    n_out = (n_slices - 1) * factor + 1
    ref = ndi.zoom(
        stack.astype(np.float64), (1, 1, n_out / n_slices), order=order,
        mode="mirror", grid_mode=False,
    )
    out = np.asarray(baselines.upsample_through_plane(stack, factor, method))
    assert out.shape == ref.shape == (4, 5, n_out)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # Acquired slice i sits at output index i * factor.
    np.testing.assert_array_equal(out[:, :, ::factor], stack)


def _mirror(i, n):
    # Reflect about 0 and n-1 until inside, written independently of the library.
    if n == 1:
        return 0
    while i < 0 or i > n - 1:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def _lanczos_loop(stack, positions, a=3):
    out = np.zeros(stack.shape[:2] + (len(positions),))
    n = stack.shape[2]
    for x in range(stack.shape[0]):
        for y in range(stack.shape[1]):
            for p, pos in enumerate(positions):
                total, norm = 0.0, 0.0
                for j in range(math.floor(pos) - a + 1, math.floor(pos) + a + 1):
                    d = pos - j
                    if d == 0:
                        w = 1.0
                    elif abs(d) < a:
                        w = (a * math.sin(math.pi * d) * math.sin(math.pi * d / a)
                             / (math.pi * d) ** 2)
                    else:
                        w = 0.0
                    total += w * stack[x, y, _mirror(j, n)]
                    norm += w
                out[x, y, p] = total / norm
    return out


@pytest.mark.parametrize("n_slices", [2, 4, 10])
def test_lanczos_matches_direct_kernel_loop(rng, n_slices):
    stack = rng.random((3, 4, n_slices)).astype(np.float32)
    positions = _positions(rng, n_slices, count=9)
    positions[3] = min(0.25, n_slices - 1)  # near the first edge
    out = np.asarray(baselines.resample_slices(stack, positions, "lanczos"))
    np.testing.assert_allclose(out, _lanczos_loop(stack.astype(np.float64), positions), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_integer_positions_return_acquired_slices_exactly(rng, method):
    stack = rng.random((4, 5, 6)).astype(np.float32)
    positions = np.array([0.0, 3.0, 5.0, 1.0, 2.0, 4.0])
    out = np.asarray(baselines.resample_slices(stack, positions, method))
    np.testing.assert_array_equal(out, stack[:, :, positions.astype(int)])


@pytest.mark.parametrize("method", METHODS)
def test_constant_stack_stays_constant(method):
    stack = np.full((3, 3, 4), 0.7, np.float32)
    out = np.asarray(baselines.resample_slices(stack, np.linspace(0, 3, 11), method))
    np.testing.assert_allclose(out, 0.7, atol=1e-6)


def test_volume_linear_in_z_is_reproduced(rng):
    n_slices = 24
    slope = rng.uniform(-0.1, 0.1, (4, 5, 1))
    offset = rng.uniform(0.2, 0.5, (4, 5, 1))
    stack = (offset + slope * np.arange(n_slices)).astype(np.float32)
    positions = np.linspace(0, n_slices - 1, 70)
    truth = offset + slope * positions
    linear = np.asarray(baselines.resample_slices(stack, positions, "linear"))
    np.testing.assert_allclose(linear, truth, atol=1e-6)
    # The mirror boundary bends a ramp near the ends, and the bend decays by
    # 2 - sqrt(3) ~ 0.27 per slice; 9 slices in it is below float32 noise.
    inner = (positions >= 9) & (positions <= n_slices - 10)
    assert inner.sum() > 10
    bspline = np.asarray(baselines.resample_slices(stack, positions, "bspline"))
    np.testing.assert_allclose(bspline[:, :, inner], truth[:, :, inner], atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_4d_equals_per_frame(rng, method):
    stack = rng.random((4, 5, 6, 3)).astype(np.float32)
    positions = np.arange(0, 5.01, 0.5)
    out = np.asarray(baselines.resample_slices(stack, positions, method))
    assert out.shape == (4, 5, len(positions), 3)
    for t in range(3):
        frame = np.asarray(baselines.resample_slices(stack[..., t], positions, method))
        np.testing.assert_allclose(out[..., t], frame, rtol=0, atol=1e-6)


@pytest.mark.parametrize("positions", [[-0.5, 1.0], [0.0, 5.5], [[0.0, 1.0]], [np.nan]])
def test_bad_positions_raise(positions):
    stack = np.zeros((2, 2, 6), np.float32)
    with pytest.raises(ValueError):
        baselines.resample_slices(stack, np.asarray(positions), "linear")


def test_bad_method_and_rank_raise():
    with pytest.raises(ValueError, match="unknown interpolation method"):
        baselines.resample_slices(np.zeros((2, 2, 3)), [0.5], "cubic")
    with pytest.raises(ValueError, match="stack must be"):
        baselines.resample_slices(np.zeros((2, 3)), [0.5], "linear")


def test_runs_at_cine_size_in_float32():
    # A short-axis cine stack at the largest size the evaluation sees.
    stack = np.random.default_rng(1).random((256, 256, 10, 30), dtype=np.float32)
    out = baselines.upsample_through_plane(stack, 2, "lanczos")
    assert out.shape == (256, 256, 19, 30) and out.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(out)[:, :, ::2], stack)
