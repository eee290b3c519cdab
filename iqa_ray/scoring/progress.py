"""Live progress of a run, independent of commits: score actors report each batch to a small
counter actor, and a driver thread prints images done / total, rate, ETA and errors by code on
stdout every few seconds (one line each in logs, one rewritten bar on a terminal).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc

INTERVAL_ENV = "IQA_RAY_PROGRESS_S"  # seconds between progress lines (default 5, 1 on a TTY)
_WINDOW_S = 60.0  # the rate is measured over this much recent time
_BAR = 24


class ProgressCounter:
    """Counts reported by score actors (run as a Ray actor with no CPU reserved)."""

    def __init__(self) -> None:
        self.images = 0
        self.errors: dict[str, int] = {}

    def add(self, images: int, errors: dict[str, int]) -> None:
        """Add one batch: its images and its error rows by code."""
        self.images += images
        for code, n in errors.items():
            self.errors[code] = self.errors.get(code, 0) + n

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """(images scored so far, error rows by code)."""
        return self.images, dict(self.errors)


def batch_counts(wide: pa.Table, error_columns: list[str]) -> tuple[int, dict[str, int]]:
    """(images, error rows by code) of one score-stage output table."""
    errors: dict[str, int] = {}
    for name in error_columns:
        for item in pc.value_counts(wide.column(name).drop_null()).to_pylist():
            code = item["values"]
            if code:
                errors[code] = errors.get(code, 0) + int(item["counts"])
    return wide.num_rows, errors


def _clock(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_progress(done: int, total: int, committed: int, elapsed: float, rate: float | None,
                    errors: dict[str, int], bar: bool = False, estimate: bool = False) -> str:
    """One progress line: done/total, percent, rate, ETA, committed images, error rows by code.

    Before the first batch (``done == 0``) the line says the run is starting (actors loading the
    model). ``bar`` draws a fixed-width bar in front (terminal mode). ``estimate``: the total is
    an estimate (shards not read yet), shown as ``~N`` and raised to ``done`` when exceeded;
    an exact total caps ``done`` (an actor that dies after reporting is counted twice).
    """
    total = max(total, done) if estimate else total
    done = min(done, total)
    shown = f"~{total}" if estimate else f"{total}"
    pct = 100.0 * done / total if total else 100.0
    if done == 0:
        body = f"0/{shown} images, starting ({_clock(elapsed)}: actors loading the model)"
    elif done == total and committed < total and not estimate:
        body = (f"{done}/{total} images scored, writing the last files (committed {committed}), "
                f"elapsed {_clock(elapsed)}")
    else:
        speed = f"{rate:.2f} images/s" if rate else "rate n/a"
        eta = _clock((total - done) / rate) if rate else "n/a"
        body = (f"{done}/{shown} images ({pct:.1f}%), {speed}, ETA {eta}, "
                f"elapsed {_clock(elapsed)}, committed {committed}")
    if errors:
        body += ", errors: " + " ".join(f"{c}={n}" for c, n in sorted(errors.items()))
    if bar:
        filled = int(_BAR * done / total) if total else _BAR
        return f"[{'#' * filled}{'.' * (_BAR - filled)}] {body}"
    return f"progress: {body}"


class ProgressPrinter:
    """A driver thread printing the counter's state every ``interval`` seconds.

    Args:
        total: images this attempt scores.
        estimate: whether ``total`` is only an estimate (a corpus's unread shards).
        counter: the counter actor's handle (``snapshot`` is called remotely).
        stream: where lines go (stdout: ``ray job logs --follow`` shows them).
        interval: seconds between lines (default from ``IQA_RAY_PROGRESS_S``, else 5, or 1 on
            a terminal).
    """

    def __init__(self, total: int, counter: Any, stream: TextIO | None = None,
                 interval: float | None = None, estimate: bool = False) -> None:
        self.total, self.counter, self.estimate = total, counter, estimate
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        default = 1.0 if self.tty else 5.0
        self.interval = interval or float(os.environ.get(INTERVAL_ENV, default))
        self.committed = 0
        self._start = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="iqa-progress", daemon=True)

    def start(self) -> ProgressPrinter:
        """Start printing."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Print a last line and stop."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.print_line()
        self.print_line(final=True)

    def _rate(self, now: float, done: int) -> float | None:
        self._samples.append((now, done))
        while now - self._samples[0][0] > _WINDOW_S and len(self._samples) > 2:
            self._samples.popleft()
        first = next(((t, d) for t, d in self._samples if d > 0), None)
        if first is None or now <= first[0] or done <= first[1]:
            # One sample since the first images: the whole run's rate (start-up included).
            return done / (now - self._start) if done and now > self._start else None
        return (done - first[1]) / (now - first[0])

    def print_line(self, final: bool = False) -> None:
        """Ask the counter and print one line (never raises: progress must not fail a run)."""
        import ray

        try:
            done, errors = ray.get(self.counter.snapshot.remote(), timeout=self.interval + 10)
        except Exception:
            return
        now = time.monotonic()
        line = format_progress(done, self.total, self.committed, now - self._start,
                               self._rate(now, done), errors, bar=self.tty,
                               estimate=self.estimate)
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r" + line + "\x1b[K" if self.tty else line) + end)
        self.stream.flush()


def start_progress(total: int, estimate: bool = False) -> tuple[Any, ProgressPrinter]:
    """A counter actor (no CPU reserved) and its printer, started."""
    import ray

    counter = ray.remote(num_cpus=0)(ProgressCounter).remote()
    return counter, ProgressPrinter(total, counter, estimate=estimate).start()
