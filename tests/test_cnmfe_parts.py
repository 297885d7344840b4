"""Unit tests of the CNMF-E parts against known answers (small synthetic arrays)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from califlow.cnmfe.background import RingOperator, fit_ring, residual_frames, ring_offsets, ring_radius_ds
from califlow.cnmfe.data import Decimation, InMemorySource, make_batches, time_bins
from califlow.cnmfe.initialize import centred_pixels, init_seed
from califlow.cnmfe.merge import merge_components, remove_false_positives
from califlow.cnmfe.model import Model, footprint_peaks, normalize_footprints
from califlow.cnmfe.options import options_from_config
from califlow.cnmfe.patches import patch_grid
from califlow.cnmfe.seeds import find_seeds, local_maxima
from califlow.cnmfe.spatial import dilate_columns, hals_footprints, search_support
from califlow.cnmfe.temporal import hals_traces, overlap_groups

H, W = 40, 48


def _gauss(cy, cx, s=2.0, shape=(H, W)):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    a = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)).astype(np.float32)
    a[a < 0.05] = 0
    return a


def _traces(K, T, rng, rate=0.03, tau=8.0):
    s = (rng.random((K, T)) < rate) * rng.uniform(3, 8, (K, T))
    c = np.zeros((K, T), np.float32)
    g = np.exp(-1 / tau)
    for t in range(1, T):
        c[:, t] = g * c[:, t - 1] + s[:, t]
    return c, s.astype(np.float32)


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


# --- seeds ---------------------------------------------------------------------------------
def test_seeds_are_thresholded_local_maxima_brightest_first():
    cn = np.zeros((30, 30), np.float32)
    pnr = np.zeros((30, 30), np.float32)
    for (y, x, c, p) in [(5, 5, 0.9, 20), (20, 8, 0.5, 10), (15, 25, 0.05, 30), (25, 25, 0.8, 4)]:
        cn += c * _gauss(y, x, 1.5, (30, 30))
        pnr += p * _gauss(y, x, 1.5, (30, 30))
    seeds, score = find_seeds(cn, pnr, min_corr=0.1, min_pnr=6, radius=1.5)
    # (15,25) fails min_corr, (25,25) fails min_pnr
    assert seeds.tolist() == [[5, 5], [20, 8]]
    assert score[0] > score[1]
    mask = np.ones((30, 30), bool)
    mask[5, 5] = False
    seeds, _ = find_seeds(cn, pnr, min_corr=0.1, min_pnr=6, radius=1.5, mask=mask)
    assert [5, 5] not in seeds.tolist()


def test_local_maxima_keeps_one_pixel_per_plateau():
    img = np.zeros((10, 10))
    img[3:5, 3:5] = 1.0
    assert local_maxima(img, 1.5).sum() == 1


# --- patches -------------------------------------------------------------------------------
def test_patch_grid_tiles_without_enlargement():
    patches = patch_grid((150, 100), (64, 64), 32)
    assert len(patches) == 3 * 2
    cover = np.zeros((150, 100), int)
    for p in patches:
        y0, y1, x0, x1 = p.core
        assert y1 - y0 <= 64 and x1 - x0 <= 64
        cover[y0:y1, x0:x1] += 1
        b = p.block
        assert b[0] == max(0, y0 - 32) and b[1] == min(150, y1 + 32)
        assert b[2] == max(0, x0 - 32) and b[3] == min(100, x1 + 32)
    assert (cover == 1).all()
    assert len(patch_grid((50, 60), (64, 64), 32)) == 1  # one patch when the field is smaller


def test_batches_follow_sessions_or_batch_size():
    sessions = [{"start": 0, "stop": 100}, {"start": 100, "stop": 250}]
    assert make_batches(sessions, 250, 0) == [(0, 100), (100, 250)]
    assert make_batches(sessions, 240, 100) == [(0, 100), (100, 240)]  # short remainder joins
    assert make_batches(sessions, 250, 100) == [(0, 100), (100, 200), (200, 250)]
    assert make_batches(sessions, 250, 80) == [(0, 80), (80, 160), (160, 250)]


# --- sources -------------------------------------------------------------------------------
def test_source_products_match_dense_algebra():
    rng = np.random.default_rng(0)
    T = 120
    Y = rng.standard_normal((T, H, W)).astype(np.float32)
    src = InMemorySource([Y[:50], Y[50:]], [(0, 50), (50, T)])
    G = sp.random(H * W, 5, density=0.1, random_state=1, format="csc", dtype=np.float32)
    Yb = Y[50:].reshape(70, -1)
    np.testing.assert_allclose(src.project(1, G), (G.T @ Yb.T), rtol=1e-4, atol=1e-3)
    C = rng.random((5, 70)).astype(np.float32)
    pattern = (G != 0).astype(np.float32)
    ref = (Yb.T @ C.T) * pattern.toarray()
    np.testing.assert_allclose(src.correlate(1, C, pattern).toarray(), ref, rtol=1e-4, atol=1e-3)
    dec = Decimation((H, W), 2)
    summ = src.summary(1, dec, 7)
    bins = time_bins(70, 7)
    ds = np.asarray(dec.D @ Yb.T)
    ref = np.stack([ds[:, bins == i].mean(axis=1) for i in range(7)], axis=1)
    np.testing.assert_allclose(summ.Yds, ref, atol=1e-5)
    np.testing.assert_allclose(summ.mean, Yb.mean(axis=0), atol=1e-5)
    # white noise of unit variance: rms of first differences / sqrt 2 is about 1
    assert abs(float(np.median(summ.sn)) - 1.0) < 0.1


# --- ring background -----------------------------------------------------------------------
def test_ring_offsets_lie_on_the_ring():
    off = ring_offsets(4)
    d = np.hypot(off[:, 0], off[:, 1])
    assert (d > 4).all() and (d <= 5).all() and len(off) > 20
    assert ring_radius_ds(15, 2) == 8  # MATLAB rounding: 7.5 -> 8


def test_ring_model_predicts_a_smooth_background_from_the_ring():
    rng = np.random.default_rng(1)
    h, w, n = 24, 24, 400
    yy, xx = np.mgrid[0:h, 0:w]
    # three broad sources with independent slow time courses
    maps = [np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 10.0 ** 2)) for cy, cx in [(4, 4), (20, 10), (8, 20)]]
    courses = np.cumsum(rng.standard_normal((3, n)), axis=1)
    X = sum(m.ravel()[:, None] * c[None] for m, c in zip(maps, courses))
    X = X + 0.05 * rng.standard_normal(X.shape)
    X = (X - X.mean(axis=1, keepdims=True)).astype(np.float32)
    Wr = fit_ring(X, (h, w), 3, ridge=1e-3)
    pred = Wr @ X
    inner = ((yy > 4) & (yy < h - 5) & (xx > 4) & (xx < w - 5)).ravel()
    r2 = 1 - ((X - pred)[inner] ** 2).sum() / (X[inner] ** 2).sum()
    assert r2 > 0.95
    # W only connects pixels on each other's ring
    rows, cols = Wr.nonzero()
    d = np.hypot(rows // w - cols // w, rows % w - cols % w)
    assert (d > 3).all() and (d <= 4).all()


def test_ring_operator_transpose():
    rng = np.random.default_rng(2)
    dec = Decimation((10, 12), 2)
    Wr = sp.random(dec.n_ds, dec.n_ds, density=0.2, random_state=3, format="csr", dtype=np.float32)
    op = RingOperator(Wr, dec)
    u = rng.standard_normal(120).astype(np.float32)
    v = rng.standard_normal(120).astype(np.float32)
    assert abs(float(v @ op.apply(u)) - float(u @ op.apply_t(v))) < 1e-3


# --- spatial and temporal updates ----------------------------------------------------------
def _scene(rng, T=600):
    centres = [(10, 10), (12, 16), (28, 30), (20, 40)]
    A = np.stack([_gauss(*c) for c in centres]).reshape(len(centres), -1).T  # (P, K)
    C, S = _traces(len(centres), T, rng)
    Y = (A @ C).T + 0.3 * rng.standard_normal((T, H * W)).astype(np.float32)
    return A.astype(np.float32), C, S, Y.astype(np.float32)


def test_hals_footprints_recovers_overlapping_footprints():
    rng = np.random.default_rng(3)
    A, C, _, Y = _scene(rng)
    A0 = sp.csc_matrix((A > 0.3) * 1.0, dtype=np.float32)  # crude start: thresholded masks
    support = search_support(A0, (H, W), True, 5)
    Q = sp.csr_matrix((Y.T @ C.T) * support.toarray())
    V = C.astype(np.float64) @ C.T
    est = hals_footprints(A0, Q, V, support, n_sweeps=30).toarray()
    for k in range(A.shape[1]):
        assert _corr(est[:, k], A[:, k]) > 0.98


def test_dilation_grows_the_support_by_the_radius():
    m = sp.csc_matrix(np.eye(1, H * W, 20 * W + 20).T.astype(np.float32))
    d = dilate_columns(m, (H, W), 3).toarray().reshape(H, W)
    assert d.sum() == np.count_nonzero(np.hypot(*np.mgrid[-3:4, -3:4]) <= 3)
    sq = dilate_columns(m, (H, W), 3, square=True).toarray().reshape(H, W)
    assert sq.sum() == 49


def test_hals_traces_with_deconvolution_recovers_traces():
    rng = np.random.default_rng(4)
    A, C, S, Y = _scene(rng)
    U = (A.T @ Y.T).astype(np.float32)
    VA = (A.T @ A).astype(np.float32)
    opts = {"type": "ar1", "method": "foopsi", "smin": -5, "optimize_pars": True, "max_tau": 100}
    C0 = np.zeros_like(C)
    Ce, Craw, Se, sn, g = hals_traces(U, VA, C0, deconv_flag=True, options=opts, n_sweeps=3)
    for k in range(C.shape[0]):
        assert _corr(Ce[k], C[k]) > 0.95
        assert _corr(Craw[k], C[k]) > 0.9
    assert np.all(np.isfinite(g))
    # components 0 and 1 overlap, so they are never updated in the same group
    groups = overlap_groups(VA)
    assert all(not ({0, 1} <= set(g_.tolist())) for g_ in groups)


# --- initialisation ------------------------------------------------------------------------
def test_init_seed_recovers_footprint_and_trace_and_peels():
    rng = np.random.default_rng(5)
    A, C, _, Y = _scene(rng)
    HY = centred_pixels(Y)
    opts = options_from_config({})
    res = init_seed(HY, (H, W), 28, 30, opts.box_radius, True, opts.deconv_options)
    assert res is not None
    pix, a, c_raw, fit = res
    full = np.zeros(H * W, np.float32)
    full[pix] = a
    assert _corr(full, A[:, 2]) > 0.9
    assert _corr(fit.c, C[2]) > 0.9
    # a pixel with only noise is not a neuron
    assert init_seed(HY, (H, W), 35, 5, opts.box_radius, True, opts.deconv_options) is None


# --- merging and false positives -----------------------------------------------------------
def _model(A, C, S):
    K = A.shape[1]
    An, peak = normalize_footprints(sp.csc_matrix(A))
    C = C * peak[:, None]
    return Model((H, W), [(0, C.shape[1])], An, C.astype(np.float32), C.astype(np.float32).copy(),
                 S.astype(np.float32), np.arange(K), np.ones((K, 1), np.float32))


def test_merge_joins_a_split_neuron_and_keeps_distinct_ones():
    rng = np.random.default_rng(6)
    A, C, S, _ = _scene(rng)
    # split neuron 2 into two halves with the same trace
    half = A[:, 2].copy().reshape(H, W)
    left, right = half.copy(), half.copy()
    left[:, 30:] = 0
    right[:, :30] = 0
    A2 = np.column_stack([A, left.ravel(), right.ravel()])
    A2[:, 2] = 0
    A2 = A2[:, [0, 1, 3, 4, 5]]
    C2 = np.vstack([C[[0, 1, 3]], C[2], C[2]])
    S2 = np.vstack([S[[0, 1, 3]], S[2], S[2]])
    m = _model(A2, C2, S2)
    opts = options_from_config({})
    removed = merge_components(m, opts)
    assert removed == 1 and m.K == 4
    peaks = footprint_peaks(m.A, (H, W))
    assert np.min(np.hypot(peaks[:, 0] - 28, peaks[:, 1] - 30)) < 2
    # overlapping neurons 0 and 1 have independent traces: not merged
    assert _corr(m.C[0], m.C[1]) < 0.5


def test_remove_false_positives_drops_small_and_silent():
    rng = np.random.default_rng(7)
    A, C, S, _ = _scene(rng)
    A[:, 3] = 0
    A[20 * W + 20, 3] = 1.0  # one-pixel footprint
    C[1] = 0                 # silent
    m = _model(A, C, S)
    bad = remove_false_positives(m, min_pixel=6)
    assert bad.tolist() == [False, True, False, True]
    assert m.K == 2


def test_residual_frames_equal_the_explicit_model():
    rng = np.random.default_rng(4)
    dec = Decimation((10, 13), 2)  # 13: edge blocks average what they have
    Wr = sp.random(dec.n_ds, dec.n_ds, density=0.2, random_state=5, format="csr", dtype=np.float32)
    op = RingOperator(Wr, dec)
    A = sp.random(130, 3, density=0.3, random_state=6, format="csc", dtype=np.float32)
    C = rng.random((3, 40)).astype(np.float32)
    Y = rng.standard_normal((40, 130)).astype(np.float32)
    b0 = rng.random(130).astype(np.float32)
    E = Y.T - b0[:, None] - A @ C                       # (P, T)
    expected = (E - op.apply(E)).T
    np.testing.assert_allclose(residual_frames(Y, A, C, b0, op), expected, atol=1e-4)
    np.testing.assert_allclose(residual_frames(Y, A, C, b0, None), E.T, atol=1e-5)


def test_window_mean_peak_is_the_running_mean_maximum():
    from califlow.cnmfe.residual import window_mean_peak

    rng = np.random.default_rng(5)
    Y = rng.standard_normal((203, 37)).astype(np.float32)
    k = 10
    brute = np.stack([Y[t:t + k].mean(axis=0) for t in range(203 - k + 1)]).max(axis=0)
    assert np.allclose(window_mean_peak(Y, k), brute, atol=1e-6)
    assert np.allclose(window_mean_peak(Y[:5], k), Y[:5].mean(axis=0), atol=1e-6)  # shorter than k


@pytest.mark.parametrize("T", [1000, 999])
def test_centred_pixels_subtract_the_sampled_median(T):
    from califlow.cnmfe.initialize import centred_pixels

    rng = np.random.default_rng(6)
    Y = (rng.standard_normal((T, 70)) + np.arange(70)).astype(np.float32)
    Y[:, 3] = 2.0  # ties
    ref = Y.T - np.median(Y[::4], axis=0)[:, None]
    assert np.array_equal(centred_pixels(Y), ref.astype(np.float32))


def test_allocator_can_be_set_and_restored():
    import platform

    from califlow.allocator import keep_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    with keep_freed_memory(True) as ok:
        assert ok is expected
        with keep_freed_memory(False) as ok2:
            assert ok2 is expected
    x = np.ones(10_000_000, np.float32)  # large blocks still work either way
    assert float(x.sum()) == 1e7


def test_vessel_shaped_components_are_removed_and_neurons_under_vessels_kept():
    from califlow.cnmfe.merge import vessel_shaped
    from califlow.cnmfe.model import footprint_shapes

    yy, xx = np.mgrid[0:H, 0:W]
    vessel = np.exp(-((yy - 20) ** 2) / (2 * 2.0 ** 2)) * ((xx > 6) & (xx < 42))   # a horizontal segment
    neuron_on = _gauss(20, 24, 2.0)          # a round neuron under the vessel
    neuron_off = _gauss(8, 10, 2.0)
    A = sp.csc_matrix(np.stack([vessel.ravel(), neuron_on.ravel(), neuron_off.ravel()], axis=1).astype(np.float32))
    mask = vessel > 0.3
    area, elong = footprint_shapes(A, (H, W))
    assert elong[0] > 5 and elong[1] < 1.3 and elong[2] < 1.3
    assert vessel_shaped(A, (H, W), mask.ravel()).tolist() == [True, False, False]
    # a model's false-positive removal drops the vessel only
    m = _model(A, np.ones((3, 50), np.float32), np.zeros((3, 50), np.float32))
    removed = remove_false_positives(m, 4, mask.ravel())
    assert removed.tolist() == [True, False, False] and m.K == 2
