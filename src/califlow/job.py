"""The context every workflow script runs in: its log file, SIGTERM, and whose data it is.

:func:`workflow_job` wraps the body of a Snakemake ``script:``:

- califlow logging and stderr go to the rule's ``log:`` file (:func:`califlow.progress.script_logging`);
- SIGTERM (a cluster's time limit, ``scancel``, Snakemake stopping) raises :class:`JobTerminated`
  in the script, so every :func:`califlow.io.store.atomic_output` removes its temporary
  before the process exits with status 143 (128 + SIGTERM), as an unhandled SIGTERM would;
- a failure names the recordings and sessions-sheet rows of the job's animal and session
  (:func:`califlow.sessions.describe_sources`), even when the error itself is about an
  intermediate store such as ``ingest.zarr``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

from califlow.progress import script_logging

__all__ = ["JobTerminated", "workflow_job", "job_sources"]

#: Exit status of a job stopped by SIGTERM (what the shell reports for a SIGTERM death).
TERMINATED_STATUS = 128 + signal.SIGTERM


class JobTerminated(BaseException):
    """The job received SIGTERM. A BaseException, so ``except Exception`` does not swallow it."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`JobTerminated` (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise JobTerminated(f"terminated by {signal.Signals(signum).name} (a cluster time limit, scancel, "
                            "or Snakemake stopping); the partial output was removed and the job can be rerun")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def job_sources(smk) -> str:
    """The recordings behind a Snakemake job (from its ``animal``/``session`` wildcards), or ''."""
    from califlow.sessions import describe_sources

    wildcards = getattr(smk, "wildcards", None)
    animal = getattr(wildcards, "animal", None)
    if not animal:
        return ""
    return describe_sources(dict(getattr(smk, "config", {})), str(animal), getattr(wildcards, "session", None))


@contextlib.contextmanager
def workflow_job(smk) -> Iterator[logging.Logger]:
    """Run a workflow script's body: log to ``smk.log[0]``, SIGTERM-safe, blaming the sources on failure.

    Examples
    --------
    >>> with workflow_job(snakemake) as log:      # doctest: +SKIP
    ...     main(snakemake)
    """
    log_path = smk.log[0] if smk.log else None
    try:
        # the log is open before SIGTERM is handled, so a terminated job always says so in its log
        with script_logging(log_path, blame=lambda: job_sources(smk)) as log, sigterm_raises():
            yield log
    except JobTerminated:
        raise SystemExit(TERMINATED_STATUS) from None
