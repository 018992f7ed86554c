"""One entry point for every benchmark suite.

    python -m benchmarks.run --suite {train,input,upsample,reprocess,quality,real,all} [--quick] [--out FILE]

Prints a table (one line per figure: median and min..max over the timed
repeats, compile/first-call time apart) and writes JSON with the environment
(backend, device kind and count, versions) and every suite's settings and
figures. The same command runs on CPU, GPU and TPU over all local devices; see
benchmarks/README.md for how to read the numbers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
from typing import Any

SUITES = {
    "train": "benchmarks.suite_train",
    "input": "benchmarks.suite_input",
    "upsample": "benchmarks.suite_upsample",
    "reprocess": "benchmarks.suite_reprocess",
    "quality": "benchmarks.suite_quality",
    "real": "benchmarks.suite_real",
}
# Not part of `all`: it fetches real volumes from PyPI wheels into a cache and trains
# for tens of minutes on CPU; ask for it by name.
EXPLICIT_ONLY = ("real",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="append", choices=sorted(SUITES) + ["all"],
                        help="suite to run (repeatable); default all")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: every suite in seconds (a smoke run)")
    parser.add_argument("--out", default="benchmark_results.json", help="JSON results file ('' for none)")
    parser.add_argument("--checkpoint", default=None,
                        help="trained model for the quality suite (default: a briefly trained tiny model)")
    parser.add_argument("--data-dir", default=None,
                        help="ACDC tree or NIfTI folder for the quality/input suites (default: phantom)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (default 5, quick 3)")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma-separated train batch sizes (default: 8,32 on CPU, 16..512 on accelerators)")
    parser.add_argument("--infer-batch-sizes", default=None,
                        help="comma-separated inference batch sizes (default: 32 on CPU, 16..512 on accelerators)")
    parser.add_argument("--dtypes", default=None,
                        help="comma-separated compute dtypes (default: float32 on CPU, float32,bfloat16 on accelerators)")
    parser.add_argument("--configs", default=None, help="comma-separated config names or paths for the train suite")
    parser.add_argument("--peers", default=None, help="comma-separated peers to time: jax_twin,torch,torch_kept_memory (the default; the last on CPU only)")
    parser.add_argument("--no-peer", action="store_true", help="time jaxsr alone")
    parser.add_argument("--cpus", default=None, help="comma-separated CPU ids every worker is pinned to (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker (default: one per CPU)")
    parser.add_argument("--loop-steps", type=int, default=None,
                        help="steps of the `jaxsr train` run whose logged images/s the train suite reports (0: skip)")
    parser.add_argument("--protocols", default=None, help="real suite: SOURCE:AXIS:K,... (see python -m benchmarks.suite_real --help)")
    parser.add_argument("--steps", type=int, default=None, help="real suite: training steps (default: the config's)")
    parser.add_argument("--volume", default=None, help="real suite: a thin-slice NIfTI of your own, source 'file'")
    parser.add_argument("--cache-dir", default=None, help="real suite: where fetched volumes are kept")
    parser.add_argument("--workdir", default=None, help="real suite: keep each protocol's training run here")
    parser.add_argument("--strict", action="store_true", help="stop at the first failing suite")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.config_overrides = []
    return args


def selected(args: argparse.Namespace) -> list[str]:
    """In SUITES order: the train suite, whose workers need the chip, runs before any suite starts jax here."""
    names = args.suite or ["all"]
    return [name for name in SUITES if name in names or ("all" in names and name not in EXPLICIT_ONLY)]


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the selected suites; returns the whole result (also written to --out)."""
    args = parse_args(argv)
    from benchmarks import common

    result: dict[str, Any] = {
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "environment": common.environment(),
        "suites": {},
    }
    for name in selected(args):
        logging.getLogger(__name__).info("suite %s ...", name)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(SUITES[name])
            suite_result = module.run(args)
        except Exception as error:  # a suite whose code is missing or broken must not hide the others
            if args.strict:
                raise
            logging.getLogger(__name__).error("suite %s failed: %s", name, error)
            suite_result = {"skipped": f"{type(error).__name__}: {error}".splitlines()[0][:300],
                            "traceback": traceback.format_exc()}
        suite_result["wall_s"] = time.perf_counter() - t0
        result["suites"][name] = suite_result
        common.write_json(result, args.out or None)  # partial results survive a later crash
    result["environment"].update(common.device_facts())  # the parent's jax, started only now
    common.write_json(result, args.out or None)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    from benchmarks import table

    result = run(argv)
    env = result["environment"]
    print(f"{env['date']}  backend={env['backend']}  device={env['device_kind']} x{env['device_count']}  "
          f"jaxsr {env['versions']['jaxsr']}  jax {env['versions'].get('jax')}  flax {env['versions'].get('flax')}  "
          f"cpus={env['cpu_count']}")
    print(table.render(result["suites"]))
    if args.out:
        print(f"JSON: {args.out}")
    failed = [n for n, r in result["suites"].items() if "traceback" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
