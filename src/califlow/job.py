"""The context every workflow script runs in: its log file, SIGTERM, and whose data it is.

:func:`workflow_job` wraps the body of a Snakemake ``script:``:

- califlow logging and Python warnings go to the rule's ``log:`` file
  (:func:`califlow.progress.script_logging`); the console gets the lines logged with
  ``extra=CONSOLE`` (one per finished CNMF-E patch) and a one-line error on failure;
- the environment has :data:`JOB_ENVIRONMENT` (:func:`job_environment`), set before any
  parallel kernel starts;
- SIGTERM (a cluster's time limit, ``scancel``, Snakemake stopping) raises :class:`JobTerminated`
  in the script, so every :func:`califlow.io.store.atomic_output` removes its temporary
  before the process exits with status 143 (128 + SIGTERM), as an unhandled SIGTERM would;
- a failure names the recordings and sessions-sheet rows of the job's animal and session
  (:func:`califlow.sessions.describe_sources`), even when the error itself is about an
  intermediate store such as ``ingest.zarr``.

These are process-wide settings, made only where califlow owns the process (a job; the
``califlow`` command uses :func:`job_environment` too) and undone when the block ends:
importing califlow changes nothing in the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator

from califlow.progress import script_logging

__all__ = ["JOB_ENVIRONMENT", "JobTerminated", "job_environment", "job_sources", "raise_if_terminated",
           "warnings_logged", "workflow_job"]

#: Environment variables a job sets unless the user set them.  Idle OpenMP threads (numba's
#: parallel kernels) sleep instead of spinning: califlow alternates many short parallel
#: kernels with BLAS calls, and spinning threads then steal the few cores from the work
#: (measured: 1.1-1.7x slower CNMF-E initialisation on 2 cores).  libgomp reads it once, when
#: numba's first parallel kernel loads it; importing califlow does not load it.
JOB_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}

#: Exit status of a job stopped by SIGTERM (what the shell reports for a SIGTERM death).
TERMINATED_STATUS = 128 + signal.SIGTERM


class JobTerminated(BaseException):
    """The job received SIGTERM. A BaseException, so ``except Exception`` does not swallow it."""


#: Set by the SIGTERM handler of :func:`sigterm_raises`, cleared when a block starts: the
#: signal is remembered even where a library swallowed the exception it raised (a handler
#: that ran inside a finaliser or a callback), so :func:`raise_if_terminated` still stops.
_TERMINATED = threading.Event()

_TERMINATED_TEXT = ("terminated by SIGTERM (a cluster time limit, scancel, or Snakemake stopping); "
                    "the partial output was removed and the job can be rerun")


def raise_if_terminated() -> None:
    """Raise :class:`JobTerminated` if a :func:`sigterm_raises` block received SIGTERM.

    :func:`califlow.io.store.atomic_output` calls it before it commits an output, and
    :func:`workflow_job` when the body ends, so a SIGTERM whose exception was lost never
    lets a job commit or exit 0.
    """
    if _TERMINATED.is_set():
        raise JobTerminated(_TERMINATED_TEXT)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`JobTerminated` (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        _TERMINATED.set()
        raise JobTerminated(_TERMINATED_TEXT)

    _TERMINATED.clear()
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
def job_environment() -> Iterator[None]:
    """Within the block, :data:`JOB_ENVIRONMENT` is set where the user did not set it; restored after.

    Processes started inside (spawned CNMF-E workers, Snakemake) inherit it.
    """
    added = [k for k in JOB_ENVIRONMENT if k not in os.environ]
    os.environ.update({k: JOB_ENVIRONMENT[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def warnings_logged(logger: logging.Logger) -> Iterator[None]:
    """Within the block, Python warnings shown go to ``logger`` (the job's log) instead of stderr."""
    previous = warnings.showwarning

    def _show(message, category, filename, lineno, file=None, line=None):
        logger.warning("%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip())

    warnings.showwarning = _show
    try:
        yield
    finally:
        warnings.showwarning = previous


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
        with job_environment(), script_logging(log_path, blame=lambda: job_sources(smk)) as log, \
                warnings_logged(log), sigterm_raises():
            yield log
            raise_if_terminated()
    except JobTerminated:
        raise SystemExit(TERMINATED_STATUS) from None
