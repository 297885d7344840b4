"""Concatenation: every session's enhanced movie warped into the aligned frame, one store.

``aligned.zarr`` (written under a temporary name, renamed when complete):

- ``movie`` (T, H, W), chunks about (100, 64, 64), blosc-zstd + bit-shuffle, stored as
  ``concatenation.dtype`` (float32, float16 or uint16-scaled; attr ``califlow_encoding``, see
  :mod:`califlow.io.encoding`; readers decode to float32); frames of the sessions in order,
  with each session's vessel pulsation regressed out when its ``projections.zarr`` holds it
  (``vessel_beta``, ``vessel_course``: see :func:`read_vessel_pulse`); pixels a session does
  not cover (``fov_policy='pad'``) are 0;
- ``mean``, ``bv``, ``cn``, ``pnr`` (S, H, W) float32: each session's projections in the
  aligned frame (0 where not covered), ``valid`` (S, H, W) bool;
- attrs ``sessions``: list of ``{name, start, stop, n_frames, fps, source}`` (frames
  ``start:stop`` of ``movie``), ``fps``, ``dropped``, the alignment summary and provenance.

Frames are streamed in blocks of ``chunk_frames`` and written in whole time chunks, so memory
is a few blocks whatever the number of frames.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from califlow.align.features import PROJECTION_KEYS
from califlow.align.maps import BilinearWarp
from califlow.align.pipeline import Alignment, load_alignment
from califlow.errors import InputError
from califlow.io.encoding import ATTR as ENCODING_ATTR
from califlow.io.encoding import MovieEncoding
from califlow.io.store import (
    MOVIE_CHUNKS,
    FrameWriter,
    atomic_output,
    create_image,
    create_movie,
    open_group,
    set_provenance,
)
from califlow.params import default_config
from califlow.progress import Progress

__all__ = ["concatenate", "read_projections", "read_vessel_pulse"]

log = logging.getLogger("califlow.align")


def read_projections(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a session's ``projections.zarr`` (``mean``, ``bv``, ``cn``, ``pnr``; float32 (H, W))."""
    try:
        g = open_group(path)
    except FileNotFoundError as e:
        raise InputError(str(e)) from None
    out = {}
    for key in PROJECTION_KEYS:
        if key in g:
            out[key] = np.asarray(g[key][...], dtype=np.float32)
    if "bv" not in out or "cn" not in out:
        raise InputError(f"{path}: projections store lacks 'bv' or 'cn' (has {sorted(g.keys())})")
    return out


def read_vessel_pulse(path: str | os.PathLike, n_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The vessel pulsation of a session's ``projections.zarr``: ``(beta (h, w), course (T,))`` or None.

    ``movie - course[t] * beta`` is the enhanced movie with the vessels' common time course
    regressed out (``preprocessing.remove_vessel_pulse``; see :mod:`califlow.motion.projections`).
    """
    g = open_group(path)
    if "vessel_beta" not in g or "vessel_course" not in g:
        return None
    course = np.asarray(g["vessel_course"][...], np.float32)
    if course.shape != (n_frames,):
        raise InputError(f"{path}: vessel_course has {course.shape[0]} frames, the enhanced movie {n_frames}")
    return np.asarray(g["vessel_beta"][...], np.float32), course


def _open_enhanced(path: Path) -> tuple[Any, float | None, dict]:
    try:
        g = open_group(path)
    except FileNotFoundError as e:
        raise InputError(str(e)) from None
    if "movie" not in g:
        raise InputError(f"{path}: no 'movie' array in the enhanced store (has {sorted(g.keys())})")
    movie = g["movie"]
    if movie.ndim != 3:
        raise InputError(f"{path}: 'movie' must be (T, H, W), got shape {movie.shape}")
    attrs = dict(g.attrs)
    fps = attrs.get("fps")
    return movie, (None if fps is None else float(fps)), attrs


def concatenate(enhanced: Sequence[str | os.PathLike], alignment: Alignment | str | os.PathLike,
                out_path: str | os.PathLike, *, names: Sequence[str] | None = None,
                projections: Sequence[Mapping[str, np.ndarray] | str | os.PathLike] | None = None,
                chunk_frames: int = MOVIE_CHUNKS[0], fps_tolerance: float | None = None,
                dtype: str | None = None, params: Mapping | None = None) -> dict:
    """Warp every session's enhanced movie through its map and write ``aligned.zarr``.

    Parameters
    ----------
    enhanced : sequence of paths
        Each session's ``enhanced.zarr`` (array ``movie`` (T, h, w) float32, attr ``fps``),
        in concatenation order.
    alignment : Alignment or path of ``alignment.zarr``
    out_path : path of the ``aligned.zarr`` to write
    names : sequence of str, optional
        Session names of ``enhanced`` (default: the alignment's sessions, same order).
        Sessions the alignment dropped are skipped.
    projections : sequence of dicts or ``projections.zarr`` paths, optional
        Per-session projections to store aligned (``mean``, ``bv``, ``cn``, ``pnr``).
    chunk_frames : int
        Frames read and warped per block (also the time chunk of ``movie``).
    fps_tolerance : float, optional
        Largest relative difference of frame rates accepted between sessions
        (``inter_session_alignment.fps_tolerance`` of the schema when not given).
    dtype : {'float32', 'float16', 'uint16-scaled'}, optional
        How ``movie`` is stored (``concatenation.dtype``; the schema's when not given).
    params : mapping, optional
        Resolved configuration, stored as provenance.

    Returns
    -------
    dict: the ``sessions`` table, ``n_frames``, ``shape``, ``fps``.

    Raises
    ------
    InputError
        Missing or malformed store, frame size that does not match the alignment, differing
        frame rates, non-finite frames, values ``dtype`` cannot hold (names file and frame).
    """
    al = alignment if isinstance(alignment, Alignment) else load_alignment(alignment)
    paths = [Path(p) for p in enhanced]
    names = list(names) if names is not None else list(al.names)
    _check_sessions_given(names, paths, projections, al)
    jobs = _session_jobs(names, paths, al)
    fps0 = _common_fps(jobs, fps_tolerance)
    H, W = al.shape
    total = int(sum(j.movie.shape[0] for j in jobs))
    table = _session_table(jobs)
    enc = _encoding(dtype, jobs, projections, chunk_frames)
    # half the stored size, a lower bound: blosc-zstd shrinks these movies about 1.3x (io.store.compressor)
    with atomic_output(out_path, needed_bytes=total * H * W * enc.dtype.itemsize // 2) as tmp:
        root = open_group(tmp, mode="w")
        _write_aligned_movie(root, jobs, al, projections, total, chunk_frames, enc)
        if projections is not None:
            _write_aligned_projections(root, jobs, al, projections)
        set_provenance(root, params=params, inputs=[str(p) for p in paths], sessions=table, fps=fps0,
                       n_frames=total, shape=[H, W], dropped=list(al.dropped), alignment_path=al.path,
                       bv_score=al.bv_score, alignment_box=list(al.box))
    log.info("concatenated %d sessions, %d frames of %dx%d into %s (%s)", len(jobs), total, H, W, out_path, enc.name)
    return {"sessions": table, "n_frames": total, "shape": (H, W), "fps": fps0}


class _Job(NamedTuple):
    """One session to concatenate: its enhanced movie and where it sits in the alignment and the inputs."""

    name: str
    path: Path
    movie: Any
    fps: float
    attrs: dict
    alignment_index: int
    input_index: int


def _check_sessions_given(names: list[str], paths: list[Path], projections, al: Alignment) -> None:
    """The inputs match one to one: as many names and projections as movies, every name in the
    alignment (or dropped by it), every aligned session given."""
    if len(names) != len(paths):
        raise InputError(f"concatenate: {len(paths)} enhanced movies but {len(names)} session names")
    if projections is not None and len(projections) != len(paths):
        raise InputError(f"concatenate: {len(paths)} enhanced movies but {len(projections)} projections")
    unknown = [n for n in names if n not in al.names and n not in al.dropped]
    if unknown:
        raise InputError(f"concatenate: sessions {unknown} are not in the alignment (sessions {al.names})")
    missing = [n for n in al.names if n not in names]
    if missing:
        raise InputError(f"concatenate: the alignment has sessions {missing} that were not given")


def _session_jobs(names: list[str], paths: list[Path], al: Alignment) -> list[_Job]:
    """Open the enhanced movies of the sessions the alignment kept, checking frame size, length and fps."""
    jobs = []
    for i, (nm, p) in enumerate(zip(names, paths)):
        if nm in al.dropped:
            log.warning("session %r was dropped by the alignment (fov_policy 'drop'); it is not concatenated", nm)
            continue
        movie, fps, attrs = _open_enhanced(p)
        k = al.names.index(nm)
        if tuple(movie.shape[1:]) != tuple(al.session_shapes[k]):
            raise InputError(f"{p}: frames are {movie.shape[1]}x{movie.shape[2]} but session {nm!r} was aligned "
                             f"with projections of {al.session_shapes[k][0]}x{al.session_shapes[k][1]}; "
                             "re-run the alignment on this session's projections")
        if movie.shape[0] == 0:
            raise InputError(f"{p}: session {nm!r} has no frames")
        if fps is None:
            raise InputError(f"{p}: no 'fps' attribute in the enhanced store of session {nm!r}")
        jobs.append(_Job(nm, p, movie, fps, attrs, k, i))
    if not jobs:
        raise InputError("concatenate: no session left to concatenate")
    return jobs


def _common_fps(jobs: list[_Job], fps_tolerance: float | None) -> float:
    """The first session's frame rate (Hz), after checking every rate is within ``fps_tolerance``
    (relative; the schema's default when None) of it."""
    fps0 = jobs[0].fps
    if fps_tolerance is None:
        fps_tolerance = default_config()["inter_session_alignment"]["fps_tolerance"]
    bad = [(j.name, j.fps) for j in jobs if abs(j.fps - fps0) > fps_tolerance * fps0]
    if bad:
        listing = ", ".join(f"{j.name}: {j.fps:g} fps" for j in jobs)
        raise InputError(f"concatenate: sessions have different frame rates ({listing}); one movie needs one rate. "
                         "Set downsampling.target_fps (e.g. the lowest rate) to resample every session to one rate, "
                         "or split the animal.")
    return fps0


def _session_table(jobs: list[_Job]) -> list[dict]:
    """The ``sessions`` attribute: name, frames ``start:stop`` of the concatenated movie, fps, sources."""
    table = []
    t0 = 0
    for job in jobs:
        n = int(job.movie.shape[0])
        src = job.attrs.get("source", job.attrs.get("inputs"))
        table.append({"name": job.name, "start": t0, "stop": t0 + n, "n_frames": n, "fps": job.fps,
                      "source": str(job.path), "original_source": src})
        t0 += n
    return table


def _session_pulse(job: _Job, projections: Sequence | None) -> tuple | None:
    """The vessel pulsation of a session (:func:`read_vessel_pulse`) when its projections are a path."""
    pr = projections[job.input_index] if projections is not None else None
    return read_vessel_pulse(pr, int(job.movie.shape[0])) if isinstance(pr, (str, os.PathLike)) else None


def _session_blocks(job: _Job, pulse: tuple | None, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first frame, block (n, h, w) float32)`` of a session's enhanced movie, ``chunk_frames`` at a time,
    with its vessel pulsation ``pulse`` (``(beta (h, w), course (T,))``) regressed out.

    Raises
    ------
    InputError
        A frame holds NaN or infinite values.
    """
    n = int(job.movie.shape[0])
    for start in range(0, n, chunk_frames):
        block = np.asarray(job.movie[start:start + chunk_frames], dtype=np.float32)
        finite = np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if not finite.all():
            f = start + int(np.argmin(finite))
            raise InputError(f"{job.path}: frame {f} of session {job.name!r} has NaN or infinite values")
        if pulse is not None:
            block -= pulse[1][start:start + len(block), None, None] * pulse[0][None]
        yield start, block


def _encoding(dtype: str | None, jobs: list[_Job], projections: Sequence | None, chunk_frames: int) -> MovieEncoding:
    """The storage of ``movie``; for ``uint16-scaled``, over the range of every session's frames
    (one extra read: the bilinear warp mixes values, so it stays within their range and 0)."""
    name = dtype or default_config()["concatenation"]["dtype"]
    if name != "uint16-scaled":
        return MovieEncoding(name)
    lo, hi = 0.0, 0.0
    for job in jobs:
        for _, block in _session_blocks(job, _session_pulse(job, projections), chunk_frames):
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    enc = MovieEncoding.for_range(name, lo, hi)
    log.info("uint16-scaled: values %.4g to %.4g, one code = %.3g (largest error %.3g)", lo, hi, enc.scale,
             enc.max_error)
    return enc


def _write_aligned_movie(root, jobs: list[_Job], al: Alignment, projections: Sequence | None, total: int,
                         chunk_frames: int, enc: MovieEncoding) -> None:
    """Write ``movie`` (total, H, W), encoded by ``enc``: every session warped into the aligned frame,
    in order, with its vessel pulsation regressed out when its ``projections.zarr`` path holds one."""
    H, W = al.shape
    progress = Progress(total, "frames", "concatenate")
    arr = create_movie(root, "movie", (total, H, W), stored_dtype=enc.dtype,
                       chunks=(chunk_frames, MOVIE_CHUNKS[1], MOVIE_CHUNKS[2]))
    arr.attrs[ENCODING_ATTR] = enc.attrs()
    with FrameWriter(arr, encode=enc.encode) as writer:
        for job in jobs:
            _write_session_frames(writer, job, al, _session_pulse(job, projections), chunk_frames, progress, enc)


def _write_session_frames(writer: FrameWriter, job: _Job, al: Alignment, pulse: tuple | None, chunk_frames: int,
                          progress: Progress, enc: MovieEncoding) -> None:
    """Warp one session's frames into the aligned frame, ``chunk_frames`` at a time, and append them.

    Raises
    ------
    InputError
        A frame holds NaN or infinite values, or a value that ``enc`` cannot store.
    """
    warp = BilinearWarp(al.maps[job.alignment_index], al.session_shapes[job.alignment_index], fill=0.0)
    for start, block in _session_blocks(job, pulse, chunk_frames):
        bad = enc.first_unstorable(block)
        if bad >= 0:
            peak = float(np.abs(block[bad]).max())
            raise InputError(f"{job.path}: frame {start + bad} of session {job.name!r} holds a value of magnitude "
                             f"{peak:.6g}, beyond what concatenation.dtype {enc.name!r} stores; use float32")
        writer.write(warp(block))
        progress.update(len(block))


def _write_aligned_projections(root, jobs: list[_Job], al: Alignment, projections: Sequence) -> None:
    """Write each session's projections warped into the aligned frame, (S, H, W) float32 (0 where
    not covered), and ``valid`` (S, H, W) bool."""
    H, W = al.shape
    stacks = {key: np.zeros((len(jobs), H, W), np.float32) for key in PROJECTION_KEYS}
    valid = np.zeros((len(jobs), H, W), bool)
    for s, job in enumerate(jobs):
        k = job.alignment_index
        pr = projections[job.input_index]
        pr = read_projections(pr) if isinstance(pr, (str, os.PathLike)) else pr
        warp = BilinearWarp(al.maps[k], al.session_shapes[k], fill=np.nan)
        valid[s] = warp.valid_image
        for key in PROJECTION_KEYS:
            if key in pr and pr[key] is not None:
                img = np.asarray(pr[key], np.float32)
                if img.shape != tuple(al.session_shapes[k]):
                    raise InputError(f"projections of session {job.name!r}: {key!r} is {img.shape}, "
                                     f"the alignment expects {tuple(al.session_shapes[k])}")
                stacks[key][s] = np.nan_to_num(warp(img[None])[0], nan=0.0)
    for key, st in stacks.items():
        create_image(root, key, st)
    create_image(root, "valid", valid)
