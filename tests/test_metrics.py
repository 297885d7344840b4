"""Tests of califlow.metrics on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from califlow.errors import InputError
from califlow.metrics import (
    footprint_correlation,
    match_neurons,
    motion_rmse,
    score_extraction,
    session_assignments,
    spike_correlation,
    trace_correlation,
    tracking_f1,
)

H = W = 120


def _discs(centers, radius=4.0, shape=(H, W)):
    """Footprints (K, H, W): smooth bumps of the given radius at centres (y, x)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.stack([np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * (radius / 1.5) ** 2)) for y, x in centers]
                    ).astype(np.float32)


@pytest.fixture(scope="module")
def grid_centers():
    g = np.arange(15, 110, 20)
    return [(y, x) for y in g for x in g][:20]            # 20 well separated neurons


def test_perfect_match(grid_centers):
    a = _discs(grid_centers)
    m = match_neurons(a, a[::-1].copy())
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.sort(m.est_idx[np.argsort(m.true_idx)] + m.true_idx.max()), np.arange(19, 39))
    np.testing.assert_allclose(m.iou, 1.0)


def test_dropped_and_added_neurons_give_exact_scores(grid_centers):
    a = _discs(grid_centers)
    est = np.concatenate([a[3:], _discs([(5, 5), (5, 60), (60, 5), (114, 114), (114, 60)])])  # drop 3, add 5 far away
    m = match_neurons(a, est)
    assert m.n_matched == 17 and m.n_true == 20 and m.n_est == 22
    assert m.recall == pytest.approx(17 / 20)
    assert m.precision == pytest.approx(17 / 22)
    assert m.f1 == pytest.approx(2 * 17 / 42)


def test_shifted_estimates_need_registration(grid_centers):
    a = _discs(grid_centers)
    shifted = _discs([(y + 6, x - 5) for y, x in grid_centers])
    assert match_neurons(a, shifted).n_matched == 0           # IoU too small at this shift
    m = match_neurons(a, shifted, register=True)
    assert m.f1 == 1.0
    np.testing.assert_allclose(m.shift, (-6, 5), atol=0.1)
    r = footprint_correlation(a, shifted, m)
    assert r.min() > 0.99


def test_centroid_gate_and_cost_threshold():
    a = _discs([(50, 50)], radius=6)
    near = _discs([(50, 53)], radius=6)
    # IoU of two discs 3 px apart is about 0.5: matched with max_cost 0.7, not with 0.3
    assert match_neurons(a, near).n_matched == 1
    assert match_neurons(a, near, max_cost=0.3).n_matched == 0
    assert match_neurons(a, near, min_dist=2.0).n_matched == 0


def test_trace_correlation_scale_offset_and_sessions():
    rng = np.random.default_rng(0)
    c = rng.random((4, 300)).astype(np.float32)
    corners = [(20, 20), (20, 60), (60, 20), (60, 60)]
    m = match_neurons(_discs(corners), _discs(corners))
    est = 3.0 * c + 7.0
    est[2] = -c[2]
    r = trace_correlation(c, est, m)
    assert r.shape == (4, 1)
    np.testing.assert_allclose(r[[0, 1, 3], 0], 1.0, atol=1e-9)
    assert r[2, 0] == pytest.approx(-1.0)
    c2 = c.copy()
    c2[1, 100:200] = 0.0                                    # silent in session 1
    rs = trace_correlation(c2, c2 * 2, m, session_bounds=[0, 100, 200, 300])
    assert rs.shape == (4, 3) and np.isnan(rs[1, 1]) and np.allclose(rs[0], 1.0)
    with pytest.raises(InputError, match="session_bounds"):
        trace_correlation(c, est, m, session_bounds=[0, 100, 250])


def test_spike_correlation_binning():
    t = 500
    s = np.zeros((1, t))
    s[0, np.arange(12, t, 37)] = 1.0
    est = np.roll(s, 1, axis=1)                              # one frame late
    m = match_neurons(_discs([(50, 50)]), _discs([(50, 50)]))
    assert spike_correlation(s, 2 * s, m, bin_frames=1)[0, 0] == pytest.approx(1.0)
    assert spike_correlation(s, est, m, bin_frames=1)[0, 0] < 0.05
    assert spike_correlation(s, est, m, bin_frames=5)[0, 0] > 0.7


def test_tracking_f1_known_links():
    true_active = np.ones((3, 3), bool)
    perfect = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]])
    assert tracking_f1(perfect, true_active)["f1"] == 1.0
    # unit 1 takes neuron 2's identity in session 2 and unit 2 is unmatched there
    swapped = np.array([[0, 0, 0], [1, 1, 2], [2, 2, -1]])
    r = tracking_f1(swapped, true_active, present=np.ones((3, 3), bool))
    # pairs (0,1): 3 correct; (0,2): unit0 ok, unit1 wrong, unit2 unmatched -> 1 TP 2 FP; (1,2): same
    assert (r["tp"], r["fp"], r["fn"]) == (5, 4, 4)
    assert r["f1"] == pytest.approx(10 / 18)
    # a neuron inactive in session 2 has no true links there
    ta = true_active.copy()
    ta[2, 2] = False
    r = tracking_f1(perfect, ta)
    assert r["fn"] == 0 and r["fp"] == 2                   # the claimed links of unit 2 into session 2


def test_session_assignments_respect_activity_and_presence(grid_centers):
    a = _discs(grid_centers[:4])
    active = np.array([[1, 1], [1, 0], [0, 1], [1, 1]], bool)
    present = np.array([[1, 1], [1, 1], [1, 1], [0, 1]], bool)
    assign = session_assignments(a, active, a, present)
    np.testing.assert_array_equal(assign, [[0, 0], [1, -1], [-1, 2], [-1, 3]])


def test_motion_rmse_removes_offset():
    rng = np.random.default_rng(1)
    true = rng.normal(0, 2, (200, 2))
    assert motion_rmse(true + [2.0, -3.0], true) == pytest.approx((0.0, 0.0), abs=1e-12)
    err = np.zeros((200, 2))
    err[::2, 0], err[1::2, 0] = 1.0, -1.0
    rmse, mx = motion_rmse(true + err, true)
    assert rmse == pytest.approx(1.0) and mx == pytest.approx(1.0)
    with pytest.raises(InputError, match="motion_rmse"):
        motion_rmse(true, true[:10])


def test_score_extraction_on_ground_truth_itself():
    from califlow.simulate import preset, simulate_animal

    gt = simulate_animal(preset("demo", height=96, width=96, n_neurons=15, frames_per_session=60,
                                n_sessions=2, overlap=0.5), seed=2).ground_truth
    a = gt.footprints_ref
    r = score_extraction(gt, np.roll(a, (2, -3), axis=(1, 2)), gt.C * 2 + 1, gt.S)
    assert r["f1"] == 1.0 and r["footprint_r"] > 0.95
    assert r["trace_r"] == pytest.approx(1.0) and r["spike_r"] == pytest.approx(1.0)
    assert r["tracking"]["f1"] < 1.0 or gt.active.all()     # presence everywhere claims silent links
    r2 = score_extraction(gt, np.roll(a, (2, -3), axis=(1, 2)), gt.C, gt.S, active_est=gt.active)
    assert r2["tracking"]["f1"] == 1.0


def test_scored_and_matched_estimates_are_indices_into_the_input():
    from califlow.simulate import preset, simulate_animal

    gt = simulate_animal(preset("demo", height=96, width=96, n_neurons=15, frames_per_session=60,
                                n_sessions=2, overlap=0.5), seed=2).ground_truth
    a = gt.footprints_ref
    left = np.flatnonzero(gt.centers_ref[:, 1] < 40)
    est = np.concatenate([a[::-1], a[:1]])  # reversed, plus a duplicate of neuron 0
    valid = np.zeros(a.shape[1:], bool)
    valid[:, 48:] = True  # only the right half was covered
    r = score_extraction(gt, est, np.concatenate([gt.C[::-1], gt.C[:1]]), valid=valid, register=False)
    matched, scored = set(r["matched_est"].tolist()), set(r["scored_est"].tolist())
    assert matched <= scored and len(matched) == r["n_matched"] == r["n_true"]
    assert not matched & {len(a) - 1 - k for k in left}  # neurons left of the crop are not scored
    assert all(np.argmax([np.sum(est[m] * t) for t in a]) == len(a) - 1 - m for m in matched if m < len(a))
    assert (len(a) in scored) == (gt.centers_ref[0, 1] >= 48)  # the duplicate is scored, not matched, inside
    assert len(a) not in matched or (len(a) - 1) not in matched


def test_bad_inputs():
    with pytest.raises(InputError, match="differ in"):
        match_neurons(np.zeros((2, 10, 10)), np.zeros((2, 12, 10)))
    with pytest.raises(InputError, match="bin_frames"):
        spike_correlation(np.zeros((1, 10)), np.zeros((1, 10)), match_neurons(_discs([(5, 5)]), _discs([(5, 5)])),
                          bin_frames=0)
    empty = match_neurons(np.zeros((0, H, W)), _discs([(50, 50)]))
    assert empty.f1 == 0.0 and empty.precision == 0.0


def test_spoke_index_is_one_for_a_round_blob_and_large_for_an_eight_ray_star():
    from califlow.metrics import spoke_index

    yy, xx = np.mgrid[0:41, 0:41] - 20.0
    round_blob = np.exp(-(yy ** 2 + xx ** 2) / (2 * 3.0 ** 2))
    assert abs(spoke_index(round_blob) - 1.0) < 0.02
    rays = np.cos(8 * np.arctan2(yy, xx)) * np.clip((np.hypot(yy, xx) - 2) / 3, 0, 1)   # peak stays central
    star = round_blob * (1 + 0.8 * rays)               # rays on the axes and diagonals
    assert spoke_index(star) > 1.5
    assert spoke_index(round_blob * (1 - 0.8 * rays)) < 0.7   # flat sides facing the rays
    assert np.isnan(spoke_index(np.zeros((9, 9))))
