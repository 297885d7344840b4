"""Blood-vessel stability score (CaliAli's test of whether vessels aligned the sessions).

The aligned vessel images are compared pairwise (Pearson r inside the common field of
view). The same correlations are then recomputed after warping every session with its own
random smooth deformation (the gradient of Gaussian-smoothed white noise, width
``sigma`` px, each component scaled to at most ``magnitude`` px), ``n_draws`` times. The
score is the smallest, over session pairs, z-score of the real correlation against the
perturbed ones: how much better the alignment is than a random ±6 px misalignment. Sharp,
well-aligned vessels give high scores; vessel-poor fields (or vessels that disagree) give
scores below CaliAli's threshold 2.7.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from califlow.align.maps import identity_map

__all__ = ["random_smooth_field", "bv_stability_score"]


def random_smooth_field(shape: tuple[int, int], sigma: float, magnitude: float,
                        rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Random smooth displacement(s): gradient of smoothed noise, |components| <= magnitude.

    The noise is smoothed and differentiated on a grid ``sigma/2`` times coarser (periodic
    boundary) and the gradient upsampled bilinearly; for such smooth fields this is
    equivalent and much cheaper.

    Returns (2, H, W) float32, or (n, 2, H, W) when ``n`` is given (n independent fields).
    """
    h, w = shape
    k = 1 if n is None else int(n)
    f = max(1, int(sigma // 2))
    hc, wc = -(-h // f) + 2, -(-w // f) + 2
    z = ndimage.gaussian_filter(rng.standard_normal((k, hc, wc)).astype(np.float32), (0, sigma / f, sigma / f),
                                mode="wrap")
    gy, gx = np.gradient(z, axis=(1, 2))
    coarse = np.concatenate([gy, gx]).transpose(1, 2, 0)                 # (hc, wc, 2k)
    up = np.empty((hc * f, wc * f, 2 * k), np.float32)
    for c0 in range(0, 2 * k, 256):                                      # OpenCV: <= 512 channels
        up[:, :, c0:c0 + 256] = cv2.resize(np.ascontiguousarray(coarse[:, :, c0:c0 + 256]), (wc * f, hc * f),
                                           interpolation=cv2.INTER_LINEAR).reshape(hc * f, wc * f, -1)
    out = up[:h, :w].transpose(2, 0, 1).reshape(2, k, h, w).transpose(1, 0, 2, 3)
    peak = np.abs(out).reshape(k, 2, -1).max(axis=2)
    out = out * (np.float32(magnitude) / np.maximum(peak, 1e-12)).astype(np.float32)[:, :, None, None]
    return np.ascontiguousarray(out[0] if n is None else out, dtype=np.float32)


def _pair_corr(stack: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson correlations (S, S) of the images of ``stack`` inside ``mask``."""
    v = stack[:, mask]
    v = v - v.mean(axis=1, keepdims=True)
    v /= np.sqrt(np.einsum("ij,ij->i", v, v))[:, None] + 1e-12
    return np.einsum("in,jn->ij", v, v).astype(np.float64)  # einsum: no BLAS threads


def bv_stability_score(images: np.ndarray, mask: np.ndarray, *, n_draws: int = 100,
                       magnitude: float = 6.0, sigma: float = 15.0, seed: int = 123) -> tuple[float, dict]:
    """Score the alignment of vessel images against random smooth misalignments.

    Parameters
    ----------
    images : ndarray (S, H, W)
        Aligned vessel images (any scale; NaN outside a session).
    mask : bool (H, W)
        Common field of view; pixels within ``magnitude`` px of its border are not scored.
    n_draws, magnitude, sigma, seed
        Number of perturbations, their largest component (px), their smoothness (px) and
        the seed of their generator (CaliAli: 100, 6, 15, rng(123)).

    Returns
    -------
    score : float
        min over pairs of (r_real - mean r_perturbed) / std r_perturbed; NaN for < 2 sessions.
    details : dict
        ``pair_scores`` (S, S), ``real_corr`` (S, S), ``perturbed_mean`` (S, S),
        ``worst_pair`` (i, j).
    """
    stack = np.nan_to_num(np.asarray(images, np.float32), nan=0.0)
    n, h, w = stack.shape
    if n < 2:
        return float("nan"), {}
    core = ndimage.binary_erosion(mask, iterations=int(np.ceil(magnitude)) + 1)
    if core.sum() < 100:
        core = mask
    # correlations on every other pixel of every other row: the perturbations are smooth
    # over ~sigma px, so this estimates the same r at a quarter of the cost
    sub = np.zeros_like(core)
    sub[::2, ::2] = True
    core = core & sub
    real = _pair_corr(stack, core)
    rng = np.random.default_rng(seed)
    ident = identity_map((h, w))
    draws = np.empty((n_draws, n, n))
    for k in range(n_draws):
        warped = np.empty_like(stack)
        fields = random_smooth_field((h, w), sigma, magnitude, rng, n=n)
        for s in range(n):
            d = fields[s]
            warped[s] = cv2.remap(stack[s], ident[1] + d[1], ident[0] + d[0], cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
        draws[k] = _pair_corr(warped, core)
    mu = draws.mean(axis=0)
    sd = draws.std(axis=0) + 1e-12
    z = (real - mu) / sd
    iu = np.triu_indices(n, 1)
    k = int(np.argmin(z[iu]))
    score = float(z[iu][k])
    return score, {"pair_scores": z, "real_corr": real, "perturbed_mean": mu,
                   "worst_pair": (int(iu[0][k]), int(iu[1][k]))}
