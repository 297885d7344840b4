"""Inscopix ``.isxd`` files in pure Python: movies (read, and a small writer), cell sets, event sets.

Layout (interop dossier §1.2): ``payload | JSON footer (UTF-8) | b"\\0" | uint64 LE length of
the JSON``.

* Movie (``type`` 0): the recorded frames only, C-order (rows, cols), dtype from
  ``dataType`` (0 uint16, 1 float32, 2 uint8). Frames listed in ``timingInfo.dropped``,
  ``cropped`` (inclusive [first, last] ranges) or ``blank`` are **not stored**; they are
  returned as NaN frames at their place in time (see :mod:`califlow.io.sources`). With
  ``hasFrameHeaderFooter`` (nVista 3 raw) every stored frame has 2 header and 2 footer
  rows, which are stripped.
* CellSet (``type`` 1): per cell a float32 (H*W) image then a float32 (numTimes) trace;
  statuses 0 accepted, 1 undecided, 2 rejected.
* EventSet (``type`` 5): per cell, 20-byte events ``uint64`` µs offset from the start,
  ``uint64`` cell index, ``float32`` amplitude.

No ``isx`` (CC BY-NC) code is used; the tests cross-check with it when it is installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from califlow.errors import InputError
from califlow.io.sources import FrameReader, FrameStream, MovieSource
from califlow.io.store import atomic_output

__all__ = [
    "Timing",
    "CellSet",
    "EventSet",
    "read_footer",
    "read_isxd_movie",
    "IsxdMovieReader",
    "write_isxd_movie",
    "read_cellset",
    "write_cellset",
    "read_eventset",
    "write_eventset",
]

MOVIE_DTYPES = {0: np.dtype("<u2"), 1: np.dtype("<f4"), 2: np.dtype("u1")}
STATUS_CODES = {"accepted": 0, "undecided": 1, "rejected": 2}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
EVENT_DTYPE = np.dtype([("offset_us", "<u8"), ("cell", "<u8"), ("amplitude", "<f4")])  # 20 bytes, packed
HEADER_ROWS = 2
FOOTER_ROWS = 2
PRODUCER = {"name": "califlow", "version": [0, 1, 0]}
DEFAULT_PIXEL_SIZE_UM = 3


# --------------------------------------------------------------------------- footer
def _rational(value: dict, what: str, path: Path) -> float:
    try:
        return float(value["num"]) / float(value["den"])
    except (KeyError, TypeError, ZeroDivisionError) as exc:
        raise InputError(f"{path}: footer field {what} is not a rational {{num, den}}: {value!r}") from exc


def _to_rational(x: float, max_den: int = 10**9) -> dict:
    f = Fraction(float(x)).limit_denominator(max_den)
    return {"num": f.numerator, "den": f.denominator}


def _time_rational(seconds: float) -> dict:
    """A time in seconds as whole microseconds (exact for any epoch time)."""
    return {"num": int(round(float(seconds) * 1e6)), "den": 1000000}


def read_footer(path: str | os.PathLike) -> tuple[dict, int]:
    """The JSON footer of an ``.isxd`` file and the payload size in bytes.

    Raises :class:`InputError` when the file has no valid footer (truncated or not isxd).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: isxd file not found")
    size = path.stat().st_size
    if size < 9:
        raise InputError(f"{path}: too short ({size} bytes) to be an isxd file")
    with open(path, "rb") as fh:
        fh.seek(size - 8)
        n = int.from_bytes(fh.read(8), "little")
        if n <= 0 or n + 9 > size:
            raise InputError(f"{path}: no isxd footer (its length field says {n} bytes in a {size}-byte "
                             f"file); the file is truncated or not an Inscopix file")
        fh.seek(size - 9 - n)
        raw = fh.read(n + 1)
    if raw[-1:] != b"\0":
        raise InputError(f"{path}: the isxd footer is not terminated by a NUL byte; the file is damaged")
    try:
        footer = json.loads(raw[:-1].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: the isxd footer is not valid JSON ({exc}); the file is damaged") from exc
    if not isinstance(footer, dict) or "type" not in footer:
        raise InputError(f"{path}: the isxd footer has no 'type'")
    return footer, size - 9 - n


def _write_with_footer(path: str | os.PathLike, chunks: Sequence[bytes | np.ndarray], footer: dict) -> Path:
    """Write ``chunks`` (arrays in C order, or bytes), the JSON ``footer`` and its trailer
    (a NUL byte and the footer's size as uint64 little-endian) atomically to ``path``."""
    path = Path(path)
    text = json.dumps(footer, indent=4).encode("utf-8")
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        for c in chunks:
            fh.write(c.tobytes() if isinstance(c, np.ndarray) else c)
        fh.write(text)
        fh.write(b"\0")
        fh.write(len(text).to_bytes(8, "little"))
    return path


# --------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Sampling of a movie, cell set or event set.

    Attributes
    ----------
    num_samples : int
        Samples on the time grid (recorded + dropped + cropped + blank).
    period_s : float
        Sampling period, seconds.
    start_s : float
        Start time, seconds since the Unix epoch.
    dropped : list of int
        Grid indices of dropped frames.
    cropped : list of (int, int)
        Inclusive [first, last] index ranges removed by cropping.
    blank : list of int
        Grid indices of blank frames.
    """

    num_samples: int
    period_s: float
    start_s: float = 0.0
    dropped: list = field(default_factory=list)
    cropped: list = field(default_factory=list)
    blank: list = field(default_factory=list)

    def invalid_indices(self) -> np.ndarray:
        """Sorted grid indices that hold no recorded sample (dropped, cropped, blank)."""
        idx = [np.asarray(self.dropped, np.int64), np.asarray(self.blank, np.int64)]
        idx += [np.arange(a, b + 1, dtype=np.int64) for a, b in self.cropped]
        return np.unique(np.concatenate(idx)) if idx else np.zeros(0, np.int64)

    def offsets_us(self) -> np.ndarray:
        """Offset of every grid sample from the start, whole microseconds (uint64)."""
        return np.rint(np.arange(self.num_samples) * self.period_s * 1e6).astype(np.uint64)

    def to_footer(self) -> dict:
        return {"blank": [int(i) for i in self.blank],
                "cropped": [[int(a), int(b)] for a, b in self.cropped],
                "dropped": [int(i) for i in self.dropped],
                "numTimes": int(self.num_samples),
                "period": _to_rational(self.period_s),
                "start": {"secsSinceEpoch": _time_rational(self.start_s), "utcOffset": 0}}

    @classmethod
    def from_footer(cls, info: dict, path: Path) -> Timing:
        try:
            cropped = []
            for c in info.get("cropped", []) or []:
                if isinstance(c, dict):
                    cropped.append((int(c["first"]), int(c["last"])))
                elif isinstance(c, (list, tuple)) and len(c) == 2:
                    cropped.append((int(c[0]), int(c[1])))
                else:
                    cropped.append((int(c), int(c)))
            return cls(num_samples=int(info["numTimes"]), period_s=_rational(info["period"], "timingInfo.period", path),
                       start_s=_rational(info["start"]["secsSinceEpoch"], "timingInfo.start", path),
                       dropped=[int(i) for i in info.get("dropped", []) or []], cropped=cropped,
                       blank=[int(i) for i in info.get("blank", []) or []])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: the isxd footer's timingInfo is incomplete ({exc!r})") from exc


def _spacing_from_footer(info: dict, path: Path) -> tuple[int, int]:
    try:
        return int(info["numPixels"]["y"]), int(info["numPixels"]["x"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: the isxd footer's spacingInfo is incomplete ({exc!r})") from exc


def _spacing_footer(spacing: tuple[int, int], spacing_info: dict | None) -> dict:
    h, w = (int(s) for s in spacing)
    out = {"numPixels": {"x": w, "y": h},
           "pixelSize": {"x": {"den": 1, "num": DEFAULT_PIXEL_SIZE_UM}, "y": {"den": 1, "num": DEFAULT_PIXEL_SIZE_UM}},
           "topLeft": {"x": {"den": 1, "num": 0}, "y": {"den": 1, "num": 0}}}
    if spacing_info:
        out.update({k: v for k, v in spacing_info.items() if k != "numPixels"})
    return out


def _expect_type(footer: dict, type_code: int, what: str, path: Path) -> None:
    if footer.get("type") != type_code:
        raise InputError(f"{path}: is an isxd file of type {footer.get('type')}, not a {what} (type {type_code})")


# --------------------------------------------------------------------------- movies
class _IsxdStream(FrameStream):
    def __init__(self, reader: IsxdMovieReader, start: int):
        self.reader = reader
        self.pos = int(start)
        r = reader
        self.mm = np.memmap(r.path, dtype=r.file_dtype, mode="r", offset=0,
                            shape=(r.n_claimed, r.stored_rows, r.width)) if r.n_claimed else None

    def read_into(self, out: np.ndarray) -> int:
        r = self.reader
        stop = min(self.pos + out.shape[0], r.n_claimed)
        k = max(stop - self.pos, 0)
        if k:
            rows = slice(HEADER_ROWS, HEADER_ROWS + r.height) if r.header_footer else slice(None)
            out[:k] = self.mm[self.pos:stop, rows, :]
        self.pos = stop
        return k

    def close(self) -> None:
        self.mm = None


class IsxdMovieReader(FrameReader):
    """The recorded frames of an ``.isxd`` movie (memory-mapped), in payload order."""

    kind = "isxd"

    def __init__(self, path):
        self.path = Path(path)
        footer, payload = read_footer(self.path)
        _expect_type(footer, 0, "movie", self.path)
        self.footer = footer
        self.timing = Timing.from_footer(footer.get("timingInfo", {}), self.path)
        self.height, self.width = _spacing_from_footer(footer.get("spacingInfo", {}), self.path)
        code = footer.get("dataType")
        if code not in MOVIE_DTYPES:
            raise InputError(f"{self.path}: unsupported isxd dataType {code!r} (expected 0 uint16, 1 float32, 2 uint8)")
        self.file_dtype = MOVIE_DTYPES[code]
        self.native_dtype = self.dtype = np.dtype(self.file_dtype.newbyteorder("="))
        self.header_footer = bool(footer.get("hasFrameHeaderFooter", False))
        self.stored_rows = self.height + (HEADER_ROWS + FOOTER_ROWS if self.header_footer else 0)
        self.invalid = self.timing.invalid_indices()
        if self.invalid.size and (self.invalid[0] < 0 or self.invalid[-1] >= self.timing.num_samples):
            raise InputError(f"{self.path}: dropped/cropped/blank index {int(self.invalid[-1])} is outside the "
                             f"{self.timing.num_samples} frames of the movie")
        n_valid = self.timing.num_samples - self.invalid.size
        frame_bytes = self.stored_rows * self.width * self.file_dtype.itemsize
        if payload != n_valid * frame_bytes:
            complete = payload // frame_bytes if frame_bytes else 0
            if payload < n_valid * frame_bytes:
                raise InputError(f"{self.path}: the movie payload holds {payload} bytes, {complete} whole frames, "
                                 f"but the footer lists {n_valid} recorded frames; the file is truncated at recorded "
                                 f"frame {complete}")
            raise InputError(f"{self.path}: the movie payload holds {payload} bytes but {n_valid} recorded frames of "
                             f"{self.stored_rows}x{self.width} {self.file_dtype} need {n_valid * frame_bytes}; "
                             f"the footer does not describe this file")
        self.n_claimed = int(n_valid)
        self.container_fps = 1.0 / self.timing.period_s if self.timing.period_s > 0 else None

    def stream(self, start: int = 0) -> FrameStream:
        return _IsxdStream(self, start)

    def describe(self) -> dict:
        out = super().describe()
        out.update(has_frame_header_footer=self.header_footer, num_times=self.timing.num_samples,
                   period_s=self.timing.period_s, start_s=self.timing.start_s, dropped=self.timing.dropped,
                   cropped=[list(c) for c in self.timing.cropped], blank=self.timing.blank,
                   extra_properties=self.footer.get("extraProperties"))
        return out


def read_isxd_movie(path, fps: float | None = None) -> MovieSource:
    """An ``.isxd`` movie as a :class:`MovieSource` on its full time grid.

    Frames not stored (dropped, cropped, blank) come back as NaN frames in float32 and are
    listed in ``source.dropped``; time comes from the footer's period (``fps`` is used only
    when the period is 0).
    """
    reader = IsxdMovieReader(path)
    t = reader.timing
    valid = np.setdiff1d(np.arange(t.num_samples), reader.invalid, assume_unique=True)
    rate = reader.container_fps or (float(fps) if fps else None)
    timestamps = np.arange(t.num_samples) * t.period_s if t.period_s > 0 else None
    meta = {"reader": "isxd", "timing_source": "isxd footer", "start_s": t.start_s, "files": [reader.describe()],
            "fps_from": "isxd period" if reader.container_fps else ("argument" if rate else None),
            "dropped_kind": {"dropped": t.dropped, "cropped": [list(c) for c in t.cropped], "blank": t.blank}}
    return MovieSource([reader], timestamps=timestamps, fps=rate, grid_positions=valid, n_grid=t.num_samples,
                       expected_frames=int(valid.size), expected_per_file=[int(valid.size)],
                       expected_what="the isxd footer", metadata=meta)


def write_isxd_movie(path, movie: np.ndarray, *, period_s: float, start_s: float = 0.0,
                     dropped: Sequence[int] = (), frame_header_footer: np.ndarray | None = None,
                     extra_properties: dict | None = None) -> Path:
    """Write an in-memory movie as ``.isxd`` (for tests and small exports).

    Parameters
    ----------
    movie : ndarray (T, H, W) of uint16, float32 or uint8
        One frame per grid sample; frames at ``dropped`` indices are not stored.
    period_s, start_s : float
        Sampling period (s) and start (s since the epoch).
    dropped : sequence of int
        Grid indices of dropped frames.
    frame_header_footer : ndarray (2 + 2, W) of uint16, optional
        Rows stored above (first two) and below (last two) every frame, as nVista 3
        acquisition files do (sets ``hasFrameHeaderFooter``; uint16 movies only).
    """
    movie = np.asarray(movie)
    codes = {v.newbyteorder("="): k for k, v in MOVIE_DTYPES.items()}
    dt = np.dtype(movie.dtype).newbyteorder("=")
    if movie.ndim != 3 or dt not in codes:
        raise ValueError("write_isxd_movie: need a (T, H, W) uint16/float32/uint8 array, "
                         f"got {movie.shape} {movie.dtype}")
    t, h, w = movie.shape
    timing = Timing(num_samples=t, period_s=period_s, start_s=start_s, dropped=sorted(int(i) for i in dropped))
    keep = np.setdiff1d(np.arange(t), timing.invalid_indices())
    stored = movie[keep].astype(MOVIE_DTYPES[codes[dt]], copy=False)
    if frame_header_footer is not None:
        hf = np.asarray(frame_header_footer)
        if dt != np.dtype(np.uint16) or hf.shape != (HEADER_ROWS + FOOTER_ROWS, w):
            raise ValueError("write_isxd_movie: frame_header_footer needs a uint16 movie and shape (4, W)")
        rows = np.broadcast_to(hf.astype("<u2"), (keep.size, *hf.shape))
        stored = np.concatenate([rows[:, :HEADER_ROWS], stored, rows[:, HEADER_ROWS:]], axis=1)
    footer = {"dataType": codes[dt], "extraProperties": extra_properties, "fileVersion": 1,
              "hasFrameHeaderFooter": frame_header_footer is not None, "producer": PRODUCER,
              "spacingInfo": _spacing_footer((h, w), None), "timingInfo": timing.to_footer(), "type": 0}
    return _write_with_footer(path, [stored], footer)


# --------------------------------------------------------------------------- cell sets
@dataclass
class CellSet:
    """Footprints and traces of K cells (Inscopix cell set).

    Attributes
    ----------
    images : ndarray float32 (K, H, W)
    traces : ndarray float32 (K, T); NaN at dropped samples in Inscopix files
    names : list of str
    statuses : list of str, 'accepted' | 'undecided' | 'rejected'
    timing : Timing
    spacing : (H, W)
    extra_properties : dict
        The footer's ``extraProperties`` (acquisition / processing metadata), copied on write.
    spacing_info : dict, optional
        Full ``spacingInfo`` (pixel size, top-left) to keep on round trips.
    """

    images: np.ndarray
    traces: np.ndarray
    names: list
    statuses: list
    timing: Timing
    spacing: tuple
    extra_properties: dict = field(default_factory=dict)
    spacing_info: dict | None = None


def read_cellset(path) -> CellSet:
    """Read an Inscopix cell set (``type`` 1) ``.isxd``."""
    path = Path(path)
    footer, payload = read_footer(path)
    _expect_type(footer, 1, "cell set", path)
    timing = Timing.from_footer(footer.get("timingInfo", {}), path)
    h, w = _spacing_from_footer(footer.get("spacingInfo", {}), path)
    names = list(footer.get("CellNames", []))
    k = len(names)
    per_cell = h * w + timing.num_samples
    if payload != k * per_cell * 4:
        raise InputError(f"{path}: the cell-set payload holds {payload} bytes but {k} cells of {h}x{w} pixels and "
                         f"{timing.num_samples} samples need {k * per_cell * 4}; the file is truncated or damaged")
    codes = footer.get("CellStatuses", [1] * k)
    if len(codes) != k or any(c not in STATUS_NAMES for c in codes):
        raise InputError(f"{path}: CellStatuses {codes!r} do not give one status 0/1/2 per cell")
    data = np.fromfile(path, dtype="<f4", count=k * per_cell).reshape(k, per_cell)
    return CellSet(images=data[:, :h * w].reshape(k, h, w).astype(np.float32),
                   traces=data[:, h * w:].astype(np.float32), names=names,
                   statuses=[STATUS_NAMES[c] for c in codes], timing=timing, spacing=(h, w),
                   extra_properties=footer.get("extraProperties") or {},
                   spacing_info=footer.get("spacingInfo"))


def write_cellset(path, cellset: CellSet) -> Path:
    """Write ``cellset`` as an Inscopix cell set readable by IDPS / ``isx``."""
    images = np.asarray(cellset.images, np.float32)
    traces = np.asarray(cellset.traces, np.float32)
    k = images.shape[0]
    h, w = (int(s) for s in cellset.spacing)
    if images.shape != (k, h, w) or traces.shape != (k, cellset.timing.num_samples):
        raise ValueError(f"write_cellset: images {images.shape} / traces {traces.shape} do not match spacing "
                         f"{(h, w)} and {cellset.timing.num_samples} samples")
    if len(cellset.names) != k or len(cellset.statuses) != k:
        raise ValueError("write_cellset: need one name and one status per cell")
    bad = [s for s in cellset.statuses if s not in STATUS_CODES]
    if bad:
        raise ValueError(f"write_cellset: unknown status {bad[0]!r} (use accepted, undecided, rejected)")
    payload = np.concatenate([images.reshape(k, h * w), traces], axis=1).astype("<f4")
    footer = {"CellActivity": [True] * k, "CellColors": [4294967295] * k, "CellNames": [str(n) for n in cellset.names],
              "CellStatuses": [STATUS_CODES[s] for s in cellset.statuses], "CentroidDistances": [], "Matches": [],
              "PairScores": [], "SizeGlobalCS": 0, "cellMetrics": None, "dataType": "float", "efocusValues": [0],
              "extraProperties": cellset.extra_properties or None, "fileVersion": 5, "isRoiSet": False,
              "producer": PRODUCER, "spacingInfo": _spacing_footer((h, w), cellset.spacing_info),
              "timingInfo": cellset.timing.to_footer(), "type": 1}
    return _write_with_footer(path, [payload], footer)


# --------------------------------------------------------------------------- event sets
@dataclass
class EventSet:
    """Sparse events per cell (Inscopix event set).

    Attributes
    ----------
    names : list of str
    offsets_us : list of uint64 arrays, µs since ``timing.start_s``, one array per cell
    amplitudes : list of float32 arrays, one per cell
    timing : Timing (event sets do not store dropped frames)
    extra_properties : dict
    """

    names: list
    offsets_us: list
    amplitudes: list
    timing: Timing
    extra_properties: dict = field(default_factory=dict)


def read_eventset(path) -> EventSet:
    """Read an Inscopix event set (``type`` 5) ``.isxd``."""
    path = Path(path)
    footer, payload = read_footer(path)
    _expect_type(footer, 5, "event set", path)
    names = list(footer.get("channel list", []))
    counts = [int(c) for c in footer.get("numSamples", [])]
    if len(counts) != len(names):
        raise InputError(f"{path}: numSamples has {len(counts)} entries for {len(names)} cells")
    total = sum(counts)
    if payload != total * EVENT_DTYPE.itemsize:
        raise InputError(f"{path}: the event payload holds {payload} bytes but {total} events need "
                         f"{total * EVENT_DTYPE.itemsize}; the file is truncated or damaged")
    events = np.fromfile(path, dtype=EVENT_DTYPE, count=total)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    offsets, amps = [], []
    for k in range(len(names)):
        ev = events[bounds[k]:bounds[k + 1]]
        if ev.size and np.any(ev["cell"] != k):
            raise InputError(f"{path}: events of cell {k} ({names[k]}) carry cell index {int(ev['cell'][0])}")
        offsets.append(ev["offset_us"].astype(np.uint64))
        amps.append(ev["amplitude"].astype(np.float32))
    steps = footer.get("signalSteps") or []
    times = footer.get("global times") or []
    period = _rational(steps[0], "signalSteps", path) if steps else 0.0
    start = _rational(times[0]["secsSinceEpoch"], "global times", path) if times else 0.0
    end = _rational(times[1]["secsSinceEpoch"], "global times", path) if len(times) > 1 else start
    n = int(round((end - start) / period)) if period > 0 else 0
    return EventSet(names=names, offsets_us=offsets, amplitudes=amps,
                    timing=Timing(num_samples=n, period_s=period, start_s=start),
                    extra_properties=footer.get("extraProperties") or {})


def write_eventset(path, eventset: EventSet) -> Path:
    """Write ``eventset`` as an Inscopix event set readable by IDPS / ``isx``."""
    k = len(eventset.names)
    if len(eventset.offsets_us) != k or len(eventset.amplitudes) != k:
        raise ValueError("write_eventset: need one offsets array and one amplitudes array per cell")
    blocks, counts, firsts = [], [], []
    for i in range(k):
        off = np.asarray(eventset.offsets_us[i], dtype=np.uint64).ravel()
        amp = np.asarray(eventset.amplitudes[i], dtype=np.float32).ravel()
        if off.shape != amp.shape:
            raise ValueError(f"write_eventset: cell {i} has {off.size} offsets but {amp.size} amplitudes")
        ev = np.empty(off.size, EVENT_DTYPE)
        ev["offset_us"], ev["cell"], ev["amplitude"] = off, i, amp
        blocks.append(ev)
        counts.append(int(off.size))
        firsts.append(int(off[0]) if off.size else 0)
    t = eventset.timing
    step = _to_rational(t.period_s)
    start = {"secsSinceEpoch": _time_rational(t.start_s), "utcOffset": 0}
    end = {"secsSinceEpoch": _time_rational(t.start_s + t.num_samples * t.period_s), "utcOffset": 0}
    footer: dict[str, Any] = {"channel list": [str(n) for n in eventset.names],
                              "extraProperties": eventset.extra_properties or None, "fileType": 1,
                              "fileVersion": 2, "global times": [start, end], "metrics": None,
                              "numSamples": counts, "producer": PRODUCER, "signalSteps": [step] * k,
                              "signalTypes": [0] * k, "startOffsets": firsts, "type": 5}
    return _write_with_footer(path, blocks, footer)
