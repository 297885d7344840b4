"""Find animals and sessions in a data folder and write a sessions sheet (``califlow init``).

The folder given is either a **cohort folder** (its sub-folders are animals, each holding
sessions) or **one animal's folder** (its sub-folders are date-named, ``2026_01_05``,
``2026-01-05``, ``20260105``, or time-named, ``10_15_00``, or it holds session recordings
directly). :func:`discover_sessions` decides from the structure (``layout="auto"``) and says
why; ``layout="cohort"`` or ``"animal"`` forces one. One animal's folder gives one animal
named after the folder (after the folder above it when the folder itself is a date folder).

Recordings recognised anywhere below an animal:

- chunk folders (``0.avi…``, ``msCam1.avi…``, TIFF chunks);
- UCLA Miniscope DAQ trees ``<date>/<time>/<device>/0.avi…`` (the session is named
  ``<date>_<time>``; behaviour-camera folders are skipped);
- single recordings ``<session>.{isxd,tif,tiff,h5,nwb,avi,mp4,mkv}``, also inside date folders.

Session names are the path below the animal joined with ``_``. A long name that starts with a
date, such as ``2026_01_05_recording_20260105_101500``, is shortened to the date
(``2026_01_05``), or to date and time (``2026_01_05_10_15_00``) where several recordings
share the date; the sheet's ``path`` column keeps the full path.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from califlow.errors import InputError

__all__ = ["Discovery", "LAYOUTS", "discover_sessions", "is_date_name", "natural_key", "session_names"]

MOVIE_FILES = {".isxd", ".tif", ".tiff", ".h5", ".hdf5", ".nwb", ".avi", ".mp4", ".mkv", ".m4v"}
CHUNK_FILES = {".avi", ".mp4", ".mkv", ".m4v", ".tif", ".tiff"}
#: what ``layout=`` accepts: decide from the structure, or take the folder as a cohort / one animal
LAYOUTS = ("auto", "cohort", "animal")
_SIDE_FILES = {".json", ".csv", ".dat", ".txt", ".xml"}
_BEHAVIOUR = re.compile(r"behav|webcam|camera", re.IGNORECASE)
_CHUNK_NAME = re.compile(r"^(msCam)?\d+$", re.IGNORECASE)
_DEVICE_DIR = re.compile(r"miniscope|^scope", re.IGNORECASE)
_STORE_DIR = re.compile(r"\.(zarr|n5)$", re.IGNORECASE)
#: a date: YYYY_MM_DD, YYYY-MM-DD, YYYY.MM.DD, YYYYMMDD or MM_DD_YYYY (not inside a longer number)
_DATE = re.compile(
    r"(?<!\d)(?:(?P<y>(?:19|20)\d\d)(?P<sep>[-_.]?)(?P<m>0[1-9]|1[0-2])(?P=sep)(?P<d>0[1-9]|[12]\d|3[01])"
    r"|(?P<m2>0[1-9]|1[0-2])(?P<sep2>[-_.])(?P<d2>0[1-9]|[12]\d|3[01])(?P=sep2)(?P<y2>(?:19|20)\d\d))(?!\d)")
#: a time of day: HH_MM_SS, HH-MM-SS, HH.MM.SS or HHMMSS
_TIME = re.compile(r"(?<!\d)(?P<h>[01]\d|2[0-3])(?P<sep>[-_.]?)(?P<mi>[0-5]\d)(?P=sep)(?P<s>[0-5]\d)(?!\d)")
#: words that may come before the date of a name that is shortened (``recording_20260105_…``)
_GENERIC_PREFIX = re.compile(r"^(?:(?:rec|recording|session|movie|video|acq|acquisition)[-_. ]*)?$", re.IGNORECASE)
_WHAT = {"animal": "one animal's folder", "cohort": "a cohort folder"}


def natural_key(text: str) -> list:
    """Sort key that orders ``2.avi`` before ``10.avi``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


def is_date_name(name: str) -> bool:
    """Whether a folder name is a date (``2026_01_05``, ``2026-01-05_m12``, ``20260105``) or a time (``10_15_00``)."""
    return bool(_DATE.match(name) or _TIME.fullmatch(name))


@dataclass
class Discovery:
    """What :func:`discover_sessions` found (``sheet``) and skipped, how it read the folder (``layout``)."""

    sheet: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    layout: str = "cohort"
    headline: str = ""

    def summary(self) -> str:
        """The layout taken and why, each animal's sessions, and the skipped paths with reasons."""
        lines = [self.headline or f"found {len(self.sheet)} session(s) of {self.sheet['animal'].nunique()} animal(s):"]
        for animal, group in self.sheet.groupby("animal", sort=False):
            lines.append(f"  {animal}: {', '.join(group['session'])}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} path(s):")
            lines += [f"  {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    """``"1 session"``, ``"3 sessions"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _listing(folder: Path) -> list[Path]:
    """``folder``'s entries in natural order, hidden ones left out."""
    return [p for p in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)) if not p.name.startswith(".")]


def _is_chunk_folder(folder: Path) -> bool:
    """Whether ``folder`` holds video/TIFF chunks named by number (``0.avi``, ``msCam1.avi``, …)."""
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in CHUNK_FILES]
    return bool(files) and all(_CHUNK_NAME.match(f.stem) for f in files)


def _is_recording_file(path: Path) -> bool:
    """Whether ``path`` is a recording file (not of a behaviour camera)."""
    return path.is_file() and path.suffix.lower() in MOVIE_FILES and not _BEHAVIOUR.search(path.name)


def _take_file(path: Path, found: list[Path], skipped: list) -> None:
    """Add ``path`` to ``found`` if it is a recording, else say in ``skipped`` why not (side files: silently)."""
    suffix = path.suffix.lower()
    if suffix in MOVIE_FILES:
        if _BEHAVIOUR.search(path.name):
            skipped.append((str(path), "behaviour camera file"))
        else:
            found.append(path)
    elif suffix not in _SIDE_FILES:
        skipped.append((str(path), "not a recording"))


def _recordings(top_dir: Path, skipped: list) -> list[Path]:
    """Chunk folders and recording files under ``top_dir`` in natural order; what is left out goes to ``skipped``."""
    found: list[Path] = []

    def walk(folder: Path) -> None:
        if folder != top_dir and _BEHAVIOUR.search(folder.name):
            skipped.append((str(folder), "behaviour camera folder"))
            return
        if _STORE_DIR.search(folder.name):
            skipped.append((str(folder), "data store, not a recording"))
            return
        if _is_chunk_folder(folder):
            found.append(folder)
            return
        entries = _listing(folder)
        for entry in entries:
            if entry.is_dir():
                walk(entry)
            else:
                _take_file(entry, found, skipped)
        if folder != top_dir and not any(e.is_dir() or e.suffix.lower() in MOVIE_FILES for e in entries):
            skipped.append((str(folder), "no recording inside"))

    walk(top_dir)
    return found


def _session_name(rel: Path) -> str:
    """The path of a recording below its animal as one name (``2024_01_02/10_00_00/Miniscope`` -> ``…_10_00_00``)."""
    parts = list(rel.parts)
    if len(parts) > 1 and _DEVICE_DIR.search(parts[-1]):
        parts = parts[:-1]  # Miniscope DAQ: <date>/<time>/<device>
    name = "_".join(parts)
    name = re.sub(r"\.(isxd|tiff?|h5|hdf5|nwb|avi|mp4|mkv|m4v)$", "", name, flags=re.IGNORECASE)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")
    return name or "session"


def _date_and_time(name: str) -> tuple[str, str, bool]:
    """(``YYYY_MM_DD``, ``HH_MM_SS`` or "", shortenable) of a session name.

    A name is shortenable when it starts with a date (after at most a word such as
    ``recording_``) and holds more than that date and a time.
    """
    found = _DATE.search(name)
    if not found or not _GENERIC_PREFIX.match(name[:found.start()]):
        return "", "", False
    if found["y"]:
        date = f"{found['y']}_{found['m']}_{found['d']}"
    else:
        date = f"{found['y2']}_{found['m2']}_{found['d2']}"
    rest = _DATE.sub("_", name[found.end():])
    clock = _TIME.search(rest)
    time = f"{clock['h']}_{clock['mi']}_{clock['s']}" if clock else ""
    leftover = rest[:clock.start()] + rest[clock.end():] if clock else rest
    more = bool(name[:found.start()]) or bool(re.sub(r"[-_. T]", "", leftover))
    return date, time, more


def _unique(names: list[str]) -> list[str]:
    """``names`` with repeats made unique by ``_1``, ``_2``, … suffixes."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, k = name, 0
        while candidate in seen:
            k += 1
            candidate = f"{name}_{k}"
        seen.add(candidate)
        out.append(candidate)
    return out


def session_names(relative_paths: list[Path]) -> list[str]:
    """Unique session names of one animal's recordings, given their paths below the animal's folder.

    A long name starting with a date (``2026_01_05/recording_20260105_101500.tif``) becomes the
    date (``2026_01_05``), or date and time (``2026_01_05_10_15_00``) where several recordings
    share the date; where even that repeats, the full name is kept. Names that are already just
    a date and time (Miniscope DAQ ``2024_01_02_10_00_00``) and names without a leading date
    are kept as they are.
    """
    full = [_session_name(rel) for rel in relative_paths]
    stamps = [_date_and_time(name) for name in full]
    per_date = Counter(date for date, _, short in stamps if short)
    per_stamp = Counter((date, time) for date, time, short in stamps if short and time)
    names = []
    for name, (date, time, short) in zip(full, stamps):
        if short and per_date[date] == 1:
            name = date
        elif short and time and per_stamp[(date, time)] == 1:
            name = f"{date}_{time}"
        names.append(name)
    return _unique(names)


def _clean_name(text: str, default: str) -> str:
    """``text`` with characters a sheet name may not hold replaced by ``_`` (``default`` if nothing is left)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-") or default


def _animal_rows(folder: Path, skipped: list, named_from: Path | None = None) -> list[dict]:
    """Sheet rows of the animal in ``folder``; it is named after ``named_from`` (default ``folder``)."""
    recs = _recordings(folder, skipped)
    if not recs:
        skipped.append((str(folder), "no recording found"))
        return []
    base = named_from or folder
    rels = [rec.relative_to(base) if rec != base else Path(rec.name) for rec in recs]
    animal = _clean_name(base.name, "animal")
    return [{"animal": animal, "session": name, "path": str(rec), "order": order}
            for order, (rec, name) in enumerate(zip(recs, session_names(rels)))]


@dataclass
class _Guess:
    """The layout read from a folder's structure, why, and what speaks against it (``doubt``)."""

    layout: str
    reason: str
    doubt: str = ""


def _examples(names: list[str], n: int = 3) -> str:
    """The first ``n`` of ``names``, comma-separated."""
    return ", ".join(names[:n]) + (", …" if len(names) > n else "")


def _guess_from_folders(holders: list[tuple[str, int]]) -> _Guess:
    """Layout from the (name, number of recordings) of the sub-folders that hold recordings."""
    dated = [name for name, _ in holders if is_date_name(name)]
    other = [name for name, _ in holders if not is_date_name(name)]
    if not other:
        return _Guess("animal", f"{_count(len(dated), 'date folder')} with recordings")
    if not dated:
        reason = f"{_count(len(other), 'sub-folder')} with recordings, none date-named"
        if len(other) > 1 and all(n == 1 for _, n in holders):
            return _Guess("cohort", reason, f"each of its {len(other)} folders holds a single recording, so they "
                                            f"may be one animal's sessions rather than {len(other)} animals")
        return _Guess("cohort", reason)
    doubt = (f"{len(dated)} of its {len(holders)} folders with recordings are date-named ({_examples(dated)}), "
             f"{len(other)} are not ({_examples(other)})")
    if len(dated) >= len(other):
        return _Guess("animal", f"{len(dated)} of {len(holders)} folders with recordings are date folders", doubt)
    return _Guess("cohort", f"{len(other)} of {len(holders)} folders with recordings are not date folders", doubt)


def _animal_candidates(entries: list[Path]) -> list[Path]:
    """Sub-folders that may be animals: not behaviour cameras, not data stores."""
    return [p for p in entries if p.is_dir() and not _BEHAVIOUR.search(p.name) and not _STORE_DIR.search(p.name)]


def _guess_layout(root: Path, entries: list[Path]) -> _Guess:
    """Whether ``root`` (with its ``entries``) is a cohort folder or one animal's folder, and why."""
    if _is_chunk_folder(root):
        return _Guess("animal", "a folder of chunk files: one session")
    folders = _animal_candidates(entries)
    files = [p for p in entries if _is_recording_file(p)]
    chunk_folders = [p for p in folders if _is_chunk_folder(p)]
    if files or chunk_folders:
        found = [text for n, text in ((len(files), _count(len(files), "recording file")),
                                      (len(chunk_folders), f"{_count(len(chunk_folders), 'session folder')} of "
                                                           "chunk files")) if n]
        return _Guess("animal", f"{' and '.join(found)} directly inside")
    holders = [(p.name, len(_recordings(p, []))) for p in folders]
    holders = [(name, n) for name, n in holders if n]
    if not holders:
        return _Guess("cohort", "no sub-folder holds a recording")
    return _guess_from_folders(holders)


def _headline(shown: str, sheet: pd.DataFrame, guess: _Guess, layout: str, asked: str, named_from: str = "") -> str:
    """The line that says which layout was taken, why, and how to force the other one.

    ``named_from``: the folder the animal is named after, when it is not ``shown`` itself.
    """
    if asked == "auto":
        lead = f"{shown} looks like {_WHAT[layout]} ({guess.reason})"
    else:
        looks = "it also looks like one" if asked == guess.layout else f"it looks like {_WHAT[guess.layout]}"
        lead = f"{shown} taken as {_WHAT[layout]} (--layout {asked}; {looks}: {guess.reason})"
    animals = list(dict.fromkeys(sheet["animal"]))
    what = f"animal '{animals[0]}'" if layout == "animal" else _count(len(animals), "animal")
    if layout == "animal" and named_from:
        what += f" (named after {named_from}, the folder above the date folder)"
    text = f"{lead}: {what}, {_count(len(sheet), 'session')}"
    if guess.doubt and asked == "auto":
        other = "cohort" if layout == "animal" else "animal"
        text += (f"\nambiguous: {guess.doubt}; took it as {_WHAT[layout]}. If {shown} is {_WHAT[other]}, "
                 f"run again with --layout {other}")
    return text


def _cohort_rows(entries: list[Path], skipped: list) -> list[dict]:
    """Sheet rows of a cohort folder's ``entries``: every sub-folder is an animal."""
    rows = []
    for entry in entries:
        if entry.is_file():
            skipped.append((str(entry), "not a folder of an animal"))
        elif _BEHAVIOUR.search(entry.name):
            skipped.append((str(entry), "behaviour camera folder"))
        elif _STORE_DIR.search(entry.name):
            skipped.append((str(entry), "data store, not a recording"))
        else:
            rows += _animal_rows(entry, skipped)
    return rows


def discover_sessions(data_dir: str | Path, layout: str = "auto") -> Discovery:
    """Find animals and sessions under ``data_dir``.

    Parameters
    ----------
    data_dir : a cohort folder (sub-folders are animals) or one animal's folder (date-named
        sub-folders, Miniscope DAQ date/time trees, or session recordings directly inside).
    layout : "auto" (decide from the structure), "cohort" or "animal" (take it as such).

    Returns
    -------
    Discovery
        ``sheet`` with columns animal, session, path (absolute), order; ``skipped`` paths;
        ``layout`` taken; ``headline`` saying which and why.

    Raises
    ------
    InputError
        When ``layout`` is unknown, or ``data_dir`` does not exist or holds no recording.
    """
    if layout not in LAYOUTS:
        raise InputError(f"califlow init: layout {layout!r} must be one of {', '.join(LAYOUTS)}")
    root = Path(data_dir).resolve()
    if not root.is_dir():
        raise InputError(f"califlow init: {root} is not a folder")
    entries = _listing(root)
    guess = _guess_layout(root, entries)
    taken = guess.layout if layout == "auto" else layout
    skipped: list[tuple[str, str]] = []
    named_from = root
    if taken == "animal":
        named_from = next((p for p in (root, *root.parents) if not is_date_name(p.name)), root)
        rows = _animal_rows(root, skipped, named_from)
    else:
        rows = _cohort_rows(entries, skipped)
    if not rows:
        raise InputError(f"califlow init: no recording found under {root} (looked for chunk folders "
                         f"and files ending in {', '.join(sorted(MOVIE_FILES))})")
    sheet = pd.DataFrame(rows)
    above = str(named_from) if named_from != root else ""
    return Discovery(sheet, skipped, taken, _headline(str(data_dir), sheet, guess, taken, layout, above))
