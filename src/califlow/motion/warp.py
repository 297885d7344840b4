"""Sub-pixel warping of frame stacks and the valid field of view.

Convention (``docs/architecture.md``): a frame ``raw_t`` with motion ``d_t`` is corrected by
sampling ``corrected_t(p) = raw_t(p + d_t)``; with a crop box starting at ``(y0, x0)`` in the
ingest frame, output pixel ``(i, j)`` samples ``raw_t(y0 + i + dy_t, x0 + j + dx_t)``.
Samples whose position falls outside the raw frame get ``fill`` (NaN by default), which is
how the valid field of view is tracked.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["translate_stack", "warp_stack", "valid_box", "largest_valid_rectangle"]


@numba.njit(cache=True, nogil=True, inline="always")
def _cubic_weights(f, w):
    # Keys cubic convolution (a = -0.5, Catmull-Rom) for taps at -1, 0, 1, 2 given fraction f.
    a = -0.5
    x = 1.0 + f
    w[0] = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    x = f
    w[1] = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    x = 1.0 - f
    w[2] = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    w[3] = 1.0 - w[0] - w[1] - w[2]


@numba.njit(cache=True, nogil=True, inline="always")
def _tap_weights(frac, order):
    """Interpolation weights, float32 (4,), of the taps at -1, 0, 1, 2 (cubic) or 0, 1 (linear, rest 0)
    for the sub-pixel fraction ``frac`` in [0, 1)."""
    weights = np.zeros(4, dtype=np.float32)
    if order == 3:
        wtmp = np.empty(4)
        _cubic_weights(frac, wtmp)
        for k in range(4):
            weights[k] = wtmp[k]
    else:
        weights[0] = 1.0 - frac
        weights[1] = frac
    return weights


@numba.njit(cache=True, nogil=True, inline="always")
def _vertical_taps(frame, base_y, wy, ntap, tmp):
    """``tmp[c] = sum_k wy[k] frame[base_y + k, c]`` over every column (rows clamped to the frame)."""
    H, W = frame.shape
    r0 = frame[min(max(base_y, 0), H - 1)]
    w0 = wy[0]
    for c in range(W):
        tmp[c] = w0 * r0[c]
    for k in range(1, ntap):
        rk = frame[min(max(base_y + k, 0), H - 1)]
        wk = wy[k]
        for c in range(W):
            tmp[c] += wk * rk[c]


@numba.njit(cache=True, nogil=True, inline="always")
def _clamped_horizontal_taps(orow, tmp, wx, ntap, base0, j_from, j_to):
    """``orow[j] = sum_k wx[k] tmp[base0 + j + k]`` for ``j`` in ``[j_from, j_to)``, columns clamped to the row."""
    W = tmp.shape[0]
    for j in range(j_from, j_to):
        acc = np.float32(0.0)
        for k in range(ntap):
            acc += wx[k] * tmp[min(max(base0 + j + k, 0), W - 1)]
        orow[j] = acc


@numba.njit(cache=True, nogil=True, inline="always")
def _interior_horizontal_taps(orow, tmp, wx, ntap, base0, k_lo, k_hi):
    """``orow[j] = sum_k wx[k] tmp[base0 + j + k]`` for ``j`` in ``[k_lo, k_hi)``, all taps inside the row.

    Slices indexed from 0 (no negative-index wraparound in the loop, so it vectorises).
    """
    m = k_hi - k_lo
    ov = orow[k_lo:k_hi]
    t0 = tmp[base0 + k_lo:base0 + k_hi]
    t1 = tmp[base0 + k_lo + 1:base0 + k_hi + 1]
    if ntap == 4:
        t2 = tmp[base0 + k_lo + 2:base0 + k_hi + 2]
        t3 = tmp[base0 + k_lo + 3:base0 + k_hi + 3]
        a0, a1, a2, a3 = wx[0], wx[1], wx[2], wx[3]
        for j in range(m):
            ov[j] = a0 * t0[j] + a1 * t1[j] + a2 * t2[j] + a3 * t3[j]
    else:
        a0, a1 = wx[0], wx[1]
        for j in range(m):
            ov[j] = a0 * t0[j] + a1 * t1[j]


@numba.njit(cache=True, parallel=True, nogil=True)
def _translate_kernel(movie, shifts, y0, x0, order, fill, out):
    # Separable: per output row, the vertical taps (rows clamped to the frame, as scalars) are
    # combined over every input column into a row buffer, then the horizontal taps are
    # applied; only the columns whose taps reach past the frame edge take clamped indices,
    # so the inner loops are branch-free. Samples outside [0, H - 1] x [0, W - 1] get fill.
    n, H, W = movie.shape
    _, h, w = out.shape
    ntap = 4 if order == 3 else 2
    off = 1 if order == 3 else 0
    for t in numba.prange(n):
        dy = shifts[t, 0]
        dx = shifts[t, 1]
        fy = math.floor(dy)
        fx = math.floor(dx)
        wy = _tap_weights(dy - fy, order)
        wx = _tap_weights(dx - fx, order)
        # output columns whose sample lies inside the frame: x0 + j + dx in [0, W - 1]
        j_lo = max(0, min(w, int(math.ceil(-1e-6 - x0 - dx))))
        j_hi = max(j_lo, min(w, int(math.floor(W - 1 + 1e-6 - x0 - dx)) + 1))
        # of those, columns whose taps all lie inside the frame (no clamping)
        base0 = x0 + fx - off
        k_lo = min(max(j_lo, -base0), j_hi)
        k_hi = max(min(j_hi, W - ntap + 1 - base0), k_lo)
        tmp = np.empty(W, dtype=np.float32)
        for i in range(h):
            ys = y0 + i + dy
            orow = out[t, i]
            if ys < -1e-6 or ys > H - 1 + 1e-6:
                for j in range(w):
                    orow[j] = fill
                continue
            _vertical_taps(movie[t], y0 + i + fy - off, wy, ntap, tmp)
            for j in range(0, j_lo):
                orow[j] = fill
            for j in range(j_hi, w):
                orow[j] = fill
            _clamped_horizontal_taps(orow, tmp, wx, ntap, base0, j_lo, k_lo)
            _clamped_horizontal_taps(orow, tmp, wx, ntap, base0, k_hi, j_hi)
            _interior_horizontal_taps(orow, tmp, wx, ntap, base0, k_lo, k_hi)
    return out


def translate_stack(movie: np.ndarray, shifts: np.ndarray, box: tuple[int, int, int, int] | None = None,
                    order: int = 3, fill: float = np.nan) -> np.ndarray:
    """Shift every frame by its own sub-pixel translation: ``out_t(p) = movie_t(p + d_t)``.

    Parameters
    ----------
    movie : ndarray, shape (n, H, W)
        Frames (cast to float32).
    shifts : ndarray, shape (n, 2)
        ``(dy, dx)`` per frame in pixels.
    box : (y0, y1, x0, x1), optional
        Output window in the input frame (half-open); default the whole frame.
    order : {1, 3}
        Bilinear or cubic (Keys, a = -0.5) interpolation.
    fill : float
        Value of output pixels whose sample position lies outside the frame.

    Returns
    -------
    ndarray, float32, shape (n, y1 - y0, x1 - x0)
    """
    movie = np.ascontiguousarray(movie, dtype=np.float32)
    n, H, W = movie.shape
    y0, y1, x0, x1 = box if box is not None else (0, H, 0, W)
    shifts = np.ascontiguousarray(np.broadcast_to(np.asarray(shifts, dtype=np.float64), (n, 2)))
    if order not in (1, 3):
        raise ValueError(f"interpolation order must be 1 or 3, got {order}")
    out = np.empty((n, y1 - y0, x1 - x0), dtype=np.float32)
    if n:
        _translate_kernel(movie, shifts, int(y0), int(x0), int(order), np.float32(fill), out)
    return out


@numba.njit(cache=True, parallel=True, nogil=True)
def _warp_kernel(movie, shifts, f0, f1, alpha, fields, grid, gy0, gx0, y0, x0, fill, out):
    n, H, W = movie.shape
    _, h, w = out.shape
    nf, _, gh, gw = fields.shape
    for t in numba.prange(n):
        dy = shifts[t, 0]
        dx = shifts[t, 1]
        a = alpha[t]
        for i in range(h):
            gyf = (gy0 + i) / grid
            iy0 = min(max(int(math.floor(gyf)), 0), max(gh - 2, 0))
            fy = min(max(gyf - iy0, 0.0), 1.0)
            iy1 = min(iy0 + 1, gh - 1)
            for j in range(w):
                gxf = (gx0 + j) / grid
                ix0 = min(max(int(math.floor(gxf)), 0), max(gw - 2, 0))
                fx = min(max(gxf - ix0, 0.0), 1.0)
                ix1 = min(ix0 + 1, gw - 1)
                uy = 0.0
                ux = 0.0
                for c in range(2):
                    k = f0[t] if c == 0 else f1[t]
                    wgt = (1.0 - a) if c == 0 else a
                    if k < 0 or wgt == 0.0:
                        continue
                    for comp in range(2):
                        v = ((1.0 - fy) * ((1.0 - fx) * fields[k, comp, iy0, ix0] + fx * fields[k, comp, iy0, ix1])
                             + fy * ((1.0 - fx) * fields[k, comp, iy1, ix0] + fx * fields[k, comp, iy1, ix1]))
                        if comp == 0:
                            uy += wgt * v
                        else:
                            ux += wgt * v
                ys = y0 + i + dy + uy
                xs = x0 + j + dx + ux
                if ys < -1e-6 or ys > H - 1 + 1e-6 or xs < -1e-6 or xs > W - 1 + 1e-6:
                    out[t, i, j] = fill
                    continue
                iy = min(int(math.floor(ys)), H - 2) if H > 1 else 0
                ix = min(int(math.floor(xs)), W - 2) if W > 1 else 0
                iy = max(iy, 0)
                ix = max(ix, 0)
                ry = ys - iy
                rx = xs - ix
                jy = min(iy + 1, H - 1)
                jx = min(ix + 1, W - 1)
                out[t, i, j] = ((1.0 - ry) * ((1.0 - rx) * movie[t, iy, ix] + rx * movie[t, iy, jx])
                                + ry * ((1.0 - rx) * movie[t, jy, ix] + rx * movie[t, jy, jx]))
    return out


def warp_stack(movie: np.ndarray, shifts: np.ndarray, fields: np.ndarray, grid: float,
               field_lo: np.ndarray, field_hi: np.ndarray, alpha: np.ndarray,
               box: tuple[int, int, int, int], field_origin: tuple[int, int] = (0, 0),
               fill: float = np.nan) -> np.ndarray:
    """Rigid shift plus a smooth displacement field per frame (bilinear sampling).

    ``out_t(i, j) = movie_t(y0 + i + dy_t + u_y, x0 + j + dx_t + u_x)`` where ``u`` is the
    blend ``(1 - alpha_t) F[field_lo[t]] + alpha_t F[field_hi[t]]`` of two stored fields,
    each sampled bilinearly on a coarse grid: node ``(a, b)`` of ``fields[k]`` holds the
    displacement at output pixel ``(a * grid - field_origin[0], b * grid - field_origin[1])``.

    Parameters
    ----------
    movie : ndarray, shape (n, H, W)
    shifts : ndarray, shape (n, 2)
        Rigid ``(dy, dx)`` per frame, px.
    fields : ndarray, shape (m, 2, gh, gw)
        Displacement fields ``(u_y, u_x)`` in px on the coarse grid.
    grid : float
        Grid spacing in output px.
    field_lo, field_hi : ndarray of int, shape (n,)
        Fields blended for each frame (-1: none).
    alpha : ndarray, shape (n,)
        Blend weight of ``field_hi``.
    box : (y0, y1, x0, x1)
        Output window in the input frame.
    field_origin : (int, int)
        Offset of the output window inside the window the fields were estimated on.
    fill : float
        Value where the sample position lies outside the frame.

    Returns
    -------
    ndarray, float32, shape (n, y1 - y0, x1 - x0)
    """
    movie = np.ascontiguousarray(movie, dtype=np.float32)
    n = movie.shape[0]
    y0, y1, x0, x1 = box
    out = np.empty((n, y1 - y0, x1 - x0), dtype=np.float32)
    if n:
        _warp_kernel(movie, np.ascontiguousarray(shifts, dtype=np.float64),
                     np.ascontiguousarray(field_lo, dtype=np.int64),
                     np.ascontiguousarray(field_hi, dtype=np.int64),
                     np.ascontiguousarray(alpha, dtype=np.float64),
                     np.ascontiguousarray(fields, dtype=np.float32), float(grid),
                     int(field_origin[0]), int(field_origin[1]), int(y0), int(x0), np.float32(fill), out)
    return out


def valid_box(shifts: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Largest window valid in every frame after rigid shifts (half-open ``(y0, y1, x0, x1)``).

    Output pixel ``p`` of frame ``t`` samples ``p + d_t``, which must lie in ``[0, H - 1]``;
    the intersection over frames of these windows is a rectangle. An empty window gives
    ``y1 <= y0`` or ``x1 <= x0``.
    """
    H, W = shape
    d = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
    eps = 1e-6
    y0 = max(0, int(math.ceil(float(np.max(-d[:, 0])) - eps)))
    y1 = min(H, int(math.floor(float(np.min(H - 1 - d[:, 0])) + eps)) + 1)
    x0 = max(0, int(math.ceil(float(np.max(-d[:, 1])) - eps)))
    x1 = min(W, int(math.floor(float(np.min(W - 1 - d[:, 1])) + eps)) + 1)
    return y0, y1, x0, x1


@numba.njit(cache=True)
def _largest_rectangle(mask):
    h, w = mask.shape
    heights = np.zeros(w + 1, dtype=np.int64)
    stack = np.empty(w + 1, dtype=np.int64)
    best = 0
    by0 = by1 = bx0 = bx1 = 0
    for i in range(h):
        for j in range(w):
            heights[j] = heights[j] + 1 if mask[i, j] else 0
        top = 0
        for j in range(w + 1):
            cur = heights[j] if j < w else 0
            while top > 0 and heights[stack[top - 1]] >= cur:
                hh = heights[stack[top - 1]]
                top -= 1
                left = stack[top - 1] + 1 if top > 0 else 0
                area = hh * (j - left)
                if area > best:
                    best = area
                    by0 = i - hh + 1
                    by1 = i + 1
                    bx0 = left
                    bx1 = j
            stack[top] = j
            top += 1
    return by0, by1, bx0, bx1


def largest_valid_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Largest axis-aligned all-True rectangle of a boolean mask.

    Histogram-stack scan, O(H W). Also used by :mod:`califlow.align.fov` (as
    ``largest_rectangle``) for the common field of view of aligned sessions.

    Parameters
    ----------
    mask : bool ndarray, shape (H, W)

    Returns
    -------
    tuple of int
        ``(y0, y1, x0, x1)`` in pixels, end-exclusive; ``(0, 0, 0, 0)`` when no pixel is True.
    """
    m = np.ascontiguousarray(mask, dtype=np.bool_)
    if m.ndim != 2:
        raise ValueError("mask must be 2-D")
    return tuple(int(v) for v in _largest_rectangle(m))
