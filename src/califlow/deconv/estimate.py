"""Noise level and AR time constants of calcium traces, vectorised over many traces.

* :func:`get_noise`: noise standard deviation from the Welch power spectral density
  (Hann window, 256-sample segments, 50 % overlap, sampling rate 1) averaged over the
  normalised frequencies ``fmin < f < fmax`` (cycles/frame, Nyquist 0.5). White noise of
  variance sn^2 has a one-sided PSD of 2 sn^2, so ``sn = sqrt(avg(PSD / 2))`` where ``avg`` is
  the mean, the median, or ``logmexp`` (exp of the mean log: the geometric mean).
* :func:`estimate_time_constant`: AR(p) coefficients from the biased autocovariance with the
  noise removed from lag 0 (Yule-Walker over ``lags + p`` lags, least squares), then the AR
  roots are made stable (a root above 1 becomes 0.95, a negative root 0.15, a complex pair
  keeps its real part) and shrunk by ``fudge_factor`` to correct the upward bias.

NaN samples (dropped frames) are filled by linear interpolation before either estimate.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from califlow.params import default_config

#: The spike_extraction group's defaults (the schema is their only source).
_SE = default_config()["spike_extraction"]

__all__ = ["get_noise", "estimate_time_constant", "fill_nan", "ar_roots", "ar_from_roots"]

NOISE_METHODS = ("logmexp", "mean", "median")


def fill_nan(y: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaN samples along the last axis (float64 copy).

    Rows that are all NaN become zeros; leading/trailing NaN take the nearest finite value.
    """
    y = np.array(y, dtype=np.float64, copy=True)
    rows = y.reshape(-1, y.shape[-1])
    bad_rows = np.flatnonzero(np.isnan(rows).any(axis=1))
    t = np.arange(rows.shape[1])
    for r in bad_rows:  # loop over traces, not over samples
        ok = ~np.isnan(rows[r])
        if not ok.any():
            rows[r] = 0.0
            continue
        rows[r] = np.interp(t, t[ok], rows[r, ok])
    return rows.reshape(y.shape)


def _welch_band(y: np.ndarray, fmin: float, fmax: float, nperseg: int = 256,
                chunk_bytes: int = 32 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD (as ``scipy.signal.welch`` defaults: Hann, 50 % overlap, constant detrend,
    one-sided density, fs = 1) of the rows of ``y`` (K, T), only at ``fmin < f < fmax``.

    Segments of a block of rows are transformed together; the block size keeps the segment
    array under ``chunk_bytes``. Returns (freqs (F,), psd (K, F)).
    """
    K, T = y.shape
    nper = min(nperseg, T)
    step = nper - nper // 2
    n_seg = (T - nper) // step + 1
    freqs = np.fft.rfftfreq(nper)
    band = np.flatnonzero((freqs > fmin) & (freqs < fmax))
    window = signal.get_window("hann", nper)
    scale = 2.0 / float((window * window).sum())  # band excludes DC and Nyquist
    psd = np.empty((K, band.size))
    rows = max(1, int(chunk_bytes // max(1, n_seg * nper * 8)))
    for r0 in range(0, K, rows):  # loop over blocks of traces
        block = y[r0:r0 + rows]
        segs = np.lib.stride_tricks.sliding_window_view(block, nper, axis=1)[:, ::step][:, :n_seg]
        segs = segs - segs.mean(axis=2, keepdims=True)
        spec = np.fft.rfft(segs * window, axis=2)[:, :, band]
        psd[r0:r0 + rows] = (spec.real ** 2 + spec.imag ** 2).mean(axis=1) * scale
    return freqs[band], psd


def get_noise(y, noise_range=tuple(_SE["noise_range"]), method: str = _SE["noise_method"]) -> np.ndarray | float:
    """Noise standard deviation of one trace or of every row of a (K, T) array.

    Parameters
    ----------
    y : array (T,) or (K, T)
        Traces (any units); NaN samples are interpolated.
    noise_range : (fmin, fmax)
        Normalised frequency band (cycles/frame, 0 <= fmin < fmax <= 0.5), bounds excluded.
    method : {'logmexp', 'mean', 'median'}
        How the PSD bins are averaged.

    Returns
    -------
    float or float64 array (K,)
        Noise standard deviation in the units of ``y``.
    """
    if method not in NOISE_METHODS:
        raise ValueError(f"noise_method {method!r} is not allowed; allowed: {', '.join(NOISE_METHODS)}")
    fmin, fmax = (float(v) for v in noise_range)
    if not (0.0 <= fmin < fmax <= 0.5):
        raise ValueError(f"noise_range {list(noise_range)!r} is not allowed; need 0 <= fmin < fmax <= 0.5")
    y = np.asarray(y)
    single = y.ndim == 1
    y2 = fill_nan(np.atleast_2d(y))
    T = y2.shape[-1]
    if T < 4:
        raise ValueError(f"a trace of {T} samples is too short to estimate its noise")
    freqs, psd = _welch_band(y2, fmin, fmax)
    band = np.ones(freqs.shape, bool)
    if not freqs.size:
        raise ValueError(f"noise_range {list(noise_range)!r} holds no frequency bin for a trace of "
                         f"{T} samples")
    half = psd[:, band] / 2.0
    if method == "mean":
        sn = np.sqrt(half.mean(axis=1))
    elif method == "median":
        sn = np.sqrt(np.median(half, axis=1))
    else:
        with np.errstate(divide="ignore"):
            sn = np.sqrt(np.exp(np.log(half).mean(axis=1)))
    return float(sn[0]) if single else sn


def _autocovariance(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Biased autocovariance (K, max_lag + 1) of the rows of mean-removed ``x`` (K, T)."""
    T = x.shape[1]
    out = np.zeros((x.shape[0], max_lag + 1))
    for k in range(min(max_lag, T - 1) + 1):  # loop over a handful of lags
        out[:, k] = np.einsum("kt,kt->k", x[:, :T - k], x[:, k:]) / T
    return out


def ar_roots(g) -> np.ndarray:
    """Roots of ``z^p - g1 z^{p-1} - ... - gp`` (real parts) for rows of g, shape (K, p)."""
    g = np.atleast_2d(np.asarray(g, dtype=np.float64))
    if g.shape[1] == 1:
        return g.copy()
    disc = g[:, 0] ** 2 + 4.0 * g[:, 1]
    sq = np.sqrt(np.maximum(disc, 0.0))
    return np.stack([(g[:, 0] + sq) / 2.0, (g[:, 0] - sq) / 2.0], axis=1)


def ar_from_roots(roots) -> np.ndarray:
    """AR coefficients (K, p) whose characteristic roots are the rows of ``roots``."""
    r = np.atleast_2d(np.asarray(roots, dtype=np.float64))
    if r.shape[1] == 1:
        return r.copy()
    return np.stack([r[:, 0] + r[:, 1], -r[:, 0] * r[:, 1]], axis=1)


def estimate_time_constant(y, p: int = _SE["p"], sn=None, lags: int = _SE["lags"],
                           fudge_factor: float = _SE["fudge_factor"], noise_range=tuple(_SE["noise_range"]),
                           noise_method: str = _SE["noise_method"]) -> np.ndarray:
    """AR(p) coefficients of one trace (returns (p,)) or of every row of (K, T) (returns (K, p)).

    Parameters
    ----------
    y : array (T,) or (K, T)
        Traces; NaN samples are interpolated.
    p : {1, 2}
        AR order.
    sn : float or array (K,), optional
        Noise standard deviation; estimated with :func:`get_noise` when None.
    lags : int
        Number of extra autocovariance lags (``lags + p`` equations).
    fudge_factor : float
        Shrinkage (0, 1] of the AR roots (bias correction).

    Returns
    -------
    float64 array (p,) or (K, p)
    """
    if p not in (1, 2):
        raise ValueError(f"p = {p} is not allowed here; the AR order must be 1 or 2")
    if not (0.0 < fudge_factor <= 1.0):
        raise ValueError(f"fudge_factor = {fudge_factor} is not allowed; need 0 < fudge_factor <= 1")
    lags = int(lags)
    if lags < 1:
        raise ValueError(f"lags = {lags} is not allowed; need an integer >= 1")
    y = np.asarray(y)
    single = y.ndim == 1
    x = fill_nan(np.atleast_2d(y))
    K, T = x.shape
    L = lags + p
    if T <= L + 1:
        raise ValueError(f"a trace of {T} samples is too short for lags = {lags} (need more than {L + 1})")
    if sn is None:
        sn = get_noise(x, noise_range, noise_method)
    sn = np.broadcast_to(np.asarray(sn, dtype=np.float64), (K,))
    x = x - x.mean(axis=1, keepdims=True)
    gamma = _autocovariance(x, L)
    # A[i, j] = gamma(|i - j|) - sn^2 delta_ij, i < L, j < p;  rhs = gamma(1..L)
    i = np.arange(L)[:, None]
    j = np.arange(p)[None, :]
    A = gamma[:, np.abs(i - j)]
    A[:, np.arange(p), np.arange(p)] -= (sn ** 2)[:, None]
    rhs = gamma[:, 1:L + 1]
    AtA = np.einsum("kip,kiq->kpq", A, A)
    Atb = np.einsum("kip,ki->kp", A, rhs)
    det_ok = np.abs(np.linalg.det(AtA)) > 1e-300
    g = np.zeros((K, p))
    if det_ok.any():
        g[det_ok] = np.linalg.solve(AtA[det_ok], Atb[det_ok][..., None])[..., 0]
    roots = ar_roots(g)
    roots = np.where(roots > 1.0, 0.95, roots)
    roots = np.where(roots < 0.0, 0.15, roots)
    roots = np.where(np.isfinite(roots), roots, 0.95)
    g = ar_from_roots(fudge_factor * roots)
    return g[0] if single else g
