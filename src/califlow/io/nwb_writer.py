"""Write one session of an extraction as an NWB file (HDF5 backend, pynwb).

Layout (one file per session, as NWB/DANDI expect):

- ``acquisition/OnePhotonSeries``: the raw recording, linked as external files (relative
  paths), not copied;
- ``processing/ophys/ImageSegmentation/PlaneSegmentation``: footprints ``image_mask``
  (K, H, W) in the aligned (cross-session) frame, columns ``global_roi_id`` (the cell's id,
  identical in every session of the animal), ``present`` (active in this session), ``snr``;
  with no cell (K = 0) there is no ImageSegmentation, no trace and no event;
- ``processing/ophys/Fluorescence``: ``RoiResponseSeries`` (raw trace, C_raw), ``Denoised``
  (C) and ``Deconvolved`` (S), all (T, K) — time first;
- ``processing/ophys/SpikeEvents``: one row per cell with ragged ``event_times`` (s) and
  ``event_amplitudes``;
- ``processing/ophys/SegmentationImages``: mean, correlation and PNR images.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["NWBSession", "write_session_nwb"]


@dataclass
class NWBSession:
    """Everything one session's NWB file holds.

    Attributes
    ----------
    animal, session : str
        Subject id and session id.
    footprints : ndarray (K, H, W) float32
        Footprints in the aligned frame.
    raw, denoised, deconvolved : ndarray (K, T) float32
        C_raw, C and S of this session's frames.
    fps : float
        Frame rate (Hz) of the traces.
    events : list of (frame indices, amplitudes) per cell
    cell_ids : sequence of int
        Cross-session ids (the same in every session).
    present : ndarray (K,) bool
        Whether each cell is active in this session.
    snr : ndarray (K,) float
    images : dict of name -> (H, W) float32
        Summary images (mean, correlation, pnr).
    source_files : list of str
        Raw recording files of the session (linked externally).
    frames_per_file : list of int
        Raw frames in each source file (gives ``starting_frame``).
    start_time : datetime
        Session start (timezone-aware).
    columns : dict of name -> (description, ndarray (K,))
        More PlaneSegmentation columns (the session's cell metrics, curation status).
    """

    animal: str
    session: str
    footprints: np.ndarray
    raw: np.ndarray
    denoised: np.ndarray
    deconvolved: np.ndarray
    fps: float
    events: list
    cell_ids: Sequence[int]
    present: np.ndarray
    snr: np.ndarray
    images: dict = field(default_factory=dict)
    source_files: list = field(default_factory=list)
    frames_per_file: list = field(default_factory=list)
    raw_fps: float | None = None
    start_time: dt.datetime | None = None
    description: str = ""
    columns: dict = field(default_factory=dict)


def _start_time(session: NWBSession) -> dt.datetime:
    if session.start_time is not None:
        t = session.start_time
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    from califlow.io.start_time import recording_start

    found = recording_start({}, [Path(f) for f in session.source_files], session.session)
    stamp = found["start_time"] or "1970-01-01T00:00:00+00:00"
    return dt.datetime.fromisoformat(stamp).astimezone(dt.UTC)


def write_session_nwb(path: str | Path, session: NWBSession, metadata: dict) -> Path:
    """Write ``session`` to ``path`` (NWB 2.x, HDF5), atomically.

    Parameters
    ----------
    path : path
        Output ``.nwb`` file.
    session : NWBSession
    metadata : dict
        The ``export`` config group: species, sex, age, experimenter, lab, institution,
        indicator, location, excitation_lambda, emission_lambda, device; with the sheet's
        Subject columns merged in (subject_id, species, sex, age, genotype).
    """
    from pynwb import NWBHDF5IO

    from califlow.io.store import atomic_output
    from califlow.params import default_config

    # the schema's export defaults for what a partial mapping leaves out (empty sheet cells too)
    metadata = {**default_config()["export"], **{k: v for k, v in metadata.items() if v not in (None, "")}}
    path = Path(path)
    nwb = _nwb_file(session, metadata)
    plane = _imaging_plane(nwb, session, metadata)
    _link_raw_recording(nwb, plane, session, path.parent.resolve())
    ophys = nwb.create_processing_module(name="ophys", description="califlow cross-session extraction")
    if session.footprints.shape[0]:  # no cell: no ImageSegmentation (NWB requires a PlaneSegmentation in it,
        _add_cells(ophys, plane, session)  # and empty tables fail nwbinspector's checks); images are still written
    if session.images:
        _add_summary_images(ophys, session.images)
    with atomic_output(path) as tmp, NWBHDF5IO(str(tmp), "w") as io:
        io.write(nwb)
    return path


def _nwb_file(session: NWBSession, metadata: dict):
    """The ``NWBFile`` of the session (description, start time, lab) with its ``Subject``."""
    from pynwb import NWBFile
    from pynwb.file import Subject

    from califlow import __version__

    nwb = NWBFile(
        session_description=f"califlow extraction of {session.animal}/{session.session}: neurons tracked "
                            "across all sessions of the animal (CaliAli method, CNMF-E, OASIS).",
        identifier=f"califlow-{session.animal}-{session.session}",
        session_start_time=_start_time(session),
        session_id=session.session,
        experimenter=list(metadata.get("experimenter") or []) or None,
        lab=metadata.get("lab") or None,
        institution=metadata.get("institution") or None,
        keywords=["calcium imaging", "one-photon", "miniscope", "cell tracking"],
        experiment_description=metadata.get("experiment_description") or
        "One-photon calcium imaging of the same field of view over several sessions.",
        source_script=f"califlow {__version__}",
        source_script_file_name="califlow",
    )
    nwb.subject = Subject(subject_id=metadata.get("subject_id") or session.animal,
                          species=metadata["species"],
                          sex=metadata["sex"], age=metadata["age"],
                          genotype=metadata.get("genotype") or None,
                          description=f"Animal {session.animal} of the califlow sessions sheet.")
    return nwb


def _imaging_plane(nwb, session: NWBSession, metadata: dict):
    """Create the device, optical channel (emission nm) and imaging plane (excitation nm, fps) in ``nwb``."""
    from pynwb.ophys import OpticalChannel

    device = nwb.create_device(name="Microscope", description=metadata["device"])
    channel = OpticalChannel(name="OpticalChannel", description="green emission",
                             emission_lambda=float(metadata["emission_lambda"]))
    return nwb.create_imaging_plane(
        name="ImagingPlane", optical_channel=channel, imaging_rate=float(session.fps),
        description="Aligned (cross-session) field of view; footprints are in this frame.",
        device=device, excitation_lambda=float(metadata["excitation_lambda"]),
        indicator=metadata["indicator"], location=metadata["location"],
    )


def _link_raw_recording(nwb, plane, session: NWBSession, out_dir: Path) -> None:
    """Add the raw recording as an external ``OnePhotonSeries`` (paths relative to ``out_dir``), when
    the session knows its source files and their frame counts."""
    from pynwb.ophys import OnePhotonSeries

    counts = list(session.frames_per_file)
    if session.source_files and len(counts) == len(session.source_files):
        files = [os.path.relpath(Path(f).resolve(), out_dir) for f in session.source_files]
        starts = [int(v) for v in np.concatenate([[0], np.cumsum(counts)[:-1]])]
        nwb.add_acquisition(OnePhotonSeries(
            name="OnePhotonSeries", description="Raw recording, linked to the original files.",
            imaging_plane=plane, external_file=files, format="external", starting_frame=starts,
            rate=float(session.raw_fps or session.fps), unit="n.a.", num_samples=int(sum(counts)),
        ))


def _add_summary_images(ophys, images: dict) -> None:
    """Add the session's summary images (name -> (H, W), stored float32) as ``SegmentationImages``."""
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage

    imgs = Images(name="SegmentationImages", description="summary images of the session (aligned frame)")
    for name, img in images.items():
        imgs.add_image(GrayscaleImage(name=name, data=np.asarray(img, dtype=np.float32),
                                      description=f"{name} image of the session"))
    ophys.add(imgs)


def _add_cells(ophys, plane, session) -> None:
    """The ImageSegmentation (footprints, global_roi_id, present, snr) and the traces of K >= 1 cells."""
    from pynwb.ophys import ImageSegmentation

    seg = ImageSegmentation(name="ImageSegmentation")
    ophys.add(seg)
    ps = seg.create_plane_segmentation(
        name="PlaneSegmentation", imaging_plane=plane,
        description=session.description or "CNMF-E footprints in the aligned frame, shared by all sessions.",
    )
    ps.add_column("global_roi_id", "cell id shared by every session of the animal")
    ps.add_column("present", "cell active in this session")
    ps.add_column("snr", "signal-to-noise ratio of the cell's trace")
    for name, (description, _) in session.columns.items():
        ps.add_column(name, description)
    for k in range(session.footprints.shape[0]):
        extra = {name: _scalar(values[k]) for name, (_, values) in session.columns.items()}
        ps.add_roi(image_mask=session.footprints[k].astype(np.float32), global_roi_id=int(session.cell_ids[k]),
                   present=bool(session.present[k]), snr=float(session.snr[k]), **extra)
    _add_traces(ophys, ps, session)


def _scalar(value):
    """A table cell as NWB stores it: str, or a Python int / float."""
    if isinstance(value, str):
        return value
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def _add_traces(ophys, ps, session) -> None:
    """Fluorescence (raw, denoised, deconvolved) and the SpikeEvents table of the session's cells."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from hdmf.common import DynamicTable, VectorData, VectorIndex
    from pynwb.ophys import Fluorescence, RoiResponseSeries

    K = len(session.cell_ids)
    rois = ps.create_roi_table_region(region=list(range(K)), description="all cells")
    fl = Fluorescence(name="Fluorescence")
    ophys.add(fl)
    for name, data, desc in (("RoiResponseSeries", session.raw, "raw trace (C_raw), noise units"),
                             ("Denoised", session.denoised, "denoised calcium (C)"),
                             ("Deconvolved", session.deconvolved, "deconvolved activity (S)")):
        fl.add_roi_response_series(RoiResponseSeries(
            name=name, data=H5DataIO(np.ascontiguousarray(data.T, dtype=np.float32), compression="gzip"),
            rois=rois, unit="n.a.", rate=float(session.fps), description=desc))
    times = [np.asarray(f, dtype=np.float64) / float(session.fps) for f, _ in session.events]
    amps = [np.asarray(a, dtype=np.float32) for _, a in session.events]
    ends = np.cumsum([len(t) for t in times]).astype(np.int64)
    t_data = VectorData(name="event_times", description="event times (s from session start)",
                        data=np.concatenate(times) if times else np.zeros(0))
    a_data = VectorData(name="event_amplitudes", description="deconvolved event amplitudes",
                        data=np.concatenate(amps) if amps else np.zeros(0, np.float32))
    events = DynamicTable(
        name="SpikeEvents", description="Deconvolved events per cell (S > 0).",
        columns=[
            VectorData(name="roi_id", description="global_roi_id of the cell",
                       data=np.asarray(session.cell_ids, dtype=np.int64)),
            t_data, VectorIndex(name="event_times_index", data=ends, target=t_data),
            a_data, VectorIndex(name="event_amplitudes_index", data=ends, target=a_data),
        ],
    )
    ophys.add(events)
