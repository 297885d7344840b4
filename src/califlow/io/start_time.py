"""When a recording started, read from the recording itself, and where that came from.

Sources, in order of trust:

1. the Inscopix ``.isxd`` footer (``timingInfo.start.secsSinceEpoch``, UTC);
2. an NWB input's ``session_start_time`` plus the series' ``starting_time``;
3. the UCLA Miniscope DAQ session ``metaData.json`` (``recordingStartTime``: ``msecSinceEpoch``
   is UTC; the ``year``...``msec`` fields are the local wall clock, so their difference gives the
   UTC offset), in the device folder or the session folder above it;
4. the DAQ folder names ``<YYYY_MM_DD>/<HH_MM_SS>/<device>`` (local time, zone unknown);
5. the TIFF ``DateTime`` tag of the first page (local time, zone unknown);
6. the oldest modification time of the files: a guess, logged as one.

:func:`recording_start` returns the time as an ISO 8601 string (with its UTC offset where
known) and a sentence saying which source gave it; ``guessed`` is True only for 6.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["recording_start", "parse_start"]

log = logging.getLogger(__name__)

_DATE = re.compile(r"^(\d{4})[_-](\d{2})[_-](\d{2})$")
_TIME = re.compile(r"^(\d{2})[_-](\d{2})[_-](\d{2})$")


def _result(t: dt.datetime, source: str, guessed: bool = False) -> dict:
    return dict(start_time=t.isoformat(timespec="milliseconds"), start_time_from=source,
                          start_time_guessed=guessed)


def parse_start(value: str) -> dt.datetime:
    """The datetime of a ``start_time`` string; a time without zone is taken as UTC."""
    t = dt.datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _from_miniscope_json(folder: Path) -> dict | None:
    for path in (folder / "metaData.json", folder.parent / "metaData.json"):
        try:
            rst = json.loads(path.read_text()).get("recordingStartTime") if path.is_file() else None
        except (OSError, ValueError):
            rst = None
        if not isinstance(rst, dict):
            continue
        utc = (dt.datetime.fromtimestamp(float(rst["msecSinceEpoch"]) / 1000.0, tz=dt.UTC)
               if rst.get("msecSinceEpoch") else None)
        try:
            local = dt.datetime(int(rst["year"]), int(rst["month"]), int(rst["day"]), int(rst["hour"]),
                                int(rst["minute"]), int(rst["second"]), int(rst.get("msec", 0)) * 1000)
        except (KeyError, TypeError, ValueError):
            local = None
        if utc is not None and local is not None:  # the wall clock's offset from UTC, to 15 min
            minutes = round((local - utc.replace(tzinfo=None)).total_seconds() / 900.0) * 15
            zone = dt.timezone(dt.timedelta(minutes=minutes))
            return _result(utc.astimezone(zone), f"{path} recordingStartTime")
        if utc is not None:
            return _result(utc, f"{path} recordingStartTime.msecSinceEpoch")
        if local is not None:
            return _result(local, f"{path} recordingStartTime (local time, zone unknown)")
    return None


def _from_daq_folders(folder: Path) -> dict | None:
    for time_dir in (folder, folder.parent):
        d, t = _DATE.match(time_dir.parent.name), _TIME.match(time_dir.name)
        if d and t:
            try:
                when = dt.datetime(*(int(x) for x in d.groups()), *(int(x) for x in t.groups()))
            except ValueError:
                return None
            return _result(when, f"DAQ folder names {time_dir.parent.name}/{time_dir.name} (local time, zone unknown)")
    return None


def _from_tiff(path: Path) -> dict | None:
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get("DateTime")
            text = str(tag.value).strip() if tag is not None else ""
        when = dt.datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    except (OSError, ValueError, IndexError, tifffile.TiffFileError):
        return None
    return _result(when, f"{path} DateTime tag (local time, zone unknown)")


def _from_nwb(path: Path, offset_s: float) -> dict | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f["session_start_time"][()]
        start = parse_start(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (OSError, KeyError, ValueError):
        return None
    return _result(start + dt.timedelta(seconds=offset_s), f"{path} session_start_time + starting_time")


def _from_mtime(files: Iterable[Path], label: str) -> dict | None:
    stamps = [os.path.getmtime(f) for f in files if os.path.exists(f)]
    if not stamps:
        return None
    log.warning("%s: nothing in the recording says when it started; session_start_time is a guess "
                "from the files' modification time", label)
    return _result(dt.datetime.fromtimestamp(min(stamps), tz=dt.UTC),
                   "file modification time (a guess: the recording holds no start time)", guessed=True)


def recording_start(metadata: dict, files: list[Path], label: str) -> dict:
    """The start of a recording from its reader ``metadata`` and ``files`` (see the module docstring).

    Returns
    -------
    dict
        ``start_time`` (ISO 8601 str, None when there is not even a file time),
        ``start_time_from`` (the source, in words) and ``start_time_guessed`` (bool).
    """
    files = [Path(f) for f in files]
    reader = str(metadata.get("reader", ""))
    start_s = metadata.get("start_s")
    if reader == "isxd" and start_s:
        t = dt.datetime.fromtimestamp(float(start_s), tz=dt.UTC)
        return _result(t, f"{files[0]} timingInfo.start (isxd footer)")
    found = None
    if reader == "nwb":
        found = _from_nwb(files[0], float(start_s or 0.0))
    folder = Path(metadata["folder"]) if metadata.get("folder") else (files[0].parent if files else None)
    if found is None and folder is not None and reader.startswith("miniscope"):
        found = _from_miniscope_json(folder)
    if found is None and folder is not None:
        found = _from_daq_folders(folder)
    if found is None and files:
        found = _from_tiff(files[0])
    found = found or _from_mtime(files, label)
    return found or dict(start_time=None, start_time_from="unknown (no file to date)",
                                   start_time_guessed=True)
