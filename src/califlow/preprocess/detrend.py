"""Detrending: subtract a running-minimum-of-running-median baseline from each pixel.

CaliAli's ``detrend_vid``: ``baseline = movmin(movmedian(y, k1), k2)`` with
``k1 = round(sf * detrend)`` frames and ``k2 = 5 * k1`` frames, and the result is
``y - baseline`` (not a dF/F). Windows follow MATLAB's conventions (see
:mod:`califlow.preprocess.temporal`).

Streaming: a block of frames is exact for the frames whose windows it fully contains;
:func:`detrend_context` gives how many frames of context a caller must read before and
after the frames it wants. :class:`DetrendStream` detrends consecutive chunks without
recomputing any context.
"""

from __future__ import annotations

import numpy as np

from califlow.params import round_half_up
from califlow.preprocess.temporal import running_median, running_min, window_extent

__all__ = ["detrend_windows", "detrend_context", "detrend_block", "DetrendStream"]


def detrend_windows(fps: float, detrend_s: float) -> tuple[int, int]:
    """Window lengths ``(k1, k2)`` in frames: ``k1 = round(fps * detrend_s)``, ``k2 = 5 k1``.

    Returns ``(0, 0)`` when detrending is off (``detrend_s == 0``).
    """
    if detrend_s <= 0:
        return 0, 0
    if fps <= 0:
        raise ValueError(f"frame rate must be > 0 for detrending, got {fps}")
    k1 = max(1, round_half_up(float(fps) * float(detrend_s)))
    return k1, 5 * k1


def detrend_context(fps: float, detrend_s: float) -> int:
    """Frames of context needed on each side of a block for an exact detrend (0 when off)."""
    k1, k2 = detrend_windows(fps, detrend_s)
    if k1 == 0:
        return 0
    b1, a1 = window_extent(k1)
    b2, a2 = window_extent(k2)
    return max(b1 + b2, a1 + a2)


def detrend_block(block: np.ndarray, fps: float, detrend_s: float) -> np.ndarray:
    """Detrend every pixel of a block of frames.

    Parameters
    ----------
    block : ndarray, shape (T, h, w)
        Frames in time order (float32, finite).
    fps : float
        Frame rate in frames/s.
    detrend_s : float
        Median window in seconds (CaliAli ``detrend``); 0 returns a float32 copy.

    Returns
    -------
    ndarray, float32, shape (T, h, w): ``block - movmin(movmedian(block, k1), 5 k1)``.
    """
    block = np.asarray(block, dtype=np.float32)
    k1, k2 = detrend_windows(fps, detrend_s)
    if k1 == 0:
        return block.copy()
    baseline = running_min(running_median(block, k1), k2)
    np.subtract(block, baseline, out=baseline)
    return baseline


class _FrameBuffer:
    """Frames ``start .. start + n - 1`` of a movie held in one array that grows by appending
    and forgets old frames; frames are copied once on append (and moved only when the
    retained tail is compacted to the front)."""

    def __init__(self):
        self.data: np.ndarray | None = None
        self.start = 0      # movie index of the first held frame
        self.offset = 0     # its row in ``data``
        self.n = 0

    @property
    def stop(self) -> int:
        return self.start + self.n

    def append(self, frames: np.ndarray) -> None:
        m = len(frames)
        if self.data is None or self.offset + self.n + m > len(self.data):
            need = self.n + m
            if self.data is None or need > len(self.data) // 2 or self.data.shape[1:] != frames.shape[1:]:
                data = np.empty((max(2 * need, 1),) + frames.shape[1:], dtype=np.float32)
            else:
                data = self.data
            data[:self.n] = self.data[self.offset:self.offset + self.n] if self.n else data[:0]
            self.data, self.offset = data, 0
        self.data[self.offset + self.n:self.offset + self.n + m] = frames
        self.n += m

    def view(self, a: int, b: int) -> np.ndarray:
        """Frames ``a:b`` (movie indices) as a view."""
        return self.data[self.offset + a - self.start:self.offset + b - self.start]

    def drop_before(self, a: int) -> None:
        """Forget the frames before movie index ``a``."""
        k = min(max(0, a - self.start), self.n)
        self.start += k
        self.offset += k
        self.n -= k


class DetrendStream:
    """Exact detrending of a movie fed as consecutive chunks (output lags the input).

    Each :meth:`push` returns the frames whose baseline is final: a frame needs the raw
    frames up to ``k1 // 2 + k2 // 2`` ahead. Medians are computed once per frame (plus
    ``k1`` frames of overlap per chunk), so streaming costs about as much as one call of
    :func:`detrend_block` on the whole movie and gives identical values.

    Parameters
    ----------
    fps : float
        Frame rate, frames/s.
    detrend_s : float
        CaliAli ``detrend`` (s); 0 passes frames through unchanged.
    """

    def __init__(self, fps: float, detrend_s: float):
        self.k1, self.k2 = detrend_windows(fps, detrend_s)
        self.b1, self.a1 = window_extent(self.k1) if self.k1 else (0, 0)
        self.b2, self.a2 = window_extent(self.k2) if self.k2 else (0, 0)
        self._raw = _FrameBuffer()
        self._med = _FrameBuffer()
        self._n_in = 0
        self._out_done = 0

    def push(self, frames: np.ndarray, last: bool = False) -> tuple[int, np.ndarray]:
        """Add the next frames (n, h, w); returns ``(start, detrended)`` of the frames now final.

        ``last=True`` for the movie's final chunk flushes every remaining frame.
        """
        frames = np.asarray(frames, dtype=np.float32)
        if self.k1 == 0:
            start = self._n_in
            self._n_in += len(frames)
            return start, frames.copy()
        self._raw.append(frames)
        self._n_in += len(frames)
        med_done = self._med.stop
        new_done = self._n_in if last else max(med_done, self._n_in - self.a1)
        if new_done > med_done:
            lo = max(0, med_done - self.b1)
            hi = min(self._n_in, new_done + self.a1)
            m = running_median(self._raw.view(lo, hi), self.k1)
            self._med.append(m[med_done - lo:new_done - lo])
        med_done = self._med.stop
        out_done = self._n_in if (last and med_done == self._n_in) else max(self._out_done, med_done - self.a2)
        start = self._out_done
        if out_done > self._out_done:
            lo = max(0, self._out_done - self.b2)
            hi = min(med_done, out_done + self.a2)
            base = running_min(self._med.view(lo, hi), self.k2)
            out = self._raw.view(self._out_done, out_done) - base[self._out_done - lo:out_done - lo]
            self._out_done = out_done
        else:
            out = np.zeros((0,) + frames.shape[1:], dtype=np.float32)
        self._raw.drop_before(min(self._out_done, med_done - self.b1))
        self._med.drop_before(self._out_done - self.b2)
        return start, out
