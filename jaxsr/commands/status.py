"""`jaxsr status OUT_DIR [--input IN_DIR] [--json]`: what a (sharded) reprocess run has done.

Merges every manifest under OUT_DIR (one per shard and host, and the older
OUT_DIR/manifest.jsonl) and reports the files done, those that failed with
their one-line reasons, and, against the NIfTI files under IN_DIR when given,
those still pending; with the wall time volumes were in flight and the
throughput. Exit code 0 when all are done, 1 when any failed, 3 when some are
pending. --json prints one object: done, failed and pending, each with a count
and the relative paths.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from jaxsr.commands import common


def register(subparsers) -> None:
    parser = common.add_command(subparsers, __doc__, run)
    parser.add_argument("output_dir", type=pathlib.Path, metavar="OUT_DIR")
    parser.add_argument("--input", type=pathlib.Path, default=None, metavar="IN_DIR", help="the run's input folder, to count pending files")
    parser.add_argument("--pattern", default=None, help="the run's --pattern, if it had one")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from jaxsr.status import archive_status

    status = archive_status(args.output_dir, args.input, args.pattern)
    print(json.dumps(status.to_json(), indent=2, sort_keys=True) if args.json else status.text())
    return status.exit_code
