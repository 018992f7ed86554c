"""The `jaxsr` command: parse arguments and call one function per subcommand.

Each subcommand lives in jaxsr/commands/<name>.py with `register(subparsers)`
and `run(args) -> int`. User errors (jaxsr.errors.UserError) print one line and
exit non-zero (2 for usage and configuration errors); `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import jaxsr
from jaxsr import host_memory
from jaxsr.errors import UserError

COMMANDS = ("phantom", "train", "upsample", "reprocess", "status", "evaluate", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxsr",
        description="Through-plane super-resolution of anisotropic cine MRI by autoencoder latent interpolation.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("--version", action="version", version=f"jaxsr {jaxsr.version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"jaxsr.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"jaxsr.commands.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    host_memory.keep_freed_memory()  # before jax and TensorFlow start their threads (host_memory's docstring)
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug works before or after the subcommand.
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.debug = debug
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.debug:
        # TensorFlow and absl are loud at start-up; users need none of it.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        for name in ("tensorflow", "jax._src.xla_bridge"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Orbax reports routine choices (read-only managers, ...) as absl warnings.
        for name in ("absl", "orbax"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if args.debug:
            raise
        print(f"jaxsr {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"jaxsr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
