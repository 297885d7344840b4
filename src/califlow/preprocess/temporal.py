"""Running order statistics along time (axis 0) of a block of frames.

The windows follow MATLAB's ``movmedian``/``movmin`` conventions, which CaliAli relies on:
a window of ``k`` frames covers ``k // 2`` frames before the current one and
``k - k // 2 - 1`` after it (for even ``k`` one fewer after than before), and the window
shrinks at the ends of the block instead of padding ("Endpoints", "shrink").

Kernels (numba, parallel over pixel blocks, exact): the running median keeps a sorted
window per pixel and updates it with one branch-free pass of ``k`` select/min/max
operations per frame, vectorised over a block of pixels (about 2 k operations per value,
where a sorting network needs k log² k); the running minimum is van Herk / Gil-Werman
(three passes, independent of k).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["window_extent", "running_median", "running_min", "running_max"]


def window_extent(k: int) -> tuple[int, int]:
    """Frames ``(before, after)`` the current one covered by a centred window of ``k`` frames."""
    k = int(k)
    if k < 1:
        raise ValueError(f"running window must be at least 1 frame, got {k}")
    return k // 2, k - k // 2 - 1


_MEDIAN_BLOCK = 512  # pixels per block of the running median (rows of its sorted window)
_MIN_BLOCK = 1024    # pixels per block of the running minimum


@numba.njit(cache=True, parallel=True, nogil=True)
def _running_kernel(x, before, after, median, out):
    """Running median (``median``) or minimum along axis 0 of ``x`` (float32 (n, npix)) into
    ``out``, in parallel over blocks of pixels."""
    npix = x.shape[1]
    block = _MEDIAN_BLOCK if median else _MIN_BLOCK
    for bi in numba.prange((npix + block - 1) // block):
        p0 = bi * block
        if median:
            _median_block(x, p0, min(npix, p0 + block) - p0, before, after, out)
        else:
            _min_block(x, p0, min(npix, p0 + block), before, after, out)
    return out


@numba.njit(cache=True, nogil=True)
def _slide_window(src, dst, ov, nv, k, width):
    """Sorted window rows ``src`` (k + 2, width) with ``ov`` replaced by ``nv``, into ``dst``.

    With u = the window without (the first copy of) o, u[i] = s[i] if s[i] < o else
    s[i + 1], and s'[i] = max(u[i - 1], min(n, u[i])) inserts n; rows 0 and k + 1 are
    -inf / +inf guards. One branch-free pass over contiguous pixels (vectorised).
    """
    for i in range(k):   # window row i + 1 from rows i, i + 1, i + 2
        for q in range(width):
            o = ov[q]
            a = src[i, q]
            b = src[i + 1, q]
            u0 = b if b < o else src[i + 2, q]
            um = a if a < o else b
            c = nv[q] if nv[q] < u0 else u0
            dst[i + 1, q] = c if c > um else um


@numba.njit(cache=True, nogil=True)
def _median_block(x, p0, width, before, after, out):
    # A sorted window of k values per pixel, held for the pixels p0 .. p0 + width - 1 as rows
    # and moved one frame at a time by _slide_window into the other half of a double buffer.
    # Where the window is cut by a movie end it holds m < k real values padded with
    # (k - m) // 2 values -inf and the rest +inf, so the real median sits at the window rows
    # pad_lo + (m - 1) // 2 and pad_lo + m // 2; growing and shrinking replace a sentinel.
    n = x.shape[0]
    k = before + after + 1
    inf = np.float32(np.inf)
    buf = np.empty((2, k + 2, width), dtype=np.float32)
    ov = np.empty(width, dtype=np.float32)
    nv = np.empty(width, dtype=np.float32)
    m = 0
    pad_lo = k // 2
    for r in range(k + 2):
        buf[:, r] = -inf if r < pad_lo + 1 else inf
    cur = 0
    hi_in = -1   # last frame inside the window
    lo_in = 0    # first frame inside the window
    for t in range(n):
        lo = max(0, t - before)
        hi = min(n - 1, t + after)
        while hi_in < hi or lo_in < lo:   # one step per frame (1 + after steps at t = 0)
            grow = hi_in < hi
            shrink = lo_in < lo
            new_pad = pad_lo if grow and shrink else (k - m - 1) // 2 if grow else (k - m + 1) // 2
            sentinel = -inf if (new_pad < pad_lo if grow else new_pad > pad_lo) else inf
            for q in range(width):
                ov[q] = x[lo_in, p0 + q] if shrink else sentinel
                nv[q] = x[hi_in + 1, p0 + q] if grow else sentinel
            hi_in += 1 if grow else 0
            lo_in += 1 if shrink else 0
            m += (1 if grow else 0) - (1 if shrink else 0)
            pad_lo = new_pad
            _slide_window(buf[cur], buf[1 - cur], ov, nv, k, width)
            cur = 1 - cur
        r1 = 1 + pad_lo + (m - 1) // 2
        r2 = 1 + pad_lo + m // 2
        s = buf[cur]
        for q in range(width):
            out[t, p0 + q] = np.float32(0.5) * (s[r1, q] + s[r2, q])


@numba.njit(cache=True, nogil=True)
def _min_block(x, p0, p1, before, after, out):
    # van Herk / Gil-Werman over the pixels p0 .. p1 - 1: block-wise prefix (g) and suffix (h)
    # minima with blocks of the window length k; a window [l, r] (l, r in the same or
    # adjacent blocks) has minimum min(h[l], g[r]); a window cut by the start of the movie is
    # g[r] alone, one cut by the end inside a single block is h[l] alone.
    n = x.shape[0]
    k = before + after + 1
    g = np.empty((n, p1 - p0), dtype=np.float32)
    hh = np.empty((n, p1 - p0), dtype=np.float32)
    for t in range(n):
        if t % k == 0:
            for q in range(p1 - p0):
                g[t, q] = x[t, p0 + q]
        else:
            for q in range(p1 - p0):
                g[t, q] = min(g[t - 1, q], x[t, p0 + q])
    for t in range(n - 1, -1, -1):
        if t == n - 1 or (t + 1) % k == 0:
            for q in range(p1 - p0):
                hh[t, q] = x[t, p0 + q]
        else:
            for q in range(p1 - p0):
                hh[t, q] = min(hh[t + 1, q], x[t, p0 + q])
    for t in range(n):
        lo = t - before
        hi = min(n - 1, t + after)
        if lo <= 0:
            for q in range(p1 - p0):
                out[t, p0 + q] = g[hi, q]
        elif hi == n - 1 and lo // k == hi // k:
            for q in range(p1 - p0):
                out[t, p0 + q] = hh[lo, q]
        else:
            for q in range(p1 - p0):
                out[t, p0 + q] = min(hh[lo, q], g[hi, q])


def _as_2d(block: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    arr = np.ascontiguousarray(block, dtype=np.float32)
    return arr.reshape(arr.shape[0], -1), arr.shape


def _running(block: np.ndarray, k: int, median: bool) -> np.ndarray:
    """Running median (``median``) or minimum of ``k`` frames along axis 0; float32, shape of ``block``."""
    before, after = window_extent(k)
    x, shape = _as_2d(block)
    if x.shape[0] == 0:
        return x.reshape(shape)
    out = np.empty_like(x)
    _running_kernel(x, before, after, median, out)
    return out.reshape(shape)


def running_median(block: np.ndarray, k: int) -> np.ndarray:
    """Centred running median of ``k`` frames along axis 0 (MATLAB ``movmedian``, shrink ends).

    Parameters
    ----------
    block : ndarray, shape (T, ...)
        Finite values (NaN would break the sorted windows); cast to float32.
    k : int
        Window length in frames.

    Returns
    -------
    ndarray, float32, same shape as ``block``.
    """
    return _running(block, k, True)


def running_min(block: np.ndarray, k: int) -> np.ndarray:
    """Centred running minimum of ``k`` frames along axis 0 (MATLAB ``movmin``), float32."""
    return _running(block, k, False)


def running_max(block: np.ndarray, k: int) -> np.ndarray:
    """Centred running maximum of ``k`` frames along axis 0 (MATLAB ``movmax``), float32."""
    return -running_min(-np.asarray(block, dtype=np.float32), k)
