"""CNMF-E on an aligned store, end to end: seeds, patches, stitching, refinement, outputs.

:func:`run_cnmfe` is the single-job entry point.  The same work split into jobs is
:func:`plan` (cheap, deterministic), :func:`run_patch_group` (a group of patches, one
``.npz`` of results; any number of these can run as separate jobs) and
:func:`gather` (stitching, global refinement, post-processing, outputs).  A run in one
process and a run scattered over jobs execute the same functions on the same data, so
their results are identical.

Memory: the movie is held in RAM only when it takes at most half of
``memory_size_to_use``; otherwise patches read their blocks batch by batch (keeping as
many batches as the per-patch budget allows) and the global refinement streams the movie
in 64 x 64 tiles, so peak memory is set by the budget and the patch size, not by the
movie length.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from califlow.allocator import keep_freed_memory
from califlow.cnmfe.data import AlignedMovieSource, AlignedStore, load_movie, make_batches
from califlow.cnmfe.diagnostics import extraction_warnings
from califlow.cnmfe.fit import Fitter
from califlow.cnmfe.model import Model, footprint_centroids, normalize_footprints
from califlow.cnmfe.options import CnmfeOptions
from califlow.cnmfe.patches import Patch, PatchResult, load_patch_results, patch_grid, run_patch, save_patch_results
from califlow.cnmfe.postprocess import (
    final_deconvolution,
    remove_baseline,
    scale_to_noise,
    session_activity,
    silence_inactive,
    snr,
)
from califlow.cnmfe.seeds import find_seeds
from califlow.deconv.foopsi import thread_pools
from califlow.errors import InputError
from califlow.host import with_memory_budget
from califlow.io.store import atomic_output, create_image, open_group, set_provenance
from califlow.params import resolve_config
from califlow.progress import CONSOLE

__all__ = ["Plan", "plan", "run_patch_group", "gather", "run_cnmfe", "patch_groups", "patch_job_memory_bytes"]

log = logging.getLogger("califlow.cnmfe")

#: Share of ``memory_size_to_use`` the movie may take to be held in RAM.
MOVIE_SHARE = 0.5
#: Fixed memory (bytes) assumed for the interpreter, libraries and small arrays.
OVERHEAD_BYTES = 600 * 2 ** 20
#: Copies of one batch of a block a patch needs at once (data, centred copy, residual).
PATCH_COPIES = 3


@dataclass
class Plan:
    """Everything every job of one extraction agrees on (derived from the store and config)."""

    store: AlignedStore
    config: dict
    opts: CnmfeOptions
    Cn: np.ndarray
    PNR: np.ndarray
    seeds: np.ndarray
    seed_score: np.ndarray
    batches: list[tuple[int, int]]
    patches: list[Patch]

    @property
    def budget_bytes(self) -> float:
        return float(self.opts.memory_size_to_use) * 1e9

    def keep_movie(self) -> bool:
        t, h, w = self.store.shape
        return 4.0 * t * h * w <= MOVIE_SHARE * self.budget_bytes

    def patch_budget(self) -> float:
        """Bytes one patch may use: min(memory_size_per_patch, memory_size_to_use - overhead).

        It depends on the configuration only, so that every way of running the patches
        splits them into the same sub-batches (identical results).
        """
        free = self.budget_bytes - OVERHEAD_BYTES
        return max(0.0, min(self.opts.memory_size_per_patch * 1e9, free))

    def patch_batches(self, patch: Patch, budget: float) -> list[tuple[int, int]]:
        """The patch's batches, split into equal sub-batches when one batch does not fit."""
        out = []
        per_frame = 4.0 * patch.block_shape[0] * patch.block_shape[1]
        max_frames = max(2, int(budget / (PATCH_COPIES * per_frame))) if budget > 0 else 2
        for s, e in self.batches:
            n = max(1, math.ceil((e - s) / max_frames))
            edges = [s + round(i * (e - s) / n) for i in range(n + 1)]
            out.extend((edges[i], edges[i + 1]) for i in range(n))
        return out


def plan(aligned_path: str | os.PathLike, config: Mapping | None = None) -> Plan:
    """Open and validate the store, resolve the options, find the global seeds and patches."""
    store = AlignedStore(aligned_path)
    cfg = with_memory_budget(resolve_config(config or {}))
    opts = CnmfeOptions.from_resolved(cfg, fps=store.fps)
    Cn, PNR = store.global_projections()
    # seeds may lie on vessels (neurons under vessels are found); vessel components are removed
    # by their shape during the refinement (remove_BV)
    seeds, score = find_seeds(Cn, PNR, min_corr=opts.min_corr, min_pnr=opts.min_pnr, radius=opts.local_max_radius,
                              min_contrast=opts.min_contrast, contrast_window=opts.contrast_window)
    batches = make_batches(store.sessions, store.shape[0], opts.batch_sz)
    patches = patch_grid(store.shape[1:], opts.patch_dims, opts.w_overlap)
    log.info("%s: movie %s, %d sessions, %d batches, %d seeds, %d patches (cores <= %s, overlap %d)",
             store.path, store.shape, len(store.sessions), len(batches), len(seeds), len(patches),
             list(opts.patch_dims), opts.w_overlap)
    return Plan(store, cfg, opts, Cn, PNR, seeds, score, batches, patches)


def patch_groups(n_patches: int, n_jobs: int) -> list[list[int]]:
    """Patch indices of each of ``n_jobs`` jobs (round robin; empty groups allowed)."""
    n_jobs = max(1, int(n_jobs))
    return [list(range(j, n_patches, n_jobs)) for j in range(n_jobs)]


def patch_job_memory_bytes(aligned_path: str | os.PathLike, config: Mapping, job: int, n_jobs: int) -> int:
    """Memory (bytes) scatter job ``job`` of ``n_jobs`` needs, from the plan of its patches.

    The fixed overhead (:data:`OVERHEAD_BYTES`) plus, for its largest patch, the
    :data:`PATCH_COPIES` copies of its longest batch and the block over the whole movie held
    twice (the data and the residual caches of :func:`califlow.cnmfe.patches.run_patch`),
    at most ``memory_size_per_patch``. A job that is given this much plans no sub-batches
    (:meth:`Plan.patch_batches`), nor does one given more, so the scatter's results do not
    depend on the requests. Reads only the store's shape and sessions.
    """
    cfg = resolve_config(dict(config))["cnmfe"]
    store = AlignedStore(aligned_path)
    T, h, w = store.shape
    batches = make_batches(store.sessions, T, int(cfg["batch_sz"]))
    longest = max(e - s for s, e in batches)
    patches = patch_grid((h, w), tuple(cfg["patch_dims"]), int(cfg["w_overlap"]))
    mine = patch_groups(len(patches), n_jobs)[job]
    if not mine:
        return OVERHEAD_BYTES
    per_frame = max(4 * patches[i].block_shape[0] * patches[i].block_shape[1] for i in mine)
    need = per_frame * (PATCH_COPIES * longest + 2 * T)
    return int(OVERHEAD_BYTES + min(need, float(cfg["memory_size_per_patch"]) * 1e9))


#: Plans already made in this (worker) process, by store path and configuration.
_WORKER_PLANS: dict[tuple[str, str], Plan] = {}


def _patch_worker(args) -> tuple[PatchResult, float]:
    path, config, index, workers = args
    key = (path, json.dumps(config, sort_keys=True, default=str))
    if key not in _WORKER_PLANS:
        _WORKER_PLANS.clear()
        _WORKER_PLANS[key] = plan(path, config)
    p = _WORKER_PLANS[key]
    with _run_scope(p):
        return _run_one(p, p.patches[index], None, workers=workers)


@contextlib.contextmanager
def _run_scope(p: Plan) -> Iterator[None]:
    """What an extraction sets for its duration, undone after: glibc keeps freed memory when the
    movie fits in memory (speed; out of core, peak RSS first) and batch deconvolutions reuse threads."""
    with keep_freed_memory(p.keep_movie()), thread_pools():
        yield


def _run_one(p: Plan, patch: Patch, movie, workers: int) -> tuple[PatchResult, float]:
    """One patch's result and its wall time (s)."""
    t0 = time.perf_counter()
    budget = p.patch_budget()
    batches = p.patch_batches(patch, budget)
    if len(batches) > len(p.batches):
        log.warning("patch %d: batches longer than the per-patch memory allows were split into %d sub-batches "
                    "for the patch phase (the global refinement uses the %d batches)", patch.index, len(batches),
                    len(p.batches))
    per_frame = 4.0 * patch.block_shape[0] * patch.block_shape[1]
    share = budget / max(1, workers) - (4.0 * np.prod(p.store.shape) if movie is not None else 0.0)
    cache = max(0.0, share - PATCH_COPIES * per_frame * max(e - s for s, e in batches))
    return run_patch(p.store, patch, p.seeds, batches, p.opts, movie=movie, cache_bytes=cache), \
        time.perf_counter() - t0


def _reported(p: Plan, finished: Iterable[tuple[PatchResult, float]], n: int) -> list[PatchResult]:
    """The results of ``n`` patches as they finish, with one line each on the log and the console."""
    results = []
    for k, (res, seconds) in enumerate(finished, 1):
        log.info("cnmfe %s: patch %d/%d done (%d neurons, %.1f s)", p.store.path.parent.name, k, n, res.ids.size,
                 seconds, extra=CONSOLE)
        results.append(res)
    return results


def run_patch_group(p: Plan, indices: Sequence[int], movie: np.ndarray | None = None, *,
                    n_processes: int) -> list[PatchResult]:
    """Run the listed patches (sequentially, or in a pool of ``n_processes`` processes)."""
    indices = [int(i) for i in indices]
    for i in indices:
        if not 0 <= i < len(p.patches):
            raise InputError(f"patch index {i} is out of range: the field of view has {len(p.patches)} patches")
    workers = max(1, min(int(n_processes), len(indices)))
    if workers > 1:
        # a patch needs about PATCH_COPIES batches of its block; fewer workers if the budget is short
        need = max(PATCH_COPIES * 4.0 * p.patches[i].block_shape[0] * p.patches[i].block_shape[1]
                   * max(e - s for s, e in p.batches) for i in indices)
        workers = max(1, min(workers, int((p.budget_bytes - OVERHEAD_BYTES) // max(need, 1))))
    if workers <= 1:
        return _reported(p, (_run_one(p, p.patches[i], movie, workers=1) for i in indices), len(indices))
    # spawned workers (fork is unsafe once numba's OpenMP threads run) rebuild the plan and
    # read their blocks from the store: each patch is computed exactly as in a sequential run
    ctx = multiprocessing.get_context("spawn")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with _worker_threads(max(1, cores // workers)), ctx.Pool(workers) as pool:
        results = _reported(p, pool.imap(_patch_worker, [(str(p.store.path), p.config, i, workers) for i in indices],
                                         chunksize=1), len(indices))
        pool.close()
        pool.join()
    return results


#: Environment variables that size the thread pools of numba, OpenMP and BLAS at start-up.
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _worker_threads(n: int):
    """Processes spawned inside start with ``n`` threads per pool (no oversubscription of the cores)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: str(n) for k in THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stitch(p: Plan, results: Sequence[PatchResult]) -> Model:
    """One whole-field model from the components the patches own (in patch order)."""
    _, h, w = p.store.shape
    results = sorted(results, key=lambda r: r.index)
    seen = [r.index for r in results]
    if sorted(set(seen)) != list(range(len(p.patches))):
        missing = sorted(set(range(len(p.patches))) - set(seen))
        raise InputError(f"patch results are incomplete: missing patch(es) {missing} of {len(p.patches)}")
    A = sp.csc_matrix(sp.hstack([r.A for r in results], format="csc"), dtype=np.float32)
    cat = lambda name: np.concatenate([getattr(r, name) for r in results])  # noqa: E731
    return Model((h, w), list(p.batches), A, cat("C"), cat("C_raw"), cat("S"), cat("ids").astype(np.int64),
                 _per_batch(results, "sn", p).astype(np.float32), _per_batch(results, "g", p))


def _per_batch(results, name, p: Plan) -> np.ndarray:
    """Per-batch arrays of patch results mapped to the global batches (sub-batches averaged)."""
    parts = []
    for r in results:
        arr = getattr(r, name)
        if arr.shape[1] == len(p.batches):
            parts.append(arr)
        else:
            with np.errstate(all="ignore"):
                mean = np.nanmean(arr, axis=1, keepdims=True)
            parts.append(np.repeat(mean, len(p.batches), axis=1))
    return np.concatenate(parts)


@dataclass
class Extraction:
    """Final outputs of an extraction (neurons ordered by SNR)."""

    A: np.ndarray          # (K, H, W)
    C: np.ndarray          # (K, T)
    C_raw: np.ndarray      # (K, T)
    S: np.ndarray          # (K, T)
    b0: np.ndarray         # (H, W)
    A_sessions: np.ndarray  # (S, K, H, W)
    snr: np.ndarray        # (K,)
    ids: np.ndarray        # (K,)
    centroids: np.ndarray  # (K, 2)
    events: np.ndarray     # (K, S)
    active: np.ndarray     # (K, S)
    warnings: list = field(default_factory=list)  # extraction_warnings (collapse, silent sessions)


def gather(p: Plan, results: Sequence[PatchResult], movie: np.ndarray | None = None) -> Extraction:
    """Stitch the patches, refine globally, post-process; returns the final extraction."""
    opts = p.opts
    model = stitch(p, results)
    source = AlignedMovieSource(p.store, p.batches, movie=movie)
    fitter = Fitter(source, opts, p.store.vessel_mask(opts.bv_threshold) if opts.remove_BV else None)
    log.info("stitched %d components from %d patches", model.K, len(results))
    fitter.clean(model)
    n = max(0, opts.refine_iter)
    for it in range(n):
        fitter.update_background(model)
        fitter.update_spatial(model)
        fitter.update_temporal(model, refit_g=(it == n - 1))
        fitter.clean(model)
        log.info("global refinement %d/%d: %d components", it + 1, n, model.K)
    if model.b0 is None or len(model.W) != len(model.batches):
        fitter.update_background(model)
    A_sessions = _session_footprints(p, model, fitter, movie)
    return _finish(p, model, A_sessions)


def _session_footprints(p: Plan, model: Model, fitter: Fitter, movie) -> list[sp.csc_matrix]:
    sess = [(s["start"], s["stop"]) for s in p.store.sessions]
    if sess == list(model.batches):
        return fitter.batch_footprints(model)
    view = model.copy()
    view.batches = sess
    view.b0, view.W = None, []
    view.sn = np.ones((model.K, len(sess)), np.float32)
    f2 = Fitter(AlignedMovieSource(p.store, sess, movie=movie), p.opts)
    f2.update_background(view)
    return f2.batch_footprints(view)


def _finish(p: Plan, model: Model, A_sessions: list[sp.csc_matrix]) -> Extraction:
    opts = p.opts
    _, h, w = p.store.shape
    K, T = model.C.shape
    C = np.zeros((K, T), np.float32)
    S = np.zeros((K, T), np.float32)
    C_raw = np.zeros((K, T), np.float32)
    for b in range(len(model.batches)):
        cols = model.frames(b)
        raw = remove_baseline(scale_to_noise(model.C_raw[:, cols], None), opts.fps)
        C_raw[:, cols] = raw
        C[:, cols], S[:, cols] = final_deconvolution(raw, opts.final_deconv, opts.fps)
    A, _ = normalize_footprints(model.A)
    quality = snr(C, C_raw)
    order = np.argsort(-quality, kind="stable")
    events, active = session_activity(C_raw, S, p.store.sessions, **p.opts.session_activity)
    # inactive sessions: no calcium and no events in the model; C_raw stays as measured
    C, S = silence_inactive(C, active, p.store.sessions), silence_inactive(S, active, p.store.sessions)
    dense = lambda M: np.asarray(M[:, order].toarray().T.reshape(K, h, w), np.float32)  # noqa: E731
    b0 = model.b0.min(axis=0).reshape(h, w) if model.b0 is not None else np.zeros((h, w), np.float32)
    A_s = np.stack([dense(normalize_footprints(a)[0]) for a in A_sessions]) if K else \
        np.zeros((len(A_sessions), 0, h, w), np.float32)
    return Extraction(dense(A), C[order], C_raw[order], S[order], b0.astype(np.float32), A_s, quality[order],
                      model.ids[order], footprint_centroids(A, (h, w))[order], events[order], active[order])


def write_outputs(p: Plan, ex: Extraction, out_path: str | os.PathLike, cells_path: str | os.PathLike | None = None,
                  inputs: Mapping | None = None) -> None:
    """Write ``cnmfe.zarr`` (and ``cells.csv``: :func:`califlow.cells_step.write_cells_csv`) atomically."""
    K, T = ex.C.shape
    _, h, w = p.store.shape
    with atomic_output(out_path) as tmp:
        g = open_group(tmp, "w")
        g.create_array("A", shape=(K, h, w), chunks=(1, h, w), dtype="float32", fill_value=0)
        if K:
            g["A"][...] = ex.A
        for name in ("C", "C_raw", "S"):
            arr = g.create_array(name, shape=(K, T), chunks=(max(1, min(K, 64)), min(T, 10000)), dtype="float32",
                                 fill_value=0)
            if K:
                arr[...] = getattr(ex, name)
        n_s = ex.A_sessions.shape[0]
        arr = g.create_array("A_sessions", shape=(n_s, K, h, w), chunks=(1, 1, h, w), dtype="float32", fill_value=0)
        if K:
            arr[...] = ex.A_sessions
        create_image(g, "b0", ex.b0)
        create_image(g, "Cn", p.Cn)
        create_image(g, "PNR", p.PNR)
        create_image(g, "snr", ex.snr.astype(np.float32))
        create_image(g, "ids", ex.ids.astype(np.int64))
        create_image(g, "active", ex.active)
        create_image(g, "seeds", p.seeds.astype(np.int64).reshape(-1, 2))
        set_provenance(g, p.config, inputs or {"aligned": str(p.store.path)},
                       sessions=p.store.sessions, batches=[list(b) for b in p.batches], fps=p.opts.fps,
                       cnmfe_options=p.opts.to_dict(),
                       units={"A": "peak-normalised footprints in the aligned frame",
                              "C_raw": "noise units per batch (raw trace / its noise level, slow baseline removed)",
                              "C": "denoised calcium (final AR deconvolution), noise units; 0 in sessions "
                                   "where the neuron is inactive",
                              "S": "deconvolved activity, noise units; 0 in sessions where the neuron is inactive"},
                       order="decreasing SNR", warnings=list(ex.warnings),
                       n_seeds=int(len(p.seeds)))
    if cells_path is not None:
        from califlow.cells_step import write_cells_csv

        write_cells_csv(out_path, p.store.path, cells_path, p.config)


def run_cnmfe(aligned_path: str | os.PathLike, out_path: str | os.PathLike, config: Mapping | None = None, *,
              cells_path: str | os.PathLike | None = None, patch_files: Sequence[str | os.PathLike] | None = None,
              n_processes: int | None = None) -> Extraction:
    """Patched CNMF-E of an aligned store, written to ``out_path`` (``cnmfe.zarr``).

    Parameters
    ----------
    aligned_path : path of ``aligned.zarr`` (movie (T, H, W) float32, cn and pnr (S, H, W)).
    out_path : path of the ``cnmfe.zarr`` to write.
    config : califlow configuration (the ``cnmfe`` group and ``general.gSig`` are used).
    cells_path : optional path of ``cells.csv``.
    patch_files : optional ``.npz`` files written by :func:`run_patch_group` jobs (scatter);
        when given, no patch is computed here (gather).
    n_processes : patches run in parallel (default ``cnmfe.n_processes``).
    """
    p = plan(aligned_path, config)
    with _run_scope(p):
        n_processes = int(n_processes or p.opts.n_processes)
        # the movie loads while pool workers (which read their blocks from the store) start
        with ThreadPoolExecutor(max_workers=1) as loader:
            pending = loader.submit(load_movie, p.store) if p.keep_movie() else None
            if patch_files:
                results = [r for f in patch_files for r in load_patch_results(f)]
            else:
                in_pool = n_processes > 1 and len(p.patches) > 1
                results = run_patch_group(p, range(len(p.patches)), n_processes=n_processes,
                                          movie=None if (in_pool or pending is None) else pending.result())
            movie = None if pending is None else pending.result()
        ex = gather(p, results, movie=movie)
        ex.warnings = diagnose(p, ex)
        write_outputs(p, ex, out_path, cells_path)
    log.info("%d neurons written to %s", ex.C.shape[0], out_path)
    return ex


def diagnose(p: Plan, ex: Extraction) -> list[str]:
    """Collapse and silent-session warnings of an extraction (:mod:`califlow.cnmfe.diagnostics`), logged."""
    out = extraction_warnings(len(p.seeds), ex.C.shape[0], ex.active, [s["name"] for s in p.store.sessions], p.opts,
                              p.config["general"].get("neuron_diameter"), animal=p.store.path.parent.name)
    for w in out:
        log.warning("%s", w)
    return out


def run_patch_job(aligned_path: str | os.PathLike, out_file: str | os.PathLike, config: Mapping | None,
                  job: int, n_jobs: int) -> list[int]:
    """One scatter job: the patches of group ``job`` of ``n_jobs``, saved to ``out_file``."""
    p = plan(aligned_path, config)
    if not 0 <= job < n_jobs:
        raise InputError(f"patch job {job} is out of range for {n_jobs} jobs")
    idx = patch_groups(len(p.patches), n_jobs)[job]
    with _run_scope(p):
        save_patch_results(run_patch_group(p, idx, n_processes=1), out_file)  # one process per scatter job
    return idx
