"""Post-processing of the traces, as CaliAli does after the CNMF-E loop.

Per batch: the raw trace is scaled to noise units (divided by its noise level), its slow
baseline is removed (moving minimum of a moving median), and a final AR(2) deconvolution
(``final_deconv_options``, sn = 1 as the trace is in noise units) gives C and S.  With a
negative ``smin`` (CaliAli's own final pass is FOOPSI with smin = -5) stretches where the
trace never rises ``|smin|`` noise levels for ``QUIET_S`` seconds also have C and S set to
0, as CaliAli's ``denoise_traces`` does.  califlow's default final pass is the
noise-constrained AR(2) fit (``method: constrained``), which keeps the many events smaller
than 5 noise levels (see ``benchmarks/bench_cnmfe.py``).  Neurons are ordered by
SNR = var(C) / var(C_raw - C).  A neuron is *active* in a session when its raw trace has
a transient above ``ACTIVE_LEVEL`` noise levels there (5-frame running median).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from califlow.cnmfe.temporal import denoise_traces

__all__ = ["scale_to_noise", "remove_baseline", "final_deconvolution", "snr", "session_activity"]

#: Window (s) of the moving median of the baseline estimate (CaliAli: 20 s).
BASELINE_MEDIAN_S = 20.0
#: Window (s) of the moving minimum applied to that median (CaliAli: 100 s).
BASELINE_MIN_S = 100.0
#: Stretches (s) with no 5-noise-level rise are silenced (CaliAli: 10 s).
QUIET_S = 10.0
#: A session counts as active for a neuron when its raw trace rises this many noise levels.
ACTIVE_LEVEL = 3.0


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


def session_activity(C_raw: np.ndarray, S: np.ndarray, sessions: list[dict], t0: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-session event counts and presence flags, each (K, n_sessions).

    Events are frames with a deconvolved spike of at least 1 noise level; a neuron is
    present in a session when its 5-frame running median of ``C_raw`` (noise units)
    reaches ``ACTIVE_LEVEL`` there.
    """
    from califlow.preprocess.temporal import running_median

    K = S.shape[0]
    counts = np.zeros((K, len(sessions)), np.int64)
    active = np.zeros((K, len(sessions)), bool)
    if K == 0:
        return counts, active
    for j, s in enumerate(sessions):
        a, b = s["start"] - t0, s["stop"] - t0
        counts[:, j] = np.count_nonzero(S[:, a:b] >= 1.0, axis=1)
        active[:, j] = running_median(C_raw[:, a:b].T, 5).max(axis=0) >= ACTIVE_LEVEL
    return counts, active
