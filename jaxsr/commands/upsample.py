"""`jaxsr upsample`: upsample one thick-slice volume (3D or 4D NIfTI, or a DICOM series folder) through-plane.

Encodes every acquired slice once, decodes mixed latents for the new slices
(with --mix residual, plus the neighbours' reconstruction residuals) and
writes OUT with the resliced affine (acquired slice i at output index i*k,
same world position) and a JSON sidecar OUT.json.
"""

from __future__ import annotations

import argparse
import pathlib

from jaxsr.commands import common
from jaxsr.errors import ConfigError, UserError


def register(subparsers) -> None:
    parser = common.add_command(subparsers, __doc__, run)
    parser.add_argument("input", type=pathlib.Path, metavar="IN",
                        help="input NIfTI (.nii or .nii.gz), or a folder holding one DICOM series")
    parser.add_argument("output", type=pathlib.Path, metavar="OUT", help="output NIfTI (.nii or .nii.gz)")
    common.add_model_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from jaxsr.io.nifti import is_nifti_path
    from jaxsr.io.volumes import load_volume
    from jaxsr.reprocess import upsample_file

    if not is_nifti_path(args.output):
        raise ConfigError(f"{args.output}: output name must end in .nii or .nii.gz")
    # Refuse bad input before the (slow) checkpoint load: a missing, unreadable or malformed IN.
    if not args.input.exists():
        raise UserError(f"{args.input}: no such file or folder")
    if args.output.exists() and not args.overwrite:
        raise UserError(f"{args.output}: output exists (pass --overwrite to replace it)")
    volume = load_volume(args.input)
    interpolator, config = common.load_model(args)
    result = upsample_file(interpolator, config, args.input, args.output, common.upsample_settings(args, config),
                           overwrite=args.overwrite, volume=volume)
    spacing = ", ".join(f"{s:.3g}" for s in result.spacing)
    print(f"wrote {args.output}: shape {tuple(result.data.shape)}, spacing ({spacing}) mm")
    return 0
