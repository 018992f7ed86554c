"""The loss a training set gets: config.loss, with the interpolation SSIM term off where its slices lie far apart.

loss.interp_ssim_max_gap_mm (real_mri: 5 mm) keeps 1 - SSIM of the decoded
triplet middle only when the training volumes' median slice gap is at most
that. Measured on real anatomy (README "Real anatomy"): at 4 and 4.4 mm gaps
the term raised the recipe's SSIM margin over the baselines at an equal or
higher PSNR margin; at 6 and 8 mm, where a training triplet spans 12-16 mm
and its middle is poorly determined by the two slices around it, it cost
0.35 dB of PSNR for +0.001 SSIM (6 mm) and 0.5 dB with a lower SSIM (8 mm).

One decision per run, from the volumes' headers, so a resumed run (same
split) makes the same one; every triplet of the run gets the same loss.
"""

from __future__ import annotations

import logging

import ml_collections
import numpy as np

from jaxsr.config import interp_ssim_max_gap
from jaxsr.errors import UserError

log = logging.getLogger(__name__)


def for_training_set(config: ml_collections.ConfigDict, slice_gaps_mm) -> ml_collections.ConfigDict:
    """config.loss for training volumes with these slice gaps (mm; None: not known).

    The SSIM weight is zeroed when the median gap exceeds the limit; the
    config itself is not changed (it is what the user asked for, and what
    the checkpoint keeps).
    """
    loss = config.loss
    limit = interp_ssim_max_gap(config)
    if limit is None or not float(loss.interp_ssim_weight):
        return loss
    if slice_gaps_mm is None or not len(slice_gaps_mm):
        raise UserError("loss.interp_ssim_max_gap_mm needs the training volumes' slice spacing, "
                        "which in-memory stacks do not carry: pass slice_gaps_mm, or set it to any")
    gap = float(np.median(np.asarray(slice_gaps_mm, np.float64)))
    if gap <= limit:
        log.info("interpolation SSIM term on: the median slice gap %.2f mm is at most %.2f mm", gap, limit)
        return loss
    log.info("interpolation SSIM term off: the median slice gap %.2f mm is over %.2f mm (loss.interp_ssim_max_gap_mm)", gap, limit)
    off = ml_collections.ConfigDict(loss.to_dict())
    off.interp_ssim_weight = 0.0
    return off
