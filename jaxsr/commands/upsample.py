"""`jaxsr upsample`: upsample one thick-slice volume (3D or 4D NIfTI, or a DICOM series folder) through-plane.

Encodes every acquired slice once, decodes mixed latents for the new slices
(with --mix residual, plus the neighbours' reconstruction residuals) and
writes OUT with the resliced affine (acquired slice i at output index i*k,
same world position) and a JSON sidecar OUT.json; --confidence MAP also
writes where the model is unsure of its new slices (jaxsr.fallback).
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
    parser.add_argument("--confidence", type=pathlib.Path, default=None, metavar="MAP",
                        help="also write MAP (.nii or .nii.gz, OUT's grid): per voxel the weight the fallback gives "
                             "linear interpolation, 0 where the model reconstructs the neighbouring acquired slices "
                             "exactly, towards 1 where it cannot (whether --fallback is on or not)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT (and MAP) if they exist")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxsr.io.atomic import check_output
    from jaxsr.io.nifti import is_nifti_path, save
    from jaxsr.io.volumes import load_volume
    from jaxsr.reprocess import upsample_file
    from jaxsr.upsample import confidence_volume

    outputs = [args.output] + ([args.confidence] if args.confidence is not None else [])
    for path in outputs:
        if not is_nifti_path(path):
            raise ConfigError(f"{path}: output name must end in .nii or .nii.gz")
    if args.confidence is not None and args.confidence.resolve() == args.output.resolve():
        raise ConfigError(f"{args.confidence}: --confidence must name another file than OUT")
    # Refuse bad input before the (slow) checkpoint load: a missing, unreadable or malformed IN.
    if not args.input.exists():
        raise UserError(f"{args.input}: no such file or folder")
    for path in outputs:
        check_output(path, overwrite=args.overwrite)
    volume = load_volume(args.input)
    interpolator, config = common.load_model(args)
    settings = common.upsample_settings(args, config)
    confidence = confidence_volume(interpolator, config, volume, settings) if args.confidence is not None else None
    result = upsample_file(interpolator, config, args.input, args.output, settings, overwrite=args.overwrite,
                           volume=volume)
    spacing = ", ".join(f"{s:.3g}" for s in result.spacing)
    print(f"wrote {args.output}: shape {tuple(result.data.shape)}, spacing ({spacing}) mm")
    if confidence is not None:
        save(confidence, args.confidence, overwrite=args.overwrite)
        print(f"wrote {args.confidence}: the fallback's weight of linear interpolation, median "
              f"{float(np.median(confidence.data)):.3g} over the output, max {float(confidence.data.max()):.3g}")
    return 0
