"""Per-pixel noise level (CaliAli/CNMF-E ``GetSn``) by Welch's power spectral density.

For each pixel's time series the one-sided PSD is estimated with MATLAB ``pwelch``'s
defaults (Hamming window, 8 segments of ``floor(2 T / 9)`` frames with 50 % overlap,
fs = 1, no detrending; the DFT length is the next power of 2 of the segment: pwelch's
padding to 256 only interpolates the spectrum and leaves the expected log-PSD, hence the
estimate, unchanged), and the noise standard
deviation is read off the band ``noise_range`` (cycles/frame, default [0.25, 0.5]), where
calcium signals have little power:

- ``'logmexp'``: ``sqrt(exp(mean(log(psd / 2))))`` (the CaliAli default),
- ``'mean'``: ``sqrt(mean(psd / 2))``, ``'median'``: ``sqrt(median(psd / 2))``.

White noise of variance s² has a one-sided PSD of 2 s², hence the ``/ 2``. The PSD is only
evaluated in the band, as the DFT rows of those frequencies applied to each segment (a
numba kernel vectorised over pixels; it uses no BLAS, whose spinning threads would compete
with the other kernels of the per-session stage). For long movies (CaliAli's ``GetSn_fast``) the PSDs of several
sampled windows are averaged (:class:`NoiseAccumulator`) and the noise map is smoothed
with a 5x5 median filter (:func:`smooth_noise_map`).
"""

from __future__ import annotations

import math

import cv2
import numba
import numpy as np

from califlow.params import default_config

#: The spike_extraction group's defaults (the schema is their only source).
_SE = default_config()["spike_extraction"]

__all__ = ["welch_band_psd", "get_sn", "NoiseAccumulator", "smooth_noise_map"]

def _welch_plan(n_frames: int, noise_range) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    if n_frames < 4:
        raise ValueError(f"at least 4 frames are needed to estimate noise, got {n_frames}")
    seg = max(2, int(math.floor(n_frames / 4.5)))
    hop = seg - seg // 2
    nfft = 1 << int(math.ceil(math.log2(seg)))
    fmin, fmax = (float(v) for v in noise_range)
    k = np.arange(nfft // 2 + 1)
    f = k / nfft
    band = k[(f >= fmin) & (f <= fmax)]
    if band.size == 0:
        raise ValueError(f"noise_range {list(noise_range)} holds no frequency of a {nfft}-point DFT")
    win = np.hamming(seg)
    m = np.arange(seg)
    phase = 2 * np.pi * np.outer(band, m) / nfft
    cos = (np.cos(phase) * win).astype(np.float32)
    sin = (np.sin(phase) * win).astype(np.float32)
    # one-sided density: |X_k|² / (fs * sum(win²)), doubled except at DC and Nyquist
    scale = np.where((band == 0) | (2 * band == nfft), 1.0, 2.0) / float(np.sum(win ** 2))
    return seg, hop, cos, sin, np.broadcast_to(scale, band.shape).astype(np.float64)


@numba.njit(cache=True, parallel=True, nogil=True)
def _band_power(x, cos, sin, hop, n_seg, out):
    # out[f, p] = sum over segments of |sum_m (cos + i sin)[f, m] x[k hop + m, p]|²: the DFT at
    # the band's frequencies only, vectorised over a block of pixels (no BLAS threads here)
    T, npix = x.shape
    n_freq, seg = cos.shape
    block = 256
    nblocks = (npix + block - 1) // block
    for b in numba.prange(nblocks):
        p0 = b * block
        width = min(npix, p0 + block) - p0
        re = np.empty((n_freq, block), dtype=np.float32)
        im = np.empty((n_freq, block), dtype=np.float32)
        acc = np.zeros((n_freq, block), dtype=np.float32)
        for k in range(n_seg):
            re[:, :width] = 0.0
            im[:, :width] = 0.0
            for m in range(seg):
                row = x[k * hop + m, p0:p0 + width]
                for f in range(n_freq):
                    c = cos[f, m]
                    s = sin[f, m]
                    rf = re[f]
                    jf = im[f]
                    for q in range(width):
                        rf[q] += c * row[q]
                        jf[q] += s * row[q]
            for f in range(n_freq):
                for q in range(width):
                    acc[f, q] += re[f, q] * re[f, q] + im[f, q] * im[f, q]
        for f in range(n_freq):
            for q in range(width):
                out[f, p0 + q] = acc[f, q]
    return out


def welch_band_psd(block: np.ndarray, noise_range=tuple(_SE["noise_range"])) -> np.ndarray:
    """Welch PSD of every pixel, only at the DFT frequencies inside ``noise_range``.

    Parameters
    ----------
    block : ndarray, shape (T, ...)
        Time series along axis 0.

    Returns
    -------
    ndarray, float64, shape (n_freq, ...): the segment-averaged one-sided PSD.
    """
    x = np.asarray(block, dtype=np.float32)
    T = x.shape[0]
    pix_shape = x.shape[1:]
    x = x.reshape(T, -1)
    seg, hop, cos, sin, scale = _welch_plan(T, noise_range)
    n_seg = 1 + (T - seg) // hop
    n_freq = cos.shape[0]
    out = np.empty((n_freq, x.shape[1]), dtype=np.float32)
    if x.shape[1]:
        _band_power(np.ascontiguousarray(x), cos, sin, hop, n_seg, out)
    out = out.astype(np.float64) * (scale[:, None] / n_seg)
    return out.reshape((cos.shape[0],) + pix_shape)


def _sn_from_psd(psd: np.ndarray, method: str) -> np.ndarray:
    half = np.maximum(psd / 2.0, 1e-300)
    if method == "logmexp":
        sn = np.sqrt(np.exp(np.mean(np.log(half), axis=0)))
    elif method == "mean":
        sn = np.sqrt(np.mean(half, axis=0))
    elif method == "median":
        sn = np.sqrt(np.median(half, axis=0))
    else:
        raise ValueError(f"noise method must be 'logmexp', 'mean' or 'median', got {method!r}")
    return sn.astype(np.float32)


def get_sn(block: np.ndarray, noise_range=tuple(_SE["noise_range"]), method: str = _SE["noise_method"]) -> np.ndarray:
    """Noise standard deviation of every pixel of a block, shape ``block.shape[1:]``, float32."""
    return _sn_from_psd(welch_band_psd(block, noise_range), method)


class NoiseAccumulator:
    """Average Welch PSDs over several windows of frames, then read the noise per pixel.

    Each window is a contiguous block of frames (e.g. 100); the PSD estimates of all windows
    are averaged (more segments, less variance), which is how the sampled-window estimate
    for long sessions is formed.
    """

    def __init__(self, noise_range=tuple(_SE["noise_range"]), method: str = _SE["noise_method"]):
        self.noise_range = tuple(float(v) for v in noise_range)
        self.method = method
        self._sum: np.ndarray | None = None
        self._frames: int | None = None
        self._weight = 0

    def add(self, block: np.ndarray) -> None:
        """Add one contiguous window, shape (T, h, w); every window must have the same T >= 4."""
        n = int(np.asarray(block).shape[0])
        if self._frames is not None and n != self._frames:
            raise ValueError(f"noise windows must all have {self._frames} frames, got {n}")
        psd = welch_band_psd(block, self.noise_range)
        if self._sum is None:
            self._sum = psd
            self._frames = n
        else:
            self._sum += psd
        self._weight += 1

    def sn(self) -> np.ndarray:
        """Noise standard deviation per pixel (float32)."""
        if self._sum is None:
            raise ValueError("no window was added to the noise estimate")
        return _sn_from_psd(self._sum / self._weight, self.method)


def smooth_noise_map(sn: np.ndarray, size: int = 5) -> np.ndarray:
    """Median-filter a noise map (``size`` 3 or 5, replicate borders) and keep it > 0."""
    sn = np.ascontiguousarray(sn, dtype=np.float32)
    if min(sn.shape) >= size:
        sn = cv2.medianBlur(sn, size)
    positive = sn[sn > 0]
    floor = float(np.min(positive)) if positive.size else 1.0
    return np.maximum(sn, floor).astype(np.float32)
