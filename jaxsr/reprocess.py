"""Upsampling outputs on disk: one file (`jaxsr upsample`) or a whole archive.

Archive reprocessing is a three-stage pipeline so the device does not wait for
disk: reader threads hash, load and preprocess volumes ahead of compute; the
main thread runs the model; writer threads restore the source grid, write the
outputs and append the manifest. Both queues are bounded, so memory stays flat
at any archive size.

Crash safety (kill -9 at any moment): each output is written to a hidden
temporary in its final folder and renamed into place; the JSON sidecar is
renamed before its NIfTI, so a NIfTI under its final name always has its
sidecar. The manifest record comes last and is the source of truth: anything
without a final 'ok' record (with the same input sha256 and the outputs
present) is redone on the next run, overwriting what may be there. Outputs are
deterministic (fixed gzip mtime, no time stamps in the sidecar), so a resumed
run produces the same bytes as an uninterrupted one. Temporaries left by a
killed run are removed at start, only those of the outputs this process owns,
so independent shards writing into one folder never delete each other's files.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import json
import logging
import os
import pathlib
import time
from typing import Any

import numpy as np

import jaxsr
from jaxsr.errors import UserError
from jaxsr.interpolate import LatentInterpolator, PreparedVolume, finish_volume, prepare_volume, upsample_volume
from jaxsr.io import archive
from jaxsr.io.atomic import TEMP_MARKER, check_output, write_bytes_atomic
from jaxsr.io.nifti import Volume, load, save

logger = logging.getLogger(__name__)

METHOD = "jaxsr-latent-interpolation"
# Test hook: seconds to sleep before each volume's compute, so that a test can
# kill a run deterministically between (and during) files.
SLEEP_ENV = "JAXSR_REPROCESS_TEST_SLEEP_S"


def sidecar_path(output: str | os.PathLike) -> pathlib.Path:
    output = pathlib.Path(output)
    return output.with_name(output.name + ".json")


def config_to_dict(config: Any) -> Any:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return dict(config) if config is not None else None


@dataclasses.dataclass(frozen=True)
class UpsampleSettings:
    """What an output is asked to be (`--factor` or `--spacing`, and the rest), recorded in its sidecar."""

    factor: int | None = None
    spacing: float | None = None
    replace_originals: bool = False
    keep_dtype: bool = False
    checkpoint: str | os.PathLike | None = None


def build_sidecar(
    source: Volume, result: Volume, *, source_sha256: str, config: Any, settings: UpsampleSettings, dtype: np.dtype
) -> dict[str, Any]:
    """What made this output, deterministically (no time stamps)."""
    return {
        "method": METHOD,
        "factor": settings.factor,
        "spacing_mm": settings.spacing,
        "replace_originals": bool(settings.replace_originals),
        "checkpoint": os.path.abspath(settings.checkpoint) if settings.checkpoint is not None else None,
        "config": config_to_dict(config),
        "source": {
            "path": os.path.abspath(source.path) if source.path else None,
            "sha256": source_sha256,
            "shape": list(source.data.shape),
            "spacing_mm": list(source.spacing),
        },
        "output": {
            "shape": list(result.data.shape),
            "spacing_mm": [float(s) for s in result.spacing],
            "dtype": np.dtype(dtype).name,
        },
        "jaxsr_version": jaxsr.version(),
    }


def output_dtype(volume: Volume, keep_dtype: bool) -> np.dtype:
    return np.dtype(volume.header.get_data_dtype()) if keep_dtype else np.dtype(np.float32)


def write_result(result: Volume, output: str | os.PathLike, sidecar: dict[str, Any], *, dtype: np.dtype, overwrite: bool) -> None:
    """Sidecar first, then the NIfTI, each atomically (see the module docstring)."""
    output = check_output(output, overwrite=overwrite)
    text = json.dumps(sidecar, indent=2, sort_keys=True, default=str) + "\n"
    side = sidecar_path(output)
    had_sidecar = side.exists()
    write_bytes_atomic(side, text.encode(), overwrite=True)
    try:
        save(result, output, overwrite=overwrite, dtype=dtype)
    except BaseException:
        # A sidecar with no volume would describe nothing (disk full, say): take back ours.
        if not had_sidecar:
            side.unlink(missing_ok=True)
        raise


def save_upsampled(
    source: Volume, result: Volume, output: pathlib.Path, *, source_sha256: str, config: Any,
    settings: UpsampleSettings, overwrite: bool,
) -> None:  # fmt: skip
    """The output NIfTI in the asked dtype, with the sidecar that says how it was made."""
    dtype = output_dtype(source, settings.keep_dtype)
    sidecar = build_sidecar(source, result, source_sha256=source_sha256, config=config, settings=settings, dtype=dtype)
    write_result(result, output, sidecar, dtype=dtype, overwrite=overwrite)


# ----------------------------------------------------------------------------
# Archive reprocessing


@dataclasses.dataclass
class Summary:
    ok: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    compute_seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.ok) + len(self.skipped) + len(self.failed)

    def text(self) -> str:
        lines = [
            f"{len(self.ok)} upsampled, {len(self.skipped)} already done, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s (device compute {self.compute_seconds:.1f} s)"
        ]
        lines += [f"  failed: {name}: {error}" for name, error in self.failed]
        return "\n".join(lines)


@dataclasses.dataclass
class _Loaded:
    rel: str
    sha256: str
    prepared: PreparedVolume
    started: float


@dataclasses.dataclass
class _Skipped:
    rel: str


@dataclasses.dataclass
class _Failed:
    rel: str
    sha256: str | None
    error: str
    started: float


def one_line(error: BaseException) -> str:
    """A one-line description; UserError messages already name the file."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, UserError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def my_files(files: list[pathlib.Path], shard: tuple[int, int] | None = None) -> list[pathlib.Path]:
    """This job's share: --shard I/N first, then this host's share of that."""
    import jax

    if shard is not None:
        files = archive.take_shard(files, *shard)
    return archive.take_shard(files, jax.process_index(), jax.process_count())


def remove_own_temporaries(outputs: list[pathlib.Path]) -> int:
    """Deletes temporaries of a killed earlier run, for these outputs only."""
    by_folder: dict[pathlib.Path, set[str]] = collections.defaultdict(set)
    for out in outputs:
        by_folder[out.parent].update({out.name, sidecar_path(out).name})
    removed = 0
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for path in folder.glob(f".*{TEMP_MARKER}*"):
            base = path.name[1:].split(TEMP_MARKER, 1)[0]
            if base in names and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def reprocess_archive(
    interpolator: LatentInterpolator,
    config: Any,
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: UpsampleSettings,
    *,
    pattern: str | None = None,
    shard: tuple[int, int] | None = None,
    workers: int = 4,
    progress: bool = True,
) -> Summary:
    """Upsamples every NIfTI under `in_dir` into the mirrored path under `out_dir`.

    Resumable through OUT_DIR/manifest.jsonl; never stops on a bad file.
    `interpolator`: see `jaxsr.interpolate.interpolator_for`.
    """
    start = time.perf_counter()
    in_dir, out_dir = pathlib.Path(in_dir), pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = my_files(archive.find_volumes(in_dir, pattern, exclude=out_dir), shard)
    outputs = {rel.as_posix(): out_dir / rel for rel in files}
    if removed := remove_own_temporaries(list(outputs.values())):
        logger.info("removed %d temporary file(s) left by an interrupted run", removed)
    manifest = archive.Manifest(out_dir / archive.MANIFEST_NAME)
    latest = manifest.latest()
    sleep_s = float(os.environ.get(SLEEP_ENV, "0") or 0)
    summary = Summary()
    workers = max(1, int(workers))

    def read(rel: pathlib.Path):
        key, t0, sha = rel.as_posix(), time.perf_counter(), None
        try:
            sha = archive.sha256_file(in_dir / rel)
            out = outputs[key]
            if archive.is_done(latest.get(key), sha, out, [sidecar_path(out)]):
                return _Skipped(key)
            volume = load(in_dir / rel)
            return _Loaded(key, sha, prepare_volume(volume, config, factor=settings.factor, spacing=settings.spacing), t0)
        except Exception as e:  # a bad file must not stop the archive
            return _Failed(key, sha, one_line(e), t0)

    def record_failure(failed: _Failed) -> None:
        seconds = time.perf_counter() - failed.started
        manifest.append(archive.Record(failed.rel, failed.sha256, failed.rel, "failed", round(seconds, 3), failed.error))
        summary.failed.append((failed.rel, failed.error))
        logger.warning("failed: %s", failed.error)

    def write(loaded: _Loaded, interpolated: np.ndarray) -> None:
        try:
            result = finish_volume(loaded.prepared, interpolated, replace_originals=settings.replace_originals)
            out = outputs[loaded.rel]
            out.parent.mkdir(parents=True, exist_ok=True)
            save_upsampled(loaded.prepared.volume, result, out, source_sha256=loaded.sha256, config=config,
                           settings=settings, overwrite=True)
        except Exception as e:
            record_failure(_Failed(loaded.rel, loaded.sha256, one_line(e), loaded.started))
            return
        seconds = time.perf_counter() - loaded.started
        manifest.append(archive.Record(loaded.rel, loaded.sha256, loaded.rel, "ok", round(seconds, 3), None))
        summary.ok.append(loaded.rel)

    from tqdm import tqdm

    bar = tqdm(total=len(files), unit="vol", disable=not progress, dynamic_ncols=True)
    readers = cf.ThreadPoolExecutor(workers, thread_name_prefix="jaxsr-read")
    writers = cf.ThreadPoolExecutor(workers, thread_name_prefix="jaxsr-write")
    ahead = 2 * workers  # bound on volumes in memory on either side of the device
    pending_reads: collections.deque = collections.deque()
    pending_writes: collections.deque = collections.deque()
    queue = iter(files)
    try:

        def refill() -> None:
            while len(pending_reads) < ahead:
                rel = next(queue, None)
                if rel is None:
                    return
                pending_reads.append(readers.submit(read, rel))

        def drain_writes(limit: int) -> None:
            while len(pending_writes) > limit:
                pending_writes.popleft().result()
                bar.update(1)

        refill()
        while pending_reads:
            item = pending_reads.popleft().result()
            refill()
            if isinstance(item, _Skipped):
                summary.skipped.append(item.rel)
                bar.update(1)
                continue
            if isinstance(item, _Failed):
                record_failure(item)
                bar.update(1)
                continue
            if sleep_s:
                time.sleep(sleep_s)
            t0 = time.perf_counter()
            try:
                interpolated = interpolator.interpolate_stack(
                    item.prepared.stack, item.prepared.positions, keep_originals=not settings.replace_originals
                )
            except Exception as e:  # e.g. out of device memory on one huge volume
                record_failure(_Failed(item.rel, item.sha256, one_line(e), item.started))
                bar.update(1)
                continue
            summary.compute_seconds += time.perf_counter() - t0
            pending_writes.append(writers.submit(write, item, interpolated))
            drain_writes(ahead)
        drain_writes(0)
    finally:
        bar.close()
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True)
    summary.seconds = time.perf_counter() - start
    return summary


def upsample_file(interpolator: LatentInterpolator, config: Any, source: str | os.PathLike, output: str | os.PathLike,
                  settings: UpsampleSettings, *, overwrite: bool = False) -> Volume:
    """`jaxsr upsample` as a function: one file in, one NIfTI and its sidecar out."""
    output = check_output(output, overwrite=overwrite)
    volume = load(source)  # VolumeError for anything unreadable, before hashing
    sha = archive.sha256_file(source)
    result = upsample_volume(interpolator, config, volume, factor=settings.factor, spacing=settings.spacing,
                             replace_originals=settings.replace_originals)
    save_upsampled(volume, result, output, source_sha256=sha, config=config, settings=settings, overwrite=overwrite)
    return result
