"""The paper's convolutional autoencoder in Flax NNX, every size from the config.

Encoder: `num_blocks` blocks of two 3x3 convolutions with leaky ReLU, then batch
normalisation and 2x2 average pooling (32 kernels first, doubling per block),
then a 3x3 convolution to `bottleneck_features` (leaky ReLU) and a 3x3
convolution to `latent_features` (the latent; no activation). The decoder is
the mirror image with nearest-neighbour upsampling, plus two extra 3x3
convolutions producing one channel. Zero padding 1 everywhere ('SAME' for 3x3). Each convolution
is XLA's or Winograd's, per `conv_impl` (jaxsr.models.conv_choice); the parameters are nnx.Conv's either way.
`batch_norm=False` drops the normalisation: with small batches and short
training it can cost reconstruction fidelity (docs/demo_config.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsr.models.conv_choice import ConvGeneralDilated


def _conv(cin: int, cout: int, conv_impl: str, dtype, rngs: nnx.Rngs) -> nnx.Conv:
    # nnx.Conv's parameters and dtype promotion; the convolution itself chosen by model.conv_impl
    return nnx.Conv(cin, cout, kernel_size=(3, 3), padding=((1, 1), (1, 1)), dtype=dtype, param_dtype=jnp.float32,
                    conv_general_dilated=ConvGeneralDilated(conv_impl), rngs=rngs)


def _avg_pool(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample_nearest(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Block(nnx.Module):
    """Two 3x3 convolutions with leaky ReLU, then (optionally) batch normalisation."""

    def __init__(self, cin: int, cout: int, *, slope: float, batch_norm: bool, conv_impl: str, dtype, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, cout, conv_impl, dtype, rngs)
        self.conv2 = _conv(cout, cout, conv_impl, dtype, rngs)
        self.norm = nnx.BatchNorm(cout, momentum=0.9, dtype=dtype, param_dtype=jnp.float32, rngs=rngs) if batch_norm else None
        self.slope = slope

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.leaky_relu(self.conv1(x), self.slope)
        x = nnx.leaky_relu(self.conv2(x), self.slope)
        return x if self.norm is None else self.norm(x)


class Encoder(nnx.Module):
    def __init__(self, cfg, *, dtype, rngs: nnx.Rngs):
        widths = [cfg.base_features * 2**i for i in range(cfg.num_blocks)]
        ins = [1] + widths[:-1]
        self.blocks = nnx.List([Block(i, o, slope=cfg.negative_slope, batch_norm=cfg.batch_norm, conv_impl=cfg.conv_impl, dtype=dtype, rngs=rngs) for i, o in zip(ins, widths)])
        self.bottleneck = _conv(widths[-1], cfg.bottleneck_features, cfg.conv_impl, dtype, rngs)
        self.latent = _conv(cfg.bottleneck_features, cfg.latent_features, cfg.conv_impl, dtype, rngs)
        self.slope = cfg.negative_slope

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = _avg_pool(block(x))
        x = nnx.leaky_relu(self.bottleneck(x), self.slope)
        return self.latent(x)


class Decoder(nnx.Module):
    def __init__(self, cfg, *, dtype, rngs: nnx.Rngs):
        widths = [cfg.base_features * 2**i for i in range(cfg.num_blocks)][::-1]
        ins = [cfg.bottleneck_features] + widths[:-1]
        self.bottleneck = _conv(cfg.latent_features, cfg.bottleneck_features, cfg.conv_impl, dtype, rngs)
        self.blocks = nnx.List([Block(i, o, slope=cfg.negative_slope, batch_norm=cfg.batch_norm, conv_impl=cfg.conv_impl, dtype=dtype, rngs=rngs) for i, o in zip(ins, widths)])
        self.head1 = _conv(widths[-1], widths[-1], cfg.conv_impl, dtype, rngs)
        self.head2 = _conv(widths[-1], 1, cfg.conv_impl, dtype, rngs)
        self.slope = cfg.negative_slope

    def __call__(self, z: jax.Array) -> jax.Array:
        x = nnx.leaky_relu(self.bottleneck(z), self.slope)
        for block in self.blocks:
            x = _upsample_nearest(block(x))
        x = nnx.leaky_relu(self.head1(x), self.slope)
        return self.head2(x)


class AutoEncoder(nnx.Module):
    """encode/decode are separate so latent interpolation can call them."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
        self.encoder = Encoder(cfg, dtype=dtype, rngs=rngs)
        self.decoder = Decoder(cfg, dtype=dtype, rngs=rngs)
        self.num_blocks = int(cfg.num_blocks)

    def encode(self, x: jax.Array) -> jax.Array:
        return self.encoder(x).astype(jnp.float32)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z).astype(jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x))
