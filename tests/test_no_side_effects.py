"""Importing or calling califlow leaves the process as it was; process-wide settings are scoped.

A notebook that imports califlow must keep its environment, streams, signal handlers, threads
and allocator; a workflow job (where califlow owns the process) sets OMP_WAIT_POLICY, routes
its logging, and gets one console line per finished CNMF-E patch.
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import subprocess
import sys
import textwrap
import threading
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _python(code: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; fails the test with its output when it exits non-zero."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _deconv_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("califlow-deconv")]


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------
IMPORT_EVERYTHING = """
import importlib, json, logging, os, pkgutil, signal, sys, threading, warnings

def import_all(names):
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module some library loads only in its own way
            pass

# the libraries califlow uses, imported first: their own side effects (OpenCV sets
# LD_LIBRARY_PATH) are theirs; what is measured is what califlow's own modules do
import_all(json.loads(sys.argv[1]) if len(sys.argv) > 1 else [])
import numpy as np

SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE]

def state():
    return {
        "environ": dict(os.environ),
        "streams": [id(sys.stdin), id(sys.stdout), id(sys.stderr), id(sys.excepthook)],
        "threads": threading.active_count(),
        "signals": [repr(signal.getsignal(s)) for s in SIGNALS],
        "showwarning": repr(warnings.showwarning),
        "root_logger": [logging.root.level, len(logging.root.handlers)],
        "califlow_logger": [logging.getLogger("califlow").level, len(logging.getLogger("califlow").handlers)],
        "numpy_errors": np.geterr(),
        "cwd": os.getcwd(),
    }

loaded = set(sys.modules)
before = state()
import califlow
imported, failed = [], []
for m in pkgutil.walk_packages(califlow.__path__, "califlow."):
    try:
        importlib.import_module(m.name)
        imported.append(m.name)
    except ImportError as exc:  # an optional dependency that is not installed
        failed.append(f"{m.name}: {exc}")
after = state()
changed = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
if "environ" in changed:
    b, a = changed["environ"]
    changed["environ"] = {k: [b.get(k), a.get(k)] for k in set(b) | set(a) if b.get(k) != a.get(k)}
maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
libraries = sorted(n for n in set(sys.modules) - loaded if n.split(".")[0] != "califlow")
print(json.dumps({"changed": changed, "imported": imported, "failed": failed, "gomp": "libgomp" in maps,
                  "libraries": libraries}))
"""


def _import_everything(libraries: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING, json.dumps(libraries)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_califlow_and_every_submodule_changes_nothing_process_wide():
    libraries = _import_everything([])["libraries"]  # what importing califlow loads besides itself
    out = _import_everything(libraries)
    assert len(out["imported"]) > 50, out["failed"]  # the walk reached the whole package
    assert out["changed"] == {}, out["changed"]
    # libgomp is loaded by the first parallel kernel, not on import: a job's OMP_WAIT_POLICY still counts
    assert not out["gomp"]


# --------------------------------------------------------------------------------------------
# OMP_WAIT_POLICY in jobs and the command
# --------------------------------------------------------------------------------------------
JOB_WITH_A_PARALLEL_KERNEL = """
import os, sys
from types import SimpleNamespace
import numba, numpy as np
import califlow.cnmfe, califlow.deconv, califlow.motion.session  # what the job scripts import first
from califlow.job import workflow_job

@numba.njit(parallel=True)
def total(x):
    s = 0.0
    for i in numba.prange(x.size):
        s += x[i]
    return s

assert "OMP_WAIT_POLICY" not in os.environ
stderr = sys.stderr
smk = SimpleNamespace(log=[sys.argv[1]] if len(sys.argv) > 1 else [], wildcards=SimpleNamespace(), config={})
with workflow_job(smk):
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert sys.stderr is stderr
    assert total(np.ones(1000)) == 1000.0
    print("layer", numba.threading_layer())
assert "OMP_WAIT_POLICY" not in os.environ
"""


def test_a_workflow_job_sets_omp_wait_policy_before_openmp_starts():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(NUMBA_THREADING_LAYER="omp", OMP_DISPLAY_ENV="VERBOSE")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(JOB_WITH_A_PARALLEL_KERNEL)], capture_output=True,
                          text=True, env=env, timeout=300)
    if proc.returncode != 0 and "threading layer" in proc.stderr.lower():
        pytest.skip("numba's OpenMP threading layer is not available here")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "layer omp" in proc.stdout
    # libgomp prints the settings it read when it started (OMP_DISPLAY_ENV): idle threads do not
    # spin (GOMP_SPINCOUNT 0) only when it found OMP_WAIT_POLICY=PASSIVE (300000 by default)
    assert "GOMP_SPINCOUNT = '0'" in proc.stderr, proc.stderr[-3000:]


def test_the_users_omp_wait_policy_wins_and_is_kept(monkeypatch, tmp_path):
    from califlow.job import workflow_job

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with workflow_job(SimpleNamespace(log=[str(tmp_path / "job.log")], wildcards=SimpleNamespace(), config={})):
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_califlow_command_runs_with_omp_wait_policy_and_restores_it(monkeypatch):
    from califlow import cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen = {}
    monkeypatch.setattr(cli, "_dispatch", lambda argv: seen.setdefault("policy", os.environ.get("OMP_WAIT_POLICY")))
    cli.main(["--version"])
    assert seen["policy"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ


# --------------------------------------------------------------------------------------------
# allocator
# --------------------------------------------------------------------------------------------
ALLOCATOR = """
import numpy as np
from califlow.allocator import freed_memory_kept, keep_freed_memory

def in_heap(a):
    '''Whether the data of ``a`` lie in the brk heap (glibc served it from its heap, not by mmap).'''
    addr = a.ctypes.data
    for line in open("/proc/self/maps"):
        parts = line.split()
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        if lo <= addr < hi:
            return len(parts) > 5 and parts[5] == "[heap]"
    raise AssertionError("address not mapped")

def big():
    return np.ones(16 * 2 ** 20, np.float32)  # 64 MiB: mmapped by glibc's defaults

assert not freed_memory_kept() and not in_heap(big())
with keep_freed_memory(True) as ok:
    assert ok and freed_memory_kept() and in_heap(big())
    with keep_freed_memory(False):
        assert not freed_memory_kept() and not in_heap(big())
    assert freed_memory_kept() and in_heap(big())  # the enclosing block's setting is back
assert not freed_memory_kept() and not in_heap(big())  # glibc's defaults again
try:
    with keep_freed_memory(True):
        raise RuntimeError("a failing run")
except RuntimeError:
    pass
assert not freed_memory_kept() and not in_heap(big())
with keep_freed_memory(False) as ok:  # asking for the defaults changes nothing
    assert ok and not freed_memory_kept()
print("ok")
"""


@pytest.mark.skipif(not GLIBC, reason="the allocator is tuned on Linux with glibc only")
def test_keeping_freed_memory_is_scoped_and_glibc_defaults_return_after():
    assert _python(ALLOCATOR).stdout.strip() == "ok"


# --------------------------------------------------------------------------------------------
# deconvolution thread pools
# --------------------------------------------------------------------------------------------
def _traces(K: int = 8, T: int = 400) -> np.ndarray:
    rng = np.random.default_rng(0)
    spikes = (rng.random((K, T)) < 0.02) * rng.uniform(1, 3, (K, T))
    c = np.zeros((K, T))
    for t in range(1, T):
        c[:, t] = 0.9 * c[:, t - 1] + spikes[:, t]
    return c + 0.1 * rng.standard_normal((K, T))


def test_a_batch_deconvolution_leaves_no_threads_behind():
    from califlow.deconv import deconvolve_batch

    before = threading.active_count()
    res = deconvolve_batch(_traces(), p=1, n_threads=2)
    assert res.ok.all()
    assert _deconv_threads() == []
    assert threading.active_count() == before


def test_pools_last_for_a_run_and_are_shut_down_at_its_end():
    from califlow.deconv import deconvolve_batch, deconvolve_cnmfe_batch
    from califlow.deconv.foopsi import thread_pools

    Y = _traces()
    reference = deconvolve_batch(Y, p=1, n_threads=1)
    with thread_pools():
        first = deconvolve_batch(Y, p=1, n_threads=2)
        threads = set(_deconv_threads())
        assert 1 <= len(threads) <= 2
        with thread_pools():  # an inner block reuses the run's pools
            deconvolve_cnmfe_batch(Y, {"type": "ar1"}, n_threads=2)
        # the first call's threads still serve (a pool per call would have joined them), at most 2 in all
        assert all(t.is_alive() for t in threads)
        assert threads <= set(_deconv_threads()) and len(_deconv_threads()) <= 2
    assert _deconv_threads() == []
    assert not any(t.is_alive() for t in threads)
    np.testing.assert_array_equal(first.C, reference.C)


# --------------------------------------------------------------------------------------------
# logging: no stream swapped; console lines
# --------------------------------------------------------------------------------------------
def test_script_logging_keeps_sys_stderr_and_shows_only_console_records(tmp_path):
    from califlow.progress import CONSOLE, script_logging

    logger = logging.getLogger("califlow")
    level, handlers = logger.level, list(logger.handlers)
    stderr, console = sys.stderr, io.StringIO()
    with script_logging(tmp_path / "job.log", console=console) as log:
        assert sys.stderr is stderr
        log.info("for the log only")
        logging.getLogger("califlow.cnmfe").info("cnmfe m1: patch 1/4 done", extra=CONSOLE)
    assert console.getvalue() == "cnmfe m1: patch 1/4 done\n"
    text = (tmp_path / "job.log").read_text()
    assert "for the log only" in text and "califlow.cnmfe: cnmfe m1: patch 1/4 done" in text
    assert logger.level == level and logger.handlers == handlers


def test_a_jobs_warnings_go_to_its_log_not_the_console(tmp_path, capsys):
    from califlow.job import workflow_job

    showwarning = warnings.showwarning
    with workflow_job(SimpleNamespace(log=[str(tmp_path / "job.log")], wildcards=SimpleNamespace(), config={})):
        warnings.warn("a library complains", RuntimeWarning, stacklevel=1)
    assert warnings.showwarning is showwarning
    assert "RuntimeWarning: a library complains" in (tmp_path / "job.log").read_text()
    assert "a library complains" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_aligned(tmp_path_factory):
    from califlow.cnmfe.simulated import write_aligned_store
    from califlow.simulate import preset, simulate_animal

    cfg = preset("demo", height=60, width=60, n_sessions=2, frames_per_session=200, n_neurons=8,
                 n_vessels=0, n_local_sources=0, translation=0.0, deformation=0.0)
    path = tmp_path_factory.mktemp("m1") / "aligned.zarr"
    write_aligned_store(simulate_animal(cfg, seed=5), path)
    return path


def test_each_finished_patch_is_one_console_line_and_the_run_leaves_the_process_clean(small_aligned, tmp_path):
    from califlow.allocator import freed_memory_kept
    from califlow.cnmfe import run_patch_job
    from califlow.progress import script_logging

    config = {"cnmfe": {"patch_dims": [30, 30], "w_overlap": 10, "memory_size_to_use": 2}}
    console = io.StringIO()
    with script_logging(tmp_path / "job.log", console=console):
        done = run_patch_job(small_aligned, tmp_path / "job0.npz", config, 0, 1)
    lines = console.getvalue().splitlines()
    name = small_aligned.parent.name
    assert len(lines) == len(done) > 1, lines
    for k, line in enumerate(lines, 1):
        assert line.startswith(f"cnmfe {name}: patch {k}/{len(done)} done (") and line.endswith(" s)"), line
        assert " neurons, " in line
    assert all(line in (tmp_path / "job.log").read_text() for line in lines)
    # zarr's own IO threads may stay (they are zarr's); none of califlow's does
    assert [t.name for t in threading.enumerate() if t.name.startswith("califlow")] == []
    assert not freed_memory_kept()
