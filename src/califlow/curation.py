"""Curation of the cells: documented automatic rules, then the user's own decisions.

Every cell of ``cells.csv`` gets ``status`` (``accepted``, ``rejected`` or ``undecided``, the
statuses Inscopix reads) and ``reason`` (the rules that fired, ``"; "``-separated; empty for
an accepted cell).  The rules read the metrics of :mod:`califlow.cell_metrics` and the
``curation`` group of the configuration (``null`` switches a rule off):

=====================  ==========  =====================================================
rule (reason)          outcome     fires when
=====================  ==========  =====================================================
``too small``          rejected    half-maximum equivalent diameter < ``min_size`` x the
                                   neuron diameter
``too large``          rejected    ... > ``max_size`` x the neuron diameter
``elongated``          rejected    ``elongation`` > ``max_elongation`` (vessel-like)
``on vessel``          rejected    ``bv_overlap`` > ``max_bv_overlap`` and the cell is
                                   active in no session (a neuron under a vessel has
                                   calcium transients and stays)
``low SNR``            rejected    the largest per-session ``snr`` < ``min_snr``
``background``         rejected    ``background_ratio`` > ``max_background_ratio``
``inconsistent         undecided   median ``fp_corr`` over the active sessions <
footprint``                        ``min_footprint_corr``
``merge risk``         undecided   nearest cell closer than ``merge_distance`` x the
                                   diameter with ``nn_trace_corr`` > ``merge_corr``
=====================  ==========  =====================================================

The neuron diameter is the measured one (``neuron_size.json``) when there is one, else
``DIAMETER_PER_GSIG`` x gSig.  A rejected rule outranks an undecided one.

Manual decisions (:func:`read_manual`, :func:`apply_manual`) come last and win: a CSV with
columns ``cell`` and ``status`` (and optionally ``reason``), such as ``cells.csv`` itself
edited in a spreadsheet, or the cell browser's download.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from califlow.errors import InputError

__all__ = ["STATUSES", "RULES", "curate", "read_manual", "apply_manual"]

#: Cell statuses, as Inscopix cell sets spell them.
STATUSES = ("accepted", "undecided", "rejected")
#: Rule name -> (config key, outcome).
RULES = {
    "too small": ("min_size", "rejected"),
    "too large": ("max_size", "rejected"),
    "elongated": ("max_elongation", "rejected"),
    "on vessel": ("max_bv_overlap", "rejected"),
    "low SNR": ("min_snr", "rejected"),
    "background": ("max_background_ratio", "rejected"),
    "inconsistent footprint": ("min_footprint_corr", "undecided"),
    "merge risk": ("merge_corr", "undecided"),
}


def _session_columns(table: pd.DataFrame, metric: str, sessions: Sequence[str]) -> np.ndarray:
    """(K, n_sessions) values of ``<metric>_<session>`` columns."""
    return np.stack([table[f"{metric}_{s}"].to_numpy(float) for s in sessions], axis=1) if sessions else \
        np.zeros((len(table), 0))


def _median_where(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Row medians of x over the entries where ``keep`` is True (NaN where none)."""
    y = np.where(keep & np.isfinite(x), x, np.nan)
    out = np.full(len(x), np.nan)
    rows = np.isfinite(y).any(axis=1)
    out[rows] = np.nanmedian(y[rows], axis=1)
    return out


def _rule_hits(table: pd.DataFrame, sessions: Sequence[str], opts: Mapping, diameter: float) -> dict:
    """Rule name -> (K,) bool of the cells it fires on (rules switched off are absent)."""
    eq_diameter = 2 * np.sqrt(table["area_px"].to_numpy(float) / np.pi)
    snr = _session_columns(table, "snr", sessions)
    active = _session_columns(table, "active", sessions) > 0
    fp = _median_where(_session_columns(table, "fp_corr", sessions), active)
    metric = {
        "too small": (eq_diameter, lambda v, t: v < t * diameter),
        "too large": (eq_diameter, lambda v, t: v > t * diameter),
        "elongated": (table["elongation"].to_numpy(float), lambda v, t: v > t),
        "on vessel": (np.where(active.any(axis=1), 0.0, table["bv_overlap"].to_numpy(float)), lambda v, t: v > t),
        "low SNR": (snr.max(axis=1, initial=0.0), lambda v, t: v < t),
        "background": (table["background_ratio"].to_numpy(float), lambda v, t: v > t),
        "inconsistent footprint": (fp, lambda v, t: v < t),
    }
    hits = {}
    for name, (values, fires) in metric.items():
        limit = opts.get(RULES[name][0])
        if limit is not None:
            with np.errstate(invalid="ignore"):
                hits[name] = fires(values, float(limit)) & np.isfinite(values)
    if opts.get("merge_corr") is not None and opts.get("merge_distance") is not None:
        close = table["nn_distance_px"].to_numpy(float) < float(opts["merge_distance"]) * diameter
        with np.errstate(invalid="ignore"):
            hits["merge risk"] = close & (table["nn_trace_corr"].to_numpy(float) > float(opts["merge_corr"]))
    return hits


def curate(table: pd.DataFrame, sessions: Sequence[str], options: Mapping, diameter: float) -> pd.DataFrame:
    """Copy of ``table`` with ``status`` and ``reason`` from the rules of the module docstring.

    Parameters
    ----------
    table : DataFrame
        :func:`califlow.cell_metrics.cell_table`.
    sessions : sequence of str
        Session names (the ``<metric>_<session>`` columns).
    options : mapping
        The ``curation`` group of the resolved configuration.
    diameter : float
        Neuron diameter (px) the size rules compare with.
    """
    out = table.copy()
    K = len(out)
    reasons = [[] for _ in range(K)]
    status = np.full(K, "accepted", dtype=object)
    if options["enabled"]:
        for name, fired in _rule_hits(out, sessions, options, diameter).items():
            outcome = RULES[name][1]
            for k in np.flatnonzero(fired):
                reasons[k].append(name)
                if outcome == "rejected" or status[k] == "accepted":
                    status[k] = outcome
    out["status"] = status
    out["reason"] = ["; ".join(r) for r in reasons]
    return out


def read_manual(path: str | Path, n_cells: int) -> pd.DataFrame:
    """Manual statuses from a CSV (columns ``cell``, ``status``, optional ``reason``).

    Raises
    ------
    InputError
        Naming the file and the row (1-based, header = row 1) of a bad cell id or status.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"status": str, "reason": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot read the manual curation table ({exc})") from None
    missing = {"cell", "status"} - set(table.columns)
    if missing:
        raise InputError(f"{path}: the manual curation table lacks column(s) {sorted(missing)} "
                         f"(it needs 'cell' and 'status'; has {list(table.columns)})")
    cells = pd.to_numeric(table["cell"], errors="coerce")
    for i, (cell, st) in enumerate(zip(cells, table["status"].str.strip().str.lower())):
        if not np.isfinite(cell) or cell != int(cell) or not 0 <= cell < n_cells:
            raise InputError(f"{path}, row {i + 2}: cell {table['cell'].iloc[i]} is not a cell id "
                             f"(0..{n_cells - 1})")
        if st not in STATUSES:
            raise InputError(f"{path}, row {i + 2}: status {table['status'].iloc[i]!r} is not one of "
                             f"{', '.join(STATUSES)}")
    reason = table["reason"] if "reason" in table else pd.Series([""] * len(table))
    return pd.DataFrame({"cell": cells.astype(int), "status": table["status"].str.strip().str.lower(),
                         "reason": reason.astype(str)})


def apply_manual(table: pd.DataFrame, manual: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``table`` where the cells of ``manual`` take its status.

    A changed status gets the reason ``manual`` (followed by the manual table's own reason
    when it differs from the automatic one); an unchanged one keeps its reason.
    """
    out = table.copy()
    idx = out.index[out["cell"].isin(manual["cell"])]
    man = manual.drop_duplicates("cell", keep="last").set_index("cell")
    for i in idx:
        cell = int(out.at[i, "cell"])
        new = man.at[cell, "status"]
        if new != out.at[i, "status"]:
            note = str(man.at[cell, "reason"]).strip()
            keep = note and note != out.at[i, "reason"] and note != "manual"
            out.at[i, "reason"] = f"manual: {note}" if keep else "manual"
            out.at[i, "status"] = new
    return out
