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
from jaxsr.interpolate import LatentInterpolator, upsample_volume
from jaxsr.io import archive
from jaxsr.io.atomic import TEMP_MARKER, atomic_output, check_output, write_bytes_atomic
from jaxsr.io.nifti import Volume, encode, load
from jaxsr.mixes import DEFAULT_MIX

logger = logging.getLogger(__name__)

METHOD = "jaxsr-latent-interpolation"
# Test hooks: seconds to sleep before each volume's compute, and between writing
# an output NIfTI's temporary and renaming it, so that a test can kill a run
# between and during files, and in the middle of writes.
SLEEP_ENV = "JAXSR_REPROCESS_TEST_SLEEP_S"
WRITE_SLEEP_ENV = "JAXSR_REPROCESS_TEST_WRITE_SLEEP_S"


def sidecar_path(output: str | os.PathLike) -> pathlib.Path:
    output = pathlib.Path(output)
    return output.with_name(output.name + ".json")


def config_to_dict(config: Any) -> Any:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return dict(config) if config is not None else None


@dataclasses.dataclass(frozen=True)
class UpsampleSettings:
    """What an output is asked to be (`--factor` or `--spacing`, and the rest), recorded in its sidecar.

    preprocess: 'device' (jaxsr.device_pipeline) or 'scipy' (the host reference).
    mix: how new slices are made from the latents (jaxsr.mixes).
    """

    factor: int | None = None
    spacing: float | None = None
    replace_originals: bool = False
    keep_dtype: bool = False
    checkpoint: str | os.PathLike | None = None
    preprocess: str = "device"
    mix: str = DEFAULT_MIX


def build_sidecar(
    source: Volume, result: Volume, *, source_sha256: str, config: Any, settings: UpsampleSettings, dtype: np.dtype
) -> dict[str, Any]:
    """What made this output, deterministically (no time stamps)."""
    from jaxsr.config import target_spacing
    from jaxsr.data.preprocess import inplane_label

    return {
        "method": METHOD,
        "factor": settings.factor,
        "spacing_mm": settings.spacing,
        "replace_originals": bool(settings.replace_originals),
        "preprocess": settings.preprocess,
        "mix": settings.mix,
        "checkpoint": os.path.abspath(settings.checkpoint) if settings.checkpoint is not None else None,
        "config": config_to_dict(config),
        # The grid the model saw: "1.4 mm", or "native (1.5 x 1.5 mm)" (the source's own, not resampled).
        "model_inplane_spacing": inplane_label(target_spacing(config), source.spacing[:2]),
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


def write_result(output: str | os.PathLike, nifti: bytes, sidecar: dict[str, Any], *, overwrite: bool) -> None:
    """Sidecar first, then the NIfTI, each atomically (see the module docstring)."""
    output = check_output(output, overwrite=overwrite)
    text = json.dumps(sidecar, indent=2, sort_keys=True, default=str) + "\n"
    side = sidecar_path(output)
    had_sidecar = side.exists()
    write_bytes_atomic(side, text.encode(), overwrite=True)
    pause_s = float(os.environ.get(WRITE_SLEEP_ENV, "0") or 0)
    try:
        with atomic_output(output, overwrite=overwrite) as tmp:
            tmp.write_bytes(nifti)
            if pause_s:
                time.sleep(pause_s)
    except BaseException:
        # A sidecar with no volume would describe nothing (disk full, say): take back ours.
        if not had_sidecar:
            side.unlink(missing_ok=True)
        raise


def encode_upsampled(source: Volume, result: Volume, output: pathlib.Path, *, source_sha256: str, config: Any,
                     settings: UpsampleSettings) -> tuple[bytes, dict[str, Any]]:
    """The output NIfTI's bytes in the asked dtype, and the sidecar that says how it was made."""
    dtype = output_dtype(source, settings.keep_dtype)
    sidecar = build_sidecar(source, result, source_sha256=source_sha256, config=config, settings=settings, dtype=dtype)
    return encode(result, output, dtype), sidecar


def upsample_file(interpolator: LatentInterpolator, config: Any, source: str | os.PathLike, output: str | os.PathLike,
                  settings: UpsampleSettings, *, overwrite: bool = False, volume: Volume | None = None) -> Volume:
    """`jaxsr upsample` as a function: one file in, one NIfTI and its sidecar out.

    volume: `source` already loaded (the command reads it before the slow model load).
    """
    output = check_output(output, overwrite=overwrite)
    if volume is None:
        volume = load(source)  # VolumeError for anything unreadable, before hashing
    sha = archive.sha256_file(source)
    result = upsample_volume(interpolator, config, volume, factor=settings.factor, spacing=settings.spacing,
                             replace_originals=settings.replace_originals, preprocess=settings.preprocess,
                             mix=settings.mix)
    nifti, sidecar = encode_upsampled(volume, result, output, source_sha256=sha, config=config, settings=settings)
    write_result(output, nifti, sidecar, overwrite=overwrite)
    return result


# ----------------------------------------------------------------------------
# Archive reprocessing


@dataclasses.dataclass
class Summary:
    ok: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    device_seconds: float = 0.0
    host_seconds: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(archive.HOST_STAGES, 0.0))
    compiled_programs: int = 0

    @property
    def total(self) -> int:
        return len(self.ok) + len(self.skipped) + len(self.failed)

    @property
    def device_busy(self) -> float:
        """Fraction of the wall time the device was working on a volume."""
        return self.device_seconds / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        done = len(self.ok) + len(self.failed)
        lines = [
            f"{len(self.ok)} upsampled, {len(self.skipped)} already done, {len(self.failed)} failed "
            f"in {self.seconds:.1f} s (device busy {100 * self.device_busy:.0f}%, {self.device_seconds:.1f} s)"
        ]
        if done:
            per = ", ".join(f"{k[:-2]} {v / done:.3f} s" for k, v in self.host_seconds.items())
            lines.append(f"  per volume: device {self.device_seconds / done:.3f} s; host {per}; "
                         f"{self.compiled_programs} programs compiled")
        lines += [f"  failed: {name}: {error}" for name, error in self.failed]
        return "\n".join(lines)


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
    """Upsamples every NIfTI under `in_dir` into the mirrored path under `out_dir`.

    Resumable through the manifests under OUT_DIR/.jaxsr (this process appends
    to its own); never stops on a bad file. `interpolator`: see
    `jaxsr.interpolate.interpolator_for`.
    """
    from jaxsr import device_pipeline
    from jaxsr.reprocess_pipeline import ArchiveRun, stages_for

    start = time.perf_counter()
    compiled_before = device_pipeline.compiled_programs()
    in_dir, out_dir = pathlib.Path(in_dir), pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = my_files(archive.find_volumes(in_dir, pattern, exclude=out_dir), shard)
    outputs = {rel.as_posix(): out_dir / rel for rel in files}
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
