"""The autoencoder: shapes and parameter counts against formulas from the paper's description."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxsr.config import load_config
from jaxsr.models.autoencoder import AutoEncoder

# Shapes only: conv_impl=auto would time the paper network's convs at the first trace, for nothing.
LAX = ["--config.model.conv_impl=lax"]


def expected_params(m) -> int:
    """Count from the architecture description, independent of the module code."""

    def conv(cin, cout):
        return 9 * cin * cout + cout

    widths = [m.base_features * 2**i for i in range(m.num_blocks)]
    norm = 2 if m.batch_norm else 0  # batch norm's scale and bias per channel
    total, cin = 0, 1
    for w in widths:  # encoder blocks: two convs (+ batch norm)
        total += conv(cin, w) + conv(w, w) + norm * w
        cin = w
    total += conv(cin, m.bottleneck_features) + conv(m.bottleneck_features, m.latent_features)
    total += conv(m.latent_features, m.bottleneck_features)
    cin = m.bottleneck_features
    for w in reversed(widths):
        total += conv(cin, w) + conv(w, w) + norm * w
        cin = w
    total += conv(cin, cin) + conv(cin, 1)
    return total


@pytest.mark.parametrize("name", ["acdc_paper", "acdc_followup", "phantom_demo", "tiny"])
def test_parameter_count_and_shapes(name):
    config = load_config(name, LAX)
    m = config.model
    # Abstract model: shapes without initialising or running anything.
    model = nnx.eval_shape(lambda: AutoEncoder(m, rngs=nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    assert sum(p.size for p in jax.tree.leaves(params)) == expected_params(m)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    h, w = 3 * 2**m.num_blocks, 2 * 2**m.num_blocks  # non-square: catches swapped axes
    z, y = _shapes(model, (2, h, w, 1))
    assert z.shape == (2, 3, 2, m.latent_features)
    assert y.shape == (2, h, w, 1)


def _shapes(model, shape):
    graphdef, state = nnx.split(model)

    def run(state, x):
        m = nnx.merge(graphdef, state)
        z = m.encode(x)
        return z, m.decode(z)

    return jax.eval_shape(run, state, jax.ShapeDtypeStruct(shape, jnp.float32))


def test_paper_latent_is_16_channels_at_one_sixteenth():
    model = nnx.eval_shape(lambda: AutoEncoder(load_config("acdc_paper", LAX).model, rngs=nnx.Rngs(0)))
    z, y = _shapes(model, (1, 128, 128, 1))
    assert z.shape == (1, 8, 8, 16) and y.shape == (1, 128, 128, 1)


def test_bfloat16_compute_keeps_float32_params():
    cfg = load_config("tiny", ["--config.model.dtype=bfloat16"]).model
    model = AutoEncoder(cfg, rngs=nnx.Rngs(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    graphdef, state = nnx.split(model)
    inner = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).encoder.blocks[0].conv1(x), state, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
    assert inner.dtype == jnp.bfloat16
    z, y = _shapes(model, (1, 8, 8, 1))
    assert z.dtype == y.dtype == jnp.float32


def test_latent_has_no_activation():
    """A leaky ReLU on the latent would make large negative values rare; the raw conv allows them."""
    model = AutoEncoder(load_config("tiny").model, rngs=nnx.Rngs(3))
    z = model.encode(jax.random.uniform(jax.random.key(0), (4, 32, 32, 1)) * 10)
    direct = model.encoder.latent(nnx.leaky_relu(model.encoder.bottleneck(_pooled(model, jax.random.uniform(jax.random.key(0), (4, 32, 32, 1)) * 10)), 0.01))
    assert jnp.allclose(z, direct)


def _pooled(model, x):
    from jaxsr.models.autoencoder import _avg_pool

    for block in model.encoder.blocks:
        x = _avg_pool(block(x))
    return x
