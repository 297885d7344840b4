"""Alignment maps: sampling, warping, inversion and point mapping.

An alignment map is a float32 array ``map`` of shape (2, H, W) on the aligned grid:
``map[:, i, j]`` is the (y, x) position, in the session's motion-corrected projection frame,
that aligned pixel (i, j) samples (absolute pixel coordinates; NaN where the aligned pixel
lies outside the session). Warping a session image into the aligned frame is therefore a
backward resampling ``aligned(i, j) = session(map[:, i, j])`` with bilinear interpolation.
"""

from __future__ import annotations

import functools

import cv2
import numba
import numpy as np
from scipy import ndimage

__all__ = [
    "identity_map",
    "apply_map",
    "invert_map",
    "map_points",
    "sample_bilinear",
    "compose_field",
    "fill_invalid",
    "BilinearWarp",
]


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> np.ndarray:
    g = np.mgrid[0:h, 0:w].astype(np.float32)
    g.flags.writeable = False
    return g


def identity_map(shape: tuple[int, int], offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Map (2, H, W) that samples pixel (i + offset_y, j + offset_x) for aligned pixel (i, j)."""
    g = _grid(int(shape[0]), int(shape[1]))
    return g + np.asarray(offset, np.float32).reshape(2, 1, 1)


def fill_invalid(map_: np.ndarray) -> np.ndarray:
    """Copy of ``map_`` whose NaN entries take the displacement of the nearest valid pixel.

    Used where a map must be evaluated slightly outside its valid area (inversion, smoothing).
    """
    m = np.asarray(map_, dtype=np.float32)
    bad = ~np.isfinite(m).all(axis=0)
    if not bad.any():
        return m.copy()
    if bad.all():
        raise ValueError("alignment map has no valid pixel")
    ident = identity_map(m.shape[1:])
    disp = m - ident
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    disp = disp[:, idx[0], idx[1]]
    return (ident + disp).astype(np.float32)


def _remap(image: np.ndarray, map_y: np.ndarray, map_x: np.ndarray, fill: float,
           border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    return cv2.remap(np.ascontiguousarray(image, dtype=np.float32), np.asarray(map_x, np.float32),
                     np.asarray(map_y, np.float32),
                     interpolation=cv2.INTER_LINEAR, borderMode=border, borderValue=float(fill))


def apply_map(image: np.ndarray, map_: np.ndarray, *, to: str = "aligned",
              session_shape: tuple[int, int] | None = None, fill: float = np.nan) -> np.ndarray:
    """Warp an image (or a stack of images) between a session frame and the aligned frame.

    Parameters
    ----------
    image : ndarray (h, w) or (n, h, w)
        Session image(s) when ``to="aligned"``; aligned image(s) when ``to="session"``.
    map_ : ndarray (2, H, W)
        The session's alignment map (see module docstring).
    to : {"aligned", "session"}
        Direction of the warp.
    session_shape : (h, w), optional
        Shape of the session frame; required when ``to="session"``.
    fill : float
        Value of pixels that have no source (outside the other frame).

    Returns
    -------
    ndarray float32, (H, W) / (n, H, W) for ``to="aligned"``, (h, w) / (n, h, w) otherwise.
    """
    if to == "aligned":
        src_map = map_
        src_shape = image.shape[-2:]
    elif to == "session":
        if session_shape is None:
            raise ValueError("apply_map(to='session') needs session_shape")
        src_map = invert_map(map_, session_shape)
        src_shape = map_.shape[1:]
    else:
        raise ValueError(f"apply_map: to must be 'aligned' or 'session', not {to!r}")
    if image.shape[-2:] != tuple(src_shape):
        raise ValueError(f"apply_map: image shape {image.shape[-2:]} does not match the source frame "
                         f"{tuple(src_shape)}")
    warp = BilinearWarp(src_map, src_shape, fill=fill)
    if image.ndim == 2:
        return warp(image[None])[0]
    return warp(image)


def sample_bilinear(image: np.ndarray, points: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """Bilinear values of ``image`` (H, W) or of each channel of (C, H, W) at (N, 2) (y, x) points.

    Points outside ``[0, H-1] x [0, W-1]`` (or NaN) get ``fill``. Returns (N,) or (C, N).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    img = np.asarray(image, dtype=np.float32)
    stack = img[None] if img.ndim == 2 else img
    h, w = stack.shape[-2:]
    y, x = pts[:, 0], pts[:, 1]
    ok = np.isfinite(y) & np.isfinite(x) & (y >= 0) & (y <= h - 1) & (x >= 0) & (x <= w - 1)
    yc = np.where(ok, y, 0.0)
    xc = np.where(ok, x, 0.0)
    y0 = np.minimum(np.floor(yc).astype(np.intp), max(h - 2, 0))
    x0 = np.minimum(np.floor(xc).astype(np.intp), max(w - 2, 0))
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = yc - y0
    fx = xc - x0
    out = (stack[:, y0, x0] * (1 - fy) * (1 - fx) + stack[:, y0, x1] * (1 - fy) * fx
           + stack[:, y1, x0] * fy * (1 - fx) + stack[:, y1, x1] * fy * fx)
    out = np.where(ok[None], out, fill)
    return out[0] if img.ndim == 2 else out


def compose_field(field: np.ndarray, update: np.ndarray) -> np.ndarray:
    """Displacement of ``x -> x + u(x) + field(x + u(x))`` for (2, H, W) displacements.

    ``field`` is resampled with replicated borders; both are in pixels (y, x).
    """
    h, w = field.shape[1:]
    ident = identity_map((h, w))
    py = ident[0] + update[0]
    px = ident[1] + update[1]
    fy = _remap(field[0], py, px, 0.0, cv2.BORDER_REPLICATE)
    fx = _remap(field[1], py, px, 0.0, cv2.BORDER_REPLICATE)
    return np.stack([update[0] + fy, update[1] + fx]).astype(np.float32)


def invert_map(map_: np.ndarray, session_shape: tuple[int, int], *, n_iter: int = 30,
               tol: float = 0.01) -> np.ndarray:
    """Inverse of an alignment map: for each session pixel, the aligned position it lands on.

    Solves ``map(p) = q`` for p by the fixed-point iteration ``p <- q - d(p)`` with
    ``d = map - identity`` (converges for the smooth, invertible maps the alignment makes).

    Parameters
    ----------
    map_ : ndarray (2, H, W)
        Alignment map (aligned grid -> session positions).
    session_shape : (h, w)
        Shape of the session frame.

    Returns
    -------
    ndarray float32 (2, h, w)
        Aligned (y, x) position of every session pixel; NaN where it has no preimage inside
        the aligned grid (or the map is NaN there).
    """
    valid = np.isfinite(map_).all(axis=0).astype(np.float32)
    full = fill_invalid(map_)
    big_h, big_w = map_.shape[1:]
    disp = full - identity_map((big_h, big_w))
    q = identity_map(session_shape)
    # start from the mean displacement (the translation part)
    p = q - disp.reshape(2, -1).mean(axis=1)[:, None, None]
    for _ in range(n_iter):
        dy = _remap(disp[0], p[0], p[1], 0.0, cv2.BORDER_REPLICATE)
        dx = _remap(disp[1], p[0], p[1], 0.0, cv2.BORDER_REPLICATE)
        new = np.stack([q[0] - dy, q[1] - dx])
        step = np.nanmax(np.abs(new - p)) if new.size else 0.0
        p = new
        if step < tol * 0.1:
            break
    inside = (p[0] >= 0) & (p[0] <= big_h - 1) & (p[1] >= 0) & (p[1] <= big_w - 1)
    ok_valid = _remap(valid, p[0], p[1], 0.0) > 0.999
    back_y = _remap(full[0], p[0], p[1], np.nan)
    back_x = _remap(full[1], p[0], p[1], np.nan)
    resid = np.hypot(back_y - q[0], back_x - q[1])
    good = inside & ok_valid & (resid < max(tol, 0.05))
    return np.where(good[None], p, np.nan).astype(np.float32)


def map_points(points: np.ndarray, map_: np.ndarray, *, to: str = "aligned", n_iter: int = 50,
               tol: float = 1e-4) -> np.ndarray:
    """Map (N, 2) (y, x) points between the aligned frame and a session frame.

    Parameters
    ----------
    points : ndarray (N, 2)
        Session positions when ``to="aligned"``; aligned positions when ``to="session"``.
    map_ : ndarray (2, H, W)
        The session's alignment map.
    to : {"aligned", "session"}
        ``"session"`` samples the map (bilinear); ``"aligned"`` inverts it by Newton steps.

    Returns
    -------
    ndarray float64 (N, 2); NaN for points with no counterpart in the other frame.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if to == "session":
        return sample_bilinear(map_, pts).T.astype(np.float64)
    if to != "aligned":
        raise ValueError(f"map_points: to must be 'aligned' or 'session', not {to!r}")
    full = fill_invalid(map_).astype(np.float64)
    h, w = full.shape[1:]
    disp = full - identity_map((h, w)).astype(np.float64)
    # Jacobian of the map by central differences (for Newton steps)
    gy = np.stack(np.gradient(full[0]))  # d map_y / dy, d map_y / dx
    gx = np.stack(np.gradient(full[1]))
    jac = np.concatenate([gy, gx]).astype(np.float32)  # (4, H, W): yy, yx, xy, xx
    mean_disp = disp.reshape(2, -1).mean(axis=1)
    p = pts - mean_disp
    for _ in range(n_iter):
        pc = np.column_stack([np.clip(p[:, 0], 0, h - 1), np.clip(p[:, 1], 0, w - 1)])
        val = sample_bilinear(full, pc).T + (p - pc)  # linear extension outside the grid
        r = val - pts
        j = sample_bilinear(jac, pc)
        det = j[0] * j[3] - j[1] * j[2]
        det = np.where(np.abs(det) < 1e-6, 1e-6, det)
        sy = (j[3] * r[:, 0] - j[1] * r[:, 1]) / det
        sx = (-j[2] * r[:, 0] + j[0] * r[:, 1]) / det
        p = p - np.column_stack([sy, sx])
        if len(r) == 0 or np.nanmax(np.abs(r)) < tol:
            break
    back = sample_bilinear(map_.astype(np.float32), p).T
    ok = np.isfinite(back).all(axis=1) & (np.hypot(*(back - pts).T) < 0.01)
    return np.where(ok[:, None], p, np.nan)


@numba.njit(cache=True)
def _warp_stack_kernel(stack, idx, wts, valid, fill, out):
    n = stack.shape[0]
    npix = idx.shape[1]
    for t in range(n):
        src = stack[t]
        dst = out[t]
        for p in range(npix):
            if valid[p]:
                dst[p] = (wts[0, p] * src[idx[0, p]] + wts[1, p] * src[idx[1, p]]
                          + wts[2, p] * src[idx[2, p]] + wts[3, p] * src[idx[3, p]])
            else:
                dst[p] = fill


class BilinearWarp:
    """Precomputed bilinear resampling of (n, h, w) stacks through one map.

    The four source indices and weights of every output pixel are computed once, so warping
    a chunk of frames is one compiled pass (no per-frame Python work).

    Parameters
    ----------
    map_ : ndarray (2, H, W)
        Source (y, x) position sampled by each output pixel; NaN = no source.
    source_shape : (h, w)
        Shape of the source frames.
    fill : float
        Output value where the map is NaN or points outside the source.
    """

    def __init__(self, map_: np.ndarray, source_shape: tuple[int, int], fill: float = np.nan):
        h, w = int(source_shape[0]), int(source_shape[1])
        self.source_shape = (h, w)
        self.out_shape = tuple(map_.shape[1:])
        self.fill = np.float32(fill)
        y = map_[0].ravel().astype(np.float64)
        x = map_[1].ravel().astype(np.float64)
        eps = 1e-3  # tolerate rounding at the last row/column
        ok = np.isfinite(y) & np.isfinite(x) & (y >= -eps) & (y <= h - 1 + eps) & (x >= -eps) & (x <= w - 1 + eps)
        yc = np.clip(np.where(ok, y, 0.0), 0, h - 1)
        xc = np.clip(np.where(ok, x, 0.0), 0, w - 1)
        y0 = np.minimum(np.floor(yc).astype(np.int64), max(h - 2, 0))
        x0 = np.minimum(np.floor(xc).astype(np.int64), max(w - 2, 0))
        y1 = np.minimum(y0 + 1, h - 1)
        x1 = np.minimum(x0 + 1, w - 1)
        fy = (yc - y0).astype(np.float32)
        fx = (xc - x0).astype(np.float32)
        self.idx = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1]).astype(np.int64)
        self.wts = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]).astype(np.float32)
        self.valid = ok
        self.valid_image = ok.reshape(self.out_shape)

    def __call__(self, stack: np.ndarray) -> np.ndarray:
        """Warp ``stack`` (n, h, w) → float32 (n, H, W)."""
        stack = np.asarray(stack)
        if stack.ndim != 3 or stack.shape[1:] != self.source_shape:
            raise ValueError(f"BilinearWarp: expected frames of shape {self.source_shape}, got {stack.shape}")
        flat = np.ascontiguousarray(stack.reshape(stack.shape[0], -1), dtype=np.float32)
        out = np.empty((stack.shape[0], self.idx.shape[1]), dtype=np.float32)
        _warp_stack_kernel(flat, self.idx, self.wts, self.valid, self.fill, out)
        return out.reshape((stack.shape[0],) + self.out_shape)
