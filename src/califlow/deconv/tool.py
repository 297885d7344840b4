"""The spike-extraction tool: ``califlow deconvolve INPUT... [--param value ...] --out DIR``.

Every input is processed independently (one set of outputs per input, or per session of a
``cnmfe.zarr``), with the parameters of the ``spike_extraction`` config group (the CaImAn
spike extraction tool's names and defaults).

Inputs
  ``*.isxd``   Inscopix cell set (one file or a series); NaN samples = dropped frames.
  ``*.nwb``    ``RoiResponseSeries`` (time x cells) of an NWB file (``--nwb-series`` picks one).
  ``*.csv``    frames as rows, one column per cell; an optional first column whose name holds
               "time" gives the timestamps (s); a second header row of cell statuses
               (accepted/undecided/rejected), as Inscopix exports write it, is read.
  ``*.npy``    (cells, frames) array.
  ``*.zarr``   our ``cnmfe.zarr`` (``C_raw`` (K, T) and attrs ``sessions``): one output set per
               session.

Outputs in ``--out`` (``NAME`` = input file stem, or the session name for ``cnmfe.zarr``):
  denoised traces ``c + c1 h`` (baseline removed), in the input's format:
    ``NAME.denoised.isxd``  isxd cell set (footprints, names, statuses, timing and extra
               properties kept; NaN at dropped samples as in the input);
    ``NAME.denoised.nwb``   the input NWB file with a ``CaliflowDeconvolution`` container
               (``Denoised``, ``Deconvolved``) added to ``processing/ophys``;
    ``NAME.denoised.csv``   (CSV input) time column then one column per cell;
    ``NAME.denoised.npy`` + ``NAME.spikes.npy``  (NPY input) (cells, frames) float32;
    ``NAME.deconv.zarr``    (cnmfe.zarr input, one per session) ``C`` and ``S`` (K, T) float32,
               attrs: cell names, fps, first frame in the concatenated recording, parameters;
  ``NAME.events.isxd``  (isxd input) event set: time and amplitude of every ``s > 0``;
  ``NAME.events.csv``   events table: cell, session, frame, time_s, amplitude;
  ``NAME.params.csv``   per cell: status, ok, g, sn, b, c1, lam, s_min used, error message.
Cells that cannot be deconvolved (constant, all NaN, ...) are warned about, written as NaN
and listed in ``params.csv``; they never stop the other cells.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from califlow.deconv.foopsi import BatchResult, deconvolve_batch
from califlow.errors import ConfigError, InputError
from califlow.progress import CONSOLE

__all__ = ["TraceSet", "read_inputs", "run_spike_extraction", "spike_params", "summary_line", "add_cli"]

log = logging.getLogger("califlow.deconv.tool")

GROUP = "spike_extraction"
INPUT_SUFFIXES = (".isxd", ".nwb", ".csv", ".npy", ".zarr")


@dataclass
class TraceSet:
    """Traces of one output unit (an input file or one session of a cnmfe.zarr).

    Attributes
    ----------
    name : str
        Stem of the output files.
    traces : float64 (K, T)
        Raw traces, NaN at missing samples.
    cell_names : list of str
    statuses : list of str
        'accepted' | 'undecided' | 'rejected' per cell.
    period_s : float or None
        Sampling period (s); None when unknown (times are then not written).
    kind : str
        'isxd' | 'nwb' | 'csv' | 'npy' | 'zarr'.
    source : Path
        The input file or store.
    session : str
        Session name written in the events table.
    timestamps : float64 (T,) or None
        Sample times (s) relative to the first sample, when the input gives them.
    extra : dict
        Kind-specific data for the writers (the isxd CellSet, the NWB series name, ...).
    """

    name: str
    traces: np.ndarray
    cell_names: list
    statuses: list
    period_s: float | None
    kind: str
    source: Path
    session: str
    timestamps: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def times(self) -> np.ndarray | None:
        """Time (s) of every sample from the first one, or None when unknown."""
        if self.timestamps is not None:
            return self.timestamps
        if self.period_s:
            return np.arange(self.traces.shape[1]) * self.period_s
        return None


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------
def spike_params(config: Mapping | None = None) -> dict:
    """Resolved ``spike_extraction`` group (defaults filled, 'auto' -> None, g a list).

    Accepts a raw group (as in config.yaml) or an already resolved one (None for 'auto');
    ``optimize_g: true`` means the default number of events, an integer that many
    (:func:`califlow.params.resolve_config`).
    """
    from califlow.params import resolve_config

    return resolve_config({GROUP: dict(config or {})})[GROUP]


def _deconv_kwargs(se: Mapping) -> dict:
    p = int(se["p"])
    g = se.get("g")
    if g is not None and p > 0 and len(g) != p:
        raise ConfigError(f"config key '{GROUP}.g': value {g!r} has {len(g)} value(s) but p = {p} "
                          f"needs {p}")
    n_refit = int(se.get("optimize_g") or 0)
    if n_refit and se["method_deconvolution"] != "oasis":
        raise ConfigError(f"config key '{GROUP}.optimize_g': applies only to method_deconvolution "
                          "'oasis'")
    return dict(p=p, g=g, sn=se.get("sn"), bl=se.get("bl"), c1=se.get("c1"), s_min=se.get("s_min"),
                bas_nonneg=bool(se["bas_nonneg"]), optimize_g=n_refit,
                noise_range=tuple(se["noise_range"]), noise_method=se["noise_method"],
                lags=int(se["lags"]), fudge_factor=float(se["fudge_factor"]),
                method=se["method_deconvolution"], solvers=tuple(se["solvers"]))


# --------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------
def _cell_names(K: int) -> list[str]:
    width = max(3, len(str(max(K - 1, 0))))
    return [f"C{k:0{width}d}" for k in range(K)]


def _read_isxd(path: Path) -> list[TraceSet]:
    from califlow.io.isxd import read_cellset

    cs = read_cellset(path)
    traces = cs.traces.astype(np.float64)
    invalid = cs.timing.invalid_indices()
    if invalid.size:
        traces[:, invalid[invalid < traces.shape[1]]] = np.nan
    return [TraceSet(name=path.stem, traces=traces, cell_names=list(cs.names), statuses=list(cs.statuses),
                     period_s=float(cs.timing.period_s), kind="isxd", source=path, session=path.stem,
                     extra={"cellset": cs})]


def _read_npy(path: Path, fps: float | None) -> list[TraceSet]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{path}: expected a numeric (cells, frames) array, got {arr.dtype} {arr.shape}")
    K = arr.shape[0]
    return [TraceSet(name=path.stem, traces=arr.astype(np.float64), cell_names=_cell_names(K),
                     statuses=["undecided"] * K, period_s=1.0 / fps if fps else None, kind="npy",
                     source=path, session=path.stem)]


_STATUSES = ("accepted", "undecided", "rejected")


def _read_csv(path: Path, fps: float | None) -> list[TraceSet]:
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({exc})") from None
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise InputError(f"{path}: the CSV holds no traces")
    cols = [str(c).strip() for c in df.columns]
    time_col = "time" in cols[0].lower()
    statuses = None
    first = [str(v).strip().lower() for v in df.iloc[0, 1 if time_col else 0:]]
    if first and all(v in _STATUSES for v in first):
        statuses = first
        df = df.iloc[1:]
    cell_cols = cols[1:] if time_col else cols
    if not cell_cols:
        raise InputError(f"{path}: the CSV has a time column but no cell columns")

    def numeric(block, what: str) -> np.ndarray:
        text = block.replace({"": "nan", "NaN": "nan", "nan": "nan"})
        try:
            return text.astype(np.float64).to_numpy()
        except ValueError:
            bad = ~text.apply(lambda s: pd.to_numeric(s, errors="coerce")).notna() & \
                (text.apply(lambda s: s.str.lower()) != "nan")
            r, c = np.argwhere(bad.to_numpy())[0]
            raise InputError(f"{path}: {what} value {text.iloc[r, c]!r} in data row {r + 1}, column "
                             f"{block.columns[c]!r} is not a number") from None

    values = numeric(df.iloc[:, 1:] if time_col else df, "trace")
    timestamps = None
    period = 1.0 / fps if fps else None
    if time_col:
        t = numeric(df.iloc[:, :1], "time")[:, 0]
        if np.isfinite(t).sum() >= 2:
            timestamps = t - t[np.isfinite(t)][0]
            period = float(np.nanmedian(np.diff(t)))
            if not period > 0:
                raise InputError(f"{path}: the time column {cols[0]!r} does not increase")
    K = len(cell_cols)
    return [TraceSet(name=path.stem, traces=values.T.copy(), cell_names=cell_cols,
                     statuses=statuses or ["undecided"] * K, period_s=period, kind="csv", source=path,
                     session=path.stem, timestamps=timestamps)]


def _roi_series(nwb) -> dict:
    from pynwb.ophys import RoiResponseSeries

    out = {}
    for obj in nwb.objects.values():
        if isinstance(obj, RoiResponseSeries):
            out[f"{obj.parent.name}/{obj.name}" if obj.parent is not None else obj.name] = obj
    return out


def _read_nwb(path: Path, series_name: str | None) -> list[TraceSet]:
    from pynwb import NWBHDF5IO

    try:
        io = NWBHDF5IO(str(path), mode="r", load_namespaces=True)
        nwb = io.read()
    except Exception as exc:  # pynwb raises many kinds for a file that is not NWB
        raise InputError(f"{path}: not a readable NWB file ({type(exc).__name__}: {exc})") from None
    try:
        series = _roi_series(nwb)
        if not series:
            raise InputError(f"{path}: no RoiResponseSeries found (expected fluorescence traces under "
                             "processing/ophys)")
        if series_name:
            picked = [k for k in series if k == series_name or k.split("/")[-1] == series_name]
            if not picked:
                raise InputError(f"{path}: no RoiResponseSeries named {series_name!r}; found: "
                                 + ", ".join(sorted(series)))
            key = picked[0]
        else:
            key = "Fluorescence/RoiResponseSeries" if "Fluorescence/RoiResponseSeries" in series \
                else sorted(series)[0]
            if len(series) > 1:
                log.warning("%s: %d RoiResponseSeries found, using %s (choose with --nwb-series)",
                            path, len(series), key)
        s = series[key]
        data = np.asarray(s.data[:], dtype=np.float64)
        if data.ndim == 1:
            data = data[:, None]
        traces = data.T.copy()
        K, T = traces.shape
        roi_idx = np.asarray(s.rois.data[:], dtype=np.int64)
        try:
            ids = np.asarray(s.rois.table.id[:])[roi_idx]
            names = [f"roi{int(i)}" for i in ids]
        except Exception:  # a region without ids: name by position
            names = _cell_names(K)
        if len(names) != K:
            names = _cell_names(K)
        timestamps = None
        if s.timestamps is not None:
            ts = np.asarray(s.timestamps[:], dtype=np.float64)
            timestamps = ts - ts[0]
            period = float(np.median(np.diff(ts))) if ts.size > 1 else None
        else:
            period = 1.0 / float(s.rate) if s.rate else None
        return [TraceSet(name=path.stem, traces=traces, cell_names=names, statuses=["undecided"] * K,
                         period_s=period, kind="nwb", source=path, session=path.stem,
                         timestamps=timestamps, extra={"series": key})]
    finally:
        io.close()


def _read_zarr(path: Path) -> list[TraceSet]:
    from califlow.io.store import open_group

    group = open_group(path)
    if "C_raw" not in group:
        raise InputError(f"{path}: no C_raw array; expected a califlow cnmfe.zarr")
    craw = group["C_raw"]
    if len(craw.shape) != 2:
        raise InputError(f"{path}: C_raw has shape {craw.shape}; expected (cells, frames)")
    K, T = craw.shape
    sessions = group.attrs.get("sessions") or [{"name": path.stem, "start": 0, "stop": T, "fps": None}]
    names = _cell_names(K)
    out = []
    for sess in sessions:
        try:
            start, stop = int(sess["start"]), int(sess["stop"])
            sname = str(sess["name"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: attrs 'sessions' entry {sess!r} lacks name/start/stop") from None
        if not (0 <= start < stop <= T):
            raise InputError(f"{path}: session {sname!r} spans frames [{start}, {stop}) outside the "
                             f"{T} frames of C_raw")
        fps = sess.get("fps")
        out.append(TraceSet(name=sname, traces=np.asarray(craw[:, start:stop], dtype=np.float64),
                            cell_names=names, statuses=["accepted"] * K,
                            period_s=1.0 / float(fps) if fps else None, kind="zarr", source=path,
                            session=sname, extra={"start": start}))
    return out


def read_inputs(paths: Sequence[str | Path], *, fps: float | None = None,
                nwb_series: str | None = None) -> list[TraceSet]:
    """Read every input into :class:`TraceSet` units (see the module docstring for formats).

    Output names are made unique by appending ``.1``, ``.2``... when two inputs share a stem.
    """
    units: list[TraceSet] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"{path}: input does not exist")
        suffix = path.suffix.lower()
        if suffix == ".isxd":
            units += _read_isxd(path)
        elif suffix == ".nwb":
            units += _read_nwb(path, nwb_series)
        elif suffix == ".csv":
            units += _read_csv(path, fps)
        elif suffix == ".npy":
            units += _read_npy(path, fps)
        elif suffix == ".zarr" or (path.is_dir() and (path / "zarr.json").exists()):
            units += _read_zarr(path)
        else:
            raise InputError(f"{path}: unsupported input; expected one of " + ", ".join(INPUT_SUFFIXES))
    seen: dict[str, int] = {}
    for u in units:
        n = seen.get(u.name, 0)
        seen[u.name] = n + 1
        if n:
            u.name = f"{u.name}.{n}"
    return units


# --------------------------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------------------------
def _atomic_file(path: Path):
    from califlow.io.store import atomic_output

    return atomic_output(path)


def _csv_field(text: str) -> str:
    text = str(text)
    return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\n') else text


def _write_events_csv(unit: TraceSet, S: np.ndarray, ok: np.ndarray, path: Path) -> Path:
    """Events table: one row per ``s > 0`` sample: cell, session, frame, time_s, amplitude."""
    times = unit.times()
    session = _csv_field(unit.session)
    with _atomic_file(path) as tmp, open(tmp, "w") as fh:
        fh.write("cell,session,frame,time_s,amplitude\n")
        for k in np.flatnonzero(ok):  # loop over cells; rows are formatted by numpy
            idx = np.flatnonzero(S[k] > 0)
            if idx.size == 0:
                continue
            t = times[idx] if times is not None else np.full(idx.size, np.nan)
            prefix = f"{_csv_field(unit.cell_names[k])},{session},".replace("%", "%%")
            np.savetxt(fh, np.column_stack([idx, t, S[k, idx].astype(np.float64)]),
                       fmt=prefix + "%d,%.6f,%.7g")
    return path


def _params_table(unit: TraceSet, res: BatchResult, p: int):
    import pandas as pd

    data: dict[str, Any] = {"cell": unit.cell_names, "status": unit.statuses, "ok": res.ok}
    for i in range(p):
        data[f"g{i + 1}"] = res.g[:, i]
    data.update({"sn": res.sn, "b": res.b, "c1": res.c1, "lam": res.lam, "s_min": res.s_min,
                 "error": [res.errors.get(k, "") for k in range(len(unit.cell_names))]})
    df = pd.DataFrame(data)
    bad = ~res.ok
    for col in [c for c in df.columns if c[:1] == "g" or c in ("sn", "b", "c1", "lam", "s_min")]:
        df.loc[bad, col] = np.nan
    return df


def _write_csv(df, path: Path) -> Path:
    with _atomic_file(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def _denoised_with_gaps(unit: TraceSet, res: BatchResult) -> np.ndarray:
    den = np.array(res.C, dtype=np.float32, copy=True)
    den[~res.ok] = np.nan
    den[np.isnan(unit.traces)] = np.nan  # missing input samples stay missing
    return den


def _write_isxd_outputs(unit: TraceSet, den: np.ndarray, res: BatchResult, out: Path) -> list[Path]:
    from dataclasses import replace

    from califlow.io.isxd import EventSet, write_cellset, write_eventset

    cs = unit.extra["cellset"]
    den_cs = replace(cs, traces=den)
    paths = []
    target = out / f"{unit.name}.denoised.isxd"
    with _atomic_file(target) as tmp:
        write_cellset(tmp, den_cs)
    paths.append(target)
    offsets = cs.timing.offsets_us()
    offs, amps = [], []
    for k in range(den.shape[0]):
        idx = np.flatnonzero(res.S[k] > 0) if res.ok[k] else np.zeros(0, np.int64)
        offs.append(offsets[idx].astype(np.uint64))
        amps.append(res.S[k, idx].astype(np.float32))
    events = EventSet(names=list(cs.names), offsets_us=offs, amplitudes=amps, timing=cs.timing,
                      extra_properties=dict(cs.extra_properties or {}))
    target = out / f"{unit.name}.events.isxd"
    with _atomic_file(target) as tmp:
        write_eventset(tmp, events)
    paths.append(target)
    return paths


def _write_nwb_output(unit: TraceSet, den: np.ndarray, res: BatchResult, out: Path) -> Path:
    from pynwb import NWBHDF5IO
    from pynwb.ophys import Fluorescence, RoiResponseSeries

    target = out / f"{unit.name}.denoised.nwb"
    with _atomic_file(target) as tmp:
        shutil.copyfile(unit.source, tmp)
        with NWBHDF5IO(str(tmp), mode="a", load_namespaces=True) as io:
            nwb = io.read()
            src = _roi_series(nwb)[unit.extra["series"]]
            module = nwb.processing.get("ophys") or nwb.create_processing_module(
                "ophys", "optical physiology")
            name = "CaliflowDeconvolution"
            if name in module.data_interfaces:
                raise InputError(f"{unit.source}: already holds processing/ophys/{name}; use the "
                                 "original file as input")
            container = Fluorescence(name=name)
            module.add(container)  # attach first, so the ROI regions share an ancestor
            timing = ({"timestamps": src} if src.timestamps is not None else
                      {"rate": float(src.rate), "starting_time": float(src.starting_time or 0.0)})
            rows = [int(i) for i in np.asarray(src.rois.data[:])]
            for label, data, desc in (
                    ("Denoised", den.T, "denoised calcium c + c1 h (baseline removed), califlow OASIS"),
                    ("Deconvolved", np.where(res.ok[:, None], res.S, np.nan).T.astype(np.float32),
                     "deconvolved activity s (califlow OASIS)")):
                region = src.rois.table.create_roi_table_region(
                    region=rows, description=f"ROIs of {src.name}", name="rois")
                container.add_roi_response_series(RoiResponseSeries(
                    name=label, data=data, rois=region, unit=src.unit, description=desc, **timing))
            io.write(nwb)
    return target


def _write_denoised_csv(unit: TraceSet, den: np.ndarray, out: Path) -> Path:
    """Frames as rows: a time (or frame) column, then one column per cell."""
    times = unit.times()
    first, col = ("time_s", times) if times is not None else ("frame", np.arange(den.shape[1]))
    names = [str(n).replace(",", "_") for n in unit.cell_names]
    target = out / f"{unit.name}.denoised.csv"
    with _atomic_file(target) as tmp, open(tmp, "w") as fh:
        fh.write(",".join([first] + names) + "\n")
        np.savetxt(fh, np.column_stack([col, den.T]), fmt="%.7g", delimiter=",")
    return target


def _write_denoised_npy(unit: TraceSet, den: np.ndarray, res: BatchResult, out: Path) -> list[Path]:
    """(cells, frames) float32 arrays, as the input: denoised traces and spikes."""
    paths = []
    S = np.where(res.ok[:, None], res.S, np.nan).astype(np.float32)
    for label, arr in (("denoised", den), ("spikes", S)):
        target = out / f"{unit.name}.{label}.npy"
        with _atomic_file(target) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
        paths.append(target)
    return paths


def _write_denoised_zarr(unit: TraceSet, den: np.ndarray, res: BatchResult, out: Path,
                         se: Mapping) -> Path:
    """Zarr store ``NAME.deconv.zarr``: ``C`` (denoised) and ``S`` (spikes), (K, T) float32."""
    import zarr

    from califlow.io.store import compressor, set_provenance

    target = out / f"{unit.name}.deconv.zarr"
    K, T = den.shape
    chunks = (max(1, min(K, 64)), max(1, min(T, 8192)))
    S = np.where(res.ok[:, None], res.S, np.nan).astype(np.float32)
    with _atomic_file(target) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        for name, arr in (("C", den), ("S", S)):
            za = group.create_array(name, shape=arr.shape, chunks=chunks, dtype="float32",
                                    compressors=compressor(), fill_value=np.nan)
            za[...] = arr
        set_provenance(group, params={GROUP: dict(se)}, inputs=[str(unit.source)], session=unit.session,
                       cell_names=list(unit.cell_names),
                       fps=(1.0 / unit.period_s) if unit.period_s else None,
                       start_frame=int(unit.extra.get("start", 0)))
    return target


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
#: Frame rate (Hz) above which an AR(1) model smears the calcium rise over several frames.
AR1_MAX_FPS = 15.0


def _warn_frame_rate(unit: TraceSet, kwargs: Mapping) -> None:
    """Warn when p = 1 meets a frame rate at which the calcium rise spans several frames.

    Measured (benchmarks/bench_spike_fps.py, 24 simulated cells, rise 0.15 s): median spike r
    (5-frame bins) at 20 fps is 0.69 / 0.76 (SNR 3 / 8) with p 1, fudge_factor 0.96 (the IDEAS
    defaults) against 0.82 / 0.95 with p 2, fudge_factor 1.0, as CNMF-E's own deconvolution.
    """
    if not unit.period_s or kwargs["p"] != 1 or 1.0 / unit.period_s <= AR1_MAX_FPS:
        return
    fps = 1.0 / unit.period_s
    log.warning("%s: spike_extraction.p = 1 at %.1f fps: the calcium rise spans several frames and an AR(1) "
                "model spreads each event's spikes over them (at 20 fps median spike r 0.69-0.76 against "
                "0.82-0.95 with p: 2 and fudge_factor: 1.0; benchmarks/bench_spike_fps.py); set p: 2 and "
                "fudge_factor: 1.0", unit.source, fps, extra=CONSOLE)


def run_spike_extraction(inputs: Sequence[str | Path], out_dir: str | Path,
                         params: Mapping | None = None, *, fps: float | None = None,
                         nwb_series: str | None = None, n_threads: int | None = None) -> list[dict]:
    """Deconvolve every input and write its outputs into ``out_dir``.

    Parameters
    ----------
    inputs : paths
        isxd cell sets, NWB files, CSV/NPY traces or cnmfe.zarr stores.
    out_dir : path
        Output folder (created).
    params : mapping, optional
        The ``spike_extraction`` group (partial; defaults filled and validated).
    fps : float, optional
        Frame rate for CSV/NPY inputs without a time column.
    nwb_series : str, optional
        Name of the RoiResponseSeries to use in NWB inputs.
    n_threads : int, optional
        Worker threads (default: the CPUs available).

    Returns
    -------
    list of dict
        One record per output unit: name, source, cells, failed cells, outputs.
    """
    se = spike_params(params)
    kwargs = _deconv_kwargs(se)
    units = read_inputs(inputs, fps=fps, nwb_series=nwb_series)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for unit in units:
        _warn_frame_rate(unit, kwargs)
        res = deconvolve_batch(unit.traces, n_threads=n_threads, **kwargs)
        for k, msg in sorted(res.errors.items()):
            log.warning("%s: cell %s (%s) not deconvolved: %s", unit.source, unit.cell_names[k],
                        unit.statuses[k], msg)
        den = _denoised_with_gaps(unit, res)
        outputs: list[Path] = []
        if unit.kind == "isxd":
            outputs += _write_isxd_outputs(unit, den, res, out)
        elif unit.kind == "nwb":
            outputs.append(_write_nwb_output(unit, den, res, out))
        elif unit.kind == "npy":
            outputs += _write_denoised_npy(unit, den, res, out)
        elif unit.kind == "zarr":
            outputs.append(_write_denoised_zarr(unit, den, res, out, se))
        else:
            outputs.append(_write_denoised_csv(unit, den, out))
        outputs.append(_write_events_csv(unit, res.S, res.ok, out / f"{unit.name}.events.csv"))
        outputs.append(_write_csv(_params_table(unit, res, kwargs["p"]), out / f"{unit.name}.params.csv"))
        n_events = int(np.count_nonzero((res.S > 0) & res.ok[:, None]))
        records.append({"name": unit.name, "source": str(unit.source), "session": unit.session,
                        "cells": len(unit.cell_names), "failed": int((~res.ok).sum()),
                        "events": n_events, "outputs": [str(p) for p in outputs]})
        # the one summary of the unit: in a job's log and, as a milestone, on the console
        log.info("%s", summary_line(records[-1]), extra=CONSOLE)
    return records


def summary_line(record: Mapping) -> str:
    """The one-line summary of an output unit (a record of :func:`run_spike_extraction`).

    Examples
    --------
    >>> summary_line({"source": "t.csv", "name": "t", "cells": 3, "failed": 0, "events": 12,
    ...               "outputs": ["o/t.denoised.csv", "o/t.events.csv"]})
    't.csv -> t: 3 cells (0 failed), 12 events -> t.denoised.csv, t.events.csv'
    """
    return (f"{record['source']} -> {record['name']}: {record['cells']} cells ({record['failed']} failed), "
            f"{record['events']} events -> " + ", ".join(Path(p).name for p in record["outputs"]))


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def _parse_value(key: str, schema: Mapping, text: str):
    """Command-line text -> a value the schema accepts (validation happens afterwards)."""
    from califlow.params import parse_number_list

    t = text.strip()
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    low = t.lower()
    if "null" in types and low in ("none", "null", ""):
        return None
    if "boolean" in types and low in ("true", "false", "yes", "no"):
        return low in ("true", "yes")
    if "array" in types:
        item = (schema.get("items") or {}).get("type")
        if item == "string":
            return [v.strip() for v in t.split(",") if v.strip()]
        if "string" in types and low == "auto":
            return "auto"
        return parse_number_list(t, f"{GROUP}.{key}", allow_auto=False)
    if "integer" in types:
        try:
            return int(t)
        except ValueError:
            if "string" not in types and "number" not in types:
                raise ConfigError(f"--{key}: value {text!r} is not an integer") from None
    if "number" in types:
        try:
            return float(t)
        except ValueError:
            if "string" not in types:
                raise ConfigError(f"--{key}: value {text!r} is not a number") from None
    return t


def _group_schema() -> dict:
    from califlow.params import config_schema

    return config_schema()["properties"][GROUP]["properties"]


def _config_group(path: str | None) -> dict:
    """The raw ``spike_extraction`` group of a config file (validated later)."""
    if not path:
        return {}
    from califlow.params import read_config_file

    return dict(read_config_file(path).get(GROUP) or {})


def _cmd_deconvolve(args) -> int:
    params = _config_group(args.config)
    for key, sub in _group_schema().items():
        value = getattr(args, f"se_{key}", None)
        if value is not None:
            params[key] = _parse_value(key, sub, value)
    with _cli_logging():  # each unit's summary once, on stdout; the rest of the log on stderr
        run_spike_extraction(args.inputs, args.out, params, fps=args.fps,
                             nwb_series=args.nwb_series, n_threads=args.threads)
    return 0


@contextlib.contextmanager
def _cli_logging() -> Iterator[None]:
    """califlow logging of the command: ``CONSOLE`` records (the summaries) to stdout as bare
    lines, everything else at INFO and above to stderr; the logger is restored afterwards."""
    logger = logging.getLogger("califlow")
    shown = logging.StreamHandler(sys.stdout)
    shown.setFormatter(logging.Formatter("%(message)s"))
    shown.addFilter(lambda record: bool(getattr(record, "console", False)))
    rest = logging.StreamHandler(sys.stderr)
    rest.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    rest.addFilter(lambda record: not getattr(record, "console", False))
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    for h in (shown, rest):
        logger.addHandler(h)
    try:
        yield
    finally:
        for h in (shown, rest):
            logger.removeHandler(h)
            h.flush()
        logger.setLevel(previous_level)


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``califlow deconvolve``: every ``spike_extraction`` parameter is a ``--name``."""
    parser = subparsers.add_parser(
        "deconvolve", help="spike extraction (OASIS) on cell sets, NWB, CSV/NPY traces or cnmfe.zarr",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="isxd cell set(s), .nwb, .csv, .npy or cnmfe.zarr; each is processed independently")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--config", metavar="YAML", help="config file whose spike_extraction group is used")
    parser.add_argument("--fps", type=float, help="frame rate of CSV/NPY inputs without a time column")
    parser.add_argument("--nwb-series", dest="nwb_series", help="RoiResponseSeries to read from NWB inputs")
    parser.add_argument("--threads", type=int, help="worker threads (default: all available CPUs)")
    group = parser.add_argument_group("spike_extraction parameters (defaults from the config schema)")
    for key, sub in _group_schema().items():
        default = json.dumps(sub.get("default"))
        group.add_argument(f"--{key}", dest=f"se_{key}", metavar="VALUE",
                           help=f"{sub.get('description', '')} [default: {default}]")
    parser.set_defaults(func=_cmd_deconvolve)
    return parser

