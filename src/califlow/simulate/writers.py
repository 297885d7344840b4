"""Write simulated animals as real acquisition files: Miniscope V4 folders or multi-page TIFF.

Miniscope V4 folder (one per session)::

    0.avi, 1.avi, ...   FFV1, 8-bit grey, ``frames_per_file`` frames each (Miniscope: 1000)
    metaData.json       ROI, frameRate ("20FPS"), framesPerFile, compression, device fields
    timeStamps.csv      "Frame Number,Time Stamp (ms),Buffer Index"

A cohort (:func:`write_cohort`) is ``OUT/<animal>/<session>/`` (or ``<session>.tif``) per
session, ``OUT/<animal>/ground_truth.zarr`` per animal and ``OUT/sessions.tsv`` with the
columns animal, session, path, fps. Every output is written under a temporary name and
renamed when complete; memory stays flat in the number of frames.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from pathlib import Path

import cv2
import numpy as np

from califlow.errors import ConfigError
from califlow.io.store import atomic_output
from califlow.simulate.animal import SimulatedAnimal, simulate_animal
from califlow.simulate.config import SimulationConfig
from califlow.simulate.config import preset as get_preset
from califlow.simulate.groundtruth import save_ground_truth

__all__ = ["write_animal", "write_cohort", "animal_seed", "session_name", "animal_name"]

FORMATS = ("miniscope", "tiff")


def animal_seed(seed: int, index: int) -> int:
    """Seed of animal ``index`` of a cohort drawn with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def animal_name(index: int) -> str:
    """Folder name of animal ``index`` (0-based): ``animal01``, ``animal02``, ..."""
    return f"animal{index + 1:02d}"


def session_name(index: int) -> str:
    """Name of session ``index`` (0-based): ``session01``, ..."""
    return f"session{index + 1:02d}"


def _frames_uint(frames: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if frames.dtype == dtype:
        return frames
    info = np.iinfo(dtype)
    return np.clip(frames, info.min, info.max).astype(dtype)


#: start of the first simulated session (UTC); session s starts s days later.
SIMULATED_START = dt.datetime(2026, 1, 5, 10, 0, 0, tzinfo=dt.UTC)


def _start_fields(t: dt.datetime) -> dict:
    """Miniscope DAQ ``recordingStartTime`` fields of ``t`` (wall clock in ``t``'s zone)."""
    return {"year": t.year, "month": t.month, "day": t.day, "hour": t.hour, "minute": t.minute,
            "second": t.second, "msec": t.microsecond // 1000, "msecSinceEpoch": int(round(t.timestamp() * 1000))}


def _write_miniscope_session(animal: SimulatedAnimal, s: int, folder: Path) -> None:
    c = animal.config
    h, w = animal.shape
    fpf = int(c.frames_per_file)
    chunk = max(1, min(int(c.chunk_frames), fpf))
    folder.mkdir(parents=True, exist_ok=True)
    writer = None
    n = animal.n_frames(s)
    try:
        for start, frames in animal.iter_session(s, chunk):
            frames = _frames_uint(frames, np.dtype(np.uint8))
            for i in range(frames.shape[0]):               # frames go to the encoder one by one
                t = start + i
                if t % fpf == 0:
                    if writer is not None:
                        writer.release()
                    path = folder / f"{t // fpf}.avi"
                    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 60, (w, h), isColor=False)
                    if not writer.isOpened():
                        raise OSError(f"OpenCV cannot write FFV1 video {path} (is FFmpeg support built in?)")
                writer.write(frames[i])
    finally:
        if writer is not None:
            writer.release()
    meta = {
        "ROI": {"height": h, "leftEdge": 0, "topEdge": 0, "width": w},
        "compression": "FFV1",
        "deviceDirectory": str(folder.name),
        "deviceID": 0,
        "deviceName": "My_V4_Miniscope",
        "deviceType": "Miniscope_V4_BNO",
        "ewl": 0,
        "frameRate": f"{c.fps:g}FPS",
        "framesPerFile": fpf,
        "gain": "Low",
        "led0": 10,
        "simulated": True,
        # the DAQ writes this in the session folder above the device; a simulated session is
        # one folder, so it sits here (local time = UTC): one day between sessions, 10:00
        "recordingStartTime": _start_fields(SIMULATED_START + dt.timedelta(days=s)),
    }
    (folder / "metaData.json").write_text(json.dumps(meta, indent=4))
    times = np.rint(np.arange(n) * 1000.0 / c.fps).astype(np.int64)
    with open(folder / "timeStamps.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["Frame Number", "Time Stamp (ms)", "Buffer Index"])
        wr.writerows(zip(range(n), times.tolist(), [0] * n))


def _write_tiff_session(animal: SimulatedAnimal, s: int, path: Path, dtype: np.dtype) -> None:
    import tifffile

    c = animal.config
    h, w = animal.shape
    big = animal.n_frames(s) * h * w * dtype.itemsize > 2 ** 31
    with tifffile.TiffWriter(path, bigtiff=big) as tw:
        for _start, frames in animal.iter_session(s, int(c.chunk_frames)):
            tw.write(_frames_uint(frames, dtype), contiguous=True, photometric="minisblack",
                     metadata={"fps": float(c.fps), "simulated": True})


def write_animal(animal: SimulatedAnimal, out_dir: str | os.PathLike, *, format: str = "miniscope",
                 dtype: str | None = None, sessions: list[int] | None = None) -> list[Path]:
    """Write every session of ``animal`` under ``out_dir``; returns the session paths in order.

    Parameters
    ----------
    format : "miniscope" (one V4 folder ``out_dir/sessionNN/`` per session, 8-bit FFV1 AVIs) or
        "tiff" (one multi-page ``out_dir/sessionNN.tif`` per session).
    dtype : stored dtype; default the config's (``uint8`` required for "miniscope").
        Values are clipped into the dtype's range.
    sessions : subset of session indices (default all).
    """
    if format not in FORMATS:
        raise ConfigError(f"write_animal: format={format!r} must be one of {FORMATS}")
    dt = np.dtype(dtype or animal.config.dtype)
    if dt not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ConfigError(f"write_animal: dtype={dt} must be uint8 or uint16")
    if format == "miniscope" and dt != np.uint8:
        raise ConfigError(f"write_animal: Miniscope AVI folders are 8-bit; dtype={dt} needs format='tiff'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in (range(animal.n_sessions) if sessions is None else sessions):
        if format == "miniscope":
            final = out_dir / session_name(s)
            with atomic_output(final) as tmp:
                _write_miniscope_session(animal, s, tmp)
        else:
            final = out_dir / f"{session_name(s)}.tif"
            with atomic_output(final) as tmp:
                _write_tiff_session(animal, s, tmp, dt)
        paths.append(final)
    return paths


def write_cohort(out_dir: str | os.PathLike, preset: str | SimulationConfig = "demo", n_animals: int = 1,
                 seed: int = 0, *, format: str = "miniscope", overrides: dict | None = None) -> Path:
    """Simulate and write ``n_animals`` animals plus ``sessions.tsv``; returns the sheet's path.

    Animal a uses the seed :func:`animal_seed` (seed, a). The sheet lists
    animal, session, path, fps with paths as ``out_dir/<animal>/<session>[.tif]``.
    """
    if int(n_animals) < 1:
        raise ConfigError(f"write_cohort: n_animals={n_animals} must be >= 1")
    config = get_preset(preset) if isinstance(preset, str) else preset
    if overrides:
        config = config.replace(**overrides)
    out_dir = Path(out_dir)
    rows = []
    for a in range(int(n_animals)):
        animal = simulate_animal(config, animal_seed(seed, a))
        adir = out_dir / animal_name(a)
        paths = write_animal(animal, adir, format=format)
        save_ground_truth(animal.ground_truth, adir / "ground_truth.zarr")
        rows += [(animal_name(a), session_name(s), str(p), f"{config.fps:g}") for s, p in enumerate(paths)]
    sheet = out_dir / "sessions.tsv"
    with atomic_output(sheet) as tmp, open(tmp, "w", newline="") as fh:
        wr = csv.writer(fh, delimiter="\t", lineterminator="\n")
        wr.writerow(["animal", "session", "path", "fps"])
        wr.writerows(rows)
    return sheet
