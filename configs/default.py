"""The base config: every key, with its default, written once. The others derive from it.

The defaults are the paper's settings (Sander, de Vos, Išgum, SPIE MI 2021):
4 encoder blocks from 32 kernels, a 256-kernel convolution and a 16-channel
latent at 1/16 resolution; 1.4 mm in-plane resampling; 128 x 128 random crops
with rot90 and intensity augmentation; MSE reconstruction loss only; Adam at a
constant 1e-5. The paper gives no batch size or step count: 16 and 200k steps
are our choice. A config of one's own can start here:

    from jaxsr.configs import default

    def get_config():
        c = default.get_config()
        c.train.steps = 5000
        return c
"""

import ml_collections

from jaxsr import mixes


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Parameter init, batch order and augmentation all derive from this one seed.
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    # In-plane voxel size (mm) every volume is resampled to, for training and inference alike,
    # or "native": each volume keeps its own in-plane grid (jaxsr.config.target_spacing).
    # Untyped so that a config may set either; validate() checks the value.
    c.data.target_spacing_mm = ml_collections.FieldReference(1.4, field_type=object)
    c.data.crop_size = 128
    # Also draw slices (n, n+1, n+2) of one stack: the interpolation loss's supervision.
    c.data.triplets = False
    c.data.rot90 = True
    # A random gamma, log-uniform in gamma_range, on the [0, 1] intensities.
    c.data.intensity_aug = True
    c.data.gamma_range = (0.7, 1.5)
    # Where batches come from (jaxsr.train.inputs): "device" (the slices live on the device,
    # batches are drawn and augmented inside the jitted step), "tfdata" (TensorFlow threads
    # augment, prefetch; for data too large for the device), "numpy" (the host's main thread,
    # no TensorFlow), or "auto": "device" when the slices take at most a quarter of a device's
    # memory, else "tfdata".
    c.data.loader = "auto"

    c.model = ml_collections.ConfigDict()
    c.model.num_blocks = 4  # each halves the resolution
    c.model.base_features = 32  # doubling per block
    c.model.bottleneck_features = 256
    c.model.latent_features = 16
    c.model.dtype = "float32"  # compute dtype; parameters are always float32
    c.model.negative_slope = 0.01  # leaky ReLU
    c.model.batch_norm = True
    # How each 3x3 conv is computed (jaxsr.models.conv_choice): "lax" (XLA's convolution), "winograd2" or
    # "winograd4" (Winograd F(2x2,3x3) / F(4x4,3x3), fewer multiplies), "native" (jaxsr's own CPU kernels,
    # compiled on first use; float32, one CPU device), or "auto": per layer shape and direction the fastest
    # of them, timed once on this machine and remembered in a cache file.
    c.model.conv_impl = "auto"

    c.inference = ml_collections.ConfigDict()
    # The recipe `upsample`, `reprocess`, `evaluate` and the demo use with this model unless
    # told otherwise (--mix, --tta, --fallback). mix: jaxsr.mixes; tta: 1, or 8 to average every
    # new slice over the 8 in-plane rot90/flip symmetries (jaxsr.tta; 8x the inference cost);
    # fallback: move new slices toward linear interpolation where the model reconstructs their
    # neighbours poorly (jaxsr.fallback).
    c.inference.mix = mixes.DEFAULT_MIX
    # With mix "residual": the share of the neighbours' residuals added back, in [0, 1] (jaxsr.residual_mix).
    c.inference.residual_weight = 1.0
    c.inference.tta = 1
    c.inference.fallback = False

    c.loss = ml_collections.ConfigDict()
    # decode(z(n)/2 + z(n+2)/2) against slice n+1 (needs data.triplets): MSE and 1 - SSIM weights.
    c.loss.interp_weight = 0.0
    c.loss.interp_ssim_weight = 0.0
    # The SSIM term above only for training sets whose median slice gap is at most this many mm,
    # or "any" (jaxsr.config.interp_ssim_max_gap): at wide gaps the middle slice is poorly
    # determined by its neighbours, and SSIM then buys structure at the cost of PSNR. Such a
    # wide-gap set also trains train.wide_gap_steps (jaxsr.train.gap_rule).
    c.loss.interp_ssim_max_gap_mm = ml_collections.FieldReference("any", field_type=object)
    # 1 - SSIM of the reconstruction of the input slice, beside its MSE: MSE alone blurs fine
    # texture that SSIM (and the eye) weighs; 0 is off (the paper's loss).
    c.loss.recon_ssim_weight = 0.0

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-5
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"  # or "cosine" (decays to 5% of learning_rate)
    c.optim.clip_norm = 0.0  # global-norm gradient clipping; 0 is off

    c.train = ml_collections.ConfigDict()
    c.train.steps = 200_000
    # Steps for a training set whose median slice gap is over loss.interp_ssim_max_gap_mm, where
    # fitting the triplets longer moves the model away from the slices between them; 0: train.steps.
    c.train.wide_gap_steps = 0
    c.train.batch_size = 16  # global: split over all devices of all hosts
    c.train.eval_every = 2000
    c.train.checkpoint_every = 2000
    c.train.keep_checkpoints = 3  # the last N; the best by validation loss is kept besides
    c.train.log_every = 100
    c.train.eval_batches = 32
    return c
