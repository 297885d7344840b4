"""Scores of an extraction against simulated ground truth (see groundtruth.md §2).

* Detection: :func:`match_neurons` — masks ``a > thr * max a``, cost 1 - IoU for pairs whose
  mask centroids lie closer than ``min_dist`` (else 1), Hungarian assignment, pairs with
  cost < ``max_cost`` are true positives; precision = TP/M, recall = TP/N,
  F1 = 2 TP / (N + M). Optional global rigid registration of the estimate first (phase
  correlation of the max projections).
* Similarities of matched pairs: :func:`footprint_correlation` (Pearson over pixels),
  :func:`trace_correlation` (Pearson over frames, per session), :func:`spike_correlation`
  (Pearson after summing ``bin_frames``-frame bins within each session).
* Cross-session tracking: :func:`tracking_f1` (pairwise links), with
  :func:`session_assignments` building its input for a concatenated extraction.
* Motion: :func:`motion_rmse`.
* :func:`score_extraction` runs all of them on a :class:`~califlow.simulate.GroundTruth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from califlow.errors import InputError

__all__ = [
    "MAD_TO_SIGMA",
    "Match",
    "pearson_rows",
    "match_neurons",
    "footprint_correlation",
    "trace_correlation",
    "spike_correlation",
    "session_assignments",
    "tracking_f1",
    "motion_rmse",
    "spoke_index",
    "score_extraction",
]

#: Median absolute deviation to standard deviation for Gaussian data (1 / Phi^-1(3/4)):
#: ``sigma ~ MAD_TO_SIGMA * median(|x - median(x)|)``.
MAD_TO_SIGMA = 1.4826


@dataclass
class Match:
    """Result of :func:`match_neurons`.

    Attributes
    ----------
    true_idx, est_idx : (n_pairs,) int, matched ground-truth / estimated neuron indices.
    iou : (n_pairs,) float, mask IoU of each pair.
    n_true, n_est : number of ground-truth (N) and estimated (M) neurons.
    shift : (2,) float, (dy, dx) px applied to the estimate before matching (registration).
    """

    true_idx: np.ndarray
    est_idx: np.ndarray
    iou: np.ndarray
    n_true: int
    n_est: int
    shift: np.ndarray = field(default_factory=lambda: np.zeros(2))

    @property
    def n_matched(self) -> int:
        return int(len(self.true_idx))

    @property
    def precision(self) -> float:
        return self.n_matched / self.n_est if self.n_est else float("nan")

    @property
    def recall(self) -> float:
        return self.n_matched / self.n_true if self.n_true else float("nan")

    @property
    def f1(self) -> float:
        total = self.n_true + self.n_est
        return 2 * self.n_matched / total if total else float("nan")


def _as_stack(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"{name} must be (K, H, W) footprints, got shape {a.shape}")
    return a


def _masks(a: np.ndarray, thr: float) -> sp.csr_matrix:
    peak = a.reshape(len(a), -1).max(axis=1)
    m = (a.reshape(len(a), -1) > (thr * peak)[:, None]) & (peak[:, None] > 0)
    return sp.csr_matrix(m.astype(np.float32))


def _centroids(masks: sp.csr_matrix, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    area = np.asarray(masks.sum(axis=1)).ravel()
    ys = np.repeat(np.arange(h, dtype=np.float64), w)
    xs = np.tile(np.arange(w, dtype=np.float64), h)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([masks @ ys, masks @ xs], axis=1) / area[:, None]


def register_footprints(A_true: np.ndarray, A_est: np.ndarray) -> np.ndarray:
    """(dy, dx) that moves ``A_est`` onto ``A_true`` (phase correlation of max projections, 0.05 px)."""
    from skimage.registration import phase_cross_correlation

    shift, _err, _ph = phase_cross_correlation(A_true.max(axis=0), A_est.max(axis=0), upsample_factor=20,
                                               normalization=None)
    return np.asarray(shift, dtype=np.float64)


def match_neurons(A_true, A_est, *, thr: float = 0.25, min_dist: float = 10.0, max_cost: float = 0.7,
                  register: bool = False) -> Match:
    """Match estimated to ground-truth footprints (Hungarian on 1 - IoU of thresholded masks).

    Parameters
    ----------
    A_true : (N, H, W) ground-truth footprints.
    A_est : (M, H, W) estimated footprints, same (H, W).
    thr : mask threshold as a fraction of each footprint's maximum.
    min_dist : pairs whose mask centroids are this far apart (px) or more cannot match.
    max_cost : pairs need 1 - IoU < max_cost (IoU > 1 - max_cost).
    register : shift ``A_est`` first by the phase correlation of the max projections.

    Returns
    -------
    Match
    """
    A_true = _as_stack(A_true, "A_true")
    A_est = _as_stack(A_est, "A_est")
    if A_true.shape[1:] != A_est.shape[1:]:
        raise InputError(f"match_neurons: footprints differ in (H, W): A_true {A_true.shape[1:]} vs A_est "
                         f"{A_est.shape[1:]}; crop or pad the estimate into the ground-truth frame first")
    n, m = len(A_true), len(A_est)
    shift = np.zeros(2)
    if register and n and m:
        shift = register_footprints(A_true, A_est)
        A_est = ndimage.shift(A_est, (0, *shift), order=1, mode="constant", cval=0.0)
    empty = np.zeros(0, np.int64)
    if n == 0 or m == 0:
        return Match(empty, empty, np.zeros(0), n, m, shift)
    shape = A_true.shape[1:]
    mt, me = _masks(A_true, thr), _masks(A_est, thr)
    inter = (mt @ me.T).toarray()
    area_t = np.asarray(mt.sum(axis=1)).ravel()
    area_e = np.asarray(me.sum(axis=1)).ravel()
    union = area_t[:, None] + area_e[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    ct, ce = _centroids(mt, shape), _centroids(me, shape)
    dist = np.sqrt(((ct[:, None, :] - ce[None, :, :]) ** 2).sum(axis=2))
    cost = np.where(np.nan_to_num(dist, nan=np.inf) < min_dist, 1.0 - iou, 1.0)
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] < max_cost
    return Match(rows[ok].astype(np.int64), cols[ok].astype(np.int64), iou[rows[ok], cols[ok]], n, m, shift)


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r between matching rows of x and y (n, L); NaN where a row is constant."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(axis=1) / den, np.nan)


def footprint_correlation(A_true, A_est, match: Match) -> np.ndarray:
    """Pearson r over pixels of each matched pair's full footprints, (n_pairs,).

    The estimate is shifted by ``match.shift`` first (as in the matching).
    """
    A_true = _as_stack(A_true, "A_true")
    A_est = _as_stack(A_est, "A_est")
    if match.n_matched == 0:
        return np.zeros(0)
    est = A_est[match.est_idx]
    if np.any(match.shift):
        est = ndimage.shift(est, (0, *match.shift), order=1, mode="constant", cval=0.0)
    return pearson_rows(A_true[match.true_idx].reshape(match.n_matched, -1).astype(np.float64),
                         est.reshape(match.n_matched, -1).astype(np.float64))


def _segments(n_frames: int, session_bounds) -> list[tuple[int, int]]:
    if session_bounds is None:
        return [(0, n_frames)]
    b = np.asarray(session_bounds, dtype=np.int64)
    if b.ndim != 1 or len(b) < 2 or b[0] != 0 or b[-1] != n_frames or np.any(np.diff(b) < 0):
        raise InputError(f"session_bounds {b.tolist()} must rise from 0 to the trace length {n_frames}")
    return [(int(b[s]), int(b[s + 1])) for s in range(len(b) - 1)]


def _paired(true, est, match: Match, name: str) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(true, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64)
    if true.ndim != 2 or est.ndim != 2 or true.shape[1] != est.shape[1]:
        raise InputError(f"{name}: need (N, T) and (M, T) with the same T, got {true.shape} and {est.shape}")
    return true[match.true_idx], est[match.est_idx]


def trace_correlation(C_true, C_est, match: Match, session_bounds=None) -> np.ndarray:
    """Pearson r between matched calcium traces, (n_pairs, n_sessions).

    With ``session_bounds`` (S+1,) one column per session (frames ``b[s]:b[s+1]``), else a
    single column over all frames. NaN where a trace is constant in a session (e.g. a
    neuron silent there).
    """
    t, e = _paired(C_true, C_est, match, "trace_correlation")
    segs = _segments(t.shape[1] if t.size else np.asarray(C_true).shape[1], session_bounds)
    return np.stack([pearson_rows(t[:, a:b], e[:, a:b]) for a, b in segs], axis=1) if len(t) \
        else np.zeros((0, len(segs)))


def spike_correlation(S_true, S_est, match: Match, bin_frames: int = 5, session_bounds=None) -> np.ndarray:
    """Pearson r between matched spike trains summed in ``bin_frames``-frame bins, (n_pairs, n_sessions).

    Bins restart at each session start; an incomplete last bin is dropped.
    """
    if int(bin_frames) < 1:
        raise InputError(f"spike_correlation: bin_frames={bin_frames} must be >= 1")
    t, e = _paired(S_true, S_est, match, "spike_correlation")
    segs = _segments(t.shape[1] if t.size else np.asarray(S_true).shape[1], session_bounds)
    if not len(t):
        return np.zeros((0, len(segs)))
    k = int(bin_frames)
    cols = []
    for a, b in segs:
        n = (b - a) // k
        bt = t[:, a:a + n * k].reshape(len(t), n, k).sum(axis=2)
        be = e[:, a:a + n * k].reshape(len(e), n, k).sum(axis=2)
        cols.append(pearson_rows(bt, be))
    return np.stack(cols, axis=1)


def session_assignments(A_true, true_active, A_est, present=None, **match_kw) -> np.ndarray:
    """Per-session identity of each estimated unit, the input of :func:`tracking_f1`.

    For a concatenated extraction every estimated unit j has one footprint ``A_est[j]`` in
    the aligned frame and a presence flag per session. In session s, the ground-truth neurons
    active in s are matched (:func:`match_neurons`) to the units present in s.

    Parameters
    ----------
    A_true : (N, H, W) ground-truth footprints in the same frame as ``A_est`` (e.g. ``footprints_ref``).
    true_active : (N, S) bool, ground-truth activity per session.
    A_est : (M, H, W) estimated footprints.
    present : (M, S) bool presence of each unit per session (default: present everywhere).
    **match_kw : passed to :func:`match_neurons`.

    Returns
    -------
    (M, S) int: ground-truth index matched to unit j in session s, -1 if none.
    """
    A_true = _as_stack(A_true, "A_true")
    A_est = _as_stack(A_est, "A_est")
    true_active = np.asarray(true_active, dtype=bool)
    n_s = true_active.shape[1]
    present = np.ones((len(A_est), n_s), bool) if present is None else np.asarray(present, dtype=bool)
    if present.shape != (len(A_est), n_s):
        raise InputError(f"session_assignments: present has shape {present.shape}, expected {(len(A_est), n_s)}")
    assign = np.full((len(A_est), n_s), -1, np.int64)
    for s in range(n_s):                         # loop over sessions
        ti, ei = np.flatnonzero(true_active[:, s]), np.flatnonzero(present[:, s])
        mt = match_neurons(A_true[ti], A_est[ei], **match_kw)
        assign[ei[mt.est_idx], s] = ti[mt.true_idx]
    return assign


def tracking_f1(assign, true_active, present=None) -> dict:
    """Pairwise cross-session link score.

    Parameters
    ----------
    assign : (M, S) int, ground-truth neuron of estimated unit j in session s, -1 if the unit
        matches none there (see :func:`session_assignments`).
    true_active : (N, S) bool, whether ground-truth neuron i is active in session s.
    present : (M, S) bool, whether the pipeline claims unit j in session s (default:
        ``assign >= 0``, i.e. present where matched). For a concatenated extraction every
        unit spans all sessions: pass its per-session presence flag.

    Returns
    -------
    dict with tp, fp, fn, precision, recall, f1. For every pair of sessions s < t a
    predicted link is a unit present in both; it is correct iff it is assigned the same
    ground-truth neuron in both and that neuron is active in both. True links are
    ground-truth neurons active in both. Detection misses therefore lower the recall.
    """
    assign = np.asarray(assign, dtype=np.int64)
    true_active = np.asarray(true_active, dtype=bool)
    if assign.ndim != 2 or true_active.ndim != 2 or assign.shape[1] != true_active.shape[1]:
        raise InputError(f"tracking_f1: assign {assign.shape} and true_active {true_active.shape} "
                         "must be (M, S), (N, S)")
    present = assign >= 0 if present is None else np.asarray(present, dtype=bool)
    n_s = assign.shape[1]
    tp = fp = fn = 0
    for s in range(n_s):                         # loop over session pairs
        for t in range(s + 1, n_s):
            pred = present[:, s] & present[:, t]
            same = pred & (assign[:, s] >= 0) & (assign[:, s] == assign[:, t])
            gid = assign[same, s]
            gid = gid[true_active[gid, s] & true_active[gid, t]]
            # a ground-truth neuron counts once per pair even if several units claim it
            correct = np.unique(gid).size
            n_true = int((true_active[:, s] & true_active[:, t]).sum())
            tp += correct
            fp += int(pred.sum()) - correct
            fn += n_true - correct
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return dict(tp=tp, fp=fp, fn=fn, precision=precision, recall=recall, f1=f1)


def spoke_index(image: np.ndarray, max_radius: float = 8.0) -> float:
    """How much a blob follows the 8-neighbourhood's rays: 1 for a round blob, > 1 for a star.

    The image (H, W) is sampled (bilinear) around its maximum on 16 directions 22.5 deg apart,
    at radii 1.5 to ``max_radius`` px by 0.5 px.  Returns the sum on the 8 directions of the
    pixel grid's axes and diagonals over the sum on the 8 directions between them (NaN when
    the latter is 0).  An 8-ray star has more weight on the rays; a polygon's flat sides
    facing the rays give < 1.
    """
    img = np.asarray(image, dtype=np.float64)
    cy, cx = np.unravel_index(int(np.argmax(img)), img.shape)
    angles = np.deg2rad(np.arange(16) * 22.5)
    radii = np.arange(1.5, float(max_radius) + 1e-9, 0.5)
    yy = cy + radii[:, None] * np.sin(angles)[None]
    xx = cx + radii[:, None] * np.cos(angles)[None]
    v = ndimage.map_coordinates(img, [yy, xx], order=1, mode="constant")
    between = float(v[:, 1::2].sum())
    return float(v[:, 0::2].sum()) / between if between > 0 else float("nan")


def motion_rmse(est, true) -> tuple[float, float]:
    """RMSE and maximum of the end-point error between two (T, 2) shift series (px).

    The constant offset (mean difference, i.e. the template choice) is removed first. Both
    series must use the same sign convention (califlow: ``raw_t(p + d_t) = template(p)``).
    """
    est = np.asarray(est, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if est.shape != true.shape or est.ndim != 2:
        raise InputError(f"motion_rmse: shapes differ or are not (T, 2): est {est.shape}, true {true.shape}")
    err = est - true
    err -= err.mean(axis=0)
    norm = np.sqrt((err ** 2).sum(axis=1))
    return float(np.sqrt(np.mean(norm ** 2))), float(norm.max())


def score_extraction(gt, A_est, C_est, S_est=None, session_bounds=None, active_est=None, *,
                     register: bool = True, valid=None, **match_kw) -> dict:
    """All scores of a concatenated extraction against a :class:`~califlow.simulate.GroundTruth`.

    Parameters
    ----------
    gt : GroundTruth.
    A_est : (M, H, W) footprints in the aligned frame (compared with ``gt.footprints_ref``;
        ``register`` removes a global rigid offset between the aligned and reference frames).
    C_est : (M, T_total) calcium traces; S_est : (M, T_total) spikes or None.
    session_bounds : (S+1,) frame bounds (default ``gt.session_bounds``).
    active_est : (M, S) bool presence flags per session (default: present everywhere).
    valid : (H, W) bool, optional
        The part of the reference frame the extraction covered (e.g. what the motion crop and
        the alignment kept).  True neurons whose centre lies outside are left out of every
        score, and so are estimates matched to them or unmatched with their centroid outside
        (a neuron cut by the border is neither found nor missed).

    Returns
    -------
    dict: detection ``precision``, ``recall``, ``f1``, ``n_true``, ``n_est``, ``n_matched``,
    ``shift``; medians ``footprint_r``, ``trace_r``, ``spike_r`` (over pairs, then sessions
    where the neuron is active) and per-pair arrays ``trace_r_sessions``/``spike_r_sessions``
    (n_pairs, S); ``tracking`` (dict of :func:`tracking_f1`); the :class:`Match` as ``match``;
    ``scored_est`` and ``matched_est``: indices into ``A_est`` of the estimates scored (inside
    ``valid``) and of those matched to a true neuron.
    """
    bounds = gt.session_bounds if session_bounds is None else np.asarray(session_bounds)
    scored_est = np.arange(len(A_est))
    A_true = gt.footprints_ref
    A_est = _as_stack(A_est, "A_est")
    C_true, S_true, act_true = gt.C, gt.S, gt.active
    if valid is not None:
        keep_t, keep_e = _covered(valid, gt.centers_ref, A_true, A_est, register, match_kw)
        scored_est = scored_est[keep_e]
        A_true, C_true, S_true, act_true = A_true[keep_t], C_true[keep_t], S_true[keep_t], act_true[keep_t]
        A_est, C_est = A_est[keep_e], np.asarray(C_est)[keep_e]
        S_est = None if S_est is None else np.asarray(S_est)[keep_e]
        active_est = None if active_est is None else np.asarray(active_est)[keep_e]
    match = match_neurons(A_true, A_est, register=register, **match_kw)
    fr = footprint_correlation(A_true, A_est, match)
    tr = trace_correlation(C_true, C_est, match, bounds)
    act = act_true[match.true_idx]
    out = dict(precision=match.precision, recall=match.recall, f1=match.f1, n_true=match.n_true,
               n_est=match.n_est, n_matched=match.n_matched, shift=match.shift.tolist(),
               footprint_r=float(np.nanmedian(fr)) if fr.size else float("nan"),
               trace_r=float(np.nanmedian(np.where(act, tr, np.nan))) if tr.size else float("nan"),
               trace_r_sessions=tr, match=match, scored_est=scored_est,
               matched_est=scored_est[match.est_idx])
    if S_est is not None:
        sr = spike_correlation(S_true, S_est, match, 5, bounds)
        out["spike_r"] = float(np.nanmedian(np.where(act, sr, np.nan))) if sr.size else float("nan")
        out["spike_r_sessions"] = sr
    kw = dict(match_kw)
    if register and match.n_est and match.n_true:
        A_est = ndimage.shift(A_est, (0, *match.shift), order=1, mode="constant", cval=0.0)
    assign = session_assignments(A_true, act_true, A_est, active_est, **kw)
    out["tracking"] = tracking_f1(assign, act_true, np.ones_like(assign, bool) if active_est is None else active_est)
    return out


def _covered(valid, centers, A_true, A_est, register, match_kw) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the true and estimated neurons :func:`score_extraction` counts inside ``valid``.

    Estimates matched to a true neuron outside, or unmatched but overlapping one (a neuron
    cut by the border: cosine similarity of the footprints above 0.3), are left out too.
    """
    valid = np.asarray(valid, bool)
    keep_t = _inside(valid, centers)
    m = match_neurons(A_true, A_est, register=register, **match_kw)
    keep_e = _inside(valid, _centres_of_mass(A_est))
    keep_e[m.est_idx] = keep_t[m.true_idx]
    out = np.flatnonzero(~keep_t)
    loose = np.setdiff1d(np.flatnonzero(keep_e), m.est_idx)
    if out.size and loose.size:
        At = A_true[out].reshape(out.size, -1).astype(np.float64)
        Ae = A_est[loose].reshape(loose.size, -1).astype(np.float64)
        if register and np.any(m.shift):
            Ae = ndimage.shift(A_est[loose], (0, *m.shift), order=1, mode="constant").reshape(loose.size, -1)
        cos = (Ae @ At.T) / np.maximum(np.linalg.norm(Ae, axis=1)[:, None] * np.linalg.norm(At, axis=1)[None], 1e-12)
        keep_e[loose[cos.max(axis=1) > 0.3]] = False
    return keep_t, keep_e


def _centres_of_mass(A: np.ndarray) -> np.ndarray:
    """Intensity centroids (K, 2) of footprints (K, H, W) (NaN for empty ones)."""
    K, h, w = A.shape
    mass = A.reshape(K, -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (A.sum(axis=2) @ np.arange(h)) / mass
        cx = (A.sum(axis=1) @ np.arange(w)) / mass
    return np.stack([cy, cx], axis=1)


def _inside(valid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether each (y, x) point rounds to a True pixel of ``valid``."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    ok = np.isfinite(p).all(axis=1)
    yi = np.clip(np.rint(np.nan_to_num(p[:, 0])).astype(int), 0, valid.shape[0] - 1)
    xi = np.clip(np.rint(np.nan_to_num(p[:, 1])).astype(int), 0, valid.shape[1] - 1)
    inside = (np.rint(np.nan_to_num(p[:, 0])) == yi) & (np.rint(np.nan_to_num(p[:, 1])) == xi)
    return ok & inside & valid[yi, xi]
