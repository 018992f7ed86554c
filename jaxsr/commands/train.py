"""`jaxsr train --config NAME|FILE.py --workdir DIR --data DIR [--split all-train] [--config.KEY=VALUE ...]`: train the autoencoder (resumes when WORKDIR has a checkpoint).

Trains on the in-plane slices of DATA (an ACDC tree or a folder of NIfTI volumes).
--split all-train fits the scans one means to upsample: every volume trains and a
fixed subset of them also validates (in-sample); then `jaxsr reprocess` with the checkpoint.
Override any config value with --config.KEY=VALUE, e.g. --config.train.steps=200.
SIGTERM/SIGINT save a checkpoint and exit; the same command resumes.
"""

from __future__ import annotations

import argparse
import pathlib

from jaxsr.commands import common


def register(subparsers) -> None:
    from jaxsr import config as config_lib
    from jaxsr.data.split_kinds import ALL_TRAIN, HELD_OUT, SPLIT_KINDS
    from jaxsr.progress import LOG_EVERY_S

    parser = common.add_command(subparsers, __doc__, run, accepts_extra=True)
    parser.add_argument("--config", required=True, help=f"a named config ({', '.join(config_lib.named_configs())}) or a .py file with get_config()")
    parser.add_argument("--workdir", required=True, type=pathlib.Path, help="checkpoints, metrics and the resolved config go here")
    parser.add_argument("--data", required=True, type=pathlib.Path, help="ACDC folder or a folder of .nii/.nii.gz volumes")
    parser.add_argument("--split", choices=SPLIT_KINDS, default=None,
                        help=f"a new run's split: {HELD_OUT} (train/validation/test, the default) or {ALL_TRAIN} (every volume "
                             "trains, an in-sample subset validates); a resumed run keeps its workdir's split")
    parser.add_argument("--no-progress", action="store_true", help=f"no progress (a bar on a terminal, else a line every {LOG_EVERY_S:g} s)")


def run(args: argparse.Namespace) -> int:
    from jaxsr import config as config_lib
    from jaxsr import parallel
    from jaxsr.errors import ConfigError
    from jaxsr.train import loop

    bad = [a for a in args.extra if not a.startswith("--config.")]
    if bad:
        raise ConfigError(f"unrecognized arguments: {' '.join(bad)}")
    parallel.maybe_initialize_distributed()
    config = config_lib.load_config(args.config, args.extra)
    try:
        result = loop.train(config, args.workdir, args.data, show_progress=not args.no_progress, split_kind=args.split)
    except loop.Preempted:
        return 143
    val = result["val"]
    if val:
        from jaxsr.data import datasets
        from jaxsr.data.split_kinds import ALL_TRAIN

        split_file = args.workdir / loop.SPLIT_FILE
        in_sample = split_file.exists() and datasets.read_split(split_file).get("kind") == ALL_TRAIN
        print(
            f"jaxsr train: done; {'in-sample ' if in_sample else ''}validation reconstruction PSNR {val['recon_psnr']:.2f} dB"
            + (f", interpolation PSNR {val['interp_psnr']:.2f} dB" if "interp_psnr" in val else "")
            + f"; checkpoints in {args.workdir}"
        )
    return 0
