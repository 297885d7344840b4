"""The library chain of the workflow run on a simulated animal, for benchmarks and tests.

:func:`run_chain` does in one process what the workflow's jobs do for one animal, with the
same library calls: an ``ingest.zarr`` per session from the simulated raw frames (motion
included), the per-session stage (:func:`califlow.motion.run_session`), the inter-session
alignment and concatenation (:mod:`califlow.align`) and CNMF-E
(:func:`califlow.cnmfe.run_cnmfe`).  With ``aligned=True`` the motion and alignment steps
are skipped: the sessions are rendered already in the reference frame
(:func:`califlow.cnmfe.simulated.write_aligned_store`), which isolates the extraction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["write_ingest_store", "run_chain", "ChainResult", "footprints_in_reference", "measure_neuron_size"]


def write_ingest_store(path: str | os.PathLike, movie: np.ndarray, fps: float, chunk: int = 500) -> Path:
    """Write frames (T, H, W) as an ``ingest.zarr`` (``movie`` float32, attr ``fps``), atomically."""
    from califlow.io.store import atomic_output, create_movie, open_group

    with atomic_output(path) as tmp:
        g = open_group(tmp, "w")
        arr = create_movie(g, "movie", movie.shape)
        for a in range(0, movie.shape[0], chunk):
            arr[a:a + chunk] = np.asarray(movie[a:a + chunk], np.float32)
        g.attrs["fps"] = float(fps)
    return Path(path)


class ChainResult(dict):
    """One chain run: keys ``aligned``, ``cnmfe`` (paths), ``extraction``, ``gsig`` (used),
    ``diameter_estimate`` (measured, px, or None), ``A_reference`` (the
    footprints in the simulator's reference frame, (K, H, W)), ``valid_reference`` (the part of
    the reference frame the aligned movie covers, (H, W) bool) and ``timings``."""


def measure_neuron_size(animal, config: Mapping | None = None, n_frames: int | None = None) -> dict:
    """The workflow's ``neuron_size`` step (:func:`califlow.neuron_size_step.measure_frames`) on the
    animal's raw sessions: ``n_frames`` consecutive frames (default
    :data:`califlow.neuron_size.SAMPLE_FRAMES`) from the middle of every session.

    Returns the ``neuron_size.json`` content.
    """
    from califlow.neuron_size import SAMPLE_FRAMES
    from califlow.neuron_size_step import measure_frames

    n = int(n_frames or SAMPLE_FRAMES)
    samples, names = [], []
    for s in range(animal.n_sessions):
        T = animal.n_frames(s)
        a = max(0, (T - n) // 2)
        samples.append((animal.session_frames(s, a, min(T, a + n)), float(animal.ground_truth.fps)))
        names.append(f"session{s}")
    return measure_frames(samples, names, names, dict(config or {}))


def _sessions_to_aligned(animal, work: Path, config: Mapping, timings: dict, ingest_dir: Path) -> Path:
    from califlow.align import align_options, align_sessions, concatenate, read_projections, save_alignment
    from califlow.motion.session import run_session

    names = [f"session{s}" for s in range(animal.n_sessions)]
    outs = []
    t = time.perf_counter()
    for s, name in enumerate(names):
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        ingest = ingest_dir / name / "ingest.zarr"
        if not ingest.exists():
            ingest.parent.mkdir(parents=True, exist_ok=True)
            write_ingest_store(ingest, animal.session_frames(s), animal.ground_truth.fps)
        run_session(ingest, d, config, name=name)
        outs.append(d)
    timings["sessions_s"] = time.perf_counter() - t
    t = time.perf_counter()
    projections = [read_projections(d / "projections.zarr") for d in outs]
    al = align_sessions(projections, names, align_options(config))
    save_alignment(al, work / "alignment.zarr", config=dict(config))
    aligned = work / "aligned.zarr"
    concatenate([d / "enhanced.zarr" for d in outs], al, aligned, names=names,
                projections=[d / "projections.zarr" for d in outs],
                dtype=(config.get("concatenation") or {}).get("dtype"), params=dict(config))
    timings["align_s"] = time.perf_counter() - t
    return aligned


def footprints_in_reference(A: np.ndarray, workdir: str | os.PathLike, animal, session: int = 0) -> np.ndarray:
    """Footprints (K, H, W) of the aligned frame of a :func:`run_chain` run, in the simulator's reference frame.

    The aligned frame is warped into session ``session``'s motion-corrected frame through its
    alignment map (:func:`califlow.align.apply_map`), placed at its crop box and shifted by
    the session template's offset from the motion-free frame (the median difference
    between the estimated and the true within-session motion).  Session 0 of the simulator
    is the reference frame itself.
    """
    import cv2

    from califlow.align import apply_map, load_alignment
    from califlow.io.store import open_group

    work = Path(workdir)
    name = f"session{session}"
    al = load_alignment(work / "alignment.zarr")
    g = open_group(work / name / "motion.zarr")
    y0, y1, x0, x1 = (int(v) for v in g.attrs["crop_box"])
    est = np.asarray(g["shifts"][...], np.float64)
    true = np.asarray(animal.ground_truth.motion[session], np.float64)
    c = np.median(est - true, axis=0)
    sess = np.nan_to_num(apply_map(np.asarray(A, np.float32), al.map_of(name), to="session",
                                   session_shape=(y1 - y0, x1 - x0)), nan=0.0)
    h, w = animal.shape
    shift = np.float32([[1, 0, x0 + c[1]], [0, 1, y0 + c[0]]])
    out = np.zeros((sess.shape[0], h, w), np.float32)
    for k in range(sess.shape[0]):  # one OpenCV warp per neuron
        out[k] = cv2.warpAffine(sess[k], shift, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return out


def run_chain(animal, workdir: str | os.PathLike, config: Mapping | None = None, *,
              aligned: bool = False, ingest_dir: str | os.PathLike | None = None,
              neuron_size: Mapping | None = None) -> ChainResult:
    """Run the workflow's library chain for one simulated animal.

    Parameters
    ----------
    animal : SimulatedAnimal
    workdir : folder for the stores (created; existing ``ingest.zarr`` stores are reused).
    config : califlow configuration (partial; defaults fill the rest).  The neuron size is
        measured first (:func:`measure_neuron_size`) and applied as the workflow does
        (:func:`califlow.params.apply_neuron_size`: ``gSig: auto``, ``neuron_diameter``).
    aligned : render the sessions in the reference frame and skip motion and alignment.
    ingest_dir : folder of the ``sessionN/ingest.zarr`` stores (default ``workdir``; written
        when absent, so runs with other parameters can share them).
    neuron_size : the ``neuron_size.json`` content of :func:`measure_neuron_size` for this
        animal and config, when already measured.

    Returns
    -------
    ChainResult with ``extraction`` (:class:`califlow.cnmfe.pipeline.Extraction`), the store
    paths and ``timings`` (s per stage).
    """
    from califlow.cnmfe import run_cnmfe
    from califlow.params import apply_neuron_size

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    size = neuron_size if neuron_size is not None else measure_neuron_size(animal, config)
    cfg = apply_neuron_size(dict(config or {}), size["measured"])
    timings["neuron_size_s"] = time.perf_counter() - t
    if aligned:
        from califlow.cnmfe.simulated import write_aligned_store

        t = time.perf_counter()
        store = work / "aligned.zarr"
        write_aligned_store(animal, store, gsig=float(cfg["general"]["gSig"]))
        timings["sessions_s"] = time.perf_counter() - t
    else:
        store = _sessions_to_aligned(animal, work, cfg, timings, Path(ingest_dir) if ingest_dir else work)
    t = time.perf_counter()
    ex = run_cnmfe(store, work / "cnmfe.zarr", cfg)
    timings["cnmfe_s"] = time.perf_counter() - t
    if aligned:
        A_ref, valid = ex.A, np.ones(animal.shape, bool)
    else:
        A_ref = footprints_in_reference(ex.A, work, animal)
        valid = footprints_in_reference(np.ones((1, *ex.A.shape[1:]), np.float32), work, animal)[0] > 0.5
    return ChainResult(aligned=store, cnmfe=work / "cnmfe.zarr", extraction=ex, timings=timings, A_reference=A_ref,
                       valid_reference=valid, gsig=float(cfg["general"]["gSig"]),
                       diameter_estimate=size["measured"]["diameter"], neuron_size=size)
