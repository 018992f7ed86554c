"""Upsampling outputs on disk: one file (`jaxsr upsample`) or a whole archive.

Archive reprocessing keeps the device busy and the host out of its way. Four
stages on their own threads, joined by bounded queues so that memory stays
flat at any archive size:

- readers (`workers` threads): hash the input, decode the NIfTI and copy it
  into the device layout (with preprocess='scipy': preprocess it on the host);
- the main thread: dispatches each volume's device programs without waiting
  for them (jaxsr.device_pipeline);
- a watcher thread: waits for each volume's programs in order and times them;
- writers (`workers` threads): copy the result back, encode and gzip the
  NIfTI, write it and its sidecar, append the manifest line.

At most two volumes are on the device (one running, one queued behind it) and
at most 2 x workers on either side of it. Per volume the manifest line records
host seconds (read: hashing the file; decode: parsing it and the copy into the
device layout; encode: the copy back, NIfTI serialisation and gzip; write:
both files, fsynced and renamed) and device seconds: from when the device
could start on the volume (dispatched, and the one before it done) until its
results were ready, as the watcher saw them. Their sum over the wall time is
the run's device-busy fraction. A volume the device cannot hold (out of
memory in the whole-volume programs) is redone on the scipy path, which
streams the model in batches.

Crash safety (kill -9 at any moment): each output is written to a hidden
temporary in its final folder and renamed into place; the JSON sidecar is
renamed before its NIfTI, so a NIfTI under its final name always has its
sidecar. The manifest record comes last and is the source of truth: anything
without a final 'ok' record (with the same input sha256 and the outputs
present) is redone on the next run, overwriting what may be there. Outputs are
deterministic (gzip mtime 0, no time stamps in the sidecar), so a resumed run
produces the same bytes as an uninterrupted one. Temporaries left by a killed
run are removed at start, only those of the outputs this process owns, so
independent shards writing into one folder never delete each other's files.
Each process appends to its own manifest (jaxsr.io.archive), locked while it
runs.
"""

from __future__ import annotations

import collections
import logging
import os
import pathlib
import time
from typing import Any

from jaxsr import device_pipeline
from jaxsr.errors import UserError
from jaxsr.interpolate import LatentInterpolator
from jaxsr.io import archive
from jaxsr.io.atomic import TEMP_MARKER, check_output
from jaxsr.io.nifti import Volume
from jaxsr.io.volumes import input_sha256, load_volume, output_name
from jaxsr.outputs import encode_upsampled, sidecar_path, write_result
from jaxsr.reprocess_pipeline import ArchiveRun, Summary
from jaxsr.upsample import UpsampleSettings, stages_for, upsample_volume

logger = logging.getLogger(__name__)


def upsample_file(interpolator: LatentInterpolator, config: Any, source: str | os.PathLike, output: str | os.PathLike,
                  settings: UpsampleSettings, *, overwrite: bool = False, volume: Volume | None = None) -> Volume:
    """`jaxsr upsample` as a function: one NIfTI file or DICOM series folder in, one NIfTI and its sidecar out.

    volume: `source` already loaded (the command reads it before the slow model load).
    """
    output = check_output(output, overwrite=overwrite)
    if volume is None:
        volume = load_volume(source)  # VolumeError for anything unreadable, before hashing
    sha = input_sha256(source)
    result = upsample_volume(interpolator, config, volume, factor=settings.factor, spacing=settings.spacing,
                             replace_originals=settings.replace_originals, preprocess=settings.preprocess,
                             mix=settings.mix, fallback=settings.fallback, residual_weight=settings.residual_weight)
    nifti, sidecar = encode_upsampled(volume, result, output, source_sha256=sha, config=config, settings=settings)
    write_result(output, nifti, sidecar, overwrite=overwrite)
    return result


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


def own_manifest(out_dir: pathlib.Path, shard: tuple[int, int] | None) -> archive.Manifest:
    import jax

    name = archive.manifest_name(shard or (0, 1), (jax.process_index(), jax.process_count()))
    return archive.Manifest(out_dir / archive.STATE_DIR / name)


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
    """Upsamples every input under `in_dir` (NIfTI files, DICOM series folders) into the mirrored path under `out_dir`.

    A series folder a/b/series1 is written as a/b/series1.nii.gz (jaxsr.io.volumes.output_name).

    Resumable through the manifests under OUT_DIR/.jaxsr (this process appends
    to its own); never stops on a bad file. `interpolator`: see
    `jaxsr.interpolate.interpolator_for`.
    """
    start = time.perf_counter()
    compiled_before = device_pipeline.compiled_programs()
    in_dir, out_dir = pathlib.Path(in_dir), pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = my_files(archive.find_volumes(in_dir, pattern, exclude=out_dir), shard)
    outputs = {rel.as_posix(): out_dir / output_name(rel) for rel in files}
    if len(set(outputs.values())) < len(outputs):
        seen: dict[pathlib.Path, str] = {}
        for rel, out in outputs.items():
            if out in seen:
                raise UserError(f"{in_dir / rel}: its output {out} is also {in_dir / seen[out]}'s; rename one of them")
            seen[out] = rel
    stages = stages_for(interpolator, config, settings)
    with own_manifest(out_dir, shard).held() as manifest:
        if removed := remove_own_temporaries(list(outputs.values())):
            logger.info("removed %d temporary file(s) left by an interrupted run", removed)
        run = ArchiveRun(stages, config, in_dir, outputs, manifest, archive.latest_records(out_dir), max(1, int(workers)),
                         progress)
        summary = run.run([rel.as_posix() for rel in files])
    summary.seconds = time.perf_counter() - start
    summary.compiled_programs = device_pipeline.compiled_programs() - compiled_before
    return summary
