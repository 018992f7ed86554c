"""`jaxsr evaluate`: score the autoencoder against linear, B-spline and Lanczos interpolation.

Drops every other slice of each volume in a split, reconstructs the dropped
slices with the autoencoder (twice: the paper's latent mix, 'ae', and with its
reconstruction residuals added back, 'ae_residual', as `--mix residual` makes
them) and with linear, B-spline and Lanczos interpolation, and scores them
against the originals (SSIM, PSNR, VIF).
Writes scores.csv, summary.json, figures/*.png and index.html into OUT and
prints the summary table.
"""

from __future__ import annotations

import argparse
import pathlib

from jaxsr.commands import common
from jaxsr.errors import ConfigError


def register(subparsers) -> None:
    parser = common.add_command(subparsers, __doc__, run)
    parser.add_argument("--checkpoint", type=pathlib.Path, required=True, help="training workdir or one checkpoint step folder")
    parser.add_argument("--data", type=pathlib.Path, required=True, help="ACDC tree or folder of NIfTI files")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="report folder (created; must be empty unless --overwrite)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"), help="which split to score (default: test)")
    parser.add_argument("--full-fov", action="store_true", help="score the full field of view instead of the 128x128 centre crop")
    parser.add_argument("--crop-size", type=int, default=128, help="in-plane centre crop in pixels at the model's in-plane spacing (default: 128, the paper's)")
    parser.add_argument("--max-volumes", type=int, default=None, help="score only the first N volumes of the split")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty OUT")


def run(args: argparse.Namespace) -> int:
    from jaxsr import evaluate, report

    if args.max_volumes is not None and args.max_volumes < 1:
        raise ConfigError(f"--max-volumes: must be at least 1, got {args.max_volumes}")
    if args.crop_size < 8:
        raise ConfigError(f"--crop-size: must be at least 8, got {args.crop_size}")
    summary = evaluate.run_evaluation(
        checkpoint=args.checkpoint,
        data_dir=args.data,
        out_dir=args.out,
        split=args.split,
        full_fov=args.full_fov,
        crop_size=args.crop_size,
        max_volumes=args.max_volumes,
        overwrite=args.overwrite,
        progress=True,
    )
    print(report.summary_table(summary))
    print(f"Report: {args.out / 'index.html'}")
    return 0
