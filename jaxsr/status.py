"""What the manifests under an output folder say: done, failed, pending, time and throughput.

Every manifest under OUT_DIR is merged (jaxsr.io.archive.latest_records): an
input is done when its latest record is 'ok' and its output is there, failed
when its latest record is 'failed' (with the record's one-line reason), and
pending when it is under IN_DIR (if given) with neither, or done once but its
output is gone. Hashes are not recomputed here; a rerun of `jaxsr reprocess`
is what notices a changed input.

Time is the wall time during which some process had a volume in flight: the
union of the records' [finish - seconds, finish] intervals, so that gaps
between runs and parallel shards are not counted twice. Throughput is done
volumes over that time.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

from jaxsr.errors import UserError
from jaxsr.io import archive


# per_volume's keys are Record fields ("seconds", "device_s", "read_s", ...); the text says what each is
_LABELS = {"seconds": "total"}


def busy_seconds(records: list[archive.Record]) -> float:
    """Length of the union of the records' in-flight intervals."""
    spans = sorted((r.finished - r.seconds, r.finished) for r in records if r.finished is not None)
    total, end = 0.0, float("-inf")
    for lo, hi in spans:
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


@dataclasses.dataclass
class ArchiveStatus:
    out_dir: str
    in_dir: str | None
    done: list[str]
    failed: dict[str, str]  # input -> one-line reason
    pending: list[str]
    not_in_input: int  # inputs with records that are no longer under IN_DIR
    wall_s: float
    per_volume: dict[str, float]  # mean seconds of the done volumes' stages
    manifests: list[dict[str, Any]]

    @property
    def exit_code(self) -> int:
        """0 all done, 1 any failed, 3 some pending."""
        return 1 if self.failed else 3 if self.pending else 0

    @property
    def volumes_per_s(self) -> float | None:
        return len(self.done) / self.wall_s if self.wall_s > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "in_dir": self.in_dir,
            "done": {"count": len(self.done), "files": self.done},
            "failed": {"count": len(self.failed), "files": sorted(self.failed), "errors": self.failed},
            "pending": {"count": len(self.pending), "files": self.pending},
            "not_in_input": self.not_in_input,
            "wall_s": round(self.wall_s, 3),
            "volumes_per_s": self.volumes_per_s,
            "per_volume_s": self.per_volume,
            "manifests": self.manifests,
            "exit_code": self.exit_code,
        }

    def text(self, list_limit: int = 20) -> str:
        of = f" of {len(self.done) + len(self.failed) + len(self.pending)} under {self.in_dir}" if self.in_dir else ""
        lines = [f"{self.out_dir}: {len(self.done)} done, {len(self.failed)} failed, {len(self.pending)} pending{of}"]
        lines += [f"  failed: {rel}: {error}" for rel, error in sorted(self.failed.items())]
        lines += [f"  pending: {rel}" for rel in self.pending[:list_limit]]
        if len(self.pending) > list_limit:
            lines.append(f"  pending: ... and {len(self.pending) - list_limit} more")
        if self.not_in_input:
            lines.append(f"  {self.not_in_input} input(s) in the manifests are no longer under {self.in_dir}")
        if self.wall_s > 0:
            rate = f", {self.volumes_per_s:.3g} volumes/s" if self.done else ""
            per = ", ".join(f"{_LABELS.get(k, k.removesuffix('_s'))} {v:.3f} s" for k, v in self.per_volume.items())
            lines.append(f"  time: {self.wall_s:.1f} s with volumes in flight{rate}; per volume: {per}")
        for m in self.manifests:
            busy = f", device busy {100 * m['device_busy']:.0f}%" if m["device_busy"] is not None else ""
            lines.append(f"  {m['file']}: {m['records']} records, {m['ok']} ok, {m['failed']} failed{busy}")
        return "\n".join(lines)


def _mean(records: list[archive.Record], field: str) -> float:
    values = [getattr(r, field) for r in records if getattr(r, field) is not None]
    return sum(values) / len(values) if values else 0.0


def _manifest_summary(out_dir: pathlib.Path, path: pathlib.Path) -> dict[str, Any]:
    records = archive.Manifest(path).read()
    wall = busy_seconds(records)
    device = sum(r.device_s or 0.0 for r in records)
    return {
        "file": path.relative_to(out_dir).as_posix(),
        "records": len(records),
        "ok": sum(r.status == "ok" for r in records),
        "failed": sum(r.status == "failed" for r in records),
        "wall_s": round(wall, 3),
        "device_busy": device / wall if wall > 0 else None,
    }


def archive_status(out_dir: str | os.PathLike, in_dir: str | os.PathLike | None = None,
                   pattern: str | None = None) -> ArchiveStatus:
    """The merged state of OUT_DIR's manifests, against the inputs under IN_DIR when given."""
    out_dir = pathlib.Path(out_dir)
    if not out_dir.is_dir():
        raise UserError(f"{out_dir}: output folder does not exist")
    records = archive.read_records(out_dir)
    latest = {r.input: r for r in records}
    inputs = None
    if in_dir is not None:
        inputs = [p.as_posix() for p in archive.find_volumes(in_dir, pattern, exclude=out_dir)]
    considered = list(latest) if inputs is None else inputs
    done, failed, pending = [], {}, []
    for rel in sorted(considered):
        record = latest.get(rel)
        if record is not None and record.status == "ok" and (out_dir / record.output).is_file():
            done.append(rel)
        elif record is not None and record.status == "failed":
            failed[rel] = record.error or "failed"
        else:
            pending.append(rel)
    ok_records = [latest[rel] for rel in done]
    per_volume = {"seconds": _mean(ok_records, "seconds"), "device_s": _mean(ok_records, "device_s")}
    per_volume.update({k: _mean(ok_records, k) for k in archive.HOST_STAGES})
    return ArchiveStatus(
        out_dir=str(out_dir),
        in_dir=str(in_dir) if in_dir is not None else None,
        done=done,
        failed=failed,
        pending=pending,
        not_in_input=0 if inputs is None else len(set(latest) - set(inputs)),
        wall_s=busy_seconds(records),
        per_volume={k: round(v, 4) for k, v in per_volume.items()},
        manifests=[_manifest_summary(out_dir, p) for p in archive.manifest_paths(out_dir)],
    )
