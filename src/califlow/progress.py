"""Progress and log helpers for long jobs (frames done, rate, ETA) and workflow scripts."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["CONSOLE", "Progress", "get_logger", "script_logging"]


def get_logger(name: str = "califlow") -> logging.Logger:
    """Return a califlow logger (handlers are configured by :func:`script_logging` or the CLI)."""
    return logging.getLogger(name)


class Progress:
    """Log ``done/total`` items with rate and ETA at most every ``interval`` seconds.

    Examples
    --------
    >>> p = Progress(total=3000, what="frames", label="ingest s1", interval=0)
    >>> p.update(100)   # logs "ingest s1: 100/3000 frames (3.3%), ... frames/s, ETA ..."
    """

    def __init__(self, total: int | None, what: str = "frames", label: str = "",
                 interval: float = 10.0, logger: logging.Logger | None = None):
        self.total = total
        self.what = what
        self.label = label
        self.interval = interval
        self.logger = logger or get_logger()
        self.done = 0
        self.t0 = time.perf_counter()
        self._last = -float("inf")

    def update(self, n: int = 1, force: bool = False) -> None:
        self.done += n
        now = time.perf_counter()
        if force or now - self._last >= self.interval or (self.total and self.done >= self.total):
            self._last = now
            self.logger.info(self.message(now))

    def message(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.t0, 1e-9)
        rate = self.done / elapsed
        head = f"{self.label}: " if self.label else ""
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            return (f"{head}{self.done}/{self.total} {self.what} ({100 * self.done / self.total:.1f}%), "
                    f"{rate:.1f} {self.what}/s, elapsed {elapsed:.1f} s, ETA {eta:.1f} s")
        return f"{head}{self.done} {self.what}, {rate:.1f} {self.what}/s, elapsed {elapsed:.1f} s"


#: ``extra`` of a log record the console shows too, besides the log file (milestones of long steps).
CONSOLE = {"console": True}
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def script_logging(log_path: str | Path | None, level: int = logging.INFO,
                   blame: Callable[[], str] | None = None, console: TextIO | None = None) -> Iterator[logging.Logger]:
    """Send califlow logging of a workflow script to its ``log:`` file.

    With a ``log_path``, the console gets only the records logged with ``extra=CONSOLE``
    (e.g. one line per finished CNMF-E patch), as their bare message; without one, all
    califlow logging goes to the console.  Exceptions are logged with their traceback and
    re-raised, so the job fails and the log says why; the console gets a one-line
    ``califlow ERROR: ...`` too. ``blame``, called only on failure, names the data behind
    the job (source recordings, sheet rows), which is added to both.

    Nothing process-wide is replaced: ``sys.stderr`` stays as it is, and the handlers and
    the level of the ``califlow`` logger are those from before when the block ends.

    Parameters
    ----------
    log_path : path of the log file (appended to; its folder is created), or None.
    level : level of the ``califlow`` logger within the block.
    blame : called on failure; returns the data to name, or ''.
    console : stream of the console (default: ``sys.stderr`` when the block starts).
    """
    logger = get_logger()
    console = sys.stderr if console is None else console
    stream = None
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed when the block ends
    handlers = _log_handlers(stream, console)
    for h in handlers:
        logger.addHandler(h)
    previous_level = logger.level
    logger.setLevel(level)
    failed = False
    try:
        yield logger
    except BaseException as exc:
        failed = True
        culprit = _blamed(blame)
        logger.exception("job failed%s", f" on {culprit}" if culprit else "")
        if stream is not None:  # the console gets the cause too, even when the log cannot be written
            print(f"califlow ERROR: {type(exc).__name__}: {exc}" + (f"\n  (data: {culprit})" if culprit else ""),
                  file=console)
        raise
    finally:
        logger.setLevel(previous_level)
        _close_handlers(logger, handlers, stream, quiet=failed)


def _log_handlers(stream: TextIO | None, console: TextIO) -> list[logging.Handler]:
    """Everything to ``stream`` and ``CONSOLE`` records to ``console``; all to ``console`` without a stream."""
    full = logging.StreamHandler(console if stream is None else stream)
    full.setFormatter(logging.Formatter(_LOG_FORMAT))
    if stream is None:
        return [full]
    shown = logging.StreamHandler(console)
    shown.setFormatter(logging.Formatter("%(message)s"))
    shown.addFilter(lambda record: bool(getattr(record, "console", False)))
    return [full, shown]


def _blamed(blame: Callable[[], str] | None) -> str:
    """``blame()``, or '' when there is none or it fails (naming the data must not hide the error)."""
    if blame is None:
        return ""
    try:
        return blame()
    except Exception as exc:  # noqa: BLE001 - the job's own error matters more
        return f"(the sources could not be named: {type(exc).__name__}: {exc})"


def _close_handlers(logger: logging.Logger, handlers: list[logging.Handler], stream, quiet: bool) -> None:
    """Detach and flush ``handlers``; with ``quiet``, an unwritable log (disk full) does not mask the job's error."""
    guard = contextlib.suppress(OSError) if quiet else contextlib.nullcontext()
    for h in handlers:
        logger.removeHandler(h)
        with guard:
            h.flush()
    if stream is not None:
        with guard:
            stream.close()
