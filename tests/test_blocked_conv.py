"""The channel-blocked convolution (benchmarks.blocked_conv, a formulation benchmarks/conv_layers.py times) against lax.

Tolerance: every output entry is one sum of products of the inputs (9·cin of them forward, 9·cout for
the input gradient, N·H·W for the weight gradient; the zero-padded channels add exact zeros), so in
any summation order it lies within gamma_k(u) · (the same sum over |x|, |w|, |dy|) of the exact value
(Higham, Sec. 3.1), with k one more than the number of terms: lax's bound in test_winograd._reference
with u = 2**-24 in place of 2**-53, plus lax's own float64 error. A wrong tap is off by O(|y|).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import blocked_conv
from tests.test_winograd import _case, _reference, direct_float32_bounds

# channels below, at and across a block; a 1-row image; an odd width
SHAPES = [((2, 8, 8, 3), 5), ((3, 7, 13, 8), 8), ((1, 1, 3, 9), 1), ((2, 6, 5, 16), 17)]


@jax.jit
def _blocked_all(x, w, dy):
    """fwd, dx, dw through the blocked layout, converted back to NHWC / HWIO."""
    xb, kb, gb = blocked_conv.to_blocked(x), blocked_conv.kernel_to_blocked(w), blocked_conv.to_blocked(dy)
    cin, cout = w.shape[2:]
    return (blocked_conv.from_blocked(blocked_conv.forward(xb, kb), cout),
            blocked_conv.from_blocked(blocked_conv.input_gradient(gb, kb), cin),
            blocked_conv.kernel_from_blocked(blocked_conv.weight_gradient(xb, gb), cin, cout))


@pytest.mark.parametrize("shape,cout", SHAPES)
def test_float32_within_the_dot_product_bound_of_float64_lax(shape, cout):
    x, w, dy = (a.astype(np.float32).astype(np.float64) for a in _case(shape, cout))
    ref, own = _reference(x, w, dy)
    bounds = direct_float32_bounds(x.shape, w.shape, own)
    got = _blocked_all(*(jnp.asarray(a, jnp.float32) for a in (x, w, dy)))
    for name, g, r, b, o in zip(("fwd", "dx", "dw"), got, ref, bounds, own):
        assert g.shape == r.shape and g.dtype == jnp.float32, name
        assert np.all(np.abs(np.asarray(g, np.float64) - r) <= b + o), (name, np.max(np.abs(g - r) - b - o))


def test_float64_agrees_with_lax_to_rounding():
    x, w, dy = _case((2, 7, 10, 11), 6, seed=1)
    ref, own = _reference(x, w, dy)
    with jax.enable_x64():
        got = _blocked_all(*(jnp.asarray(a) for a in (x, w, dy)))
    for name, g, r, o in zip(("fwd", "dx", "dw"), got, ref, own):
        assert g.dtype == jnp.float64 and np.all(np.abs(np.asarray(g) - r) <= 2 * o), name


def test_layout_round_trips_and_pads_with_zeros():
    x = np.random.default_rng(3).standard_normal((2, 4, 5, 11)).astype(np.float32)
    xb = blocked_conv.to_blocked(jnp.asarray(x))
    assert xb.shape == (2, 2, 4, 5, 8)
    np.testing.assert_array_equal(np.asarray(xb)[:, 1, :, :, 3:], 0)  # channels 11..15 are padding
    np.testing.assert_array_equal(np.asarray(xb)[:, 1, :, :, 2], x[..., 10])
    np.testing.assert_array_equal(np.asarray(blocked_conv.from_blocked(xb, 11)), x)
    k = np.random.default_rng(4).standard_normal((3, 3, 11, 3)).astype(np.float32)
    kb = blocked_conv.kernel_to_blocked(jnp.asarray(k))
    assert kb.shape == (3, 3, 2, 8, 1, 8)
    np.testing.assert_array_equal(np.asarray(blocked_conv.kernel_from_blocked(kb, 11, 3)), k)


def test_the_bound_catches_a_swapped_tap():
    x, w, dy = (a.astype(np.float32).astype(np.float64) for a in _case((2, 8, 8, 3), 5))
    ref, own = _reference(x, w, dy)
    bounds = direct_float32_bounds(x.shape, w.shape, own)
    swapped = w.copy()
    swapped[0, 0], swapped[0, 1] = w[0, 1], w[0, 0]
    y_wrong = np.asarray(_blocked_all(*(jnp.asarray(a, jnp.float32) for a in (x, swapped, dy)))[0], np.float64)
    assert not np.all(np.abs(y_wrong - ref[0]) <= bounds[0] + own[0])
    dw = np.asarray(_blocked_all(*(jnp.asarray(a, jnp.float32) for a in (x, w, dy)))[2], np.float64)
    dw[0, 0], dw[0, 1] = dw[0, 1].copy(), dw[0, 0].copy()
    assert not np.all(np.abs(dw - ref[2]) <= bounds[2] + own[2])
