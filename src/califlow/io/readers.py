"""``open_movie``: one entry point for every recording format califlow reads.

Frame rate, in order of precedence: per-frame timestamps (Miniscope ``timeStamps.csv`` /
``timestamp.dat``, NWB ``timestamps``) or the file's own timing (isxd period, NWB rate);
then the ``fps`` argument; then the container's rate (never for Miniscope AVIs, whose
header always says 60 fps); else None.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from califlow.errors import InputError
from califlow.io.hdf5 import open_inscopix_h5, open_nwb
from califlow.io.isxd import read_isxd_movie
from califlow.io.miniscope import (
    V3_TIMESTAMPS,
    V4_TIMESTAMPS,
    check_chunk_numbering,
    is_miniscope_v3,
    is_miniscope_v4,
    miniscope_device_folder,
    open_miniscope_v3,
    open_miniscope_v4,
)
from califlow.io.sources import FrameReader, MovieSource, natural_sorted
from califlow.io.tiff import TiffReader
from califlow.io.video import VideoReader
from califlow.params import default_config

#: The downsampling group's defaults (the schema is their only source).
_DS = default_config()["downsampling"]

__all__ = ["open_movie", "probe_recording", "VIDEO_EXTENSIONS", "TIFF_EXTENSIONS"]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".avi", ".mp4", ".mkv", ".mov", ".m4v", ".wmv", ".mpg", ".mpeg", ".webm"}
TIFF_EXTENSIONS = {".tif", ".tiff"}
_REFUSED = {
    ".isxc": "an nVista 3 compressed raw movie: decompress it to .isxd first (isx.algo.decompress or IDPS)",
    ".isxb": "an Inscopix nVision behaviour movie, not imaging data",
}


def _check_fps(fps) -> float | None:
    if fps is None:
        return None
    try:
        value = float(fps)
    except (TypeError, ValueError) as exc:
        raise InputError(f"fps must be a positive number, got {fps!r}") from exc
    if not value > 0 or value != value or value == float("inf"):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    return value


def _container_rate(readers: list[FrameReader], fps: float | None) -> tuple[float | None, str | None]:
    if fps:
        return fps, "argument"
    rates = {r.container_fps for r in readers if r.container_fps}
    if len(rates) > 1:
        log.warning("files disagree on their container frame rate %s; using the first", sorted(rates))
    rate = readers[0].container_fps
    return rate, ("container" if rate else None)


def _open_file(path: Path, fps: float | None) -> MovieSource:
    ext = path.suffix.lower()
    if ext in _REFUSED:
        raise InputError(f"{path}: is {_REFUSED[ext]}")
    if ext == ".isxd":
        return read_isxd_movie(path, fps=fps)
    if ext == ".nwb":
        return open_nwb(path, fps=fps)
    if ext in (".h5", ".hdf5"):
        return open_inscopix_h5(path, fps=fps)
    if ext in TIFF_EXTENSIONS:
        readers: list[FrameReader] = [TiffReader(path)]
        kind = "tiff"
    elif ext in VIDEO_EXTENSIONS:
        miniscope = (path.parent / V4_TIMESTAMPS).is_file() or (path.parent / V3_TIMESTAMPS).is_file()
        readers = [VideoReader(path, trust_container_fps=not miniscope)]
        kind = "video"
    else:
        raise InputError(f"{path}: unsupported file type {ext!r} (supported: video {sorted(VIDEO_EXTENSIONS)}, "
                         f"TIFF, .isxd, .h5/.hdf5, .nwb, or a folder of chunks)")
    rate, origin = _container_rate(readers, fps)
    meta = {"reader": kind, "fps_from": origin, "files": [r.describe() for r in readers]}
    return MovieSource(readers, fps=rate, metadata=meta)


def _open_folder(folder: Path, extension: str, fps: float | None) -> MovieSource:
    if is_miniscope_v4(folder):
        return open_miniscope_v4(folder, fps=fps)
    if is_miniscope_v3(folder):
        return open_miniscope_v3(folder, fps=fps)
    ext = "." + extension.lower()
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ext and not p.name.startswith(".")]
    skipped = [p.name for p in files if "behav" in p.name.lower()]
    files = natural_sorted([p for p in files if "behav" not in p.name.lower()])
    if not files:
        device = miniscope_device_folder(folder)
        if device is not None:
            log.info("%s: reading the Miniscope device folder %s", folder, device.name)
            return open_miniscope_v4(device, fps=fps)
        present = sorted({p.suffix.lower() for p in folder.iterdir() if p.is_file()})
        raise InputError(f"{folder}: no *{ext} chunk files in the folder (file types present: {present or 'none'}; "
                         f"set downsampling.file_extension to the extension of the recording's chunks)")
    if ext in TIFF_EXTENSIONS:
        readers: list[FrameReader] = [TiffReader(p) for p in files]
    elif ext in VIDEO_EXTENSIONS:
        readers = [VideoReader(p) for p in files]
    else:
        raise InputError(f"{folder}: file_extension {extension!r} is not a supported chunk type "
                         f"(video {sorted(VIDEO_EXTENSIONS)} or TIFF)")
    rate, origin = _container_rate(readers, fps)
    log.info("%s: %d chunk files in natural order: %s", folder, len(files), ", ".join(p.name for p in files))
    meta = {"reader": f"folder_{ext[1:]}", "folder": str(folder), "file_order": [p.name for p in files],
            "skipped_files": skipped, "fps_from": origin, "files": [r.describe() for r in readers]}
    return MovieSource(readers, fps=rate, metadata=meta)


_SINGLE_FILES = VIDEO_EXTENSIONS | TIFF_EXTENSIONS | {".isxd", ".nwb", ".h5", ".hdf5"}


def probe_recording(path: str | os.PathLike, *, file_extension: str = _DS["file_extension"]) -> None:
    """Cheap pre-flight check of a session's recording, without decoding anything.

    Run for every session before any job starts (the workflow does it while reading the
    sheet), so a missing, empty or unsupported recording stops the run up front.

    Raises
    ------
    InputError
        The path does not exist, is an empty file, has an unsupported type, or is a folder
        without chunk files of ``file_extension`` (and not a Miniscope folder).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_file():
        ext = p.suffix.lower()
        if ext in _REFUSED:
            raise InputError(f"{p}: is {_REFUSED[ext]}")
        if ext not in _SINGLE_FILES:
            raise InputError(f"{p}: unsupported file type {ext!r} (supported: video {sorted(VIDEO_EXTENSIONS)}, "
                             f"TIFF, .isxd, .h5/.hdf5, .nwb, or a folder of chunks)")
        if p.stat().st_size == 0:
            raise InputError(f"{p}: the file is empty (0 bytes)")
        _check_readable([p])
        return
    try:
        entries = list(p.iterdir())
    except PermissionError:
        raise InputError(f"{p}: the folder cannot be listed (permission denied); give this user read and "
                         "execute rights on it (chmod u+rx)") from None
    if is_miniscope_v4(p) or is_miniscope_v3(p):
        check_chunk_numbering(p)
        _check_readable([f for f in entries if f.is_file() and f.suffix.lower() in (".avi", ".csv", ".json", ".dat")])
        return
    device = miniscope_device_folder(p)
    if device is not None:
        return probe_recording(device, file_extension=file_extension)
    ext = "." + file_extension.lower()
    chunks = [f for f in entries if f.is_file() and f.suffix.lower() == ext and not f.name.startswith(".")]
    if not chunks:
        present = sorted({f.suffix.lower() for f in entries if f.is_file()})
        raise InputError(f"{p}: no *{ext} chunk files in the folder (file types present: {present or 'none'}; "
                         f"set downsampling.file_extension to the extension of the recording's chunks)")
    empty = [f.name for f in chunks if f.stat().st_size == 0]
    if empty:
        raise InputError(f"{p}: chunk file(s) {', '.join(sorted(empty))} are empty (0 bytes)")
    _check_readable(chunks)


def _check_readable(files: list[Path]) -> None:
    """Open each file for reading (a real open: permission bits, ACLs, root without CAP_DAC_OVERRIDE)."""
    denied = []
    for f in files:
        try:
            with open(f, "rb"):
                pass
        except PermissionError:
            denied.append(f)
    if denied:
        names = ", ".join(str(f) for f in denied[:5]) + (f" and {len(denied) - 5} more" if len(denied) > 5 else "")
        raise InputError(f"{names}: cannot be read (permission denied); give this user read rights "
                         "(chmod u+r) or run as the files' owner")


def open_movie(path: str | os.PathLike, *, file_extension: str = _DS["file_extension"],
               fps: float | None = None) -> MovieSource:
    """Open a recording as a streaming :class:`~califlow.io.sources.MovieSource`.

    Parameters
    ----------
    path : path-like
        A video file (AVI/MP4/MKV...), a multi-page TIFF, an Inscopix ``.isxd`` movie or
        ``.h5`` export, an NWB file, or a folder of chunk files: a Miniscope V4 device folder
        (``0.avi..N.avi`` + ``metaData.json`` + ``timeStamps.csv``) or the session folder
        above it, a V3 folder (``msCam1..N.avi`` + ``timestamp.dat``), or any folder of
        ``*.{file_extension}`` chunks read in natural order (``2.avi`` before ``10.avi``).
    file_extension : str
        Extension of the chunk files of a folder (``avi``, ``mp4``, ``tif``, ``tiff``...).
    fps : float, optional
        Frame rate to use when the recording has no timestamps or timing of its own.

    Returns
    -------
    MovieSource
        ``metadata["file_order"]`` lists the files in reading order.

    Raises
    ------
    InputError
        Missing, empty, truncated or inconsistent input, naming the file (and frame).
    """
    p = Path(path)
    fps = _check_fps(fps)
    extension = str(file_extension).lstrip(".")
    if not extension:
        raise InputError("file_extension must not be empty (e.g. 'avi' or 'tif')")
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        source = _open_folder(p, extension, fps)
    else:
        source = _open_file(p, fps)
    source.metadata.setdefault("path", str(p))
    log.info("opened %s: %s", p, source)
    return source
