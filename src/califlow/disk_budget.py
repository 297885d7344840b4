"""The disk a run will take, estimated from the recordings' headers before any job starts.

The movie stores hold float32 frames: per session ``ingest.zarr`` and ``enhanced.zarr``
(intermediates: deleted once their animal's ``aligned.zarr`` is written, unless
``keep_intermediates``), and per animal ``aligned.zarr`` (kept; 2 bytes a value with
``concatenation.dtype`` float16 or uint16-scaled) over the field of view common to its
sessions. The figures are uncompressed sizes, an upper bound: blosc-zstd shrinks these
noise-like movies by only 1.1-1.3x (:func:`califlow.io.store.compressor`), and the zeros that pad
its edge chunks compress away. ``enhanced.zarr`` is written without compression (speed), so its
edge chunks count whole (:data:`califlow.io.store.MOVIE_CHUNKS`). What depends on the number of
neurons (``cnmfe.zarr``, the ``.isxd`` cell sets, the NWB files and the CSV traces) is given
per 100 neurons, since that number is known only after extraction.

Frame counts come from the headers or timestamp files (:func:`califlow.cohort_check.probe_session`);
an AVI whose header lies is counted exactly only when it is decoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from califlow.cohort_check import SessionProbe
from califlow.io.encoding import MovieEncoding
from califlow.io.store import MOVIE_CHUNKS, free_bytes, size_text
from califlow.params import default_config

__all__ = ["AnimalBudget", "animal_budget", "budget_lines"]

#: Bytes of one float32 value.
_F32 = 4
#: Bytes of one value written as text in the CSV traces (digits, sign, separator).
_CSV_VALUE = 10
#: Per session and neuron: footprints written by the exports (two cell sets and the NWB file).
_EXPORT_FOOTPRINTS = 3
#: Per session, neuron and frame: float32 traces written by the exports (raw and denoised in
#: both cell sets; raw, denoised and spikes in the NWB file).
_EXPORT_TRACES = 5
#: Per session, neuron and frame: values in the CSV tables (traces, traces_raw, spikes).
_CSV_TRACES = 3
#: Per neuron and frame: float32 traces in cnmfe.zarr (C, C_raw, S).
_CNMFE_TRACES = 3


@dataclass(frozen=True)
class AnimalBudget:
    """Estimated bytes of one animal's outputs (uncompressed: upper bounds).

    Attributes
    ----------
    sessions : int
        Sessions whose recordings could be read.
    n_frames : int
        Frames of the concatenation (after ``temporal_ds`` and ``target_fps``).
    shape : (int, int)
        Common field of view (px, after ``spatial_ds``): the smallest height and width.
    intermediates : int
        ``ingest.zarr`` and ``enhanced.zarr`` of every session (bytes; ``enhanced.zarr`` with
        its edge chunks whole).
    aligned : int
        ``aligned.zarr`` (bytes).
    per_100_neurons : int
        ``cnmfe.zarr`` and every export, for 100 neurons (bytes).
    """

    sessions: int
    n_frames: int
    shape: tuple[int, int]
    intermediates: int
    aligned: int
    per_100_neurons: int


def _stored_frames(n_frames: int, shape: tuple[int, int]) -> int:
    """Pixels an uncompressed movie store holds: every chunk whole, the edge ones included."""
    ct, ch, cw = MOVIE_CHUNKS
    return (-(-n_frames // ct) * ct) * (-(-shape[0] // ch) * ch) * (-(-shape[1] // cw) * cw)


def animal_budget(probes: Mapping[str, SessionProbe], aligned_dtype: str | None = None) -> AnimalBudget:
    """Estimate one animal's disk use from its sessions' probes (``{session: SessionProbe}``);
    ``aligned_dtype`` is ``concatenation.dtype`` (the schema's when None; float16 and
    uint16-scaled take 2 bytes a value)."""
    shapes = [p.shape for p in probes.values()]
    H, W = min(s[0] for s in shapes), min(s[1] for s in shapes)
    T = sum(p.n_frames for p in probes.values())
    intermediates = sum((p.n_frames * p.shape[0] * p.shape[1] + _stored_frames(p.n_frames, p.shape)) * _F32
                        for p in probes.values())  # ingest (compressed) + enhanced (not)
    cnmfe = (H * W * (1 + len(probes)) + _CNMFE_TRACES * T) * _F32  # A, A_sessions, traces
    exports = sum((_EXPORT_FOOTPRINTS * p.shape[0] * p.shape[1] + _EXPORT_TRACES * p.n_frames) * _F32
                  + _CSV_TRACES * p.n_frames * _CSV_VALUE for p in probes.values())
    aligned = T * H * W * MovieEncoding(aligned_dtype or default_config()["concatenation"]["dtype"]).dtype.itemsize
    return AnimalBudget(len(probes), T, (H, W), intermediates, aligned, 100 * (cnmfe + exports))


def budget_lines(probes: Mapping[str, Mapping[str, SessionProbe]], animals, *, keep_intermediates: bool,
                 results: str = "results", aligned_dtype: str | None = None) -> tuple[list[str], str | None]:
    """The disk estimate to print when the workflow starts, and a warning when it may not fit.

    Parameters
    ----------
    probes : mapping
        ``{animal: {session: SessionProbe}}`` (:func:`califlow.cohort_check.check_animals`).
    animals : iterable of str
        Every animal of the sheet; those without probes (recordings not there yet) are named.
    keep_intermediates : bool
        Whether the intermediates stay (then they count in what is kept).
    results : path
        The results folder, whose disk's free space is compared.
    aligned_dtype : str
        ``concatenation.dtype``: how ``aligned.zarr`` stores the movie (the schema's when None).

    Returns
    -------
    (lines, warning or None)
    """
    lines, peak = ["califlow disk estimate (uncompressed, an upper bound; from the recordings' headers):"], 0
    for animal in animals:
        found = probes.get(animal) or {}
        if not found:
            lines.append(f"  {animal}: recordings not there yet (written by a job); not estimated")
            continue
        b = animal_budget(found, aligned_dtype)
        peak += b.intermediates + b.aligned
        kept = b.aligned + (b.intermediates if keep_intermediates else 0)
        lines.append(f"  {animal}: {b.sessions} session(s), {b.n_frames} frames of {b.shape[0]}x{b.shape[1]} px: "
                     f"aligned.zarr {size_text(b.aligned)}, intermediates {size_text(b.intermediates)} "
                     f"({'kept' if keep_intermediates else 'deleted after concatenation'}), "
                     f"kept {size_text(kept)} + {size_text(b.per_100_neurons)} per 100 neurons")
    free = free_bytes(results)
    lines.append((f"  at most {size_text(peak)} of movies at once; " if peak else "  ")
                 + f"{size_text(free)} free on the disk of {results}/")
    warning = None
    if peak > free:
        warning = (f"the run may need up to {size_text(peak)} of movies on the disk of {results}/, which has "
                   f"{size_text(free)} free: free space or point the results elsewhere before the concatenation "
                   "stops on a full disk")
    return lines, warning
