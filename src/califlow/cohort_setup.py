"""Find animals and sessions in a data folder and write a sessions sheet (``califlow init``).

Recognised layouts (mixable):

- ``DATA/<animal>/<session>/`` holding chunk files (``0.avi…``, ``msCam1.avi…``, TIFF chunks);
- UCLA Miniscope DAQ trees ``DATA/<animal>/<date>/<time>/<device>/0.avi…`` (the session is
  named ``<date>_<time>``; behaviour-camera folders are skipped);
- single recordings per session: ``DATA/<animal>/<session>.{isxd,tif,tiff,h5,nwb,avi,mp4,mkv}``;
- a DATA folder that directly holds one animal's sessions (the animal is named after it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from califlow.errors import InputError

__all__ = ["Discovery", "discover_sessions", "natural_key"]

MOVIE_FILES = {".isxd", ".tif", ".tiff", ".h5", ".hdf5", ".nwb", ".avi", ".mp4", ".mkv", ".m4v"}
CHUNK_FILES = {".avi", ".mp4", ".mkv", ".m4v", ".tif", ".tiff"}
_BEHAVIOUR = re.compile(r"behav|webcam|camera", re.IGNORECASE)
_CHUNK_NAME = re.compile(r"^(msCam)?\d+$", re.IGNORECASE)
_DEVICE_DIR = re.compile(r"miniscope|^scope", re.IGNORECASE)


def natural_key(text: str) -> list:
    """Sort key that orders ``2.avi`` before ``10.avi``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


@dataclass
class Discovery:
    """What :func:`discover_sessions` found (``sheet``) and what it skipped, with reasons."""

    sheet: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"found {len(self.sheet)} session(s) of {self.sheet['animal'].nunique()} animal(s):"]
        for animal, group in self.sheet.groupby("animal", sort=False):
            lines.append(f"  {animal}: {', '.join(group['session'])}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} path(s):")
            lines += [f"  {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


def _is_chunk_folder(folder: Path) -> bool:
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in CHUNK_FILES]
    return bool(files) and all(_CHUNK_NAME.match(f.stem) for f in files)


def _session_name(rel: Path) -> str:
    parts = [p for p in rel.parts]
    if len(parts) > 1 and _DEVICE_DIR.search(parts[-1]):
        parts = parts[:-1]  # Miniscope DAQ: <date>/<time>/<device>
    name = "_".join(parts)
    name = re.sub(r"\.(isxd|tiff?|h5|hdf5|nwb|avi|mp4|mkv|m4v)$", "", name, flags=re.IGNORECASE)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")
    return name or "session"


def _recordings(animal_dir: Path, skipped: list) -> list[Path]:
    found: list[Path] = []

    def walk(folder: Path) -> None:
        if _BEHAVIOUR.search(folder.name) and folder != animal_dir:
            skipped.append((str(folder), "behaviour camera folder"))
            return
        if _is_chunk_folder(folder):
            found.append(folder)
            return
        entries = sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                walk(entry)
            elif entry.suffix.lower() in MOVIE_FILES:
                if _BEHAVIOUR.search(entry.name):
                    skipped.append((str(entry), "behaviour camera file"))
                else:
                    found.append(entry)
            elif entry.suffix.lower() not in {".json", ".csv", ".dat", ".txt", ".xml"}:
                skipped.append((str(entry), "not a recording"))
        if folder != animal_dir and not any(e.is_dir() or e.suffix.lower() in MOVIE_FILES
                                            for e in entries if not e.name.startswith(".")):
            skipped.append((str(folder), "no recording inside"))

    walk(animal_dir)
    return found


def discover_sessions(data_dir: str | Path) -> Discovery:
    """Find animals and sessions under ``data_dir``.

    Returns
    -------
    Discovery
        ``sheet`` with columns animal, session, path (absolute), order; ``skipped`` paths.

    Raises
    ------
    InputError
        When ``data_dir`` does not exist or holds no recording.
    """
    root = Path(data_dir).resolve()
    if not root.is_dir():
        raise InputError(f"califlow init: {root} is not a folder")
    skipped: list[tuple[str, str]] = []
    rows = []
    top = [p for p in sorted(root.iterdir(), key=lambda p: natural_key(p.name)) if not p.name.startswith(".")]
    direct = [p for p in top if p.is_file() and p.suffix.lower() in MOVIE_FILES] or (
        [root] if _is_chunk_folder(root) else [])
    if direct or any(p.is_dir() and _is_chunk_folder(p) for p in top):
        animals = [(root.name, root)]  # DATA holds one animal's sessions
    else:
        animals = [(p.name, p) for p in top if p.is_dir()]
        skipped += [(str(p), "not a folder of an animal") for p in top if p.is_file()]
    for animal, folder in animals:
        recs = _recordings(folder, skipped)
        if not recs:
            skipped.append((str(folder), "no recording found"))
            continue
        names: dict[str, int] = {}
        for order, rec in enumerate(recs):
            name = _session_name(rec.relative_to(folder)) if rec != folder else rec.name
            if name in names:
                names[name] += 1
                name = f"{name}_{names[name]}"
            else:
                names[name] = 0
            animal_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", animal).strip("_.-") or "animal"
            rows.append({"animal": animal_name, "session": name, "path": str(rec), "order": order})
    if not rows:
        raise InputError(f"califlow init: no recording found under {root} (looked for chunk folders "
                         f"and files ending in {', '.join(sorted(MOVIE_FILES))})")
    return Discovery(pd.DataFrame(rows), skipped)
