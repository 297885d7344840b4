"""Progress and log helpers for long jobs (frames done, rate, ETA) and workflow scripts."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Iterator

__all__ = ["Progress", "get_logger", "script_logging"]


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


@contextlib.contextmanager
def script_logging(log_path: str | Path | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send califlow logging and stderr of a workflow script to its ``log:`` file.

    Exceptions are logged with their traceback and re-raised, so the job fails and the
    log says why.
    """
    logger = get_logger()
    handlers: list[logging.Handler] = []
    stream = None
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", buffering=1)
        handlers.append(logging.StreamHandler(stream))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.setLevel(level)
    old_stderr = sys.stderr
    if stream is not None:
        sys.stderr = stream
    try:
        yield logger
    except BaseException:
        logger.exception("job failed")
        raise
    finally:
        sys.stderr = old_stderr
        for h in handlers:
            logger.removeHandler(h)
            h.flush()
        if stream is not None:
            stream.close()
