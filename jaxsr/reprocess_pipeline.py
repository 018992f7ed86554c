"""The threads of one archive run: readers, the dispatching main thread, the device watcher, writers.

jaxsr.reprocess.reprocess_archive sets a run up (files, manifest, lock) and
its docstring says what each stage does and how the queues are bounded. A
volume goes through the same four calls of its `stages` on either path:
prepare (reader), start (main thread, must not wait for the device), wait
(watcher) and finish (writer).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import logging
import os
import queue
import threading
import time
from typing import Any

from jaxsr.errors import UserError
from jaxsr.interpolate import LatentInterpolator, finish_volume, prepare_volume
from jaxsr.io import archive
from jaxsr.io.nifti import Volume, load
from jaxsr.reprocess import (SLEEP_ENV, Summary, UpsampleSettings, encode_upsampled, one_line, sidecar_path,
                             write_result)

logger = logging.getLogger(__name__)


class DeviceStages:
    """The device path: plan and lay out on the host, everything else jitted (jaxsr.device_pipeline)."""

    def __init__(self, interpolator: LatentInterpolator, config: Any, settings: UpsampleSettings):
        from jaxsr import device_pipeline

        self.pipeline, self.interpolator, self.config, self.settings = device_pipeline, interpolator, config, settings

    def prepare(self, volume: Volume) -> Any:
        s = self.settings
        plan = self.pipeline.plan_volume(self.interpolator, self.config, volume, factor=s.factor, spacing=s.spacing,
                                         replace_originals=s.replace_originals, mix=s.mix)
        return plan, self.pipeline.host_layout(volume, plan)

    def start(self, prepared: Any) -> Any:
        return self.pipeline.dispatch(self.interpolator, *prepared)

    def wait(self, started: Any) -> None:
        import jax

        jax.block_until_ready(started.out)

    def finish(self, volume: Volume, prepared: Any, started: Any) -> Volume:
        return self.pipeline.collect(started, prepared[0], volume)


class ScipyStages:
    """The host reference path: scipy preprocessing and restore, the model streamed in batches."""

    def __init__(self, interpolator: LatentInterpolator, config: Any, settings: UpsampleSettings):
        self.interpolator, self.config, self.settings = interpolator, config, settings

    def prepare(self, volume: Volume) -> Any:
        return prepare_volume(volume, self.config, factor=self.settings.factor, spacing=self.settings.spacing)

    def start(self, prepared: Any) -> Any:
        return self.interpolator.interpolate_stack(prepared.stack, prepared.positions,
                                                   keep_originals=not self.settings.replace_originals,
                                                   mix=self.settings.mix)

    def wait(self, started: Any) -> None:
        pass  # interpolate_stack returned host arrays

    def finish(self, volume: Volume, prepared: Any, started: Any) -> Volume:
        return finish_volume(prepared, started, replace_originals=self.settings.replace_originals)


def stages_for(interpolator: LatentInterpolator, config: Any, settings: UpsampleSettings):
    if settings.preprocess == "device":
        return DeviceStages(interpolator, config, settings)
    if settings.preprocess == "scipy":
        return ScipyStages(interpolator, config, settings)
    raise UserError(f"preprocess must be 'device' or 'scipy', got {settings.preprocess!r}")


def is_out_of_memory(error: BaseException) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


@dataclasses.dataclass
class _Item:
    """One input on its way through the stages."""

    rel: str
    started: float
    sha256: str | None = None
    volume: Volume | None = None
    stages: Any = None
    prepared: Any = None
    on_device: Any = None
    dispatched: float = 0.0
    times: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: bool = False
    error: str | None = None


class ArchiveRun:
    """One reprocess_archive call's threads, queues and tallies."""

    def __init__(self, stages, config, in_dir, outputs, manifest, latest, workers, progress):
        self.stages, self.config, self.in_dir = stages, config, in_dir
        self.outputs, self.manifest, self.latest = outputs, manifest, latest
        # The device path falls back to the host path for a volume the device cannot hold.
        self.fallback = None if isinstance(stages, ScipyStages) else ScipyStages(
            stages.interpolator, config, dataclasses.replace(stages.settings, preprocess="scipy"))
        self.workers = workers
        self.summary = Summary()
        self.lock = threading.Lock()  # summary and progress, from every thread
        self.sleep_s = float(os.environ.get(SLEEP_ENV, "0") or 0)
        self.show_progress = progress
        self.progress = None

    # -- readers
    def read(self, rel: str) -> _Item:
        item = _Item(rel, time.perf_counter())
        try:
            item.sha256 = archive.sha256_file(self.in_dir / rel)
            t = time.perf_counter()
            item.times["read_s"] = t - item.started
            out = self.outputs[rel]
            if archive.is_done(self.latest.get(rel), item.sha256, out, [sidecar_path(out)]):
                item.skipped = True
                return item
            item.volume = load(self.in_dir / rel)
            item.stages = self.stages
            item.prepared = self.stages.prepare(item.volume)
            item.times["decode_s"] = time.perf_counter() - t
        except Exception as e:  # a bad file must not stop the archive
            item.error = one_line(e)
        return item

    # -- the watcher
    def watch(self, dispatched: queue.Queue, writers: cf.Executor, slots: threading.Semaphore) -> None:
        last_ready = 0.0
        while (item := dispatched.get()) is not None:
            try:
                try:
                    item.stages.wait(item.on_device)
                except Exception as e:
                    self.on_host(item, e)
            except Exception as e:
                item.on_device = None
                self.failed(item, one_line(e))
                continue
            ready = time.perf_counter()
            item.times["device_s"] = ready - max(item.dispatched, last_ready)
            last_ready = ready
            slots.acquire()
            writers.submit(self.write, item, slots)

    def on_host(self, item: _Item, error: Exception) -> None:
        """After running out of device memory, the volume again on the host path (the model streamed in batches); else `error`."""
        if self.fallback is None or not is_out_of_memory(error):
            raise error
        logger.warning("%s: out of device memory on the device path; retrying with scipy preprocessing", item.rel)
        item.stages, item.on_device = self.fallback, None
        item.prepared = self.fallback.prepare(item.volume)
        item.dispatched = time.perf_counter()
        item.on_device = self.fallback.start(item.prepared)

    # -- writers
    def write(self, item: _Item, slots: threading.Semaphore) -> None:
        try:
            t = time.perf_counter()
            result = item.stages.finish(item.volume, item.prepared, item.on_device)
            item.on_device = item.prepared = None  # free device and host memory before encoding
            out = self.outputs[item.rel]
            nifti, sidecar = encode_upsampled(item.volume, result, out, source_sha256=item.sha256, config=self.config,
                                              settings=item.stages.settings)
            del result
            t2 = time.perf_counter()
            item.times["encode_s"] = t2 - t
            out.parent.mkdir(parents=True, exist_ok=True)
            write_result(out, nifti, sidecar, overwrite=True)
            item.times["write_s"] = time.perf_counter() - t2
        except Exception as e:
            self.failed(item, one_line(e))
            return
        finally:
            slots.release()
        self.record(item, "ok")

    # -- tallies
    def record(self, item: _Item, status: str) -> None:
        times = {k: round(v, 6) for k, v in item.times.items()}
        self.manifest.append(archive.Record(item.rel, item.sha256, item.rel, status,
                                            round(time.perf_counter() - item.started, 3), item.error,
                                            finished=round(time.time(), 6), **times))
        with self.lock:
            if status == "ok":
                self.summary.ok.append(item.rel)
            else:
                self.summary.failed.append((item.rel, item.error))
            self.summary.device_seconds += item.times.get("device_s", 0.0)
            for k in archive.HOST_STAGES:
                self.summary.host_seconds[k] += item.times.get(k, 0.0)
            if self.progress is not None:
                busy = self.summary.device_seconds / max(time.perf_counter() - self.t0, 1e-9)
                self.progress.update(1, failed=len(self.summary.failed), device_busy=f"{100 * busy:.0f}%")

    def failed(self, item: _Item, error: str) -> None:
        item.error = error
        logger.warning("failed: %s", error)
        self.record(item, "failed")

    def expected_work(self, rels: list[str]) -> int:
        """Inputs a rerun will likely process: all but those the manifests say are done (checked by hash later)."""
        def done(rel):
            record, out = self.latest.get(rel), self.outputs[rel]
            return record is not None and record.status == "ok" and out.is_file()

        return sum(not done(rel) for rel in rels)

    # -- the main thread
    def run(self, rels: list[str]) -> Summary:
        from jaxsr.progress import Progress

        self.t0 = time.perf_counter()
        if self.show_progress:
            self.progress = Progress(self.expected_work(rels), desc="reprocess", unit="volume")
        ahead = 2 * self.workers
        readers = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="jaxsr-read")
        writers = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="jaxsr-write")
        slots = threading.Semaphore(ahead)  # results waiting for, or in, a writer
        dispatched: queue.Queue = queue.Queue(maxsize=1)  # plus the one the watcher waits on: two on the device
        watcher = threading.Thread(target=self.watch, args=(dispatched, writers, slots), name="jaxsr-watch", daemon=True)
        watcher.start()
        reads: collections.deque = collections.deque()
        queue_of_rels = iter(rels)
        try:
            while True:
                while len(reads) < ahead and (rel := next(queue_of_rels, None)) is not None:
                    reads.append(readers.submit(self.read, rel))
                if not reads:
                    break
                item = reads.popleft().result()
                if item.skipped:
                    with self.lock:
                        self.summary.skipped.append(item.rel)
                    continue
                if item.error is not None:
                    self.failed(item, item.error)
                    continue
                if self.sleep_s:
                    time.sleep(self.sleep_s)
                item.dispatched = time.perf_counter()
                try:
                    try:
                        item.on_device = item.stages.start(item.prepared)
                    except Exception as e:
                        self.on_host(item, e)
                except Exception as e:
                    self.failed(item, one_line(e))
                    continue
                dispatched.put(item)
        finally:
            dispatched.put(None)
            watcher.join()
            readers.shutdown(wait=True, cancel_futures=True)
            writers.shutdown(wait=True)
            if self.progress is not None:
                self.progress.close()
        return self.summary
