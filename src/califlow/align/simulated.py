"""Session projections rendered from simulator ground truth (for tests and benchmarks).

Running the whole per-session chain to get ``projections.zarr`` is slow; alignment only
needs the four images. These are rendered from :class:`califlow.simulate.GroundTruth`
with the properties the real ones have:

- ``bv``: a multi-scale dark-ridge (Sato) vesselness of the session's baseline image (which
  holds vessel shading, tissue texture and vignetting), scaled to [0, 1]: like the
  pipeline's BV image, vessel-poor fields give weak vessels among texture ridges;
- ``cn``: normalised, squared correlation-like neuron image: the active neurons' session
  footprints (each scaled to a random brightness) plus noise;
- ``pnr``: peak-to-noise image: a floor of ~3 plus the active footprints times their SNR;
- ``mean``: the baseline image of the session plus a little noise (a mean over thousands
  of frames is nearly noise-free).

Sessions can be cropped by a few random pixels on each side (as per-session motion crops do),
so that frames differ in size; the crop origins are returned to shift ground-truth positions.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.filters import sato

__all__ = ["projections_from_ground_truth", "footprint_centroids"]


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigma)


def projections_from_ground_truth(gt, *, seed: int = 0, noise: float = 0.1, mean_noise: float = 0.01,
                                  sensor_pattern: float = 0.0, crop_jitter: int = 0,
                                  sessions: list[int] | None = None, bv_sigmas=(1.5, 2.0, 2.5, 3.0)
                                  ) -> tuple[list[dict], np.ndarray]:
    """Render per-session projections from ground truth.

    Parameters
    ----------
    gt : califlow.simulate.GroundTruth
    seed : int
        Seed of the noise and crops.
    noise : float
        Noise of ``cn`` and ``pnr`` relative to their signal range (0.1 = realistic, 0.3 = poor).
    mean_noise : float
        Noise of the mean image (from which ``bv`` is computed) relative to the spatial std
        of the baseline (0.01: a long session; 0.5: the vessels drown).
    sensor_pattern : float
        Amplitude (relative to the baseline's spatial std) of a sensor-fixed pattern (lens
        dust, fixed-pattern noise) added to every session's mean image at the same sensor
        position. Vessel-poor fields whose BV image is dominated by it cannot be aligned on
        vessels (the BV score must catch it).
    crop_jitter : int
        Each session loses 0..crop_jitter px on each side (different frame sizes).
    sessions : list of int, optional
        Subset of sessions (default all).
    bv_sigmas : sequence of float
        Scales (px) of the vesselness.

    Returns
    -------
    projections : list of dict ``{"mean", "bv", "cn", "pnr"}`` float32 (h_s, w_s)
    origins : ndarray (S, 2)
        Crop origin (y, x) of each session in the simulator's session frame: a ground-truth
        position q becomes ``q - origins[s]``.
    """
    rng = np.random.default_rng(seed)
    idx = list(range(gt.n_sessions)) if sessions is None else list(sessions)
    h, w = gt.shape
    pattern = _smooth(np.random.default_rng([seed, 1]).standard_normal((h, w)), 2.0)
    pattern /= max(float(pattern.std()), 1e-12)
    out, origins = [], []
    for s in idx:
        proj, origin = _session_projections(gt, s, rng, pattern, noise=noise, mean_noise=mean_noise,
                                            sensor_pattern=sensor_pattern, crop_jitter=crop_jitter,
                                            bv_sigmas=bv_sigmas)
        out.append(proj)
        origins.append(origin)
    return out, np.array(origins, dtype=np.float64)


def _session_projections(gt, s: int, rng: np.random.Generator, pattern: np.ndarray, *, noise: float,
                         mean_noise: float, sensor_pattern: float, crop_jitter: int, bv_sigmas
                         ) -> tuple[dict, tuple[int, int]]:
    """Session ``s``'s projections (see :func:`projections_from_ground_truth`) and its crop origin (y, x) px.

    Draws from ``rng``, in order: neuron brightnesses, mean-image noise, ``cn`` noise, ``pnr``
    noise and the crop. ``pattern`` (H, W) is the unit-std sensor pattern.
    """
    h, w = gt.shape
    fp = gt.session_footprints(s)                       # (K, H, W)
    act = np.asarray(gt.active)[:, s]
    peak = fp.reshape(len(fp), -1).max(axis=1)
    bright = rng.uniform(0.4, 1.0, len(fp)) * act / np.maximum(peak, 1e-9)
    neurons = np.tensordot(bright.astype(np.float32), fp, axes=1)
    neurons /= max(float(neurons.max()), 1e-9)
    base = np.asarray(gt.baseline_session[s], np.float32)
    mean = base + (rng.standard_normal((h, w)).astype(np.float32) * mean_noise
                   + sensor_pattern * pattern) * float(base.std())
    ridges = sato(mean, sigmas=list(bv_sigmas), black_ridges=True).astype(np.float32)
    bv = np.clip(ridges / max(float(np.percentile(ridges, 99.9)), 1e-9), 0, 1)
    cn = np.clip(neurons ** 2 + _smooth(rng.standard_normal((h, w)), 0.7) * noise, 0, None)
    pnr = 3.0 + 20.0 * neurons + 1.5 * rng.standard_normal((h, w)) * noise * 10
    top, left, bottom, right = (int(v) for v in rng.integers(0, crop_jitter + 1, 4))
    sl = (slice(top, h - bottom), slice(left, w - right))
    return ({"mean": mean[sl].astype(np.float32), "bv": bv[sl].astype(np.float32),
             "cn": cn[sl].astype(np.float32), "pnr": pnr[sl].astype(np.float32)}, (top, left))


def footprint_centroids(gt, origins):
    """(S, K, 2) centroids of the rendered session footprints (NaN when cut by the border).

    ``origins`` (S, 2) is subtracted: each session's frame origin in its projection frame.
    """
    h, w = gt.shape
    yy, xx = np.mgrid[:h, :w]
    out = []
    for s in range(gt.n_sessions):
        fp = gt.session_footprints(s).reshape(gt.n_neurons, -1)
        mass = fp.sum(axis=1)
        c = np.stack([fp @ yy.ravel(), fp @ xx.ravel()], axis=1) / np.maximum(mass, 1e-12)[:, None]
        img = fp.reshape(-1, h, w)
        border = np.concatenate([img[:, [0, -1], :].reshape(len(img), -1), img[:, :, [0, -1]].reshape(len(img), -1)], 1)
        c[(border.max(axis=1) > 0.05 * fp.max(axis=1)) | (mass <= 0)] = np.nan
        out.append(c - origins[s])
    return np.array(out)
