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


@numba.njit(cache=True, parallel=True, nogil=True)
def _running_median_kernel(x, before, after, out):
    # A sorted window of k values per pixel, held for a block of pixels as rows so that every
    # update is a branch-free pass over contiguous pixels (vectorised). Moving the window
    # replaces one value o by n: with u = the window without (the first copy of) o,
    # u[i] = s[i] if s[i] < o else s[i + 1], and s'[i] = max(u[i - 1], min(n, u[i])) inserts n;
    # s' is written to the other half of a double buffer (rows 0 and k + 1 are -inf / +inf
    # guards). Where the window is cut by a movie end it holds m < k real values padded with
    # (k - m) // 2 values -inf and the rest +inf, so the real median sits at the window rows
    # pad_lo + (m - 1) // 2 and pad_lo + m // 2; growing and shrinking replace a sentinel.
    n, npix = x.shape
    k = before + after + 1
    block = 512
    nblocks = (npix + block - 1) // block
    inf = np.float32(np.inf)
    for bi in numba.prange(nblocks):
        p0 = bi * block
        width = min(npix, p0 + block) - p0
        buf = np.empty((2, k + 2, block), dtype=np.float32)
        ov = np.empty(block, dtype=np.float32)
        nv = np.empty(block, dtype=np.float32)
        m = 0
        pad_lo = k // 2
        for h in range(2):
            for r in range(k + 2):
                fill = -inf if r < pad_lo + 1 else inf
                for q in range(width):
                    buf[h, r, q] = fill
        cur = 0
        hi_in = -1   # last frame inside the window
        lo_in = 0    # first frame inside the window
        for t in range(n):
            lo = max(0, t - before)
            hi = min(n - 1, t + after)
            while hi_in < hi or lo_in < lo:   # one step per frame (1 + after steps at t = 0)
                if hi_in < hi and lo_in < lo:
                    for q in range(width):
                        ov[q] = x[lo_in, p0 + q]
                        nv[q] = x[hi_in + 1, p0 + q]
                    hi_in += 1
                    lo_in += 1
                elif hi_in < hi:
                    new_pad = (k - m - 1) // 2
                    sentinel = -inf if new_pad < pad_lo else inf
                    for q in range(width):
                        ov[q] = sentinel
                        nv[q] = x[hi_in + 1, p0 + q]
                    hi_in += 1
                    m += 1
                    pad_lo = new_pad
                else:
                    new_pad = (k - m + 1) // 2
                    sentinel = -inf if new_pad > pad_lo else inf
                    for q in range(width):
                        ov[q] = x[lo_in, p0 + q]
                        nv[q] = sentinel
                    lo_in += 1
                    m -= 1
                    pad_lo = new_pad
                nxt = 1 - cur
                for i in range(k):   # window row i + 1 from rows i, i + 1, i + 2 (guards at 0, k + 1)
                    for q in range(width):
                        o = ov[q]
                        a = buf[cur, i, q]
                        b = buf[cur, i + 1, q]
                        u0 = b if b < o else buf[cur, i + 2, q]
                        um = a if a < o else b
                        c = nv[q] if nv[q] < u0 else u0
                        buf[nxt, i + 1, q] = c if c > um else um
                cur = nxt
            r1 = 1 + pad_lo + (m - 1) // 2
            r2 = 1 + pad_lo + m // 2
            s = buf[cur]
            for q in range(width):
                out[t, p0 + q] = np.float32(0.5) * (s[r1, q] + s[r2, q])
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def _running_min_kernel(x, before, after, out):
    # van Herk / Gil-Werman: block-wise prefix (g) and suffix (h) minima with blocks of the
    # window length k; a window [l, r] (l, r in the same or adjacent blocks) has minimum
    # min(h[l], g[r]); a window cut by the start of the movie is g[r] alone, one cut by the
    # end inside a single block is h[l] alone.
    n, npix = x.shape
    k = before + after + 1
    block = 1024
    nblocks = (npix + block - 1) // block
    for bi in numba.prange(nblocks):
        p0 = bi * block
        p1 = min(npix, p0 + block)
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
    return out


def _as_2d(block: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    arr = np.ascontiguousarray(block, dtype=np.float32)
    return arr.reshape(arr.shape[0], -1), arr.shape


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
    before, after = window_extent(k)
    x, shape = _as_2d(block)
    if x.shape[0] == 0:
        return x.reshape(shape)
    out = np.empty_like(x)
    _running_median_kernel(x, before, after, out)
    return out.reshape(shape)


def running_min(block: np.ndarray, k: int) -> np.ndarray:
    """Centred running minimum of ``k`` frames along axis 0 (MATLAB ``movmin``), float32."""
    before, after = window_extent(k)
    x, shape = _as_2d(block)
    if x.shape[0] == 0:
        return x.reshape(shape)
    out = np.empty_like(x)
    _running_min_kernel(x, before, after, out)
    return out.reshape(shape)


def running_max(block: np.ndarray, k: int) -> np.ndarray:
    """Centred running maximum of ``k`` frames along axis 0 (MATLAB ``movmax``), float32."""
    return -running_min(-np.asarray(block, dtype=np.float32), k)
