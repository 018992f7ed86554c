"""`jaxsr demo [--out DIR] [--fresh] [--quick]`: train, upsample and evaluate on the synthetic cine phantom.

Writes a phantom dataset, trains the phantom_demo config, evaluates on the held-out
phantom patients against linear, B-spline and Lanczos interpolation, upsamples one
held-out 4D volume x2 and writes an HTML report. Reuses what an earlier run left
in OUT unless --fresh.
"""

from __future__ import annotations

import argparse
import pathlib

from jaxsr.commands import common


def register(subparsers) -> None:
    parser = common.add_command(subparsers, __doc__, run, accepts_extra=True)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("demo_output"), help="output folder (default: demo_output)")
    parser.add_argument("--fresh", action="store_true", help="discard an earlier demo's results in OUT and start over")
    parser.add_argument("--quick", action="store_true", help="a small phantom and the tiny config: checks the plumbing in about a minute")
    parser.add_argument("--config", default=None, help="training config: a name (see `jaxsr train --help`) or a .py file (default: phantom_demo, or tiny with --quick)")


def run(args: argparse.Namespace) -> int:
    from jaxsr import demo

    result = demo.run_demo(args.out, fresh=args.fresh, quick=args.quick, config=args.config, overrides=args.extra)
    print(result.summary_text)
    return 0
