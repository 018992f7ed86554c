"""Progress of a long loop: a tqdm bar on a terminal, one plain line every so often in a log.

A bar redraws itself with carriage returns, which a log file (a batch job, CI,
`make demo > log`) keeps as thousands of fragments. When the stream is not a
terminal, a line like this is written every LOG_EVERY_S seconds:

    train: step 1200/2000 (60%), 19.3 img/s, loss 0.0123, ETA 2m05s

Rates and the ETA are measured over the time since the previous line. When
the loop ends, one more line gives the mean rate and the time taken:

    train: step 2000/2000 (100%), 18.7 img/s, loss 0.0101, took 7m42s

Fields
such as the loss are shown as last given: pass only values already on the
host, so that showing progress never makes the host wait for the device.
"""

from __future__ import annotations

import numbers
import sys
import time
from typing import Callable, TextIO

# Often enough to see a job is alive, rarely enough that a day-long run logs ~3000 lines.
LOG_EVERY_S = 30.0
# How often the bar's rate and fields are refreshed on a terminal.
BAR_REFRESH_S = 2.0


class Progress:
    """`total` units of work (steps, volumes) with a rate in `rate_unit`/s.

    Each unit counts `per_unit` of `rate_unit` (a training step of batch 32 is 32
    images: unit="step", rate_unit="img", per_unit=32). `initial` units were done
    before (a resumed run); they do not count toward the rate.
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str = "step",
        rate_unit: str | None = None,
        per_unit: float = 1.0,
        initial: int = 0,
        stream: TextIO | None = None,
        every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
    ):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.rate_unit = rate_unit or f"{unit}s"
        self.per_unit = float(per_unit)
        self.n = int(initial)
        self.fields: dict = {}
        self._stream = sys.stderr if stream is None else stream
        self._clock = clock
        is_tty = self._stream.isatty() if tty is None else tty
        self._every_s = BAR_REFRESH_S if is_tty else float(every_s)
        self._t_start, self._n_start = clock(), self.n
        self._t_window, self._n_window = self._t_start, self.n
        self._rate: float | None = None  # units per second over the last window
        self._took: float | None = None  # seconds in all, once closed
        self._n_shown = self.n
        self._bar = None
        if is_tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, dynamic_ncols=True, file=self._stream)

    def update(self, n: int = 1, **fields) -> None:
        """`n` more units done; `fields` (host values, e.g. loss=0.012) replace the shown ones."""
        self.n += n
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(n)
        if self._clock() - self._t_window >= self._every_s:
            self._close_window()
            self._show()

    def close(self) -> None:
        """Writes the final line (when anything was done since the last one), or closes the bar."""
        if self._bar is not None:
            self._bar.close()
        elif self.n != self._n_shown:
            self._took = self._clock() - self._t_start
            self._rate = (self.n - self._n_start) / self._took if self._took > 0 else None
            self._show()

    def line(self) -> str:
        """The plain progress line for the current state."""
        parts = [f"{self.desc}: {self.unit} {self.n}/{self.total} ({100 * self.n // max(self.total, 1)}%)"]
        if self._rate is not None:
            parts.append(f"{_number(self._rate * self.per_unit)} {self.rate_unit}/s")
        parts += [f"{k} {_field(v)}" for k, v in self.fields.items()]
        if self._took is not None:
            parts.append(f"took {_duration(self._took)}")
        elif self._rate:
            parts.append(f"ETA {_duration(max(self.total - self.n, 0) / self._rate)}")
        return ", ".join(parts)

    def _close_window(self) -> None:
        now = self._clock()
        elapsed = now - self._t_window
        if elapsed > 0:
            self._rate = (self.n - self._n_window) / elapsed
        self._t_window, self._n_window = now, self.n

    def _show(self) -> None:
        self._n_shown = self.n
        if self._bar is not None:
            postfix = dict(self.fields)
            if self._rate is not None:
                postfix[f"{self.rate_unit}/s"] = _number(self._rate * self.per_unit)
            self._bar.set_postfix({k: _field(v) for k, v in postfix.items()}, refresh=False)
            return
        self._stream.write(self.line() + "\n")
        self._stream.flush()


def _number(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def _field(v) -> str:
    if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral):
        return f"{float(v):.4g}"
    return str(v)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
