"""FLOPs of the paper network, counted from its convolutions.

What is counted: the 3x3 convolutions only, 2 * H * W * Cin * Cout * 9 FLOPs per
conv per image (one multiply and one add per tap, every tap of the zero-padded
'same' window, as a dense implementation computes it). Bias adds, leaky ReLU,
batch norm, pooling, upsampling, the loss and the optimiser are not counted
(together under 2 % of the paper network's work).

- inference (encode + decode) = forward;
- a training step = 3 x forward: the forward convs, the input-gradient convs
  and the weight-gradient convs, each the same multiply-adds. This includes
  the first conv's input gradient, which no implementation computes (the
  image needs no gradient): 0.1 % of the paper network's training count.

This count is what the suite divides by time to get FLOP/s; XLA's compiled
`cost_analysis()` is never used for it (on GPU it misses the convolutions that
run as cuDNN custom calls). It is checked in tests/test_benchmarks.py against
XLA's count of the *unoptimised* program, `jax.jit(f).lower(...).cost_analysis()`.
"""

from __future__ import annotations

from benchmarks import net_spec

TRAIN_OVER_FORWARD = 3
COUNTED = ("analytic: 3x3 convolutions only, 2*H*W*Cin*Cout*9 per conv per image (padded taps included); "
           "inference = forward (encode + decode), train step = 3 x forward (forward, input-gradient and "
           "weight-gradient convs); bias, activations, batch norm, pooling, loss and optimiser not counted")


def conv_flops(conv: net_spec.Conv, image_size: int) -> float:
    side = image_size >> conv.level
    return 2.0 * side * side * conv.cin * conv.cout * 9


def forward_flops(model_config, image_size: int) -> float:
    """FLOPs of one image through encoder and decoder."""
    return sum(conv_flops(c, image_size) for c in net_spec.convs(model_config))


def per_image(kind: str, model_config, image_size: int) -> float:
    """FLOPs per image of a 'train' step or an 'infer' (encode + decode) call."""
    forward = forward_flops(model_config, image_size)
    if kind == "train":
        return TRAIN_OVER_FORWARD * forward
    if kind == "infer":
        return forward
    raise ValueError(f"unknown workload kind {kind!r}")


def xla_flops(lowered) -> float | None:
    """'flops' of a jax.stages.Lowered or Compiled cost analysis (a dict; a list of one dict in old jax)."""
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])
