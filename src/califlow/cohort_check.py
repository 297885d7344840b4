"""Cross-session consistency of each animal, checked before the first job.

An animal's sessions become one movie, so they must share a frame rate (after
``temporal_ds``, or ``downsampling.target_fps`` resamples them all), and their frame sizes
must be close enough to be one field of view (``inter_session_alignment.max_size_difference``).
Mixed pixel types are legal (noise scaling puts them on one scale) but unusual, and are
logged. :func:`check_animals` opens every recording's headers and timestamps (no frame is
decoded beyond the first of each file) and raises one error that names every session at
fault, before per-session work is spent on an animal that cannot be concatenated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from califlow.errors import InputError

__all__ = ["SessionProbe", "probe_session", "check_animals", "size_difference"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionProbe:
    """What the headers of one session say: frame rate (Hz, None when unknown), where it came
    from, frame size (after ``spatial_ds``), the native pixel type and the number of frames
    after ``temporal_ds`` and ``target_fps`` (from the headers or timestamps: an estimate)."""

    fps: float | None
    fps_from: str
    shape: tuple[int, int]
    dtype: str
    n_frames: int


def size_difference(shapes) -> float:
    """Largest relative excess of a height or width over the smallest one (0 = all equal)."""
    hs = [int(s[0]) for s in shapes]
    ws = [int(s[1]) for s in shapes]
    return max((max(hs) - min(hs)) / min(hs), (max(ws) - min(ws)) / min(ws))


def probe_session(path: str | Path, *, file_extension: str, fps: float | None, downsampling: Mapping,
                  default_fps: float | None) -> SessionProbe:
    """Open a recording's headers (:func:`califlow.io.open_movie`) and report rate, size, dtype and length.

    ``downsampling`` is the resolved ``downsampling`` section (``spatial_ds``, ``temporal_ds``,
    ``target_fps``).
    """
    from califlow.io import open_movie
    from califlow.preprocess.downsample import downsampled_shape
    from califlow.preprocess.resample import resampled_length

    src = open_movie(path, file_extension=file_extension, fps=fps)
    rate, origin = src.fps, str(src.metadata.get("fps_from") or "file timing")
    if rate is None and default_fps:
        rate, origin = float(default_fps), "general.sf (the recording gives none)"
    h, w = downsampled_shape(src.shape[1], src.shape[2], int(downsampling["spatial_ds"]))
    k = int(downsampling["temporal_ds"])
    n = -(-int(src.shape[0]) // k)
    if downsampling.get("target_fps") and rate:
        n = resampled_length(n, rate / k, float(downsampling["target_fps"]))
    return SessionProbe(rate, origin, (h, w), str(src.native_dtype), n)


def _rate_problem(animal: str, probes: dict[str, SessionProbe], k: int, tolerance: float) -> str | None:
    rates = {s: p.fps / k for s, p in probes.items() if p.fps}
    if not rates:
        return None
    ref = min(rates.values())
    if all(abs(r - ref) <= tolerance * ref for r in rates.values()):
        return None
    listing = ", ".join(f"{s}: {r:.4g} fps ({probes[s].fps_from})" for s, r in rates.items())
    return (f"animal {animal}: sessions differ in frame rate ({listing}; after temporal_ds {k}). One movie needs "
            f"one rate: set downsampling.target_fps (for example {ref:.4g}) to resample every session, or put the "
            "sessions under different animals")


def _size_problem(animal: str, probes: dict[str, SessionProbe], limit: float) -> str | None:
    worst = size_difference([p.shape for p in probes.values()])
    if worst <= limit:
        return None
    listing = ", ".join(f"{s}: {p.shape[0]}x{p.shape[1]}" for s, p in probes.items())
    return (f"animal {animal}: session frame sizes differ by {100 * worst:.0f}% (> inter_session_alignment."
            f"max_size_difference {100 * limit:.0f}%): {listing}; they cannot be one field of view")


def check_animals(sessions: pd.DataFrame, cfg: Mapping, *, skip_missing: bool = True) -> dict:
    """Probe every session and check each animal's sessions agree; return the probes.

    Parameters
    ----------
    sessions : DataFrame
        The validated sheet (columns animal, session, path, fps).
    cfg : mapping
        Resolved configuration (``downsampling``, ``general.sf``, ``inter_session_alignment``).
    skip_missing : bool
        Skip recordings that do not exist yet (the demo cohort is simulated by a job).

    Returns
    -------
    dict
        ``{animal: {session: SessionProbe}}``.

    Raises
    ------
    InputError
        Naming every animal whose sessions differ in frame rate or frame size.
    """
    ds, isa = cfg["downsampling"], cfg["inter_session_alignment"]
    probes: dict[str, dict[str, SessionProbe]] = {}
    table = sessions.reset_index(drop=True)
    several = table["animal"].map(table["animal"].value_counts()) > 1
    for i, row in enumerate(table.itertuples()):
        if skip_missing and not Path(row.path).exists():
            continue
        fps = None if row.fps != row.fps else float(row.fps)
        try:
            probes.setdefault(row.animal, {})[row.session] = probe_session(
                row.path, file_extension=ds["file_extension"], fps=fps, downsampling=ds,
                default_fps=cfg["general"]["sf"])
        except InputError as exc:
            if several[i]:
                raise InputError(f"animal {row.animal}, session {row.session} ({row.path}): {exc}") from exc
        except Exception:
            if several[i]:
                raise
            # one session, nothing to agree with: no estimate; its ingest job reports the fault
    problems = []
    for animal, found in probes.items():
        if len(found) < 2:  # one session: nothing to agree with
            continue
        if not ds.get("target_fps"):
            problems.append(_rate_problem(animal, found, int(ds["temporal_ds"]), float(isa["fps_tolerance"])))
        problems.append(_size_problem(animal, found, float(isa["max_size_difference"])))
        dtypes = {p.dtype for p in found.values()}
        if len(dtypes) > 1:
            log.warning("animal %s: sessions store different pixel types (%s); noise scaling puts them on one "
                        "scale, but check they come from the same camera settings", animal,
                        ", ".join(f"{s}: {p.dtype}" for s, p in found.items()))
    problems = [p for p in problems if p]
    if problems:
        raise InputError("; ".join(problems))
    return probes
