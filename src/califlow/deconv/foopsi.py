"""Constrained FOOPSI: deconvolution of one trace with parameter estimation (the user API).

:func:`deconvolve` is the spike-extraction tool's per-cell computation (parameter names and
meanings of the CaImAn spike extraction tool); :func:`deconvolve_cnmfe` takes the option
set of CNMF-E's ``deconv_options`` (type / method / smin / optimize_pars / max_tau).

Conventions of the result (:class:`DeconvResult`):

* the model is ``y_t = b + c1 h_t + c_t + noise`` with ``h`` the AR impulse response
  (``h_0 = 1``; ``g^t`` for AR(1)): ``c`` is the calcium caused by spikes in the recording,
  ``c1 h_t`` the decay of calcium present before the first frame, ``b`` the baseline;
* ``s_t = c_t - g1 c_{t-1} - g2 c_{t-2}`` with ``s_0 = 0`` (the initial calcium is in ``c1``);
* ``calcium()`` returns ``c + c1 h`` (add ``b`` with ``baseline=True``): the denoised trace.

``s_min`` (the tool's semantics): None = L1 (noise-constrained, the default); 0 = L0 with the
threshold chosen automatically as the largest one keeping ``||y - b - c||^2 <= sn^2 T``;
> 0 = absolute minimal spike size; < 0 = ``|s_min| sn sqrt(1 - d)`` with ``d`` the decay
factor per frame (``g`` for AR(1), the dominant root for AR(2)).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numba
import numpy as np

from califlow.deconv import oasis as _oasis
from califlow.deconv.estimate import ar_from_roots, ar_roots, estimate_time_constant, get_noise
from califlow.errors import InputError
from califlow.params import default_config

#: The spike_extraction group's defaults (the schema is their only source).
_SE = default_config()["spike_extraction"]

__all__ = [
    "DeconvResult",
    "BatchResult",
    "deconvolve",
    "deconvolve_batch",
    "deconvolve_cnmfe",
    "deconvolve_cnmfe_batch",
    "impulse_response",
    "thread_pools",
]

DEFAULT_REFIT_EVENTS = 10  # events used by optimize_g=True / optimize_pars


@dataclass
class DeconvResult:
    """Deconvolution of one trace.

    Attributes
    ----------
    c : float32 (T,)
        Calcium caused by spikes in the recording, baseline and initial decay excluded.
    s : float32 (T,)
        Spikes (same units as the trace), ``s[0] = 0``.
    b : float
        Baseline.
    c1 : float
        Calcium at frame 0 from activity before the recording (decays as ``c1 h_t``).
    g : tuple of float
        AR coefficients used, length p (empty for p = 0).
    sn : float
        Noise standard deviation used.
    lam : float
        Sparsity penalty of the equivalent penalised problem (0 for L0 / thresholded fits).
    """

    c: np.ndarray
    s: np.ndarray
    b: float
    c1: float
    g: tuple
    sn: float
    lam: float
    s_min: float | None = field(default=None)

    def initial(self) -> np.ndarray:
        """The initial-calcium decay ``c1 h_t``, float32 (T,)."""
        return (self.c1 * impulse_response(self.g, self.c.shape[0])).astype(np.float32)

    def calcium(self, baseline: bool = False) -> np.ndarray:
        """Denoised trace ``c + c1 h`` (+ ``b`` when ``baseline``), float32 (T,)."""
        out = self.c + self.initial()
        if baseline:
            out = out + np.float32(self.b)
        return out.astype(np.float32)


@dataclass
class BatchResult:
    """Deconvolution of K traces (rows); see :class:`DeconvResult` for the meanings.

    ``C`` and ``S`` are float32 (K, T); ``b``, ``c1``, ``sn``, ``lam``, ``s_min`` (threshold
    used, NaN for L1 fits) float64 (K,); ``g``
    float64 (K, p); ``ok`` bool (K,) is False for traces that could not be deconvolved
    (their rows are zero) and ``errors`` maps such a row to its message.
    ``C`` holds ``c + c1 h`` (the initial decay included, baseline excluded).
    """

    C: np.ndarray
    S: np.ndarray
    b: np.ndarray
    c1: np.ndarray
    g: np.ndarray
    sn: np.ndarray
    lam: np.ndarray
    ok: np.ndarray
    errors: dict
    s_min: np.ndarray | None = None


def impulse_response(g: Sequence[float], T: int) -> np.ndarray:
    """AR impulse response ``h`` (float64 (T,), ``h_0 = 1``); zeros after frame 0 for p = 0."""
    g = tuple(float(v) for v in g)
    if len(g) == 0:
        h = np.zeros(T)
        h[:1] = 1.0
        return h
    if len(g) == 1:
        return _oasis._gpow_table(g[0], T - 1)
    return _oasis.ar2_kernel(g[0], g[1], T)


def _decay_factor(g: Sequence[float]) -> float:
    if len(g) == 1:
        return float(g[0])
    return _oasis.dominant_root(g[0], g[1])


def _validate_trace(y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise InputError(f"expected one trace (1-D), got an array of shape {y.shape}")
    if np.isinf(y).any():
        raise InputError(f"the trace has {int(np.isinf(y).sum())} infinite sample(s), first at "
                         f"frame {int(np.flatnonzero(np.isinf(y))[0])}")
    return y


def _validate_g(g, p: int) -> tuple:
    g = tuple(float(v) for v in np.atleast_1d(np.asarray(g, dtype=np.float64)))
    if len(g) != p:
        raise InputError(f"g = {list(g)} has {len(g)} value(s) but p = {p} needs {p}")
    if p == 1 and not (0.0 <= g[0] < 1.0):
        raise InputError(f"g = {g[0]} is not allowed; an AR(1) coefficient must be in [0, 1)")
    if p == 2:
        d = _oasis.dominant_root(*g)
        if not (0.0 <= d < 1.0) or g[0] + g[1] >= 1.0:
            raise InputError(f"g = {list(g)} is not a stable AR(2) model (decay root {d:.4g} must be "
                             "in [0, 1))")
    return g


def _threshold_from_s_min(s_min: float, sn: float, g: tuple) -> float:
    if s_min > 0:
        return float(s_min)
    return abs(float(s_min)) * sn * math.sqrt(max(1.0 - _decay_factor(g), 0.0))


def _fixed_lambda(x: np.ndarray, g: tuple, lam: float, s_min: float):
    if len(g) == 1:
        return _oasis._oasis_ar1_kernel(x, g[0], lam, s_min)
    return _oasis._oasis_ar2_kernel(x, g[0], g[1], lam, s_min)


def _rss(x: np.ndarray, c: np.ndarray) -> float:
    r = x - c
    return float(np.nansum(r * r))


def _auto_threshold(x: np.ndarray, g: tuple, sn: float, n_iter: int = 30):
    """Largest spike threshold whose L0 fit keeps RSS <= sn^2 T (bisection). Returns (thr, c, s)."""
    n_obs = int(np.count_nonzero(~np.isnan(x)))
    thresh = sn * sn * n_obs
    c, s = _fixed_lambda(x, g, 0.0, 0.0)
    best = (0.0, c, s)
    if _rss(x, c) > thresh:
        return best
    lo, hi = 0.0, float(max(np.nanmax(x), 0.0)) + sn
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        c, s = _fixed_lambda(x, g, 0.0, mid)
        if _rss(x, c) <= thresh:
            lo = mid
            best = (mid, c, s)
        else:
            hi = mid
        if hi - lo <= 1e-4 * sn:
            break
    return best


def _refit_g(x: np.ndarray, s: np.ndarray, g: tuple, sn: float, n_events: int,
             fit_baseline: bool, max_tau: float | None) -> tuple:
    """Refit the AR time constants on the largest isolated events of ``x`` (baseline removed).

    Each event is the stretch from a spike to the next one; its calcium is a sum of ``p``
    exponentials (roots of the AR model) with free amplitudes, plus a common offset when
    ``fit_baseline``. The roots minimise the squared error over the ``n_events`` largest
    events that last at least 8 frames; ``max_tau`` (frames) caps the decay time constant.
    Returns the new ``g`` (unchanged when there are no usable events).
    """
    p = len(g)
    T = x.shape[0]
    d_now = _decay_factor(g)
    tau_now = -1.0 / math.log(min(max(d_now, 1e-6), 1 - 1e-9))
    thr = 3.0 * sn * math.sqrt(max(1.0 - d_now, 1e-6))
    idx = np.flatnonzero(s > thr)
    if idx.size == 0:
        return g
    ends = np.append(idx[1:], T)
    length = ends - idx
    usable = length >= 8
    if not usable.any():
        return g
    idx, length = idx[usable], length[usable]
    order = np.argsort(-s[idx], kind="stable")[:max(1, n_events)]
    seg_len = np.minimum(length[order], max(20, int(10 * tau_now)))
    starts = idx[order]
    L = int(seg_len.max())
    k = np.arange(L)
    pos = starts[:, None] + k[None, :]
    mask = (k[None, :] < seg_len[:, None]) & (pos < T)
    segs = x[np.minimum(pos, T - 1)]
    mask &= ~np.isnan(segs)
    segs = np.where(mask, segs, 0.0)
    d_cap = math.exp(-1.0 / max_tau) if max_tau else 0.9999

    def cost(roots) -> float:
        r1 = float(roots[0])
        r2 = float(roots[1]) if len(roots) > 1 else 0.0
        return _event_rss(r1, r2, len(roots), segs, mask, fit_baseline)

    if p == 1:
        return (_bounded_brent_root(segs, mask, fit_baseline, 0.01, d_cap, 1e-6, 500),)
    r0 = ar_roots(np.array(g))[0]
    start = np.array([min(max(r0[0], 0.02), d_cap), min(max(r0[1], 0.01), 0.99 * d_cap)])

    d, r = _nelder_mead_roots(segs, mask, fit_baseline, start[0], start[1], d_cap, 1e-6, 1e-10, 400)
    if not (0.0 < r < d <= d_cap):
        return g
    return tuple(float(v) for v in ar_from_roots([[d, r]])[0])


#: Brent's bounded minimiser: square root of the float64 machine epsilon, and the golden-section ratio
_SQRT_EPS = math.sqrt(2.2e-16)
_GOLDEN_MEAN = 0.5 * (3.0 - math.sqrt(5.0))


@numba.njit(cache=True, nogil=True)
def _bounded_brent_root(segs, mask, fit_baseline, a, b, xatol, maxfun):  # pragma: no cover - numba
    """Minimise the AR(1) event RSS over the root in [a, b] (Brent's bounded method).

    Golden-section steps with parabolic interpolation (Forsythe, Malcolm and Moler's
    ``fmin``), stopping when the bracket is within ``xatol`` or after ``maxfun`` evaluations.
    ``xf`` is the best point so far, ``nfc`` the second best and ``fulc`` the previous
    second best (``fx``, ``fnfc``, ``ffulc`` their values).
    """
    fulc = a + _GOLDEN_MEAN * (b - a)
    nfc = fulc
    xf = fulc
    rat = 0.0
    e = 0.0
    fx = _event_rss(xf, 0.0, 1, segs, mask, fit_baseline)
    num = 1
    ffulc = fx
    fnfc = fx
    xm = 0.5 * (a + b)
    tol1 = _SQRT_EPS * abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    while abs(xf - xm) > (tol2 - 0.5 * (b - a)) and num < maxfun:
        e, rat = _brent_step(a, b, xf, fx, nfc, fnfc, fulc, ffulc, e, rat, xm, tol1, tol2)
        step = max(abs(rat), tol1)
        x = xf + (step if rat >= 0 else -step)
        fu = _event_rss(x, 0.0, 1, segs, mask, fit_baseline)
        num += 1
        a, b, xf, fx, nfc, fnfc, fulc, ffulc = _brent_update(a, b, xf, fx, nfc, fnfc, fulc, ffulc, x, fu)
        xm = 0.5 * (a + b)
        tol1 = _SQRT_EPS * abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
    return xf


@numba.njit(cache=True, nogil=True, inline="always")
def _brent_step(a, b, xf, fx, nfc, fnfc, fulc, ffulc, e, rat, xm, tol1, tol2):  # pragma: no cover - numba
    """The next step of :func:`_bounded_brent_root`: ``(e, rat)``, ``rat`` the signed step before the
    ``tol1`` floor and ``e`` the step before last.

    A parabola through the three best points when its step is acceptable (inside the bracket,
    and less than half the step before last), else a golden-section step into the larger part.
    """
    golden = True
    if abs(e) > tol1:  # try a parabolic step
        golden = False
        r = (xf - nfc) * (fx - ffulc)
        q = (xf - fulc) * (fx - fnfc)
        pp = (xf - fulc) * q - (xf - nfc) * r
        q = 2.0 * (q - r)
        if q > 0.0:
            pp = -pp
        q = abs(q)
        r = e
        e = rat
        if abs(pp) < abs(0.5 * q * r) and pp > q * (a - xf) and pp < q * (b - xf):
            rat = pp / q
            x = xf + rat
            if (x - a) < tol2 or (b - x) < tol2:
                rat = tol1 if xm - xf >= 0 else -tol1
        else:
            golden = True
    if golden:
        e = (a - xf) if xf >= xm else (b - xf)
        rat = _GOLDEN_MEAN * e
    return e, rat


@numba.njit(cache=True, nogil=True, inline="always")
def _brent_update(a, b, xf, fx, nfc, fnfc, fulc, ffulc, x, fu):  # pragma: no cover - numba
    """Shrink the bracket ``[a, b]`` with the new point ``x`` (value ``fu``) and re-rank the three best
    points; returns ``(a, b, xf, fx, nfc, fnfc, fulc, ffulc)``."""
    if fu <= fx:
        if x >= xf:
            a = xf
        else:
            b = xf
        fulc, ffulc = nfc, fnfc
        nfc, fnfc = xf, fx
        xf, fx = x, fu
    else:
        if x < xf:
            a = x
        else:
            b = x
        if fu <= fnfc or nfc == xf:
            fulc, ffulc = nfc, fnfc
            nfc, fnfc = x, fu
        elif fu <= ffulc or fulc == xf or fulc == nfc:  # noqa: SIM109 - scalar compares in numba
            fulc, ffulc = x, fu
    return a, b, xf, fx, nfc, fnfc, fulc, ffulc


@numba.njit(cache=True, nogil=True)
def _roots_cost(v, segs, mask, fit_baseline, d_cap):
    """Event RSS of AR(2) roots v = (d, r), 1e300 outside 0 < r < d <= d_cap."""
    if not (0.0 < v[1] < v[0] <= d_cap):
        return 1e300
    return _event_rss(v[0], v[1], 2, segs, mask, fit_baseline)


@numba.njit(cache=True, nogil=True)
def _nelder_mead_roots(segs, mask, fit_baseline, d0, r0, d_cap, xatol, fatol, maxiter):  # pragma: no cover
    """Nelder-Mead minimisation of :func:`_roots_cost` from (d0, r0); returns (d, r).

    The textbook simplex method (reflection 1, expansion 2, contraction 1/2, shrink 1/2;
    initial simplex 5 % along each axis), stopping when the simplex spans at most
    ``xatol`` and its values differ by at most ``fatol``, or after ``maxiter`` iterations.
    """
    sim = np.empty((3, 2))
    fsim = np.empty(3)
    sim[0, 0], sim[0, 1] = d0, r0
    for k in range(2):
        sim[k + 1, 0], sim[k + 1, 1] = d0, r0
        sim[k + 1, k] = 1.05 * sim[k + 1, k] if sim[k + 1, k] != 0 else 0.00025
    for k in range(3):
        fsim[k] = _roots_cost(sim[k], segs, mask, fit_baseline, d_cap)
    order = np.argsort(fsim, kind="mergesort")
    sim, fsim = sim[order], fsim[order]
    for _ in range(1, maxiter):
        if _simplex_converged(sim, fsim, xatol, fatol):
            break
        _nelder_mead_step(sim, fsim, segs, mask, fit_baseline, d_cap)
        order = np.argsort(fsim, kind="mergesort")
        sim, fsim = sim[order], fsim[order]
    return sim[0, 0], sim[0, 1]


@numba.njit(cache=True, nogil=True, inline="always")
def _simplex_converged(sim, fsim, xatol, fatol):  # pragma: no cover - numba
    """The sorted simplex (3, 2) spans at most ``xatol`` per coordinate and its values (3,) at most ``fatol``."""
    span = 0.0
    fspan = 0.0
    for k in range(1, 3):
        fspan = max(fspan, abs(fsim[0] - fsim[k]))
        for j in range(2):
            span = max(span, abs(sim[k, j] - sim[0, j]))
    return span <= xatol and fspan <= fatol


@numba.njit(cache=True, nogil=True)
def _nelder_mead_step(sim, fsim, segs, mask, fit_baseline, d_cap):  # pragma: no cover - numba
    """One Nelder-Mead iteration on the sorted simplex ``sim`` (3, 2), values ``fsim`` (3,), in place.

    The worst vertex is reflected through the centroid of the others, then the reflection is
    expanded or contracted; when no move improves on it, the simplex shrinks toward the best.
    """
    xbar = 0.5 * (sim[0] + sim[1])
    xr = 2.0 * xbar - sim[2]
    fxr = _roots_cost(xr, segs, mask, fit_baseline, d_cap)
    shrink = False
    if fxr < fsim[0]:
        xe = 3.0 * xbar - 2.0 * sim[2]
        fxe = _roots_cost(xe, segs, mask, fit_baseline, d_cap)
        if fxe < fxr:
            sim[2], fsim[2] = xe, fxe
        else:
            sim[2], fsim[2] = xr, fxr
    elif fxr < fsim[1]:
        sim[2], fsim[2] = xr, fxr
    elif fxr < fsim[2]:
        xc = 1.5 * xbar - 0.5 * sim[2]
        fxc = _roots_cost(xc, segs, mask, fit_baseline, d_cap)
        if fxc <= fxr:
            sim[2], fsim[2] = xc, fxc
        else:
            shrink = True
    else:
        xcc = 0.5 * xbar + 0.5 * sim[2]
        fxcc = _roots_cost(xcc, segs, mask, fit_baseline, d_cap)
        if fxcc < fsim[2]:
            sim[2], fsim[2] = xcc, fxcc
        else:
            shrink = True
    if shrink:
        for k in range(1, 3):
            sim[k] = sim[0] + 0.5 * (sim[k] - sim[0])
            fsim[k] = _roots_cost(sim[k], segs, mask, fit_baseline, d_cap)


@numba.njit(cache=True, nogil=True)
def _event_rss(r1, r2, q, segs, mask, fit_baseline):
    """Least-squares error of events modelled as sums of ``q`` exponentials (roots r1, r2).

    Each row of ``segs`` (J, L) is one event (``mask`` marks its samples); amplitudes are
    free per event and, with ``fit_baseline``, one offset is shared (variable projection:
    the linear parameters are solved in closed form for the given roots).
    """
    rss = 0.0
    a1 = 0.0
    a2 = 0.0
    for j in range(segs.shape[0]):
        g11, g12, g22, x1, x2, u1, u2, n, sx, sxx = _event_moments(segs[j], mask[j], r1, r2)
        gx1, gx2, gu1, gu2 = _solve_amplitudes(g11, g12, g22, x1, x2, u1, u2, q)
        rss += sxx - (x1 * gx1 + x2 * gx2)
        a2 += n - (u1 * gu1 + u2 * gu2)
        a1 += sx - (u1 * gx1 + u2 * gx2)
    if fit_baseline and a2 > 1e-12:
        rss -= a1 * a1 / a2
    return rss


@numba.njit(cache=True, nogil=True, inline="always")
def _event_moments(seg, seg_mask, r1, r2):  # pragma: no cover - numba
    """Sums over one event's samples ``x_k`` (``seg_mask``) of the exponentials ``p1 = r1**k``, ``p2 = r2**k``.

    Returns ``(sum p1 p1, sum p1 p2, sum p2 p2, sum p1 x, sum p2 x, sum p1, sum p2, count,
    sum x, sum x**2)``.
    """
    g11 = 0.0
    g12 = 0.0
    g22 = 0.0
    x1 = 0.0
    x2 = 0.0
    u1 = 0.0
    u2 = 0.0
    n = 0.0
    sx = 0.0
    sxx = 0.0
    p1 = 1.0
    p2 = 1.0
    for k in range(seg.shape[0]):
        if seg_mask[k]:
            x = seg[k]
            g11 += p1 * p1
            g12 += p1 * p2
            g22 += p2 * p2
            x1 += p1 * x
            x2 += p2 * x
            u1 += p1
            u2 += p2
            n += 1.0
            sx += x
            sxx += x * x
        p1 *= r1
        p2 *= r2
    return g11, g12, g22, x1, x2, u1, u2, n, sx, sxx


@numba.njit(cache=True, nogil=True, inline="always")
def _solve_amplitudes(g11, g12, g22, x1, x2, u1, u2, q):  # pragma: no cover - numba
    """``G^-1 x`` and ``G^-1 u`` for the Gram matrix ``G`` of the ``q`` exponentials (ridge 1e-12):
    ``(gx1, gx2, gu1, gu2)`` (the second components 0 for q = 1)."""
    if q == 1:
        inv = 1.0 / (g11 + 1e-12)
        return x1 * inv, 0.0, u1 * inv, 0.0
    g11 += 1e-12
    g22 += 1e-12
    det = g11 * g22 - g12 * g12
    if det <= 1e-300:
        det = 1e-300
    return ((g22 * x1 - g12 * x2) / det, (g11 * x2 - g12 * x1) / det,
            (g22 * u1 - g12 * u2) / det, (g11 * u2 - g12 * u1) / det)


def _solve_oasis(y: np.ndarray, g: tuple, sn: float, bl: float | None, bas_nonneg: bool,
                 s_min: float | None):
    """Noise-constrained fit (L1), then the L0 / thresholded variant. Returns (c, s, b, lam, thr)."""
    optimize_b = bl is None
    x = y if optimize_b else y - bl
    if len(g) == 1:
        c, s, b, lam = _oasis.constrained_oasis_ar1(x, g[0], sn, optimize_b=optimize_b,
                                                    b_nonneg=bas_nonneg)
    else:
        c, s, b, lam = _oasis.constrained_oasis_ar2(x, g[0], g[1], sn, optimize_b=optimize_b,
                                                    b_nonneg=bas_nonneg)
    if not optimize_b:
        b = float(bl)
    return _with_s_min(y, g, sn, s_min, (c, s, b, lam))


def _with_s_min(y: np.ndarray, g: tuple, sn: float, s_min: float | None, fit: tuple):
    """Replace an L1 fit ``(c, s, b, lam)`` by its L0 / thresholded variant when ``s_min`` is set.

    The variant is an OASIS fit of ``y - b`` (same units as ``y``) with ``lam = 0`` and a
    minimal spike size: chosen automatically for ``s_min == 0``, else from ``s_min``
    (see :func:`_threshold_from_s_min`). Returns ``(c, s, b, lam, thr)``; ``thr`` is None
    (and the fit unchanged) when ``s_min`` is None.
    """
    c, s, b, lam = fit
    if s_min is None:
        return c, s, b, lam, None
    if s_min == 0:
        thr, c, s = _auto_threshold(y - b, g, sn)
    else:
        thr = _threshold_from_s_min(s_min, sn, g)
        c, s = _fixed_lambda(y - b, g, 0.0, thr)
    return c, s, b, 0.0, thr


def _finish(y, c, s, b, lam, g, sn, c1_given, thr) -> DeconvResult:
    c = np.asarray(c, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64).copy()
    if c1_given is None:
        c1 = float(c[0])
        if c1 != 0.0:
            c = c - c1 * impulse_response(g, c.shape[0])
        s[0] = 0.0
    else:
        c1 = float(c1_given)
    return DeconvResult(c=c.astype(np.float32), s=s.astype(np.float32), b=float(b), c1=c1,
                        g=tuple(float(v) for v in g), sn=float(sn), lam=float(lam), s_min=thr)


def _checked_noise(y: np.ndarray, p: int, sn, lags: int, noise_range, noise_method: str) -> float:
    """Check the AR order and trace length; return the noise level ``sn`` (units of ``y``),
    estimated by :func:`get_noise` when None.

    Raises
    ------
    InputError
        ``p`` not in {0, 1, 2}, too few finite samples, or ``sn`` not positive.
    """
    if p not in (0, 1, 2):
        raise InputError(f"p = {p} is not allowed; the AR order must be 0, 1 or 2")
    n_obs = int(np.count_nonzero(~np.isnan(y)))
    min_len = max(lags + p + 2, 8)
    if n_obs < min_len:
        raise InputError(f"the trace has {n_obs} finite sample(s); at least {min_len} are needed")
    if sn is None:
        sn = get_noise(y, noise_range, noise_method)
    sn = float(sn)
    if not math.isfinite(sn) or sn <= 0:
        raise InputError(f"the noise level sn = {sn} is not positive: the trace is constant or "
                         "has no high-frequency content")
    return sn


def _refit_events(method: str, optimize_g) -> int:
    """Check ``method`` and return the number of events used to refit g (0 = no refit)."""
    if method not in ("oasis", "cvxpy"):
        raise InputError(f"method_deconvolution {method!r} is not allowed; allowed: oasis, cvxpy")
    n_refit = DEFAULT_REFIT_EVENTS if optimize_g is True else int(optimize_g or 0)
    if n_refit and method != "oasis":
        raise InputError("optimize_g applies only to method_deconvolution 'oasis'")
    return n_refit


def deconvolve(y, *, p: int = _SE["p"], g=None, sn=None, bl=None, c1=None, s_min=None,
               bas_nonneg: bool = _SE["bas_nonneg"], optimize_g=0, noise_range=tuple(_SE["noise_range"]),
               noise_method: str = _SE["noise_method"], lags: int = _SE["lags"],
               fudge_factor: float = _SE["fudge_factor"], method: str = _SE["method_deconvolution"],
               solvers=tuple(_SE["solvers"]), max_tau=None) -> DeconvResult:
    """Deconvolve one calcium trace (constrained FOOPSI with parameter estimation).

    Solves ``min ||s||_1`` subject to ``||y - b - c1 h - c||^2 <= sn^2 T`` and the AR(p)
    dynamics with ``s >= 0`` (see the module docstring for ``s_min``).

    Parameters
    ----------
    y : array (T,)
        Fluorescence trace (any units); NaN samples (dropped frames) are ignored.
    p : {0, 1, 2}
        AR order; 0 returns ``c = s = max(y - b, 0)`` (no deconvolution).
    g : sequence of p floats, optional
        AR coefficients; estimated from the autocovariance (``lags``, ``fudge_factor``) if None.
    sn : float, optional
        Noise standard deviation; estimated by Welch PSD (``noise_range``, ``noise_method``) if None.
    bl : float, optional
        Baseline; optimised (``>= 0`` if ``bas_nonneg`` else ``>= min(y)``) if None.
    c1 : float, optional
        Initial calcium; estimated (the value of c at frame 0) if None. When given, its decay
        ``c1 h`` is removed from the trace before deconvolution.
    s_min : float, optional
        None = L1; 0 = automatic L0; > 0 absolute; < 0 = ``|s_min| sn sqrt(1 - d)``.
    optimize_g : int or bool
        Number of large isolated events used to refit ``g`` (0 = no refit; True = 10).
    method : {'oasis', 'cvxpy'}
        Solver; 'cvxpy' needs the optional cvxpy extra and uses ``solvers`` (primary, fallback).
    max_tau : float, optional
        Upper bound (frames) of the decay time constant when refitting ``g``.

    Returns
    -------
    DeconvResult
    """
    y = _validate_trace(y)
    sn = _checked_noise(y, p, sn, lags, noise_range, noise_method)
    if p == 0:
        return _without_dynamics(y, bl, sn)
    if g is None:
        g = estimate_time_constant(y, p, sn, lags, fudge_factor)
    g = _validate_g(g, p)
    n_refit = _refit_events(method, optimize_g)
    yw = y if c1 is None else y - float(c1) * impulse_response(g, y.shape[0])
    if method == "cvxpy":
        from califlow.deconv.cvx import solve_cvxpy

        # the L0 variants are OASIS fits on the cvxpy baseline
        fit = _with_s_min(yw, g, sn, s_min, solve_cvxpy(yw, g, sn, bl=bl, bas_nonneg=bas_nonneg,
                                                        solvers=solvers))
    else:
        g, fit = _oasis_fit(yw, g, sn, bl, bas_nonneg, s_min, n_refit, max_tau)
    c, s, b, lam, thr = fit
    return _finish(yw, c, s, b, lam, g, sn, c1, thr)


def _without_dynamics(y: np.ndarray, bl: float | None, sn: float) -> DeconvResult:
    """The p = 0 result: ``c = s = max(y - b, 0)`` (0 at NaN samples), ``b = bl`` or 0."""
    b = 0.0 if bl is None else float(bl)
    c = np.where(~np.isnan(y), np.maximum(y - b, 0.0), 0.0)
    return DeconvResult(c=c.astype(np.float32), s=c.astype(np.float32), b=b, c1=0.0, g=(), sn=sn, lam=0.0)


def _oasis_fit(y: np.ndarray, g: tuple, sn: float, bl: float | None, bas_nonneg: bool, s_min: float | None,
               n_refit: int, max_tau: float | None) -> tuple[tuple, tuple]:
    """OASIS fit of ``y`` (see :func:`_solve_oasis`), with ``g`` refitted on ``n_refit`` events when > 0.

    Returns the AR coefficients used and the fit ``(c, s, b, lam, thr)``.
    """
    fit = _solve_oasis(y, g, sn, bl, bas_nonneg, s_min)
    if n_refit:
        g, fit = _refit_loop(y, g, sn, fit, n_refit, bl is None, max_tau,
                             lambda gg: _solve_oasis(y, gg, sn, bl, bas_nonneg, s_min))
    return g, fit


def _refit_loop(y, g, sn, fit, n_events, fit_baseline, max_tau, solve, rounds: int = 3):
    """Alternate refits of g on isolated events and new solves; a refit whose solve cannot
    meet the noise constraint (RSS above sn^2 T by more than 1 %) is rejected."""
    n_obs = int(np.count_nonzero(~np.isnan(y)))
    limit = 1.01 * sn * sn * n_obs
    base_rss = _rss(y - fit[2], fit[0])
    for _ in range(rounds):
        g_new = _refit_g(y - fit[2], fit[1], g, sn, n_events, fit_baseline, max_tau)
        change = abs(_decay_factor(g_new) - _decay_factor(g))
        if change == 0.0:
            break
        new_fit = solve(g_new)
        rss = _rss(y - new_fit[2], new_fit[0])
        if rss > max(limit, 1.01 * base_rss):
            break
        g, fit = g_new, new_fit
        if change < 1e-4:
            break
    return g, fit


# --------------------------------------------------------------------------------------------
# CNMF-E options
# --------------------------------------------------------------------------------------------
_CNMFE_TYPES = {"ar1": 1, "ar2": 2}
_CNMFE_METHODS = ("foopsi", "constrained", "thresholded")


def _cnmfe_options(options: Mapping | None) -> dict:
    opts = dict(options or {})
    kind = str(opts.get("type", "ar1")).lower()
    if kind not in _CNMFE_TYPES:
        raise InputError(f"deconv_options type {kind!r} is not allowed; allowed: ar1, ar2")
    method = str(opts.get("method", "constrained")).lower()
    if method not in _CNMFE_METHODS:
        raise InputError(f"deconv_options method {method!r} is not allowed; allowed: "
                         + ", ".join(_CNMFE_METHODS))
    max_tau = opts.get("max_tau")
    return {
        "p": _CNMFE_TYPES[kind],
        "method": method,
        "smin": float(opts.get("smin", 0.0) or 0.0),
        "lambda": float(opts.get("lambda", 0.0) or 0.0),
        "optimize_pars": bool(opts.get("optimize_pars", False)),
        "optimize_b": bool(opts.get("optimize_b", True)),
        "max_tau": float(max_tau) if max_tau else None,
        "g": opts.get("pars", opts.get("g")),
        "b": opts.get("b"),
        "noise_range": tuple(opts.get("noise_range", _SE["noise_range"])),
        "noise_method": str(opts.get("noise_method", _SE["noise_method"])),
        "lags": int(opts.get("lags", _SE["lags"])),
        "fudge_factor": float(opts.get("fudge_factor", _SE["fudge_factor"])),
        "n_events": int(opts.get("n_events", DEFAULT_REFIT_EVENTS)),
    }


def _foopsi_fixed(y: np.ndarray, g: tuple, sn: float, lam: float, thr: float, b, optimize_b: bool):
    """Fixed-penalty fit with an optional baseline (alternating b = mean residual)."""
    if b is not None:
        b = float(b)
        c, s = _fixed_lambda(y - b, g, lam, thr)
        return c, s, b
    if not optimize_b:
        c, s = _fixed_lambda(y, g, lam, thr)
        return c, s, 0.0
    # b starts at the mean of the quiet samples (below the median), then Newton steps
    c, s, b = _oasis.oasis_with_baseline(y, g, lam, thr, b_nonneg=False)
    return c, s, b


def _cnmfe_solve(y: np.ndarray, o: dict, g: tuple, sn: float):
    if o["method"] == "constrained":
        bl = None if o["b"] is None and o["optimize_b"] else (0.0 if o["b"] is None else float(o["b"]))
        c, s, b, lam, _ = _solve_oasis(y, g, sn, bl, False, None)
        return c, s, b, lam, None
    thr = abs(o["smin"]) * sn if o["smin"] < 0 else o["smin"]
    if o["method"] == "thresholded":
        bl = None if o["b"] is None and o["optimize_b"] else (0.0 if o["b"] is None else float(o["b"]))
        c, s, b, lam, _ = _solve_oasis(y, g, sn, bl, False, None)
        auto, c, s = _auto_threshold(y - b, g, sn)
        if auto < thr:
            c, s = _fixed_lambda(y - b, g, 0.0, thr)
        return c, s, b, 0.0, max(auto, thr)
    c, s, b = _foopsi_fixed(y, g, sn, o["lambda"], thr, o["b"], o["optimize_b"])
    return c, s, b, o["lambda"], thr


def deconvolve_cnmfe(y, deconv_options: Mapping | None = None, sn=None) -> DeconvResult:
    """Deconvolve one trace with CNMF-E's ``deconv_options``.

    Parameters
    ----------
    y : array (T,)
        Raw trace of one neuron (``C_raw`` row, any units); NaN samples are ignored.
    deconv_options : mapping
        ``type`` 'ar1' | 'ar2'; ``method`` 'foopsi' (fixed penalty ``lambda``, default 0, and
        minimal spike size), 'constrained' (L1 with the noise constraint) or 'thresholded'
        (L0, threshold chosen so that RSS <= sn^2 T, never below the ``smin`` one);
        ``smin`` (< 0: ``|smin| sn``, > 0: absolute, default 0); ``optimize_pars`` (refit g on
        the 10 largest isolated events); ``optimize_b`` (default True); ``max_tau`` (frames,
        caps the decay time constant of the refit); optional ``pars``/``g``, ``b``, ``lambda``,
        ``noise_range``, ``noise_method``, ``lags``, ``fudge_factor``.
    sn : float, optional
        Noise standard deviation (estimated from the trace if None).

    Returns
    -------
    DeconvResult
        ``calcium()`` gives the denoised calcium ``c + c1 h`` (baseline excluded).
    """
    o = _cnmfe_options(deconv_options)
    y = _validate_trace(y)
    n_obs = int(np.count_nonzero(~np.isnan(y)))
    if n_obs < max(o["lags"] + o["p"] + 2, 8):
        raise InputError(f"the trace has {n_obs} finite sample(s); too few to deconvolve")
    if sn is None:
        sn = get_noise(y, o["noise_range"], o["noise_method"])
    sn = float(sn)
    if not math.isfinite(sn) or sn <= 0:
        raise InputError(f"the noise level sn = {sn} is not positive: the trace is constant")
    if o["g"] is None:
        g = estimate_time_constant(y, o["p"], sn, o["lags"], o["fudge_factor"])
        if o["max_tau"]:
            g = _cap_tau(tuple(g), o["max_tau"])
    else:
        g = o["g"]
    g = _validate_g(g, o["p"])
    fit = _cnmfe_solve(y, o, g, sn)
    if o["optimize_pars"]:
        g, fit = _refit_loop(y, g, sn, fit, o["n_events"], o["b"] is None and o["optimize_b"],
                             o["max_tau"], lambda gg: _cnmfe_solve(y, o, gg, sn))
    c, s, b, lam, thr = fit
    return _finish(y, c, s, b, lam, g, sn, None, thr)


def _cap_tau(g: tuple, max_tau: float) -> tuple:
    d_cap = math.exp(-1.0 / max_tau)
    roots = ar_roots(np.array(g))[0]
    if roots.max() <= d_cap:
        return g
    roots = np.minimum(roots, d_cap)
    return tuple(float(v) for v in ar_from_roots(roots[None])[0])


# --------------------------------------------------------------------------------------------
# batches of traces
# --------------------------------------------------------------------------------------------
def _n_workers(n_threads: int | None) -> int:
    if n_threads is not None and n_threads > 0:
        return int(n_threads)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: The pools of the enclosing :func:`thread_pools` block, by number of threads (None outside one).
_POOLS: contextvars.ContextVar[dict[int, ThreadPoolExecutor] | None] = \
    contextvars.ContextVar("califlow_deconv_pools", default=None)


@contextlib.contextmanager
def thread_pools() -> Iterator[None]:
    """Within the block, batch deconvolutions reuse lasting thread pools, shut down when it ends.

    CNMF-E deconvolves small batches thousands of times: a run opens one block, and its
    batches share one pool per thread count instead of starting threads for every call.
    Outside a block each batch starts its own threads and joins them before it returns.
    The pools belong to the thread (context) that opened the block; an inner block reuses
    the outer one's pools.

    Examples
    --------
    >>> with thread_pools():                                  # doctest: +SKIP
    ...     for Y in batches:
    ...         deconvolve_cnmfe_batch(Y, options)
    """
    if _POOLS.get() is not None:
        yield
        return
    pools: dict[int, ThreadPoolExecutor] = {}
    token = _POOLS.set(pools)
    try:
        yield
    finally:
        _POOLS.reset(token)
        for pool in pools.values():
            pool.shutdown(wait=True)


def _map_threads(work: Callable[[int], None], n: int, workers: int) -> None:
    """``work(k)`` for k in range(n) on ``workers`` threads: the block's pool, or one for this call."""
    pools = _POOLS.get()
    if pools is None:
        with _new_pool(workers) as pool:
            list(pool.map(work, range(n)))
        return
    if workers not in pools:
        pools[workers] = _new_pool(workers)
    list(pools[workers].map(work, range(n)))


def _new_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="califlow-deconv")


def _run_batch(Y: np.ndarray, per_trace: Callable[[int], DeconvResult], p: int,
               n_threads: int | None) -> BatchResult:
    K, T = Y.shape
    C = np.zeros((K, T), np.float32)
    S = np.zeros((K, T), np.float32)
    b = np.zeros(K)
    c1 = np.zeros(K)
    g = np.zeros((K, p))
    sn = np.zeros(K)
    lam = np.zeros(K)
    thr = np.full(K, np.nan)
    ok = np.zeros(K, bool)
    errors: dict = {}

    def work(k: int) -> None:
        try:
            res = per_trace(k)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            errors[k] = str(exc)
            return
        C[k] = res.calcium()
        S[k] = res.s
        b[k], c1[k], sn[k], lam[k] = res.b, res.c1, res.sn, res.lam
        if res.s_min is not None:
            thr[k] = res.s_min
        g[k, :len(res.g)] = res.g
        ok[k] = True

    workers = min(_n_workers(n_threads), max(K, 1))
    if workers <= 1 or K < 4:
        for k in range(K):
            work(k)
    else:  # the numba kernels release the GIL
        _map_threads(work, K, workers)
    return BatchResult(C=C, S=S, b=b, c1=c1, g=g, sn=sn, lam=lam, ok=ok, errors=errors, s_min=thr)


def _batch_estimates(Y: np.ndarray, p: int, sn, g, noise_range, noise_method, lags, fudge_factor):
    """Vectorised sn (K,) and g (K, p) for the rows of Y that have enough finite samples."""
    K = Y.shape[0]
    finite_rows = (np.count_nonzero(~np.isnan(Y), axis=1) >= max(lags + p + 2, 8)) & \
        ~np.isinf(Y).any(axis=1)
    sn_arr = np.full(K, np.nan)
    g_arr = np.full((K, p), np.nan)
    rows = np.flatnonzero(finite_rows)
    if sn is None:
        if rows.size:
            sn_arr[rows] = get_noise(Y[rows], noise_range, noise_method)
    else:
        sn_arr[:] = np.broadcast_to(np.asarray(sn, dtype=np.float64), (K,))
    if p > 0:
        if g is None:
            good = rows[np.isfinite(sn_arr[rows]) & (sn_arr[rows] > 0)]
            if good.size:
                g_arr[good] = estimate_time_constant(Y[good], p, sn_arr[good], lags, fudge_factor)
        else:
            g_arr[:] = np.broadcast_to(np.asarray(g, dtype=np.float64).reshape(-1, p)
                                       if np.ndim(g) == 2 else np.asarray(g, dtype=np.float64), (K, p))
    return sn_arr, g_arr


def _as_batch(Y) -> np.ndarray:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[None]
    if Y.ndim != 2:
        raise InputError(f"expected traces as a (K, T) array, got shape {Y.shape}")
    return np.ascontiguousarray(Y)


def deconvolve_batch(Y, *, n_threads: int | None = None, p: int = _SE["p"], g=None, sn=None,
                     noise_range=tuple(_SE["noise_range"]), noise_method: str = _SE["noise_method"],
                     lags: int = _SE["lags"], fudge_factor: float = _SE["fudge_factor"], **kwargs) -> BatchResult:
    """:func:`deconvolve` on every row of ``Y`` (K, T), with vectorised sn and g estimation.

    ``sn`` and ``g`` may be scalars/sequences shared by all rows or per-row arrays ((K,) and
    (K, p)); other keywords are those of :func:`deconvolve`. Rows that fail (too short,
    constant, ...) are zero in ``C``/``S`` with ``ok[k] = False`` and a message in ``errors``.
    ``n_threads`` defaults to the CPUs available to this process.
    """
    Y = _as_batch(Y)
    sn_arr, g_arr = _batch_estimates(Y, p, sn, g, noise_range, noise_method, lags, fudge_factor)

    def per_trace(k: int) -> DeconvResult:
        gk = None if p == 0 else g_arr[k]
        if gk is not None and not np.isfinite(gk).all():
            gk = None
        snk = sn_arr[k] if np.isfinite(sn_arr[k]) else None
        return deconvolve(Y[k], p=p, g=gk, sn=snk, noise_range=noise_range,
                          noise_method=noise_method, lags=lags, fudge_factor=fudge_factor, **kwargs)

    return _run_batch(Y, per_trace, p, n_threads)


def deconvolve_cnmfe_batch(Y, deconv_options: Mapping | None = None, sn=None,
                           n_threads: int | None = None) -> BatchResult:
    """:func:`deconvolve_cnmfe` on every row of ``Y`` (K, T), sn/g estimated vectorised.

    ``sn`` may be None, a scalar or a (K,) array; ``deconv_options['pars']`` may hold one
    (p,) or one row per trace (K, p) of AR coefficients. ``BatchResult.C`` is the denoised calcium
    (``c + c1 h``, baseline excluded) and ``BatchResult.b`` the baselines.
    """
    Y = _as_batch(Y)
    o = _cnmfe_options(deconv_options)
    sn_arr, g_arr = _batch_estimates(Y, o["p"], sn, o["g"], o["noise_range"], o["noise_method"],
                                     o["lags"], o["fudge_factor"])
    base = dict(deconv_options or {})

    def per_trace(k: int) -> DeconvResult:
        opts = dict(base)
        if np.isfinite(g_arr[k]).all():
            gk = tuple(g_arr[k])
            if o["g"] is None and o["max_tau"]:
                gk = _cap_tau(gk, o["max_tau"])
            opts["pars"] = gk
        snk = sn_arr[k] if np.isfinite(sn_arr[k]) else None
        return deconvolve_cnmfe(Y[k], opts, sn=snk)

    return _run_batch(Y, per_trace, o["p"], n_threads)
