"""Temporal resampling of a frame stream to another frame rate (linear interpolation in time).

Sessions recorded at different rates (20 and 30.3 fps, say) cannot be concatenated into one
movie. :class:`TimeResampler` puts each session on the grid of ``downsampling.target_fps``:
output frame ``j`` is at time ``j / fps_out`` and is interpolated linearly between the two
input frames around ``j * fps_in / fps_out``. Calcium transients rise over a few frames
and decay over tens to hundreds of ms, so linear interpolation keeps them; the noise of a
downsampled session is filtered by the interpolation weights only (no low-pass beyond that).
Memory is one input block plus one frame, whatever the session length.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["TimeResampler", "resampled_length"]


def resampled_length(n_in: int, fps_in: float, fps_out: float) -> int:
    """Output frames for ``n_in`` input frames: every output time within the input's span."""
    if n_in <= 0:
        return 0
    return int(np.floor((n_in - 1) * fps_out / fps_in + 1e-9)) + 1


class TimeResampler:
    """Stream (n, H, W) float32 blocks at ``fps_in`` in; get blocks at ``fps_out`` out.

    Examples
    --------
    >>> r = TimeResampler(30.0, 20.0)
    >>> out = [b for block in blocks for b in r.feed(block)]   # doctest: +SKIP
    """

    def __init__(self, fps_in: float, fps_out: float):
        if fps_in <= 0 or fps_out <= 0:
            raise ValueError(f"frame rates must be > 0, got {fps_in} -> {fps_out}")
        self.step = float(fps_in) / float(fps_out)  # input frames per output frame
        self.n_in = 0  # input frames seen
        self.n_out = 0  # output frames produced
        self._prev: np.ndarray | None = None  # last input frame (index n_in - 1)

    def feed(self, frames: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the output frames whose times are covered once ``frames`` have arrived."""
        if frames.shape[0] == 0:
            return
        base = self.n_in - (self._prev is not None)  # input index of ext[0]
        ext = frames if self._prev is None else np.concatenate([self._prev[None], frames])
        self.n_in += frames.shape[0]
        stop = resampled_length(self.n_in, 1.0, 1.0 / self.step)
        j = np.arange(self.n_out, stop)
        self._prev = frames[-1].copy()
        if j.size == 0:
            return
        pos = j * self.step - base
        i0 = np.clip(np.floor(pos + 1e-9).astype(np.int64), 0, ext.shape[0] - 1)
        i1 = np.minimum(i0 + 1, ext.shape[0] - 1)
        w = (pos - i0).astype(np.float32)[:, None, None]
        self.n_out = int(stop)
        yield (ext[i0] * (1 - w) + ext[i1] * w).astype(np.float32, copy=False)
