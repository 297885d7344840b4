"""Temporal update: HALS on the traces with deconvolution inside the loop.

For fixed footprints and background, each trace is updated in turn from its "raw" trace
``y_k = c_k + (U_k - (A^T A)_k C) / ||a_k||^2`` (``U = A^T (Y_b - B_b)``), which is then
denoised by OASIS with the in-loop ``deconv_options`` (CNMF-E: AR(1) FOOPSI, smin = -5
noise levels, optimised time constant) from :mod:`califlow.deconv`.  Without
``deconv_flag`` the trace is only made non-negative above its baseline.  Batches are
updated independently (per-batch baseline and noise, as CaliAli does).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

__all__ = ["TraceFit", "denoise_trace", "denoise_traces", "hals_traces", "overlap_groups"]


class TraceFit:
    """One denoised trace: calcium ``c`` (no baseline), spikes ``s``, baseline, noise, AR coefficients."""

    __slots__ = ("c", "s", "b", "sn", "g")

    def __init__(self, c, s, b, sn, g):
        self.c, self.s, self.b, self.sn, self.g = c, s, float(b), float(sn), g


def ar_order(options: Mapping) -> int:
    """AR order of a CNMF-E ``deconv_options`` (1 for 'ar1', 2 for 'ar2')."""
    return 2 if str(options["type"]).lower() == "ar2" else 1


def denoise_trace(y: np.ndarray, deconv_flag: bool, options: Mapping) -> TraceFit:
    """Denoise one raw trace (float32, (T,)); see :func:`denoise_traces`."""
    C, S, b, noise, g = denoise_traces(np.asarray(y, np.float32)[None], deconv_flag, options, n_threads=1)
    return TraceFit(C[0], S[0], b[0], noise[0], g[0])


def denoise_traces(Y: np.ndarray, deconv_flag: bool, options: Mapping, g: np.ndarray | None = None,
                   n_threads: int | None = None, sn: float | None = None):
    """Denoise raw traces (K, T).

    With ``deconv_flag`` each row goes through :func:`califlow.deconv.deconvolve_cnmfe` with
    the CNMF-E ``options``; when ``g`` (K, p) is given, rows with finite coefficients reuse
    them (no re-estimation, ``optimize_pars`` off: the in-loop sweeps after the first).
    Without ``deconv_flag`` the baseline (mean below the median) is removed and the trace
    clipped at 0.  Rows that cannot be deconvolved (constant, too short) are 0.  ``sn``
    fixes the noise level of every row (e.g. 1 for traces in noise units).

    Returns
    -------
    C : ndarray (K, T) float32   denoised calcium (initial decay included, no baseline)
    S : ndarray (K, T) float32   deconvolved activity (zeros without deconvolution)
    b : ndarray (K,)             baselines
    sn : ndarray (K,)            noise levels
    g : ndarray (K, p)           AR coefficients used (NaN where none)
    """
    from califlow import deconv

    Y = np.ascontiguousarray(Y, dtype=np.float32)
    K, T = Y.shape
    p = ar_order(options)
    flat = ~np.any(Y[:, :1] != Y, axis=1)
    C = np.zeros((K, T), np.float32)
    S = np.zeros((K, T), np.float32)
    b = Y[:, 0].astype(np.float64).copy()
    sn_fixed = sn
    sn = np.zeros(K)
    g_out = np.full((K, p), np.nan)
    rows = np.flatnonzero(~flat)
    if rows.size == 0:
        return C, S, b, sn, g_out
    if not deconv_flag:
        med = np.median(Y[rows], axis=1, keepdims=True)
        low = np.where(Y[rows] <= med, Y[rows], np.nan)
        b[rows] = np.nanmean(low, axis=1)
        C[rows] = np.maximum(Y[rows] - b[rows, None], 0)
        sn[rows] = deconv.get_noise(Y[rows])
        return C, S, b, sn, g_out
    known = np.zeros(K, bool)
    if g is not None:
        known[rows] = np.isfinite(g[rows]).all(axis=1) & (np.asarray(g)[rows, 0] > 0)
    fresh, reuse = rows[~known[rows]], rows[known[rows]]
    for sel, opts in ((fresh, dict(options)),
                      (reuse, dict(options, optimize_pars=False, pars=None if g is None else np.asarray(g)[reuse]))):
        if sel.size == 0:
            continue
        res = deconv.deconvolve_cnmfe_batch(Y[sel], opts, sn=sn_fixed, n_threads=n_threads)
        ok = sel[res.ok]
        C[ok], S[ok], sn[ok], g_out[ok] = res.C[res.ok], res.S[res.ok], res.sn[res.ok], res.g[res.ok]
        b[sel] = np.where(res.ok, res.b, b[sel])
    return C, S, b, sn, g_out


def overlap_groups(VA: np.ndarray) -> list[np.ndarray]:
    """Greedy colouring of the overlap graph: groups of components with disjoint footprints."""
    K = VA.shape[0]
    colour = -np.ones(K, np.int64)
    adj = (VA != 0)
    for k in range(K):
        used = set(colour[np.flatnonzero(adj[k])].tolist())
        c = 0
        while c in used:
            c += 1
        colour[k] = c
    return [np.flatnonzero(colour == c) for c in range(int(colour.max()) + 1)] if K else []


def hals_traces(U: np.ndarray, VA: np.ndarray, C0: np.ndarray, *, deconv_flag: bool, options: Mapping,
                g: np.ndarray | None = None, n_sweeps: int = 2):
    """HALS sweeps over the traces of one batch, a group of non-overlapping components at a time.

    Parameters
    ----------
    U : ndarray (K, T_b)
        ``A^T (Y_b - B_b)``.
    VA : ndarray (K, K)
        ``A^T A``.
    C0 : ndarray (K, T_b)
        Current denoised traces.
    g : ndarray (K, p), optional
        AR coefficients to reuse (see :func:`denoise_traces`); None re-estimates them.

    Returns
    -------
    C, C_raw, S : ndarray (K, T_b) float32
        Denoised traces, raw traces (baseline removed) and deconvolved activity.
    sn : ndarray (K,) float32
        Noise level of each raw trace.
    g : ndarray (K, p)
        AR coefficients.
    """
    K, T = U.shape
    C = np.array(C0, dtype=np.float32, copy=True)
    C_raw = np.zeros_like(C)
    S = np.zeros_like(C)
    sn = np.zeros(K, np.float32)
    g_out = np.full((K, ar_order(options)), np.nan) if g is None else np.array(g, dtype=np.float64, copy=True)
    diag = np.diag(VA).astype(np.float32)
    VAs = sp.csr_matrix(VA)
    groups = overlap_groups(VA)
    for sweep in range(max(1, n_sweeps)):
        for grp in groups:
            grp = grp[diag[grp] > 0]
            if grp.size == 0:
                continue
            Y = C[grp] + (U[grp] - VAs[grp] @ C) / diag[grp, None]
            reuse = g_out[grp] if (g is not None or sweep > 0) else None
            Cg, Sg, bg, sng, gg = denoise_traces(Y, deconv_flag, options, g=reuse)
            C[grp], S[grp] = Cg, Sg
            C_raw[grp] = Y - bg[:, None].astype(np.float32)
            sn[grp] = sng
            g_out[grp] = gg
    C[diag <= 0] = 0
    return C, C_raw, S, sn, g_out
