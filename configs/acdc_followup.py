"""The authors' follow-up: fewer scales, a wider latent and an interpolation loss.

2 encoder blocks and a 128-channel latent at 1/4 resolution reconstruct fine
structure more faithfully; the triplet loss (decode of the mean of the latents
of slices n and n+2 against slice n+1, MSE plus 1 - SSIM) shapes the latent
space so that mixing latents interpolates anatomy. Still no high-resolution
data. bfloat16 compute with float32 parameters suits GPUs and TPUs.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = dict(crop_size=128, target_spacing_mm=1.4, triplets=True, rot90=True, intensity_aug=True, gamma_range=(0.7, 1.5), loader="tfdata")
    c.model = dict(num_blocks=2, base_features=32, bottleneck_features=256, latent_features=128, dtype="bfloat16", negative_slope=0.01, batch_norm=True)
    c.loss = dict(interp_weight=1.0, interp_ssim_weight=0.1)
    c.optim = dict(learning_rate=2e-4, warmup_steps=1000, schedule="cosine", clip_norm=1.0)
    c.train = dict(steps=100_000, batch_size=32, eval_every=2000, checkpoint_every=2000, keep_checkpoints=3, log_every=100, eval_batches=32)
    return c
