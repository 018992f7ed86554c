"""The peer: the same autoencoder in PyTorch eager, as the authors ran it.

Built from the same config fields as jaxsr.models.autoencoder so the two
networks have identical layer shapes (the parameter counts are compared in the
benchmark output). Optional: needs `pip install .[peer]`.
"""

from __future__ import annotations

import statistics
import time


def available() -> tuple[bool, str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False, "PyTorch is not installed (pip install '.[peer]')"
    return True, ""


def build_model(model_config):
    import torch
    from torch import nn

    slope = float(model_config.get("negative_slope", 0.01))

    def conv(cin, cout):
        return nn.Conv2d(cin, cout, 3, padding=1)

    def act():
        return nn.LeakyReLU(slope)

    blocks, feats = int(model_config.num_blocks), int(model_config.base_features)
    widths = [feats * 2**i for i in range(blocks)]
    enc, cin = [], 1
    for w in widths:
        enc += [conv(cin, w), act(), conv(w, w), act(), nn.BatchNorm2d(w), nn.AvgPool2d(2)]
        cin = w
    enc += [conv(cin, model_config.bottleneck_features), act(), conv(model_config.bottleneck_features, model_config.latent_features)]
    dec = [conv(model_config.latent_features, model_config.bottleneck_features), act()]
    cin = model_config.bottleneck_features
    for w in reversed(widths):
        dec += [conv(cin, w), act(), conv(w, w), act(), nn.BatchNorm2d(w), nn.Upsample(scale_factor=2, mode="nearest")]
        cin = w
    dec += [conv(cin, cin), act(), conv(cin, 1)]

    class AutoEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(*enc)
            self.decoder = nn.Sequential(*dec)

        def forward(self, x):
            return self.decoder(self.encoder(x))

    return AutoEncoder()


def train_throughput(model_config, *, batch_size: int, image_size: int, steps: int, threads: int | None = None, learning_rate: float = 1e-5) -> dict:
    """images/s of eager PyTorch training steps (Adam, MSE) after one warm-up step."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_config)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    x = torch.rand(batch_size, 1, image_size, image_size)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(x) - x) ** 2)
        loss.backward()
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    step()  # warm-up: allocator and kernel selection
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "framework": f"torch {torch.__version__} eager",
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "first_step_s": first,
        "step_s": times,
        "median_step_s": median,
        "images_per_s": batch_size / median,
        "steps": steps,
    }
