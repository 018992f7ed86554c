"""`jaxsr upsample IN OUT --checkpoint DIR (--factor K | --spacing MM)`: one volume."""

from __future__ import annotations

import argparse
import logging
import pathlib
from typing import Any

from jaxsr.errors import ConfigError

logger = logging.getLogger(__name__)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by `upsample` and `reprocess`."""
    parser.add_argument("--checkpoint", type=pathlib.Path, required=True, help="training workdir (its best checkpoint) or one checkpoint step folder")
    grid = parser.add_mutually_exclusive_group(required=True)
    grid.add_argument("--factor", type=positive_int, help="k: k-1 new slices between each pair of acquired slices")
    grid.add_argument("--spacing", type=positive_float, metavar="MM", help="target slice spacing in mm (output spans first to last acquired slice)")
    parser.add_argument("--replace-originals", action="store_true", help="use the model's reconstructions for the acquired slices too (as in the paper's evaluation); default keeps them bit-identical")
    parser.add_argument("--keep-dtype", action="store_true", help="write the input's data type (rounded and clipped) instead of float32")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="slices per device batch; lower it if the device runs out of memory (default 64)")


def load_model(checkpoint: pathlib.Path) -> tuple[Any, Any]:
    """(model in eval mode, config) from a training workdir or checkpoint."""
    from jaxsr.train.checkpoint import load_for_inference

    return load_for_inference(checkpoint)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "upsample",
        help="upsample one thick-slice NIfTI volume (3D or 4D) through-plane",
        description=(
            "Encodes every acquired slice once, decodes mixed latents for the new slices and writes "
            "OUT with the resliced affine (acquired slice i at output index i*k, same world position) "
            "and a JSON sidecar OUT.json."
        ),
    )
    parser.add_argument("input", type=pathlib.Path, metavar="IN", help="input NIfTI (.nii or .nii.gz)")
    parser.add_argument("output", type=pathlib.Path, metavar="OUT", help="output NIfTI (.nii or .nii.gz)")
    add_model_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxsr.io.nifti import is_nifti_path
    from jaxsr.reprocess import upsample_file
    from jaxsr.errors import UserError

    if not is_nifti_path(args.output):
        raise ConfigError(f"{args.output}: output name must end in .nii or .nii.gz")
    # Refuse before the (slow) checkpoint load.
    if not args.input.is_file():
        raise UserError(f"{args.input}: no such file")
    if args.output.exists() and not args.overwrite:
        raise UserError(f"{args.output}: output exists (pass --overwrite to replace it)")
    model, config = load_model(args.checkpoint)
    result = upsample_file(
        model, config, args.input, args.output,
        factor=args.factor, spacing=args.spacing, checkpoint=args.checkpoint,
        replace_originals=args.replace_originals, keep_dtype=args.keep_dtype,
        overwrite=args.overwrite, batch_size=args.batch_size,
    )  # fmt: skip
    spacing = ", ".join(f"{s:.3g}" for s in result.spacing)
    print(f"wrote {args.output}: shape {tuple(result.data.shape)}, spacing ({spacing}) mm")
    return 0
