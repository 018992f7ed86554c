"""A tiny configuration for tests: seconds per step on one CPU core."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = dict(crop_size=32, target_spacing_mm=1.4, triplets=True, rot90=True, intensity_aug=True, gamma_range=(0.7, 1.5), loader="numpy")
    c.model = dict(num_blocks=2, base_features=4, bottleneck_features=8, latent_features=8, dtype="float32", negative_slope=0.01, batch_norm=True)
    c.loss = dict(interp_weight=1.0, interp_ssim_weight=0.0)
    c.optim = dict(learning_rate=1e-3, warmup_steps=0, schedule="constant", clip_norm=0.0)
    c.train = dict(steps=4, batch_size=8, eval_every=2, checkpoint_every=2, keep_checkpoints=2, log_every=1, eval_batches=1)
    return c
