"""califlow.deconv: agreement with the reference OASIS, recovery of known spikes, options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from califlow.deconv import (
    constrained_oasis_ar1,
    constrained_oasis_ar2,
    deconvolve,
    deconvolve_batch,
    deconvolve_cnmfe,
    deconvolve_cnmfe_batch,
    estimate_time_constant,
    get_noise,
    impulse_response,
    oasis_ar1,
    oasis_ar2,
)
from califlow.errors import InputError


def simulate_trace(T=3000, g=(0.95,), sn=0.3, rate=0.02, b=1.0, seed=0, amp=(0.5, 1.5)):
    """AR(p) calcium from Bernoulli spikes with uniform amplitudes plus white noise."""
    rng = np.random.default_rng(seed)
    s = (rng.random(T) < rate) * rng.uniform(amp[0], amp[1], T)
    h = impulse_response(g, T)
    c = np.convolve(s, h)[:T]
    y = b + c + sn * rng.standard_normal(T)
    return y, c, s


def binned_corr(a, b, width=5):
    n = len(a) // width * width
    return float(np.corrcoef(a[:n].reshape(-1, width).sum(1), b[:n].reshape(-1, width).sum(1))[0, 1])


def rel_diff(a, ref):
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


# ------------------------------------------------------------------ reference OASIS agreement
@pytest.mark.parametrize("lam,s_min", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.4), (0.3, 0.2)])
def test_oasis_ar1_matches_reference(lam, s_min):
    om = pytest.importorskip("oasis.oasis_methods")
    y, _, _ = simulate_trace(seed=1, b=0.0)
    c, s = oasis_ar1(y, 0.95, lam, s_min)
    c_ref, s_ref = om.oasisAR1(y, 0.95, lam, s_min)
    assert rel_diff(c, c_ref) < 1e-10
    assert rel_diff(s, s_ref) < 1e-9


def test_constrained_ar1_matches_reference_given_g_sn():
    om = pytest.importorskip("oasis.oasis_methods")
    for seed in range(3):
        y, _, _ = simulate_trace(T=5000, seed=seed, b=0.0)
        c, s, b, lam = constrained_oasis_ar1(y, 0.95, 0.3)
        ref = om.constrained_oasisAR1(y, 0.95, 0.3)
        assert rel_diff(c, ref[0]) <= 1e-5
        assert abs(lam - ref[4]) <= 1e-4 * ref[4]
        # the solution meets the noise constraint
        assert abs(np.sum((y - c) ** 2) / (0.09 * y.size) - 1) < 2e-4


def test_constrained_ar1_with_baseline_matches_reference():
    om = pytest.importorskip("oasis.oasis_methods")
    y, _, _ = simulate_trace(T=5000, seed=3, b=2.0)
    c, s, b, lam = constrained_oasis_ar1(y, 0.95, 0.3, optimize_b=True)
    ref = om.constrained_oasisAR1(y, 0.95, 0.3, optimize_b=True)
    # the reference stops after 5 baseline updates; ours iterates to the constraint
    assert abs(b - ref[2]) < 1e-3
    assert rel_diff(c, ref[0]) < 1e-2
    assert abs(np.sum((y - b - c) ** 2) / (0.09 * y.size) - 1) < 2e-4
    assert abs(np.mean(y - b - c)) < 1e-6  # the baseline is the mean residual


def test_oasis_ar2_greedy_matches_reference_and_l1_is_exact():
    om = pytest.importorskip("oasis.oasis_methods")
    g1, g2 = 1.7, -0.712
    y, _, _ = simulate_trace(g=(g1, g2), seed=4, b=0.0)
    # with a minimal spike size both use the greedy AR(2) pooling
    c, s = oasis_ar2(y, g1, g2, 0.0, 0.3)
    c_ref, _ = om.oasisAR2(y, g1, g2, 0.0, 0.3)
    assert rel_diff(c, c_ref) < 1e-2  # the start differs (initial-state handling), then decays
    assert rel_diff(c[200:], c_ref[200:]) < 1e-4

    def objective(cc, lam):
        ss = cc - g1 * np.r_[0, cc[:-1]] - g2 * np.r_[0, 0, cc[:-2]]
        return 0.5 * np.sum((cc - y) ** 2) + lam * ss.sum(), ss

    for lam in (0.0, 1.0):
        c, _ = oasis_ar2(y, g1, g2, lam)
        f, ss = objective(c, lam)
        f_ref, _ = objective(om.oasisAR2(y, g1, g2, lam)[0], lam)
        assert ss.min() > -1e-9
        assert f <= f_ref + 1e-9
        # optimality (KKT): the gradient K^T r never exceeds lam, and equals it at spikes
        r = y - c
        z = np.zeros_like(r)
        z1 = z2 = 0.0
        for t in range(len(r) - 1, -1, -1):
            z[t] = r[t] + g1 * z1 + g2 * z2
            z2, z1 = z1, z[t]
        assert z[1:].max() <= lam + 1e-6
        spikes = np.flatnonzero(ss[1:] > 1e-6) + 1
        np.testing.assert_allclose(z[spikes], lam, atol=1e-5)
    # the noise-constrained AR(2) solution sits on the constraint, with and without baseline
    c, s, b, lam = constrained_oasis_ar2(y, g1, g2, 0.3)
    assert b == 0.0 and lam > 0 and s.min() > -1e-9
    assert abs(np.sum((y - c) ** 2) / (0.09 * y.size) - 1) < 2e-4
    c, s, b, lam = constrained_oasis_ar2(y + 2.0, g1, g2, 0.3, optimize_b=True)
    assert abs(np.sum((y + 2.0 - b - c) ** 2) / (0.09 * y.size) - 1) < 2e-4
    assert abs(np.mean(y + 2.0 - b - c)) < 1e-6


# ------------------------------------------------------------------ estimation
def test_noise_and_time_constant_match_reference():
    of = pytest.importorskip("oasis.functions")
    y, _, _ = simulate_trace(T=5000, seed=5)
    for method in ("mean", "median", "logmexp"):
        assert get_noise(y, (0.25, 0.5), method) == pytest.approx(of.GetSn(y, method=method), rel=1e-10)
    g = estimate_time_constant(y, 1, 0.3, 5, 0.96)
    assert g[0] == pytest.approx(of.estimate_time_constant(y, 1, 0.3, 5, 0.96)[0], rel=1e-10)
    y2, _, _ = simulate_trace(T=5000, g=(1.7, -0.712), seed=6)
    g2 = estimate_time_constant(y2, 2, 0.3, 5, 0.96)
    np.testing.assert_allclose(g2, of.estimate_time_constant(y2, 2, 0.3, 5, 0.96), rtol=1e-8)


def test_noise_estimate_is_unbiased_and_batched():
    rng = np.random.default_rng(7)
    Y = 0.5 * rng.standard_normal((50, 4000))
    sn = get_noise(Y, (0.25, 0.5), "mean")
    assert sn.shape == (50,)
    assert abs(sn.mean() - 0.5) < 0.01
    assert get_noise(Y[3]) == pytest.approx(get_noise(Y)[3])


# ------------------------------------------------------------------ recovery of known spikes
@pytest.mark.parametrize("sn,min_corr", [(0.1, 0.95), (0.3, 0.8), (0.5, 0.6)])
def test_recovers_known_spikes_ar1(sn, min_corr):
    y, c, s = simulate_trace(T=6000, sn=sn, seed=8)
    res = deconvolve(y, p=1)
    assert binned_corr(res.s, s) > min_corr
    assert np.corrcoef(res.calcium(), c)[0, 1] > min_corr
    # CaImAn's defaults (lags 5, fudge 0.96) shrink g by ~4 %
    assert abs(res.g[0] - 0.95 * 0.96) < 0.02


@pytest.mark.parametrize("sn,min_corr", [(0.1, 0.9), (0.3, 0.7)])
def test_recovers_known_spikes_ar2(sn, min_corr):
    y, c, s = simulate_trace(T=6000, g=(1.7, -0.712), sn=sn, seed=9)
    res = deconvolve(y, p=2)
    assert binned_corr(res.s, s) > min_corr
    assert np.corrcoef(res.calcium(), c)[0, 1] > 0.97


def test_optimize_g_removes_the_fudge_bias():
    y, c, s = simulate_trace(T=6000, sn=0.3, seed=10)
    plain = deconvolve(y, p=1)
    refit = deconvolve(y, p=1, optimize_g=10)
    assert abs(refit.g[0] - 0.95) < abs(plain.g[0] - 0.95)
    assert abs(refit.g[0] - 0.95) < 0.01
    assert binned_corr(refit.s, s) >= binned_corr(plain.s, s) - 0.01


def test_model_conventions():
    y, c, s = simulate_trace(T=2000, seed=11, b=3.0)
    res = deconvolve(y, p=1, g=[0.95], sn=0.3)
    assert res.s[0] == 0.0
    assert res.c.dtype == np.float32 and res.s.dtype == np.float32
    # s follows from the calcium through the AR model
    full = res.calcium().astype(np.float64)
    s_back = full[1:] - 0.95 * full[:-1]
    np.testing.assert_allclose(s_back, res.s[1:], atol=1e-4)
    assert res.s.min() >= 0
    assert abs(res.b - 3.0) < 0.3
    resid = y - res.calcium(baseline=True)
    assert abs(np.sum(resid.astype(np.float64) ** 2) / (0.09 * y.size) - 1) < 1e-3


# ------------------------------------------------------------------ s_min semantics
def test_s_min_semantics():
    y, c, s = simulate_trace(T=4000, seed=12, b=0.0)
    g, sn = [0.95], 0.3
    pos = deconvolve(y, g=g, sn=sn, bl=0.0, s_min=0.4)
    nz = pos.s[1:][pos.s[1:] > 0]
    assert nz.min() >= 0.4 - 1e-6 and pos.s_min == 0.4
    neg = deconvolve(y, g=g, sn=sn, bl=0.0, s_min=-2)
    assert neg.s_min == pytest.approx(2 * sn * math.sqrt(1 - 0.95))
    assert neg.s[1:][neg.s[1:] > 0].min() >= neg.s_min - 1e-6
    auto = deconvolve(y, g=g, sn=sn, bl=0.0, s_min=0)
    assert auto.s_min > 0
    rss = np.sum((y - auto.calcium()) ** 2)
    assert rss <= sn ** 2 * y.size * (1 + 1e-5)
    l1 = deconvolve(y, g=g, sn=sn, bl=0.0)
    assert l1.lam > 0 and l1.s_min is None
    # L0 fits are sparser than L1
    assert np.count_nonzero(auto.s) < np.count_nonzero(l1.s)


def test_given_parameters_are_used():
    y, c, s = simulate_trace(T=3000, seed=13, b=2.0)
    res = deconvolve(y, g=[0.9], sn=0.25, bl=1.5, c1=0.5)
    assert res.g == (0.9,) and res.sn == 0.25 and res.b == 1.5 and res.c1 == 0.5


def test_p0_clips():
    y = np.array([-1.0, 2.0, 0.5] * 10)
    res = deconvolve(y, p=0, sn=1.0)
    np.testing.assert_array_equal(res.c, np.maximum(y, 0).astype(np.float32))


# ------------------------------------------------------------------ NaN (dropped frames)
def test_nan_samples_are_skipped_not_propagated():
    y, c, s = simulate_trace(T=4000, sn=0.2, seed=14)
    y_nan = y.copy()
    drop = np.random.default_rng(0).choice(4000, 200, replace=False)
    y_nan[drop] = np.nan
    res = deconvolve(y_nan, p=1)
    assert np.isfinite(res.c).all() and np.isfinite(res.s).all()
    ref = deconvolve(y, p=1, g=res.g, sn=res.sn)
    assert np.corrcoef(res.calcium(), ref.calcium())[0, 1] > 0.99
    assert binned_corr(res.s, s) > 0.85
    res2 = deconvolve(y_nan, p=2)
    assert np.isfinite(res2.c).all() and np.corrcoef(res2.calcium(), c)[0, 1] > 0.95


# ------------------------------------------------------------------ CNMF-E options
def test_cnmfe_foopsi_smin_in_noise_units():
    # CaliAli's final pass: a trace in noise units, ar2 foopsi with smin -5 (5 sigma)
    y, c, s = simulate_trace(T=6000, g=(1.7, -0.712), sn=1.0, seed=15, amp=(8, 15), rate=0.01, b=0.0)
    res = deconvolve_cnmfe(y, {"type": "ar2", "method": "foopsi", "smin": -5, "optimize_pars": True},
                           sn=1.0)
    assert res.s_min == pytest.approx(5.0)
    assert res.s[res.s > 0].min() >= 5.0 - 1e-6
    assert binned_corr(res.s, s) > 0.9
    # CaliAli's in-loop pass: ar1 foopsi smin -5 with baseline and g refit
    y, c, s = simulate_trace(T=6000, g=(0.95,), sn=1.0, seed=15, amp=(8, 15), rate=0.01, b=3.0)
    res1 = deconvolve_cnmfe(y, {"type": "ar1", "method": "foopsi", "smin": -5, "optimize_pars": True,
                                "optimize_b": True, "max_tau": 100})
    assert binned_corr(res1.s, s) > 0.9
    assert abs(res1.b - 3.0) < 0.2 and abs(res1.g[0] - 0.95) < 0.01


def test_cnmfe_max_tau_caps_decay():
    y, c, s = simulate_trace(T=4000, g=(0.99,), sn=0.2, seed=16)
    res = deconvolve_cnmfe(y, {"type": "ar1", "method": "constrained", "optimize_pars": True,
                               "max_tau": 20})
    assert res.g[0] <= math.exp(-1 / 20) + 1e-9


def test_cnmfe_methods_run_and_differ():
    y, c, s = simulate_trace(T=3000, sn=0.3, seed=17)
    out = {m: deconvolve_cnmfe(y, {"type": "ar1", "method": m}) for m in
           ("foopsi", "constrained", "thresholded")}
    for res in out.values():
        assert np.corrcoef(res.calcium(), c)[0, 1] > 0.9
    assert out["constrained"].lam > 0 and out["thresholded"].lam == 0


# ------------------------------------------------------------------ batches
def test_batch_matches_single_and_reports_bad_rows():
    rows = [simulate_trace(T=2000, seed=20 + k)[0] for k in range(6)]
    Y = np.stack(rows + [np.full(2000, 5.0), np.full(2000, np.nan)])
    br = deconvolve_batch(Y, p=1, n_threads=2)
    assert br.ok.tolist() == [True] * 6 + [False, False]
    assert set(br.errors) == {6, 7}
    single = deconvolve(rows[2], p=1)
    np.testing.assert_allclose(br.C[2], single.calcium(), rtol=1e-5, atol=1e-5)
    assert br.g[2, 0] == pytest.approx(single.g[0])
    assert not br.C[6].any()
    opts = {"type": "ar1", "method": "foopsi", "smin": -5, "optimize_pars": True, "max_tau": 100}
    bc = deconvolve_cnmfe_batch(np.stack(rows), opts)
    one = deconvolve_cnmfe(rows[1], opts)
    np.testing.assert_allclose(bc.C[1], one.calcium(), rtol=1e-5, atol=1e-5)


def test_deterministic():
    y, _, _ = simulate_trace(T=3000, seed=21)
    a = deconvolve(y, p=2, optimize_g=5)
    b = deconvolve(y, p=2, optimize_g=5)
    np.testing.assert_array_equal(a.c, b.c)
    assert a.g == b.g


# ------------------------------------------------------------------ bad input
def test_bad_inputs_are_named():
    y, _, _ = simulate_trace(T=500, seed=22)
    with pytest.raises(InputError, match="p = 3"):
        deconvolve(y, p=3)
    with pytest.raises(InputError, match="AR\\(1\\) coefficient"):
        deconvolve(y, g=[1.2])
    with pytest.raises(InputError, match="p = 2 needs 2"):
        deconvolve(y, p=2, g=[0.9])
    with pytest.raises(InputError, match="stable AR\\(2\\)"):
        deconvolve(y, p=2, g=[1.9, 0.1])
    bad = y.copy()
    bad[17] = np.inf
    with pytest.raises(InputError, match="frame 17"):
        deconvolve(bad)
    with pytest.raises(InputError, match="constant"):
        deconvolve(np.ones(500))
    with pytest.raises(InputError, match="finite sample"):
        deconvolve(np.full(500, np.nan))
    with pytest.raises(InputError, match="type 'ar3'"):
        deconvolve_cnmfe(y, {"type": "ar3"})
    with pytest.raises(ValueError, match="noise_method"):
        get_noise(y, method="max")


# ------------------------------------------------------------------ cvxpy backend
@pytest.mark.parametrize("bl", [1.0, None])
def test_cvxpy_solves_the_same_problem_as_oasis_ar1(bl):
    pytest.importorskip("cvxpy")
    y, _, _ = simulate_trace(T=800, sn=0.3, seed=30, b=1.0)
    cvx = deconvolve(y, g=[0.95], sn=0.3, bl=bl, method="cvxpy", solvers=("ECOS", "SCS"))
    oas = deconvolve(y, g=[0.95], sn=0.3, bl=bl, method="oasis")
    assert rel_diff(cvx.calcium(), oas.calcium()) < 1e-4
    assert cvx.b == pytest.approx(oas.b, abs=1e-5)
    assert cvx.lam == pytest.approx(oas.lam, rel=1e-3)


@pytest.mark.parametrize("bl", [1.0, None])
def test_cvxpy_solves_the_same_problem_as_oasis_ar2(bl):
    pytest.importorskip("cvxpy")
    y, c, _ = simulate_trace(T=800, g=(1.7, -0.712), sn=0.2, seed=31, b=1.0)
    cvx = deconvolve(y, p=2, g=[1.7, -0.712], sn=0.2, bl=bl, method="cvxpy")
    oas = deconvolve(y, p=2, g=[1.7, -0.712], sn=0.2, bl=bl)
    assert rel_diff(cvx.calcium(), oas.calcium()) < 1e-4
    assert cvx.b == pytest.approx(oas.b, abs=1e-5)
    assert cvx.lam == pytest.approx(oas.lam, rel=1e-3)


def test_cvxpy_fallback_and_bad_solver(monkeypatch):
    pytest.importorskip("cvxpy")
    from califlow.errors import ConfigError

    y, _, _ = simulate_trace(T=300, seed=32)
    res = deconvolve(y, g=[0.95], sn=0.3, method="cvxpy", solvers=("CVXOPT", "SCS"))
    assert np.isfinite(res.c).all()
    with pytest.raises(ConfigError, match="solvers"):
        deconvolve(y, g=[0.95], sn=0.3, method="cvxpy", solvers=("GUROBI",))
    import builtins

    real_import = builtins.__import__

    def no_cvxpy(name, *args, **kwargs):
        if name == "cvxpy":
            raise ImportError("no cvxpy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cvxpy)
    with pytest.raises(ConfigError, match="pip install 'califlow\\[cvxpy\\]'"):
        deconvolve(y, g=[0.95], sn=0.3, method="cvxpy")


def _event_segments(roots, n_events=10, length=60, noise=0.01, seed=0):
    """Events that are sums of exponentials with the given roots (random amplitudes) plus noise."""
    rng = np.random.default_rng(seed)
    k = np.arange(length)
    segs = np.zeros((n_events, length))
    for j in range(n_events):
        for r in roots:
            segs[j] += rng.uniform(0.5, 2.0) * (1 if r == roots[0] else -1) * r ** k
    segs += noise * rng.standard_normal(segs.shape)
    return segs, np.ones(segs.shape, bool)


def test_numba_refits_recover_true_roots_and_match_scipy():
    from scipy import optimize

    from califlow.deconv.foopsi import _bounded_brent_root, _event_rss, _nelder_mead_roots, _roots_cost

    # AR(2): true roots (0.95, 0.5); Nelder-Mead from (0.9, 0.3)
    segs, mask = _event_segments((0.95, 0.5))
    d, r = _nelder_mead_roots(segs, mask, False, 0.9, 0.3, 0.99, 1e-6, 1e-10, 400)
    assert abs(d - 0.95) < 2e-3 and abs(r - 0.5) < 3e-2
    ref = optimize.minimize(lambda v: _roots_cost(np.asarray(v, float), segs, mask, False, 0.99), [0.9, 0.3],
                            method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 400})
    assert np.allclose([d, r], ref.x, atol=1e-5)
    # AR(1): true root 0.9; bounded Brent on [0.01, 0.99]
    segs1, mask1 = _event_segments((0.9,), seed=1)
    root = _bounded_brent_root(segs1, mask1, True, 0.01, 0.99, 1e-6, 500)
    assert abs(root - 0.9) < 2e-3
    ref1 = optimize.minimize_scalar(lambda v: _event_rss(v, 0.0, 1, segs1, mask1, True), bounds=(0.01, 0.99),
                                    method="bounded", options={"xatol": 1e-6})
    assert abs(root - ref1.x) < 1e-6


def test_cnmfe_batch_takes_one_ar_model_per_row():
    rng = np.random.default_rng(3)
    Y = np.stack([np.convolve(rng.random(400) < 0.03, 0.9 ** np.arange(60))[:400] for _ in range(3)])
    Y = (Y + 0.1 * rng.standard_normal(Y.shape)).astype(np.float32)
    g = np.array([[0.9], [0.8], [0.95]])
    opts = {"type": "ar1", "method": "foopsi", "smin": -3, "optimize_pars": False}
    batch = deconvolve_cnmfe_batch(Y, dict(opts, pars=g), n_threads=2)
    for k in range(3):
        one = deconvolve_cnmfe(Y[k], dict(opts, pars=tuple(g[k])))
        assert np.allclose(batch.C[k], one.calcium(), atol=1e-5)
        assert batch.g[k, 0] == pytest.approx(g[k, 0])
