"""Post-processing of the traces, as CaliAli does after the CNMF-E loop.

Per batch: the raw trace is scaled to noise units (divided by its noise level), its slow
baseline is removed (moving minimum of a moving median), and a final AR(2) deconvolution
(``final_deconv_options``, sn = 1 as the trace is in noise units) gives C and S.  With a
negative ``smin`` (CaliAli's own final pass is FOOPSI with smin = -5) stretches where the
trace never rises ``|smin|`` noise levels for ``QUIET_S`` seconds also have C and S set to
0, as CaliAli's ``denoise_traces`` does.  califlow's default final pass is the
noise-constrained AR(2) fit (``method: constrained``), which keeps the many events smaller
than 5 noise levels (see ``benchmarks/bench_cnmfe.py``).  Neurons are ordered by
SNR = var(C) / var(C_raw - C).

Per-session activity (:func:`session_activity`, ``cnmfe.session_activity``)
--------------------------------------------------------------------------
A neuron is *active* in a session when both tests pass there:

1. Noise test (one-sided).  The session's largest transient is the maximum of the
   ``TRANSIENT_FRAMES``-frame (w) running mean of ``C_raw`` above the session's median.
   Noise levels are estimated robustly from the values below the median only
   (``MAD_TO_SIGMA`` x the median distance below the median; transients are positive, so
   the lower half is noise): the transient's noise is the larger of the frames' noise over
   sqrt(w) (white noise) and the running mean's own (noise colour the noise units - GetSn,
   high frequencies - miss).  With z = transient / noise, the p-value is
   Bonferroni over the session's T frames, ``p = min(1, T * P(N(0, 1) > z))``; the test
   passes when ``p <= pvalue``.  Under Gaussian noise alone it passes with probability at
   most ``pvalue`` per neuron and session (``tests/test_cnmfe_silent.py`` measures it).
2. Crosstalk test.  Neighbours' activity and neuropil leak into a silent neuron's trace as
   small copies of their transients (``benchmarks/bench_silent_sessions.py``: median 7 %,
   p90 13-22 % of the neuron's peak, rarely above 25 %), which pass any noise test.  The
   session's largest transient must reach ``crosstalk`` x the neuron's largest transient over
   all sessions (same statistic).

In a session where a neuron is inactive its C and S are set to 0 (:func:`silence_inactive`);
C_raw stays as measured.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from califlow.cnmfe.temporal import denoise_traces

__all__ = ["EVENT_COUNT_LEVEL", "scale_to_noise", "remove_baseline", "final_deconvolution", "snr", "largest_transients",
           "session_activity", "silence_inactive"]

#: Window (s) of the moving median of the baseline estimate (CaliAli: 20 s).
BASELINE_MEDIAN_S = 20.0
#: Window (s) of the moving minimum applied to that median (CaliAli: 100 s).
BASELINE_MIN_S = 100.0
#: Stretches (s) with no 5-noise-level rise are silenced (CaliAli: 10 s).
QUIET_S = 10.0
#: Frames of the running mean whose maximum is a session's largest transient.
TRANSIENT_FRAMES = 5
#: Smallest deconvolved spike (noise units) counted in the per-session event counts.
EVENT_COUNT_LEVEL = 1.0


def scale_to_noise(C_raw: np.ndarray, deconv_sn) -> np.ndarray:
    """Raw traces (K, T) divided by their noise level (GetSn of each row)."""
    from califlow.deconv import get_noise

    C = np.asarray(C_raw, np.float32)
    sn = np.atleast_1d(np.asarray(get_noise(C), np.float64)) if deconv_sn is None else np.asarray(deconv_sn)
    sn = np.where(np.isfinite(sn) & (sn > 0), sn, 1.0)
    return (C / sn[:, None]).astype(np.float32)


def remove_baseline(C: np.ndarray, fps: float) -> np.ndarray:
    """Subtract a slow baseline: moving minimum (100 s) of a moving median (20 s), per row.

    The median runs on the trace averaged in 1-frame-per-``step`` bins (``step`` ~ 1/4 s)
    so that its cost does not grow with the window; the baseline is interpolated back.
    """
    from califlow.preprocess.temporal import running_median, running_min

    C = np.asarray(C, np.float32)
    K, T = C.shape
    if K == 0 or T < 3:
        return C.copy()
    step = max(1, int(round(fps / 4)))
    n = T // step
    if n < 3:
        return C - np.median(C, axis=1, keepdims=True)
    coarse = C[:, :n * step].reshape(K, n, step).mean(axis=2)
    med = running_median(coarse.T, max(1, int(round(BASELINE_MEDIAN_S * fps / step))))
    base = running_min(med, max(1, int(round(BASELINE_MIN_S * fps / step)))).T  # (K, n)
    centres = (np.arange(n) + 0.5) * step - 0.5
    t = np.arange(T)
    out = np.empty_like(C)
    for k in range(K):  # one interpolation per neuron
        out[k] = C[k] - np.interp(t, centres, base[k])
    return out


def final_deconvolution(C_raw: np.ndarray, options: Mapping, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Deconvolve noise-unit traces (K, T_b) of one batch with sn = 1; returns (C, S)."""
    from califlow.preprocess.temporal import running_max, running_median

    K, T = C_raw.shape
    if K == 0:
        return C_raw.copy(), C_raw.copy()
    C, S, _, _, _ = denoise_traces(C_raw, True, dict(options), sn=1.0)
    smin = float(options["smin"] or 0)
    if options["method"] != "constrained" and smin < 0:
        level = running_max(running_median(C_raw.T, 5), max(1, int(round(QUIET_S * fps)))).T
        quiet = level < abs(smin)
        C[quiet] = 0
        S[quiet] = 0
    return C, S


def snr(C: np.ndarray, C_raw: np.ndarray) -> np.ndarray:
    """var(C) / var(C_raw - C) per row (0 where undefined)."""
    v_sig = C.var(axis=1)
    v_res = (C_raw - C).var(axis=1)
    return np.where(v_res > 0, v_sig / np.where(v_res > 0, v_res, 1), 0.0)


def largest_transients(x: np.ndarray, window: int = TRANSIENT_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Largest transient of each row of ``x`` (K, T) and its one-sided Bonferroni p-value.

    Parameters
    ----------
    x : ndarray (K, T)
        Traces of one session (noise units).
    window : int
        Frames of the running mean.

    Returns
    -------
    amplitude : ndarray (K,)
        Maximum of the running mean above its median.
    pvalue : ndarray (K,)
        ``min(1, T * sf(amplitude / noise))``, noise = robust spread of the running mean
        below its median (module docstring, test 1); 1 where undefined.
    """
    from scipy.stats import norm

    x = np.asarray(x, np.float64)
    K, T = x.shape
    w = max(1, min(int(window), T))
    c = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    y = (c[:, w:] - c[:, :-w]) / w
    mid = np.median(y, axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        # white noise of the frames scaled to the mean, or the mean's own spread if larger (coloured noise)
        sd = np.fmax(_lower_spread(x) / np.sqrt(w), _lower_spread(y)) if T > 1 else np.full(K, np.nan)
        amp = y.max(axis=1) - mid[:, 0]
        z = amp / sd
    p = np.where(np.isfinite(z), np.minimum(1.0, T * norm.sf(np.nan_to_num(z))), 1.0)
    return amp, p


def _lower_spread(x: np.ndarray) -> np.ndarray:
    """Robust standard deviation of each row from its values below the median (MAD_TO_SIGMA x median distance)."""
    from califlow.metrics import MAD_TO_SIGMA

    mid = np.median(x, axis=1, keepdims=True)
    return MAD_TO_SIGMA * np.nanmedian(np.where(x < mid, mid - x, np.nan), axis=1)


def session_activity(C_raw: np.ndarray, S: np.ndarray, sessions: list[dict], t0: int = 0, *,
                     pvalue: float, crosstalk: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-session event counts and activity flags, each (K, n_sessions).

    Parameters
    ----------
    C_raw, S : ndarray (K, T)
        Raw traces (noise units) and deconvolved activity.
    sessions : list of dict
        ``start`` and ``stop`` frames of each session.
    t0 : int
        Frame of the concatenation where column 0 of the traces lies.
    pvalue : float
        Level of the noise test (``cnmfe.session_activity.pvalue``).
    crosstalk : float
        Smallest largest-transient, as a fraction of the neuron's largest over all sessions
        (``cnmfe.session_activity.crosstalk``).

    Returns
    -------
    counts : int (K, n_sessions)
        Frames with a deconvolved spike of at least 1 noise level (0 where inactive).
    active : bool (K, n_sessions)
        Both tests of the module docstring pass.
    """
    K = S.shape[0]
    counts = np.zeros((K, len(sessions)), np.int64)
    if K == 0:
        return counts, np.zeros((K, len(sessions)), bool)
    amp = np.zeros((K, len(sessions)))
    p = np.ones((K, len(sessions)))
    for j, s in enumerate(sessions):
        a, b = s["start"] - t0, s["stop"] - t0
        counts[:, j] = np.count_nonzero(S[:, a:b] >= EVENT_COUNT_LEVEL, axis=1)
        amp[:, j], p[:, j] = largest_transients(C_raw[:, a:b])
    top = np.where(np.isfinite(amp), amp, 0.0).max(axis=1, keepdims=True)
    active = (p <= pvalue) & (amp >= crosstalk * top) & (amp > 0)
    counts[~active] = 0  # events are absent where the neuron is inactive (S is set to 0 there)
    return counts, active


def silence_inactive(X: np.ndarray, active: np.ndarray, sessions: list[dict], t0: int = 0) -> np.ndarray:
    """Copy of ``X`` (K, T) with each neuron's frames set to 0 in the sessions where it is inactive."""
    out = np.array(X, copy=True)
    for j, s in enumerate(sessions):
        out[~active[:, j], s["start"] - t0:s["stop"] - t0] = 0
    return out
