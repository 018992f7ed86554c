"""Atomic output: a file or a folder appears under its final name whole, or not at all.

Writers produce a temporary file in the destination folder (same filesystem, so
the final rename is atomic), flush and fsync it, and only then move it into
place. A process killed at any moment leaves at most a hidden temporary file,
which `remove_stale_temporaries` cleans up on the next run. A folder of
outputs (an evaluation report) is built in a hidden sibling and renamed into
place the same way (`atomic_folder`).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import shutil
import tempfile
from typing import Iterator

from jaxsr.errors import UserError

TEMP_MARKER = ".jaxsr-tmp-"


def temporary_name(path: pathlib.Path) -> pathlib.Path:
    """A hidden sibling of `path` that keeps its suffixes (nibabel needs .nii.gz)."""
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}{TEMP_MARKER}{token}{suffix}")


def _fsync_dir(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output(path: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
    """UserError unless `path` can be written: checked before any work is done."""
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path}: output exists (pass --overwrite to replace it)")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: is not a folder, cannot write {path.name} in it")
    if not folder.is_dir():
        raise UserError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{folder}: output folder is not writable")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """Yields a temporary path to write; on success moves it to `path`.

    Without `overwrite`, an existing `path` is an error before anything is
    written, and the final move cannot clobber a file that appeared meanwhile
    (hard link + unlink instead of rename). On any exception, the temporary file
    is removed and nothing changes under `path`.
    """
    path = check_output(path, overwrite=overwrite)
    folder = path.parent
    tmp = temporary_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{tmp}: writer produced no file")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UserError(f"{path}: output exists (pass --overwrite to replace it)") from None
            os.unlink(tmp)
        _fsync_dir(folder)
    except OSError as e:
        _discard(tmp)
        raise UserError(f"{path}: could not write ({e.strerror or e})") from e
    except BaseException:
        _discard(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> pathlib.Path:
    """Writes `data` to `path` atomically (see `atomic_output`)."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return pathlib.Path(path)


def _discard(tmp: pathlib.Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = True) -> list[pathlib.Path]:
    """Deletes temporary files left by a killed writer; returns what was removed."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".*{TEMP_MARKER}*"
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    removed = []
    for p in sorted(found):
        if p.is_file():
            _discard(p)
            removed.append(p)
    return removed


def check_folder_output(path: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
    """UserError unless `path` can become an output folder: checked before any work is done."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(f"{path}: folder exists and is not empty (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise UserError(f"{path.parent}: output folder's parent does not exist")
    return path


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """Yields an empty hidden sibling folder to fill; on success it replaces `path`.

    An old `path` is renamed aside first and deleted after the new one is in
    place; on any exception the sibling is deleted and `path` is untouched.
    """
    path = check_folder_output(path, overwrite=overwrite)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARKER}", dir=path.parent))
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if old.exists() and not path.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
