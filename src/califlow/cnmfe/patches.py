"""Patches: the field of view cut into independent units of work, and their stitching.

The cores of the patches tile the field of view with at most ``patch_dims`` pixels each
(cores are shrunk evenly so that they tile exactly; never enlarged); the block a patch
works on is its core plus ``w_overlap`` pixels on every side (clipped at the border).  A
patch initialises every global seed inside its block (neighbours' seeds included, so
their light is explained away) and runs the CNMF-E loop on the block held in memory; it
keeps the components it *owns*: seeds inside its core, and neurons found in its residual
whose footprint peak lies inside its core.  Because each seed lies in exactly one core,
seeded neurons are never duplicated; residual neurons found twice in an overlap are
merged after stitching.

A patch depends only on the aligned store, the options and its index, so the same
:func:`run_patch` runs in a process pool, in a loop, or as one Snakemake job per patch
group, with identical results.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from califlow.cnmfe.data import AlignedStore, InMemorySource
from califlow.cnmfe.fit import Fitter
from califlow.cnmfe.initialize import initialize
from califlow.cnmfe.model import Model, footprint_peaks
from califlow.cnmfe.residual import residual_seeds, residual_source
from califlow.errors import InputError

__all__ = ["Patch", "patch_grid", "PatchResult", "run_patch", "save_patch_results", "load_patch_results",
           "patch_memory_bytes"]

log = logging.getLogger("califlow.cnmfe")

#: Identities of neurons found in a residual start here (seeded neurons use the seed index).
RESIDUAL_ID_BASE = 1_000_000


@dataclass(frozen=True)
class Patch:
    """One patch: its index, its core and its block as (y0, y1, x0, x1) (stop exclusive)."""

    index: int
    core: tuple[int, int, int, int]
    block: tuple[int, int, int, int]

    @property
    def block_shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.block
        return y1 - y0, x1 - x0


def _edges(n: int, size: int) -> list[int]:
    k = max(1, math.ceil(n / size))
    return [int(round(i * n / k)) for i in range(k + 1)]


def patch_grid(shape: tuple[int, int], patch_dims: tuple[int, int], w_overlap: int) -> list[Patch]:
    """Patches of an (H, W) field of view, in raster order.

    Cores are at most ``patch_dims`` (the field is split into ``ceil(H / ph)`` x
    ``ceil(W / pw)`` nearly equal cores); blocks extend cores by ``w_overlap``.
    """
    h, w = int(shape[0]), int(shape[1])
    ey, ex = _edges(h, int(patch_dims[0])), _edges(w, int(patch_dims[1]))
    out = []
    for i in range(len(ey) - 1):
        for j in range(len(ex) - 1):
            core = (ey[i], ey[i + 1], ex[j], ex[j + 1])
            block = (max(0, core[0] - w_overlap), min(h, core[1] + w_overlap),
                     max(0, core[2] - w_overlap), min(w, core[3] + w_overlap))
            out.append(Patch(len(out), core, block))
    return out


def patch_memory_bytes(patch: Patch, n_frames: int) -> int:
    """Bytes of one patch's block over ``n_frames`` frames (float32)."""
    bh, bw = patch.block_shape
    return 4 * bh * bw * int(n_frames)


@dataclass
class PatchResult:
    """Components owned by one patch, in whole-field pixel indices.

    ``A`` csc (H*W, K); ``C``, ``C_raw``, ``S`` (K, T); ``sn`` (K, n_batches);
    ``g`` (K, n_batches, p); ``ids`` (K,).
    """

    index: int
    A: sp.csc_matrix
    C: np.ndarray
    C_raw: np.ndarray
    S: np.ndarray
    sn: np.ndarray
    g: np.ndarray
    ids: np.ndarray


def _to_global(A_block: sp.csc_matrix, block: tuple[int, int, int, int], shape: tuple[int, int]) -> sp.csc_matrix:
    y0, y1, x0, x1 = block
    bw = x1 - x0
    A = sp.csc_matrix(A_block)
    rows = A.indices
    gy, gx = rows // bw + y0, rows % bw + x0
    return sp.csc_matrix((A.data, gy * shape[1] + gx, A.indptr), shape=(shape[0] * shape[1], A.shape[1]))


def run_patch(store: AlignedStore, patch: Patch, seeds: np.ndarray, batches: list[tuple[int, int]], opts,
              movie: np.ndarray | None = None, cache_bytes: float | None = None) -> PatchResult:
    """CNMF-E on one patch: initialise, iterate, search the residual, keep owned components.

    Parameters
    ----------
    store : AlignedStore
    patch : Patch
    seeds : ndarray (N, 2) int
        The global seed list (whole-field coordinates), brightest first; the seed index is
        the component identity.
    batches : list of (start, stop)
    opts : CnmfeOptions
    movie : ndarray (T, H, W), optional
        The whole movie already in memory (the block is then sliced from it).
    cache_bytes : float, optional
        Batches of the block kept in memory (None: all); others are read again when needed.
    """
    y0, y1, x0, x1 = patch.block

    def load(b: int) -> np.ndarray:
        s, e = batches[b]
        if movie is not None:
            return np.array(movie[s:e, y0:y1, x0:x1], dtype=np.float32)
        return store.read(s, e, slice(y0, y1), slice(x0, x1))

    source = InMemorySource(load, batches, shape=patch.block_shape,
                            cache_bytes=None if cache_bytes is None else int(cache_bytes))
    inside = (seeds[:, 0] >= y0) & (seeds[:, 0] < y1) & (seeds[:, 1] >= x0) & (seeds[:, 1] < x1)
    ids = np.flatnonzero(inside)
    local = seeds[ids] - np.array([y0, x0])
    model = initialize(source, local, ids, opts)
    log.info("patch %d: block %s, %d seeds, %d initialised", patch.index, patch.block, ids.size, model.K)
    vessels = store.vessel_mask(opts.bv_threshold) if opts.remove_BV else None
    fitter = Fitter(source, opts, None if vessels is None else vessels[y0:y1, x0:x1])
    n_iter = max(1, opts.max_iter)
    ran = fitter.iterate(model, 1)
    if opts.residual_search and n_iter > 1:
        cn_global, _ = store.global_projections()
        res = residual_source(source, model, fitter, None if cache_bytes is None else int(cache_bytes))
        found = residual_seeds(res, source, model, fitter, opts, cn_global[y0:y1, x0:x1])
        if len(found):
            extra = initialize_residual(res, model, found, patch, opts)
            log.info("patch %d: %d residual seeds, %d new components", patch.index, len(found), extra)
        del res
    if n_iter > 1:
        ran += fitter.iterate(model, n_iter - 1)
    log.info("patch %d: %d of max_iter %d iterations run, %d components", patch.index, ran, n_iter, model.K)
    # ownership: seeded components by their seed, residual ones by their footprint peak
    cy0, cy1, cx0, cx1 = patch.core
    peaks = footprint_peaks(model.A, model.shape) + np.array([y0, x0])
    seeded = model.ids < RESIDUAL_ID_BASE
    by_seed = seeds[np.where(seeded, model.ids, 0)] if len(seeds) else peaks  # no global seed: residual only
    pos = np.where(seeded[:, None], by_seed, peaks)
    own = (pos[:, 0] >= cy0) & (pos[:, 0] < cy1) & (pos[:, 1] >= cx0) & (pos[:, 1] < cx1)
    model.keep(own)
    _, h, w = store.shape
    g = model.g if model.g is not None else np.full((model.K, len(batches), 1), np.nan)
    return PatchResult(patch.index, _to_global(model.A, patch.block, (h, w)), model.C, model.C_raw, model.S,
                       model.sn, g, model.ids)


def initialize_residual(res_source: InMemorySource, model: Model, found: np.ndarray, patch: Patch, opts) -> int:
    """Initialise components at residual seeds (block coordinates) and append them to ``model``."""
    ids = RESIDUAL_ID_BASE + patch.index * 10_000 + np.arange(len(found))
    new = initialize(res_source, found, ids, opts)
    if new.K == 0:
        return 0
    model.A = sp.csc_matrix(sp.hstack([model.A, new.A], format="csc"))
    model.C = np.vstack([model.C, new.C])
    model.C_raw = np.vstack([model.C_raw, new.C_raw])
    model.S = np.vstack([model.S, new.S])
    model.ids = np.concatenate([model.ids, new.ids])
    model.sn = np.vstack([model.sn, new.sn])
    if model.g is not None and new.g is not None:
        model.g = np.concatenate([model.g, new.g])
    return new.K


def save_patch_results(results: list[PatchResult], path: str | Path) -> None:
    """Write patch results to one ``.npz`` file (atomically)."""
    from califlow.io.store import atomic_output

    arrays = {"indices": np.array([r.index for r in results], np.int64)}
    for r in results:
        A = sp.csc_matrix(r.A)
        p = f"p{r.index}_"
        arrays.update({p + "A_data": A.data, p + "A_indices": A.indices, p + "A_indptr": A.indptr,
                       p + "A_shape": np.array(A.shape), p + "C": r.C, p + "C_raw": r.C_raw, p + "S": r.S,
                       p + "sn": r.sn, p + "g": r.g, p + "ids": r.ids})
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_patch_results(path: str | Path) -> list[PatchResult]:
    """Read the patch results written by :func:`save_patch_results`."""
    path = Path(path)
    try:
        z = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read CNMF-E patch results ({exc})") from None
    out = []
    with z:
        for i in z["indices"]:
            p = f"p{int(i)}_"
            A = sp.csc_matrix((z[p + "A_data"], z[p + "A_indices"], z[p + "A_indptr"]), shape=tuple(z[p + "A_shape"]))
            out.append(PatchResult(int(i), A, z[p + "C"], z[p + "C_raw"], z[p + "S"], z[p + "sn"], z[p + "g"],
                                   z[p + "ids"]))
    return out
