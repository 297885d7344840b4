"""Neuron size measured from the data (``gSig: auto``, and the check of a manual gSig).

The estimate works on a motion-corrected movie sample (T, H, W) in any units:

1. each pixel is detrended in time (:func:`califlow.preprocess.detrend.detrend_block`) and
   divided by its noise level (:func:`califlow.preprocess.noise.get_sn`), so the slow
   background and the camera gain drop out;
2. candidate neurons are the local maxima of the *rise image* (the largest increase of each
   pixel over ``RISE_S`` seconds, smoothed by a 1-px Gaussian): calcium transients rise
   fast, while what survives of the background drifts slowly; candidates must stand
   ``MIN_RISE`` robust deviations above the image's median and are taken brightest first;
3. for each candidate the footprint is measured by regression: every pixel of a box around
   it is regressed on the candidate's trace (mean of its 3 x 3 pixels), which gives the
   neuron's spatial profile whatever its brightness and however the other neurons and the
   background fluctuate (they are uncorrelated with it); the profile's floor is the median
   over the box;
4. the neuron's diameter is the equivalent diameter ``2 sqrt(area / pi)`` of the connected
   region above half of the profile's peak (the simulator's and CaliAli's footprint
   libraries' "diameter at half maximum"); candidates whose region touches the box border,
   or is elongated (major/minor axis ratio above ``MAX_ELONGATION``: vessels, dendrites) or
   smaller than 3 px across, are set aside;
5. the estimate is the median of the kept diameters.

``gSig`` follows as ``diameter / DIAMETER_PER_GSIG`` (:mod:`califlow.sizes`).  The factor
was chosen on the robustness grid (``benchmarks/bench_robustness.py``).

In the workflow (rule ``neuron_size``), :func:`measure_sessions` takes a sample of
``SAMPLE_FRAMES`` consecutive frames from the middle of every session, downsampled as
ingest does, corrects its rigid motion (:func:`stabilised_sample`, vessel reference) and
pools the candidates of all sessions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from califlow.metrics import MAD_TO_SIGMA
from califlow.sizes import DIAMETER_PER_GSIG

__all__ = ["NeuronSize", "estimate_neuron_size", "measure_sessions", "stabilised_sample", "gsig_for_diameter",
           "size_warning", "SAMPLE_FRAMES"]

log = logging.getLogger("califlow.neuron_size")

#: Frames sampled per session (consecutive, from the middle of the session).
SAMPLE_FRAMES = 600
#: Candidates need a rise of this many robust standard deviations of the rise image above its median.
MIN_RISE = 4.0
#: Candidates measured at most.
MAX_CANDIDATES = 120
#: Fewest accepted candidates for an estimate.
MIN_ACCEPTED = 5
#: Largest major/minor axis ratio of a neuron's half-maximum region.
MAX_ELONGATION = 2.5
#: Time (s) over which the candidates' transients rise.
RISE_S = 0.25


@dataclass
class NeuronSize:
    """A neuron size estimate.

    Attributes
    ----------
    diameter : float
        Median half-maximum equivalent diameter (px of the movie), NaN when too few
        candidates were found.
    gsig : float
        ``diameter / DIAMETER_PER_GSIG`` (px), NaN with ``diameter``.
    n_candidates, n_accepted : int
        Candidates measured and candidates kept.
    quartiles : (float, float)
        25th and 75th percentile of the kept diameters (px).
    diameters : list of float
        Every kept diameter (px).
    reason : str
        Why there is no estimate ('' when there is one).
    """

    diameter: float
    gsig: float
    n_candidates: int
    n_accepted: int
    quartiles: tuple[float, float] = (float("nan"), float("nan"))
    diameters: list = field(default_factory=list)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.diameter))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["quartiles"] = [float(v) for v in self.quartiles]
        out["diameters"] = [round(float(v), 3) for v in self.diameters]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> NeuronSize:
        return cls(float(d["diameter"]), float(d["gsig"]), int(d["n_candidates"]), int(d["n_accepted"]),
                   tuple(d.get("quartiles", (np.nan, np.nan))), list(d.get("diameters", [])), d.get("reason", ""))


def gsig_for_diameter(diameter: float) -> float:
    """gSig (px) that ``auto`` uses for neurons of ``diameter`` px at half maximum."""
    return float(diameter) / DIAMETER_PER_GSIG


def _normalised(movie: np.ndarray, fps: float, detrend_s: float) -> np.ndarray:
    from califlow.preprocess.detrend import detrend_block
    from califlow.preprocess.noise import get_sn

    y = detrend_block(np.asarray(movie, np.float32), fps, detrend_s)
    sn = get_sn(y)
    good = np.isfinite(sn) & (sn > 0)
    floor = float(np.median(sn[good])) * 1e-3 if good.any() else 1.0
    y /= np.where(good, np.maximum(sn, floor), np.inf).astype(np.float32)
    return y


def _rise_image(y: np.ndarray, fps: float) -> np.ndarray:
    """Largest rise of every pixel over ``RISE_S`` seconds (3-frame means), smoothed by a 1-px Gaussian.

    Calcium transients rise within a fraction of a second; the background that survives
    the detrending (diffuse sources, neuropil, vessel tone) drifts over seconds, so the
    rise image lights up where neurons are.
    """
    k = max(1, int(round(RISE_S * float(fps))))
    ys = ndimage.uniform_filter1d(y, 3, axis=0)
    rise = (ys[k:] - ys[:-k]).max(axis=0) if ys.shape[0] > k else np.zeros(y.shape[1:], np.float32)
    return ndimage.gaussian_filter(rise, 1.0)


def _candidates(rise: np.ndarray, max_n: int, spacing: float) -> np.ndarray:
    """Brightest local maxima (N, 2) of the rise image, ``MIN_RISE`` robust deviations high, ``spacing`` px apart."""
    from califlow.cnmfe.seeds import local_maxima

    med = float(np.median(rise))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(rise - med)))
    ys, xs = np.nonzero(local_maxima(rise, 1.5) & (rise >= med + MIN_RISE * spread))
    order = np.argsort(-rise[ys, xs], kind="stable")
    chosen: list[tuple[int, int]] = []
    for i in order:  # loop over candidates (at most a few hundred)
        p = (int(ys[i]), int(xs[i]))
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= spacing ** 2 for q in chosen):
            chosen.append(p)
            if len(chosen) >= max_n:
                break
    return np.asarray(chosen, np.int64).reshape(-1, 2)


def _profile(y: np.ndarray, cy: int, cx: int, radius: int) -> tuple[np.ndarray, int, int]:
    """Regression profile of the box around (cy, cx) on the candidate's 3 x 3 trace; its origin."""
    T, h, w = y.shape
    y0, y1 = max(0, cy - radius), min(h, cy + radius + 1)
    x0, x1 = max(0, cx - radius), min(w, cx + radius + 1)
    box = y[:, y0:y1, x0:x1].reshape(T, -1)
    cy0, cy1, cx0, cx1 = max(0, cy - 1), min(h, cy + 2), max(0, cx - 1), min(w, cx + 2)
    c = y[:, cy0:cy1, cx0:cx1].reshape(T, -1).mean(axis=1)
    n_c = (cy1 - cy0) * (cx1 - cx0)
    c = c - c.mean()
    num = (c @ box).reshape(y1 - y0, x1 - x0)
    # a pixel of the trace's own 3 x 3 shares its (unit-variance) noise with it: remove that covariance
    num[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] -= T / n_c
    den = float(c @ c) - T / n_c
    if den <= 0:
        return np.zeros((y1 - y0, x1 - x0), np.float32), y0, x0
    return (num / den).astype(np.float32), y0, x0


def _half_max_region(prof: np.ndarray, py: int, px: int, floor: float) -> tuple[float, float, bool] | None:
    """(equivalent diameter, elongation, touches border) of the half-maximum region holding (py, px).

    The region is where the profile exceeds ``floor`` + half of (its peak near (py, px) - ``floor``).
    """
    near = prof[max(0, py - 1):py + 2, max(0, px - 1):px + 2]
    top = float(near.max()) - floor
    if top <= 0:
        return None
    labels, _ = ndimage.label(prof - floor >= 0.5 * top, structure=np.ones((3, 3), bool))
    lab = labels[py, px]
    if lab == 0:
        return None
    region = labels == lab
    area = int(region.sum())
    yy, xx = np.nonzero(region)
    border = bool(yy.min() == 0 or xx.min() == 0 or yy.max() == prof.shape[0] - 1 or xx.max() == prof.shape[1] - 1)
    if area < 3:
        return 2.0 * np.sqrt(area / np.pi), 1.0, border
    cov = np.cov(np.stack([yy, xx]).astype(np.float64)) + np.eye(2) / 12.0
    ev = np.linalg.eigvalsh(cov)
    return 2.0 * np.sqrt(area / np.pi), float(np.sqrt(ev[1] / max(ev[0], 1e-9))), border


def _measure(prof: np.ndarray, py: int, px: int) -> tuple[float, float, bool] | None:
    """Half-maximum region of a profile, its floor taken in an annulus just outside the neuron.

    A first pass takes the floor as the median of the box; the second takes it as the
    median of the profile between 1 and 1.5 diameters of the first region from the
    candidate, which removes the neuropil pedestal around the neuron.
    """
    first = _half_max_region(prof, py, px, float(np.median(prof)))
    if first is None or first[2]:
        return first
    yy, xx = np.mgrid[:prof.shape[0], :prof.shape[1]]
    r = np.hypot(yy - py, xx - px)
    ring = (r >= first[0]) & (r <= 1.5 * first[0])
    if ring.sum() < 8:
        return first
    return _half_max_region(prof, py, px, float(np.median(prof[ring])))


def estimate_neuron_size(movie: np.ndarray, fps: float, *, detrend_s: float = 1.0, max_diameter: float = 40.0,
                         max_candidates: int = MAX_CANDIDATES) -> NeuronSize:
    """Estimate the half-maximum diameter of the neurons of a motion-corrected movie sample.

    Parameters
    ----------
    movie : ndarray (T, H, W)
        Motion-corrected frames (any units; a few hundred frames with some activity).
    fps : float
        Frame rate (Hz), for the detrending window.
    detrend_s : float
        Detrending window (s), as ``preprocessing.detrend``.
    max_diameter : float
        Largest neuron diameter considered (px); the regression box has half-width
        ``max_diameter``.
    max_candidates : int
        Candidates measured at most (brightest first).

    Returns
    -------
    NeuronSize
        (see :mod:`califlow.neuron_size` for the method).
    """
    movie = np.asarray(movie, np.float32)
    if movie.ndim != 3 or movie.shape[0] < 20:
        return NeuronSize(np.nan, np.nan, 0, 0, reason=f"too few frames ({movie.shape[0] if movie.ndim else 0})")
    y = _normalised(movie, fps, detrend_s)
    cands = _candidates(_rise_image(y, fps), max_candidates, spacing=3.0)
    radius = int(np.ceil(max_diameter))
    kept = []
    for cy, cx in cands:  # loop over candidates
        prof, y0, x0 = _profile(y, int(cy), int(cx), radius)
        prof = ndimage.gaussian_filter(prof, 0.5)
        res = _measure(prof, int(cy) - y0, int(cx) - x0)
        if res is None:
            continue
        d, elong, border = res
        if not border and elong <= MAX_ELONGATION and d >= 3.0:
            kept.append(d)
    n = len(cands)
    if len(kept) < MIN_ACCEPTED:
        return NeuronSize(np.nan, np.nan, n, len(kept),
                          reason=f"{len(kept)} of {n} candidate neurons could be measured (need {MIN_ACCEPTED})")
    kept = np.asarray(kept)
    d = float(np.median(kept))
    return NeuronSize(d, gsig_for_diameter(d), n, int(kept.size),
                      (float(np.percentile(kept, 25)), float(np.percentile(kept, 75))), kept.tolist())


def size_warning(gsig: float, size: NeuronSize) -> str | None:
    """A warning when a manual gSig is outside the floor and ceiling the measured size sets.

    (:func:`califlow.sizes.effective_gsig`: ``FLOOR_FRACTION`` to ``CEILING_FRACTION`` times
    the measured gSig); None when it fits.
    """
    from califlow.sizes import gsig_mismatch

    return gsig_mismatch(gsig, size.diameter) if size.ok else None


def stabilised_sample(frames: np.ndarray, options=None, *, name: str = "sample") -> np.ndarray:
    """Frames (T, H, W) with their rigid motion corrected, cropped to the window valid in all of them.

    Motion is estimated as the motion-correction step does
    (:func:`califlow.motion.rigid.estimate_rigid_motion`, with ``options`` a
    :class:`califlow.motion.options.MotionOptions`; the schema's defaults when not given);
    without it the peak and regression images of a moving neuron are smeared by the motion.
    """
    from dataclasses import replace

    from califlow.motion.options import motion_options
    from califlow.motion.rigid import estimate_rigid_motion
    from califlow.motion.warp import translate_stack, valid_box

    frames = np.asarray(frames, np.float32)
    o = options if options is not None else motion_options()
    motion = estimate_rigid_motion(frames, replace(o, template_frames=min(o.template_frames, frames.shape[0])),
                                   name=name)
    box = valid_box(motion.shifts, frames.shape[1:])
    if box[1] - box[0] < 16 or box[3] - box[2] < 16:
        return frames
    return translate_stack(frames, motion.shifts, box=box, order=1)


def measure_sessions(samples: Sequence[tuple[np.ndarray, float]], *, detrend_s: float = 1.0,
                     max_diameter: float = 40.0) -> tuple[NeuronSize, list[NeuronSize]]:
    """Pooled neuron size of several sessions' motion-corrected samples.

    Parameters
    ----------
    samples : sequence of (frames (T, H, W), fps)
    detrend_s, max_diameter : as :func:`estimate_neuron_size`.

    Returns
    -------
    (pooled, per_session)
        ``pooled`` is the median over the candidates of all sessions.
    """
    per = [estimate_neuron_size(f, fps, detrend_s=detrend_s, max_diameter=max_diameter) for f, fps in samples]
    kept = np.concatenate([np.asarray(p.diameters, np.float64) for p in per]) if per else np.zeros(0)
    n_cand = int(sum(p.n_candidates for p in per))
    if kept.size < MIN_ACCEPTED:
        reasons = "; ".join(f"session {i}: {p.reason}" for i, p in enumerate(per) if p.reason)
        return NeuronSize(np.nan, np.nan, n_cand, int(kept.size), reason=reasons or "no session"), per
    d = float(np.median(kept))
    pooled = NeuronSize(d, gsig_for_diameter(d), n_cand, int(kept.size),
                        (float(np.percentile(kept, 25)), float(np.percentile(kept, 75))), kept.tolist())
    return pooled, per
