"""OASIS: pool-adjacent-violators deconvolution of AR(1) and AR(2) calcium traces (numba).

Model: calcium ``c`` obeys ``s_t = c_t - g1 c_{t-1} - g2 c_{t-2}`` with spikes ``s_t >= 0``
(``c_{-1} = c_{-2} = 0``, so ``s_0 = c_0``), and the trace is ``y = c + b + noise``.

* :func:`oasis_ar1` / :func:`oasis_ar2` solve, for a fixed sparsity penalty ``lam``,
  ``min 1/2 ||c - y||^2 + lam ||s||_1`` subject to ``s_t = 0`` or ``s_t >= s_min``.
  Consecutive frames without a spike form a *pool* whose calcium decays with the AR kernel;
  a new frame enters as its own pool and pools are merged backwards while the spike at the
  start of the last pool is below ``s_min``. For AR(1) and ``s_min = 0`` this is the exact
  solution (Friedrich, Zhou & Paninski 2017). For AR(2) the pooling is greedy (each pool's
  value is chosen given the calcium before it); with ``s_min = 0`` its support is then
  refined to the exact optimum by an active-set loop whose fits solve all pool values jointly
  (dynamic programming over the pools, O(T) per pass). With ``s_min > 0`` (non-convex) the
  greedy solution is returned.
* :func:`constrained_oasis_ar1` / :func:`constrained_oasis_ar2` solve the noise-constrained
  problem ``min ||s||_1`` subject to ``||c + b - y||^2 = sn^2 T`` through its dual: the penalty
  ``lam`` (and the baseline ``b`` when optimised) is moved along the solution path, using the
  exact linear dependence of ``c`` on ``(lam, b)`` for the current pools, until the residual
  sum of squares reaches ``sn^2 T``.

Samples that are NaN (dropped frames) carry no data: they are left out of every fit and of
``T`` in the noise constraint, and ``c`` is interpolated through them by the AR dynamics.

All kernels take float64 traces and return float64 arrays; pools are kept in pre-allocated
arrays, so the cost is O(T) per pass and memory is a few arrays of length T.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "oasis_ar1",
    "oasis_ar2",
    "constrained_oasis_ar1",
    "constrained_oasis_ar2",
    "oasis_with_baseline",
    "ar2_kernel",
    "dominant_root",
]

_RSS_TOL = 1e-4  # relative tolerance on the noise constraint
_NO_SUMS = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _observed(y):
    """Observed-sample mask ``obs`` (bool (T,)) and the trace ``x`` with NaN samples set to 0."""
    obs = ~np.isnan(y)
    return obs, np.where(obs, y, 0.0)


@numba.njit(cache=True, nogil=True, inline="always")
def _add_sums(S, r, d, q):
    """Add one observed frame to the residual sums ``S`` (see :func:`_residual_sums`)."""
    return (S[0] + r * r, S[1] + r, S[2] + q, S[3] + d, S[4] + r * q, S[5] + q * q,
            S[6] + r * d, S[7] + q * d, S[8] + d * d)


@numba.njit(cache=True, nogil=True)
def _residual_sums(x, obs, b, c, dl, db):
    """(sum r^2, sum r, sum q, sum d, sum rq, sum q^2, sum rd, sum qd, sum d^2) with
    r = x - b - c, d = dc/dlam, q = 1 + dc/db over observed frames."""
    S = _NO_SUMS
    for tt in range(x.shape[0]):
        if obs[tt]:
            S = _add_sums(S, x[tt] - b - c[tt], dl[tt], 1.0 + db[tt])
    return S


@numba.njit(cache=True, nogil=True, inline="always")
def _solve_step(rss0, lin, quad, thresh):
    """Smallest-magnitude step ``a`` with rss0 + 2 a lin + a^2 quad = thresh on the rising side.

    Returns (a, ok); when the parabola never reaches ``thresh`` it returns its minimiser.
    """
    if quad <= 0.0:
        if lin == 0.0:
            return 0.0, False
        return (thresh - rss0) / (2.0 * lin), True
    disc = lin * lin - quad * (rss0 - thresh)
    if disc < 0.0:
        return -lin / quad, False
    return (-lin + math.sqrt(disc)) / quad, True


@numba.njit(cache=True, nogil=True)
def _lam_b_step(sums, lam, b, b_lower, thresh):
    """Joint step (dlam, db) of the penalty and baseline towards ``rss = thresh``, sum r = 0.

    ``sums`` are the residual sums of :func:`_residual_sums` at (lam, b); ``lam + dlam >= 0``
    and ``b + db >= b_lower``.
    """
    rss, sr, sq, sd, srq, sqq, srd, sqd, sdd = sums
    # the baseline keeps sum(r) = 0: db = (sum r - dlam sum d) / sum q
    r0r0 = rss - 2.0 * sr / sq * srq + (sr / sq) ** 2 * sqq
    r0m = sd / sq * srq - srd - (sr / sq) * (sd / sq) * sqq + (sr / sq) * sqd
    mm = (sd / sq) ** 2 * sqq - 2.0 * (sd / sq) * sqd + sdd
    dlam, ok = _solve_step(r0r0, r0m, mm, thresh)
    if lam + dlam < 0.0:
        dlam = -lam
    dbase = (sr - dlam * sd) / sq
    if b + dbase < b_lower:
        dbase = b_lower - b
        # penalty only, with the baseline fixed at its bound: r -> r - db q - a d
        r1 = rss - 2.0 * dbase * srq + dbase * dbase * sqq
        dlam, ok = _solve_step(r1, -(srd - dbase * sqd), sdd, thresh)
        if lam + dlam < 0.0:
            dlam = -lam
    return dlam, dbase


@numba.njit(cache=True, nogil=True)
def _baseline_step(sums, b, b_lower):
    """Newton step on the baseline (mean residual 0, ``b >= b_lower``); returns (step, done)."""
    sr = sums[1]
    sq = sums[2]
    step = sr / sq if sq > 0.0 else 0.0
    if b + step < b_lower:
        step = b_lower - b
    return step, abs(step) <= 1e-9 * (abs(b) + 1e-12) or step == 0.0


# --------------------------------------------------------------------------------------------
# AR(1)
# --------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _ar1_buffers(T):
    """Pool arrays ``vw, w, u`` (float64 (T,)) and ``t, l`` (int64 (T,)) of :func:`_ar1_pool`."""
    return np.empty(T), np.empty(T), np.empty(T), np.empty(T, np.int64), np.empty(T, np.int64)


@numba.njit(cache=True, nogil=True)
def _ar1_pool(x, obs, g, lam, s_min, gpow, vw, w, u, t, l):
    """Pool the trace ``x`` (baseline removed) for penalty ``lam``; return the pool count.

    Pool arrays (length >= T): ``vw`` = sum over observed frames of g^k x_k minus the
    penalty term, ``w`` = sum of g^2k over observed frames, ``u`` = sum of g^k over observed
    frames, ``t`` = first frame, ``l`` = length. Every frame starts as its own pool, then
    :func:`_repool_ar1` merges them.
    """
    T = x.shape[0]
    for k in range(T):
        coef = 1.0 if k == T - 1 else 1.0 - g
        if obs[k]:
            vw[k] = x[k] - lam * coef
            w[k] = 1.0
            u[k] = 1.0
        else:
            vw[k] = -lam * coef
            w[k] = 0.0
            u[k] = 0.0
        t[k] = k
        l[k] = 1
    return _repool_ar1(vw, w, u, t, l, T, gpow, s_min)


@numba.njit(cache=True, nogil=True)
def _repool_ar1(vw, w, u, t, l, n, gpow, s_min):
    """Merge every violating pool (forward pass, merging the last pool backwards while its
    initial spike is below ``s_min``); returns the new pool count."""
    # (array-passing helper calls are slow in numba, so the merge loop is written inline)
    m = 0
    for k in range(n):
        vw[m] = vw[k]
        w[m] = w[k]
        u[m] = u[k]
        t[m] = t[k]
        l[m] = l[k]
        m += 1
        while m > 1:
            i = m - 1
            j = m - 2
            gl = gpow[l[j]]
            if w[i] > 0.0:
                pv = vw[j] / w[j] if w[j] > 0.0 else 0.0
                if j == 0 and pv < 0.0:
                    pv = 0.0  # the first pool is clipped at 0
                if pv * gl + s_min <= vw[i] / w[i]:
                    break
            vw[j] += gl * vw[i]
            w[j] += gl * gl * w[i]
            u[j] += gl * u[i]
            l[j] += l[i]
            m -= 1
    return m


@numba.njit(cache=True, nogil=True)
def _ar1_output(vw, w, t, l, n, g):
    """Calcium ``c`` and spikes ``s`` (float64 (T,), s_0 = c_0) from the pools."""
    T = t[n - 1] + l[n - 1]
    c = np.empty(T)
    s = np.empty(T)
    prev = 0.0
    for i in range(n):
        v = vw[i] / w[i] if w[i] > 0.0 else 0.0
        if i == 0 and v < 0.0:
            v = 0.0
        t0 = t[i]
        s[t0] = v - g * prev
        for k in range(l[i]):
            c[t0 + k] = v
            if k > 0:
                s[t0 + k] = 0.0
            v *= g
        prev = c[t0 + l[i] - 1]
    return c, s


@numba.njit(cache=True, nogil=True)
def _gpow_table(g, T):
    gpow = np.empty(T + 1)
    gpow[0] = 1.0
    for k in range(1, T + 1):
        gpow[k] = gpow[k - 1] * g
    return gpow


@numba.njit(cache=True, nogil=True)
def _oasis_ar1_kernel(y, g, lam, s_min):
    obs, x = _observed(y)
    vw, w, u, t, l = _ar1_buffers(y.shape[0])
    n = _ar1_pool(x, obs, g, lam, s_min, _gpow_table(g, y.shape[0]), vw, w, u, t, l)
    return _ar1_output(vw, w, t, l, n, g)


@numba.njit(cache=True, nogil=True)
def _ar1_stats(x, obs, b, g, vw, w, u, t, l, n):
    """Residual sums (:func:`_residual_sums`) for the current pools, in one pass.

    With ``r = x - b - c`` (``x`` the raw trace), ``d = dc/dlam`` and ``q = 1 + dc/db``.
    """
    S = _NO_SUMS
    nlast = n - 1
    for i in range(n):
        if w[i] > 0.0:
            v = vw[i] / w[i]
            clipped = i == 0 and v < 0.0
        else:
            clipped = True
        if clipped:
            v = 0.0
            dl = 0.0
            db = 0.0
        else:
            # sum of penalty coefficients over the pool: 1 - g^l, or 1 for the last pool
            e = 1.0 if i == nlast else 1.0 - _pow_int(g, l[i])
            dl = -e / w[i]
            db = -u[i] / w[i]
        gk = 1.0
        for tt in range(t[i], t[i] + l[i]):
            if obs[tt]:
                S = _add_sums(S, x[tt] - b - v * gk, dl * gk, 1.0 + db * gk)
            gk *= g
    return S


@numba.njit(cache=True, nogil=True, inline="always")
def _pow_int(g, n):
    return g ** n


@numba.njit(cache=True, nogil=True)
def _shift_pools_ar1(vw, w, u, l, n, g, dlam, db):
    """Apply a change of penalty ``dlam`` and baseline ``db`` to every pool's numerator.

    Returns False (and changes nothing) when some pool value would rise: pools can only be
    merged, not split, so the caller then pools again from scratch.
    """
    for i in range(n):
        e = 1.0 if i == n - 1 else 1.0 - _pow_int(g, l[i])
        if dlam * e + db * u[i] < 0.0:
            return False
    for i in range(n):
        e = 1.0 if i == n - 1 else 1.0 - _pow_int(g, l[i])
        vw[i] -= dlam * e + db * u[i]
    return True


@numba.njit(cache=True, nogil=True)
def _constrained_ar1_kernel(y, g, sn, optimize_b, b_lower, b_init, max_iter):
    """Noise-constrained AR(1) OASIS. Returns (c, s, b, lam, rss)."""
    T = y.shape[0]
    obs, x = _observed(y)
    thresh = sn * sn * np.sum(obs)
    gpow = _gpow_table(g, T)
    vw, w, u, t, l = _ar1_buffers(T)
    b = b_init
    lam = 0.0
    n = _ar1_pool(np.where(obs, x - b, 0.0), obs, g, lam, 0.0, gpow, vw, w, u, t, l)
    for _ in range(max_iter):
        sums = _ar1_stats(x, obs, b, g, vw, w, u, t, l, n)
        rss, sr, sq = sums[0], sums[1], sums[2]
        if not optimize_b:
            if rss >= thresh * (1.0 - _RSS_TOL):
                break
            # rss(a) = rss - 2 a sum(r d) + a^2 sum(d^2), since r -> r - a d
            dlam, ok = _solve_step(rss, -sums[6], sums[8], thresh)
            if not ok or dlam <= 0.0:
                break
            dbase = 0.0
        else:
            if abs(rss - thresh) <= _RSS_TOL * thresh and abs(sr) <= 1e-6 * (abs(sq) + 1.0) * sn:
                break
            dlam, dbase = _lam_b_step(sums, lam, b, b_lower, thresh)
            if abs(dlam) < 1e-12 * (abs(lam) + 1.0) and abs(dbase) < 1e-12 * (abs(b) + sn):
                break
        lam += dlam
        b += dbase
        if _shift_pools_ar1(vw, w, u, l, n, g, dlam, dbase):
            n = _repool_ar1(vw, w, u, t, l, n, gpow, 0.0)
        else:  # values rise: pools may need to split, so pool again from scratch
            n = _ar1_pool(np.where(obs, x - b, 0.0), obs, g, lam, 0.0, gpow, vw, w, u, t, l)
    rss = _ar1_stats(x, obs, b, g, vw, w, u, t, l, n)[0]
    c, s = _ar1_output(vw, w, t, l, n, g)
    return c, s, b, lam, rss


# --------------------------------------------------------------------------------------------
# AR(2)
# --------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _ar2_h(g1, g2, T):
    """Impulse response h_k (h_0 = 1), stored with an offset of 2 so that h[-1] = h[-2] = 0."""
    h = np.zeros(T + 3)
    h[2] = 1.0
    for k in range(1, T + 1):
        h[k + 2] = g1 * h[k + 1] + g2 * h[k]
    return h


@numba.njit(cache=True, nogil=True, inline="always")
def _ar2_coef(tt, T, g1, e_mid):
    """Penalty coefficient of frame ``tt``: sum of the spikes' dependence on c_tt
    (``1 - g1 - g2``; ``1 - g1`` and 1 on the last two frames)."""
    if tt == T - 1:
        return 1.0
    if tt == T - 2:
        return 1.0 - g1
    return e_mid


@numba.njit(cache=True, nogil=True, inline="always")
def _ar2_value(j, g2, Y0, H00, H01, cp):
    """Least-squares value of pool ``j`` given the calcium before it (pool 0 clipped at 0)."""
    val = (Y0[j] - g2 * cp[j] * H01[j]) / H00[j] if H00[j] > 0.0 else 0.0
    if j == 0 and val < 0.0:
        val = 0.0
    return val


@numba.njit(cache=True, nogil=True, inline="always")
def _ar2_append(j, i, g2, h, Y0, Y1, H00, H01, H11, l):
    """Append pool ``i`` to pool ``j`` (O(1), via h_{m+n} = h_m h_n + g2 h_{m-1} h_{n-1})."""
    la = l[j]
    a = h[la + 2]
    bb = g2 * h[la + 1]
    a1 = h[la + 1]
    b1 = g2 * h[la]
    Y0[j] += a * Y0[i] + bb * Y1[i]
    Y1[j] += a1 * Y0[i] + b1 * Y1[i]
    H00[j] += a * a * H00[i] + 2.0 * a * bb * H01[i] + bb * bb * H11[i]
    H01[j] += a * a1 * H00[i] + (a * b1 + bb * a1) * H01[i] + bb * b1 * H11[i]
    H11[j] += a1 * a1 * H00[i] + 2.0 * a1 * b1 * H01[i] + b1 * b1 * H11[i]
    l[j] += l[i]


@numba.njit(cache=True, nogil=True)
def _ar2_pool(x, obs, g1, g2, lam, s_min, h, Y0, Y1, H00, H01, H11, v, cp, cpp, t, l):
    """Greedy AR(2) pooling; returns the pool count.

    Pool i starts at frame t[i] with calcium v[i]; inside it c_{t+k} = v h_k + g2 cp h_{k-1}
    where cp[i] (cpp[i]) is the calcium one (two) frame(s) before the pool. Per pool, with
    y' the trace minus the penalty terms: Y0 = sum h_k y'_k, Y1 = sum h_{k-1} y'_k,
    H00 = sum h_k^2, H01 = sum h_k h_{k-1}, H11 = sum h_{k-1}^2 (sums over observed frames);
    a merge (:func:`_ar2_append`) is O(1).
    ``h`` is stored with an offset of 2 (h[k + 2] = h_k, h_{-1} = h_{-2} = 0).
    """
    T = x.shape[0]
    n = 0
    e_mid = 1.0 - g1 - g2
    for k in range(T):
        H00[n] = 1.0 if obs[k] else 0.0
        Y0[n] = (x[k] if obs[k] else 0.0) - lam * _ar2_coef(k, T, g1, e_mid)
        Y1[n] = 0.0
        H01[n] = 0.0
        H11[n] = 0.0
        t[n] = k
        l[n] = 1
        if n == 0:
            cp[n] = 0.0
            cpp[n] = 0.0
        else:
            j = n - 1
            kk = l[j] - 1
            cp[n] = v[j] * h[kk + 2] + g2 * cp[j] * h[kk + 1]
            cpp[n] = v[j] * h[kk + 1] + g2 * cp[j] * h[kk] if kk >= 1 else cp[j]
        v[n] = _ar2_value(n, g2, Y0, H00, H01, cp)
        n += 1
        # merge the last pool backwards while its initial spike is below s_min
        while n > 1:
            i = n - 1
            j = n - 2
            if H00[i] > 0.0 and v[i] - g1 * cp[i] - g2 * cpp[i] >= s_min:
                break
            _ar2_append(j, i, g2, h, Y0, Y1, H00, H01, H11, l)
            n -= 1
            v[j] = _ar2_value(j, g2, Y0, H00, H01, cp)
    return n


@numba.njit(cache=True, nogil=True)
def _ar2_fill(v, t, l, n, g1, g2, c, s):
    c1 = 0.0  # c_{t-1}
    c2 = 0.0  # c_{t-2}
    for i in range(n):
        t0 = t[i]
        for k in range(l[i]):
            if k == 0:
                ct = v[i]
                s[t0] = ct - g1 * c1 - g2 * c2
            else:
                ct = g1 * c1 + g2 * c2
                s[t0 + k] = 0.0
            c[t0 + k] = ct
            c2 = c1
            c1 = ct


@numba.njit(cache=True, nogil=True)
def _ar2_solve(x, obs, g1, g2, lam, s_min, h, bufs):
    Y0, Y1, H00, H01, H11, v, cp, cpp, t, l = bufs
    return _ar2_pool(x, obs, g1, g2, lam, s_min, h, Y0, Y1, H00, H01, H11, v, cp, cpp, t, l)


@numba.njit(cache=True, nogil=True)
def _ar2_greedy(xb, obs, g1, g2, lam, s_min, h, bufs, c, s):
    """Greedy AR(2) solution of ``xb`` (baseline removed, 0 at unobserved frames) at ``lam``:
    writes ``c`` and ``s``; returns the pool count."""
    n = _ar2_solve(xb, obs, g1, g2, lam, s_min, h, bufs)
    _ar2_fill(bufs[5], bufs[8], bufs[9], n, g1, g2, c, s)
    return n


@numba.njit(cache=True, nogil=True)
def _ar2_buffers(T):
    return (np.empty(T), np.empty(T), np.empty(T), np.empty(T), np.empty(T), np.empty(T),
            np.empty(T), np.empty(T), np.empty(T, np.int64), np.empty(T, np.int64))


@numba.njit(cache=True, nogil=True)
def _ar2_workspace(y, g1, g2):
    """Everything the AR(2) kernels allocate: (obs, x, h, bufs, starts, c, dl, db, s)."""
    T = y.shape[0]
    obs, x = _observed(y)
    return (obs, x, _ar2_h(g1, g2, T), _ar2_buffers(T), np.zeros(T, np.bool_),
            np.empty(T), np.empty(T), np.empty(T), np.empty(T))


@numba.njit(cache=True, nogil=True)
def _oasis_ar2_kernel(y, g1, g2, lam, s_min):
    obs, x, h, bufs, starts, c, dl, db, s = _ar2_workspace(y, g1, g2)
    if s_min == 0.0:  # convex: refine the greedy support to the exact optimum
        _ar2_exact_at(x, obs, 0.0, g1, g2, lam, h, bufs, starts, False, c, dl, db, s)
    else:
        _ar2_greedy(x, obs, g1, g2, lam, s_min, h, bufs, c, s)
    return c, s


@numba.njit(cache=True, nogil=True)
def _ar2_linear(x, obs, b, g1, g2, lam, h, bufs, n, c, dl, db):
    """For the current pools: calcium ``c``, and its derivatives ``dl`` = dc/dlam and
    ``db`` = dc/db (pool structure held fixed). Returns the residual sums used by the dual
    update: (rss, sr, sq, sd, srq, sqq, srd, sqd, sdd)."""
    Y0, Y1, H00, H01, H11, v, cp, cpp, t, l = bufs
    T = x.shape[0]
    e_mid = 1.0 - g1 - g2
    # per pool, the derivative of the value: dv = (dY0 - g2 dcp H01) / H00, with
    # dY0/dlam = -sum e_k h_k and dY0/db = -sum_obs h_k
    c1 = c2 = d1 = d2 = q1 = q2 = 0.0
    for i in range(n):
        t0 = t[i]
        sel = 0.0
        sob = 0.0
        for k in range(l[i]):
            sel += _ar2_coef(t0 + k, T, g1, e_mid) * h[k + 2]
            if obs[t0 + k]:
                sob += h[k + 2]
        clipped = H00[i] <= 0.0 or (i == 0 and v[i] <= 0.0)
        for k in range(l[i]):
            if k == 0:
                ct = v[i]
                dt = 0.0 if clipped else (-sel - g2 * d1 * H01[i]) / H00[i]
                qt = 0.0 if clipped else (-sob - g2 * q1 * H01[i]) / H00[i]
            else:
                ct = g1 * c1 + g2 * c2
                dt = g1 * d1 + g2 * d2
                qt = g1 * q1 + g2 * q2
            c[t0 + k] = ct
            dl[t0 + k] = dt
            db[t0 + k] = qt
            c1, c2, d1, d2, q1, q2 = ct, c1, dt, d1, qt, q1
    return _residual_sums(x, obs, b, c, dl, db)


@numba.njit(cache=True, nogil=True)
def _ar2_pool_sums(x, obs, b, g1, g2, h, tp, n):
    """Per-pool sums of the support fit, pools starting at ``tp[:n]``.

    Returns (lp, A, B, C, Y0, Y1, E0, E1, O0, O1): pool lengths; over observed frames
    A = sum h_k^2, B = sum h_k h_{k-1}, C = sum h_{k-1}^2, Y0 = sum h_k (x - b),
    Y1 = sum h_{k-1} (x - b), O0 = sum h_k, O1 = sum h_{k-1}; over all frames
    E0 = sum e_k h_k, E1 = sum e_k h_{k-1} (e_k the penalty coefficients).
    """
    T = x.shape[0]
    e_mid = 1.0 - g1 - g2
    A, B, C, Y0, Y1 = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    E0, E1, O0, O1 = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    lp = np.empty(n, np.int64)
    for i in range(n):
        lp[i] = (tp[i + 1] if i + 1 < n else T) - tp[i]
        for k in range(lp[i]):
            tt = tp[i] + k
            hk = h[k + 2]
            hk1 = h[k + 1]
            coef = _ar2_coef(tt, T, g1, e_mid)
            E0[i] += coef * hk
            E1[i] += coef * hk1
            if obs[tt]:
                xv = x[tt] - b
                A[i] += hk * hk
                B[i] += hk * hk1
                C[i] += hk1 * hk1
                Y0[i] += hk * xv
                Y1[i] += hk1 * xv
                O0[i] += hk
                O1[i] += hk1
    return lp, A, B, C, Y0, Y1, E0, E1, O0, O1


@numba.njit(cache=True, nogil=True)
def _ar2_riccati(g2, lam, h, sums):
    """Backward scalar Riccati recursion over the pools (state: the calcium before a pool).

    Returns (Ap, K, M, ML, MB) (float64 (n,)): the pool value is
    ``v = (M - K cp) / Ap``; ``ML`` and ``MB`` are the derivatives of ``M`` in lam and b.
    """
    lp, A, B, C, Y0, Y1, E0, E1, O0, O1 = sums
    n = lp.shape[0]
    Ap, K, M, ML, MB = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    P = q = qL = qB = 0.0
    for i in range(n - 1, -1, -1):
        alpha = h[lp[i] + 1]          # h_{l-1}
        beta = g2 * h[lp[i]]          # g2 h_{l-2}
        a = A[i] + P * alpha * alpha
        if a < 1e-300:
            a = 1e-300
        k = g2 * B[i] + P * alpha * beta
        m = Y0[i] - lam * E0[i] + q * alpha
        mL = -E0[i] + qL * alpha
        mB = -O0[i] + qB * alpha
        Ap[i], K[i], M[i], ML[i], MB[i] = a, k, m, mL, mB
        P, q, qL, qB = (g2 * g2 * C[i] + P * beta * beta - k * k / a,
                        g2 * (Y1[i] - lam * E1[i]) + q * beta - m * k / a,
                        -g2 * E1[i] + qL * beta - mL * k / a,
                        -g2 * O1[i] + qB * beta - mB * k / a)
    return Ap, K, M, ML, MB


@numba.njit(cache=True, nogil=True)
def _ar2_forward(g2, h, tp, lp, gains, c, dl, db):
    """Forward pass of the support fit: pool values from :func:`_ar2_riccati`'s ``gains``
    (``c_0 >= 0``), writing ``c``, ``dl`` = dc/dlam and ``db`` = dc/db."""
    Ap, K, M, ML, MB = gains
    cp = dcpL = dcpB = 0.0
    for i in range(lp.shape[0]):
        v = (M[i] - K[i] * cp) / Ap[i]
        dvL = (ML[i] - K[i] * dcpL) / Ap[i]
        dvB = (MB[i] - K[i] * dcpB) / Ap[i]
        if i == 0 and v < 0.0:
            v = dvL = dvB = 0.0
        for k in range(lp[i]):
            tt = tp[i] + k
            c[tt] = v * h[k + 2] + g2 * cp * h[k + 1]
            dl[tt] = dvL * h[k + 2] + g2 * dcpL * h[k + 1]
            db[tt] = dvB * h[k + 2] + g2 * dcpB * h[k + 1]
        last = tp[i] + lp[i] - 1
        cp, dcpL, dcpB = c[last], dl[last], db[last]


@numba.njit(cache=True, nogil=True)
def _ar2_support_fit(x, obs, b, g1, g2, lam, h, starts, c, dl, db, s):
    """Exact fit for a given spike support (AR(2)).

    ``starts`` (bool (T,)) marks the frames allowed a spike (frame 0 always is). The pool
    values minimising ``1/2 ||x - b - c||^2 + lam sum(s)`` with the calcium following the AR
    dynamics between spikes are found jointly by dynamic programming over the pools (the
    calcium before a pool is the state, the pool's first value the control: a scalar Riccati
    recursion backwards, then a forward pass), with ``c_0 >= 0``. Also writes ``dl`` = dc/dlam
    and ``db`` = dc/db for this support, and the spikes ``s``. Returns the pool count.
    """
    T = x.shape[0]
    tp = np.empty(T, np.int64)
    n = 0
    for tt in range(T):
        if tt == 0 or starts[tt]:
            tp[n] = tt
            n += 1
    sums = _ar2_pool_sums(x, obs, b, g1, g2, h, tp, n)
    _ar2_forward(g2, h, tp, sums[0], _ar2_riccati(g2, lam, h, sums), c, dl, db)
    for tt in range(T):
        s[tt] = 0.0
    for i in range(n):
        tt = tp[i]
        prev1 = c[tt - 1] if tt >= 1 else 0.0
        prev2 = c[tt - 2] if tt >= 2 else 0.0
        s[tt] = c[tt] - g1 * prev1 - g2 * prev2
    return n


@numba.njit(cache=True, nogil=True)
def _ar2_refine(x, obs, b, g1, g2, lam, h, starts, c, dl, db, s, max_iter):
    """Active-set refinement of an AR(2) spike support to the exact L1 optimum.

    Alternates exact fits on the support (:func:`_ar2_support_fit`) with removing spikes that
    came out negative and adding the frames where the optimality condition fails (the
    gradient ``(K^T r)_t`` of the fit term exceeds ``lam``; ``K^T r`` is a backward AR
    filter of the residual), adding local maxima of each violating stretch. Ends when no
    condition is violated (or after ``max_iter`` passes).
    """
    T = x.shape[0]
    scale = 1e-300
    for tt in range(T):
        if obs[tt]:
            val = abs(x[tt] - b)
            if val > scale:
                scale = val
    tol_s = 1e-10 * scale
    tol_z = 1e-8 * (lam + scale)
    z = np.empty(T)
    for _ in range(max_iter):
        _ar2_support_fit(x, obs, b, g1, g2, lam, h, starts, c, dl, db, s)
        pruned = False
        for tt in range(1, T):
            if starts[tt] and s[tt] < -tol_s:
                starts[tt] = False
                pruned = True
        if pruned:
            continue
        z1 = 0.0
        z2 = 0.0
        for tt in range(T - 1, -1, -1):
            r = (x[tt] - b - c[tt]) if obs[tt] else 0.0
            zt = r + g1 * z1 + g2 * z2
            z[tt] = zt
            z2 = z1
            z1 = zt
        added = False
        thr = lam + tol_z
        for tt in range(1, T):
            if starts[tt] or z[tt] <= thr:
                continue
            if z[tt] >= z[tt - 1] and (tt == T - 1 or z[tt] >= z[tt + 1]):
                starts[tt] = True
                added = True
        if not added:
            return
    _ar2_support_fit(x, obs, b, g1, g2, lam, h, starts, c, dl, db, s)


@numba.njit(cache=True, nogil=True)
def _ar2_exact_at(x, obs, b, g1, g2, lam, h, bufs, starts, warm, c, dl, db, s):
    """Exact L1 fit at (lam, b): greedy pooling for the first support unless ``warm``, then
    the active-set refinement. Returns the residual sums of :func:`_residual_sums`."""
    T = x.shape[0]
    if not warm:
        xb = np.where(obs, x - b, 0.0)
        n = _ar2_solve(xb, obs, g1, g2, lam, 0.0, h, bufs)
        t = bufs[8]
        for tt in range(T):
            starts[tt] = False
        for i in range(n):
            starts[t[i]] = True
    _ar2_refine(x, obs, b, g1, g2, lam, h, starts, c, dl, db, s, 50)
    return _residual_sums(x, obs, b, c, dl, db)


@numba.njit(cache=True, nogil=True)
def _constrained_ar2_kernel(y, g1, g2, sn, optimize_b, b_lower, b_init, max_iter):
    """Noise-constrained AR(2) deconvolution by Newton steps on (lam, b), each point solved
    exactly (greedy support, refined; warm-started from the previous support).
    Returns (c, s, b, lam, rss)."""
    obs, x, h, bufs, starts, c, dl, db, s = _ar2_workspace(y, g1, g2)
    thresh = sn * sn * np.sum(obs)
    b = b_init
    lam = 0.0
    best_lam = 0.0
    best_b = b
    best_err = np.inf
    done = False
    for it in range(max_iter):
        sums = _ar2_exact_at(x, obs, b, g1, g2, lam, h, bufs, starts, it > 0, c, dl, db, s)
        rss = sums[0]
        err = abs(rss - thresh) / thresh
        if not optimize_b:
            if rss >= thresh * (1.0 - _RSS_TOL) and lam == 0.0:
                done = True
                break
            if err < best_err:
                best_lam, best_b, best_err = lam, b, err
            if err <= _RSS_TOL:
                done = True
                break
            dlam, ok = _solve_step(rss, -sums[6], sums[8], thresh)
            dbase = 0.0
        else:
            berr = abs(sums[1]) / (abs(sums[2]) * sn + 1e-300)
            if err + berr < best_err:
                best_lam, best_b, best_err = lam, b, err + berr
            if err <= _RSS_TOL and berr <= 1e-6:
                done = True
                break
            dlam, dbase = _lam_b_step(sums, lam, b, b_lower, thresh)
        if lam + dlam < 0.0:
            dlam = -lam
        if abs(dlam) <= 1e-12 * (lam + 1.0) and abs(dbase) <= 1e-12 * (abs(b) + sn):
            done = True
            break
        lam += dlam
        b += dbase
    if not done:  # out of iterations: finish with the best point met
        lam, b = best_lam, best_b
    rss = _ar2_exact_at(x, obs, b, g1, g2, lam, h, bufs, starts, True, c, dl, db, s)[0]
    return c, s, b, lam, rss


# --------------------------------------------------------------------------------------------
# fixed penalty with an optimised baseline
# --------------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _fixed_b_ar1_kernel(y, g, lam, s_min, b_init, b_lower, max_iter):
    """AR(1) OASIS at fixed ``lam``/``s_min`` with the baseline optimised (mean residual 0).

    Newton steps on b using the exact dependence of c on b for the current pools.
    Returns (c, s, b).
    """
    obs, x = _observed(y)
    gpow = _gpow_table(g, y.shape[0])
    vw, w, u, t, l = _ar1_buffers(y.shape[0])
    b = max(b_init, b_lower)
    for _ in range(max_iter):
        n = _ar1_pool(np.where(obs, x - b, 0.0), obs, g, lam, s_min, gpow, vw, w, u, t, l)
        step, stop = _baseline_step(_ar1_stats(x, obs, b, g, vw, w, u, t, l, n), b, b_lower)
        if stop:
            break
        b += step
    n = _ar1_pool(np.where(obs, x - b, 0.0), obs, g, lam, s_min, gpow, vw, w, u, t, l)
    c, s = _ar1_output(vw, w, t, l, n, g)
    return c, s, b


@numba.njit(cache=True, nogil=True)
def _fixed_b_ar2_kernel(y, g1, g2, lam, s_min, b_init, b_lower, max_iter):
    """AR(2) counterpart of :func:`_fixed_b_ar1_kernel`. Returns (c, s, b)."""
    obs, x, h, bufs, starts, c, dl, db, s = _ar2_workspace(y, g1, g2)
    b = max(b_init, b_lower)
    exact = s_min == 0.0
    for it in range(max_iter):
        if exact:
            sums = _ar2_exact_at(x, obs, b, g1, g2, lam, h, bufs, starts, it > 0, c, dl, db, s)
        else:
            n = _ar2_solve(np.where(obs, x - b, 0.0), obs, g1, g2, lam, s_min, h, bufs)
            sums = _ar2_linear(x, obs, b, g1, g2, lam, h, bufs, n, c, dl, db)
        step, stop = _baseline_step(sums, b, b_lower)
        if stop:
            break
        b += step
    if exact:
        _ar2_exact_at(x, obs, b, g1, g2, lam, h, bufs, starts, True, c, dl, db, s)
    else:
        _ar2_greedy(np.where(obs, x - b, 0.0), obs, g1, g2, lam, s_min, h, bufs, c, s)
    return c, s, b


# --------------------------------------------------------------------------------------------
# public wrappers
# --------------------------------------------------------------------------------------------
def _as_trace(y) -> np.ndarray:
    y = np.ascontiguousarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"expected a 1-D trace, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("the trace is empty")
    return y


def _check_g1(g: float) -> float:
    g = float(g)
    if not (0.0 <= g < 1.0):
        raise ValueError(f"g = {g} is not allowed; an AR(1) coefficient must be in [0, 1)")
    return g


def _check_g2(g1: float, g2: float) -> tuple[float, float]:
    g1, g2 = float(g1), float(g2)
    d = dominant_root(g1, g2)
    if not (0.0 <= d < 1.0) or g1 + g2 >= 1.0:
        raise ValueError(f"g = ({g1}, {g2}) is not a stable AR(2) model (dominant root {d:.4g}); "
                         "the roots of z^2 - g1 z - g2 must lie in [0, 1)")
    return g1, g2


def dominant_root(g1: float, g2: float) -> float:
    """Largest real root of ``z^2 - g1 z - g2`` (the decay factor per frame of AR(2))."""
    disc = g1 * g1 + 4.0 * g2
    if disc < 0.0:
        return float(math.sqrt(-g2))  # complex pair: modulus
    return float((g1 + math.sqrt(disc)) / 2.0)


def ar2_kernel(g1: float, g2: float, T: int) -> np.ndarray:
    """AR(2) impulse response ``h`` (float64, shape (T,), ``h[0] = 1``)."""
    return _ar2_h(float(g1), float(g2), int(T))[2:T + 2].copy()


def oasis_ar1(y, g: float, lam: float = 0.0, s_min: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """AR(1) OASIS for a fixed penalty.

    Solves ``min 1/2 ||c - y||^2 + lam ||s||_1`` s.t. ``s_t = c_t - g c_{t-1}`` is 0 or
    ``>= s_min`` (``c_0 >= 0``; ``s_0 = c_0``).

    Parameters
    ----------
    y : array (T,)
        Trace with the baseline removed (any units); NaN samples are skipped.
    g : float
        AR(1) coefficient in [0, 1) (decay per frame).
    lam : float
        Sparsity penalty (units of y).
    s_min : float
        Minimal spike size (units of y); 0 for the plain L1 problem.

    Returns
    -------
    c, s : float64 arrays (T,)
    """
    return _oasis_ar1_kernel(_as_trace(y), _check_g1(g), float(lam), float(s_min))


def oasis_ar2(y, g1: float, g2: float, lam: float = 0.0,
              s_min: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """AR(2) OASIS for a fixed penalty (``s_t = c_t - g1 c_{t-1} - g2 c_{t-2}``).

    Same arguments and outputs as :func:`oasis_ar1`, with the AR(2) coefficients ``g1, g2``.
    Exact for ``s_min = 0``; greedy pooling for ``s_min > 0``.
    """
    g1, g2 = _check_g2(g1, g2)
    return _oasis_ar2_kernel(_as_trace(y), g1, g2, float(lam), float(s_min))


def _baseline_bounds(y: np.ndarray, b_nonneg: bool) -> tuple[float, float]:
    finite = y[np.isfinite(y)]
    lower = 0.0 if b_nonneg else float(finite.min())
    b0 = float(np.percentile(finite, 15))
    return lower, max(b0, lower)


def oasis_with_baseline(y, g, lam: float = 0.0, s_min: float = 0.0, *, b_init: float | None = None,
                        b_nonneg: bool = False, max_iter: int = 30):
    """Fixed-penalty OASIS (AR(1) or AR(2) by ``len(g)``) with the baseline optimised.

    Minimises ``1/2 ||y - b - c||^2 + lam ||s||_1`` (spikes 0 or ``>= s_min``) over c and b;
    ``b >= 0`` when ``b_nonneg`` else ``b >= min(y)``. ``b_init`` defaults to the mean of the
    samples below the median. Returns (c, s, b) (float64 arrays, float).
    """
    y = _as_trace(y)
    finite = y[np.isfinite(y)]
    lower = 0.0 if b_nonneg else float(finite.min())
    if b_init is None:
        med = np.median(finite)
        b_init = float(finite[finite <= med].mean())
    g = tuple(float(v) for v in np.atleast_1d(g))
    if len(g) == 1:
        c, s, b = _fixed_b_ar1_kernel(y, _check_g1(g[0]), float(lam), float(s_min), float(b_init),
                                      lower, int(max_iter))
    else:
        g1, g2 = _check_g2(*g)
        c, s, b = _fixed_b_ar2_kernel(y, g1, g2, float(lam), float(s_min), float(b_init), lower,
                                      int(max_iter))
    return c, s, float(b)


def constrained_oasis_ar1(y, g: float, sn: float, *, optimize_b: bool = False,
                          b_nonneg: bool = True, max_iter: int = 100):
    """Noise-constrained AR(1) deconvolution: ``min ||s||_1`` s.t. ``||c + b - y||^2 = sn^2 T``.

    Parameters
    ----------
    y : array (T,)
        Trace (NaN = dropped sample). Without ``optimize_b`` the baseline must already be
        removed (``b = 0``).
    g : float
        AR(1) coefficient in [0, 1).
    sn : float
        Noise standard deviation (units of y), > 0.
    optimize_b : bool
        Also optimise the baseline ``b`` (mean residual 0).
    b_nonneg : bool
        Keep ``b >= 0``; otherwise ``b >= min(y)``.
    max_iter : int
        Cap on the dual updates (each is O(T)).

    Returns
    -------
    c, s : float64 arrays (T,)
    b : float
        Baseline.
    lam : float
        Penalty of the equivalent penalised problem (dual variable).
    """
    y = _as_trace(y)
    lower, b0 = _baseline_bounds(y, b_nonneg) if optimize_b else (0.0, 0.0)
    c, s, b, lam, _ = _constrained_ar1_kernel(y, _check_g1(g), float(sn), bool(optimize_b), lower,
                                              b0, int(max_iter))
    return c, s, float(b), float(lam)


def constrained_oasis_ar2(y, g1: float, g2: float, sn: float, *, optimize_b: bool = False,
                          b_nonneg: bool = True, max_iter: int = 100):
    """Noise-constrained AR(2) deconvolution (see :func:`constrained_oasis_ar1`)."""
    y = _as_trace(y)
    g1, g2 = _check_g2(g1, g2)
    lower, b0 = _baseline_bounds(y, b_nonneg) if optimize_b else (0.0, 0.0)
    c, s, b, lam, _ = _constrained_ar2_kernel(y, g1, g2, float(sn), bool(optimize_b), lower, b0,
                                              int(max_iter))
    return c, s, float(b), float(lam)
