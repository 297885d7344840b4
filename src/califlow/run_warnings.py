"""The warnings a workflow run left in its outputs, gathered for the console and the report.

Jobs record their warnings in their outputs (so they survive reruns and cluster jobs):
``results/{animal}/neuron_size.json`` (``warnings``: gSig far from the data, no
measurement), ``results/{animal}/cnmfe.zarr`` attrs (``warnings``: collapse, sessions
with no active neuron) and each session's ``ingest.json`` (damaged frames, a guessed start
time).  :func:`collect_warnings` reads them back; the Snakefile prints
them when the run ends and puts them on the report's front page.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["collect_warnings"]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _ingest_warnings(sessions: Path) -> list[str]:
    """Damaged frames and guessed start times recorded in the sessions' ``ingest.json``."""
    out = []
    for path in sorted(sessions.glob("*/ingest.json")):
        info = _read_json(path)
        damaged = info.get("damaged_frames") or []
        if damaged:
            files = sorted({d.get("file", "?") for d in damaged})
            out.append(f"session {path.parent.name}: {len(damaged)} damaged frame(s) in {', '.join(files)} were "
                       "interpolated like dropped frames (ingest.json damaged_frames)")
        unusable = len(info.get("nonfinite_frames") or []) + len(info.get("blank_frames") or [])
        if unusable:
            out.append(f"session {path.parent.name}: {unusable} frame(s) with NaN/infinite pixels or blank were "
                       "interpolated like dropped frames (ingest.json nonfinite_frames, blank_frames)")
        if info.get("start_time_guessed"):
            out.append(f"session {path.parent.name}: the recording holds no start time; session_start_time is "
                       f"a guess ({info.get('start_time_from')})")
    return out


def collect_warnings(results: str | os.PathLike, animals: Iterable[str]) -> list[str]:
    """Every recorded warning of the animals' outputs under ``results`` (missing outputs are skipped).

    Each warning is prefixed with its animal unless it already names it.
    """
    out: list[str] = []
    root = Path(results)
    for animal in animals:
        size = _read_json(root / animal / "neuron_size.json").get("warnings", [])
        attrs = _read_json(root / animal / "cnmfe.zarr" / "zarr.json").get("attributes", {}).get("warnings", [])
        for w in list(size) + list(attrs) + _ingest_warnings(root / animal / "sessions"):
            text = str(w)
            out.append(text if text.startswith(f"{animal}:") else f"{animal}: {text}")
    return out
