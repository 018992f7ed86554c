"""What nibabel says while reading a file, collected per file instead of printed.

nibabel reports header problems it repairs ("vox offset 280 too low ...; setting
to minimum") through its own `nibabel.global` logger, which has a stream handler
of its own, and some through Python warnings. Both would reach stderr as raw,
sometimes multi-line, text beside our one error line. Here both are routed to a
per-thread list while `collecting()` is active (reprocess reads files on several
threads at once), so the reader can turn them into one log line for the file.
Outside `collecting()` they go to this module's logger at debug level (nibabel
logs) or to the previous warning display (warnings). `collect_logger` routes
another reader's library logger (pydicom's) the same way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

import nibabel.imageglobals
import numpy as np

from jaxsr.errors import VolumeError

T = TypeVar("T")

logger = logging.getLogger(__name__)

_local = threading.local()


def one_line(text: object, limit: int = 240) -> str:
    """`text` with every run of whitespace (newlines included) made one space."""
    folded = " ".join(str(text).split())
    return folded if len(folded) <= limit else folded[: limit - 3] + "..."


@contextlib.contextmanager
def collecting() -> Iterator[list[tuple[int, str]]]:
    """Yields the (level, message) list that nibabel's output on this thread goes to."""
    outer = getattr(_local, "notes", None)
    _local.notes = notes = []
    try:
        yield notes
    finally:
        _local.notes = outer


class _ToCollector(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        notes = getattr(_local, "notes", None)
        if notes is None:
            logger.debug("%s: %s", record.name, one_line(record.getMessage()))
        else:
            notes.append((record.levelno, one_line(record.getMessage())))


Notes = list[tuple[int, str]]


def read_noting(path, read: Callable[[Notes], T], log_notes: Callable[[object, Notes, int], None]) -> T:
    """read(notes) while collecting, and what was said logged once for `path` by log_notes(path, notes, level):
    at debug level when the file is refused anyway (VolumeError), at warning level when it loads with a
    warning among the notes. numpy's overflow and invalid-value warnings are silenced: readers refuse
    their results (Inf, NaN) with a reason."""
    with collecting() as notes, np.errstate(all="ignore"):
        try:
            value = read(notes)
        except VolumeError:
            log_notes(path, notes, logging.DEBUG)
            raise
    log_notes(path, notes, logging.WARNING if any(level >= logging.WARNING for level, _ in notes) else logging.DEBUG)
    return value


def collect_logger(name: str, level: int = logging.WARNING) -> None:
    """Routes library logger `name` (records at `level` and above) to the notes instead of the root logger."""
    library = logging.getLogger(name)
    if not any(isinstance(h, _ToCollector) for h in library.handlers):
        library.addHandler(_ToCollector())
    library.propagate = False
    library.setLevel(level)


def _install() -> None:
    nib_logger = nibabel.imageglobals.logger
    for handler in list(nib_logger.handlers):  # nibabel's own stderr handler
        nib_logger.removeHandler(handler)
    nib_logger.addHandler(_ToCollector())
    nib_logger.propagate = False
    nib_logger.setLevel(logging.DEBUG)  # its minor repairs (levels 10, 20) belong in the note too

    # The warnings module has one display hook for the whole process; only a
    # warning raised on a thread that is collecting is taken.
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        notes = getattr(_local, "notes", None)
        if notes is None:
            return shown(message, category, filename, lineno, file, line)
        notes.append((logging.WARNING, one_line(f"{category.__name__}: {message}")))

    warnings.showwarning = showwarning


_install()
