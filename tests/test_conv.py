"""The alternative weight-gradient formulations of benchmarks/conv_layers.py agree with lax.conv_general_dilated's vjp.

Tolerance, from the reduction length K = N*H*W (the pixels each dW entry sums):
two float32 evaluations of the same sum of K products, in any order, each lie
within gamma_{K+1} * sum|terms| of the exact value (gamma_n = n*u / (1 - n*u),
u = 2**-24; Higham, Accuracy and Stability of Numerical Algorithms, Sec. 3.1),
so they differ by at most 2 * gamma_{K+1} * sum|terms|, and sum|terms| is the
same weight gradient taken of |x| and |g|. That holds on any CPU and for any
summation order XLA picks; a wrong tap or a lost border is off by O(sum|terms|).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import conv_layers

U = 2.0**-24


def _bound(x, g):
    k = x.shape[0] * x.shape[1] * x.shape[2]
    gamma = (k + 1) * U / (1 - (k + 1) * U)
    w = jnp.zeros((3, 3, x.shape[-1], g.shape[-1]))
    return 2 * gamma * np.asarray(conv_layers.xla_dw(jnp.abs(x), w, jnp.abs(g)))


def _case(shape, cout, seed=0):
    kx, kg = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(kx, shape), jax.random.normal(kg, shape[:3] + (cout,))


@pytest.mark.parametrize("name", sorted(conv_layers.DW_FORMULATIONS))
@pytest.mark.parametrize("shape,cout", [((2, 8, 8, 3), 5), ((3, 16, 12, 1), 4), ((1, 6, 10, 7), 1)])
def test_weight_gradient_matches_xla(name, shape, cout):
    x, g = _case(shape, cout)
    ref = np.asarray(conv_layers.xla_dw(x, jnp.zeros((3, 3, shape[-1], cout)), g))
    got = np.asarray(jax.jit(conv_layers.DW_FORMULATIONS[name])(x, g))
    assert got.shape == ref.shape
    assert np.all(np.abs(got - ref) <= _bound(x, g))


def test_bound_catches_a_wrong_tap():
    """The tolerance is tight enough to fail: the right gradient with two taps swapped is rejected."""
    x, g = _case((2, 8, 8, 3), 5)
    ref = np.asarray(conv_layers.xla_dw(x, jnp.zeros((3, 3, 3, 5)), g))
    wrong = ref.copy()
    wrong[0, 0], wrong[0, 1] = ref[0, 1], ref[0, 0]
    assert not np.all(np.abs(wrong - ref) <= _bound(x, g))


def test_forward_and_input_gradient_are_xla_s():
    """The formulations change only dW: the benchmark's forward is lax.conv_general_dilated (checked on a known answer)."""
    x = jnp.ones((1, 4, 4, 1))
    out = conv_layers.xla_conv(x, jnp.ones((3, 3, 1, 1)))
    # a 3x3 box sum with zero padding: 4 at the corners, 6 on the edges, 9 inside
    np.testing.assert_array_equal(np.asarray(out)[0, :, :, 0], [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])
