"""`jaxsr demo`: the whole method on the built-in phantom, end to end."""

from __future__ import annotations

import argparse
import pathlib


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train, upsample and evaluate on the synthetic cine phantom",
        description=(
            "Writes a phantom dataset, trains configs/phantom_demo.py, evaluates on the held-out "
            "phantom patients against linear, B-spline and Lanczos interpolation, upsamples one "
            "held-out 4D volume x2 and writes an HTML report. Reuses what an earlier run left "
            "in OUT unless --fresh."
        ),
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("demo_output"), help="output folder (default: demo_output)")
    parser.add_argument("--fresh", action="store_true", help="discard an earlier demo's results in OUT and start over")
    parser.add_argument("--quick", action="store_true", help="a tiny model and few steps: checks the plumbing in about a minute")
    parser.add_argument("--config", type=pathlib.Path, default=None, help="training config (default: configs/phantom_demo.py)")
    parser.set_defaults(func=run, accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    from jaxsr import demo

    result = demo.run_demo(args.out, fresh=args.fresh, quick=args.quick, config_path=args.config, overrides=args.extra)
    print(result.summary_text)
    return 0
