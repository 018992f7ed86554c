"""The demo: phantom data -> training -> evaluation -> upsampling -> report.

Each stage leaves its result in a sub-folder of the demo folder and is skipped
when that result is already there, so a second `make demo` finishes in
seconds and an interrupted one continues where it stopped (training resumes
from its last checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
import time

from jaxsr.errors import UserError

log = logging.getLogger(__name__)

MARKER = ".jaxsr-demo"
DEMO_PATIENTS = 24
DEMO_SEED = 2021
QUICK_PATIENTS = 8
# Named configs (jaxsr.configs), so the demo runs from any folder with a plain install.
DEMO_CONFIG = "phantom_demo"
QUICK_CONFIG = "tiny"


@dataclasses.dataclass
class DemoResult:
    out_dir: pathlib.Path
    data_dir: pathlib.Path
    workdir: pathlib.Path
    report_dir: pathlib.Path
    upsampled: pathlib.Path
    summary: dict
    summary_text: str
    seconds: dict


def prepare_out_dir(out: pathlib.Path, fresh: bool) -> None:
    """Creates the demo folder; only ever deletes a folder an earlier demo made."""
    marker = out / MARKER
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise UserError(f"{out}: exists and was not made by `jaxsr demo`; choose another --out")
    if fresh and marker.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by jaxsr demo; `jaxsr demo --fresh` may delete this folder\n")


def run_demo(
    out: pathlib.Path,
    *,
    fresh: bool = False,
    quick: bool = False,
    config: str | pathlib.Path | None = None,
    overrides: list[str] | None = None,
) -> DemoResult:
    """Runs (or finishes) the demo in `out`.

    `quick`: a small phantom and the `tiny` config, to check the plumbing in
    about a minute. `config`: a config name or .py file instead of the demo's
    (`phantom_demo`, or `tiny` when quick); `overrides`: `--config.KEY=VALUE` items.
    """
    from jaxsr import config as config_lib
    from jaxsr.data import datasets, phantom

    # A bad config name or override fails here, before anything is written.
    train_config = config_lib.load_config(config or (QUICK_CONFIG if quick else DEMO_CONFIG), list(overrides or ()))
    config_lib.validate(train_config)
    out = pathlib.Path(out)
    prepare_out_dir(out, fresh)
    seconds = {}

    t0 = time.perf_counter()
    data_dir = out / "phantom"
    if not (data_dir / "phantom.json").exists():
        if data_dir.exists():
            shutil.rmtree(data_dir)
        log.info("writing the phantom dataset to %s", data_dir)
        if quick:
            # Few short cines: the plumbing end to end in about a minute.
            spec = phantom.PhantomSpec(frames=(3, 4), matrix=(96, 100))
            phantom.write_phantom_dataset(data_dir, QUICK_PATIENTS, DEMO_SEED, spec=spec)
        else:
            phantom.write_phantom_dataset(data_dir, DEMO_PATIENTS, DEMO_SEED)
    seconds["phantom"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    workdir = out / "train"
    _train(train_config, workdir, data_dir)
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report_dir = out / "report"
    summary = _evaluate(workdir, data_dir, report_dir, quick=quick)
    seconds["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    test_volumes = datasets.volumes_for_split(data_dir, "test")
    upsampled = _upsample(workdir, test_volumes[0], out / "upsampled")
    seconds["upsample"] = time.perf_counter() - t0

    (out / "timings.json").write_text(json.dumps(seconds, indent=2))
    text = _summary_text(out, data_dir, workdir, report_dir, upsampled, summary, seconds)
    return DemoResult(out, data_dir, workdir, report_dir, upsampled, summary, text, seconds)


def _train(config, workdir: pathlib.Path, data_dir: pathlib.Path) -> None:
    from jaxsr.train import loop

    loop.train(config, workdir, data_dir)


def _evaluate(workdir: pathlib.Path, data_dir: pathlib.Path, report_dir: pathlib.Path, *, quick: bool) -> dict:
    from jaxsr import evaluate

    summary_path = report_dir / "summary.json"
    if summary_path.exists() and summary_path.stat().st_mtime >= _latest_checkpoint_mtime(workdir):
        return json.loads(summary_path.read_text())
    evaluate.run_evaluation(checkpoint=workdir, data_dir=data_dir, out_dir=report_dir, split="test", overwrite=True)
    return json.loads(summary_path.read_text())


def _latest_checkpoint_mtime(workdir: pathlib.Path) -> float:
    times = [p.stat().st_mtime for p in workdir.rglob("*") if p.is_file()]
    return max(times, default=0.0)


def _upsample(workdir: pathlib.Path, source: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    from jaxsr import interpolate, reprocess, upsample

    out_dir.mkdir(parents=True, exist_ok=True)
    name = source.name.replace(".nii.gz", "").replace(".nii", "")
    target = out_dir / f"{name}_x2.nii.gz"
    if target.exists() and target.stat().st_mtime >= _latest_checkpoint_mtime(workdir):
        return target
    interpolator, config = interpolate.load_interpolator(workdir)
    settings = upsample.UpsampleSettings.with_recipe(config, factor=2, checkpoint=workdir)
    reprocess.upsample_file(interpolator, config, source, target, settings, overwrite=True)
    return target


def _summary_text(out, data_dir, workdir, report_dir, upsampled, summary, seconds) -> str:
    from jaxsr import report

    lines = [
        "",
        "jaxsr demo finished in %.0f s (%s)." % (sum(seconds.values()), ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())),
        f"  phantom dataset : {data_dir}",
        f"  training run    : {workdir}  (TensorBoard: tensorboard --logdir {workdir})",
        f"  report          : {report_dir / 'index.html'}",
        f"  upsampled x2    : {upsampled} (+ .json sidecar)",
        "",
        report.summary_table(summary),
    ]
    return "\n".join(lines)
