"""The paper network's layers as plain data, for the peers and the FLOP count.

One description of the architecture (jaxsr.models.autoencoder, the paper's
Sec. 3) written independently of the NNX module, so that a peer built from it
computing the same outputs from the same weights is evidence both are right.
Every weight is named by its NNX path in jaxsr's model
(`encoder/blocks/0/conv1/kernel`), which is how the weights travel between
processes (benchmarks/weights.py).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Conv:
    """A 3x3 'same' convolution at 1/2**level of the input resolution."""

    name: str  # NNX path of the module: its kernel is name + '/kernel', its bias name + '/bias'
    cin: int
    cout: int
    level: int
    activation: bool  # leaky ReLU after it


@dataclasses.dataclass(frozen=True)
class Norm:
    """Batch normalisation of `features` channels (scale, bias; running mean and var)."""

    name: str
    features: int


@dataclasses.dataclass(frozen=True)
class Resample:
    kind: str  # 'pool' (2x2 average) or 'upsample' (2x nearest)


def encoder_layers(m) -> list:
    widths = [int(m.base_features) * 2**i for i in range(int(m.num_blocks))]
    layers, cin = [], 1
    for i, w in enumerate(widths):
        prefix = f"encoder/blocks/{i}"
        layers += [Conv(f"{prefix}/conv1", cin, w, i, True), Conv(f"{prefix}/conv2", w, w, i, True)]
        if m.batch_norm:
            layers.append(Norm(f"{prefix}/norm", w))
        layers.append(Resample("pool"))
        cin = w
    blocks = len(widths)
    layers += [Conv("encoder/bottleneck", cin, int(m.bottleneck_features), blocks, True),
               Conv("encoder/latent", int(m.bottleneck_features), int(m.latent_features), blocks, False)]
    return layers


def decoder_layers(m) -> list:
    widths = [int(m.base_features) * 2**i for i in range(int(m.num_blocks))][::-1]
    blocks = len(widths)
    layers = [Conv("decoder/bottleneck", int(m.latent_features), int(m.bottleneck_features), blocks, True)]
    cin = int(m.bottleneck_features)
    for i, w in enumerate(widths):
        prefix = f"decoder/blocks/{i}"
        level = blocks - i
        layers += [Conv(f"{prefix}/conv1", cin, w, level, True), Conv(f"{prefix}/conv2", w, w, level, True)]
        if m.batch_norm:
            layers.append(Norm(f"{prefix}/norm", w))
        layers.append(Resample("upsample"))
        cin = w
    layers += [Conv("decoder/head1", cin, cin, 0, True), Conv("decoder/head2", cin, 1, 0, False)]
    return layers


def convs(m) -> list[Conv]:
    return [layer for layer in encoder_layers(m) + decoder_layers(m) if isinstance(layer, Conv)]


def trainable_names(m) -> list[str]:
    """Every parameter the optimiser updates (not the running statistics)."""
    names = []
    for layer in encoder_layers(m) + decoder_layers(m):
        if isinstance(layer, Conv):
            names += [layer.name + "/kernel", layer.name + "/bias"]
        elif isinstance(layer, Norm):
            names += [layer.name + "/scale", layer.name + "/bias"]
    return names


def parameter_count(m) -> int:
    total = 0
    for c in convs(m):
        total += 9 * c.cin * c.cout + c.cout
    norms = [layer for layer in encoder_layers(m) + decoder_layers(m) if isinstance(layer, Norm)]
    return total + sum(2 * n.features for n in norms)
