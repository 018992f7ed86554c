"""The demo: sized to train in about six minutes on 2 CPU cores.

Choices (and why):
- Follow-up architecture, scaled down: 3 blocks, 16 base features, a 32-channel
  latent at 1/8 resolution. Fewer scales than the paper keep the fine
  trabeculae; the wider latent reconstructs more faithfully (follow-up paper).
- 64 x 64 crops: the phantom's hearts are ~40-60 px across at 1.4 mm, so a
  crop still holds most of the heart, at a quarter of the cost of 128 x 128.
- The triplet interpolation loss (weight 1): decode(z(n)/2 + z(n+2)/2) is
  trained to match slice n+1, which is what makes latent mixing beat image
  blending. It needs no high-resolution data.
- Adam at 1e-3 with warm-up and cosine decay instead of the paper's 1e-5:
  the paper trained for days; the demo has minutes.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = dict(crop_size=64, target_spacing_mm=1.4, triplets=True, rot90=True, intensity_aug=True, gamma_range=(0.8, 1.25))
    c.model = dict(num_blocks=3, base_features=16, bottleneck_features=128, latent_features=32, dtype="float32", negative_slope=0.01)
    c.loss = dict(interp_weight=1.0, interp_ssim_weight=0.0)
    c.optim = dict(learning_rate=1e-3, warmup_steps=50, schedule="cosine", clip_norm=1.0)
    c.train = dict(steps=900, batch_size=16, eval_every=150, checkpoint_every=150, keep_checkpoints=2, log_every=25, eval_batches=4)
    return c
