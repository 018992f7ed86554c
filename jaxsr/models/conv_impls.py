"""Each direction of the model's 3x3 'same' convolution by a named implementation, and the conv that mixes them.

Implementations: 'lax' (XLA's convolution and its autodiff), 'winograd2' / 'winograd4'
(jaxsr.models.winograd) and 'native' (jaxsr.models.native_conv, CPU kernels of jaxsr's own).
`conv3x3` runs the forward, input gradient and weight gradient each by its own one, through a
`jax.custom_vjp`: the input gradient of a 3x3 'same' conv is the 3x3 'same' conv of the output
gradient with the kernel flipped in space and its in/out channels swapped (`transposed_kernel`), so it
is the forward conv of another problem, by whichever implementation is fastest there.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxsr.models import native_conv, winograd
from jaxsr.models.winograd import lax_conv, transposed_kernel

IMPLS = ("lax", *winograd.IMPLS, "native")


def _lax_weight_gradient(x: jax.Array, dy: jax.Array, w_shape) -> jax.Array:
    return jax.vjp(lambda k: lax_conv(x, k), jnp.zeros(w_shape, x.dtype))[1](dy)[0]


def conv_forward(impl: str, x: jax.Array, w: jax.Array) -> jax.Array:
    """The forward 'same' conv by one implementation."""
    if impl == "lax":
        return lax_conv(x, w)
    if impl == "native":
        return native_conv.forward(x, w)
    return winograd.winograd_conv(x, w, winograd.transforms(winograd.IMPLS[impl]))


def conv_input_gradient(impl: str, dy: jax.Array, w: jax.Array) -> jax.Array:
    """dL/dx of conv(x, w) given dy: the forward 'same' conv of dy with the transposed kernel, by one implementation."""
    if impl == "native":
        return native_conv.input_gradient(dy, w)  # transposes the kernel itself
    return conv_forward(impl, dy, transposed_kernel(w))


def conv_weight_gradient(impl: str, x: jax.Array, dy: jax.Array, w_shape) -> jax.Array:
    """dL/dw of conv(x, w) given dy = dL/dconv, by one implementation."""
    if impl == "lax":
        return _lax_weight_gradient(x, dy, w_shape)
    if impl == "native":
        return native_conv.weight_gradient(x, dy)
    return winograd.winograd_weight_gradient(x, dy, winograd.transforms(winograd.IMPLS[impl]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def conv3x3(impls: tuple[str, str, str], x: jax.Array, w: jax.Array) -> jax.Array:
    """The 3x3 'same' conv of x (NHWC) with w (HWIO), each direction by its own implementation.

    `impls` = (forward, input gradient, weight gradient), each one of IMPLS, or any hashable that gives them
    by index (conv_choice.Chosen, which times a direction only when it is first asked for). x and w must
    have one dtype (float32, bfloat16 or float64; 'native' float32 only), as for lax.conv_general_dilated.
    """
    return conv_forward(impls[0], x, w)


def _conv3x3_fwd(impls, x, w):
    return conv_forward(impls[0], x, w), (x, w)


def _conv3x3_bwd(impls, residuals, dy):
    x, w = residuals
    return conv_input_gradient(impls[1], dy, w), conv_weight_gradient(impls[2], x, dy, w.shape)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
