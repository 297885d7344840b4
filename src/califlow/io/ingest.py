"""Ingest: read a recording, downsample it, write the session's ``ingest.zarr`` store.

The movie is streamed chunk by chunk (memory set by ``chunk_frames``, not by the movie's
length); the frame count is discovered while streaming and the Zarr array resized at the
end. Everything is written under a temporary name and renamed only when complete, so an
error (truncated file, timestamp mismatch...) leaves no store behind.

Dropped frames (see :mod:`califlow.io.sources`) are left out of the temporal block means;
an output frame whose whole block was dropped is filled by linear interpolation in time
between the nearest recorded output frames (held constant before the first and after the
last) and listed in the ``interpolated_frames`` attribute, so later steps get a finite movie
on a uniform time grid and know which frames were not measured.

Store layout
------------
``movie``       (T, H, W) float32, chunks (100, 64, 64), blosc-zstd bit-shuffle
``timestamps``  (T,) float64 seconds since the first frame (block means), when known
attrs           fps (after temporal_ds), n_frames, source_files, frames_per_file,
                dropped_frames (raw grid indices), damaged_frames, nonfinite_frames and
                blank_frames (raw grid indices, see :class:`_UnusableFrames`),
                interpolated_frames (output indices),
                file_order, spatial_ds, temporal_ds, raw_shape, raw_dtype, crop, gaps,
                timing, reader, provenance (califlow version, params, inputs)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import zarr

from califlow.errors import ConfigError, InputError
from califlow.io.damage import DamagedFrame, damaged_grid_frames, frame_ranges
from califlow.io.readers import open_movie
from califlow.io.sources import MovieSource
from califlow.io.start_time import recording_start
from califlow.io.store import (
    MOVIE_CHUNKS,
    FrameWriter,
    atomic_output,
    create_image,
    create_movie,
    set_provenance,
    to_jsonable,
)
from califlow.params import default_config
from califlow.preprocess.downsample import downsample, downsampled_shape
from califlow.preprocess.resample import TimeResampler

#: The downsampling group's defaults (the schema is their only source).
_DS = default_config()["downsampling"]

__all__ = ["ingest", "ingest_source", "auto_chunk_frames"]

log = logging.getLogger(__name__)

READ_BUDGET_BYTES = 64 * 2**20  # one raw chunk plus its float32 spatially downsampled copy


def auto_chunk_frames(height: int, width: int, itemsize: int, temporal_ds: int, spatial_ds: int,
                      budget_bytes: int = READ_BUDGET_BYTES) -> int:
    """Raw frames per read so a native chunk and its float32 downsampled copy fit ``budget_bytes``.

    A multiple of ``temporal_ds`` (no averaging block straddles two reads), at least one block.
    Peak memory of :func:`ingest` is about this budget plus two (100, H/s, W/s) float32
    write buffers plus Zarr's encoding of one of them, independent of the movie length.
    """
    s = int(spatial_ds)
    per_frame = height * width * itemsize + (height // s) * (width // s) * 4
    n = max(1, budget_bytes // max(per_frame, 1))
    k = int(temporal_ds)
    return max(k, (n // k) * k)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class _DroppedFiller:
    """Replaces output frames that hold no measurement by linear interpolation in time."""

    def __init__(self, batch: int, source: str):
        self.batch = max(1, int(batch))
        self.source = source
        self.last: np.ndarray | None = None
        self.pending = 0
        self.filled: list[int] = []
        self.pos = 0

    def _interpolate(self, nxt: np.ndarray | None) -> Iterator[np.ndarray]:
        p, last = self.pending, self.last
        for b0 in range(0, p, self.batch):
            m = min(self.batch, p - b0)
            if last is None:
                block = np.broadcast_to(nxt, (m, *nxt.shape)).copy()
            elif nxt is None:
                block = np.broadcast_to(last, (m, *last.shape)).copy()
            else:
                w = (np.arange(b0 + 1, b0 + m + 1, dtype=np.float32) / np.float32(p + 1))[:, None, None]
                block = last + w * (nxt - last)
            yield block.astype(np.float32, copy=False)
        self.pending = 0

    def feed(self, frames: np.ndarray, missing: np.ndarray) -> Iterator[np.ndarray]:
        """Yield ``frames`` in order with the ``missing`` ones filled (may lag until the next measured frame)."""
        if not missing.any():
            if self.pending:
                yield from self._interpolate(frames[0])
            self.pos += frames.shape[0]
            self.last = frames[-1].copy()
            yield frames
            return
        edges = np.flatnonzero(np.diff(missing.astype(np.int8))) + 1
        bounds = np.concatenate([[0], edges, [missing.size]])
        for a, b in zip(bounds[:-1], bounds[1:]):
            if missing[a]:
                self.filled.extend(range(self.pos + a, self.pos + b))
                self.pending += int(b - a)
            else:
                if self.pending:
                    yield from self._interpolate(frames[a])
                self.last = frames[b - 1].copy()
                yield frames[a:b]
        self.pos += frames.shape[0]

    def finish(self) -> Iterator[np.ndarray]:
        if self.pending:
            if self.last is None:
                raise InputError(f"{self.source}: every frame is dropped; there is nothing to ingest")
            yield from self._interpolate(None)


class _UnusableFrames:
    """Recorded frames that hold no image: a non-finite pixel (NaN, inf), or every pixel equal (blank).

    They are found while streaming and then handled like damaged frames
    (``downsampling.on_damaged_frames``): interpolated like dropped frames, or the job stops.
    Frame numbers are 0-based indices of the session's time grid.
    """

    def __init__(self, label: str):
        self.label = label
        self.nonfinite: list[int] = []
        self.blank: list[int] = []

    def find(self, chunk: np.ndarray, start: int, dropped: np.ndarray | None) -> np.ndarray:
        """Flag the unusable frames of ``chunk`` (frames ``start``...); ``dropped`` frames are not judged."""
        flat = chunk.reshape(chunk.shape[0], -1)
        lo, hi = flat.min(axis=1), flat.max(axis=1)  # two passes: NaN propagates, inf is an extreme
        nonfinite = ~(np.isfinite(lo) & np.isfinite(hi)) if chunk.dtype.kind == "f" else np.zeros(lo.shape, bool)
        blank = lo == hi
        if dropped is not None:
            nonfinite &= ~dropped
            blank &= ~dropped
        blank &= ~nonfinite
        self.nonfinite += (start + np.flatnonzero(nonfinite)).tolist()
        self.blank += (start + np.flatnonzero(blank)).tolist()
        return nonfinite | blank

    def describe(self) -> str:
        """``"3 frame(s) with NaN or infinite pixels (5-6, 40); 2 blank frame(s) (every pixel equal: 90-91)"``."""
        parts = []
        if self.nonfinite:
            parts.append(f"{len(self.nonfinite)} frame(s) with NaN or infinite pixels ({frame_ranges(self.nonfinite)})")
        if self.blank:
            parts.append(f"{len(self.blank)} blank frame(s) (every pixel equal: {frame_ranges(self.blank)})")
        return "; ".join(parts)

    def check(self, n_recorded: int, policy: str) -> None:
        """Raise when no recorded frame is usable, or when there are any and ``policy`` is 'fail'."""
        n_bad = len(self.nonfinite) + len(self.blank)
        if not n_bad:
            return
        if n_bad >= n_recorded:
            raise InputError(f"{self.label}: no usable frame: all {n_recorded} recorded frames are unusable: "
                             f"{self.describe()}. A black or constant session holds no image; check the "
                             "recording (camera, LED, file export)")
        if policy == "fail":
            raise InputError(f"{self.label}: {self.describe()} (0-based frame numbers of the session). Replace "
                             "the recording, or set downsampling.on_damaged_frames: drop to interpolate them "
                             "like dropped frames")
        log.warning("%s: %s, treated as dropped and interpolated (0-based frame numbers)", self.label, self.describe())


def _dropped_mask(dropped: np.ndarray, start: int, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    lo, hi = np.searchsorted(dropped, [start, start + n])
    mask[dropped[lo:hi] - start] = True
    return mask


def _stream(source: MovieSource, writer: FrameWriter, s: int, k: int, n_read: int,
            label: str, damaged: np.ndarray, resampler: TimeResampler | None = None,
            policy: str = "drop") -> tuple[int, _UnusableFrames, list[np.ndarray], list[int]]:
    """Read, downsample, fill dropped, ``damaged`` (grid indices) and unusable frames, resample
    in time (``resampler``) and hand blocks to ``writer``.

    Returns raw frames read, the unusable frames found (``policy`` applied, see
    :class:`_UnusableFrames`), block timestamps, filled indices (before resampling).
    """
    def emit(blocks):
        for block in blocks:
            for out in (resampler.feed(block) if resampler is not None else (block,)):
                writer.write(out)

    dropped = np.union1d(source.dropped, damaged).astype(np.int64)
    t_claim = source.shape[0]
    filler = _DroppedFiller(MOVIE_CHUNKS[0], label)
    t0 = last_report = time.monotonic()
    n_raw = 0
    unusable = _UnusableFrames(label)
    ts_out: list[np.ndarray] = []
    for start, chunk in source.iter_chunks(n_read):
        n = chunk.shape[0]
        mask = _dropped_mask(dropped, start, n) if dropped.size else None
        lost = unusable.find(chunk, start, mask)
        if mask is not None:
            lost |= mask
        valid = ~lost if lost.any() else None
        times = source.timestamps[start:start + n] if source.timestamps is not None else None
        small, block_times = downsample(chunk, s, k, valid=valid, timestamps=times)
        del chunk
        if block_times is not None:
            ts_out.append(block_times)
        missing = (np.zeros(small.shape[0], bool) if valid is None
                   else np.add.reduceat(valid.astype(np.int32), np.arange(0, n, k)) == 0)
        emit(filler.feed(small, missing))
        n_raw += n
        now = time.monotonic()
        if now - last_report >= 10.0:
            rate = n_raw / (now - t0)
            eta = (t_claim - n_raw) / rate if rate > 0 and t_claim > n_raw else 0.0
            log.info("ingest %s: %d/%d frames, %.0f frames/s, ETA %.0f s", label, n_raw, t_claim, rate, eta)
            last_report = now
    unusable.check(n_raw - int(dropped.size), policy)
    emit(filler.finish())
    return n_raw, unusable, ts_out, filler.filled


def _ds_option(params: Mapping | None, key: str):
    """``params["downsampling"][key]``, else the schema default."""
    ds = (params or {}).get("downsampling") or {}
    return ds[key] if key in ds else _DS[key]


def _resampler(label: str, fps: float | None, target: float | None) -> TimeResampler | None:
    """The resampler to ``downsampling.target_fps`` (None when off or already at that rate)."""
    if not target:
        return None
    if fps is None:
        raise InputError(f"{label}: downsampling.target_fps is {target:g}, but the recording's frame rate is "
                         "unknown (no timestamps, no sheet fps, no general.sf); give the sheet's fps column")
    if abs(fps - float(target)) <= 1e-6 * float(target):
        return None
    log.info("%s: resampled in time from %.4g to %.4g fps (downsampling.target_fps)", label, fps, float(target))
    return TimeResampler(fps, float(target))


def _damaged_frames(source: MovieSource, label: str, policy: str) -> tuple[list[DamagedFrame], np.ndarray]:
    """The source's damaged video frames and their grid indices; raise under ``policy`` 'fail'."""
    if policy not in ("drop", "fail"):
        raise ConfigError(f"downsampling.on_damaged_frames: {policy!r} is not one of 'drop', 'fail'")
    damaged, grid = damaged_grid_frames(source.files, source.grid_positions)
    if not damaged:
        return damaged, grid
    by_file: dict[str, list[int]] = {}
    for d in damaged:
        by_file.setdefault(d.file, []).append(d.frame)
    where = "; ".join(f"{f}: frame(s) {frame_ranges(fr)}" for f, fr in by_file.items())
    first = damaged[0]
    if policy == "fail":
        raise InputError(f"{label}: {len(damaged)} damaged frame(s) (0-based, per file): {where}. The decoder "
                         f"said: {first.message!r} at frame {first.frame} of {first.file}. Replace the files, or set "
                         "downsampling.on_damaged_frames: drop to interpolate them like dropped frames")
    log.warning("%s: %d damaged frame(s) treated as dropped and interpolated (0-based, per file): %s "
                "(decoder: %s)", label, len(damaged), where, first.message)
    return damaged, grid


def _frames_per_read(chunk_frames: int | None, source: MovieSource, temporal_ds: int, spatial_ds: int) -> int:
    """Raw frames read per block: ``chunk_frames`` rounded down to a multiple of ``temporal_ds``
    (at least one), or sized from the frame size when None."""
    if chunk_frames is None:
        _, height, width = source.shape
        return auto_chunk_frames(height, width, np.dtype(source.dtype).itemsize, temporal_ds, spatial_ds)
    n_read = _positive_int(chunk_frames, "chunk_frames")
    return max(temporal_ds, (n_read // temporal_ds) * temporal_ds)


def _source_fps(source: MovieSource, default_fps: float | None, label: str) -> tuple[float | None, str | None]:
    """The raw frame rate (Hz; None when unknown) and where it came from; ``default_fps`` (with a
    warning) when the source has no timing."""
    fps = source.fps
    fps_from = source.metadata.get("fps_from") or ("file timing" if fps else None)
    if fps is None and default_fps:
        fps, fps_from = float(default_fps), "default (general.sf)"
        log.warning("%s: no timestamps and no frame rate given; using the default %.3f fps", label, fps)
    return fps, fps_from


def _output_timestamps(ts_out: list, resampler, n_out: int, temporal_ds: int, fps: float | None
                       ) -> np.ndarray | None:
    """Times (s) of the output frames: the measured ones, or with a resampler the new rate's grid from
    the first measured time (0 when none); None without timing."""
    timestamps = np.concatenate(ts_out) if ts_out else None
    if resampler is not None:
        first = float(timestamps[0]) if timestamps is not None and timestamps.size else 0.0
        timestamps = first + np.arange(n_out) * (resampler.step * temporal_ds / fps)
    return timestamps


def _ingest_attrs(source: MovieSource, label: str, *, fps, fps_from, resampler, spatial_ds: int, temporal_ds: int,
                  n_out: int, n_raw: int, out_shape: tuple[int, int], damaged, filled, unusable, timestamps,
                  n_read: int) -> dict:
    """The attributes of ``ingest.zarr`` (see :func:`ingest`): rates (Hz), frame counts, dropped,
    damaged and interpolated frames, downsampling, raw shape, reader, timing (s) and recording start."""
    meta = source.metadata
    _, height, width = source.shape
    h, w = out_shape
    out_fps = None if fps is None else fps / temporal_ds / (resampler.step if resampler is not None else 1.0)
    return {
        "fps": out_fps,
        "fps_raw": fps,
        "resampled": None if resampler is None else {"from_fps": fps / temporal_ds, "to_fps": out_fps,
                                                     "interpolated_frames_are_before_resampling": True},
        "fps_from": fps_from,
        "n_frames": int(n_out),
        "source_files": [str(p) for p in source.files],
        "file_order": meta.get("file_order"),
        "frames_per_file": meta.get("frames_per_file"),
        "header_frames_per_file": meta.get("header_frames_per_file"),
        "dropped_frames": source.dropped.tolist(),
        "damaged_frames": [{"file": d.file, "frame": d.frame, "message": d.message} for d in damaged],
        "interpolated_frames": filled,
        "gaps": meta.get("gaps", []),
        "spatial_ds": spatial_ds,
        "temporal_ds": temporal_ds,
        "raw_shape": [int(n_raw), int(height), int(width)],
        "raw_dtype": str(source.native_dtype),
        "crop": {"rows_dropped": int(height - h * spatial_ds), "cols_dropped": int(width - w * spatial_ds)},
        "reader": meta.get("reader"),
        "timing": {"source": meta.get("timing_source"),
                   "first_s": None if timestamps is None else float(timestamps[0]),
                   "last_s": None if timestamps is None else float(timestamps[-1]),
                   "start_s": meta.get("start_s")},
        "nonfinite_frames": unusable.nonfinite,
        "blank_frames": unusable.blank,
        "chunk_frames": int(n_read),
        **recording_start(meta, list(source.files), label),
    }


def ingest_source(source: MovieSource, out_path, *, spatial_ds: int = _DS["spatial_ds"],
                  temporal_ds: int = _DS["temporal_ds"],
                  chunk_frames: int | None = None, default_fps: float | None = None,
                  params: Mapping | None = None, inputs=None, on_damaged_frames: str | None = None,
                  target_fps: float | None = None) -> dict:
    """Downsample an open :class:`MovieSource` into an ``ingest.zarr`` store at ``out_path``.

    See :func:`ingest` (this is its body, for sources opened by the caller).
    """
    s = _positive_int(spatial_ds, "downsampling.spatial_ds")
    k = _positive_int(temporal_ds, "downsampling.temporal_ds")
    t_claim, height, width = source.shape
    h, w = downsampled_shape(height, width, s)
    n_read = _frames_per_read(chunk_frames, source, k, s)
    label = str(source.metadata.get("path", source.files[0]))
    fps, fps_from = _source_fps(source, default_fps, label)
    policy = on_damaged_frames or _ds_option(params, "on_damaged_frames")
    damaged, damaged_grid = _damaged_frames(source, label, policy)
    resampler = _resampler(label, None if fps is None else fps / k,
                           target_fps if target_fps is not None else _ds_option(params, "target_fps"))
    out_claim = max(math.ceil(t_claim / k), 1)
    t0 = time.monotonic()
    out_path = Path(out_path)
    with atomic_output(out_path) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        movie = create_movie(group, "movie", (max(out_claim, MOVIE_CHUNKS[0]), h, w))
        writer = FrameWriter(movie, movie.chunks[0])
        try:
            n_raw, unusable, ts_out, filled = _stream(source, writer, s, k, n_read, label, damaged_grid, resampler,
                                                      policy)
            n_out = writer.close()
        finally:
            writer.stop()
        if n_out == 0:
            raise InputError(f"{label}: no frame was read")
        timestamps = _output_timestamps(ts_out, resampler, n_out, k, fps)
        if timestamps is not None:
            create_image(group, "timestamps", timestamps.astype(np.float64))
        attrs = to_jsonable(_ingest_attrs(
            source, label, fps=fps, fps_from=fps_from, resampler=resampler, spatial_ds=s, temporal_ds=k,
            n_out=n_out, n_raw=n_raw, out_shape=(h, w), damaged=damaged, filled=filled, unusable=unusable,
            timestamps=timestamps, n_read=n_read))
        group.attrs.update(attrs)
        set_provenance(group, params, inputs if inputs is not None else [str(p) for p in source.files], step="ingest")
    elapsed = time.monotonic() - t0
    log.info("ingest %s -> %s: %d raw frames -> %d frames of %dx%d in %.1f s (%.0f frames/s)", label, out_path,
             n_raw, n_out, h, w, elapsed, n_raw / max(elapsed, 1e-9))
    return attrs


def ingest(source_path: str | os.PathLike, out_path: str | os.PathLike, *, spatial_ds: int = _DS["spatial_ds"],
           temporal_ds: int = _DS["temporal_ds"], file_extension: str = _DS["file_extension"], fps: float | None = None,
           chunk_frames: int | None = None, params: Mapping | None = None,
           default_fps: float | None = None, on_damaged_frames: str | None = None,
           target_fps: float | None = None) -> dict:
    """Read a recording, downsample it and write ``ingest.zarr``.

    Parameters
    ----------
    source_path : path-like
        Anything :func:`califlow.io.open_movie` reads (file or chunk folder).
    out_path : path-like
        The store to write (replaced atomically; nothing is left on error).
    spatial_ds, temporal_ds : int
        Block-mean factors (:mod:`califlow.preprocess.downsample`).
    file_extension : str
        Chunk-file extension for folders.
    fps : float, optional
        Frame rate from the sessions sheet (used when the recording has no timestamps).
    chunk_frames : int, optional
        Raw frames per read (rounded down to a multiple of ``temporal_ds``); default from a
        64 MiB read budget (:func:`auto_chunk_frames`).
    params : mapping, optional
        Resolved configuration, recorded as provenance.
    default_fps : float, optional
        Frame rate when neither the recording nor ``fps`` gives one (config ``general.sf``;
        taken from ``params["general"]["sf"]`` when not given).
    on_damaged_frames : {"drop", "fail"}, optional
        What to do with video frames the decoder reports damaged (:mod:`califlow.io.damage`);
        default ``params["downsampling"]["on_damaged_frames"]``, else "drop". Dropped ones are
        interpolated like dropped frames and listed in the attrs ``damaged_frames``.
    target_fps : float, optional
        Resample the session in time to this rate after ``temporal_ds``
        (:class:`califlow.preprocess.resample.TimeResampler`); default
        ``params["downsampling"]["target_fps"]`` (None: keep the recording's rate).

    Returns
    -------
    dict
        The store's attributes (fps, n_frames, frames_per_file, dropped_frames...).
    """
    if default_fps is None and params is not None:
        default_fps = (params.get("general") or {}).get("sf")
    source = open_movie(source_path, file_extension=file_extension, fps=fps)
    return ingest_source(source, out_path, spatial_ds=spatial_ds, temporal_ds=temporal_ds,
                         chunk_frames=chunk_frames, default_fps=default_fps, params=params,
                         inputs=[str(source_path)], on_damaged_frames=on_damaged_frames, target_fps=target_fps)
