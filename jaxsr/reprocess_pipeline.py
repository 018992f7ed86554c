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

from jaxsr.errors import one_line
from jaxsr.io import archive
from jaxsr.io.nifti import Volume
from jaxsr.io.volumes import input_sha256, load_volume, output_name
from jaxsr.outputs import encode_upsampled, sidecar_path, write_result
from jaxsr.upsample import ScipyStages

logger = logging.getLogger(__name__)

# Test hook: seconds to sleep before each volume's compute, so that a test can
# kill a run between and during files.
SLEEP_ENV = "JAXSR_REPROCESS_TEST_SLEEP_S"


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
            item.sha256 = input_sha256(self.in_dir / rel)
            t = time.perf_counter()
            item.times["read_s"] = t - item.started
            out = self.outputs[rel]
            if archive.is_done(self.latest.get(rel), item.sha256, out, [sidecar_path(out)]):
                item.skipped = True
                return item
            item.volume = load_volume(self.in_dir / rel)
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
        self.manifest.append(archive.Record(item.rel, item.sha256, output_name(item.rel).as_posix(), status,
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
