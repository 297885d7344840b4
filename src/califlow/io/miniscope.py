"""UCLA Miniscope recordings: V4 device folders and V3 session folders.

* **V4** (Miniscope-DAQ-QT-Software): ``0.avi, 1.avi, ...`` (8-bit FFV1 or GREY,
  ``framesPerFile`` frames each, the last shorter), ``metaData.json`` and ``timeStamps.csv``
  with columns ``Frame Number,Time Stamp (ms),Buffer Index[,DAQ Frame Number]``. The AVI
  header always says 60 fps and is never used; time comes from ``timeStamps.csv``. Dropped
  frames are jumps of ``DAQ Frame Number`` when the column exists, else timestamp gaps.
* **V3** (Miniscope_DAQ_Software): ``msCam1.avi ... msCamN.avi`` (1-based) and
  ``timestamp.dat`` (tab separated ``camNum frameNum sysClock buffer`` for every camera).
  The miniscope's ``camNum`` is the one whose row count matches the msCam files' frame
  count. The first ``sysClock`` of a V3 file is not a valid time (a known quirk of that
  software); it is replaced by the second minus the median interval.

Behaviour cameras (``BehavCam*``, ``behavCam*.avi``) are ignored.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from califlow.errors import InputError
from califlow.io.sources import MovieSource, natural_sorted, timed_source
from califlow.io.video import VideoReader

__all__ = [
    "V4_TIMESTAMPS",
    "V3_TIMESTAMPS",
    "check_chunk_numbering",
    "is_miniscope_v4",
    "is_miniscope_v3",
    "miniscope_device_folder",
    "open_miniscope_v4",
    "open_miniscope_v3",
    "read_v4_timestamps",
    "read_v3_timestamps",
]

log = logging.getLogger(__name__)

V4_TIMESTAMPS = "timeStamps.csv"
V4_METADATA = "metaData.json"
V3_TIMESTAMPS = "timestamp.dat"
_V4_CHUNK = re.compile(r"(\d+)\.avi", re.IGNORECASE)
_V3_CHUNK = re.compile(r"msCam(\d+)\.avi", re.IGNORECASE)


def _chunks(folder: Path, pattern: re.Pattern) -> list[Path]:
    return natural_sorted([p for p in folder.iterdir() if p.is_file() and pattern.fullmatch(p.name)])


def is_miniscope_v4(folder: Path) -> bool:
    """True for a V4 device folder (numbered AVIs next to ``timeStamps.csv`` or ``metaData.json``)."""
    return bool(_chunks(folder, _V4_CHUNK)) and ((folder / V4_TIMESTAMPS).is_file() or (folder / V4_METADATA).is_file())


def is_miniscope_v3(folder: Path) -> bool:
    """True for a V3 session folder (``msCam*.avi``)."""
    return bool(_chunks(folder, _V3_CHUNK))


def miniscope_device_folder(folder: Path) -> Path | None:
    """The imaging device folder inside a V4 session folder (``<session>/Miniscope/``), if any.

    Sub-folders named like behaviour cameras, or whose ``metaData.json`` says so, are skipped.
    Several imaging devices (two miniscopes) raise :class:`InputError`.
    """
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if "behav" in sub.name.lower() or not is_miniscope_v4(sub):
            continue
        meta = _read_metadata(sub)
        kind = str(meta.get("deviceType", "")).lower()
        if "behav" in kind or kind.startswith("webcam") or "camera" in kind:
            continue
        found.append(sub)
    if len(found) > 1:
        raise InputError(f"{folder}: holds several Miniscope devices {[p.name for p in found]}; "
                         f"point the sessions sheet at one of them")
    return found[0] if found else None


def _read_metadata(folder: Path) -> dict:
    path = folder / V4_METADATA
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


def _numbered(files: list[Path], pattern: re.Pattern, first: int, folder: Path) -> None:
    nums = [int(pattern.fullmatch(p.name).group(1)) for p in files]
    expected = list(range(first, first + len(nums)))
    if nums != expected:
        missing = sorted(set(range(first, max(nums) + 1)) - set(nums))
        raise InputError(f"{folder}: chunk files are not numbered {first}..{first + len(nums) - 1} "
                         f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"found {[p.name for p in files][:8]}); "
                         f"a missing chunk would shift every later frame in time")


def check_chunk_numbering(folder: Path) -> None:
    """Raise :class:`InputError` when a V4 (``0.avi``...) or V3 (``msCam1.avi``...) folder misses a chunk.

    Cheap (file names only): run before any job, so a missing middle chunk stops the run up front.
    """
    folder = Path(folder)
    if is_miniscope_v4(folder):
        _numbered(_chunks(folder, _V4_CHUNK), _V4_CHUNK, 0, folder)
    elif is_miniscope_v3(folder):
        _numbered(_chunks(folder, _V3_CHUNK), _V3_CHUNK, 1, folder)


def read_v4_timestamps(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Seconds since the first frame, and the DAQ frame counter (or None), from ``timeStamps.csv``."""
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be parsed as CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if "Time Stamp (ms)" not in df.columns:
        raise InputError(f"{path}: no 'Time Stamp (ms)' column (columns: {list(df.columns)}); expected "
                         f"'Frame Number,Time Stamp (ms),Buffer Index[,DAQ Frame Number]'")
    if len(df) == 0:
        raise InputError(f"{path}: no timestamp rows (zero frames)")
    t = pd.to_numeric(df["Time Stamp (ms)"], errors="coerce").to_numpy(np.float64)
    if np.isnan(t).any():
        row = int(np.flatnonzero(np.isnan(t))[0])
        raise InputError(f"{path}: row {row + 2} (frame {row}) has no numeric time stamp")
    if "Frame Number" in df.columns:
        fn = pd.to_numeric(df["Frame Number"], errors="coerce").to_numpy(np.float64)
        step = np.diff(fn)
        if np.isnan(fn).any() or np.any(step != 1):
            row = int(np.flatnonzero(np.isnan(fn) | np.concatenate([[False], step != 1]))[0])
            raise InputError(f"{path}: 'Frame Number' is not consecutive at row {row + 2} (frame {row})")
    daq = None
    if "DAQ Frame Number" in df.columns:
        daq = pd.to_numeric(df["DAQ Frame Number"], errors="coerce").to_numpy(np.float64)
        if np.isnan(daq).any():
            row = int(np.flatnonzero(np.isnan(daq))[0])
            raise InputError(f"{path}: row {row + 2} (frame {row}) has no numeric DAQ Frame Number")
        daq = daq.astype(np.int64)
    return (t - t[0]) / 1e3, daq


def read_v3_timestamps(path: Path, n_frames_claimed: int | None) -> tuple[np.ndarray, int]:
    """Seconds since the first frame and the camNum used, from a V3 ``timestamp.dat``."""
    try:
        df = pd.read_csv(path, sep="\t", skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be parsed as a tab-separated table ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    need = {"camNum", "frameNum", "sysClock"}
    if not need <= set(df.columns):
        raise InputError(f"{path}: needs columns camNum, frameNum, sysClock (found {list(df.columns)})")
    counts = df.groupby("camNum").size()
    cams = [int(c) for c in counts.index]
    match = [c for c in cams if n_frames_claimed is not None and counts[c] == n_frames_claimed]
    if match:
        cam = match[0]
    elif len(cams) == 1:
        cam = cams[0]
    else:
        raise InputError(f"{path}: cannot tell the miniscope's camNum: the msCam files hold {n_frames_claimed} "
                         f"frames but the cameras have {dict(zip(cams, counts.tolist()))} rows")
    sub = df[df["camNum"] == cam]
    t = pd.to_numeric(sub["sysClock"], errors="coerce").to_numpy(np.float64)
    if np.isnan(t).any():
        first = int(np.flatnonzero(np.isnan(t))[0])
        raise InputError(f"{path}: camNum {cam} has a non-numeric sysClock at frame {first}")
    if t.size >= 3:
        median = float(np.median(np.diff(t[1:])))
        t[0] = t[1] - median  # the first sysClock of a V3 recording is not a frame time
    return (t - t[0]) / 1e3, cam


def _fps_from_metadata(meta: dict) -> float | None:
    value = meta.get("frameRate")
    if value is None:
        return None
    m = re.match(r"\s*([0-9.]+)", str(value))
    return float(m.group(1)) if m else None


def _numbered_chunks(folder: Path, pattern, first: int, missing: str) -> list[Path]:
    """The video chunks of ``folder`` matching ``pattern``, checked to be numbered from
    ``first`` without gaps; InputError ``missing`` when there are none."""
    files = _chunks(folder, pattern)
    if not files:
        raise InputError(f"{folder}: {missing}")
    _numbered(files, pattern, first, folder)
    return files


def _chunk_readers(folder: Path, files: list[Path], reader: str, **extra) -> tuple[list, dict]:
    """A :class:`VideoReader` per chunk (container fps not trusted) and the source metadata
    (``reader``, ``folder``, ``file_order``, the ``extra`` items, ``files``)."""
    readers = [VideoReader(p, trust_container_fps=False) for p in files]
    meta = {"reader": reader, "folder": str(folder), "file_order": [p.name for p in files], **extra,
            "files": [r.describe() for r in readers]}
    return readers, meta


def open_miniscope_v4(folder, fps: float | None = None) -> MovieSource:
    """A Miniscope V4 device folder as a :class:`MovieSource` (timed by ``timeStamps.csv``)."""
    folder = Path(folder)
    files = _numbered_chunks(folder, _V4_CHUNK, 0, "no numbered .avi files (0.avi, 1.avi, ...)")
    meta_json = _read_metadata(folder)
    kind = str(meta_json.get("deviceType", ""))
    if "behav" in kind.lower():
        log.warning("%s: metaData.json says deviceType %r (a behaviour camera), reading it anyway", folder, kind)
    per_file = meta_json.get("framesPerFile")
    expected = [int(per_file)] * (len(files) - 1) + [None] if per_file else None
    device = {k: meta_json.get(k) for k in ("deviceName", "deviceType", "framesPerFile", "frameRate",
                                            "compression", "ROI") if k in meta_json}
    readers, meta = _chunk_readers(folder, files, "miniscope_v4", device=device)
    ts_path = folder / V4_TIMESTAMPS
    if ts_path.is_file():
        times, daq = read_v4_timestamps(ts_path)
        meta["dropped_from"] = "DAQ Frame Number" if daq is not None else "timestamp gaps"
        return timed_source(readers, times, source=str(ts_path), fps=fps, frame_counter=daq,
                            expected_per_file=expected, per_file_what=f"framesPerFile in {folder / V4_METADATA}",
                            metadata=meta)
    rate = float(fps) if fps else _fps_from_metadata(meta_json)
    log.warning("%s: no %s; frame rate %s from %s, dropped frames cannot be detected", folder, V4_TIMESTAMPS,
                rate, "the fps argument" if fps else "metaData.json frameRate")
    meta["fps_from"] = "argument" if fps else ("metaData.json" if rate else None)
    return MovieSource(readers, fps=rate, expected_per_file=expected, expected_what="metaData.json framesPerFile",
                       metadata=meta)


def open_miniscope_v3(folder, fps: float | None = None) -> MovieSource:
    """A Miniscope V3 session folder (``msCam*.avi`` + ``timestamp.dat``) as a :class:`MovieSource`."""
    folder = Path(folder)
    readers, meta = _chunk_readers(folder, _numbered_chunks(folder, _V3_CHUNK, 1, "no msCam*.avi files"),
                                   "miniscope_v3")
    ts_path = folder / V3_TIMESTAMPS
    if ts_path.is_file():
        claimed = sum(r.n_claimed or 0 for r in readers)
        times, cam = read_v3_timestamps(ts_path, claimed)
        meta.update(cam_num=cam, first_timestamp_replaced=True)
        return timed_source(readers, times, source=str(ts_path), fps=fps, metadata=meta)
    log.warning("%s: no %s; frame rate from the fps argument (%s), dropped frames cannot be detected",
                folder, V3_TIMESTAMPS, fps)
    meta["fps_from"] = "argument" if fps else None
    return MovieSource(readers, fps=fps, metadata=meta)
