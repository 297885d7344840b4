"""MIN1PIPE neuron enhancement (background removal) of every frame of a stack.

The steps, with ``szad = 2 * gSig`` px (Lu et al. 2018, as CaliAli applies them):

1. scale the movie to [0, 1] with one ``(low, high)`` range for the whole movie (MATLAB
   ``mat2gray`` over the video; the caller passes the range so that chunks agree);
2. fill dark specks: ``Y = max(Y, G * Y)`` with a Gaussian ``G`` of sigma ``szad``
   (kernel ``2 ceil(2 szad) + 1``, replicate borders, as ``imgaussfilt``);
3. anisotropic (Perona-Malik) diffusion, 8 neighbours, 4 iterations, ``dt = 1/7``,
   ``kappa = 0.5``, conductance ``exp(-(grad / kappa)**2)``, diagonal terms weighted 1/2,
   zero-flux borders;
4. subtract the grey-scale opening by a flat disk of radius ``szad`` px (an exact disk of
   real radius, so it grows continuously with gSig; MATLAB rounds the radius and its
   ``strel('disk', r, 8)`` is an octagonal approximation).

The result is >= 0 and has the blob-like neurons on a flat zero background.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from califlow.preprocess.filters import filter_stack, gaussian_kernel_size, opening_stack
from califlow.sizes import enhance_disk_radius, speck_sigma

__all__ = ["fill_dark_specks", "anisotropic_diffusion", "remove_background", "neuron_enhance"]


def fill_dark_specks(stack: np.ndarray, sigma: float) -> np.ndarray:
    """``max(Y, G_sigma * Y)`` per frame (MIN1PIPE ``dirt_clean``), float32."""
    k = gaussian_kernel_size(sigma, truncate=2.0)
    blurred = filter_stack(
        stack,
        lambda im: cv2.GaussianBlur(im, (k, k), float(sigma), sigmaY=float(sigma),
                                    borderType=cv2.BORDER_REPLICATE),
        pad=k // 2,
    )
    return np.maximum(np.asarray(stack, dtype=np.float32), blurred)


@numba.njit(cache=True, inline="always", fastmath=True)
def _neg_exp(x):
    # exp(-x) for x >= 0 without branches (so the row loops vectorise): x is clamped at 16
    # (exp(-16) ~ 1e-7) and exp(-x) = exp(-x / 32) ** 32 with a degree-6 Taylor polynomial;
    # absolute error < 2e-6, relative error < 1e-5 for x < 10.
    x = min(x, np.float32(16.0)) * np.float32(1.0 / 32.0)
    p = np.float32(1.0) - x * (np.float32(1.0) - x * (np.float32(0.5) - x * (
        np.float32(1.0 / 6.0) - x * (np.float32(1.0 / 24.0) - x * (np.float32(1.0 / 120.0)
                                                                    - x * np.float32(1.0 / 720.0))))))
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p * p


@numba.njit(cache=True, parallel=True, nogil=True, fastmath=True)
def _perona_malik(stack, n_iter, dt, kappa, out):
    # The flux of each of the 4 edge directions (E, S, SE, SW) is evaluated once per pixel and
    # added to one end and subtracted from the other, row by row in branch-free loops;
    # replicated borders give zero flux.
    n, h, w = stack.shape
    ik = np.float32(1.0 / (kappa * kappa))
    half = np.float32(0.5)
    for t in numba.prange(n):
        cur = np.empty((h + 2, w + 2), dtype=np.float32)
        cur[1:-1, 1:-1] = stack[t]
        acc = np.empty((h + 2, w + 2), dtype=np.float32)
        flux = np.empty(w + 2, dtype=np.float32)
        for _ in range(n_iter):
            cur[0, 1:-1] = cur[1, 1:-1]
            cur[-1, 1:-1] = cur[-2, 1:-1]
            cur[:, 0] = cur[:, 1]
            cur[:, -1] = cur[:, -2]
            acc[:] = 0
            for i in range(0, h + 1):
                r0 = cur[i]
                r1 = cur[i + 1]
                a0 = acc[i]
                a1 = acc[i + 1]
                for j in range(0, w + 1):      # east
                    d = r0[j + 1] - r0[j]
                    flux[j] = _neg_exp(d * d * ik) * d
                for j in range(0, w + 1):
                    a0[j] += flux[j]
                for j in range(1, w + 2):
                    a0[j] -= flux[j - 1]
                for j in range(0, w + 2):      # south
                    d = r1[j] - r0[j]
                    f = _neg_exp(d * d * ik) * d
                    a0[j] += f
                    a1[j] -= f
                for j in range(0, w + 1):      # south-east
                    d = r1[j + 1] - r0[j]
                    flux[j] = half * _neg_exp(d * d * ik) * d
                for j in range(0, w + 1):
                    a0[j] += flux[j]
                for j in range(0, w + 1):
                    a1[j + 1] -= flux[j]
                for j in range(1, w + 2):      # south-west
                    d = r1[j - 1] - r0[j]
                    flux[j] = half * _neg_exp(d * d * ik) * d
                for j in range(1, w + 2):
                    a0[j] += flux[j]
                for j in range(1, w + 2):
                    a1[j - 1] -= flux[j]
            for i in range(1, h + 1):
                for j in range(1, w + 1):
                    cur[i, j] += dt * acc[i, j]
        out[t] = cur[1:-1, 1:-1]
    return out


def anisotropic_diffusion(stack: np.ndarray, n_iter: int = 4, dt: float = 1.0 / 7.0,
                          kappa: float = 0.5) -> np.ndarray:
    """8-neighbour Perona-Malik diffusion of each frame (exponential conductance), float32.

    Parameters
    ----------
    stack : ndarray, shape (n, h, w) or (h, w)
        Images scaled to about [0, 1] (``kappa`` is in those units).
    """
    arr = np.ascontiguousarray(stack, dtype=np.float32)
    single = arr.ndim == 2
    s3 = arr[None] if single else arr
    out = np.empty_like(s3)
    if s3.shape[0]:
        _perona_malik(s3, int(n_iter), np.float32(dt), np.float32(kappa), out)
    return out[0] if single else out


def remove_background(stack: np.ndarray, radius: float) -> np.ndarray:
    """Top-hat: each frame minus its opening by a disk of ``radius`` px (>= 0), float32."""
    return opening_stack(stack, radius, top_hat=True)


def neuron_enhance(stack: np.ndarray, gsig: float, value_range: tuple[float, float] | None = None
                   ) -> np.ndarray:
    """MIN1PIPE enhancement of a stack of frames (see the module docstring).

    Parameters
    ----------
    stack : ndarray, shape (n, h, w) or (h, w)
        Frames (float32).
    gsig : float
        Neuron filter size ``gSig`` in px; ``szad = 2 gSig``.
    value_range : (low, high), optional
        The movie's intensity range used for the [0, 1] scaling; default the stack's own.

    Returns
    -------
    ndarray, float32, same shape, >= 0, in units of ``high - low``.
    """
    arr = np.asarray(stack, dtype=np.float32)
    lo, hi = value_range if value_range is not None else (float(arr.min()), float(arr.max()))
    span = float(hi) - float(lo)
    scaled = (arr - np.float32(lo)) * np.float32(1.0 / span if span > 0 else 1.0)
    out = fill_dark_specks(scaled, speck_sigma(gsig))
    out = anisotropic_diffusion(out)
    return remove_background(out, max(1.0, enhance_disk_radius(gsig)))
