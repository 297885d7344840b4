"""A job stopped by SIGTERM never commits an output or exits 0, even where a library swallowed the signal."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest

from califlow.io.store import atomic_output
from califlow.job import TERMINATED_STATUS, JobTerminated, sigterm_raises, workflow_job


def _swallowed_sigterm() -> None:
    """SIGTERM this process while a library-like ``except BaseException`` drops the exception."""
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes of the main thread
            pass
    except BaseException:  # noqa: BLE001 - what a careless finaliser or callback does
        pass


def _job(tmp_path):
    return SimpleNamespace(log=[str(tmp_path / "job.log")], wildcards=SimpleNamespace(), config={})


def test_a_swallowed_sigterm_still_ends_the_job_with_status_143(tmp_path):
    with pytest.raises(SystemExit) as stopped, workflow_job(_job(tmp_path)):
        _swallowed_sigterm()
    assert stopped.value.code == TERMINATED_STATUS
    assert "terminated by SIGTERM" in (tmp_path / "job.log").read_text()


def test_a_swallowed_sigterm_commits_no_output(tmp_path):
    final = tmp_path / "out.npy"
    with pytest.raises(JobTerminated), sigterm_raises(), atomic_output(final) as tmp:
        np.save(tmp, np.zeros(3))
        _swallowed_sigterm()
    assert list(tmp_path.iterdir()) == []


def test_a_sigterm_of_an_earlier_block_does_not_stop_the_next(tmp_path):
    with pytest.raises(JobTerminated), sigterm_raises():
        _swallowed_sigterm()
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    with sigterm_raises(), atomic_output(tmp_path / "b.npy") as tmp:
        np.save(tmp, np.ones(2))
    assert (tmp_path / "b.npy").exists()
