"""Merging duplicated components and removing false positives.

Three merge rules, as CaliAli runs them after each refinement iteration:

1. distance + correlation: footprint peaks closer than ``dmin`` px and traces correlated
   above ``merge_thr``;
2. ``merge_thr_spatial`` = [spatial, calcium, spike]: overlapping footprints whose
   footprint cosine similarity, trace correlation and spike correlation all reach the
   thresholds;
3. near-identical footprints (cosine >= 0.9) whatever their traces (duplicates).

Groups of pairs are merged into one component by a rank-1 non-negative factorisation of
``sum_k a_k c_k^T``.  False positives are footprints smaller than ``min_pixel`` pixels,
components whose denoised trace is zero everywhere (silent) and, with ``remove_BV``,
elongated components lying on the blood-vessel mask (vessels; see :func:`vessel_shaped`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from califlow.cnmfe.model import Model, footprint_areas, footprint_peaks, footprint_shapes, normalize_footprints

__all__ = ["merge_components", "remove_false_positives", "vessel_shaped", "trace_correlation_matrix"]

#: Footprint cosine similarity above which two components are the same neuron regardless of traces.
DUPLICATE_SPATIAL = 0.9
#: A component on the vessel mask with a major/minor axis ratio above this is a vessel.
VESSEL_ELONGATION = 3.0
#: ... when more than this share of its footprint (above a quarter of its peak) is on the mask.
VESSEL_SHARE = 0.5


def trace_correlation_matrix(X: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Pearson correlation of rows ``X[i]`` and ``X[j]`` for each pair (i, j); 0 for flat rows."""
    if len(pairs) == 0:
        return np.zeros(0)
    Xc = X - X.mean(axis=1, keepdims=True)
    nrm = np.sqrt(np.einsum("ij,ij->i", Xc, Xc, dtype=np.float64))
    i, j = pairs[:, 0], pairs[:, 1]
    num = np.einsum("ij,ij->i", Xc[i], Xc[j], dtype=np.float64)
    den = nrm[i] * nrm[j]
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def _candidate_pairs(model: Model, opts) -> np.ndarray:
    """Pairs (i < j) to merge under the three rules."""
    K = model.K
    if K < 2:
        return np.zeros((0, 2), np.int64)
    A = sp.csc_matrix(model.A)
    nrm = np.sqrt(np.asarray(A.multiply(A).sum(axis=0)).ravel())
    overlap = sp.triu(A.T @ A, k=1).tocoo()
    pairs_sp = np.stack([overlap.row, overlap.col], axis=1).astype(np.int64)
    cos = overlap.data / np.maximum(nrm[overlap.row] * nrm[overlap.col], 1e-12)

    peaks = footprint_peaks(A, model.shape)
    d = np.hypot(peaks[:, None, 0] - peaks[None, :, 0], peaks[:, None, 1] - peaks[None, :, 1])
    ii, jj = np.nonzero(np.triu(d < opts.dmin, k=1))
    pairs_d = np.stack([ii, jj], axis=1).astype(np.int64)

    chosen = []
    if len(pairs_d):
        r = trace_correlation_matrix(model.C, pairs_d)
        chosen.append(pairs_d[r >= opts.merge_thr])
    if len(pairs_sp):
        thr_a, thr_c, thr_s = opts.merge_thr_spatial
        rc = trace_correlation_matrix(model.C, pairs_sp)
        ok = (cos >= thr_a) & (rc >= thr_c)
        if np.isfinite(thr_s) and thr_s > -1:
            ok &= trace_correlation_matrix(model.S, pairs_sp) >= thr_s
        chosen.append(pairs_sp[ok])
        chosen.append(pairs_sp[cos >= DUPLICATE_SPATIAL])
    if not chosen:
        return np.zeros((0, 2), np.int64)
    out = np.concatenate(chosen)
    return np.unique(out, axis=0) if len(out) else out


def _rank1(A_g: sp.csc_matrix, X_g: np.ndarray, n_iter: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Rank-1 non-negative factorisation a c^T of sum_k a_k x_k^T (kept in factored form)."""
    Ad = A_g.toarray().astype(np.float64)  # (p, g)
    X = X_g.astype(np.float64)
    w = np.sqrt((X ** 2).sum(axis=1))
    a = Ad @ w
    c = np.zeros(X.shape[1])
    for _ in range(n_iter):
        aa = a @ a
        if aa <= 0:
            break
        c = ((Ad.T @ a) @ X) / aa
        cc = c @ c
        if cc <= 0:
            break
        a = np.maximum(Ad @ (X @ c), 0) / cc
    return a, c


def merge_components(model: Model, opts, deconvolve=None) -> int:
    """Merge groups of components found by the three rules, in place.

    Parameters
    ----------
    model : Model
    opts : CnmfeOptions
    deconvolve : callable(model, rows) or None
        Re-denoises the listed rows of ``model.C_raw`` after merging (the caller's
        per-batch deconvolution); without it the merged C is the projected denoised trace.

    Returns
    -------
    int
        Number of components removed by merging.
    """
    total = 0
    for _ in range(10):  # merging can create new candidates; a few rounds reach a fixed point
        pairs = _candidate_pairs(model, opts)
        if len(pairs) == 0:
            break
        K = model.K
        graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(K, K))
        n_comp, labels = connected_components(graph, directed=False)
        groups = [m for m in (np.flatnonzero(labels == lab) for lab in range(n_comp)) if m.size >= 2]
        if not groups:
            break
        A = sp.csc_matrix(model.A)
        keep = np.ones(K, bool)
        new_cols = {}
        for members in groups:
            lead, new_cols[lead] = _merge_group(model, A, members)
            keep[members[members != lead]] = False
        changed = list(new_cols)
        idx = _replace_and_keep(model, A, new_cols, keep)
        if deconvolve is not None:
            remap = -np.ones(K, np.int64)
            remap[idx] = np.arange(idx.size)
            deconvolve(model, remap[np.asarray(changed)])
        total += int(K - idx.size)
    return total


def _merge_group(model: Model, A: sp.csc_matrix, members: np.ndarray) -> tuple[int, np.ndarray]:
    """Rank-1 merge of ``members`` into its strongest member (traces written in place).

    Returns the lead's index and its new footprint column (P,) float32.
    """
    strength = np.asarray(A[:, members].max(axis=0).toarray()).ravel() * model.C[members].max(axis=1)
    lead = members[int(np.argmax(strength))]  # the strongest member keeps its identity
    A_g = A[:, members]
    rows = np.unique(A_g.indices)
    a, c_raw = _rank1(A_g[rows], model.C_raw[members])
    proj = (A_g[rows].toarray().T @ a) / max(a @ a, 1e-12)  # weight of each member in the merged trace
    col = np.zeros(A.shape[0], np.float32)
    col[rows] = a
    model.C_raw[lead] = c_raw
    model.C[lead] = np.maximum(proj @ model.C[members], 0)
    model.S[lead] = np.maximum(proj @ model.S[members], 0)
    return lead, col


def _replace_and_keep(model: Model, A: sp.csc_matrix, new_cols: dict, keep: np.ndarray) -> np.ndarray:
    """Write the merged footprints, drop the absorbed components, renormalise; returns the kept indices."""
    A = sp.lil_matrix(A)
    for k, col in new_cols.items():
        A[:, k] = col[:, None]
    model.A = sp.csc_matrix(A)
    idx = np.flatnonzero(keep)
    model.keep(idx)
    A_n, peak = normalize_footprints(model.A)
    model.A = A_n
    model.C *= peak[:, None]
    model.C_raw *= peak[:, None]
    model.S *= peak[:, None]
    return idx


def remove_false_positives(model: Model, min_pixel: int, vessels: np.ndarray | None = None) -> np.ndarray:
    """Drop small, silent and vessel-shaped components, in place.

    Small: fewer than ``min_pixel`` pixels.  Silent: a denoised trace that is zero
    everywhere.  Vessel-shaped (with ``vessels``, the flat (P,) bool vessel mask of the
    model's pixels): a footprint whose part above a quarter of its peak is elongated
    (major/minor axis ratio above ``VESSEL_ELONGATION``) and lies mostly on the mask
    (more than ``VESSEL_SHARE`` of it).  A neuron under a vessel is round and stays.

    Returns the boolean mask of removed components (in the order before removal).
    """
    if model.K == 0:
        return np.zeros(0, bool)
    small = footprint_areas(model.A) < int(min_pixel)
    silent = ~np.any(model.C > 0, axis=1)
    bad = small | silent
    if vessels is not None:
        bad |= vessel_shaped(model.A, model.shape, vessels)
    if bad.any():
        model.keep(~bad)
    return bad


def vessel_shaped(A: sp.csc_matrix, shape: tuple[int, int], vessels: np.ndarray) -> np.ndarray:
    """Which footprints (columns of A) are elongated and lie mostly on the vessel mask (P,) bool."""
    A = sp.csc_matrix(A, dtype=np.float32)
    area, elong = footprint_shapes(A, shape)
    peak = np.asarray(A.max(axis=0).toarray()).ravel()
    cols = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    on = A.data >= 0.25 * peak[cols]
    on_vessel = np.bincount(cols[on], weights=np.asarray(vessels, bool).ravel()[A.indices[on]].astype(float),
                            minlength=A.shape[1])
    share = on_vessel / np.maximum(area, 1)
    return (elong > VESSEL_ELONGATION) & (share > VESSEL_SHARE)
