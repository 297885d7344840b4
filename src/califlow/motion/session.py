"""The per-session chain: ``ingest.zarr`` -> ``motion.csv`` (+ ``motion.zarr``), ``enhanced.zarr``,
``projections.zarr``.

Two steps, one workflow rule each (:func:`correct_motion`, :func:`enhance_session`), so a
change of a preprocessing parameter does not redo motion correction; :func:`run_session`
runs both.

Order (CaliAli's, with streaming): rigid motion correction on a BV (or neuron) reference
-> optional non-rigid correction -> crop to the largest window valid in every frame ->
detrend -> noise scaling -> MIN1PIPE enhancement -> noise scaling -> projections.

Passes over the movie (memory is set by ``preprocessing.chunk_frames`` and
``preprocessing.sample_memory_mb``, never by the number of frames):

1. motion: every frame's reference image is registered to the template
   (:mod:`califlow.motion.rigid`; then :mod:`califlow.motion.nonrigid` if enabled);
2. samples: up to ``noise_windows`` evenly spaced windows of 100 corrected frames (with
   detrending context; at most one frame in ``SAMPLE_SHARE`` of a short session) give the
   per-pixel noise before and after enhancement and the movie's value range for MIN1PIPE's
   [0, 1] scaling; the temporal median of the corrected template frames (``motion.zarr``
   ``median``, from the motion step, which holds them anyway) gives the BV projection (and
   the vessel mask of the pulse regression);
3. output: consecutive chunks of corrected frames are detrended exactly as one block would
   be (:class:`califlow.preprocess.detrend.DetrendStream`), scaled, enhanced and written
   to ``enhanced.zarr`` (whole time chunks, in a background thread) while the mean, the
   vessel-course regression sums, up to 200 evenly spaced output frames (temporal median)
   and ``noise_windows`` windows of 100 output frames (noise) accumulate;
4. projections: ``enhanced.zarr`` is read back (the next chunk in a background thread), the
   vessels' common time course is regressed out (``remove_vessel_pulse``, see
   :mod:`califlow.motion.projections`), and the correlation image and the PNR peak
   accumulate. Every statistic is exact or sampled at fixed frames, so the outputs do not
   depend on the chunking.

``enhanced.zarr``: ``movie`` (T, h, w) float32 in noise-sigma units (each pixel's noise is
about 1; no +20 offset, not clipped; >= 0 when ``neuron_enhance`` is on); attrs ``crop_box``
``[y0, y1, x0, x1]`` in the ingest frame, ``fps``, provenance. ``projections.zarr``: ``mean``,
``bv``, ``cn``, ``pnr`` (see :mod:`califlow.motion.projections` for their scales) in the same
frame; attrs ``crop_box``, ``template_offset`` ``[dy, dx]`` (``corrected(p) = template(p -
offset)``), ``cn_scale``, motion summary, provenance. ``motion.csv``: ``frame,dy,dx`` (px of
the ingest movie, ``raw_t(p + d_t) = corrected_t(p)`` before cropping). ``motion.zarr``: exact
shifts, per-frame quality and outliers, crop box, non-rigid fields (see :func:`correct_motion`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from califlow import sizes
from califlow.errors import InputError
from califlow.io.store import FrameWriter, atomic_output, create_image, create_movie, open_group, set_provenance
from califlow.motion import projections as proj
from califlow.motion.nonrigid import NonRigidMotion, estimate_nonrigid_motion
from califlow.motion.options import motion_options
from califlow.motion.rigid import RigidMotion, estimate_rigid_motion, read_frames, sample_indices
from califlow.motion.vessels import bv_image
from califlow.motion.warp import translate_stack, valid_box
from califlow.params import numeric_gsig, resolve_config
from califlow.preprocess.detrend import DetrendStream, detrend_block, detrend_context
from califlow.preprocess.enhance import neuron_enhance
from califlow.preprocess.noise import NoiseAccumulator, smooth_noise_map
from califlow.progress import Progress

__all__ = ["SessionPaths", "session_paths", "check_crop", "correct_frames", "CorrectedFrames", "correct_motion",
           "enhance_session", "run_session", "write_motion_csv", "read_motion_csv", "use_threads"]

log = logging.getLogger("califlow")

NOISE_WINDOW_FRAMES = 100
MEDIAN_FRAMES = 200
#: at most one frame in SAMPLE_SHARE is sampled for the statistics (short sessions)
SAMPLE_SHARE = 10


@dataclass(frozen=True)
class SessionPaths:
    """Output locations of one session."""

    motion: Path
    motion_store: Path
    enhanced: Path
    projections: Path


def session_paths(out: str | os.PathLike | Mapping[str, Any]) -> SessionPaths:
    """Outputs in a folder (``motion.csv``, ``motion.zarr``, ``enhanced.zarr``, ``projections.zarr``)
    or as a mapping with those keys (``motion``, ``motion_store``, ``enhanced``, ``projections``)."""
    if isinstance(out, Mapping):
        motion = Path(out["motion"])
        store = Path(out.get("motion_store") or motion.with_name("motion.zarr"))
        return SessionPaths(motion, store, Path(out["enhanced"]), Path(out["projections"]))
    d = Path(out)
    return SessionPaths(d / "motion.csv", d / "motion.zarr", d / "enhanced.zarr", d / "projections.zarr")


def check_crop(box: tuple[int, int, int, int], shifts: np.ndarray, shape: tuple[int, int],
               max_crop_fraction: float, name: str) -> float:
    """Refuse a crop that removes more than ``max_crop_fraction`` of the field of view.

    Returns the cropped fraction; raises :class:`InputError` naming the frames whose shifts set
    each side of the window.
    """
    H, W = shape
    y0, y1, x0, x1 = box
    area = max(0, y1 - y0) * max(0, x1 - x0)
    lost = 1.0 - area / float(H * W)
    if lost <= max_crop_fraction + 1e-12 and area > 0:
        return lost
    d = np.asarray(shifts)
    sides = {"top": int(np.argmin(d[:, 0])), "bottom": int(np.argmax(d[:, 0])),
             "left": int(np.argmin(d[:, 1])), "right": int(np.argmax(d[:, 1]))}
    culprits = ", ".join(f"{side}: frame {t} (dy={d[t, 0]:+.1f}, dx={d[t, 1]:+.1f} px)"
                         for side, t in sides.items())
    raise InputError(
        f"{name}: motion correction would crop {100 * lost:.0f}% of the field of view "
        f"(window {H}x{W} -> {max(0, y1 - y0)}x{max(0, x1 - x0)}), more than "
        f"motion_correction.max_crop_fraction={max_crop_fraction}; the window is set by {culprits}. "
        "Check those frames (a jump of the whole preparation?), lower motion_correction.max_shift, "
        "or raise max_crop_fraction.")


def correct_frames(raw: np.ndarray, index: np.ndarray, shifts: np.ndarray, box: tuple[int, int, int, int],
                   nonrigid: NonRigidMotion | None = None) -> np.ndarray:
    """Motion-correct raw frames (n, H, W) whose frame numbers are ``index``, cropped to ``box``.

    Rigid shifts ``shifts`` (T, 2) of the whole movie (cubic interpolation), plus the
    non-rigid fields when given (bilinear). Returns (n, h, w) float32.
    """
    index = np.asarray(index, dtype=np.int64)
    if nonrigid is None:
        return translate_stack(raw, shifts[index], box, order=3)
    return nonrigid.warp(raw, index, shifts[index], box)


class CorrectedFrames:
    """Motion-corrected frames of the ingest movie, cropped to ``box``, computed on request.

    The last block is kept, so consecutive overlapping requests (chunks with context) read
    and warp each frame once.
    """

    def __init__(self, movie, shifts: np.ndarray, box: tuple[int, int, int, int],
                 nonrigid: NonRigidMotion | None = None):
        self.movie = movie
        self.shifts = np.asarray(shifts, dtype=np.float64)
        self.box = tuple(int(v) for v in box)
        self.nonrigid = nonrigid
        self._start = 0
        self._block = np.zeros((0, box[1] - box[0], box[3] - box[2]), dtype=np.float32)

    def _correct(self, raw: np.ndarray, index: np.ndarray) -> np.ndarray:
        return correct_frames(raw, index, self.shifts, self.box, self.nonrigid)

    def at(self, index: np.ndarray) -> np.ndarray:
        """Corrected frames at arbitrary indices (n, h, w) float32."""
        index = np.asarray(index, dtype=np.int64)
        return self._correct(read_frames(self.movie, index), index)

    def __call__(self, start: int, stop: int) -> np.ndarray:
        """Corrected frames ``start:stop`` (n, h, w) float32."""
        c0, c1 = self._start, self._start + len(self._block)
        if c0 <= start < c1 and stop > c1:
            keep = self._block[start - c0:]
            new = self._correct(read_frames(self.movie, slice(c1, stop)), np.arange(c1, stop))
            block = np.concatenate([keep, new], axis=0)
        elif c0 <= start and stop <= c1:
            block = self._block[start - c0:stop - c0]
        else:
            block = self._correct(read_frames(self.movie, slice(start, stop)), np.arange(start, stop))
        self._start, self._block = start, block
        return block


@dataclass
class _SampleStats:
    sn_raw: np.ndarray        # noise of the detrended movie (smoothed), scaling 1
    value_range: tuple[float, float]
    sn_enh: np.ndarray        # noise of the enhanced movie (smoothed), scaling 2
    median_raw: np.ndarray    # temporal median of the corrected raw movie
    n_windows: int


def _windows(T: int, n_windows: int, length: int) -> np.ndarray:
    starts = np.round(np.linspace(0, T - length, max(1, n_windows))).astype(np.int64)
    return np.unique(starts)


def _sample_statistics(corrected: CorrectedFrames, T: int, fps: float, pp: Mapping, gsig: float,
                       median_raw: np.ndarray | None = None) -> _SampleStats:
    """What the output pass needs before it starts: the two noise scalings and the value range
    (from sampled windows with detrending context) and the median of the corrected raw movie."""
    h = corrected.box[1] - corrected.box[0]
    w = corrected.box[3] - corrected.box[2]
    L = min(NOISE_WINDOW_FRAMES, T)
    budget = float(pp["sample_memory_mb"]) * 2 ** 20
    n_win = int(max(1, min(int(pp["noise_windows"]), budget // (1.5 * L * h * w * 4),
                           math.ceil(T / (SAMPLE_SHARE * L)))))
    starts = _windows(T, n_win, L)
    ctx = detrend_context(fps, pp["detrend"])
    windows = np.empty((len(starts), L, h, w), dtype=np.float32)
    for i, s in enumerate(starts):  # loop over sampled windows
        lo, hi = max(0, s - ctx), min(T, s + L + ctx)
        block = corrected(lo, hi)
        windows[i] = detrend_block(block, fps, pp["detrend"])[s - lo:s - lo + L]
    if median_raw is None:
        median_raw = np.median(corrected.at(sample_indices(T, MEDIAN_FRAMES)), axis=0).astype(np.float32)
    ones = np.ones((h, w), dtype=np.float32)
    sn_raw = ones
    if pp["noise_scale"]:
        acc = NoiseAccumulator()
        for win in windows:
            acc.add(win)
        sn_raw = smooth_noise_map(acc.sn())
        windows /= sn_raw
    value_range = (float(windows.min()), float(windows.max()))
    sn_enh = ones
    if pp["neuron_enhance"] and pp["noise_scale"]:
        acc = NoiseAccumulator()
        for win in windows:
            acc.add(neuron_enhance(win, gsig, value_range))
        sn_enh = smooth_noise_map(acc.sn())
    return _SampleStats(sn_raw, value_range, sn_enh, median_raw, len(starts))


class _OutputSample:
    """Statistics of the output movie gathered while it is written (independent of chunking).

    ``n_median`` evenly spaced output frames (and their vessel course) give the temporal
    median; up to ``n_windows`` disjoint windows of ``NOISE_WINDOW_FRAMES`` consecutive
    frames, evenly spaced, give the noise (Welch).
    """

    def __init__(self, T: int, shape: tuple[int, int], n_windows: int, n_median: int):
        L = min(NOISE_WINDOW_FRAMES, T)
        self.L = L
        self.starts = _windows(T, max(1, min(int(n_windows), T // L)), L)
        self.median_index = sample_indices(T, n_median)
        self.frames = np.empty((len(self.median_index),) + tuple(shape), dtype=np.float32)
        self.course = np.zeros(len(self.median_index))
        self.noise = NoiseAccumulator()
        self._win = np.empty((L,) + tuple(shape), dtype=np.float32)
        self._k = 0

    def add(self, start: int, y: np.ndarray, v: np.ndarray | None) -> None:
        """Frames ``y`` (n, h, w) of the output starting at frame ``start``; ``v`` their vessel course."""
        stop = start + len(y)
        sel = np.nonzero((self.median_index >= start) & (self.median_index < stop))[0]
        self.frames[sel] = y[self.median_index[sel] - start]
        if v is not None:
            self.course[sel] = v[self.median_index[sel] - start]
        while self._k < len(self.starts):  # loop over the windows this chunk touches
            w0 = int(self.starts[self._k])
            a, b = max(start, w0), min(stop, w0 + self.L)
            if a >= b:
                break
            self._win[a - w0:b - w0] = y[a - start:b - start]
            if b < w0 + self.L:
                break
            self.noise.add(self._win)
            self._k += 1

    def finish(self, pulse: proj.VesselPulse | None) -> tuple[np.ndarray, np.ndarray]:
        """``(median, sn)`` (h, w) float32 of the output movie (after the vessel regression)."""
        frames = self.frames if pulse is None else pulse.remove(self.frames, self.course)
        median = np.median(frames, axis=0).astype(np.float32)
        return median, self.noise.sn()


def _prefetched(read, ranges):
    """Yield ``(start, read(start, stop))`` for each range, reading the next one in a thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, *ranges[0]) if ranges else None
        for i, (a, _) in enumerate(ranges):
            block = pending.result()
            if i + 1 < len(ranges):
                pending = pool.submit(read, *ranges[i + 1])
            yield a, block


def use_threads(n: int) -> None:
    """Let numba kernels and OpenCV use ``n`` threads (a workflow job's ``threads``)."""
    import cv2
    import numba

    n = max(1, int(n))
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    cv2.setNumThreads(n)


def write_motion_csv(path: str | os.PathLike, shifts: np.ndarray) -> None:
    """Write ``frame,dy,dx`` (px, 4 decimals) atomically."""
    lines = ["frame,dy,dx"] + [f"{t},{dy:.4f},{dx:.4f}" for t, (dy, dx) in enumerate(np.asarray(shifts))]
    with atomic_output(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def read_motion_csv(path: str | os.PathLike) -> np.ndarray:
    """Read ``motion.csv`` into an array (T, 2) of ``(dy, dx)``."""
    p = Path(path)
    try:
        data = np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: not a motion table with columns frame,dy,dx ({exc})") from None
    return data[:, 1:3]


_GROUPS = ("general", "downsampling", "preprocessing", "motion_correction")


def _resolve(params: Mapping) -> dict:
    """Validate the groups this stage uses and fill their defaults (other groups are ignored)."""
    return resolve_config({g: dict(params[g]) for g in _GROUPS if g in params})


def _open_ingest(ingest_path) -> tuple[zarr.Array, float | None]:
    group = open_group(ingest_path)
    if "movie" not in group:
        raise InputError(f"{ingest_path}: no 'movie' array (was it written by califlow ingest?)")
    movie = group["movie"]
    if movie.ndim != 3:
        raise InputError(f"{ingest_path}: 'movie' must be (T, H, W), got shape {movie.shape}")
    if movie.shape[0] < 4:
        raise InputError(f"{ingest_path}: {movie.shape[0]} frame(s); the per-session stage needs at least 4")
    fps = group.attrs.get("fps")
    return movie, (float(fps) if fps else None)


def _bv_size(cfg: Mapping) -> list[float]:
    return list(cfg["downsampling"]["BVsize"] or sizes.bv_size(numeric_gsig(cfg)))


def correct_motion(ingest_path: str | os.PathLike, motion_csv: str | os.PathLike,
                   motion_store: str | os.PathLike, params: Mapping | None = None, *,
                   name: str | None = None) -> dict:
    """Motion of one session: writes ``motion.csv`` and ``motion.zarr``.

    ``motion.zarr`` holds what the enhancement step needs and QC: ``shifts`` (T, 2) float64
    (exact; ``motion.csv`` has 4 decimals), ``quality`` (T,), ``outliers`` (T,) bool, ``median``
    (h, w) float32 (temporal median of the corrected template frames, in the crop box) and, with
    ``do_non_rigid``, ``nonrigid_edges``, ``nonrigid_fields`` (n, 2, gh, gw), ``nonrigid_accepted``;
    attrs ``crop_box`` (ingest frame, half-open), ``cropped_fraction``, ``template_offset``,
    ``reference``, ``nonrigid_box``, ``timings``, provenance.

    Raises
    ------
    InputError
        Unreadable or non-finite frames, a featureless movie, or a crop beyond
        ``max_crop_fraction`` (naming the frames that set it).
    """
    cfg = _resolve(params or {})
    mc = cfg["motion_correction"]
    name = name or str(ingest_path)
    movie, _ = _open_ingest(ingest_path)
    T, H, W = (int(v) for v in movie.shape)
    timings = _StageTimes()
    log.info("%s: %d frames of %dx%d px", name, T, H, W)
    motion = motion_options(cfg)
    with timings("rigid_motion"):
        rigid: RigidMotion = estimate_rigid_motion(
            movie, motion, progress=Progress(T, "frames", f"{name} rigid motion"), name=str(ingest_path),
            keep_sample=True)
    shifts = rigid.shifts
    box = valid_box(shifts, (H, W))
    check_crop(box, shifts, (H, W), float(mc["max_crop_fraction"]), str(ingest_path))
    nonrigid = None
    if mc["do_non_rigid"]:
        with timings("nonrigid_motion"):
            nonrigid = estimate_nonrigid_motion(movie, shifts, box, motion,
                                                progress=Progress(T, "frames", f"{name} non-rigid motion"))
            m = int(math.ceil(nonrigid.max_displacement))
            if m > 0:
                box = (box[0] + m, box[1] - m, box[2] + m, box[3] - m)
                check_crop(box, shifts, (H, W), float(mc["max_crop_fraction"]), str(ingest_path))
    # temporal median of the corrected template frames: the enhancement step's BV projection
    median = np.median(correct_frames(rigid.sample, rigid.sample_index, shifts, box, nonrigid),
                       axis=0).astype(np.float32)
    rigid.sample = None
    cropped = 1.0 - (box[1] - box[0]) * (box[3] - box[2]) / float(H * W)
    log.info("%s: crop window %s (%.1f%% of the field of view removed), %d outlier frame(s)",
             name, list(box), 100 * cropped, int(rigid.outliers.sum()))
    info = {"n_frames": T, "shape": [H, W], "crop_box": [int(v) for v in box], "cropped_fraction": cropped,
            "template_offset": rigid.template_offset.tolist(), "reference": rigid.reference,
            "median_quality": float(np.nanmedian(rigid.quality)) if np.any(np.isfinite(rigid.quality)) else None,
            "n_outliers": int(rigid.outliers.sum()), "timings": dict(timings)}
    _write_motion_store(motion_store, rigid, median, nonrigid, info,
                        provenance={"params": {k: cfg[k] for k in _GROUPS}, "inputs": [str(ingest_path)],
                                    "session": name})
    write_motion_csv(motion_csv, shifts)
    return info


def _write_motion_store(path, rigid: RigidMotion, median: np.ndarray, nonrigid: NonRigidMotion | None,
                        info: dict, provenance: dict) -> None:
    """``motion.zarr`` as :func:`correct_motion` documents it (attrs ``info``)."""
    with atomic_output(path) as tmp:
        g = zarr.open_group(str(tmp), mode="w")
        create_image(g, "shifts", rigid.shifts.astype(np.float64))
        create_image(g, "quality", np.nan_to_num(rigid.quality, nan=-1.0).astype(np.float32))
        create_image(g, "outliers", rigid.outliers.astype(bool))
        create_image(g, "median", median)
        if nonrigid is not None:
            create_image(g, "nonrigid_edges", nonrigid.edges.astype(np.int64))
            create_image(g, "nonrigid_fields", nonrigid.fields.astype(np.float32))
            create_image(g, "nonrigid_accepted", nonrigid.accepted.astype(bool))
            g.attrs["nonrigid_box"] = list(nonrigid.box)
        g.attrs.update(info)
        set_provenance(g, **provenance)


def _read_motion_store(path, T: int) -> tuple[np.ndarray, tuple[int, int, int, int], NonRigidMotion | None, dict]:
    g = open_group(path)
    shifts = np.asarray(g["shifts"][:], dtype=np.float64)
    if shifts.shape != (T, 2):
        raise InputError(f"{path}: shifts for {shifts.shape[0]} frames, but the movie has {T}; "
                         "rerun motion correction for this session")
    box = tuple(int(v) for v in g.attrs["crop_box"])
    attrs = dict(g.attrs)
    median = np.asarray(g["median"][:], dtype=np.float32) if "median" in g else None
    if median is not None and median.shape != (box[1] - box[0], box[3] - box[2]):
        median = None
    attrs["median"] = median
    nonrigid = None
    if "nonrigid_fields" in g:
        nonrigid = NonRigidMotion(edges=np.asarray(g["nonrigid_edges"][:]), fields=np.asarray(g["nonrigid_fields"][:]),
                                  accepted=np.asarray(g["nonrigid_accepted"][:]),
                                  box=tuple(int(v) for v in g.attrs["nonrigid_box"]))
    return shifts, box, nonrigid, attrs


class _StageTimes(dict):
    """Wall-clock seconds per named stage, accumulated over ``with times("stage"):`` blocks."""

    @contextmanager
    def __call__(self, stage: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self[stage] = self.get(stage, 0.0) + time.perf_counter() - t


@dataclass
class _Enhancement:
    """What the passes of :func:`enhance_session` share for one session."""

    corrected: CorrectedFrames
    T: int
    shape: tuple[int, int]           # (h, w) of the crop box, px
    chunk: int                       # frames per read
    pp: Mapping                      # the ``preprocessing`` group
    gsig: float
    stats: _SampleStats
    pulse: proj.VesselPulse | None
    sample: _OutputSample


def _enhance_chunk(job: _Enhancement, y: np.ndarray) -> np.ndarray:
    """Noise-scale (by the raw noise) and neuron-enhance (then rescale) detrended frames."""
    pp, stats = job.pp, job.stats
    if pp["noise_scale"]:
        y /= stats.sn_raw
    if pp["neuron_enhance"]:
        y = neuron_enhance(y, job.gsig, stats.value_range)
        if pp["noise_scale"]:
            y /= stats.sn_enh
    return y


def _enhance_pass(job: _Enhancement, out_movie: zarr.Array, detrender: DetrendStream, progress: Progress,
                  times: _StageTimes) -> np.ndarray:
    """Correct, detrend and enhance every frame into ``out_movie``, feeding the output sample and
    the vessel pulse. Returns the mean corrected raw frame (h, w) float32; stage times in ``times``."""
    T = job.T
    mean_acc = np.zeros(job.shape, dtype=np.float64)
    step = max(1, job.chunk)
    if step >= out_movie.chunks[0]:
        step = (step // out_movie.chunks[0]) * out_movie.chunks[0]
    with FrameWriter(out_movie) as writer:
        for a in range(0, T, step):  # loop over chunks
            b = min(T, a + step)
            with times("read_warp"):
                block = job.corrected(a, b)
                mean_acc += block.sum(axis=0, dtype=np.float64)
            with times("detrend"):
                start, y = detrender.push(block, last=b == T)
            if len(y):
                with times("enhance"):
                    y = _enhance_chunk(job, y)
                with times("statistics"):
                    v = None
                    if job.pulse is not None:
                        v = job.pulse.course(y)
                        job.pulse.add(y, v)
                    job.sample.add(start, y, v)
                with times("write"):
                    writer.write(y)
            progress.update(b - a)
        closing = time.perf_counter()
    times["write"] += time.perf_counter() - closing  # the writer flushes its last chunks on closing
    return (mean_acc / T).astype(np.float32)


def _projection_pass(job: _Enhancement, movie_out: zarr.Array) -> dict:
    """Second pass over the enhanced movie (vessel course regressed out): correlation and PNR.

    Returns ``cn``, ``cn_scale``, ``pnr`` (h, w) float32 and ``vessel_course`` (T,) float32
    (None without the vessel pulse).
    """
    T, pulse = job.T, job.pulse
    if pulse is not None:
        pulse.finish()
    median_out, sn_out = job.sample.finish(pulse)
    thr = (median_out + 3.0 * sn_out).astype(np.float32)
    cn_acc = proj.BinnedCorrelation(job.shape, T)
    peak_acc = proj.PeakAccumulator(job.shape)
    read_step = movie_out.chunks[0] * max(1, job.chunk // movie_out.chunks[0])
    ranges = [(a, min(T, a + read_step)) for a in range(0, T, read_step)]
    course = np.zeros(T, np.float32) if pulse is not None else None
    for a, y in _prefetched(lambda a, b: movie_out[a:b], ranges):  # loop over chunks
        if pulse is not None:
            v = pulse.course(y)
            course[a:a + len(y)] = v - pulse.v_mean
            pulse.remove(y, v, out=y)
        peak_acc.add(y, last=a + len(y) == T)
        cn_acc.add(y, thr, median_out)
    cn, cn_scale = proj.finish_cn(cn_acc.image())
    return {"cn": cn, "cn_scale": cn_scale, "pnr": proj.finish_pnr(peak_acc.result(), median_out, sn_out),
            "vessel_course": course}


def _write_projections(path, images: Mapping[str, np.ndarray], pulse, mask, course, summary: dict,
                       provenance: dict) -> None:
    """``projections.zarr``: ``images`` (mean, bv, cn, pnr) and, with the vessel pulse removed,
    ``vessel_beta`` (next to the vessels) and ``vessel_course``; attrs ``summary``."""
    with atomic_output(path) as tmp_proj:
        g = zarr.open_group(str(tmp_proj), mode="w")
        for key, img in images.items():
            create_image(g, key, img.astype(np.float32))
        if pulse is not None:  # removed from the concatenated movie too, on and next to the vessels
            create_image(g, "vessel_beta", proj.near_vessels(mask) * pulse.beta.astype(np.float32))
            create_image(g, "vessel_course", course)
        g.attrs.update(summary)
        set_provenance(g, **provenance)


def _enhancement(movie, motion_store, cfg: Mapping, fps: float) -> tuple[_Enhancement, dict, np.ndarray, Any]:
    """Set up the passes: the corrected frames, the sample statistics (timed), the BV image and
    the vessel mask. Returns (job, motion attrs, bv, mask)."""
    pp = cfg["preprocessing"]
    T = int(movie.shape[0])
    gsig = numeric_gsig(cfg)
    shifts, box, nonrigid, motion_info = _read_motion_store(motion_store, T)
    h, w = box[1] - box[0], box[3] - box[2]
    corrected = CorrectedFrames(movie, shifts, box, nonrigid)
    t0 = time.perf_counter()
    stats = _sample_statistics(corrected, T, fps, pp, gsig, motion_info.pop("median"))
    motion_info["sample_statistics_s"] = time.perf_counter() - t0
    bv = bv_image(stats.median_raw, _bv_size(cfg))
    mask = proj.vessel_mask(bv) if pp["remove_vessel_pulse"] else None
    budget = float(pp["sample_memory_mb"]) * 2 ** 20
    sample = _OutputSample(T, (h, w), int(pp["noise_windows"]),
                           int(max(1, min(MEDIAN_FRAMES, budget // (h * w * 4)))))
    job = _Enhancement(corrected, T, (h, w), int(pp["chunk_frames"]), pp, gsig, stats,
                       proj.VesselPulse(mask) if mask is not None else None, sample)
    return job, motion_info, bv, mask


def enhance_session(ingest_path: str | os.PathLike, motion_store: str | os.PathLike,
                    enhanced_path: str | os.PathLike, projections_path: str | os.PathLike,
                    params: Mapping | None = None, *, name: str | None = None) -> dict:
    """Correct, detrend, noise-scale and enhance one session; write ``enhanced.zarr`` and ``projections.zarr``.

    Returns a summary dict (crop box, cn_scale, timings per stage (s), ...).
    """
    cfg = _resolve(params or {})
    name = name or str(ingest_path)
    movie, fps = _open_ingest(ingest_path)
    T, H, W = (int(v) for v in movie.shape)
    fps = fps or float(cfg["general"]["sf"])
    t0 = time.perf_counter()
    job, motion_info, bv, mask = _enhancement(movie, motion_store, cfg, fps)
    timings: dict[str, float] = {"sample_statistics": motion_info.pop("sample_statistics_s")}
    box = list(motion_info["crop_box"])
    h, w = job.shape
    provenance = {"params": {k: cfg[k] for k in _GROUPS}, "inputs": [str(ingest_path), str(motion_store)],
                  "session": name}
    stage = _StageTimes.fromkeys(("read_warp", "detrend", "enhance", "statistics", "write"), 0.0)
    with atomic_output(enhanced_path, needed_bytes=T * h * w * 4) as tmp_enh:  # uncompressed float32
        g = zarr.open_group(str(tmp_enh), mode="w")
        # temporary intermediate, uncompressed: noise-scaled float32 frames compress by only ~1.3x
        # (zstd level 1), and compressing then reading back cost ~1.5 ms of CPU per 300x300 frame
        out_movie = create_movie(g, "movie", (T, h, w), level=0)
        mean = _enhance_pass(job, out_movie, DetrendStream(fps, job.pp["detrend"]),
                             Progress(T, "frames", f"{name} enhance"), stage)
        g.attrs.update({"crop_box": box, "fps": fps, "units": "noise sigma"})
        set_provenance(g, **provenance)
        timings.update({f"output_{k}": v for k, v in stage.items()})
        t1 = time.perf_counter()
        projections = _projection_pass(job, zarr.open_array(str(tmp_enh / "movie"), mode="r"))
        timings["projection_pass"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    summary = {
        "n_frames": T, "shape": [H, W], "fps": fps, "crop_box": box,
        "cropped_fraction": motion_info.get("cropped_fraction"),
        "template_offset": motion_info.get("template_offset"), "reference": motion_info.get("reference"),
        "n_outliers": motion_info.get("n_outliers"), "cn_scale": projections["cn_scale"],
        "noise_windows": job.stats.n_windows, "vessel_pulse_removed": job.pulse is not None,
        "vessel_mask_fraction": float(mask.mean()) if mask is not None else 0.0,
    }
    images = {"mean": mean, "bv": bv, "cn": projections["cn"], "pnr": projections["pnr"]}
    _write_projections(projections_path, images, job.pulse, mask, projections["vessel_course"], summary,
                       provenance)
    timings["projections"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    summary["timings"] = timings
    log.info("%s: enhanced and projected in %.1f s (%.1f frames/s)", name, timings["total"],
             T / max(timings["total"], 1e-9))
    return summary


def run_session(ingest_path: str | os.PathLike, out: str | os.PathLike | Mapping[str, Any],
                params: Mapping | None = None, *, name: str | None = None) -> dict:
    """Run the whole per-session stage on one ``ingest.zarr`` (:func:`correct_motion` then
    :func:`enhance_session`).

    Parameters
    ----------
    ingest_path : path
        ``ingest.zarr`` with ``movie`` (T, H, W) float32 and attrs ``fps``.
    out : path or mapping
        Output folder, or ``{"motion": ..., "motion_store": ..., "enhanced": ..., "projections": ...}``.
    params : mapping, optional
        Configuration (groups ``general``, ``downsampling``, ``preprocessing``,
        ``motion_correction`` are used; defaults fill the rest).
    name : str, optional
        Session label for logs and errors (default: the ingest path).

    Returns
    -------
    dict
        Summary: ``n_frames``, ``shape``, ``crop_box``, ``cropped_fraction``, ``n_outliers``,
        ``template_offset``, ``cn_scale``, ``timings`` (s per stage), ``fps``.
    """
    paths = session_paths(out)
    t0 = time.perf_counter()
    info = correct_motion(ingest_path, paths.motion, paths.motion_store, params, name=name)
    summary = enhance_session(ingest_path, paths.motion_store, paths.enhanced, paths.projections, params,
                              name=name)
    summary["timings"] = {**info["timings"], **summary["timings"], "total": time.perf_counter() - t0}
    return summary
