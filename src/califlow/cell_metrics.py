"""Evidence for every tracked cell: per-cell and per-session metrics of an extraction.

califlow tracks a neuron as one global footprint ``A[k]`` and one trace over the whole
concatenation; CNMF-E also refits the footprint in every session (``A_sessions[s, k]``).
This module measures, from ``cnmfe.zarr`` (and the aligned movie), why cell ``k`` of session
``s`` is the same cell as in the other sessions, and how good it is.  The definitions
(``docs/cells.md`` repeats them for users):

Per cell
    ``area_px``
        Pixels of the footprint at or above ``SHAPE_LEVEL`` (half) x its maximum, the
        half-maximum region whose equivalent diameter the neuron-size estimate measures.
    ``elongation``
        sqrt(largest / smallest eigenvalue) of the footprint's intensity-weighted covariance
        over those pixels (1 = round; vessel-like strips are 3 and more).
    ``bv_overlap``
        Fraction of the footprint's weight on the blood-vessel mask (``cnmfe.bv_threshold``
        of the aligned ``bv`` images, max over sessions); NaN without ``bv``.
    ``background_ratio``
        How much of the cell's own fluctuation its surroundings share: the regression slope
        of the surround trace on the centre trace, each session's mean removed.  The centre
        trace is the footprint-weighted mean of the aligned (enhanced) movie, the surround
        trace its mean over an annulus around the footprint (``SURROUND_GSIG`` = gSig/2 to
        2 gSig beyond its edge, the cells' half-maximum cores excluded).  A neuron's halo puts a few
        per cent of its transients in the annulus; a component on a diffuse out-of-focus blob,
        or one whose trace is neuropil, has a surround that follows its centre (ratio near 1).
    ``nn_cell``, ``nn_distance_px``, ``nn_trace_corr``
        Nearest other cell by centroid distance (px), and the correlation of the two raw
        traces over the concatenation: a close neighbour with a correlated trace is a merge
        or split risk.
Per session ``<s>`` (column ``<metric>_<s>``)
    ``fp_corr``
        Pearson correlation of ``A_sessions[s, k]`` with ``A[k]`` over the pixels where either
        is non-zero (NaN where the session footprint is empty).
    ``shift_px``
        Distance (px, aligned frame) between the centroids of ``A_sessions[s, k]`` and ``A[k]``.
    ``snr``
        var(C) / var(C_raw - C) in the session (0 where the cell is inactive, C being 0).
    ``rate_hz``
        Events (``S >= export.event_threshold``) per second of the session.
    ``events``
        Frames with a deconvolved spike of at least ``EVENT_COUNT_LEVEL`` (1) noise level
        (CNMF-E's count; 0 where the cell is inactive).
    ``active``, ``pvalue``, ``transient_ratio``
        The per-session activity flag of CNMF-E (``cnmfe.session_activity``) and its
        evidence: the noise test's Bonferroni p-value of the session's largest transient and
        that transient as a fraction of the cell's largest over all sessions (the crosstalk
        test).  Together they are the flag's confidence: a p-value far below
        ``session_activity.pvalue`` and a ratio far above ``crosstalk`` make a sure flag.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd
import scipy.sparse as sp

from califlow.cnmfe.postprocess import EVENT_COUNT_LEVEL, largest_transients
from califlow.export import SessionSlice, event_mask

__all__ = ["SHAPE_LEVEL", "SESSION_METRICS", "DESCRIPTIONS", "footprint_shapes", "vessel_overlap",
           "session_footprint_metrics",
           "session_trace_metrics", "nearest_neighbours", "surround_masks", "surround_traces",
           "background_ratio", "cell_table"]

#: Fraction of a footprint's maximum above which its pixels count for its area and shape.
SHAPE_LEVEL = 0.5
#: Fraction of a footprint's maximum above which its pixels belong to the cell (surround exclusion).
SUPPORT_LEVEL = 0.2
#: Per-session columns of the cell table, in order (``<metric>_<session>``).
SESSION_METRICS = ("events", "active", "pvalue", "transient_ratio", "fp_corr", "shift_px", "snr", "rate_hz")
#: One-line definitions of the columns (NWB column descriptions; per-session ones without the suffix).
DESCRIPTIONS = {
    "area_px": "pixels of the footprint at or above half its maximum",
    "elongation": "sqrt of the ratio of the footprint's covariance eigenvalues (1 = round)",
    "bv_overlap": "fraction of the footprint's weight on the blood-vessel mask",
    "background_ratio": "slope of the movie around the cell on the movie in it (1: its surroundings follow it)",
    "nn_cell": "nearest other cell (id)",
    "nn_distance_px": "centroid distance to the nearest other cell (px)",
    "nn_trace_corr": "correlation of the raw traces of the cell and its nearest neighbour",
    "events": "frames with a deconvolved spike of at least 1 noise level in the session",
    "active": "the cell is active in the session (cnmfe.session_activity)",
    "pvalue": "Bonferroni p-value of the session's largest transient against noise",
    "transient_ratio": "the session's largest transient / the cell's largest over all sessions",
    "fp_corr": "correlation of the session footprint with the global footprint",
    "shift_px": "distance between the session footprint's centroid and the global one (px)",
    "snr": "var(C) / var(C_raw - C)",
    "rate_hz": "events (S >= export.event_threshold) per second",
    "status": "curation status: accepted, rejected or undecided",
    "reason": "curation rules that fired, or manual",
}
#: Annulus of the surround, in gSig beyond the footprint's edge: (inner, outer).
SURROUND_GSIG = (0.5, 2.0)
#: Fewest annulus pixels left once the other cells' cores are excluded (else they are kept).
MIN_SURROUND_PX = 12


def _flat(A: np.ndarray) -> sp.csr_matrix:
    """(K, H, W) footprints as a sparse (K, H*W) matrix, float64."""
    return sp.csr_matrix(np.asarray(A, np.float64).reshape(A.shape[0], A.shape[1] * A.shape[2]))


def _moments(X: sp.csr_matrix, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Total weight (K,) and centroid (K, 2) (y, x) of each row of X (NaN where empty)."""
    p = np.arange(shape[0] * shape[1])
    coords = np.stack([p // shape[1], p % shape[1]], axis=1).astype(np.float64)
    mass = np.asarray(X.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (X @ coords) / mass[:, None]
    c[mass <= 0] = np.nan
    return mass, c


def footprint_shapes(A: np.ndarray, level: float = SHAPE_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Area (px) and elongation of each footprint.

    Parameters
    ----------
    A : ndarray (K, H, W)
        Footprints.
    level : float
        Pixels at or above ``level`` x the footprint's maximum are counted.

    Returns
    -------
    area : ndarray (K,) int
    elongation : ndarray (K,) float
        sqrt(largest / smallest eigenvalue) of the weighted covariance (>= 1; NaN if empty).
    """
    K, H, W = A.shape
    flat = np.asarray(A, np.float64).reshape(K, H * W)
    top = flat.max(axis=1, initial=0.0)
    X = sp.csr_matrix(np.where(flat >= level * top[:, None], flat, 0.0) * (top[:, None] > 0))
    area = X.getnnz(axis=1).astype(np.int64)
    mass, c = _moments(X, (H, W))
    p = np.arange(H * W)
    yy, xx = (p // W).astype(np.float64), (p % W).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = {k: (X @ v) / mass for k, v in (("yy", yy * yy), ("xx", xx * xx), ("xy", yy * xx))}
    vy, vx = m["yy"] - c[:, 0] ** 2, m["xx"] - c[:, 1] ** 2
    cov = m["xy"] - c[:, 0] * c[:, 1]
    half, root = (vy + vx) / 2, np.sqrt(np.maximum(((vy - vx) / 2) ** 2 + cov ** 2, 0))
    pixel = 1.0 / 12.0  # variance of one pixel: a one-pixel-wide strip is not infinitely elongated
    with np.errstate(invalid="ignore"):
        elong = np.sqrt(np.maximum(half + root, pixel) / np.maximum(half - root, pixel))
    return area, np.where(mass > 0, elong, np.nan)


def vessel_overlap(A: np.ndarray, vessels: np.ndarray | None) -> np.ndarray:
    """Fraction (K,) of each footprint's weight on the vessel mask (H, W) bool; NaN without a mask."""
    K = A.shape[0]
    if vessels is None:
        return np.full(K, np.nan)
    X = _flat(A)
    total = np.asarray(X.sum(axis=1)).ravel()
    on = X @ np.asarray(vessels, np.float64).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, on / total, np.nan)


def session_footprint_metrics(A: np.ndarray, A_session: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Footprint correlation and centroid shift of one session's footprints against the global ones.

    Parameters
    ----------
    A, A_session : ndarray (K, H, W)
        Global and session footprints (aligned frame).

    Returns
    -------
    fp_corr : ndarray (K,)
        Pearson correlation over the pixels where either footprint is non-zero (NaN if empty).
    shift_px : ndarray (K,)
        Distance between the two centroids, px (NaN if the session footprint is empty).
    """
    X, Y = _flat(A), _flat(A_session)
    bx, by = X.astype(bool).astype(np.float64), Y.astype(bool).astype(np.float64)
    n = np.asarray(bx.sum(1) + by.sum(1) - bx.multiply(by).sum(1)).ravel()
    sx, sy = np.asarray(X.sum(1)).ravel(), np.asarray(Y.sum(1)).ravel()
    sxx, syy = np.asarray(X.multiply(X).sum(1)).ravel(), np.asarray(Y.multiply(Y).sum(1)).ravel()
    sxy = np.asarray(X.multiply(Y).sum(1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = sxy - sx * sy / n
        corr = cov / np.sqrt((sxx - sx * sx / n) * (syy - sy * sy / n))
    corr = np.where((sy > 0) & (n > 1), corr, np.nan)
    _, cx = _moments(X, A.shape[1:])
    _, cy = _moments(Y, A.shape[1:])
    return np.clip(corr, -1, 1), np.hypot(*(cy - cx).T)


def session_trace_metrics(C: np.ndarray, C_raw: np.ndarray, S: np.ndarray, sessions: Sequence[SessionSlice],
                          event_threshold: float) -> dict[str, np.ndarray]:
    """Per-session SNR, event rate, largest-transient p-value and crosstalk ratio, each (K, n_sessions).

    Parameters
    ----------
    C, C_raw, S : ndarray (K, T)
        Denoised (0 where inactive), raw (noise units) and deconvolved traces.
    sessions : list of SessionSlice
    event_threshold : float
        Smallest event (noise units, ``export.event_threshold``) counted in ``rate_hz``.

    Returns
    -------
    dict
        ``events``, ``snr``, ``rate_hz``, ``pvalue``, ``transient_ratio`` (the tests of
        :func:`califlow.cnmfe.postprocess.session_activity`).
    """
    K, n = C.shape[0], len(sessions)
    out = {k: np.zeros((K, n)) for k in ("events", "snr", "rate_hz", "pvalue", "transient_ratio")}
    amp = np.zeros((K, n))
    for j, s in enumerate(sessions):
        seg = slice(s.start, s.stop)
        c, r = C[:, seg].astype(np.float64), C_raw[:, seg].astype(np.float64)
        v_res = (r - c).var(axis=1)
        out["snr"][:, j] = np.where(v_res > 0, c.var(axis=1) / np.where(v_res > 0, v_res, 1), 0.0)
        out["events"][:, j] = np.count_nonzero(S[:, seg] >= EVENT_COUNT_LEVEL, axis=1)
        out["rate_hz"][:, j] = event_mask(S[:, seg], event_threshold).sum(axis=1) * s.fps / max(s.stop - s.start, 1)
        amp[:, j], out["pvalue"][:, j] = largest_transients(r) if K else (np.zeros(0), np.zeros(0))
    top = np.where(np.isfinite(amp), amp, 0).max(axis=1, keepdims=True) if n else np.zeros((K, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out["transient_ratio"] = np.where(top > 0, amp / np.where(top > 0, top, 1), 0.0)
    return out


def _centred(x: np.ndarray, sessions: Sequence[SessionSlice]) -> np.ndarray:
    """Rows of x (K, T), float64, with each session's mean removed."""
    y = np.array(x, np.float64)
    for s in sessions:
        y[:, s.start:s.stop] -= y[:, s.start:s.stop].mean(axis=1, keepdims=True)
    return y


def _standardise(x: np.ndarray, sessions: Sequence[SessionSlice]) -> np.ndarray:
    """Rows of x (K, T) with each session's mean removed, scaled to unit norm (0 rows stay 0)."""
    y = _centred(x, sessions)
    norm = np.linalg.norm(y, axis=1, keepdims=True)
    return np.divide(y, norm, out=np.zeros_like(y), where=norm > 0)


def nearest_neighbours(centroids: np.ndarray, C_raw: np.ndarray,
                       sessions: Sequence[SessionSlice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest other cell (K,) int (-1 if none), its centroid distance (px) and the raw-trace correlation."""
    K = len(centroids)
    if K < 2:
        return np.full(K, -1), np.full(K, np.nan), np.full(K, np.nan)
    d = np.hypot(*(centroids[:, None, :] - centroids[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    d = np.where(np.isfinite(d), d, np.inf)
    nn = np.argmin(d, axis=1)
    z = _standardise(C_raw, sessions)
    return nn, d[np.arange(K), nn], np.einsum("kt,kt->k", z, z[nn])


def surround_masks(A: np.ndarray, gsig: float, level: float = SUPPORT_LEVEL) -> sp.csr_matrix:
    """Centre and surround weights (2K, H*W): rows k are the footprints, rows K + k their annuli.

    Each row sums to 1 (empty rows stay 0).  The annulus spans ``SURROUND_GSIG`` x gSig beyond
    the footprint's pixels at ``level`` x its maximum; the cores of every cell (pixels at
    ``SHAPE_LEVEL`` x its maximum) are left out unless fewer than ``MIN_SURROUND_PX`` remain.
    """
    K, H, W = A.shape
    flat = A.reshape(K, H * W)
    top = flat.max(axis=1, initial=0.0)[:, None]
    support = (flat >= level * top) & (flat > 0)
    cores = ((flat >= SHAPE_LEVEL * top) & (flat > 0)).any(axis=0).reshape(H, W)
    r_in, r_out = (max(1.0, f * gsig) for f in SURROUND_GSIG)
    pad = int(np.ceil(r_out)) + 1
    kernel = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(round(r)) + 1,) * 2)  # noqa: E731
    k_in, k_out = kernel(r_in), kernel(r_out)
    rows, cols = [], []
    for k in range(K):
        ys, xs = np.nonzero(support[k].reshape(H, W))
        if ys.size == 0:
            continue
        y0, y1, x0, x1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, H), max(xs.min() - pad, 0), \
            min(xs.max() + pad + 1, W)
        crop = support[k].reshape(H, W)[y0:y1, x0:x1].astype(np.uint8)
        ring = (cv2.dilate(crop, k_out) > 0) & ~(cv2.dilate(crop, k_in) > 0)
        free = ring & ~cores[y0:y1, x0:x1]
        ring = free if np.count_nonzero(free) >= MIN_SURROUND_PX else ring  # packed cells: keep the whole ring
        yy, xx = np.nonzero(ring)
        rows.append(np.full(yy.size, K + k))
        cols.append((yy + y0) * W + xx + x0)
    rows = np.concatenate(rows) if rows else np.zeros(0, int)
    cols = np.concatenate(cols) if cols else np.zeros(0, int)
    M = sp.vstack([_flat(A), sp.csr_matrix((np.ones(rows.size), (rows - K, cols)), shape=(K, H * W))]).tocsr()
    n = np.asarray(M.sum(axis=1)).ravel()
    return (sp.diags(np.divide(1.0, n, out=np.zeros_like(n), where=n > 0)) @ M).tocsr()


def surround_traces(read_frames, n_frames: int, masks: sp.csr_matrix, chunk_frames: int) -> np.ndarray:
    """Weighted means of the movie, (n_masks, T) float32, in one streaming pass.

    Parameters
    ----------
    read_frames : callable (t0, t1) -> ndarray (n, H, W)
        Reads frames [t0, t1) of the movie (e.g. ``AlignedStore.read``).
    n_frames : int
    masks : sparse (n_masks, H*W)
        Rows of weights, e.g. :func:`surround_masks`.
    chunk_frames : int
        Frames read at once (memory: chunk_frames x H x W x 4 bytes).
    """
    out = np.zeros((masks.shape[0], n_frames), np.float32)
    step = max(1, int(chunk_frames))
    for t0 in range(0, n_frames, step):
        t1 = min(t0 + step, n_frames)
        frames = read_frames(t0, t1)
        out[:, t0:t1] = (masks @ frames.reshape(t1 - t0, -1).T.astype(np.float64)).astype(np.float32)
    return out


def background_ratio(centre: np.ndarray, surround: np.ndarray, sessions: Sequence[SessionSlice]) -> np.ndarray:
    """Regression slope (K,) of each surround trace on its centre trace (K, T), session means removed.

    NaN where the centre trace is constant or the surround empty.
    """
    c, s = _centred(centre, sessions), _centred(surround, sessions)
    var = np.einsum("kt,kt->k", c, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.einsum("kt,kt->k", c, s) / var
    return np.where((var > 0) & np.any(s != 0, axis=1), slope, np.nan)


def cell_table(ex: dict, *, event_threshold: float, vessels: np.ndarray | None = None,
               surround: np.ndarray | None = None) -> pd.DataFrame:
    """One row per cell: the columns of the module docstring.

    Parameters
    ----------
    ex : dict
        :func:`califlow.export.load_extraction` output plus ``A_sessions`` (S, K, H, W) (or a
        callable ``s -> (K, H, W)``), ``ids`` (K,) and ``snr`` (K,) when the store has them.
    event_threshold : float
        ``export.event_threshold`` (noise units).
    vessels : ndarray (H, W) bool, optional
        Vessel mask.
    surround : ndarray (2K, T), optional
        :func:`surround_traces` of :func:`surround_masks` (centre rows, then annulus rows);
        without it ``background_ratio`` is NaN.
    """
    A, C, C_raw, S, sessions = ex["A"], ex["C"], ex["C_raw"], ex["S"], ex["sessions"]
    K = A.shape[0]
    _, centroids = _moments(_flat(A), A.shape[1:])
    area, elong = footprint_shapes(A)
    nn, nn_d, nn_r = nearest_neighbours(centroids, C_raw, sessions)
    cols = {"cell": np.arange(K), "seed_id": ex.get("ids", np.arange(K)),
            "centroid_y": centroids[:, 0], "centroid_x": centroids[:, 1],
            "snr": ex.get("snr", np.zeros(K)), "area_px": area, "elongation": elong,
            "bv_overlap": vessel_overlap(A, vessels),
            "background_ratio": np.full(K, np.nan) if surround is None else
            background_ratio(surround[:K], surround[K:], sessions),
            "nn_cell": nn, "nn_distance_px": nn_d, "nn_trace_corr": nn_r}
    per = session_trace_metrics(C, C_raw, S, sessions, event_threshold)
    active = np.asarray(ex.get("active", np.ones((K, len(sessions)), bool)), bool)
    for j, s in enumerate(sessions):
        A_s = ex["A_sessions"](j) if callable(ex.get("A_sessions")) else ex["A_sessions"][j]
        fp_corr, shift = session_footprint_metrics(A, A_s)
        values = {"events": per["events"][:, j].astype(np.int64), "active": active[:, j].astype(int),
                  "pvalue": per["pvalue"][:, j],
                  "transient_ratio": per["transient_ratio"][:, j], "fp_corr": fp_corr, "shift_px": shift,
                  "snr": per["snr"][:, j], "rate_hz": per["rate_hz"][:, j]}
        cols.update({f"{m}_{s.name}": values[m] for m in SESSION_METRICS})
    order = ["cell", "seed_id", "centroid_y", "centroid_x", "snr", "area_px", "elongation", "bv_overlap",
             "background_ratio", "nn_cell", "nn_distance_px", "nn_trace_corr"]
    per_session = [f"{m}_{s.name}" for m in SESSION_METRICS for s in sessions]
    return pd.DataFrame(cols)[order + per_session]
