"""Progress: tqdm on a terminal; in a log, one exact plain line per interval, with an injected clock."""

import io

from jaxsr.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make(clock, stream, **kw):
    return Progress(100, desc="train", unit="step", rate_unit="img", per_unit=8, initial=20, stream=stream,
                    every_s=30, clock=clock, tty=False, **kw)


def test_log_lines_are_rate_limited_and_exact():
    clock, out = Clock(), io.StringIO()
    p = make(clock, out)
    for i in range(1, 11):  # 10 steps, one every 3 s: one line at t = 30 s
        clock.now = 3.0 * i
        p.update(1, loss=0.5 / i)
        if i < 10:
            assert out.getvalue() == ""
    # 10 steps x 8 images in 30 s; 70 steps left at 1/3 step/s.
    assert out.getvalue() == "train: step 30/100 (30%), 2.67 img/s, loss 0.05, ETA 3m30s\n"
    for i in range(1, 20):  # 2 steps a second for 9.5 s: within the interval, no line
        clock.now = 30 + 0.5 * i
        p.update(1)
    assert out.getvalue().count("\n") == 1
    clock.now = 60.0
    p.update(1, loss=0.01234567)  # 20 steps in 30 s since the last line
    assert out.getvalue().splitlines()[-1] == "train: step 50/100 (50%), 5.33 img/s, loss 0.01235, ETA 1m15s"
    clock.now = 3660.0
    p.update(50)
    assert out.getvalue().splitlines()[-1] == "train: step 100/100 (100%), 0.111 img/s, loss 0.01235, ETA 0s"
    clock.now = 3661.0
    p.close()  # nothing new since the last line: no repeat
    assert out.getvalue().count("\n") == 3


def test_close_writes_the_mean_rate_and_time_taken():
    clock, out = Clock(), io.StringIO()
    p = make(clock, out)
    clock.now = 10.0
    p.update(5, loss=2.0)
    clock.now = 40.0
    p.update(5)  # 10 steps in the first 40 s
    clock.now = 50.0
    p.update(10)
    clock.now = 51.0
    p.close()  # 20 steps (not the 20 done before this run) in 51 s
    assert out.getvalue().splitlines() == [
        "train: step 30/100 (30%), 2 img/s, loss 2, ETA 4m40s",
        "train: step 40/100 (40%), 3.14 img/s, loss 2, took 51s",
    ]


def test_close_after_a_short_run_writes_one_line():
    clock, out = Clock(), io.StringIO()
    p = Progress(12, desc="reprocess", unit="volume", initial=0, stream=out, every_s=30, clock=clock, tty=False)
    for i in range(1, 4):
        clock.now = 4.0 * i
        p.update(1)
    clock.now = 3725.0
    p.close()
    assert out.getvalue() == "reprocess: volume 3/12 (25%), 0.000805 volumes/s, took 1h02m\n"


def test_nothing_done_writes_nothing():
    clock, out = Clock(), io.StringIO()
    p = make(clock, out)
    clock.now = 100.0
    p.close()
    assert out.getvalue() == ""


def test_a_terminal_gets_a_bar_not_lines():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    clock, out = Clock(), Terminal()
    p = Progress(10, desc="train", stream=out, clock=clock)
    for i in range(10):
        clock.now = 3.0 * (i + 1)
        p.update(1, loss=0.5)
    p.close()
    text = out.getvalue()
    assert "\r" in text and "10/10" in text and "ETA" not in text
