"""Search of the residual for neurons the seeding missed.

After the first refinement iteration the residual ``R_b = Y_b - A C_b - B_b`` of every
batch is summarised like the data's projections (PNR = maximum of a 10-frame running mean
over the noise level - a mean rather than CaliAli's median, for speed; correlation image =
mean correlation with the 8 neighbours after zeroing values below 3 noise levels; max over
batches), and the
correlation image is put on the scale ``min_corr`` thresholds by applying the transform
of the block's own data (``(Cn - mode)^2 / max``, CaliAli's ``adjust_C``).  New seeds
are local maxima of ``Cn * PNR`` above ``min_corr`` and ``min_pnr``, outside existing
footprints (where they exceed 20 % of their peak).
"""

from __future__ import annotations

import numba
import numpy as np

from califlow.cnmfe.background import residual_frames
from califlow.cnmfe.data import InMemorySource
from califlow.cnmfe.model import Model
from califlow.cnmfe.seeds import find_seeds

#: Residual seeds may not lie where an existing footprint exceeds this fraction of its peak.
RESIDUAL_EXCLUDE = 0.2

__all__ = ["residual_source", "residual_seeds", "correlation_pnr", "window_mean_peak"]

def residual_source(source: InMemorySource, model: Model, fitter, cache_bytes: int | None = 0) -> InMemorySource:
    """The residual ``Y_b - A C_b - B_b`` of every batch, computed when a batch is asked for.

    ``cache_bytes`` residual batches are kept once computed (None: all, 0: none).
    """

    def load(b: int) -> np.ndarray:
        C_b = model.C[:, model.frames(b)]
        return residual_frames(source.frames(b), model.A, C_b, fitter.baseline(model, b),
                               fitter.ring_operator(model, b))

    return InMemorySource(load, source.batches, shape=source.shape, cache_bytes=cache_bytes)


@numba.njit(cache=True, parallel=True, nogil=True)
def _window_sum_peak(Y, k):  # pragma: no cover - numba
    """Largest sum of ``k`` consecutive rows of every column of Y (T, P) (sliding, float64 sums)."""
    T, P = Y.shape
    out = np.empty(P, np.float64)
    block = 256
    for pb in numba.prange((P + block - 1) // block):
        p0 = pb * block
        p1 = min(P, p0 + block)
        acc = np.zeros(p1 - p0, np.float64)
        for t in range(k):
            for p in range(p0, p1):
                acc[p - p0] += Y[t, p]
        best = acc.copy()
        for t in range(k, T):
            for p in range(p0, p1):
                acc[p - p0] += np.float64(Y[t, p]) - np.float64(Y[t - k, p])
                if acc[p - p0] > best[p - p0]:
                    best[p - p0] = acc[p - p0]
        out[p0:p1] = best
    return out


def window_mean_peak(Y: np.ndarray, k: int) -> np.ndarray:
    """Largest mean of ``k`` consecutive frames (the peak of the running mean) of every column of Y (T, P)."""
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    k = max(1, min(int(k), Y.shape[0]))
    return (_window_sum_peak(Y, k) / k).astype(np.float32)


def correlation_pnr(frames: np.ndarray, shape: tuple[int, int], sn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw correlation image and PNR of one batch, (T, P) frames of an (h, w) block.

    Returns
    -------
    cn_raw : ndarray (h, w)
        8-neighbour correlation image (:class:`califlow.motion.projections.CorrelationAccumulator`)
        of the mean-subtracted frames with values below 3 noise levels zeroed, before
        CaliAli's mode adjustment.
    pnr : ndarray (h, w)
        Peak of the 10-frame mean (:func:`window_mean_peak`) over the noise level ``sn``.
    """
    from califlow.motion.projections import PNR_MEDIAN_FRAMES, CorrelationAccumulator

    Y = np.ascontiguousarray(frames, dtype=np.float32)
    mean = Y.mean(axis=0, dtype=np.float64).astype(np.float32)
    sn = np.maximum(np.asarray(sn, np.float32), 1e-6)
    # a window mean of the centred frames is the window mean of the frames minus their mean
    pnr = ((window_mean_peak(Y, PNR_MEDIAN_FRAMES) - mean) / sn).astype(np.float32).reshape(shape)
    acc = CorrelationAccumulator(shape)
    acc.add(Y.reshape(-1, *shape), (mean + 3 * sn).reshape(shape), mean.reshape(shape))
    return acc.image(), pnr


def residual_seeds(res: InMemorySource, source: InMemorySource, model: Model, fitter, opts,
                   cn_block: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Seeds (block coordinates, brightest first) of neurons left in the residual ``res`` of ``source``.

    ``cn_block`` is the global seeding Cn over the block: the residual's correlation image
    (mode-adjusted like the data's) is scaled so that the block's data reach the same
    maximum, which puts it on the scale ``min_corr`` thresholds.  ``allowed`` (h, w) bool
    restricts where seeds may lie (e.g. off blood vessels).
    """
    from califlow.motion.projections import adjust_cn, finish_cn, median_filter_zero

    cn_d = pnr_r = cn_r = None
    for b in range(len(source.batches)):
        sn = fitter.summaries[b].sn
        cd, _ = correlation_pnr(source.frames(b), source.shape, sn)
        cr, pr = correlation_pnr(res.frames(b), source.shape, sn)
        cn_d = cd if cn_d is None else np.maximum(cn_d, cd)
        cn_r = cr if cn_r is None else np.maximum(cn_r, cr)
        pnr_r = pr if pnr_r is None else np.maximum(pnr_r, pr)
    _, scale_d = finish_cn(cn_d)
    if scale_d <= 0:
        return np.zeros((0, 2), np.int64)
    cn_scaled = median_filter_zero(adjust_cn(cn_r)) / scale_d * float(np.max(cn_block))
    # not inside the body of an existing footprint (its leftovers are not new neurons)
    taken = np.zeros(source.n_pixels, bool)
    if model.K:
        A = model.A.tocsc()
        taken[A.indices[A.data > RESIDUAL_EXCLUDE]] = True
    mask = ~taken.reshape(source.shape)
    if allowed is not None:
        mask &= allowed
    seeds, _ = find_seeds(cn_scaled, pnr_r, min_corr=opts.min_corr, min_pnr=opts.min_pnr,
                          radius=opts.local_max_radius, mask=mask, min_contrast=opts.min_contrast,
                          contrast_window=opts.contrast_window)
    return seeds
