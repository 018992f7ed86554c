"""The authors' follow-up: fewer scales, a wider latent and an interpolation loss.

2 encoder blocks and a 128-channel latent at 1/4 resolution reconstruct fine
structure more faithfully; the triplet loss (decode of the mean of the latents
of slices n and n+2 against slice n+1, MSE plus 1 - SSIM) shapes the latent
space so that mixing latents interpolates anatomy. Still no high-resolution
data. bfloat16 compute with float32 parameters suits GPUs and TPUs.
"""

import ml_collections

from jaxsr.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.update(triplets=True)
    c.model.update(num_blocks=2, latent_features=128, dtype="bfloat16")
    c.loss.update(interp_weight=1.0, interp_ssim_weight=0.1)
    c.optim.update(learning_rate=2e-4, warmup_steps=1000, schedule="cosine", clip_norm=1.0)
    c.train.update(steps=100_000, batch_size=32)
    return c
