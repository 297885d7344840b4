"""Aligned stores made from simulated animals, for tests, benchmarks and demos of CNMF-E.

:func:`write_aligned_store` renders every session of a
:class:`~califlow.simulate.SimulatedAnimal` in the reference frame without motion (a
perfect alignment), runs the per-session enhancement chain of :mod:`califlow.preprocess`
(detrend, noise scaling, MIN1PIPE enhancement, noise scaling again), the per-session
projections of :mod:`califlow.motion.projections` (cn, pnr) and the vessel image
(:func:`califlow.motion.vessels.bv_image` of the raw median), and writes an
``aligned.zarr`` with the layout :func:`califlow.cnmfe.run_cnmfe` reads.  Frames are
processed in chunks (with the detrending context), so long sessions fit in memory.
"""

from __future__ import annotations

import os

import numpy as np

from califlow import sizes
from califlow.io.store import atomic_output, create_image, create_movie, open_group, set_provenance

__all__ = ["write_aligned_store"]


def _enhance(frames: np.ndarray, fps: float, gsig: float, detrend_s: float, sn1, sn2, value_range):
    """detrend -> / sn1 -> MIN1PIPE (fixed intensity range) -> / sn2 (when given)."""
    from califlow.preprocess.detrend import detrend_block
    from califlow.preprocess.enhance import neuron_enhance

    y = detrend_block(np.asarray(frames, np.float32), fps, detrend_s)
    y /= sn1
    y = neuron_enhance(y, gsig, value_range=value_range)
    return y / sn2 if sn2 is not None else y


def _enhancement_levels(first: np.ndarray, fps: float, gsig: float, detrend_s: float) -> dict:
    """Noise levels and intensity range of a session, from its first chunk of frames (n, H, W) float32.

    Returns a dict: ``sn1`` (H, W) noise of the detrended frames, ``value_range`` (min, max) of
    the detrended frames over ``sn1``, ``sn2`` (H, W) noise of the enhanced frames and ``median``
    (H, W) of the enhanced frames over ``sn2`` (noise floors 1e-3).
    """
    from califlow.preprocess.detrend import detrend_block
    from califlow.preprocess.noise import get_sn

    d = detrend_block(first, fps, detrend_s)
    sn1 = np.maximum(get_sn(d), 1e-3)
    value_range = (float((d / sn1).min()), float((d / sn1).max()))
    e = _enhance(first, fps, gsig, detrend_s, sn1, None, value_range)
    sn2 = np.maximum(get_sn(e), 1e-3)
    return {"sn1": sn1, "value_range": value_range, "sn2": sn2, "median": np.median(e / sn2, axis=0)}


def _write_enhanced_session(movie, start: int, frames, n: int, fps: float, gsig: float, detrend_s: float,
                            chunk: int, levels: dict) -> tuple[np.ndarray, np.ndarray]:
    """Enhance one session's ``n`` frames ``chunk`` at a time into ``movie[start:start + n]``.

    ``frames(a, b)`` returns the session's frames ``a:b``; each chunk is detrended with the
    context it needs on both sides; ``levels`` is :func:`_enhancement_levels`. Returns the
    session's correlation and PNR images, float32 (H, W).
    """
    from califlow.motion.projections import BinnedCorrelation, PeakAccumulator, finish_cn, finish_pnr
    from califlow.preprocess.detrend import detrend_context

    h, w = movie.shape[1:]
    ctx = detrend_context(fps, detrend_s)
    corr = BinnedCorrelation((h, w), n)
    peak = PeakAccumulator((h, w))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        lo, hi = max(0, a - ctx), min(n, b + ctx)
        raw = frames(lo, hi).astype(np.float32)
        y = _enhance(raw, fps, gsig, detrend_s, levels["sn1"], levels["sn2"], levels["value_range"])
        y = y[a - lo:a - lo + (b - a)]
        movie[start + a:start + b] = y
        yc = y - levels["median"]
        peak.add(yc, last=b == n)
        corr.add(np.where(yc < 3.0, 0, yc))
    cn, _ = finish_cn(corr.image())
    return cn, finish_pnr(peak.result(), np.zeros((h, w), np.float32), np.ones((h, w), np.float32))


def write_aligned_store(animal, path: str | os.PathLike, *, gsig: float | None = None, detrend_s: float = 1.0,
                        chunk: int = 1000, sessions: list[int] | None = None, rendered=None) -> None:
    """Write an ``aligned.zarr`` (movie, cn, pnr, attrs sessions) for a simulated animal.

    Parameters
    ----------
    animal : SimulatedAnimal
    path : output store path (written atomically).
    gsig : neuron size of the MIN1PIPE enhancement (px); the schema's ``general.gSig`` when not given.
    detrend_s : detrending window (s).
    chunk : frames processed at once.
    sessions : sessions to include (default all), in order.
    rendered : sequence of ndarray (T_s, H, W), optional
        The sessions' aligned frames already rendered (``animal.aligned_frames(s)``), so that
        stores of the same animal for several parameters do not render them again.
    """
    from califlow.motion.vessels import bv_image
    from califlow.params import default_config
    from califlow.preprocess.detrend import detrend_context

    gsig = float(default_config()["general"]["gSig"] if gsig is None else gsig)
    fps = float(animal.ground_truth.fps)

    def frames(s: int, a: int, b: int) -> np.ndarray:
        return rendered[s][a:b] if rendered is not None else animal.aligned_frames(s, a, b)

    h, w = animal.shape
    order = list(range(animal.n_sessions)) if sessions is None else list(sessions)
    lengths = [animal.n_frames(s) for s in order]
    total = int(sum(lengths))
    ctx = detrend_context(fps, detrend_s)
    with atomic_output(path) as tmp:
        g = open_group(tmp, "w")
        movie = create_movie(g, "movie", (total, h, w))
        cns, pnrs, bvs, meta = [], [], [], []
        start = 0
        for s, n in zip(order, lengths):
            first = frames(s, 0, min(n, chunk + ctx)).astype(np.float32)
            levels = _enhancement_levels(first, fps, gsig, detrend_s)
            bvs.append(bv_image(np.median(first, axis=0), sizes.bv_size(gsig)))
            cn, pnr = _write_enhanced_session(movie, start, lambda a, b, s=s: frames(s, a, b), n, fps, gsig,
                                              detrend_s, chunk, levels)
            cns.append(cn)
            pnrs.append(pnr)
            meta.append({"name": f"session{s}", "start": start, "stop": start + n, "fps": fps, "source": "simulated"})
            start += n
        create_image(g, "cn", np.stack(cns))
        create_image(g, "pnr", np.stack(pnrs))
        create_image(g, "bv", np.stack(bvs))
        set_provenance(g, {"gsig": gsig, "detrend_s": detrend_s}, {"simulated_seed": int(animal.seed)},
                       sessions=meta)
