"""Per-session projections: mean, blood vessels (BV), correlation image (Cn) and PNR.

Scales (what downstream thresholds mean; the CNMF-E seeding uses ``cn`` and ``pnr``):

``mean`` (h, w) float32
    Temporal mean of the motion-corrected raw movie, in the units of ``ingest.zarr``.
``bv`` (h, w) float32 in [0, 1]
    Vesselness of the temporal median of the motion-corrected raw movie (see
    :func:`califlow.motion.vessels.bv_image`), scaled to maximum 1.
``cn`` (h, w) float32 in [0, 1]
    CaliAli's correlation image, which is *not* a Pearson correlation: on the enhanced movie
    ``Y`` (noise-sigma units) each pixel's temporal median is subtracted and values below
    3 sigma are set to 0; time is split into bins of at most 3000 frames, and in each bin the
    8-neighbour correlation image (mean over the in-image neighbours of the Pearson
    correlation of the thresholded traces) is computed; the maximum over bins is
    mode-adjusted, ``(C - mode)**2`` (the mode of the histogram of its non-zero values,
    ``round(n_pixels / 100)`` bins smoothed by a 60-bin running median, searched in the
    lower half of the bins; values below the mode therefore also become positive),
    median-filtered 3x3 (zero borders) and divided by its maximum (``attrs['cn_scale']``).
    ``min_corr`` thresholds this image. After alignment the animal's Cn is the maximum over
    sessions, renormalised to maximum 1.
``pnr`` (h, w) float32, >= 0, not normalised
    Peak-to-noise ratio: ``max_t movmedian(Y - median_t Y, 10 frames) / sn(Y)`` with ``sn``
    the Welch noise of the enhanced movie (about 1 after noise scaling), median-filtered 3x3
    (zero borders). ``min_pnr`` thresholds it.

Vessel pulsation (``preprocessing.remove_vessel_pulse``): the contrast of blood vessels
fluctuates (heartbeat, vasomotion), and after MIN1PIPE enhancement this fluctuation is
coherent along each vessel, so vessels light up in Cn and PNR and give spurious seeds.
Before Cn and PNR (never in the enhanced movie itself), the vessels' common time course
``v_t`` (mean of the enhanced frame over the pixels where the session's BV image exceeds
``VESSEL_THRESHOLD``) is regressed out of every pixel: ``y_t(p) - beta(p) (v_t - mean v)``
with ``beta(p) = cov_t(y(p), v) / var_t(v)`` over the whole session
(:class:`VesselPulse`). A neuron is uncorrelated with ``v`` (its own pixels are a tiny share
of the mask), so it keeps its signal, even when it lies on a vessel.  The same regression,
restricted to the pixels within ``NEAR_VESSEL_PX`` of the mask, is applied to the
concatenated movie CNMF-E reads (``vessel_beta``, ``vessel_course`` in ``projections.zarr``).

The accumulators below stream over frame chunks in time order, so memory does not grow
with the number of frames.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy import ndimage

from califlow.preprocess.temporal import running_median, window_extent

__all__ = ["CN_BIN_FRAMES", "PNR_MEDIAN_FRAMES", "VESSEL_THRESHOLD", "MIN_VESSEL_PIXELS", "NEAR_VESSEL_PX", "cn_bins",
           "CorrelationAccumulator", "vessel_mask", "near_vessels", "VesselPulse",
           "PeakAccumulator", "BinnedCorrelation", "adjust_cn", "median_filter_zero",
           "finish_cn", "finish_pnr"]

#: longest time bin of the correlation image (frames)
CN_BIN_FRAMES = 3000
#: running-median length of the PNR peak (frames)
PNR_MEDIAN_FRAMES = 10
#: BV-image level (scale [0, 1]) above which a pixel is part of the vessel mask
VESSEL_THRESHOLD = 0.3
#: fewest mask pixels for which the vessel course is regressed out (below: nothing is done)
MIN_VESSEL_PIXELS = 50
#: the pulsation is regressed out of the movie within this distance of the vessel mask (px)
NEAR_VESSEL_PX = 3


@numba.njit(cache=True, parallel=True, nogil=True)
def _accumulate_pairs(y, threshold, offset, s1, s2, sxy):  # pragma: no cover - numba
    """Add the moments of ``v = y - offset`` where ``y >= threshold`` (else 0) of frames (n, h, w).

    One image row per thread; the thresholded rows ``i`` and ``i + 1`` of a frame are formed
    in two row buffers, so no thresholded copy of the frames is made.
    """
    n, h, w = y.shape
    for i in numba.prange(h):
        cur = np.empty(w, np.float64)
        nxt = np.zeros(w, np.float64)
        for t in range(n):
            for j in range(w):
                v = y[t, i, j]
                cur[j] = v - offset[i, j] if v >= threshold[i, j] else 0.0
            if i + 1 < h:
                for j in range(w):
                    v = y[t, i + 1, j]
                    nxt[j] = v - offset[i + 1, j] if v >= threshold[i + 1, j] else 0.0
            # branch-free loops over 1-d rows (they vectorise)
            r1, r2, r0 = s1[i], s2[i], sxy[0, i]
            for j in range(w):
                r1[j] += cur[j]
                r2[j] += cur[j] * cur[j]
            for j in range(w - 1):
                r0[j] += cur[j] * cur[j + 1]
            if i + 1 < h:
                ra, rb, rc = sxy[1, i], sxy[2, i], sxy[3, i]
                for j in range(w):
                    ra[j] += cur[j] * nxt[j]
                for j in range(w - 1):
                    rb[j] += cur[j] * nxt[j + 1]
                for j in range(1, w):
                    rc[j] += cur[j] * nxt[j - 1]


class CorrelationAccumulator:
    """Streaming 8-neighbour local correlation image of a movie (CNMF-E ``correlation_image``).

    Parameters
    ----------
    shape : (h, w)
    """

    # forward neighbour offsets (dy, dx) of the 4 accumulated products
    _OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))

    def __init__(self, shape: tuple[int, int]):
        h, w = shape
        self.shape = (int(h), int(w))
        self.n = 0
        self.s1 = np.zeros(self.shape)
        self.s2 = np.zeros(self.shape)
        self.sxy = np.zeros((4,) + self.shape)

    def add(self, block: np.ndarray, threshold: np.ndarray | None = None, offset: np.ndarray | None = None) -> None:
        """Add frames, shape (n, h, w).

        With ``threshold`` and ``offset`` (h, w) the frames enter as ``block - offset`` where
        ``block >= threshold`` and 0 elsewhere (CNMF-E's thresholded correlation image),
        without a thresholded copy.
        """
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.shape[1:] != self.shape:
            raise ValueError(f"frames {block.shape[1:]} do not match {self.shape}")
        thr = np.full(self.shape, -np.inf, np.float32) if threshold is None else \
            np.ascontiguousarray(np.broadcast_to(threshold, self.shape), dtype=np.float32)
        off = np.zeros(self.shape, np.float32) if offset is None else \
            np.ascontiguousarray(np.broadcast_to(offset, self.shape), dtype=np.float32)
        if block.shape[0]:
            _accumulate_pairs(block, thr, off, self.s1, self.s2, self.sxy)
            self.n += block.shape[0]

    def image(self) -> np.ndarray:
        """Mean correlation with the in-image 8 neighbours, (h, w) float32 (0 where flat)."""
        h, w = self.shape
        if self.n < 2:
            return np.zeros(self.shape, dtype=np.float32)
        n = float(self.n)
        mean = self.s1 / n
        sd = np.sqrt(np.maximum(self.s2 / n - mean ** 2, 0.0))
        total = np.zeros(self.shape)
        count = np.zeros(self.shape)
        for k, (dy, dx) in enumerate(self._OFFSETS):
            ys = slice(0, h - dy)
            yq = slice(dy, h)
            xs = slice(max(0, -dx), w - max(0, dx))
            xq = slice(max(0, dx), w + min(0, dx))
            cov = self.sxy[k][ys, xs] / n - mean[ys, xs] * mean[yq, xq]
            den = sd[ys, xs] * sd[yq, xq]
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(den > 0, cov / den, 0.0)
            total[ys, xs] += r
            total[yq, xq] += r
            count[ys, xs] += 1
            count[yq, xq] += 1
        return (total / np.maximum(count, 1)).astype(np.float32)


@numba.njit(cache=True, parallel=True, nogil=True)
def _subtract_course(frames, dv, beta, out):
    n, h, w = frames.shape
    for t in numba.prange(n):
        d = dv[t]
        for i in range(h):
            for j in range(w):
                out[t, i, j] = frames[t, i, j] - d * beta[i, j]
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def _masked_means(flat, index, out):
    n = flat.shape[0]
    for t in numba.prange(n):
        acc = 0.0
        for p in index:
            acc += flat[t, p]
        out[t] = acc / max(len(index), 1)
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def _accumulate_moments(flat, v, sum_y, sum_yv):
    # sum_y[p] += sum_t y[t, p];  sum_yv[p] += sum_t v[t] y[t, p]  (blocks of pixels in parallel)
    n, npix = flat.shape
    block = 1024
    for b in numba.prange((npix + block - 1) // block):
        p0 = b * block
        p1 = min(npix, p0 + block)
        for t in range(n):
            vt = v[t]
            for p in range(p0, p1):
                y = np.float64(flat[t, p])
                sum_y[p] += y
                sum_yv[p] += vt * y
    return sum_y, sum_yv


def near_vessels(mask: np.ndarray, distance: int = NEAR_VESSEL_PX) -> np.ndarray:
    """The vessel mask grown by ``distance`` px (float32 0/1): where the pulsation is regressed
    out of the movie itself.  Farther away the regression would only trade a little of each
    neuron's own signal (which the vessel course partly carries) for nothing."""
    return ndimage.binary_dilation(np.asarray(mask, bool), iterations=int(distance)).astype(np.float32)


def vessel_mask(bv: np.ndarray, threshold: float = VESSEL_THRESHOLD) -> np.ndarray | None:
    """Pixels where the BV image exceeds ``threshold`` (bool (h, w)), or None when fewer than
    ``MIN_VESSEL_PIXELS`` do (no vessels to speak of)."""
    mask = np.asarray(bv) > float(threshold)
    return mask if int(mask.sum()) >= MIN_VESSEL_PIXELS else None


class VesselPulse:
    """Least-squares regression of the vessels' common time course out of every pixel.

    Feed every frame once (:meth:`course`, then :meth:`add`), in any chunking; after
    :meth:`finish`, :meth:`remove` subtracts ``beta(p) (v_t - mean v)`` from frames.

    Parameters
    ----------
    mask : ndarray (h, w) bool
        Vessel pixels (see :func:`vessel_mask`).
    """

    def __init__(self, mask: np.ndarray):
        mask = np.asarray(mask, dtype=bool)
        self.shape = mask.shape
        self.index = np.flatnonzero(mask.ravel())
        self.n = 0
        self.sum_v = 0.0
        self.sum_vv = 0.0
        self.sum_y = np.zeros(mask.size)
        self.sum_yv = np.zeros(mask.size)
        self.beta: np.ndarray | None = None
        self.v_mean = 0.0

    def course(self, frames: np.ndarray) -> np.ndarray:
        """Vessel course ``v_t`` of frames (n, h, w): their mean over the mask, (n,) float64."""
        flat = np.ascontiguousarray(frames, dtype=np.float32).reshape(len(frames), -1)
        v = np.empty(len(flat))
        _masked_means(flat, self.index, v)
        return v

    def add(self, frames: np.ndarray, v: np.ndarray) -> None:
        """Accumulate frames (n, h, w) and their course ``v`` (n,)."""
        flat = np.ascontiguousarray(frames, dtype=np.float32).reshape(len(frames), -1)
        v = np.asarray(v, dtype=np.float64)
        self.n += len(v)
        self.sum_v += float(v.sum())
        self.sum_vv += float(np.sum(v * v))
        _accumulate_moments(flat, v, self.sum_y, self.sum_yv)

    def finish(self) -> np.ndarray:
        """Regression coefficient per pixel ``beta`` (h, w) float32 (zeros if ``v`` is constant)."""
        n = max(self.n, 1)
        self.v_mean = self.sum_v / n
        var = self.sum_vv / n - self.v_mean ** 2
        cov = self.sum_yv / n - (self.sum_y / n) * self.v_mean
        beta = cov / var if var > 1e-12 * max(self.sum_vv / n, 1e-30) else np.zeros_like(cov)
        self.beta = beta.reshape(self.shape).astype(np.float32)
        return self.beta

    def remove(self, frames: np.ndarray, v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``frames - beta (v - mean v)``, (n, h, w) float32 (into ``out``, which may be ``frames``)."""
        if self.beta is None:
            self.finish()
        frames = np.asarray(frames, dtype=np.float32)
        out = np.empty_like(frames) if out is None else out
        dv = (np.asarray(v, dtype=np.float64) - self.v_mean).astype(np.float32)
        _subtract_course(frames, dv, self.beta, out)
        return out


def cn_bins(n_frames: int, bin_frames: int = CN_BIN_FRAMES) -> np.ndarray:
    """Edges of ``ceil(T / bin_frames)`` near-equal time bins, shape (n_bins + 1,) int."""
    n_bins = max(1, int(math.ceil(n_frames / bin_frames)))
    return np.round(np.linspace(0, n_frames, n_bins + 1)).astype(np.int64)


class BinnedCorrelation:
    """Maximum over time bins of the local correlation image, fed in time order.

    Parameters
    ----------
    shape : (h, w)
    n_frames : int
        Frames of the whole movie (sets the bins, see :func:`cn_bins`).
    """

    def __init__(self, shape: tuple[int, int], n_frames: int, bin_frames: int = CN_BIN_FRAMES):
        self.shape = shape
        self.edges = cn_bins(n_frames, bin_frames)
        self.best = np.full(shape, -np.inf, dtype=np.float32)
        self._bin = 0
        self._acc = CorrelationAccumulator(shape)
        self._pos = 0

    def add(self, block: np.ndarray, threshold: np.ndarray | None = None, offset: np.ndarray | None = None) -> None:
        """Add the next frames (n, h, w) of the movie (thresholded as in :meth:`CorrelationAccumulator.add`)."""
        a = 0
        n = block.shape[0]
        while a < n:
            end = int(self.edges[self._bin + 1]) - self._pos
            take = min(n - a, max(end, 0))
            if take > 0:
                self._acc.add(block[a:a + take], threshold, offset)
                a += take
                self._pos += take
            if self._pos >= self.edges[self._bin + 1] and self._bin + 1 < len(self.edges) - 1:
                self._close_bin()
                self._bin += 1
            elif take == 0:
                raise ValueError("more frames were added than the movie holds")

    def _close_bin(self) -> None:
        np.maximum(self.best, self._acc.image(), out=self.best)
        self._acc = CorrelationAccumulator(self.shape)

    def image(self) -> np.ndarray:
        """Maximum over bins (closes the last bin), (h, w) float32."""
        if self._acc.n:
            self._close_bin()
        out = np.where(np.isfinite(self.best), self.best, 0.0)
        return out.astype(np.float32)


class PeakAccumulator:
    """Streaming ``max_t movmedian(y, k)`` per pixel (MATLAB windows, shrink at the movie ends).

    The last ``k - 1`` frames of each chunk are carried into the next one, so the result
    equals the whole-movie computation whatever the chunking.
    """

    def __init__(self, shape: tuple[int, int], k: int = PNR_MEDIAN_FRAMES):
        self.k = int(k)
        self.before, self.after = window_extent(self.k)
        self.peak = np.full(shape, -np.inf, dtype=np.float32)
        self._tail = np.zeros((0,) + tuple(shape), dtype=np.float32)
        self._seen = 0

    def add(self, block: np.ndarray, last: bool = False) -> None:
        """Add the next frames (n, h, w); ``last=True`` for the movie's final chunk."""
        block = np.asarray(block, dtype=np.float32)
        n_tail = len(self._tail)
        buf = np.empty((n_tail + block.shape[0],) + self.peak.shape, dtype=np.float32)
        buf[:n_tail] = self._tail
        buf[n_tail:] = block
        self._seen += block.shape[0]
        if buf.shape[0] == 0:
            return
        starts_movie = self._seen == buf.shape[0]   # the buffer begins at frame 0
        med = running_median(buf, self.k)
        # a frame's median is final when its whole window is inside the buffer or cut by a movie end
        first = 0 if starts_movie else min(self.before, buf.shape[0])
        stop = buf.shape[0] if last else max(first, buf.shape[0] - self.after)
        if stop > first:
            np.maximum(self.peak, med[first:stop].max(axis=0), out=self.peak)
        keep = min(self.k - 1, buf.shape[0])
        self._tail = buf[buf.shape[0] - keep:].copy()

    def result(self) -> np.ndarray:
        """Peak per pixel (h, w) float32."""
        return np.where(np.isfinite(self.peak), self.peak, 0.0).astype(np.float32)


def median_filter_zero(image: np.ndarray, size: int = 3) -> np.ndarray:
    """``size`` x ``size`` median filter with zero padding (MATLAB ``medfilt2``), float32."""
    return ndimage.median_filter(np.asarray(image, dtype=np.float32), size=size, mode="constant",
                                 cval=0.0)


def adjust_cn(cn: np.ndarray) -> np.ndarray:
    """CaliAli's mode adjustment of a correlation image: ``(cn - mode)**2``.

    The mode is the peak of the histogram of the non-zero values (``round(n / 100)`` bins,
    at least 10, normalised and smoothed by a running median of 60 bins), searched within
    the lower half of the bins. Returns float32.
    """
    cn = np.asarray(cn, dtype=np.float32)
    values = cn[cn != 0]
    if values.size < 2 or float(values.max()) == float(values.min()):
        return np.zeros_like(cn)
    n_bins = max(10, int(round(values.size / 100)))
    counts, edges = np.histogram(values, bins=n_bins)
    smooth = running_median(counts.astype(np.float32) / counts.sum(), 60)
    half = max(1, n_bins // 2)
    i = int(np.argmax(smooth[:half]))
    mode = 0.5 * (edges[i] + edges[i + 1])
    return ((cn - np.float32(mode)) ** 2).astype(np.float32)


def finish_cn(cn_max_over_bins: np.ndarray) -> tuple[np.ndarray, float]:
    """Mode-adjust, 3x3 median filter and normalise; returns ``(cn, cn_scale)``."""
    cn = median_filter_zero(adjust_cn(cn_max_over_bins))
    scale = float(cn.max())
    if scale > 0:
        cn = cn / np.float32(scale)
    return cn.astype(np.float32), scale


def finish_pnr(peak: np.ndarray, median: np.ndarray, sn: np.ndarray) -> np.ndarray:
    """``(peak - median) / sn``, clipped at 0, 3x3 median filter (zero borders), float32."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pnr = np.where(sn > 0, (peak - median) / sn, 0.0)
    return median_filter_zero(np.maximum(pnr, 0.0))
