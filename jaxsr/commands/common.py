"""What several subcommands share: registering from the module docstring, number types, model arguments."""

from __future__ import annotations

import argparse
import inspect
import pathlib
from typing import Callable

from jaxsr.mixes import DEFAULT_MIX, MIXES, TTA_CHOICES

# jaxsr.interpolate.DEFAULT_BATCH_SIZE (a test keeps them equal): importing jax here would
# make every `jaxsr --help` wait two seconds.
BATCH_SIZE = 64


def add_command(subparsers, doc: str, run: Callable[[argparse.Namespace], int], **defaults) -> argparse.ArgumentParser:
    """A subcommand whose help and description are its module's docstring.

    The docstring's first line reads "`jaxsr NAME ...`: one-line help."; the
    paragraphs after it are the `--help` description. Writing them once, as
    the module's documentation, keeps the two from drifting apart.
    """
    first, _, rest = inspect.cleandoc(doc).partition("\n")
    usage, _, help_text = first.partition(": ")
    name = usage.strip("`").split()[1]
    parser = subparsers.add_parser(name, help=help_text.rstrip("."), description=rest.strip() or None)
    parser.set_defaults(func=run, **defaults)
    return parser


def _positive(convert: Callable[[str], float], what: str) -> Callable[[str], float]:
    """An argparse type: `convert(text)`, refused unless finite and > 0."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return value

    return parse


positive_int = _positive(int, "integer")
positive_float = _positive(float, "number")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The checkpoint, the output grid and the output policy: `upsample` and `reprocess`."""
    parser.add_argument("--checkpoint", type=pathlib.Path, required=True, help="training workdir (its best checkpoint) or one checkpoint step folder")
    grid = parser.add_mutually_exclusive_group(required=True)
    grid.add_argument("--factor", type=positive_int, help="k: k-1 new slices between each pair of acquired slices")
    grid.add_argument("--spacing", type=positive_float, metavar="MM", help="target slice spacing in mm (output spans first to last acquired slice)")
    parser.add_argument("--replace-originals", action="store_true", help="use the model's reconstructions for the acquired slices too (as in the paper's evaluation); default keeps them bit-identical")
    parser.add_argument("--mix", choices=MIXES, default=None,
                        help="how a new slice is made from its neighbours: 'latent' decodes their blended latents (the "
                             "paper); 'residual' also adds back their reconstruction residuals, blended the same way, "
                             "keeping detail the decoder cannot reproduce (default: the checkpoint's recipe, "
                             f"config.inference.mix; {DEFAULT_MIX} for models trained before it)")
    parser.add_argument("--tta", type=int, choices=TTA_CHOICES, default=None,
                        help="8: average every new slice over the 8 in-plane rot90/flip symmetries (8x the model's "
                             "cost); 1: the model alone (default: the checkpoint's recipe, config.inference.tta)")
    parser.add_argument("--residual-weight", type=float, default=None, metavar="RHO",
                        help="with --mix residual: the share of the neighbours' residuals added back, in [0, 1] "
                             "(default: the checkpoint's recipe, config.inference.residual_weight)")
    parser.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=None,
                        help="move each new slice toward linear interpolation where the model reconstructs its "
                             "neighbours poorly (noisy scans); default: the checkpoint's recipe, "
                             "config.inference.fallback")
    parser.add_argument("--keep-dtype", action="store_true", help="write the input's data type (rounded and clipped) instead of float32")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help=f"slices per device batch; lower it if the device runs out of memory (default {BATCH_SIZE})")


def load_model(args: argparse.Namespace):
    """(interpolator, config) of --checkpoint, its recipe (config.inference) replaced by --mix,
    --residual-weight, --tta and --fallback where given."""
    from jaxsr.interpolate import load_interpolator

    return load_interpolator(args.checkpoint, batch_size=args.batch_size, mix=args.mix, tta=args.tta,
                             fallback=args.fallback, residual_weight=args.residual_weight)


def upsample_settings(args: argparse.Namespace, config):
    """The jaxsr.upsample.UpsampleSettings that `add_model_arguments`' flags ask for, with `config`'s recipe (load_model)."""
    from jaxsr.upsample import UpsampleSettings

    return UpsampleSettings.with_recipe(config, factor=args.factor, spacing=args.spacing,
                                        replace_originals=args.replace_originals, keep_dtype=args.keep_dtype,
                                        checkpoint=args.checkpoint)
