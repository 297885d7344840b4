"""Multi-channel, multi-resolution diffeomorphic demons between two images on one grid.

The field ``u`` (2, H, W), in pixels (y, x), is found such that
``moving(p + u(p)) ≈ fixed(p)``. Each pyramid level runs on its own channels (vessels on
the coarse levels, neurons on the fine ones) at its own scale, starting from the field of
the previous level. An iteration is the symmetric (ESM) demons step summed over channels,

    δ = -Σ_c r_c g_c / (Σ_c |g_c|² + α² Σ_c r_c²),  r_c = M_c∘(id+u) - F_c,
    g_c = (∇F_c + ∇(M_c∘(id+u))) / 2,

smoothed with ``sigma_fluid`` (masked normalised convolution), composed into the field
(``u <- δ + u∘(id+δ)``, diffeomorphic update) and the field smoothed with
``sigma_diffusion``. Everything is OpenCV on float32 images (no per-pixel Python).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from califlow.align.maps import compose_field, identity_map

__all__ = ["Level", "demons_register", "pyramid_for"]


@dataclass(frozen=True)
class Level:
    """One pyramid level.

    Attributes
    ----------
    scale : float
        Image scale of the level (1 = full resolution, 0.25 = a quarter).
    channels : tuple of str
        Registration channels used at this level (``bv``, ``neuron``, ``fused``).
    n_iter : int
        Maximum number of demons iterations.
    sigma_fluid : float
        Smoothing of each update, in px of the level's grid.
    sigma_diffusion : float
        Smoothing of the accumulated field, in px of the level's grid.
    """

    scale: float
    channels: tuple[str, ...]
    n_iter: int
    sigma_fluid: float
    sigma_diffusion: float


def pyramid_for(projections: str, *, smoothness: float = 4.0, neurons_only: bool = False) -> list[Level]:
    """The pyramid, coarse to fine, for a ``projections`` mode.

    'BV+neuron': vessels and neurons on the coarse levels, with the fused image in the middle,
    neurons and fused at full resolution; each channel is weighted by its reliability (see
    :func:`_channel_weights`), so sharp vessels drive the coarse levels and noisy ones do not.
    'BV': vessels everywhere. 'neuron' (or ``neurons_only``): neurons
    everywhere. ``smoothness`` is the field regularisation (``sigma_diffusion``) in px of
    each level's grid (CaliAli uses 3-4).
    """
    if neurons_only or projections == "neuron":
        chans = [("neuron",), ("neuron",), ("neuron",), ("neuron",)]
    elif projections == "BV":
        chans = [("bv",), ("bv",), ("bv",), ("bv",)]
    elif projections == "BV+neuron":
        chans = [("bv", "neuron"), ("bv", "neuron"), ("bv", "neuron"), ("neuron",)]
    else:
        raise ValueError(f"projections must be 'BV+neuron', 'BV' or 'neuron', not {projections!r}")
    s = float(smoothness)
    scales = [0.125, 0.25, 0.5, 1.0]
    iters = [60, 60, 50, 30]
    fluid = [1.0, 1.0, 1.5, 2.0]
    return [Level(sc, ch, it, sigma_fluid=fl, sigma_diffusion=s)
            for sc, ch, it, fl in zip(scales, chans, iters, fluid)]


def _resize(img: np.ndarray, shape: tuple[int, int], interp: int = cv2.INTER_AREA) -> np.ndarray:
    if img.shape == tuple(shape):
        return img
    return cv2.resize(img, (shape[1], shape[0]), interpolation=interp)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


_KX = np.array([[-0.5, 0.0, 0.5]], dtype=np.float32)
_KY = _KX.T.copy()


def _grad(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gy = cv2.filter2D(img, -1, _KY, borderType=cv2.BORDER_REPLICATE)
    gx = cv2.filter2D(img, -1, _KX, borderType=cv2.BORDER_REPLICATE)
    return gy, gx


def _warp(img: np.ndarray, py: np.ndarray, px: np.ndarray) -> np.ndarray:
    return cv2.remap(img, np.asarray(px, np.float32), np.asarray(py, np.float32), interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def _channel_weights(fixed, moving, fmask, mmask, u, ident) -> list[float]:
    """Reliability weight of each channel: SNR r/(1-r) from its correlation with the template.

    A channel that agrees between the session and the template (sharp vessels, clear
    neurons) drives the registration; one that is mostly noise (the BV image of a vessel-poor
    field) is down-weighted instead of pulling the field at random. Weights are scaled to a
    maximum of 1.
    """
    py = ident[0] + u[0]
    px = ident[1] + u[1]
    m = (_warp(mmask.astype(np.float32), py, px) > 0.99) & fmask
    out = []
    for f, mv in zip(fixed, moving):
        a = f[m]
        b = _warp(mv, py, px)[m]
        a = a - a.mean()
        b = b - b.mean()
        # explicit sums, not BLAS: tiny vectors, and BLAS threads stall on a busy machine
        r = float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12)) if a.size > 10 else 0.0
        r = min(max(r, 0.02), 0.95)
        out.append(r / (1 - r))
    top = max(out)
    return [w / top for w in out]


def _run_level(fixed: Sequence[np.ndarray], moving: Sequence[np.ndarray], fmask: np.ndarray,
               mmask: np.ndarray, u: np.ndarray, level: Level, alpha: float, tol: float) -> np.ndarray:
    h, w = fmask.shape
    ident = identity_map((h, w))
    sig_f = level.sigma_fluid
    sig_d = level.sigma_diffusion
    fgrads = [_grad(f) for f in fixed]
    weights = _channel_weights(fixed, moving, fmask, mmask, u, ident) if len(fixed) > 1 else [1.0]
    energies: list[float] = []
    best_u, best_e = u, np.inf
    for _ in range(level.n_iter):
        py = ident[0] + u[0]
        px = ident[1] + u[1]
        wmask = (_warp(mmask, py, px) > 0.99) & fmask
        m = wmask.astype(np.float32)
        num_y = np.zeros((h, w), np.float32)
        num_x = np.zeros((h, w), np.float32)
        den = np.zeros((h, w), np.float32)
        rr = np.zeros((h, w), np.float32)
        for f, mv, (fgy, fgx), wc in zip(fixed, moving, fgrads, weights):
            mw = _warp(mv, py, px)
            r = (mw - f) * m
            gy, gx = _grad(mw)
            gy = 0.5 * (gy + fgy)
            gx = 0.5 * (gx + fgx)
            num_y -= wc * r * gy
            num_x -= wc * r * gx
            den += wc * (gy * gy + gx * gx)
            rr += wc * r * r
        n_valid = max(float(m.sum()), 1.0)
        energy = float(rr.sum()) / n_valid
        if energy < best_e:
            best_e, best_u = energy, u
        energies.append(energy)
        if len(energies) > 5 and abs(energies[-6] - energy) < tol * energies[0]:
            break
        den = den + (alpha * alpha) * rr
        safe = den > 1e-9
        dy = np.where(safe, num_y / np.where(safe, den, 1.0), 0.0).astype(np.float32)
        dx = np.where(safe, num_x / np.where(safe, den, 1.0), 0.0).astype(np.float32)
        if sig_f > 0:
            wsum = np.maximum(_blur(m, sig_f), 1e-3)
            dy = _blur(dy * m, sig_f) / wsum * (wsum > 0.05)
            dx = _blur(dx * m, sig_f) / wsum * (wsum > 0.05)
        u = compose_field(u, np.stack([dy, dx]))
        u = np.stack([_blur(u[0], sig_d), _blur(u[1], sig_d)])
    else:
        # score the final field too
        py = ident[0] + u[0]
        px = ident[1] + u[1]
        wmask = (_warp(mmask, py, px) > 0.99) & fmask
        m = wmask.astype(np.float32)
        e = sum(wc * float((((_warp(mv, py, px) - f) * m) ** 2).sum()) for f, mv, wc in zip(fixed, moving, weights))
        if e / max(float(m.sum()), 1.0) < best_e:
            best_u = u
    return best_u


def demons_register(fixed: Mapping[str, np.ndarray], moving: Mapping[str, np.ndarray],
                    fixed_mask: np.ndarray, moving_mask: np.ndarray, levels: Sequence[Level],
                    field: np.ndarray | None = None, *, alpha: float = 1.0, tol: float = 1e-3) -> np.ndarray:
    """Register ``moving`` onto ``fixed`` (same grid); return the field u (2, H, W).

    Parameters
    ----------
    fixed, moving : mapping channel -> float32 (H, W)
        Registration channels (see :mod:`califlow.align.features`), normalised alike.
    fixed_mask, moving_mask : bool (H, W)
        Valid pixels of each image.
    levels : sequence of Level
        Pyramid, coarse to fine.
    field : ndarray (2, H, W), optional
        Initial field (px). Default zero.
    alpha : float
        Demons step normaliser: the step is at most 1 / (2 alpha) px per iteration at the
        level's scale.
    tol : float
        Stop a level when the energy changed less than ``tol`` times its first value over
        five iterations.

    Returns
    -------
    ndarray float32 (2, H, W): ``moving(p + u(p)) ≈ fixed(p)``.
    """
    H, W = fixed_mask.shape
    u_full = np.zeros((2, H, W), np.float32) if field is None else field.astype(np.float32).copy()
    for level in levels:
        sh = (max(8, int(round(H * level.scale))), max(8, int(round(W * level.scale))))
        sy, sx = sh[0] / H, sh[1] / W
        f_ch = [_resize(np.ascontiguousarray(fixed[c], np.float32), sh) for c in level.channels]
        m_ch = [_resize(np.ascontiguousarray(moving[c], np.float32), sh) for c in level.channels]
        fm = _resize(fixed_mask.astype(np.float32), sh) > 0.99
        mm = _resize(moving_mask.astype(np.float32), sh)
        u = np.stack([_resize(u_full[0], sh, cv2.INTER_LINEAR) * sy, _resize(u_full[1], sh, cv2.INTER_LINEAR) * sx])
        u0 = u.copy()
        u = _run_level(f_ch, m_ch, fm, mm, u, level, alpha, tol)
        du = u - u0  # upsample only the level's increment (keeps full-resolution detail)
        u_full = u_full + np.stack([_resize(du[0], (H, W), cv2.INTER_LINEAR) / sy,
                                    _resize(du[1], (H, W), cv2.INTER_LINEAR) / sx])
    return u_full.astype(np.float32)
