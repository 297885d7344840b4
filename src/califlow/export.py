"""Per-session exports of an animal's extraction: events table, trace tables, NWB, Inscopix.

The extraction (``cnmfe.zarr``) spans the concatenation of all sessions; this module splits
it back by the sessions' frame ranges (``sessions`` attrs: name, start, stop, fps) and
writes, for every session, files other tools read. Cell ``k`` has the same id (and the same
Inscopix name ``C{k:03d}``) in every session, so the exports carry the cross-session
tracking; each cell's curation ``status`` (``cells.csv``) reaches the Inscopix cell sets, the
NWB table and the events table.  A neuron inactive in a session (``active`` flags of ``cnmfe.zarr``) has no events
and no deconvolved activity there (S exported as 0); its raw trace is exported as measured.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from califlow.io.start_time import parse_start
from califlow.io.store import atomic_output, open_group

__all__ = ["SessionSlice", "session_slices", "active_spikes", "events_table", "trace_table", "cell_names",
           "load_extraction", "export_session", "write_events_csv", "event_mask", "cell_statuses", "nwb_columns"]

log = logging.getLogger("califlow")


@dataclass(frozen=True)
class SessionSlice:
    """Frames ``start:stop`` of the concatenation belong to session ``name`` (rate ``fps``)."""

    name: str
    start: int
    stop: int
    fps: float
    source: object = None


def session_slices(sessions: Sequence[dict]) -> list[SessionSlice]:
    """Parse the ``sessions`` attribute of ``aligned.zarr`` / ``cnmfe.zarr``."""
    out = [SessionSlice(str(s["name"]), int(s["start"]), int(s["stop"]), float(s["fps"]), s.get("source"))
           for s in sessions]
    for a, b in zip(out, out[1:]):
        if b.start != a.stop:
            raise ValueError(f"sessions {a.name} and {b.name} are not contiguous ({a.stop} != {b.start})")
    return out


def cell_names(n: int) -> list[str]:
    """Names of cells as in Inscopix files: C000, C001, ... (same cell, same name, every session)."""
    width = max(3, len(str(max(n - 1, 0))))
    return [f"C{k:0{width}d}" for k in range(n)]


def event_mask(S: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Frames that hold an event: ``S >= threshold`` (and S > 0).

    CNMF-E traces are in noise units, so ``threshold`` is the smallest event amplitude
    reported, in noise standard deviations (``export.event_threshold``).
    """
    return (S > 0) & (threshold <= S)


def active_spikes(S: np.ndarray, sessions: Sequence[SessionSlice], active: np.ndarray | None) -> np.ndarray:
    """``S`` (K, T) with each cell's frames set to 0 in the sessions where ``active`` (K, n_sessions) is False.

    ``active`` None (an extraction without flags) returns ``S`` itself.
    """
    if active is None:
        return S
    active = np.asarray(active, bool)
    if active.shape != (S.shape[0], len(sessions)):
        raise ValueError(f"active flags have shape {active.shape}, expected {(S.shape[0], len(sessions))}")
    out = np.array(S, copy=True)
    for j, s in enumerate(sessions):
        out[~active[:, j], s.start:s.stop] = 0
    return out


def events_table(S: np.ndarray, sessions: Sequence[SessionSlice], threshold: float = 0.0,
                 active: np.ndarray | None = None, statuses: Sequence[str] | None = None) -> pd.DataFrame:
    """Events (:func:`event_mask`) as a long table.

    Parameters
    ----------
    S : ndarray (K, T)
        Deconvolved activity over the concatenation.
    sessions : list of SessionSlice
    threshold : float
        Smallest event amplitude reported (noise units for CNMF-E traces).
    active : ndarray (K, n_sessions) bool, optional
        Per-session activity flags (``cnmfe.zarr`` ``active``): no events where False.
    statuses : sequence of str (K,), optional
        Curation status of each cell (:func:`cell_statuses`): adds a ``status`` column.

    Returns
    -------
    DataFrame
        Columns ``cell`` (int id), ``session``, ``frame`` (within the session), ``time_s``
        (frame / fps), ``amplitude`` (and ``status``); sorted by session, frame, cell.
    """
    S = active_spikes(S, sessions, active)
    frames = []
    for s in sessions:
        cells, t = np.nonzero(event_mask(S[:, s.start:s.stop], threshold))
        frames.append(pd.DataFrame({
            "cell": cells.astype(np.int64), "session": s.name, "frame": t.astype(np.int64),
            "time_s": t / s.fps, "amplitude": S[cells, s.start + t].astype(np.float64),
        }))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["cell", "session", "frame", "time_s", "amplitude"])
    if statuses is not None:
        table["status"] = np.asarray(list(statuses), dtype=object)[table["cell"].to_numpy(np.int64)] \
            if len(table) else pd.Series(dtype=object)
    order = {s.name: i for i, s in enumerate(sessions)}
    table["_o"] = table["session"].map(order)
    return table.sort_values(["_o", "frame", "cell"], kind="stable").drop(columns="_o").reset_index(drop=True)


def write_events_csv(S: np.ndarray, sessions: Sequence[SessionSlice], path: str | Path,
                     threshold: float = 0.0, active: np.ndarray | None = None,
                     statuses: Sequence[str] | None = None) -> Path:
    """Write :func:`events_table` to ``path`` atomically."""
    table = events_table(S, sessions, threshold, active, statuses)
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def trace_table(traces: np.ndarray, s: SessionSlice) -> pd.DataFrame:
    """One session's traces as a wide table: frame, time_s, then one column per cell."""
    seg = traces[:, s.start:s.stop]
    t = np.arange(seg.shape[1])
    data = {"frame": t, "time_s": t / s.fps}
    data.update({name: seg[k] for k, name in enumerate(cell_names(len(traces)))})
    return pd.DataFrame(data)


def load_extraction(path: str | Path) -> dict:
    """Read ``cnmfe.zarr`` into memory-light numpy arrays (footprints and traces are small)."""
    g = open_group(path)
    out = {name: np.asarray(g[name][...]) for name in ("A", "C", "C_raw", "S") if name in g}
    for name in ("Cn", "PNR", "b0", "active"):
        if name in g:
            out[name] = np.asarray(g[name][...])
    out["attrs"] = dict(g.attrs)
    out["sessions"] = session_slices(out["attrs"]["sessions"])
    return out


def _present(S: np.ndarray, s: SessionSlice, threshold: float) -> np.ndarray:
    return event_mask(S[:, s.start:s.stop], threshold).any(axis=1)


def _export_csv(out: Path, s: SessionSlice, C_raw: np.ndarray, C: np.ndarray, S: np.ndarray) -> list[Path]:
    """``traces_raw.csv``, ``traces.csv`` and ``spikes.csv`` of session ``s`` in ``out``."""
    written = []
    for name, traces in (("traces_raw.csv", C_raw), ("traces.csv", C), ("spikes.csv", S)):
        path = out / name
        with atomic_output(path) as tmp:
            trace_table(traces, s).to_csv(tmp, index=False, float_format="%.6g")
        written.append(path)
    return written


def export_session(extraction: dict, session: str, out_dir: str | Path, *, metadata: dict,
                   images: dict | None = None, source_files: Sequence[str] = (),
                   frames_per_file: Sequence[int] = (), raw_fps: float | None = None,
                   formats: Sequence[str] = ("csv", "nwb", "isxd"), cells: pd.DataFrame | None = None,
                   event_threshold: float = 0.0, start_time: str | None = None) -> list[Path]:
    """Write one session's exports into ``out_dir``.

    Files: ``traces_raw.csv`` (C_raw), ``traces.csv`` (C), ``spikes.csv`` (S, 0 where the
    extraction's ``active`` flag says the cell is inactive in the session, with no events there); with "nwb"
    ``sub-{animal}_ses-{session}_ophys.nwb`` (DANDI naming); with "isxd" ``cellset_raw.isxd``,
    ``cellset_denoised.isxd``, ``neural_events.isxd`` (IDEAS naming; cell names C000… shared by
    all sessions). ``start_time`` (ISO 8601, from the recording: :mod:`califlow.io.start_time`)
    becomes the NWB ``session_start_time`` and the isxd start.  ``cells`` (``cells.csv``, one
    row per cell) gives the curation ``status`` of the Inscopix cell sets and the NWB
    PlaneSegmentation's ``snr``, ``status``, ``reason`` and metric columns (this session's
    per-session metrics without their ``_<session>`` suffix); without it every cell is accepted.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = next((x for x in extraction["sessions"] if x.name == session), None)
    if s is None:
        raise KeyError(f"session {session!r} is not in the extraction (sessions: "
                       f"{', '.join(x.name for x in extraction['sessions'])})")
    A, C, C_raw = extraction["A"], extraction["C"], extraction["C_raw"]
    S = active_spikes(extraction["S"], extraction["sessions"], extraction.get("active"))
    K = A.shape[0]
    written: list[Path] = []
    if "csv" in formats:
        written += _export_csv(out, s, C_raw, C, S)
    present = _present(S, s, event_threshold)
    seg = slice(s.start, s.stop)
    mask = event_mask(S[:, seg], event_threshold)
    events = [(np.flatnonzero(mask[k]), S[k, seg][mask[k]]) for k in range(K)]
    if "nwb" in formats:
        from califlow.io.nwb_writer import NWBSession, write_session_nwb

        animal = extraction["attrs"].get("animal", out.parent.parent.name)
        nwb = NWBSession(
            animal=str(animal), session=s.name, footprints=A.astype(np.float32),
            raw=C_raw[:, seg], denoised=C[:, seg], deconvolved=S[:, seg], fps=s.fps, events=events,
            cell_ids=list(range(K)), present=present,
            snr=np.zeros(K) if cells is None else cells["snr"].to_numpy(float),
            columns=nwb_columns(cells, s.name),
            images=images or {}, source_files=list(source_files), frames_per_file=list(frames_per_file),
            raw_fps=raw_fps, start_time=parse_start(start_time) if start_time else None,
        )
        path = out / nwb_name(str(animal), s.name)
        write_session_nwb(path, nwb, metadata)
        written.append(path)
    if "isxd" in formats:
        start_s = parse_start(start_time).timestamp() if start_time else 0.0
        written += _export_isxd(A, C_raw[:, seg], C[:, seg], events, s, out, start_s, cell_statuses(cells, K))
    return written


def cell_statuses(cells: pd.DataFrame | None, n_cells: int) -> list[str]:
    """Curation status of each of ``n_cells`` cells from ``cells.csv`` (all accepted without it)."""
    if cells is None or "status" not in cells:
        return ["accepted"] * n_cells
    if len(cells) != n_cells:
        raise ValueError(f"cells.csv has {len(cells)} rows for {n_cells} cells in the extraction")
    return [str(v) for v in cells.sort_values("cell")["status"]]


def nwb_columns(cells: pd.DataFrame | None, session: str) -> dict:
    """PlaneSegmentation columns from ``cells.csv``: name -> (description, values (K,)).

    Per-cell metrics and ``status``/``reason`` keep their names; ``<metric>_<session>`` of this
    session become ``<metric>``; other sessions' columns, ids and centroids are left out.
    """
    from califlow.cell_metrics import DESCRIPTIONS, SESSION_METRICS

    if cells is None:
        return {}
    cells = cells.sort_values("cell")
    out = {}
    for name in ("area_px", "elongation", "bv_overlap", "background_ratio", "nn_cell", "nn_distance_px",
                 "nn_trace_corr", "status", "reason"):
        if name in cells:
            values = cells[name].fillna("").astype(str) if name in ("status", "reason") else cells[name]
            out[name] = (DESCRIPTIONS[name], values.to_numpy())
    for metric in SESSION_METRICS:
        col = f"{metric}_{session}"
        if col in cells and metric not in ("active", "snr"):  # present and snr are columns already
            out[f"session_{metric}"] = (DESCRIPTIONS[metric] + " (this session)", cells[col].to_numpy())
    return out


def nwb_name(animal: str, session: str) -> str:
    """DANDI file name ``sub-<animal>_ses-<session>_ophys.nwb`` (labels: letters, digits, ``-``)."""
    def label(x: str) -> str:
        return re.sub(r"[^A-Za-z0-9-]+", "-", x).strip("-") or "x"
    return f"sub-{label(animal)}_ses-{label(session)}_ophys.nwb"


def _export_isxd(A, raw, denoised, events, s: SessionSlice, out: Path, start_s: float,
                 statuses: list[str]) -> list[Path]:
    from califlow.io import isxd

    K, H, W = A.shape
    T = raw.shape[1]
    names = cell_names(K)
    timing = isxd.Timing(num_samples=T, period_s=1.0 / s.fps, start_s=start_s)
    written = []
    for fname, traces in (("cellset_raw.isxd", raw), ("cellset_denoised.isxd", denoised)):
        path = out / fname
        cs = isxd.CellSet(images=A.astype(np.float32), traces=traces.astype(np.float32), names=names,
                          statuses=statuses, timing=timing, spacing=(H, W), extra_properties={})
        with atomic_output(path) as tmp:
            isxd.write_cellset(tmp, cs)
        written.append(path)
    period_us = 1e6 / s.fps
    es = isxd.EventSet(names=names,
                       offsets_us=[np.rint(f * period_us).astype(np.uint64) for f, _ in events],
                       amplitudes=[np.asarray(a, dtype=np.float32) for _, a in events],
                       timing=timing, extra_properties={})
    path = out / "neural_events.isxd"
    with atomic_output(path) as tmp:
        isxd.write_eventset(tmp, es)
    written.append(path)
    return written
