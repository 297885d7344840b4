"""HDF5 movies: Inscopix ``.h5`` exports and NWB ``OnePhotonSeries``/``TwoPhotonSeries``/``ImageSeries``.

Both are read with h5py, slice by slice (the file is never loaded whole).

Axis order
----------
* Inscopix ``.h5``/``.hdf5`` (dataset ``/Object``, as CaliAli reads; nVista 2 files hold
  ``/images``): h5py shape (T, H, W). isxcore reads frame ``t`` as the hyperslab
  ``[t, 0:dims[1], 0:dims[2]]`` into a row-major (rows = dims[1]) image, so axis 1 is rows.
  MATLAB's ``h5read`` shows the same dataset as (W, H, T), which is why CaliAli takes
  ``dims(3)`` as the frame count (its frames are the transpose of ours; nothing else differs).
* NWB: the schema names ImageSeries axes (frame, x, y), but writers (pynwb examples, suite2p,
  CaImAn, Inscopix IDEAS, roiextractors) store each frame as the (rows, cols) array they
  had in memory. We return ``data[t]`` as stored: (T, dim1, dim2) = (T, H, W).
  Values are the stored ones (``conversion``/``offset`` attributes are reported in the
  metadata, not applied).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from califlow.errors import InputError
from califlow.io.sources import FrameReader, FrameStream, MovieSource, output_dtype, timed_source

__all__ = ["H5MovieReader", "open_inscopix_h5", "open_nwb"]

INSCOPIX_DATASETS = ("Object", "images")
NWB_SERIES_TYPES = ("OnePhotonSeries", "TwoPhotonSeries", "ImageSeries")


def _open_h5(path: Path) -> h5py.File:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: cannot be opened as HDF5 ({exc}); the file is truncated or not HDF5") from exc


class _H5Stream(FrameStream):
    def __init__(self, reader: H5MovieReader, start: int):
        self.reader = reader
        self.file = _open_h5(reader.path)
        self.ds = self.file[reader.dataset]
        self.pos = int(start)

    def read_into(self, out: np.ndarray) -> int:
        r = self.reader
        stop = min(self.pos + out.shape[0], r.n_claimed)
        k = max(stop - self.pos, 0)
        if k:
            try:
                out[:k] = self.ds[self.pos:stop]
            except (OSError, ValueError) as exc:
                raise InputError(f"{r.path}: frames {self.pos}..{stop - 1} of {r.dataset} cannot be read "
                                 f"({exc}); the file is damaged") from exc
        self.pos = stop
        return k

    def close(self) -> None:
        self.file.close()


class H5MovieReader(FrameReader):
    """A (T, H, W) dataset of an HDF5 file."""

    kind = "hdf5"

    def __init__(self, path, dataset: str):
        self.path = Path(path)
        self.dataset = dataset
        with _open_h5(self.path) as f:
            ds = f[dataset]
            if ds.ndim != 3:
                raise InputError(f"{self.path}: dataset {dataset} has shape {ds.shape}; expected (T, H, W)")
            if ds.shape[0] == 0:
                raise InputError(f"{self.path}: dataset {dataset} holds zero frames")
            self.n_claimed, self.height, self.width = (int(s) for s in ds.shape)
            self.native_dtype = np.dtype(ds.dtype)
        self.dtype = output_dtype(self.native_dtype)

    def stream(self, start: int = 0) -> FrameStream:
        return _H5Stream(self, start)


def open_inscopix_h5(path, fps: float | None = None) -> MovieSource:
    """An Inscopix HDF5 export (``/Object``, or nVista 2 ``/images``) as a :class:`MovieSource`.

    These files carry no usable timing here: the frame rate is ``fps`` (or None).
    """
    path = Path(path)
    with _open_h5(path) as f:
        name = next((n for n in INSCOPIX_DATASETS if n in f and isinstance(f[n], h5py.Dataset)), None)
        if name is None:
            found = [k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 3]
            if len(found) != 1:
                raise InputError(f"{path}: no /Object dataset (Inscopix export) and {len(found)} other 3-D "
                                 f"datasets {found}; cannot tell which holds the movie")
            name = found[0]
    reader = H5MovieReader(path, name)
    meta = {"reader": "inscopix_h5", "dataset": "/" + name, "axis_order": "(T, H, W) as stored",
            "fps_from": "argument" if fps else None, "files": [reader.describe()]}
    return MovieSource([reader], fps=fps, expected_frames=reader.n_claimed, expected_what=f"dataset /{name}",
                       metadata=meta)


def _nwb_series(f: h5py.File, path: Path) -> str:
    """HDF5 path of the imaging series to read (OnePhotonSeries first)."""
    found: dict[str, list[str]] = {t: [] for t in NWB_SERIES_TYPES}

    def visit(name, obj):
        if isinstance(obj, h5py.Group):
            t = obj.attrs.get("neurodata_type")
            t = t.decode() if isinstance(t, bytes) else t
            if t in found and "data" in obj:
                found[t].append(obj.name.lstrip("/"))

    for root in ("acquisition", "processing"):
        if root in f:
            f[root].visititems(visit)
    for t in NWB_SERIES_TYPES:
        names = sorted(found[t], key=lambda n: (not n.startswith("acquisition"), n))
        acquired = [n for n in names if n.startswith("acquisition")]
        pick = acquired or names
        if len(pick) > 1:
            raise InputError(f"{path}: holds several {t} {pick}; export the one to analyse into its own file")
        if pick:
            return pick[0]
    raise InputError(f"{path}: no OnePhotonSeries, TwoPhotonSeries or ImageSeries with data in the NWB file")


def open_nwb(path, fps: float | None = None) -> MovieSource:
    """The imaging series of an NWB file as a :class:`MovieSource` (timestamps or rate from the file)."""
    path = Path(path)
    with _open_h5(path) as f:
        if "nwb_version" not in f.attrs and "nwb_version" not in f:
            raise InputError(f"{path}: not an NWB 2 file (no nwb_version attribute)")
        series = _nwb_series(f, path)
        g = f[series]
        ext = g.get("external_file")
        if ext is not None and g["data"].size == 0:
            files = [x.decode() if isinstance(x, bytes) else str(x) for x in ext[()]]
            raise InputError(f"{path}: {series} stores its frames in external files {files}; use those files")
        data = g["data"]
        meta = {"reader": "nwb", "series": "/" + series,
                "neurodata_type": str(g.attrs.get("neurodata_type")),
                "conversion": float(data.attrs.get("conversion", 1.0)), "offset": float(data.attrs.get("offset", 0.0)),
                "unit": str(data.attrs.get("unit", "")), "axis_order": "(T, H, W) as stored"}
        times = g["timestamps"][()] if "timestamps" in g else None
        rate = None
        if times is None and "starting_time" in g:
            rate = float(g["starting_time"].attrs.get("rate", 0.0)) or None
            meta["start_s"] = float(g["starting_time"][()])
    reader = H5MovieReader(path, series + "/data")
    meta["files"] = [reader.describe()]
    if times is not None:
        if times.size != reader.n_claimed:
            raise InputError(f"{path}: {series} has {times.size} timestamps for {reader.n_claimed} frames")
        meta["start_s"] = float(times[0])
        return timed_source([reader], times, source=f"{path}:{series}/timestamps", fps=fps,
                            expected_per_file=[reader.n_claimed], metadata=meta)
    fps_used = rate or fps
    meta["fps_from"] = "nwb rate" if rate else ("argument" if fps else None)
    timestamps = np.arange(reader.n_claimed) / rate if rate else None
    return MovieSource([reader], timestamps=timestamps, fps=fps_used, expected_frames=reader.n_claimed,
                       expected_what=f"{series}/data", metadata=meta)
