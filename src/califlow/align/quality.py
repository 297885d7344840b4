"""Alignment quality: image metrics per stage and residual misalignment against ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from califlow.align.maps import map_points

__all__ = ["alignment_metrics", "residual_misalignment"]


def alignment_metrics(images: np.ndarray, mask: np.ndarray) -> dict:
    """Per-session correlation with the mean image, and crispness of the mean image.

    Parameters
    ----------
    images : ndarray (S, H, W)
        Sessions' images in the common frame (each scaled to [0, 1]; NaN outside).
    mask : bool (H, W)
        Pixels valid in every session (the comparison region).

    Returns
    -------
    dict
        ``corr_with_mean`` (list of S Pearson r), ``mean_corr``, ``min_corr``, and
        ``crispness`` = RMS gradient magnitude (per px) of the mean image inside ``mask``
        (CaliAli/CaImAn's ‖∇ mean‖ normalised by the area so crops compare; higher = sharper).
    """
    stack = np.asarray(images, np.float64)
    if not mask.any():
        return {"corr_with_mean": [float("nan")] * len(stack), "mean_corr": float("nan"),
                "min_corr": float("nan"), "crispness": float("nan"), "n_pixels": 0}
    finite = np.isfinite(stack)
    mean = np.where(finite, stack, 0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1)
    v = stack[:, mask]
    m = mean[mask]
    v = v - v.mean(axis=1, keepdims=True)
    m = m - m.mean()
    r = np.einsum("ij,j->i", v, m) / (np.sqrt(np.einsum("ij,ij->i", v, v) * (m @ m)) + 1e-12)
    gy, gx = np.gradient(mean)
    inner = mask.copy()
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    crisp = float(np.sqrt(np.mean((gy ** 2 + gx ** 2)[inner]))) if inner.any() else float("nan")
    return {"corr_with_mean": [float(x) for x in r], "mean_corr": float(np.mean(r)),
            "min_corr": float(np.min(r)), "crispness": crisp, "n_pixels": int(mask.sum())}


def residual_misalignment(true_positions: np.ndarray, maps: Sequence[np.ndarray]) -> dict:
    """Spread of ground-truth points across sessions after alignment.

    Each point k has a known position ``true_positions[s, k]`` in every session frame s
    (e.g. ``GroundTruth.centers_session()``). It is mapped into the aligned frame through
    each session's estimated map (inverse); perfect alignment puts all S images of the point
    on one spot. The residual of (s, k) is its distance to the per-point mean over sessions,
    which removes the unknown choice of common frame.

    Parameters
    ----------
    true_positions : ndarray (S, K, 2)
        (y, x) positions in each session's frame.
    maps : sequence of S alignment maps (2, H, W)

    Returns
    -------
    dict
        ``median``, ``p95``, ``max`` (px), ``n_points`` (points inside every session's
        aligned field of view), ``distances`` (S, n_points) array.
    """
    pts = np.asarray(true_positions, np.float64)
    aligned = np.stack([map_points(pts[s], maps[s], to="aligned") for s in range(len(maps))])
    ok = np.isfinite(aligned).all(axis=(0, 2))
    a = aligned[:, ok]
    if a.shape[1] == 0:
        return {"median": float("nan"), "p95": float("nan"), "max": float("nan"), "n_points": 0,
                "distances": np.zeros((len(maps), 0))}
    d = np.hypot(*(a - a.mean(axis=0)).transpose(2, 0, 1))
    return {"median": float(np.median(d)), "p95": float(np.percentile(d, 95)), "max": float(d.max()),
            "n_points": int(ok.sum()), "distances": d}
