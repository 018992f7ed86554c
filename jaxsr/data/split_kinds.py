"""The kinds of split `jaxsr train --split` makes (jaxsr.data.datasets), light enough for the CLI's parser.

held-out: train / validation / test as the paper (ACDC) or by a stable hash (any folder).
all-train: every volume trains and every VALIDATION_EVERY-th also validates, in-sample:
for fitting a model to the very scans it will upsample.
"""

HELD_OUT, ALL_TRAIN = "held-out", "all-train"
SPLIT_KINDS = (HELD_OUT, ALL_TRAIN)
VALIDATION_EVERY = 5  # about the held-out split's validation share, 18 / 88
