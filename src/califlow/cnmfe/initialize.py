"""Initialisation: one footprint and trace per seed and batch, peeled off the data.

For every batch (the same seed list in each, so component k is the same neuron in every
session) the median-subtracted frames ``HY`` of the block are visited seed by seed,
brightest first.  Around a seed (box of half-width 6 gSig):

1. skip the seed when its trace never exceeds 3 robust noise levels;
2. correlate every box pixel with the seed pixel, clip negative correlations, keep
   pixels above 20 % of the range, take the connected blob holding the seed and dilate it
   by a disk of radius ``1.2 gSig`` (CaliAli's 3 px at its gSig 2.5, :func:`blob_dilation`);
   (the blob needs at least 5 pixels: a lone correlated pixel is noise);
3. the trace is the mean of the blob, which must reach ``min_pnr`` (peak of its 10-frame
   running median over the noise of its frame differences, the measure of the seeding
   PNR image) in what is left after the brighter seeds were peeled off: a seed on the
   flank of a neuron already initialised, or on noise, has a blob of noise (CNMF-E's
   greedy initialisation re-tests its seeds after each neuron is subtracted too); each
   box pixel is regressed on
   ``[1, mean outside the blob, trace]`` and the footprint is the non-negative trace
   coefficient inside the blob (at least 5 pixels, else the seed is skipped);
4. the trace is denoised (in-loop deconvolution) and ``a c^T`` is subtracted from HY.

The footprint of a neuron is the mean of its per-batch footprints (peak 1); its trace is
the concatenation of the per-batch traces (zero where the seed was skipped).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from califlow.cnmfe.data import InMemorySource
from califlow.cnmfe.model import Model, empty_model, normalize_footprints
from califlow.cnmfe.seeds import disk_footprint
from califlow.cnmfe.temporal import ar_order, denoise_trace
from califlow.metrics import MAD_TO_SIGMA

__all__ = ["initialize", "init_seed", "init_seed_reason", "blob_dilation", "peeled_pnr", "REJECT_REASONS"]

#: Fraction of the correlation range a pixel needs to join the seed's blob.
BLOB_THRESHOLD = 0.2
#: Radius of the disk that dilates the blob (px) at CaliAli's gSig 2.5 (its ``strel('disk', 3)``), and
#: per px of gSig (:func:`blob_dilation`): the blob holds the pixels most correlated with the seed and the
#: dilation adds the footprint's flank, whose width follows the neuron size.
BLOB_DILATION = 3
BLOB_DILATION_PER_GSIG = BLOB_DILATION / 2.5
#: Fewest correlated pixels around a seed, and fewest positive footprint pixels, to accept it.
MIN_INIT_PIXELS = 5
#: Frames used for the per-pixel temporal median.
MEDIAN_FRAMES = 250
#: Why :func:`init_seed_reason` rejects a seed, in the order of its tests.
REJECT_REASONS = ("weak seed trace", "no correlation", "small blob", "peeled pnr", "few footprint pixels",
                  "silent trace")
#: Running-median length (frames) of the peak in the peeled peak-to-noise test (as the PNR image).
PNR_FRAMES = 10


def blob_dilation(gsig: float) -> float:
    """Radius (px, real-valued) of the disk that dilates a seed's blob: ``1.2 gSig`` (3 px at gSig 2.5).

    The disk holds the integer offsets within that radius (:func:`califlow.cnmfe.seeds.disk_footprint`),
    so it grows a few pixels at a time as gSig grows, with no jump at a rounding boundary.

    A fixed 3 px (CaliAli) is a flank of about one gSig for the 7-8 px neurons it was set for;
    on 5-px neurons (gSig 1.5) it doubles the blob's radius and reaches into the neighbours of
    a dense field: the blob's mean trace then averages the neuron with noise and with its
    neighbours' pixels (a dim neuron fails the peeled PNR test, a bright one peels its dim
    neighbours off with its own footprint).
    """
    return max(1.0, BLOB_DILATION_PER_GSIG * float(gsig))




@numba.njit(cache=True, nogil=True)
def _median_inplace(x: np.ndarray) -> float:  # pragma: no cover - numba
    """Median of a 1-d float32 buffer (reordered in place; quickselect, no allocation)."""
    n = x.size
    k = n // 2
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = x[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while x[i] < pivot:
                i += 1
            while x[j] > pivot:
                j -= 1
            if i <= j:
                x[i], x[j] = x[j], x[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    upper = np.float64(x[k])
    if n % 2:
        return upper
    lower = x[0]
    for q in range(1, k):  # the largest of the k smallest values
        if x[q] > lower:
            lower = x[q]
    return 0.5 * (np.float64(lower) + upper)


@numba.njit(cache=True, parallel=True)
def _centred_transpose(Y: np.ndarray, step: int) -> np.ndarray:  # pragma: no cover - numba
    """``Y.T`` (P, T) of frames Y (T, P) minus each pixel's median over frames 0, step, 2 step, ...

    Pixels in blocks of 32 per thread: their samples are gathered frame by frame, the
    medians found by quickselect, then the block is transposed in 32 x 32 tiles.
    """
    T, P = Y.shape
    m = (T + step - 1) // step
    out = np.empty((P, T), Y.dtype)
    nb = (P + 31) // 32
    for pb in numba.prange(nb):
        p0 = pb * 32
        p1 = min(P, p0 + 32)
        samples = np.empty((p1 - p0, m), np.float32)
        for k in range(m):
            for p in range(p0, p1):
                samples[p - p0, k] = Y[k * step, p]
        med = np.empty(p1 - p0, np.float32)
        for p in range(p1 - p0):
            med[p] = _median_inplace(samples[p])
        for t0 in range(0, T, 32):
            t1 = min(T, t0 + 32)
            for p in range(p0, p1):
                mp = med[p - p0]
                for t in range(t0, t1):
                    out[p, t] = Y[t, p] - mp
    return out


def centred_pixels(Y_b: np.ndarray, max_frames: int = MEDIAN_FRAMES) -> np.ndarray:
    """Pixel-major copy ``HY`` (P, T_b) of a batch (T_b, P) minus each pixel's temporal median.

    The median is taken over at most ``max_frames`` evenly spaced frames.
    """
    Y_b = np.ascontiguousarray(Y_b, dtype=np.float32)
    return _centred_transpose(Y_b, max(1, -(-Y_b.shape[0] // max_frames)))


def peeled_pnr(hy: np.ndarray) -> float:
    """Peak-to-noise ratio of a centred trace (T,): max of its 10-frame running median over its noise.

    The noise is the rms of first differences / sqrt(2) (white noise: its standard
    deviation; slow signal barely contributes).
    """
    from califlow.preprocess.temporal import running_median

    d = np.diff(hy)
    sn = float(np.sqrt(np.mean(d.astype(np.float64) ** 2) / 2.0)) if d.size else 0.0
    if sn <= 0:
        return 0.0
    return float(running_median(hy[:, None], PNR_FRAMES).max()) / sn


@numba.njit(cache=True, nogil=True, fastmath=True)
def _box_moments(HY: np.ndarray, pix: np.ndarray, hc: np.ndarray):  # pragma: no cover - numba
    """One pass over the rows ``pix`` of HY (P, T): their sums, sums of squares and dot
    products with ``hc`` (each (n,) float64), and the sum of the rows (T,) float32."""
    n = pix.size
    T = HY.shape[1]
    sums = np.empty(n)
    sq = np.empty(n)
    num = np.empty(n)
    total = np.zeros(T, np.float32)
    for i in range(n):
        row = HY[pix[i]]
        s = 0.0
        ss = 0.0
        d = 0.0
        for t in range(T):
            v = row[t]
            s += v
            ss += np.float64(v) * v
            d += np.float64(v) * hc[t]
            total[t] += v
        sums[i] = s
        sq[i] = ss
        num[i] = d
    return sums, sq, num, total


def init_seed(HY: np.ndarray, shape: tuple[int, int], y: int, x: int, radius: int, deconv_flag: bool, options,
              min_pnr: float = 0.0, dilation: float = BLOB_DILATION):
    """Footprint and trace of the seed (y, x) from the centred pixel-major frames HY (P, T).

    ``min_pnr`` is the peak-to-noise ratio (:func:`peeled_pnr`) the blob's mean trace must
    reach in ``HY`` (0: CaliAli's tests only); ``dilation`` the radius (px) of the disk that dilates
    the blob of correlated pixels (:func:`blob_dilation` of gSig).

    Returns
    -------
    None when the seed is rejected, else ``(pixels, a, c_raw, fit)``: the flat indices of
    the footprint's pixels, their footprint values (peak 1), the raw trace (baseline
    removed, (T,)) and its :class:`~califlow.cnmfe.temporal.TraceFit`.
    """
    return init_seed_reason(HY, shape, y, x, radius, deconv_flag, options, min_pnr, dilation)[0]


def init_seed_reason(HY: np.ndarray, shape: tuple[int, int], y: int, x: int, radius: int, deconv_flag: bool,
                     options, min_pnr: float = 0.0, dilation: float = BLOB_DILATION):
    """:func:`init_seed` with the reason of a rejection: ``(result, reason)``.

    ``reason`` is None when the seed is accepted, else one of :data:`REJECT_REASONS`.
    """
    h, w = shape
    T = HY.shape[1]
    hy = HY[y * w + x]
    spread = MAD_TO_SIGMA * float(np.median(np.abs(hy - np.median(hy))))
    if spread <= 0 or hy.max() < 3 * spread:
        return None, "weak seed trace"
    y0, y1 = max(0, y - radius), min(h, y + radius + 1)
    x0, x1 = max(0, x - radius), min(w, x + radius + 1)
    bh, bw = y1 - y0, x1 - x0
    pix = ((np.arange(y0, y1)[:, None] * w) + np.arange(x0, x1)[None, :]).ravel()
    hc = hy - hy.mean()
    sums, sq, num, box_sum = _box_moments(HY, pix, hc)
    sq -= sums * sums / T
    den = np.sqrt(float(hc @ hc)) * np.sqrt(np.maximum(sq, 0))
    corr = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    corr = np.maximum(corr, 0).reshape(bh, bw)
    lo, hi = corr.min(), corr.max()
    if hi <= lo:
        return None, "no correlation"
    mask = (corr - lo) / (hi - lo) > BLOB_THRESHOLD
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    lab = labels[y - y0, x - x0]
    if lab == 0 or np.count_nonzero(labels == lab) < MIN_INIT_PIXELS:
        return None, "small blob"  # no group of correlated pixels: noise, not a neuron
    blob = ndimage.binary_dilation(labels == lab, structure=disk_footprint(dilation)).ravel()
    n_in, n_out = int(blob.sum()), int((~blob).sum())
    inside = HY[pix[blob]]
    in_sum = inside.sum(axis=0)
    c = in_sum / n_in
    if min_pnr > 0 and peeled_pnr(c) < min_pnr:
        return None, "peeled pnr"  # nothing left but noise once the brighter neighbours are peeled off
    bg = ((box_sum - in_sum) / n_out).astype(np.float32) if n_out else np.zeros(T, np.float32)
    X = np.stack([np.ones(T, np.float32), bg, c], axis=1).astype(np.float32)
    gram = (X.T @ X).astype(np.float64) + 1e-9 * np.eye(3)
    coef = np.linalg.solve(gram, (inside @ X).T.astype(np.float64))  # (3, n_in)
    a = np.maximum(coef[2], 0).astype(np.float32)
    if np.count_nonzero(a) < MIN_INIT_PIXELS:
        return None, "few footprint pixels"
    peak = float(a.max())
    a /= peak
    c = (c * peak).astype(np.float32)
    fit = denoise_trace(c, deconv_flag, options)
    if not np.any(fit.c > 0):
        return None, "silent trace"
    nz = a > 0
    return (pix[blob][nz], a[nz], (c - fit.b).astype(np.float32), fit), None


def initialize(source: InMemorySource, seeds: np.ndarray, ids: np.ndarray, opts) -> Model:
    """Initialise one component per seed on an in-memory block (all its batches).

    Parameters
    ----------
    source : InMemorySource
        The block's frames, one array per batch.
    seeds : ndarray (N, 2) int
        Seed positions (y, x) in block coordinates, brightest first.
    ids : ndarray (N,) int
        Identity of each seed (kept by the component).
    opts : CnmfeOptions

    Returns
    -------
    Model
        Components for the seeds found in at least one batch (others are dropped).
    """
    h, w = source.shape
    batches = source.batches
    model = empty_model((h, w), batches)
    n, nb = len(seeds), len(batches)
    if n == 0:
        return model
    T, P = model.C.shape[1], h * w
    C, C_raw, S = (np.zeros((n, T), np.float32) for _ in range(3))
    sn = np.zeros((n, nb), np.float32)
    g = np.full((n, nb, ar_order(opts.deconv_options)), np.nan)
    parts_pix, parts_seed, parts_val = [], [], []
    found = np.zeros((n, nb), bool)
    dilation = blob_dilation(opts.gSig)
    for b in range(nb):
        HY = centred_pixels(source.frames(b))
        cols = model.frames(b)
        for i, (y, x) in enumerate(seeds):
            res = init_seed(HY, (h, w), int(y), int(x), opts.box_radius, opts.deconv_flag, opts.deconv_options,
                            min_pnr=opts.min_pnr, dilation=dilation)
            if res is None:
                continue
            pix, a, c_raw, fit = res
            HY[pix] -= a[:, None] * fit.c[None, :]
            parts_pix.append(pix)
            parts_seed.append(np.full(pix.size, i))
            parts_val.append(a)
            C[i, cols], C_raw[i, cols], S[i, cols] = fit.c, c_raw, fit.s
            sn[i, b] = fit.sn
            g[i, b] = fit.g
            found[i, b] = True
        del HY
    keep = np.flatnonzero(found.any(axis=1))
    if not keep.size:
        return model
    A = _mean_footprints(parts_pix, parts_seed, parts_val, found.sum(axis=1), P)
    A, _ = normalize_footprints(sp.csc_matrix(A[:, keep]))
    return Model((h, w), list(batches), A, C[keep], C_raw[keep], S[keep], np.asarray(ids)[keep].astype(np.int64),
                 sn[keep], g[keep])


def _mean_footprints(pix: list, seed: list, val: list, n_found: np.ndarray, P: int) -> sp.csc_matrix:
    """(P, N) csc: each seed's footprint averaged over the batches that found it."""
    seed_of = np.concatenate(seed)
    weight = np.concatenate(val) / n_found.astype(np.float32)[seed_of]
    return sp.csc_matrix((weight, (np.concatenate(pix), seed_of)),
                         shape=(P, n_found.size))  # duplicate entries (one per batch) are summed
