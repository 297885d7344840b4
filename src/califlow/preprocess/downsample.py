"""Spatial and temporal downsampling of frame chunks.

Spatial (``spatial_ds`` = s): each output pixel is the exact mean of an s x s block of
input pixels (area averaging, which is the anti-aliasing box filter of ``cv2.INTER_AREA``
for integer factors; ``benchmarks/bench_readers.py`` compares the two). When H or W is not
a multiple of s, the last ``H % s`` rows and ``W % s`` columns are dropped (bottom and
right), so output pixel (i, j) is centred on raw pixel (s*i + (s-1)/2, s*j + (s-1)/2) for
every pixel, with no partial border blocks.

Temporal (``temporal_ds`` = k): the mean of consecutive blocks of k frames; a trailing
incomplete block is averaged over the frames it has (no frame is thrown away). A block's
timestamp is the mean of its frames' timestamps. Frames flagged invalid (dropped frames,
NaN) are left out of their block's mean; a block with no valid frame is NaN.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["downsample_spatial", "downsample_temporal", "downsample", "downsampled_shape"]


def downsampled_shape(height: int, width: int, spatial_ds: int) -> tuple[int, int]:
    """Frame size after spatial downsampling: (H // s, W // s)."""
    s = int(spatial_ds)
    if s < 1:
        raise ValueError(f"spatial_ds must be an integer >= 1, got {spatial_ds!r}")
    h, w = int(height) // s, int(width) // s
    if h < 1 or w < 1:
        raise ValueError(f"spatial_ds={s} is larger than the {height}x{width} frame")
    return h, w


@numba.njit(cache=True, nogil=True)
def _block_mean(frames, factor, out):
    n, h, w = out.shape
    inv = 1.0 / (factor * factor)
    acc = np.empty(w, np.float64)
    for t in range(n):
        for i in range(h):
            acc[:] = 0.0
            for a in range(factor):
                row = frames[t, i * factor + a]
                for j in range(w):
                    s = 0.0
                    base = j * factor
                    for b in range(factor):
                        s += row[base + b]
                    acc[j] += s
            for j in range(w):
                out[t, i, j] = acc[j] * inv
    return out


def downsample_spatial(frames: np.ndarray, spatial_ds: int) -> np.ndarray:
    """Block-mean spatial downsampling.

    Parameters
    ----------
    frames : ndarray (n, H, W), any real dtype (uint8, uint16, float32...)
    spatial_ds : int
        Integer factor s >= 1.

    Returns
    -------
    ndarray float32 (n, H // s, W // s)
        Mean of each s x s block (trailing rows/columns that do not fill a block are dropped).
    """
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"downsample_spatial: frames must be (n, H, W), got shape {frames.shape}")
    s = int(spatial_ds)
    h, w = downsampled_shape(frames.shape[1], frames.shape[2], s)
    if s == 1:
        return frames.astype(np.float32, copy=True)
    if frames.dtype == np.float64 or frames.dtype.kind not in "uif":
        frames = frames.astype(np.float32)
    out = np.empty((frames.shape[0], h, w), np.float32)
    return _block_mean(np.ascontiguousarray(frames), s, out)


def downsample_temporal(frames: np.ndarray, temporal_ds: int, *, valid: np.ndarray | None = None,
                        timestamps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean of consecutive blocks of ``temporal_ds`` frames.

    Parameters
    ----------
    frames : ndarray float32 (n, h, w)
    temporal_ds : int
        Block length k >= 1; the last block may be shorter (averaged over what it has).
    valid : ndarray bool (n,), optional
        False for frames to leave out (dropped frames); a block without any valid frame is NaN.
    timestamps : ndarray (n,), optional
        Seconds; the output holds each block's mean timestamp (over all its frames).

    Returns
    -------
    (ndarray float32 (ceil(n / k), h, w), ndarray float64 (ceil(n / k),) or None)
    """
    frames = np.asarray(frames, dtype=np.float32)
    k = int(temporal_ds)
    if k < 1:
        raise ValueError(f"temporal_ds must be an integer >= 1, got {temporal_ds!r}")
    n = frames.shape[0]
    starts = np.arange(0, n, k)
    counts = np.diff(np.append(starts, n)).astype(np.float32)
    ts = None
    if timestamps is not None:
        t = np.asarray(timestamps, dtype=np.float64)
        ts = np.add.reduceat(t, starts) / counts if n else t[:0]
    if n == 0:
        return frames[:0], ts
    if valid is None:
        if k == 1:
            return frames, ts
        out = np.add.reduceat(frames, starts, axis=0)
        out /= counts[:, None, None]
        return out, ts
    valid = np.asarray(valid, dtype=bool)
    data = np.where(valid[:, None, None], frames, np.float32(0))
    sums = np.add.reduceat(data, starts, axis=0) if k > 1 else data
    n_valid = np.add.reduceat(valid.astype(np.float32), starts) if k > 1 else valid.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / n_valid[:, None, None]
    out[n_valid == 0] = np.nan
    return out.astype(np.float32, copy=False), ts


def downsample(frames: np.ndarray, spatial_ds: int, temporal_ds: int, *,
               valid: np.ndarray | None = None,
               timestamps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Spatial block mean, then temporal block mean, of one chunk (see the module notes).

    Returns the float32 (ceil(n / temporal_ds), H // spatial_ds, W // spatial_ds) chunk and
    the block timestamps (or None).
    """
    small = downsample_spatial(frames, spatial_ds)
    return downsample_temporal(small, temporal_ds, valid=valid, timestamps=timestamps)
