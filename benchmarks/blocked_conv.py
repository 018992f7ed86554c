"""A 3x3 'same' convolution in a channel-blocked layout (NCHWc), all three passes, for benchmarks/conv_layers.py.

Issue 20's last untried formulation. oneDNN, which PyTorch's CPU convolutions call, stores activations
as N x C/c x H x W x c with c the vector width (8 floats on AVX2, 16 on AVX-512), so that its inner
kernel broadcasts one input value against c output channels held in registers. Here the same layout,
written with what XLA offers: per kernel tap one dot_general that contracts the (channel block, lane)
pair, summed over the nine taps,

    y[n, D, h, w, o] = Σ_{a,b} Σ_{C,i} xp[n, C, h+a, w+b, i] · k[a, b, C, i, D, o]

(xp: x padded by 1; C, D input and output channel blocks, i, o lanes). The input gradient is the same
conv of dy with the kernel flipped and its in/out roles swapped; the weight gradient is, per tap,
dk[a, b, C, i, D, o] = Σ_{n,h,w} xp[n, C, h+a, w+b, i] · dy[n, D, h, w, o].

Channels are zero-padded to whole blocks (the 1-channel image and output layers become 1 block).
It lost on the 2-core AMD EPYC of 2026-12-03 (benchmarks/README.md), so the model does not use it;
it is kept here, tested (tests/test_blocked_conv.py), as a measured formulation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCK = 8  # float32 lanes of one AVX2 register


def blocks(channels: int, block: int = BLOCK) -> int:
    return -(-channels // block)


def to_blocked(x: jax.Array, block: int = BLOCK) -> jax.Array:
    """(N, H, W, C) -> (N, C/c, H, W, c), channels zero-padded to whole blocks."""
    n, h, w, c = x.shape
    cb = blocks(c, block)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, cb * block - c)))
    return x.reshape(n, h, w, cb, block).transpose(0, 3, 1, 2, 4)


def from_blocked(xb: jax.Array, channels: int) -> jax.Array:
    """(N, C/c, H, W, c) -> (N, H, W, C), the padding channels dropped."""
    n, cb, h, w, block = xb.shape
    return xb.transpose(0, 2, 3, 1, 4).reshape(n, h, w, cb * block)[..., :channels]


def kernel_to_blocked(k: jax.Array, block: int = BLOCK) -> jax.Array:
    """(3, 3, I, O) -> (3, 3, I/c, c, O/c, c), zero-padded."""
    _, _, ci, co = k.shape
    ib, ob = blocks(ci, block), blocks(co, block)
    k = jnp.pad(k, ((0, 0), (0, 0), (0, ib * block - ci), (0, ob * block - co)))
    return k.reshape(3, 3, ib, block, ob, block)


def kernel_from_blocked(kb: jax.Array, cin: int, cout: int) -> jax.Array:
    _, _, ib, block, ob, _ = kb.shape
    return kb.reshape(3, 3, ib * block, ob * block)[:, :, :cin, :cout]


def _tap_views(xb: jax.Array):
    """The nine views of xb padded by 1 that kernel tap (a, b) meets, in tap order (a major)."""
    h, w = xb.shape[2:4]
    xp = jnp.pad(xb, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
    return [xp[:, :, a:a + h, b:b + w, :] for a in range(3) for b in range(3)]


def forward(xb: jax.Array, kb: jax.Array) -> jax.Array:
    """y in the blocked layout: nine per-tap contractions over (channel block, lane), summed."""
    taps = kb.reshape(9, *kb.shape[2:])
    return sum(jnp.einsum("nchwi,cido->ndhwo", view, k) for view, k in zip(_tap_views(xb), taps))


def input_gradient(gb: jax.Array, kb: jax.Array) -> jax.Array:
    """dx: the forward conv of dy with the kernel flipped in both taps and inputs and outputs swapped."""
    return forward(gb, jnp.flip(kb, (0, 1)).transpose(0, 1, 4, 5, 2, 3))


def weight_gradient(xb: jax.Array, gb: jax.Array) -> jax.Array:
    """dk in the blocked kernel layout (3, 3, I/c, c, O/c, c): per tap a contraction over images and pixels."""
    per_tap = jnp.stack([jnp.einsum("nchwi,ndhwo->cido", view, gb) for view in _tap_views(xb)])
    return per_tap.reshape(3, 3, *per_tap.shape[1:])
