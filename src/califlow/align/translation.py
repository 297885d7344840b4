"""Groupwise sub-pixel translation between sessions.

1. Phase correlation between each session and its next ``n_neighbors`` sessions (a chain
   with redundant links: cost linear in the number of sessions), on windowed,
   local-contrast-normalised images. The correlation peak is made Gaussian by a low-pass of
   the cross-power spectrum and located to sub-pixel precision by a log-parabola fit.
2. The session positions ``t`` solve the weighted least squares ``t_j - t_i = d_ij`` with
   ``Σ t = 0`` (the common frame is the mean position, no template session); links whose
   residual exceeds ``outlier_px`` are dropped and the system solved again.
3. ``n_refine`` rounds against the leave-one-out mean of the translated sessions, then
   re-centring on the mean.

Deterministic: no random template choice (CaliAli picks a random first session).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from califlow.align.maps import BilinearWarp, identity_map
from califlow.metrics import MAD_TO_SIGMA

__all__ = ["phase_shift", "groupwise_translation"]

log = logging.getLogger("califlow.align")


def _window(shape: tuple[int, int], frac: float = 0.15) -> np.ndarray:
    """Separable Tukey window (``frac`` of each side tapered)."""
    def tukey(n: int) -> np.ndarray:
        w = np.ones(n, np.float32)
        m = max(1, int(frac * n))
        ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(m) + 0.5) / m))
        w[:m] = ramp
        w[-m:] = ramp[::-1]
        return w
    return np.outer(tukey(shape[0]), tukey(shape[1])).astype(np.float32)


def _shifted(img: np.ndarray, d: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """``img(p + d)`` (bicubic), for a 2-D image or each channel of a (C, H, W) stack."""
    m = np.array([[1, 0, d[1]], [0, 1, d[0]]], np.float32)
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP

    def one(x):
        return cv2.warpAffine(np.ascontiguousarray(x, np.float32), m, (x.shape[1], x.shape[0]), flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=fill)

    return one(img) if img.ndim == 2 else np.stack([one(c) for c in img])


def phase_shift(a: np.ndarray, b: np.ndarray, mask_a: np.ndarray | None = None,
                mask_b: np.ndarray | None = None, *, max_shift: float | None = None,
                peak_sigma: float = 1.0, n_refine: int = 2) -> tuple[np.ndarray, float]:
    """Displacement ``d`` (y, x) with ``b(p + d) ≈ a(p)``, and the peak quality.

    The first estimate is refined ``n_refine`` times by shifting ``b`` by it and measuring
    the residual (the taper window biases a single estimate toward zero by ~1%).

    Parameters
    ----------
    a, b : float32 (H, W) or (C, H, W)
        Images (or stacks of C channels) on grids of the same shape; channels are combined
        by summing their normalised cross-power spectra (zero-mean features work best).
    mask_a, mask_b : bool (H, W), optional
        Valid pixels (others are zeroed before the transform).
    max_shift : float, optional
        Largest |dy|, |dx| accepted (px); default a third of the image.
    peak_sigma : float
        Width (px) of the Gaussian the correlation peak is smoothed to before the sub-pixel fit.
    n_refine : int
        Refinement passes.

    Returns
    -------
    d : ndarray (2,) float64, px
    quality : float
        Peak height over the robust spread of the correlation surface of the first pass (a
        z-score; < 5 means the estimate is unreliable).
    """
    d, quality = _phase_shift_once(a, b, mask_a, mask_b, max_shift=max_shift, peak_sigma=peak_sigma)
    for _ in range(n_refine):
        bs = _shifted(b, d)
        ms = (_shifted((mask_b if mask_b is not None else np.ones(b.shape[-2:], bool)).astype(np.float32), d) > 0.99)
        joint = ms if mask_a is None else (ms & mask_a)  # same support: no bias from the borders
        step, _ = _phase_shift_once(a, bs, joint, joint, max_shift=2.0, peak_sigma=peak_sigma)
        d = d + step
        if np.abs(step).max() < 1e-3:
            break
    return d, quality


def _phase_shift_once(a: np.ndarray, b: np.ndarray, mask_a: np.ndarray | None = None,
                      mask_b: np.ndarray | None = None, *, max_shift: float | None = None,
                      peak_sigma: float = 1.0) -> tuple[np.ndarray, float]:
    """One phase-correlation estimate (see :func:`phase_shift`)."""
    a = a[None] if a.ndim == 2 else a
    b = b[None] if b.ndim == 2 else b
    h, w = a.shape[1:]
    win = _window((h, w))
    cross = np.zeros((h, w // 2 + 1), np.complex128)
    for ca, cb in zip(a, b):
        fa = np.where(mask_a, ca, 0) if mask_a is not None else ca
        fb = np.where(mask_b, cb, 0) if mask_b is not None else cb
        fa = (fa - fa.mean()) * win
        fb = (fb - fb.mean()) * win
        c = np.fft.rfft2(fb) * np.conj(np.fft.rfft2(fa))
        cross += c / (np.abs(c) + 1e-12 * np.abs(c).max() + 1e-30)
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    cross *= np.exp(-2 * (np.pi * peak_sigma) ** 2 * (ky ** 2 + kx ** 2))
    corr = np.fft.irfft2(cross, s=(h, w))
    corr = np.fft.fftshift(corr)
    cy, cx = h // 2, w // 2
    lim = max_shift if max_shift is not None else min(h, w) / 3
    yy = np.abs(np.arange(h) - cy)[:, None] <= lim
    xx = np.abs(np.arange(w) - cx)[None, :] <= lim
    search = np.where(yy & xx, corr, -np.inf)
    iy, ix = np.unravel_index(np.argmax(search), corr.shape)
    iy = int(np.clip(iy, 1, h - 2))
    ix = int(np.clip(ix, 1, w - 2))

    def parabola(m1: float, c0: float, p1: float) -> float:
        lm, lc, lp = (np.log(max(v, 1e-12)) for v in (m1, c0, p1))
        den = lm - 2 * lc + lp
        return 0.0 if den >= 0 else float(np.clip(0.5 * (lm - lp) / den, -0.5, 0.5))

    peak = corr[iy, ix]
    oy = parabola(corr[iy - 1, ix], peak, corr[iy + 1, ix])
    ox = parabola(corr[iy, ix - 1], peak, corr[iy, ix + 1])
    med = np.median(corr)
    spread = MAD_TO_SIGMA * np.median(np.abs(corr - med)) + 1e-12
    quality = float((peak - med) / spread)
    return np.array([iy - cy + oy, ix - cx + ox], dtype=np.float64), quality


def _solve(n: int, links: list[tuple[int, int, np.ndarray, float]]) -> np.ndarray:
    rows, rhs, wts = [], [], []
    for i, j, d, q in links:
        r = np.zeros(n)
        r[j], r[i] = 1.0, -1.0
        rows.append(r)
        rhs.append(d)
        wts.append(q)
    rows.append(np.ones(n))
    rhs.append(np.zeros(2))
    wts.append(float(max(wts)) if wts else 1.0)
    A = np.array(rows) * np.sqrt(np.array(wts))[:, None]
    y = np.array(rhs) * np.sqrt(np.array(wts))[:, None]
    t, *_ = np.linalg.lstsq(A, y, rcond=None)
    return t - t.mean(axis=0)


def groupwise_translation(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], *,
                          n_neighbors: int = 3, n_refine: int = 2, outlier_px: float = 6.0,
                          max_shift: float | None = None) -> tuple[np.ndarray, dict]:
    """Translations of S sessions to their mean position.

    Parameters
    ----------
    images : sequence of float32 (H, W) or (C, H, W)
        One registration image (or channel stack) per session, all on the same
        (centre-cropped) grid.
    masks : sequence of bool (H, W)
        Valid pixels of each image.
    n_neighbors : int
        Each session is correlated with its next ``n_neighbors`` sessions (all pairs when
        S <= n_neighbors + 1).
    n_refine : int
        Refinement rounds against the leave-one-out mean image.
    outlier_px : float
        Pairwise links disagreeing with the joint solution by more than this are dropped
        (non-rigid deformation alone makes pairs disagree by a few px; a wrong peak by more).
    max_shift : float, optional
        Largest pairwise shift searched (px); default a third of the image.

    Returns
    -------
    t : ndarray (S, 2) float64
        Position (y, x) of the common frame's origin in each session (px), mean zero:
        session s is sampled at ``p + t[s]``.
    info : dict
        ``links`` (pairs used, with shift and quality), ``dropped_links``, ``refine_steps``.
    """
    n = len(images)
    t = np.zeros((n, 2))
    info: dict = {"links": [], "dropped_links": [], "refine_steps": []}
    if n < 2:
        return t, info
    links = _coarse_links(images, masks, n_neighbors, max_shift)
    t, keep = _solve_without_outliers(n, links, outlier_px, info)
    info["links"] = [{"pair": [i, j], "shift": d.tolist(), "quality": q} for i, j, d, q in keep]
    for _ in range(n_refine):
        step = _leave_one_out_steps(images, masks, t)
        t = t + step
        t -= t.mean(axis=0)
        info["refine_steps"].append(float(np.abs(step).max()))
        if np.abs(step).max() < 0.02:
            break
    return t, info


def _coarse_links(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_neighbors: int,
                  max_shift: float | None) -> list[tuple[int, int, np.ndarray, float]]:
    """Phase correlation of each session with its next ``n_neighbors``: ``(i, j, d_ij px, quality)``.

    Coarse (no refinement): the links only locate the sessions; sub-pixel precision comes from
    the leave-one-out refinement. Qualities are floored at 1e-3 (they weight the solve).
    """
    n = len(images)
    links = []
    for i in range(n):
        for j in range(i + 1, min(n, i + 1 + n_neighbors)):
            d, q = phase_shift(images[i], images[j], masks[i], masks[j], max_shift=max_shift, n_refine=0)
            links.append((i, j, d, max(q, 1e-3)))
    return links


def _solve_without_outliers(n: int, links: list, outlier_px: float, info: dict) -> tuple[np.ndarray, list]:
    """Positions (n, 2) px from the links, solved again without links off by more than ``outlier_px``.

    The outliers are dropped only when the remaining links still connect all sessions (then
    ``info['dropped_links']`` lists their pairs). Returns the positions and the links kept.
    """
    t = _solve(n, links)
    resid = [float(np.hypot(*((t[j] - t[i]) - d))) for i, j, d, _ in links]
    keep = [lk for lk, r in zip(links, resid) if r <= outlier_px]
    dropped = [(lk[0], lk[1]) for lk, r in zip(links, resid) if r > outlier_px]
    if dropped and _connected(n, keep):
        log.info("translation: dropped %d inconsistent session pairs %s", len(dropped), dropped)
        info["dropped_links"] = dropped
        return _solve(n, keep), keep
    return t, links


def _leave_one_out_steps(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], t: np.ndarray
                         ) -> np.ndarray:
    """One refinement round: each session's shift (n, 2) px against the mean of the others, translated by ``t``.

    The step is scaled by ``(n - 1) / n``: the leave-one-out target moves with the mean.
    """
    n = len(images)
    shape = images[0].shape[-2:]
    warped, wmasks = [], []
    for s in range(n):
        warp = BilinearWarp(identity_map(shape, tuple(t[s])), shape, fill=0.0)
        img = images[s] if images[s].ndim == 3 else images[s][None]
        warped.append(warp(img))
        wmasks.append(warp(masks[s].astype(np.float32)[None])[0] > 0.99)
    total = np.sum([w * m for w, m in zip(warped, wmasks)], axis=0)
    count = np.sum(wmasks, axis=0).astype(np.float32)
    step = np.zeros((n, 2))
    for s in range(n):
        cnt = count - wmasks[s]
        tmpl = np.where(cnt > 0, (total - warped[s] * wmasks[s]) / np.maximum(cnt, 1), 0).astype(np.float32)
        d, _ = phase_shift(tmpl, warped[s], cnt >= max(1, (n - 1) / 2), wmasks[s], max_shift=5.0, n_refine=1)
        step[s] = d * (n - 1) / n  # leave-one-out target → share with the mean
    return step


def _connected(n: int, links) -> bool:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j, *_ in links:
        parent[find(i)] = find(j)
    return len({find(i) for i in range(n)}) == 1
