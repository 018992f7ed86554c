"""`jaxsr phantom`: write a synthetic beating-heart cine dataset in the ACDC layout.

Writes OUT_DIR/training/patientNNN/{Info.cfg, patientNNN_4d.nii.gz, ED and ES
frames} and OUT_DIR/phantom.json. Short-axis cine stacks with 6.5-10 mm slices
for training; the last ~12% of the patients (at least 2 from 6 patients on)
have 5 mm slices and form the test set. The same --seed gives byte-identical
files.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from jaxsr.commands import common


def register(subparsers) -> None:
    parser = common.add_command(subparsers, __doc__, run)
    parser.add_argument("out_dir", type=pathlib.Path, metavar="OUT_DIR", help="dataset folder (created)")
    parser.add_argument("--patients", type=int, default=24, help="number of patients (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a phantom dataset already in OUT_DIR")


def run(args: argparse.Namespace) -> int:
    from jaxsr.data import phantom

    start = time.perf_counter()
    manifest = phantom.write_phantom_dataset(args.out_dir, args.patients, args.seed, overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    tests = manifest["test_patients"]
    print(
        f"Wrote {manifest['n_patients']} phantom patients to {args.out_dir} in {seconds:.1f} s "
        f"({len(tests)} test patients with 5 mm slices: {', '.join(tests) or 'none'})."
    )
    return 0
