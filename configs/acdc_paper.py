"""The paper's exact settings (Sander, de Vos, Išgum, SPIE MI 2021).

4 encoder blocks (32 kernels doubling), a 256-kernel convolution and a
16-channel latent at 1/16 resolution; 128 x 128 random crops with rot90 and
intensity augmentation; MSE reconstruction loss only; Adam at 1e-5. The paper
gives no batch size or step count: 16 and 200k steps are our choice.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = dict(crop_size=128, target_spacing_mm=1.4, triplets=False, rot90=True, intensity_aug=True, gamma_range=(0.7, 1.5), loader="tfdata")
    c.model = dict(num_blocks=4, base_features=32, bottleneck_features=256, latent_features=16, dtype="float32", negative_slope=0.01, batch_norm=True)
    c.loss = dict(interp_weight=0.0, interp_ssim_weight=0.0)
    c.optim = dict(learning_rate=1e-5, warmup_steps=0, schedule="constant", clip_norm=0.0)
    c.train = dict(steps=200_000, batch_size=16, eval_every=2000, checkpoint_every=2000, keep_checkpoints=3, log_every=100, eval_batches=32)
    return c
