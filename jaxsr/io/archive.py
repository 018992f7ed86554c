"""An archive of NIfTI files: walking it, splitting it, and the JSONL manifest.

The manifest (OUT_DIR/manifest.jsonl) has one line per attempt:
{"input", "input_sha256", "output", "status": "ok"|"failed", "seconds", "error"}.
It is only ever appended to, one `os.write` per record followed by fsync, so a
process killed mid-write leaves at most one torn last line, which `read`
ignores and the next append starts after. The latest record of an input
decides whether a rerun skips it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import pathlib
import threading
from typing import Iterable, Sequence

from jaxsr.errors import ConfigError, UserError
from jaxsr.io.atomic import TEMP_MARKER
from jaxsr.io.nifti import is_nifti_path

MANIFEST_NAME = "manifest.jsonl"


def find_volumes(root: str | os.PathLike, pattern: str | None = None, *, exclude: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """Relative paths of every NIfTI file under `root`, sorted.

    `pattern` filters the relative (POSIX) paths with fnmatch. Hidden files
    (our temporaries among them) and anything under `exclude` (an output folder
    nested inside the input) are left out.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: input folder does not exist")
    exclude_path = pathlib.Path(exclude).resolve() if exclude is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = pathlib.Path(dirpath)
        if exclude_path is not None and here.resolve() == exclude_path:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or TEMP_MARKER in name or not is_nifti_path(name):
                continue
            rel = (here / name).relative_to(root)
            if pattern and not fnmatch.fnmatch(rel.as_posix(), pattern):
                continue
            found.append(rel)
    return sorted(found, key=lambda p: p.as_posix())


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must be I/N with integers, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return index, count


def take_shard(items: Sequence, index: int, count: int) -> list:
    """Items i with i % count == index (stable across hosts for the same sorted list)."""
    return [item for i, item in enumerate(items) if i % count == index]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Record:
    input: str
    input_sha256: str | None
    output: str
    status: str  # "ok" | "failed"
    seconds: float
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


class Manifest:
    """Append-only JSONL log of attempts; safe to append from several threads."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._lock = threading.Lock()

    def read(self) -> list[Record]:
        """Every complete record; torn or foreign lines are skipped."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                fields = json.loads(line)
                records.append(Record(**fields))
            except (ValueError, TypeError):
                continue
        return records

    def latest(self) -> dict[str, Record]:
        """input -> its latest record."""
        out: dict[str, Record] = {}
        for record in self.read():
            out[record.input] = record
        return out

    def append(self, record: Record) -> None:
        line = (record.to_json() + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                # After a torn last line (killed mid-write), start on a fresh line.
                size = os.fstat(fd).st_size
                if size and _last_byte(self.path, size) != b"\n":
                    line = b"\n" + line
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


def _last_byte(path: pathlib.Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


def is_done(record: Record | None, sha256: str, output: pathlib.Path, extra_files: Iterable[pathlib.Path] = ()) -> bool:
    """Whether a rerun may skip an input: ok last time, same content, outputs present."""
    return (
        record is not None
        and record.status == "ok"
        and record.input_sha256 == sha256
        and output.is_file()
        and all(p.is_file() for p in extra_files)
    )
