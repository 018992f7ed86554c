"""What the training set's slice gap changes: at wide gaps, no interpolation SSIM term and train.wide_gap_steps steps.

A training set is *wide-gap* when its volumes' median slice gap is over
loss.interp_ssim_max_gap_mm (real_mri: 5 mm; "any", the default: never).
The triplet loss supervises decode(z(n)/2 + z(n+2)/2) against slice n+1, two
gaps apart; at wide gaps that middle is poorly determined by its neighbours,
and fitting the triplets harder moves the model away from the interpolation
the new slices need. Measured on real anatomy (README "Real anatomy"):

- the SSIM term: at 4 and 4.4 mm gaps it raised the recipe's SSIM margin over
  the baselines at an equal or higher PSNR margin; at 6 and 8 mm (triplets
  spanning 12-16 mm) it cost 0.35 dB of PSNR for +0.001 SSIM (6 mm) and 0.5 dB
  with a lower SSIM (8 mm);
- the step count (train.steps, and train.wide_gap_steps at wide gaps): at
  4 mm more steps raised the margins, at 8 mm fewer did, while the in-sample
  triplet fit kept improving; the counts real_mri chose and the runs behind
  them are in configs/real_mri.py and the README.

One decision per run, from the volumes' headers, so a resumed run (same split)
makes the same one; every triplet of the run gets the same loss.
"""

from __future__ import annotations

import logging

import ml_collections
import numpy as np

from jaxsr.config import interp_ssim_max_gap
from jaxsr.errors import UserError

log = logging.getLogger(__name__)


def for_training_set(config: ml_collections.ConfigDict, slice_gaps_mm) -> ml_collections.ConfigDict:
    """The config training volumes with these slice gaps (mm; None: not known) train with.

    `config` itself when the gap changes nothing; for a wide-gap set a copy
    with loss.interp_ssim_weight 0 and train.steps = train.wide_gap_steps
    (when set). `config` is not changed: it is what the user asked for, and
    what the checkpoint keeps.
    """
    limit = interp_ssim_max_gap(config)
    wide_steps = int(config.train.wide_gap_steps)
    if limit is None or not (float(config.loss.interp_ssim_weight) or wide_steps):
        return config
    if slice_gaps_mm is None or not len(slice_gaps_mm):
        raise UserError("loss.interp_ssim_max_gap_mm needs the training volumes' slice spacing, "
                        "which in-memory stacks do not carry: pass slice_gaps_mm, or set it to any")
    gap = float(np.median(np.asarray(slice_gaps_mm, np.float64)))
    if gap <= limit:
        log.info("median slice gap %.2f mm, at most %.2f mm: interpolation SSIM term on (weight %g), %d steps",
                 gap, limit, float(config.loss.interp_ssim_weight), int(config.train.steps))
        return config
    wide = config.copy_and_resolve_references()
    wide.loss.interp_ssim_weight = 0.0
    if wide_steps:
        wide.train.steps = wide_steps
    log.info("median slice gap %.2f mm, over %.2f mm (loss.interp_ssim_max_gap_mm): interpolation SSIM term off, %d steps",
             gap, limit, int(wide.train.steps))
    return wide
