"""Seeds: local maxima of Cn x PNR on the global (max over sessions) projections.

CaliAli seeds CNMF-E once for the whole concatenated movie from ``v = Cn * PNR`` of the
aligned projections, so the same seed (and therefore the same neuron index) is used in
every session.  ``Cn`` is CaliAli's mode-adjusted, squared and max-normalised
correlation image, which is the scale ``min_corr`` thresholds (not a Pearson r).

Besides CaliAli's absolute thresholds, a seed must stand out from its neighbourhood
(``min_contrast``): ``Cn * PNR`` at the seed must reach ``min_contrast`` times the median
of ``Cn * PNR`` over the background (non-vessel pixels below ``min_pnr``) of a window of
``4 gSiz + 1`` px around it.
Where the enhanced movie holds no structured background the median is near 0 (``Cn`` is
0 at its mode) and the test passes; where background fluctuations survive the
enhancement (pulsing vessels, neuropil shaped by vessel shadows) many pixels reach
moderate ``Cn`` and ``PNR`` and their local maxima would otherwise seed diffuse false
components.  This is a constant-false-alarm-rate detector: the threshold follows the
local clutter level.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

__all__ = ["find_seeds", "candidates", "local_maxima", "local_level", "disk_footprint"]


def disk_footprint(radius: float) -> np.ndarray:
    """Boolean disk of the integer offsets within ``radius`` px of the centre, (2 r + 1, 2 r + 1)."""
    r = max(0.0, float(radius))
    n = int(np.floor(r + 1e-9))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    return yy ** 2 + xx ** 2 <= r * r + 1e-9


def local_maxima(image: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of pixels equal to the maximum of the disk of ``radius`` px around them.

    The neighbourhood is symmetric (the pixels within ``radius`` of the centre; at least
    the 8-neighbourhood is used, ``radius`` >= sqrt 2), so two adjacent pixels can both be
    maxima only when they are tied; on such a plateau of equal values only the first
    pixel in raster order is kept.  Zero padding (as MATLAB ``ordfilt2``).
    """
    img = np.asarray(image, dtype=np.float64)
    fp = disk_footprint(max(float(radius), np.sqrt(2.0)))
    mx = ndimage.maximum_filter(img, footprint=fp, mode="constant", cval=0.0)
    peaks = (img == mx) & (img > 0)
    if not peaks.any():
        return peaks
    # plateaus: keep one pixel per connected group of tied maxima
    labels, n = ndimage.label(peaks, structure=np.ones((3, 3), bool))
    if n < peaks.sum():
        flat = labels.ravel()
        idx = np.flatnonzero(flat)
        _, first = np.unique(flat[idx], return_index=True)
        keep = np.zeros(flat.size, bool)
        keep[idx[first]] = True
        peaks = keep.reshape(peaks.shape)
    return peaks


def local_level(image: np.ndarray, window: int, valid: np.ndarray | None = None, step: int | None = None
                ) -> np.ndarray:
    """Median of ``image`` over the valid pixels of a ``window`` x ``window`` box around each pixel.

    The median is evaluated on a grid of stride ``step`` (default ``window // 8``) and
    interpolated bilinearly in between (the level is smooth at the window's scale); boxes
    are clipped at the border.  Boxes without a valid pixel take the global median of the
    valid pixels (0 when there is none).

    Parameters
    ----------
    image : ndarray (H, W)
    window : int
        Box side (px, odd or even).
    valid : ndarray (H, W) bool, optional
        Pixels that count (default all).
    step : int, optional
        Grid stride (px).

    Returns
    -------
    ndarray (H, W) float32
    """
    img = np.asarray(image, np.float32)
    h, w = img.shape
    vals = np.where(np.ones_like(img, bool) if valid is None else np.asarray(valid, bool), img, np.nan)
    fallback = float(np.nanmedian(vals)) if np.isfinite(vals).any() else 0.0
    half = max(1, int(window) // 2)
    step = max(1, int(step) if step else int(window) // 8)
    gy = np.unique(np.r_[np.arange(0, h, step), h - 1])
    gx = np.unique(np.r_[np.arange(0, w, step), w - 1])
    pad = np.pad(vals, half, mode="constant", constant_values=np.nan)
    grid = np.empty((gy.size, gx.size), np.float32)
    for i, y in enumerate(gy):  # one row of boxes at a time: memory ~ W/step * window^2
        rows = pad[y:y + 2 * half + 1]
        boxes = np.stack([rows[:, x:x + 2 * half + 1] for x in gx]).reshape(gx.size, -1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN boxes
            grid[i] = np.nanmedian(boxes, axis=1)
    grid = np.where(np.isfinite(grid), grid, fallback).astype(np.float32)
    # bilinear interpolation of the grid back to every pixel
    fy = np.interp(np.arange(h), gy, np.arange(gy.size)).astype(np.float32)
    fx = np.interp(np.arange(w), gx, np.arange(gx.size)).astype(np.float32)
    return ndimage.map_coordinates(grid, np.meshgrid(fy, fx, indexing="ij"), order=1, mode="nearest"
                                   ).astype(np.float32)


def find_seeds(cn: np.ndarray, pnr: np.ndarray, *, min_corr: float, min_pnr: float, radius: float,
               mask: np.ndarray | None = None, min_contrast: float = 0.0, contrast_window: int = 41
               ) -> tuple[np.ndarray, np.ndarray]:
    """Seed pixels, brightest first.

    Parameters
    ----------
    cn, pnr : ndarray (H, W)
        Global correlation image (CaliAli scale, max 1) and peak-to-noise ratio image.
    min_corr, min_pnr : float
        A seed needs ``cn >= min_corr`` and ``pnr >= min_pnr``.
    radius : float
        Radius (px) of the disk in which a seed must be the maximum (:func:`local_maxima`).
    mask : ndarray (H, W) bool, optional
        Where seeds are allowed (also the pixels the local level is taken over).
    min_contrast : float
        A seed needs ``cn * pnr >= min_contrast *`` the local median of ``cn * pnr``
        (:func:`local_level` over ``contrast_window`` px); 0 disables the test.
    contrast_window : int
        Side of the neighbourhood of the local level (px; ``4 gSiz + 1``).

    Returns
    -------
    seeds : ndarray (N, 2) int64
        (y, x) positions sorted by decreasing ``cn * pnr``.
    score : ndarray (N,) float32
        ``cn * pnr`` at each seed.
    """
    yx, cn_c, pnr_c, contrast = candidates(cn, pnr, radius=radius, mask=mask, min_contrast=min_contrast,
                                           contrast_window=contrast_window, background_pnr=min_pnr)
    keep = (cn_c >= min_corr) & (pnr_c >= min_pnr) & contrast
    ys, xs = yx[keep, 0], yx[keep, 1]
    score = (cn_c * pnr_c)[keep]
    order = np.lexsort((xs, ys, -score))  # brightest first, ties in raster order
    seeds = np.stack([ys[order], xs[order]], axis=1).astype(np.int64)
    return seeds, score[order].astype(np.float32)


def candidates(cn: np.ndarray, pnr: np.ndarray, *, radius: float, mask: np.ndarray | None = None,
               min_contrast: float = 0.0, contrast_window: int = 41, background_pnr: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every seed candidate before the thresholds: local maxima of ``cn * pnr`` (> 0) inside ``mask``.

    The local level of the contrast test is the median over the background: the pixels of
    ``mask`` whose PNR is below ``background_pnr`` (``min_pnr``; None: every pixel of
    ``mask``). Pixels that pass the PNR threshold are signal; in a dense field of view, or
    when a large gSig spreads every neuron over its neighbourhood, they would otherwise make
    most of the window and raise the "background" to the level of the neurons' flanks, and
    the neurons would fail their own contrast test.

    Returns
    -------
    yx : ndarray (N, 2) int64, in raster order
    cn, pnr : ndarray (N,) float32, the images at the candidates
    contrast_ok : ndarray (N,) bool, whether each passes the ``min_contrast`` test (see
        :func:`find_seeds`)
    """
    cn = np.nan_to_num(np.asarray(cn, np.float32))
    pnr = np.nan_to_num(np.asarray(pnr, np.float32))
    if cn.shape != pnr.shape:
        raise ValueError(f"Cn {cn.shape} and PNR {pnr.shape} images differ in shape")
    v = cn * pnr
    peaks = local_maxima(v, radius)
    if mask is not None:
        peaks &= np.asarray(mask, bool)
    ys, xs = np.nonzero(peaks)
    if min_contrast > 0:
        background = np.ones(v.shape, bool) if mask is None else np.asarray(mask, bool)
        if background_pnr is not None:
            background = background & (pnr < background_pnr)
        contrast = v[ys, xs] >= min_contrast * local_level(v, contrast_window, background)[ys, xs]
    else:
        contrast = np.ones(ys.size, bool)
    return np.stack([ys, xs], axis=1).astype(np.int64), cn[ys, xs], pnr[ys, xs], contrast
