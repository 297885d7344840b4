"""The sessions sheet: one row per recording session, grouped by animal.

Columns: ``animal``, ``session``, ``path`` (required), ``fps`` and ``order`` (optional), and the
NWB Subject columns ``subject_id``, ``species``, ``sex``, ``age``, ``genotype`` (optional, the
same on every row of an animal).
:func:`read_sessions` validates the sheet before any work starts and returns it sorted by
animal and by concatenation order; every problem is reported with its row, animal, session
and path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from califlow.errors import InputError
from califlow.params import sessions_schema

__all__ = ["REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "SUBJECT_COLUMNS", "describe_sources", "read_sessions", "subject_of",
           "sessions_from_files", "validate_sessions", "write_sessions"]

REQUIRED_COLUMNS = ("animal", "session", "path")
SUBJECT_COLUMNS = ("subject_id", "species", "sex", "age", "genotype")
OPTIONAL_COLUMNS = ("fps", "order") + SUBJECT_COLUMNS
_NAME = re.compile(sessions_schema()["properties"]["animal"]["pattern"])


def _row_label(row: pd.Series, index: int) -> str:
    return f"row {index + 2} (animal {row.get('animal')!r}, session {row.get('session')!r})"


def validate_sessions(sheet: pd.DataFrame, *, source: str = "sessions sheet",
                      check_paths: bool = True, base_dir: str | Path = ".",
                      may_be_missing: Iterable[str | Path] = (),
                      file_extension: str | None = None) -> pd.DataFrame:
    """Validate a sessions table and return it normalised and sorted.

    Parameters
    ----------
    sheet : DataFrame
        Table with at least ``animal``, ``session``, ``path``.
    source : str
        Name used in error messages (the sheet's file name).
    check_paths : bool
        Require every ``path`` to exist (relative to ``base_dir``).
    may_be_missing : iterable of path prefixes
        Paths under these prefixes may be absent (the workflow simulates the demo cohort).
    file_extension : str, optional
        When given, every existing recording is also probed without decoding
        (:func:`califlow.io.probe_recording`: empty files or folders, unsupported types).

    Returns
    -------
    DataFrame
        Columns animal, session, path, fps (float or NaN), order (int); sorted by animal,
        then order (sheet order when ``order`` is empty); index ``(animal, session)``.

    Raises
    ------
    InputError
        Naming the row, the column and the value at fault.
    """
    sheet = _with_all_columns(sheet, source)
    _check_subjects(sheet, source)
    prefixes = [Path(p) for p in may_be_missing]
    for i, row in sheet.reset_index(drop=True).iterrows():
        label = f"{source}: {_row_label(row, i)}"
        _check_row_values(row, label)
        if check_paths:
            _check_row_path(row, label, Path(base_dir), prefixes, file_extension)
    for col in ("animal", "session", "path"):
        sheet[col] = sheet[col].astype(str).str.strip()
    _check_unique_sessions(sheet, source)
    sheet["fps"] = pd.to_numeric(sheet["fps"], errors="coerce").astype(float)
    return _sorted_by_order(sheet, source).set_index(["animal", "session"], drop=False)


def _with_all_columns(sheet: pd.DataFrame, source: str) -> pd.DataFrame:
    """The sheet re-indexed from 0 with stripped column names and every optional column (None when absent).

    Raises
    ------
    InputError
        A required column is missing, a column is unknown, or the sheet has no rows.
    """
    sheet = sheet.reset_index(drop=True)
    sheet.columns = [str(c).strip() for c in sheet.columns]
    unknown = [c for c in sheet.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(map(repr, missing))}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
        raise InputError(f"{source}: {'; '.join(parts)}; expected columns "
                         f"{', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}")
    if sheet.empty:
        raise InputError(f"{source}: the sheet has no sessions")
    for col in ("fps", "order") + SUBJECT_COLUMNS:
        if col not in sheet.columns:
            sheet[col] = None
    return sheet


def _check_row_values(row: pd.Series, label: str) -> None:
    """One row's names (non-empty, allowed characters), ``fps`` (a number > 0) and ``order`` (an integer).

    ``label`` prefixes every message (source and row).
    """
    for col in ("animal", "session", "path"):
        value = row[col]
        if pd.isna(value) or str(value).strip() == "":
            raise InputError(f"{label}: column {col!r} is empty")
    for col in ("animal", "session"):
        if not _NAME.match(str(row[col])):
            raise InputError(f"{label}: {col} {str(row[col])!r} is not allowed; use letters, "
                             "digits, '_', '-' or '.', starting with a letter or digit")
    fps = row["fps"]
    if not (fps is None or pd.isna(fps)):
        try:
            fps_value = float(fps)
        except (TypeError, ValueError):
            raise InputError(f"{label}: fps {fps!r} is not a number") from None
        if not fps_value > 0:
            raise InputError(f"{label}: fps {fps!r} is not allowed; it must be > 0")
    order = row["order"]
    if not (order is None or pd.isna(order)):
        try:
            if float(order) != int(float(order)):
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"{label}: order {order!r} is not an integer") from None


def _check_row_path(row: pd.Series, label: str, base: Path, prefixes: list[Path],
                    file_extension: str | None) -> None:
    """The row's recording exists (relative paths under ``base``; paths under ``prefixes`` may be
    absent) and, with ``file_extension``, probes as a readable recording."""
    path = Path(str(row["path"]))
    full = path if path.is_absolute() else base / path
    exempt = any(_is_under(path, p) for p in prefixes)
    if not exempt and not full.exists():
        raise InputError(f"{label}: path {str(row['path'])!r} does not exist")
    if file_extension is not None and full.exists():
        from califlow.io.readers import probe_recording

        try:
            probe_recording(full, file_extension=file_extension)
        except InputError as exc:
            raise InputError(f"{label}: {exc}") from None


def _check_unique_sessions(sheet: pd.DataFrame, source: str) -> None:
    """Each (animal, session) pair appears once; the error names the pairs and their file rows."""
    dup = sheet.duplicated(["animal", "session"], keep=False)
    if dup.any():
        rows = [int(i) + 2 for i in sheet.index[dup.to_numpy()]]
        pairs = sorted({(a, s) for a, s in sheet.loc[dup, ["animal", "session"]].itertuples(index=False)})
        raise InputError(f"{source}: duplicate session name(s) {', '.join(f'{a}/{s}' for a, s in pairs)}"
                         + (f" (rows {', '.join(map(str, rows))})" if rows else "")
                         + "; each session of an animal needs a unique name")


def _sorted_by_order(sheet: pd.DataFrame, source: str) -> pd.DataFrame:
    """Sort by animal, then explicit ``order`` (rows without one after, in sheet order); renumber
    ``order`` 0, 1, ... per animal.

    Raises
    ------
    InputError
        Two sessions of an animal share an explicit order value.
    """
    sheet["sheet_position"] = range(len(sheet))
    order = pd.to_numeric(sheet["order"], errors="coerce")
    sheet["order"] = order.fillna(pd.Series(range(len(sheet)), index=sheet.index) + 10**9).astype(int)
    for animal, group in sheet.groupby("animal"):
        explicit = group["order"][group["order"] < 10**9]
        if explicit.duplicated().any():
            raise InputError(f"{source}: animal {animal!r}: two sessions share the same order value "
                             f"{int(explicit[explicit.duplicated()].iloc[0])}")
    sheet = sheet.sort_values(["animal", "order", "sheet_position"], kind="stable")
    sheet["order"] = sheet.groupby("animal").cumcount()
    return sheet.drop(columns="sheet_position")


def _check_subjects(sheet: pd.DataFrame, source: str) -> None:
    """Subject columns: allowed values, and one value per animal."""
    props = sessions_schema()["properties"]
    for i, row in sheet.iterrows():
        for col in ("sex", "age"):
            value = row[col]
            if value is None or pd.isna(value) or str(value).strip() == "":
                continue
            text = str(value).strip()
            ok = text in props["sex"]["enum"] if col == "sex" else re.match(props["age"]["pattern"], text)
            if not ok:
                raise InputError(f"{source}: {_row_label(row, int(i))}: {col} {text!r} is not allowed; "
                                 f"{props[col]['description']}")
    for col in SUBJECT_COLUMNS:
        filled = sheet[[col, "animal"]].dropna()
        filled = filled[filled[col].astype(str).str.strip() != ""]
        for animal, values in filled.groupby("animal")[col]:
            distinct = sorted(set(values.astype(str).str.strip()))
            if len(distinct) > 1:
                raise InputError(f"{source}: animal {animal!r}: column {col!r} differs between its rows "
                                 f"({', '.join(distinct)}); one animal is one subject")


def subject_of(sheet: pd.DataFrame, animal: str) -> dict:
    """The non-empty Subject columns of ``animal`` (``{"species": "Mus musculus", ...}``)."""
    rows = sheet[sheet["animal"] == animal]
    out = {}
    for col in SUBJECT_COLUMNS:
        if col in rows:
            vals = [str(v).strip() for v in rows[col] if v is not None and not pd.isna(v) and str(v).strip()]
            if vals:
                out[col] = vals[0]
    return out


def _is_under(path: Path, prefix: Path) -> bool:
    try:
        path.resolve().relative_to(prefix.resolve())
        return True
    except ValueError:
        return False


def read_sessions(path: str | Path, **kwargs) -> pd.DataFrame:
    """Read and validate a sessions sheet (TSV, or CSV by extension). See :func:`validate_sessions`."""
    p = Path(path)
    return validate_sessions(_read_table(p), source=f"sessions sheet {p}", **kwargs)


def _read_table(p: Path) -> pd.DataFrame:
    """The sheet as written (strings; row ``i`` of the table is line ``i + 2`` of the file)."""
    if not p.exists():
        raise InputError(f"sessions sheet {p} does not exist (set `sessions:` in the config, or run "
                         "`califlow init DATA_DIR` to write one)")
    sep = "," if p.suffix.lower() == ".csv" else "\t"
    try:
        return pd.read_csv(p, sep=sep, dtype=str, comment="#", skip_blank_lines=True,
                           keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"sessions sheet {p} cannot be parsed: {exc}") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"sessions sheet {p} is empty") from None


def describe_sources(config: dict, animal: str, session: str | None = None) -> str:
    """Name the recordings of ``animal`` (or of one ``session``) and where the sheet lists them.

    Used in error messages of jobs whose inputs are intermediates, so that the message also
    names the source: ``"animal m1, session s1: /data/m1/s1.avi (row 3 of sessions.tsv)"``.

    Parameters
    ----------
    config : dict
        The workflow config (``sessions`` sheet path, or ``general.input_files``).
    """
    sheet_path = Path(str(config.get("sessions") or ""))
    if sheet_path.is_file():
        table, where = _read_table(sheet_path), f"row {{}} of {sheet_path}"
        offset = 2
    else:
        general = config.get("general") or {}
        table = sessions_from_files(list(general.get("input_files") or []), general.get("output_files"))
        where, offset = "general.input_files[{}]", 0
    names = table["animal"].astype(str).str.strip(), table["session"].astype(str).str.strip()
    hit = (names[0] == animal) & ((names[1] == session) if session else True)
    rows = [(s, str(p).strip(), where.format(int(i) + offset))
            for i, s, p in zip(table.index[hit], names[1][hit], table["path"][hit])]
    if session and len(rows) == 1:
        s, p, w = rows[0]
        return f"animal {animal}, session {s}: {p} ({w})"
    listing = "; ".join(f"session {s}: {p} ({w})" for s, p, w in rows)
    return f"animal {animal}: {listing or 'not in the sessions sheet'}"


def sessions_from_files(input_files: list[str], output_files: list[str] | None = None,
                        animal: str = "animal") -> pd.DataFrame:
    """Build a one-animal sessions table from ``general.input_files`` (CaliAli style).

    Session names come from ``output_files`` when given, else from the file or folder names.
    """
    names = list(output_files or [])
    if not names:
        names = [re.sub(r"[^A-Za-z0-9_.-]", "_", Path(f).stem or Path(f).name) for f in input_files]
    return pd.DataFrame({"animal": animal, "session": names, "path": list(input_files)})


def write_sessions(sheet: pd.DataFrame, path: str | Path) -> Path:
    """Write a sessions table as TSV (columns animal, session, path, fps, order, and the Subject
    columns that hold a value)."""
    cols = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in sheet.columns
            and (c not in SUBJECT_COLUMNS or sheet[c].notna().any())]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sheet.reset_index(drop=True)[cols].to_csv(p, sep="\t", index=False)
    return p
