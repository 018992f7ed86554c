"""The demo config for real anatomy (benchmarks/suite_real), and the recipe the README recommends for brain MRI.

Training: the demo config plus 1 - SSIM of the reconstruction. On MNI152 T1
(1 mm, axial, every 4th slice kept, 2000 steps, seed 0; 2-core EPYC,
2026-12-02) MSE alone reconstructed the acquired slices at 30.95 dB / SSIM
0.947 and the plain latent mix beat linear interpolation by +0.010 SSIM; with
loss.recon_ssim_weight = 0.5, 35.27 dB / 0.986 and +0.029 SSIM, +2.89 dB.
Brain MRI has fine cortical texture that MSE blurs and SSIM weighs.

Inference (config.inference, chosen 2026-12-03 on MNI152 axial k=4 and the
nibabel EPI k=2 with every lever of suite_real; README "Real anatomy"): the
residual mix adding back half of the neighbours' residuals, averaged over the
8 in-plane symmetries, with the fallback toward linear interpolation. On the
clean template it keeps the latent mix's margin (+0.032 SSIM, +2.76 dB over the
best baseline); on the noisy EPI, where the latent mix loses to linear, it
wins (+0.009 SSIM, +0.30 dB, p < 1e-6).

Interpolation SSIM, by slice gap (loss.interp_ssim_weight = 0.5 with
loss.interp_ssim_max_gap_mm = 5, jaxsr.train.gap_rule): 1 - SSIM of the
decoded triplet middle is added only when the training volumes' median slice
gap is at most 5 mm. On MNI152 and the EPI (2026-12-03/04, README "Real
anatomy"), at 4 and 4.4 mm gaps it raised the recipe's SSIM margin over the
best baseline (coronal k=4: +0.0270 -> +0.0285 on a 2-core Xeon, +0.0308 on a
2-core EPYC; EPI: +0.009 -> +0.017) at an equal or higher PSNR margin; at 6 mm
it gained 0.001 SSIM for 0.35 dB of PSNR, at 8 mm it cost 0.5 dB, so it is off
from there on (5 mm itself was not measured). Cardiac cine at 8-10 mm trains
without it.

Steps, by the same gap (train.steps = 4000, train.wide_gap_steps = 1000): with
the SSIM term, 4000 steps instead of 2000 raised the margins at 4 mm (2-core
Xeon, seed 0, 2026-12-04; coronal k=4 +0.0285 / +2.61 dB -> +0.0346 / +2.98,
axial k=4 +0.0321 / +2.84 -> +0.0395 / +2.97) and kept the EPI's (+0.0168 /
+0.29 -> +0.0164 / +0.38). At 8 mm, without it, fewer steps interpolate
better: axial k=8 seed 0 gave +2.10 / +2.21 / +2.03 dB PSNR margin at 500 /
1000 / 2000 steps (2-core EPYC, 2026-12-07; 4000 steps on the Xeon: +1.66),
and over three seeds 1000 steps gave +2.16 to +2.21 dB where 2000 had given
+1.82 to +2.03. At 6 mm 1000 steps gave 0.16 dB less than 2000 (+2.59
against +2.75 dB, same SSIM margin), both above +2 dB: the one switch at 5 mm
is set for 8 mm, nearer cardiac cine's 8-10 mm gaps. On 2 CPU cores 4000 steps
take about 15 minutes, 1000 about 5.
"""

import ml_collections

from jaxsr.configs import phantom_demo


def get_config() -> ml_collections.ConfigDict:
    c = phantom_demo.get_config()
    c.loss.update(recon_ssim_weight=0.5, interp_ssim_weight=0.5, interp_ssim_max_gap_mm=5.0)
    c.inference.update(mix="residual", residual_weight=0.5, tta=8, fallback=True)
    c.train.update(steps=4000, wide_gap_steps=1000)
    return c
