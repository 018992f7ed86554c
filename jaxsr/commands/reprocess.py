"""`jaxsr reprocess IN_DIR OUT_DIR ...`: upsample every NIfTI under a folder, resumably.

Mirrors IN_DIR under OUT_DIR with upsampled volumes. Each process keeps its own
manifest under OUT_DIR/.jaxsr, so a rerun (or a requeued job) skips what is
done and retries what failed; `jaxsr status OUT_DIR` merges them. Outputs are
written atomically; a bad file is recorded and the run goes on (exit code 1 if
anything failed). On several hosts each process takes its share of the files;
--shard I/N splits across independent jobs (launch/local_reprocess.sh, one per
GPU; launch/slurm_reprocess_array.sbatch, one per array task).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

from jaxsr.commands import common
from jaxsr.errors import UserError


def register(subparsers) -> None:
    parser = common.add_command(subparsers, __doc__, run)
    parser.add_argument("input_dir", type=pathlib.Path, metavar="IN_DIR")
    parser.add_argument("output_dir", type=pathlib.Path, metavar="OUT_DIR")
    common.add_model_arguments(parser)
    parser.add_argument("--pattern", default=None, help="fnmatch pattern on paths relative to IN_DIR, e.g. '*/*_4d.nii.gz'")
    parser.add_argument("--shard", default=None, metavar="I/N", help="process files i with i %% N == I (0-based)")
    parser.add_argument("--workers", type=common.positive_int, default=4, help="reader and writer threads each (default 4)")
    parser.add_argument("--preprocess", choices=("device", "scipy"), default="device",
                        help="in-plane resampling, scaling and restore as jitted programs next to the model (default), "
                             "or with scipy on the host (the reference)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or lines")


def run(args: argparse.Namespace) -> int:
    from jaxsr.io.archive import parse_shard
    from jaxsr.reprocess import reprocess_archive

    shard = parse_shard(args.shard) if args.shard else None
    if not args.input_dir.is_dir():
        raise UserError(f"{args.input_dir}: input folder does not exist")
    interpolator, config = common.load_model(args)
    settings = dataclasses.replace(common.upsample_settings(args, config), preprocess=args.preprocess)
    summary = reprocess_archive(
        interpolator, config, args.input_dir, args.output_dir, settings,
        pattern=args.pattern, shard=shard, workers=args.workers, progress=not args.no_progress,
    )  # fmt: skip
    print(summary.text(), file=sys.stderr if summary.failed else sys.stdout)
    return 1 if summary.failed else 0
