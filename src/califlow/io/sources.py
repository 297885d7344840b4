"""Streaming movie sources: one or several files read in order as one (T, H, W) movie.

A :class:`MovieSource` joins per-file :class:`FrameReader` objects (video, TIFF, isxd, HDF5)
into one movie that is streamed in frame chunks with memory set by the chunk size, never by
the movie length.

Time grid and dropped frames
----------------------------
Frames are returned on the *acquisition grid*: one frame per sampling period. Frames the
acquisition lost (Inscopix ``dropped``/``cropped``/``blank`` frames, jumps of the Miniscope
``DAQ Frame Number``, or timestamp gaps longer than 1.5 x the median interval) are not in
the files; they come back as **NaN-filled float32 frames** at their place on the grid and
their grid indices are listed in ``MovieSource.dropped``, so no later frame is shifted in
time. A source with dropped frames therefore streams float32 (its native dtype stays in
``metadata["native_dtype"]``); a source without streams its native dtype (uint8, uint16
or float32).
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from califlow.errors import InputError

__all__ = [
    "FrameReader",
    "FrameStream",
    "MovieSource",
    "TimingAnalysis",
    "analyse_timestamps",
    "natural_key",
    "natural_sorted",
    "output_dtype",
    "timed_source",
]

log = logging.getLogger(__name__)

NATIVE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def natural_key(path: str | Path) -> list:
    """Sort key that orders embedded numbers by value (``2.avi`` before ``10.avi``)."""
    name = Path(path).name
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def natural_sorted(paths: Sequence[str | Path]) -> list[Path]:
    """Paths in natural order of their file names."""
    return sorted((Path(p) for p in paths), key=natural_key)


def output_dtype(dtype) -> np.dtype:
    """dtype frames are returned in: uint8, uint16 and float32 stay; anything else is float32."""
    dtype = np.dtype(dtype)
    return dtype if dtype in NATIVE_DTYPES else np.dtype(np.float32)


class FrameStream(abc.ABC):
    """Sequential decoder of one file; :meth:`read_into` fills frames, :meth:`close` ends it."""

    @abc.abstractmethod
    def read_into(self, out: np.ndarray) -> int:
        """Decode the next ``len(out)`` frames into ``out``; return how many were decoded.

        Fewer than ``len(out)`` means the file ended. Raises :class:`InputError` naming the
        file and frame when the file is corrupt or truncated.
        """

    def close(self) -> None:  # noqa: B027 - a no-op unless the stream holds a file
        """Release the file."""


class FrameReader(abc.ABC):
    """One movie file. Subclasses set the attributes and implement :meth:`stream`.

    Attributes
    ----------
    path : Path
    height, width : int
        Frame size in pixels (rows, columns).
    dtype : numpy.dtype
        dtype of the returned frames (uint8, uint16 or float32).
    native_dtype : numpy.dtype
        dtype stored in the file.
    n_claimed : int or None
        Frame count from the file's header (may be wrong; the truth is what decodes).
    container_fps : float or None
        Frame rate written in the container, if any.
    """

    path: Path
    height: int
    width: int
    dtype: np.dtype
    native_dtype: np.dtype
    n_claimed: int | None = None
    container_fps: float | None = None
    kind: str = "file"

    @abc.abstractmethod
    def stream(self, start: int = 0) -> FrameStream:
        """A :class:`FrameStream` positioned at decoded frame ``start``."""

    def describe(self) -> dict:
        """JSON-able summary of the file (for metadata)."""
        return {"file": str(self.path), "kind": self.kind, "height": self.height, "width": self.width,
                "native_dtype": str(self.native_dtype), "header_frames": self.n_claimed,
                "container_fps": self.container_fps}


class TimingAnalysis:
    """Result of :func:`analyse_timestamps`.

    Attributes
    ----------
    fps : float or None
        1 / median inter-frame interval.
    grid_positions : ndarray of int64, (n_decoded,)
        Grid index of every recorded frame.
    n_grid : int
        Frames on the acquisition grid (recorded + dropped).
    dropped : ndarray of int64
        Grid indices with no recorded frame.
    grid_timestamps : ndarray of float64, (n_grid,)
        Seconds since the first frame; dropped frames are linearly interpolated.
    gaps : list of dict
        One entry per gap: ``after_frame`` (recorded index), ``interval_s``, ``missing``.
    """

    def __init__(self, fps, grid_positions, n_grid, dropped, grid_timestamps, gaps):
        self.fps = fps
        self.grid_positions = grid_positions
        self.n_grid = n_grid
        self.dropped = dropped
        self.grid_timestamps = grid_timestamps
        self.gaps = gaps


def analyse_timestamps(times_s: np.ndarray, *, source: str, frame_counter: np.ndarray | None = None,
                       gap_factor: float = 1.5) -> TimingAnalysis:
    """Frame rate and dropped frames from per-frame timestamps.

    Parameters
    ----------
    times_s : ndarray, (n,)
        Timestamps of the recorded frames, seconds, non-decreasing.
    source : str
        File named in error messages.
    frame_counter : ndarray of int, (n,), optional
        A hardware frame counter (Miniscope ``DAQ Frame Number``). When given, dropped frames
        are its jumps (exact); otherwise they are inferred from timestamp gaps longer than
        ``gap_factor`` x the median interval, each gap holding
        ``round(gap / median) - 1`` (at least 1) missing frames.
    """
    t = np.asarray(times_s, dtype=np.float64)
    n = t.size
    if n == 0:
        raise InputError(f"{source}: no timestamps")
    if not np.all(np.isfinite(t)):
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise InputError(f"{source}: timestamp of frame {bad} is not a number")
    d = np.diff(t)
    if np.any(d < 0):
        bad = int(np.flatnonzero(d < 0)[0])
        raise InputError(f"{source}: timestamps are not monotonic: frame {bad + 1} ({t[bad + 1]:.6f} s) "
                         f"comes before frame {bad} ({t[bad]:.6f} s)")
    if n == 1:
        return TimingAnalysis(None, np.zeros(1, np.int64), 1, np.zeros(0, np.int64), t - t[0], [])
    median = float(np.median(d))
    if median <= 0:
        raise InputError(f"{source}: the median interval between timestamps is 0; the timestamps are unusable")
    if frame_counter is not None:
        fc = np.asarray(frame_counter, dtype=np.int64)
        step = np.diff(fc)
        if np.any(step <= 0):
            bad = int(np.flatnonzero(step <= 0)[0])
            raise InputError(f"{source}: the frame counter is not increasing at frame {bad + 1} "
                             f"({fc[bad]} then {fc[bad + 1]})")
        missing = step - 1
    else:
        ratio = d / median
        # round half up, as MATLAB's round (califlow.params.round_half_up), vectorised
        missing = np.where(ratio > gap_factor, np.maximum(np.floor(ratio + 0.5).astype(np.int64) - 1, 1), 0)
    grid_positions = np.concatenate([[0], np.cumsum(1 + missing)]).astype(np.int64)
    n_grid = int(grid_positions[-1]) + 1
    grid = np.arange(n_grid)
    dropped = np.setdiff1d(grid, grid_positions, assume_unique=True).astype(np.int64)
    grid_timestamps = np.interp(grid, grid_positions, t - t[0])
    gap_idx = np.flatnonzero(missing > 0)
    gaps = [{"after_frame": int(i), "interval_s": float(d[i]), "missing": int(missing[i])} for i in gap_idx]
    if gaps:
        log.warning("%s: %d dropped frame(s) in %d gap(s) (median interval %.2f ms)", source,
                    int(missing.sum()), len(gaps), median * 1e3)
    fps = float(np.round(1.0 / median, 9))  # drop float noise such as 20.00000000000003
    return TimingAnalysis(fps, grid_positions, n_grid, dropped, grid_timestamps, gaps)


class MovieSource:
    """A movie made of one or more files, streamed in frame chunks.

    Attributes
    ----------
    files : list of Path
        The files in reading order.
    shape : tuple (T, H, W)
        T as claimed by timestamps or headers before decoding; the true count is what
        :meth:`iter_chunks` yields.
    dtype : numpy.dtype
        dtype of the returned chunks: native (uint8/uint16/float32), or float32 when the
        source has dropped frames (returned as NaN frames).
    fps : float or None
        Frames per second: from timestamps, else the ``fps`` argument, else the container.
    timestamps : ndarray of float64 or None
        Seconds since the first frame, one per grid frame (dropped frames interpolated).
    dropped : ndarray of int64
        Grid indices of frames the acquisition lost (NaN frames in the stream).
    metadata : dict
        JSON-able details: reader kind, file order, header counts, gaps, timing source...
        After a complete :meth:`iter_chunks` pass it also holds ``frames_per_file`` (decoded)
        and ``n_decoded``.
    """

    def __init__(self, readers: Sequence[FrameReader], *, timestamps: np.ndarray | None = None,
                 fps: float | None = None, grid_positions: np.ndarray | None = None,
                 n_grid: int | None = None, expected_frames: int | None = None,
                 expected_per_file: Sequence[int | None] | None = None,
                 expected_what: str = "the header", per_file_what: str | None = None,
                 metadata: dict | None = None):
        if not readers:
            raise InputError("MovieSource needs at least one file")
        self._readers = list(readers)
        first = self._readers[0]
        for r in self._readers[1:]:
            if (r.height, r.width) != (first.height, first.width):
                raise InputError(f"{r.path}: frame size {r.height}x{r.width} differs from "
                                 f"{first.height}x{first.width} in {first.path}; all chunk files must match")
            if r.native_dtype != first.native_dtype:
                raise InputError(f"{r.path}: pixel type {r.native_dtype} differs from {first.native_dtype} "
                                 f"in {first.path}; all chunk files must match")
        self.files = [r.path for r in self._readers]
        self._grid = None if grid_positions is None or n_grid is None else np.asarray(grid_positions, np.int64)
        if self._grid is not None and self._grid.size == n_grid and np.array_equal(self._grid, np.arange(n_grid)):
            self._grid = None  # no dropped frame: identity grid
        self._n_grid = n_grid
        self.dropped = (np.setdiff1d(np.arange(n_grid), self._grid, assume_unique=True).astype(np.int64)
                        if self._grid is not None else np.zeros(0, np.int64))
        if self._grid is not None:
            expected_frames = int(self._grid.size)
        self._expected = expected_frames
        self._expected_per_file = list(expected_per_file) if expected_per_file is not None else None
        self._expected_what = expected_what
        self._per_file_what = per_file_what or expected_what
        self.native_dtype = first.native_dtype
        self.dtype = np.dtype(np.float32) if self._grid is not None else first.dtype
        claims = [r.n_claimed for r in self._readers]
        if n_grid is not None:
            t = int(n_grid)
        elif expected_frames is not None:
            t = int(expected_frames)
        else:
            t = int(sum(c or 0 for c in claims))
        self.shape = (t, first.height, first.width)
        self.timestamps = None if timestamps is None else np.asarray(timestamps, dtype=np.float64)
        self.fps = None if fps is None else float(fps)
        self.metadata = dict(metadata or {})
        self.metadata.setdefault("file_order", [p.name for p in self.files])
        self.metadata["header_frames_per_file"] = claims
        self.metadata["native_dtype"] = str(self.native_dtype)
        self.metadata["dropped_frames"] = self.dropped.tolist()
        self._decoded_per_file: list[int] | None = None

    # ------------------------------------------------------------------ reading
    @property
    def grid_positions(self) -> np.ndarray | None:
        """Grid index of each recorded frame (None: the identity, no dropped frame)."""
        return self._grid

    @property
    def frames_per_file(self) -> list[int] | None:
        """Decoded frames per file, known after one complete :meth:`iter_chunks` pass."""
        return self._decoded_per_file

    def _decoded_blocks(self, n: int) -> Iterator[np.ndarray]:
        """Recorded frames in blocks of ``n`` (the last may be shorter), across files."""
        h, w = self.shape[1:]
        native = self._readers[0].dtype
        counts: list[int] = []
        buf = np.empty((n, h, w), native)
        filled = 0
        total = 0
        expected = self._expected
        for i, reader in enumerate(self._readers):
            stream = reader.stream(0)
            got = 0
            try:
                while True:
                    want = n - filled
                    k = stream.read_into(buf[filled:])
                    got += k
                    filled += k
                    total += k
                    if expected is not None and total > expected:
                        raise InputError(f"{reader.path}: frame {got - (total - expected)} of this file is frame "
                                         f"{expected} of the "
                                         f"movie, but only {expected} frames are expected from {self._expected_what}")
                    if filled == n:
                        yield buf
                        buf = np.empty((n, h, w), native)
                        filled = 0
                    if k < want:
                        break
            finally:
                stream.close()
            if got == 0:
                raise InputError(f"{reader.path}: no frame could be decoded (empty or unreadable file)")
            exp = self._expected_per_file[i] if self._expected_per_file is not None else None
            if exp is not None and got != exp:
                raise InputError(f"{reader.path}: decoded {got} frames but {exp} were expected "
                                 f"({self._per_file_what}); the file breaks after frame {got - 1} "
                                 f"(movie frame {total - 1})")
            counts.append(got)
        if filled:
            yield buf[:filled]
        if expected is not None and total != expected:
            raise InputError(f"{', '.join(str(p) for p in self.files[-1:])}: the files decode to {total} frames but "
                             f"{expected} are expected from {self._expected_what}; the recording is truncated or the "
                             f"timestamps belong to another recording (last file ends at frame {total - 1})")
        self._decoded_per_file = counts
        self.metadata["frames_per_file"] = counts
        self.metadata["n_decoded"] = total

    def iter_chunks(self, n_frames: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, frames)`` with ``frames`` of shape (n, H, W), n = ``n_frames`` but the last.

        Memory is a few chunks, whatever the movie length. Frames are in :attr:`dtype`;
        dropped grid frames are NaN. Raises :class:`InputError` naming the file and frame on
        truncation, corruption or a frame count that disagrees with the timestamps.
        """
        n = int(n_frames)
        if n < 1:
            raise ValueError(f"iter_chunks: n_frames must be >= 1, got {n_frames}")
        if self._grid is None:
            start = 0
            for block in self._decoded_blocks(n):
                yield start, block
                start += block.shape[0]
            return
        yield from self._grid_chunks(n)

    def _grid_chunks(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        h, w = self.shape[1:]
        grid = self._grid
        n_grid = int(self._n_grid)
        g0 = 0
        buf = np.full((min(n, n_grid), h, w), np.nan, np.float32)
        k0 = 0
        for block in self._decoded_blocks(n):
            pos = grid[k0:k0 + block.shape[0]]
            k0 += block.shape[0]
            i = 0
            while i < pos.size:
                c = i + int(np.searchsorted(pos[i:], g0 + buf.shape[0]))
                buf[pos[i:c] - g0] = block[i:c]
                i = c
                if i < pos.size:
                    yield g0, buf
                    g0 += buf.shape[0]
                    buf = np.full((min(n, n_grid - g0), h, w), np.nan, np.float32)
        while g0 < n_grid:
            yield g0, buf
            g0 += buf.shape[0]
            if g0 < n_grid:
                buf = np.full((min(n, n_grid - g0), h, w), np.nan, np.float32)

    def _file_counts(self) -> list[int]:
        if self._decoded_per_file is not None:
            return self._decoded_per_file
        if self._expected_per_file is not None and all(c is not None for c in self._expected_per_file[:-1]):
            counts = [int(c) for c in self._expected_per_file[:-1]]
            last = self._expected - sum(counts) if self._expected is not None else self._readers[-1].n_claimed
            return counts + [int(last or 0)]
        return [int(r.n_claimed or 0) for r in self._readers]

    def _read_recorded(self, k_start: int, k_stop: int) -> np.ndarray:
        h, w = self.shape[1:]
        out = np.empty((max(k_stop - k_start, 0), h, w), self._readers[0].dtype)
        offsets = np.concatenate([[0], np.cumsum(self._file_counts())])
        pos = k_start
        while pos < k_stop:
            i = int(np.searchsorted(offsets, pos, side="right")) - 1
            if i >= len(self._readers):
                raise InputError(f"{self.files[-1]}: frame {pos} is past the end of the recording "
                                 f"({int(offsets[-1])} frames)")
            local = pos - int(offsets[i])
            take = min(k_stop, int(offsets[i + 1])) - pos if i + 1 < offsets.size else k_stop - pos
            stream = self._readers[i].stream(local)
            try:
                got = stream.read_into(out[pos - k_start:pos - k_start + take])
            finally:
                stream.close()
            if got < take:
                raise InputError(f"{self.files[i]}: frame {local + got} could not be read "
                                 f"(the file ends after {local + got} frames)")
            pos += take
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` of the grid as (stop - start, H, W) in :attr:`dtype`.

        Random access; per-file counts come from headers/metadata until one full
        :meth:`iter_chunks` pass has counted the decoded frames.
        """
        t = self.shape[0]
        start, stop = int(start), int(min(stop, t) if t else stop)
        if start < 0 or stop < start:
            raise ValueError(f"read: bad frame range {start}:{stop}")
        if self._grid is None:
            return self._read_recorded(start, stop)
        k0 = int(np.searchsorted(self._grid, start))
        k1 = int(np.searchsorted(self._grid, stop))
        out = np.full((stop - start, *self.shape[1:]), np.nan, np.float32)
        out[self._grid[k0:k1] - start] = self._read_recorded(k0, k1)
        return out

    def __repr__(self) -> str:
        return (f"MovieSource({len(self.files)} file(s), shape={self.shape}, dtype={self.dtype}, "
                f"fps={self.fps}, dropped={self.dropped.size})")


def timed_source(readers: Sequence[FrameReader], times_s: np.ndarray, *, source: str, fps: float | None = None,
                 frame_counter: np.ndarray | None = None, expected_per_file: Sequence[int | None] | None = None,
                 per_file_what: str | None = None, metadata: dict | None = None) -> MovieSource:
    """A :class:`MovieSource` timed by per-frame timestamps (one per recorded frame).

    The frame rate is 1 / the median interval (a given ``fps`` that disagrees by more than
    1 % is reported and ignored); gaps become NaN frames on the grid (:func:`analyse_timestamps`).
    The decoded frame count must equal the number of timestamps.
    """
    ta = analyse_timestamps(times_s, source=source, frame_counter=frame_counter)
    meta = dict(metadata or {})
    if fps and ta.fps and abs(float(fps) - ta.fps) > 0.01 * ta.fps:
        log.warning("%s: the timestamps give %.3f fps; the fps given (%.3f) is ignored", source, ta.fps, fps)
        meta["fps_argument_ignored"] = float(fps)
    rate = ta.fps if ta.fps else (float(fps) if fps else None)
    meta.update(timing_source=source, fps_from="timestamps" if ta.fps else ("argument" if fps else None),
                gaps=ta.gaps, n_timestamps=int(np.asarray(times_s).size))
    return MovieSource(readers, timestamps=ta.grid_timestamps, fps=rate, grid_positions=ta.grid_positions,
                       n_grid=ta.n_grid, expected_frames=int(np.asarray(times_s).size),
                       expected_per_file=expected_per_file, expected_what=f"the timestamps in {source}",
                       per_file_what=per_file_what, metadata=meta)
