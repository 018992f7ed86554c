"""An archive of NIfTI files and DICOM series folders: walking it, splitting it, and the JSONL manifests.

Each process of a run appends to its own manifest,
OUT_DIR/.jaxsr/manifest-shard-I-of-N.jsonl (with .host-P-of-H before the
suffix on multi-host runs), so no two processes ever append to one file, which
network filesystems may interleave. A process holds an exclusive lock on its
manifest while it runs; a second process given the same shard is refused.
Readers merge every manifest under OUT_DIR, and the OUT_DIR/manifest.jsonl
that runs before per-shard manifests wrote.

One line per attempt: {"input", "input_sha256", "output", "status": "ok" |
"failed", "seconds", "error", "finished", and the per-volume timings}. Lines
are only ever appended, one `os.write` each followed by fsync, so a process
killed mid-write leaves at most one torn last line, which `read` ignores and
the next append starts after. The latest record of an input (by its finish
time; older manifests' lines have none and come first, in file order) decides
whether a rerun skips it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import hashlib
import json
import os
import pathlib
import threading
from typing import Iterable, Iterator, Sequence

from jaxsr.errors import ConfigError, UserError
from jaxsr.io.atomic import TEMP_MARKER
from jaxsr.io.dicom import holds_dicom
from jaxsr.io.nifti import is_nifti_path

MANIFEST_NAME = "manifest.jsonl"  # written by runs before per-shard manifests; still read
STATE_DIR = ".jaxsr"  # under OUT_DIR: the manifests (find_volumes skips hidden folders)


def find_volumes(root: str | os.PathLike, pattern: str | None = None, *, exclude: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """Relative paths of every input under `root`, sorted: NIfTI files and DICOM series folders.

    A series folder is any folder below `root` holding DICOM files directly (a
    .dcm name, else the 'DICM' magic; jaxsr.io.dicom.holds_dicom), one input
    however many files it holds; its subfolders are walked as well. `root`
    itself holding DICOM files is refused: its output would have no name, so
    give the folder above it. `pattern` filters the relative (POSIX) paths
    with fnmatch. Hidden files and folders (our temporaries among them) and
    anything under `exclude` (an output folder nested inside the input) are
    left out.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: input folder does not exist")
    if holds_dicom(root):
        raise UserError(f"{root}: holds DICOM files itself; give the folder above it (each series folder is one input)")
    exclude_path = pathlib.Path(exclude).resolve() if exclude is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = pathlib.Path(dirpath)
        if exclude_path is not None and here.resolve() == exclude_path:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        candidates = [here / d for d in dirnames
                      if (exclude_path is None or (here / d).resolve() != exclude_path) and holds_dicom(here / d)]
        candidates += [here / name for name in filenames
                       if not name.startswith(".") and TEMP_MARKER not in name and is_nifti_path(name)]
        for path in candidates:
            rel = path.relative_to(root)
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
    """One attempt at one input. Times are seconds; host_* and device_s are per stage (see jaxsr.reprocess)."""

    input: str
    input_sha256: str | None
    output: str
    status: str  # "ok" | "failed"
    seconds: float  # from the start of reading to the manifest line
    error: str | None = None
    finished: float | None = None  # Unix time of the line (older manifests: none)
    read_s: float | None = None
    decode_s: float | None = None
    device_s: float | None = None
    encode_s: float | None = None
    write_s: float | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None or k == "error"}, sort_keys=True)

    @property
    def host_s(self) -> float:
        return sum(getattr(self, k) or 0.0 for k in HOST_STAGES)


HOST_STAGES = ("read_s", "decode_s", "encode_s", "write_s")
_FIELDS = frozenset(f.name for f in dataclasses.fields(Record))


def manifest_name(shard: tuple[int, int] = (0, 1), host: tuple[int, int] = (0, 1)) -> str:
    """This process's manifest file name: its --shard I/N, and its host of a multi-host run."""
    name = f"manifest-shard-{shard[0]}-of-{shard[1]}"
    if host[1] > 1:
        name += f".host-{host[0]}-of-{host[1]}"
    return name + ".jsonl"


def manifest_paths(out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Every manifest under OUT_DIR: the older single one first, then the per-shard ones by name."""
    out_dir = pathlib.Path(out_dir)
    legacy = [out_dir / MANIFEST_NAME] if (out_dir / MANIFEST_NAME).is_file() else []
    state = out_dir / STATE_DIR
    shards = sorted(state.glob("manifest*.jsonl")) if state.is_dir() else []
    return legacy + shards


def read_records(out_dir: str | os.PathLike) -> list[Record]:
    """The records of every manifest under OUT_DIR, oldest first (by finish time; lines without one first)."""
    records = [r for path in manifest_paths(out_dir) for r in Manifest(path).read()]
    # sorted() is stable: lines with equal (or no) times keep their file order.
    return sorted(records, key=lambda r: r.finished if r.finished is not None else float("-inf"))


def latest_records(out_dir: str | os.PathLike) -> dict[str, Record]:
    """input -> its latest record, over every manifest under OUT_DIR."""
    return {record.input: record for record in read_records(out_dir)}


class Manifest:
    """Append-only JSONL log of attempts; safe to append from several threads of one process."""

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
                records.append(Record(**{k: v for k, v in fields.items() if k in _FIELDS}))
            except (ValueError, TypeError, AttributeError):
                continue
        return records

    def latest(self) -> dict[str, Record]:
        """input -> its latest record in this file."""
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

    @contextlib.contextmanager
    def held(self) -> Iterator["Manifest"]:
        """This manifest, locked against other processes for the duration (UserError if one holds it).

        The lock goes with the process, so a killed run never blocks its rerun.
        Filesystems without locks (some network mounts) are run unlocked.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{self.path}: another process is running this shard (the same --shard given twice?)") from None
            except OSError:
                pass  # no locking here; one process per shard is then the user's to keep
            yield self
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
