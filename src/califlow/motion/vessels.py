"""Blood-vessel (BV) images: multi-scale Hessian vesselness keeping dark ridges.

Blood vessels absorb the excitation light, so in a one-photon movie they are dark tubes on
a brighter background. The vesselness of an image at scale ``sigma`` (px) is computed on the
image smoothed by a Gaussian of ``sigma`` (radius ``ceil(3 sigma)``, replicate borders):
the Hessian comes from repeated central differences (``numpy.gradient``: one-sided at the
edges), scaled by ``sigma**2``; where its trace is >= 0 (a valley) the value is its larger
eigenvalue ``(Hyy + Hxx + sqrt((Hyy - Hxx)**2 + 4 Hxy**2)) / 2``, elsewhere 0. The
multi-scale vesselness is the maximum over the scales. Scales are ``linspace(*BVsize, n)``
with ``BVsize`` = [0.6, 0.9] * gSig by default.

Uneven illumination (vignetting) is divided out first: ``image / (G * image + eps)`` with
a Gaussian ``G`` of sigma ``min(H, W) / 6`` px, evaluated on an 8x coarser grid (the
background is smooth, so this is accurate and fast).
"""

from __future__ import annotations

import math

import cv2
import numba
import numpy as np

__all__ = ["bv_scales", "vesselness", "vignetting_background", "remove_vignetting", "bv_image"]


def bv_scales(bv_size, n: int = 10) -> np.ndarray:
    """Hessian scales (px): ``n`` values evenly spaced over ``BVsize = [min, max]``."""
    lo, hi = (float(v) for v in bv_size)
    if not (0 < lo <= hi):
        raise ValueError(f"BVsize must be [min, max] with 0 < min <= max, got {list(bv_size)}")
    return np.linspace(lo, hi, max(1, int(n))) if hi > lo else np.array([lo])


@numba.njit(cache=True, nogil=True)
def _blur_replicate(img, g, tmp, out):
    # separable Gaussian (taps g, radius len(g) // 2) with replicated borders; interior
    # columns without clamping so the loops vectorise
    h, w = img.shape
    r = len(g) // 2
    for y in range(h):
        row = img[y]
        t = tmp[y]
        for x in range(w):
            t[x] = 0.0
        for k in range(-r, r + 1):
            gk = g[k + r]
            lo = min(max(-k, 0), w)
            hi = max(min(w - k, w), lo)
            for x in range(0, lo):
                t[x] += gk * row[min(max(x + k, 0), w - 1)]
            tv = t[lo:hi]               # slices indexed from 0: no negative-index wraparound
            rv = row[lo + k:hi + k]     # in the loop, so it vectorises
            for x in range(hi - lo):
                tv[x] += gk * rv[x]
            for x in range(hi, w):
                t[x] += gk * row[min(max(x + k, 0), w - 1)]
    for y in range(h):
        o = out[y]
        for x in range(w):
            o[x] = 0.0
        for k in range(-r, r + 1):
            gk = g[k + r]
            src = tmp[min(max(y + k, 0), h - 1)]
            for x in range(w):
                o[x] += gk * src[x]


@numba.njit(cache=True, nogil=True)
def _gradients(s, gy, gx):
    # numpy.gradient: central differences inside, one-sided at the edges
    h, w = s.shape
    for y in range(h):
        r = s[y]
        g = gx[y]
        if w == 1:
            g[0] = 0.0
        else:
            g[0] = r[1] - r[0]
            g[w - 1] = r[w - 1] - r[w - 2]
            for x in range(1, w - 1):
                g[x] = np.float32(0.5) * (r[x + 1] - r[x - 1])
        g = gy[y]
        if h == 1:
            for x in range(w):
                g[x] = 0.0
        elif y == 0:
            for x in range(w):
                g[x] = s[1, x] - s[0, x]
        elif y == h - 1:
            for x in range(w):
                g[x] = s[h - 1, x] - s[h - 2, x]
        else:
            a = s[y + 1]
            b = s[y - 1]
            for x in range(w):
                g[x] = np.float32(0.5) * (a[x] - b[x])


@numba.njit(cache=True, parallel=True, nogil=True)
def _vesselness_kernel(stack, kernels, radii, scale2, out):
    # per frame and scale: Gaussian smoothing, Hessian from repeated numpy.gradient, larger
    # eigenvalue where the trace is >= 0 (a valley), times sigma², maximum over scales
    n, h, w = stack.shape
    n_scales = kernels.shape[0]
    R = kernels.shape[1] // 2
    for t in numba.prange(n):
        tmp = np.empty((h, w), dtype=np.float32)
        sm = np.empty((h, w), dtype=np.float32)
        gy = np.empty((h, w), dtype=np.float32)
        gx = np.empty((h, w), dtype=np.float32)
        hyy = np.empty((h, w), dtype=np.float32)
        hyx = np.empty((h, w), dtype=np.float32)
        hxy = np.empty((h, w), dtype=np.float32)
        hxx = np.empty((h, w), dtype=np.float32)
        o = out[t]
        for y in range(h):
            for x in range(w):
                o[y, x] = 0.0
        for si in range(n_scales):
            r = radii[si]
            _blur_replicate(stack[t], kernels[si, R - r:R + r + 1], tmp, sm)
            _gradients(sm, gy, gx)
            _gradients(gy, hyy, hyx)
            _gradients(gx, hxy, hxx)
            s2 = scale2[si]
            for y in range(h):
                a = hxx[y]
                b = hyy[y]
                c = hxy[y]
                orow = o[y]
                for x in range(w):
                    tr = a[x] + b[x]
                    d = a[x] - b[x]
                    lam = np.float32(0.5) * (tr + math.sqrt(d * d + np.float32(4.0) * c[x] * c[x])) * s2
                    lam = lam if tr >= 0.0 else np.float32(0.0)
                    orow[x] = max(orow[x], lam)
    return out


def _gaussian_taps(sigmas) -> tuple[np.ndarray, np.ndarray]:
    """Normalised Gaussian taps of radius ``ceil(3 sigma)`` per scale, centred in rows of one
    common length (zero-padded): float32 (n_scales, 2 R + 1) and the radii (n_scales,) int."""
    radii = np.array([int(math.ceil(3.0 * float(s))) for s in sigmas], dtype=np.int64)
    R = int(radii.max())
    taps = np.zeros((len(radii), 2 * R + 1), dtype=np.float64)
    for i, (s, r) in enumerate(zip(sigmas, radii)):
        x = np.arange(-r, r + 1, dtype=np.float64)
        g = np.exp(-x * x / (2.0 * float(s) ** 2))
        taps[i, R - r:R + r + 1] = g / g.sum()
    return taps.astype(np.float32), radii


def vesselness(images: np.ndarray, sigmas) -> np.ndarray:
    """Multi-scale dark-ridge vesselness of an image or of every frame of a stack.

    Parameters
    ----------
    images : ndarray, shape (h, w) or (n, h, w)
        Intensity images (any scale; the result scales linearly with intensity).
    sigmas : sequence of float
        Hessian scales in px (see :func:`bv_scales`).

    Returns
    -------
    ndarray, float32, same shape as ``images``; 0 off the ridges, >= 0 everywhere.
    """
    arr = np.asarray(images, dtype=np.float32)
    single = arr.ndim == 2
    stack = np.ascontiguousarray(arr[None] if single else arr)
    sigmas = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
    out = np.empty(stack.shape, dtype=np.float32)
    if stack.shape[0] and stack.size:
        taps, radii = _gaussian_taps(sigmas)
        _vesselness_kernel(stack, taps, radii, (sigmas ** 2).astype(np.float32), out)
    return out[0] if single else out


def vignetting_background(image: np.ndarray, sigma: float | None = None, coarse: int = 8) -> np.ndarray:
    """Smooth illumination of an image: Gaussian of sigma ``min(H, W) / 6`` px (replicate borders).

    The blur is evaluated on a grid ``coarse`` times coarser (area-averaged) and
    interpolated back (bilinear); returns float32 (H, W).
    """
    img = np.asarray(image, dtype=np.float32)
    H, W = img.shape
    sigma = float(sigma if sigma is not None else min(H, W) / 6.0)
    f = max(1, min(int(coarse), int(sigma // 2) or 1, H, W))
    small = cv2.resize(img, (max(1, W // f), max(1, H // f)), interpolation=cv2.INTER_AREA)
    sy = sigma * small.shape[0] / H
    k = 2 * int(math.ceil(2 * sy)) + 1
    small = cv2.GaussianBlur(small, (k, k), sy, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)


def remove_vignetting(image: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Divide an image by its smooth illumination (:func:`vignetting_background`), float32."""
    img = np.asarray(image, dtype=np.float32)
    bg = vignetting_background(img, sigma)
    return img / (bg + np.float32(np.finfo(np.float32).eps) * max(1.0, float(np.abs(bg).max())))


def bv_image(median_image: np.ndarray, bv_size, n_scales: int = 10) -> np.ndarray:
    """The session's blood-vessel projection from the median of the motion-corrected raw movie.

    Vignetting removal, vesselness over ``n_scales`` scales in ``BVsize``, scaling to [0, 1],
    a 3x3 median filter (replicate borders), and division by the maximum, as CaliAli's
    ``BV`` projection (without its 8-bit quantisation).

    Parameters
    ----------
    median_image : ndarray, shape (h, w)
        Temporal median of the motion-corrected raw movie.
    bv_size : (float, float)
        Vessel scale range in px.

    Returns
    -------
    ndarray, float32 (h, w) in [0, 1] (all zeros when no ridge is found).
    """
    img = remove_vignetting(median_image)
    lo, hi = float(np.min(img)), float(np.max(img))
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    v = vesselness(img, bv_scales(bv_size, n_scales))
    v[v < 1e-4] = 0.0
    vmax = float(v.max())
    if vmax > 0:
        v /= vmax
    v = cv2.medianBlur(v, 3) if min(v.shape) >= 3 else v
    vmax = float(v.max())
    if vmax > 0:
        v /= vmax
    return v.astype(np.float32)
