"""Per-cell evidence and curation (cells.csv): metrics against known footprints and traces,
each rule, the manual table, and the rules on a simulated animal's ground truth plus known fakes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from califlow.cell_metrics import (
    background_ratio,
    footprint_shapes,
    nearest_neighbours,
    session_footprint_metrics,
    session_trace_metrics,
    surround_masks,
    surround_traces,
    vessel_overlap,
)
from califlow.cells_step import write_cells_csv
from califlow.cnmfe.simulated import write_aligned_store
from califlow.curation import apply_manual, curate, read_manual
from califlow.errors import InputError
from califlow.export import SessionSlice
from califlow.io.store import create_image, open_group, set_provenance
from califlow.params import default_config
from califlow.simulate import preset, simulate_animal


def _disk(shape, centre, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2).astype(np.float32)


def _gauss(shape, centre, sigma):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def test_shape_metrics_measure_known_footprints():
    shape = (60, 60)
    disk = _disk(shape, (30, 30), 6)
    yy, xx = np.mgrid[:60, :60]
    ellipse = (((yy - 30) / 2.0) ** 2 + ((xx - 30) / 12.0) ** 2 <= 1).astype(np.float32)
    g = _gauss(shape, (20, 20), 3.0)
    area, elong = footprint_shapes(np.stack([disk, ellipse, g, np.zeros(shape, np.float32)]))
    assert area[0] == int(disk.sum())
    assert 1.0 <= elong[0] < 1.05
    assert 5.0 < elong[1] < 8.0  # axes 12 : 2 (the discrete minor axis is a little narrower)
    # a Gaussian's half-maximum region has radius sigma sqrt(2 ln 2)
    assert abs(2 * np.sqrt(area[2] / np.pi) - 2 * 3.0 * np.sqrt(2 * np.log(2))) < 0.6
    assert area[3] == 0 and np.isnan(elong[3])
    mask = np.zeros(shape, bool)
    mask[:, :30] = True
    ov = vessel_overlap(np.stack([disk]), mask)
    assert abs(ov[0] - disk[:, :30].sum() / disk.sum()) < 1e-6
    assert np.isnan(vessel_overlap(np.stack([disk]), None)[0])


def test_session_footprints_correlation_and_shift():
    shape = (50, 50)
    A = np.stack([_gauss(shape, (25, 25), 2.5)] * 3)
    A_s = np.stack([A[0], _gauss(shape, (28, 29), 2.5), np.zeros(shape, np.float32)])
    corr, shift = session_footprint_metrics(A, A_s)
    assert corr[0] == pytest.approx(1.0) and shift[0] == pytest.approx(0.0, abs=1e-9)
    assert shift[1] == pytest.approx(5.0, abs=0.05) and corr[1] < 0.5
    assert np.isnan(corr[2]) and np.isnan(shift[2])


def test_session_trace_metrics_and_neighbours():
    rng = np.random.default_rng(0)
    T = 400
    sessions = [SessionSlice("a", 0, 200, 10.0), SessionSlice("b", 200, 400, 20.0)]
    C = np.zeros((2, T))
    S = np.zeros((2, T))
    S[0, [20, 80, 150]] = 5.0  # cell 0 fires in session a only, cell 1 in both
    S[1, [30, 250, 320]] = 4.0
    for k in range(2):
        for t in np.flatnonzero(S[k]):
            C[k, t:] += S[k, t] * 0.9 ** np.arange(T - t)
    C_raw = C + rng.normal(0, 1, C.shape)
    m = session_trace_metrics(C, C_raw, S, sessions, event_threshold=3.0)
    assert m["rate_hz"][0, 0] == pytest.approx(3 / 20.0) and m["rate_hz"][0, 1] == 0
    assert m["rate_hz"][1, 1] == pytest.approx(2 / 10.0)
    assert m["events"][0].tolist() == [3, 0]
    assert m["snr"][0, 0] > 1 and m["snr"][0, 1] < 0.01  # only the decay's tail is left
    assert m["pvalue"][0, 0] < 1e-6 and m["pvalue"][0, 1] > 1e-3
    assert m["transient_ratio"][0, 0] == pytest.approx(1.0) and m["transient_ratio"][0, 1] < 0.3
    centroids = np.array([[10.0, 10.0], [13.0, 14.0], [40.0, 40.0]])
    traces = np.vstack([C_raw, C_raw[0] + rng.normal(0, 0.1, T)])
    nn, d, r = nearest_neighbours(centroids, traces, sessions)
    assert nn.tolist() == [1, 0, 1] and d[0] == pytest.approx(5.0)
    assert r[2] == pytest.approx(np.corrcoef(traces[2], traces[1])[0, 1], abs=0.05)


def test_background_ratio_separates_cells_from_diffuse_blobs():
    """A cell with its own transients has a surround that does not follow it; a small
    component on a diffuse blob (a blob larger than the cell) is its surround."""
    rng = np.random.default_rng(1)
    shape, T = (64, 64), 300
    sessions = [SessionSlice("a", 0, T, 10.0)]
    own = np.maximum(rng.normal(0, 1, T), 0) ** 3
    blob = np.maximum(rng.normal(0, 1, T), 0) ** 3
    cell = _gauss(shape, (20, 20), 2.0)
    blob_img = _gauss(shape, (44, 44), 9.0)
    movie = (own[:, None, None] * cell + blob[:, None, None] * blob_img
             + rng.normal(0, 0.05, (T, *shape))).astype(np.float32)
    A = np.stack([cell, _gauss(shape, (44, 44), 2.0)])
    masks = surround_masks(A, gsig=2.0)
    assert masks.shape == (4, 64 * 64) and np.allclose(masks.sum(axis=1), 1)
    sur = surround_traces(lambda a, b: movie[a:b], T, masks, chunk_frames=64)
    np.testing.assert_allclose(sur, (masks @ movie.reshape(T, -1).T).astype(np.float32), rtol=1e-5, atol=1e-6)
    r = background_ratio(sur[:2], sur[2:], sessions)
    assert r[0] < 0.05 and r[1] > 0.6


def _table(n=8, sessions=("a", "b")):
    t = pd.DataFrame({"cell": np.arange(n), "area_px": np.full(n, np.pi * 4.0 ** 2), "elongation": 1.2,
                      "bv_overlap": 0.0, "background_ratio": 0.05, "nn_distance_px": 20.0, "nn_trace_corr": 0.1})
    for s in sessions:
        t[f"snr_{s}"], t[f"active_{s}"], t[f"fp_corr_{s}"] = 3.0, 1, 0.95
    return t


def test_each_rule_fires_with_its_reason_and_outcome():
    opts = default_config()["curation"]
    t = _table()
    t.loc[1, "area_px"] = np.pi * 1.0 ** 2        # too small for an 8 px neuron
    t.loc[2, "area_px"] = np.pi * 10.0 ** 2       # too large
    t.loc[3, "elongation"] = 5.0
    t.loc[4, "bv_overlap"] = 0.8
    t.loc[4, ["active_a", "active_b"]] = 0  # on a vessel with no calcium transient
    t.loc[5, ["snr_a", "snr_b"]] = 0.2
    t.loc[6, "background_ratio"] = 0.9
    t.loc[7, ["fp_corr_a", "fp_corr_b"]] = [0.2, 0.3]
    out = curate(t, ["a", "b"], opts, diameter=8.0)
    assert out["status"].tolist() == ["accepted"] + ["rejected"] * 6 + ["undecided"]
    assert out["reason"].tolist() == ["", "too small", "too large", "elongated", "on vessel", "low SNR",
                                      "background", "inconsistent footprint"]
    # a neuron under a vessel, active in a session, stays
    t2 = t.copy()
    t2.loc[4, "active_b"] = 1
    assert curate(t2, ["a", "b"], opts, 8.0).loc[4, "status"] == "accepted"
    # a rule set to null is off; enabled false accepts everything
    assert curate(t, ["a", "b"], {**opts, "max_elongation": None}, 8.0).loc[3, "status"] == "accepted"
    assert set(curate(t, ["a", "b"], {**opts, "enabled": False}, 8.0)["status"]) == {"accepted"}
    # the footprint rule only looks at active sessions
    t.loc[7, "active_a"] = 0
    t.loc[7, "fp_corr_b"] = 0.9
    assert curate(t, ["a", "b"], opts, 8.0).loc[7, "status"] == "accepted"
    # merge risk: a close neighbour with a correlated trace
    t.loc[0, ["nn_distance_px", "nn_trace_corr"]] = [2.0, 0.95]
    assert curate(t, ["a", "b"], opts, 8.0).loc[0, ["status", "reason"]].tolist() == ["undecided", "merge risk"]


def test_manual_table_wins_and_bad_rows_are_named(tmp_path):
    t = curate(_table(4), ["a", "b"], default_config()["curation"], 8.0)
    path = tmp_path / "m1.csv"
    pd.DataFrame({"cell": [2, 3], "status": ["rejected", "Accepted"], "reason": ["looks like neuropil", ""]}) \
        .to_csv(path, index=False)
    out = apply_manual(t, read_manual(path, 4))
    assert out["status"].tolist() == ["accepted", "accepted", "rejected", "accepted"]
    assert out.loc[2, "reason"] == "manual: looks like neuropil" and out.loc[3, "reason"] == ""
    path.write_text("cell,status\n0,accepted\n7,rejected\n")
    with pytest.raises(InputError, match=r"m1\.csv, row 3: cell 7 is not a cell id \(0\.\.3\)"):
        read_manual(path, 4)
    path.write_text("cell,status\n0,maybe\n")
    with pytest.raises(InputError, match=r"row 2: status 'maybe' is not one of accepted, undecided, rejected"):
        read_manual(path, 4)
    path.write_text("id,state\n0,accepted\n")
    with pytest.raises(InputError, match="lacks column"):
        read_manual(path, 4)


@pytest.fixture(scope="module")
def truth_store(tmp_path_factory):
    """aligned.zarr of a simulated animal and a cnmfe.zarr holding its true cells plus 4 known fakes."""
    cfg = preset("demo", height=96, width=96, n_sessions=2, frames_per_session=300, n_neurons=14, n_vessels=2,
                 n_local_sources=2, translation=0.0, deformation=0.0)
    animal = simulate_animal(cfg, seed=11)
    gt = animal.ground_truth
    tmp = tmp_path_factory.mktemp("cellqc")
    write_aligned_store(animal, tmp / "aligned.zarr")
    aligned = zarr.open_group(str(tmp / "aligned.zarr"), mode="r+")
    bv = np.asarray(aligned["bv"][...]).max(axis=0) > default_config()["cnmfe"]["bv_threshold"]
    movie = np.asarray(aligned["movie"][...])
    rng = np.random.default_rng(0)
    # a diffuse out-of-focus blob (sigma 7 px) with its own transients, added to the aligned movie
    H, W = movie.shape[1:]
    yy, xx = np.mgrid[15:H - 15, 15:W - 15]
    far = np.hypot(yy[..., None] - gt.centers_ref[:, 0], xx[..., None] - gt.centers_ref[:, 1]).min(axis=-1)
    at = (int(yy.ravel()[far.argmax()]), int(xx.ravel()[far.argmax()]))  # the spot farthest from every neuron
    blob_course = np.maximum(rng.normal(0, 1, movie.shape[0]), 0) ** 2 * movie.std()
    movie += blob_course[:, None, None] * _gauss((H, W), at, 6.0)
    aligned["movie"][...] = movie
    A_true = gt.footprints_ref
    A_true = A_true / A_true.reshape(len(A_true), -1).max(axis=1)[:, None, None]
    K, T = len(A_true), gt.C.shape[1]
    C_true = gt.C / gt.C.max(axis=1, keepdims=True) * 10
    ys, xs = np.nonzero(bv)
    vessel = np.zeros((H, W), np.float32)
    near = np.hypot(ys - ys[0], xs - xs[0]) < 15
    vessel[ys[near], xs[near]] = 1.0
    fakes = [vessel,                                                    # on a vessel
             _gauss((H, W), (20, 76), 12.0),                            # too large
             np.pad(np.ones((1, 2), np.float32), ((10, H - 11), (10, W - 12)))]  # too small
    blob_trace = movie[:, at[0] - 2:at[0] + 3, at[1] - 2:at[1] + 3].mean(axis=(1, 2))
    fake_C = np.stack([rng.normal(0, 1, T).cumsum() * 0.1, rng.normal(0, 1, T), rng.normal(0, 1, T)])
    blob_trace = (blob_trace - np.median(blob_trace)) / blob_trace.std()
    A = np.concatenate([A_true, np.stack(fakes), _gauss((H, W), at, 2.5)[None]])
    C = np.concatenate([C_true, np.zeros((3, T)), np.maximum(blob_trace, 0)[None]])
    C_raw = np.concatenate([C_true + rng.normal(0, 1, C_true.shape), fake_C, blob_trace[None]])
    S = np.concatenate([gt.S, np.zeros((4, T))])
    bounds = gt.session_bounds
    sessions = [{"name": f"s{i}", "start": int(a), "stop": int(b), "fps": float(gt.fps)}
                for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    active = np.concatenate([gt.active, np.zeros((4, len(sessions)), bool)]).astype(bool)
    g = open_group(tmp / "cnmfe.zarr", "w")
    for name, arr in (("A", A), ("C", C), ("C_raw", C_raw), ("S", S)):
        g.create_array(name, shape=arr.shape, dtype="float32")[...] = arr.astype(np.float32)
    g.create_array("A_sessions", shape=(len(sessions), *A.shape), dtype="float32")[...] = \
        np.stack([A] * len(sessions)).astype(np.float32)
    create_image(g, "active", active)
    set_provenance(g, default_config(), {}, sessions=sessions)
    return tmp, K


def test_rules_reject_the_fakes_and_keep_the_true_cells(truth_store):
    tmp, K = truth_store
    cfg = default_config()
    cfg["general"]["gSig"] = 2.5
    table = write_cells_csv(tmp / "cnmfe.zarr", tmp / "aligned.zarr", tmp / "cells.csv", cfg)
    back = pd.read_csv(tmp / "cells.csv", keep_default_na=False)
    assert back["status"].tolist() == table["status"].tolist()
    true, fake = table.iloc[:K], table.iloc[K:]
    assert (true["status"] == "accepted").mean() >= 0.9, true[["cell", "status", "reason"]]
    assert fake["status"].tolist() == ["rejected"] * 4, fake[["cell", "reason"]]
    assert "on vessel" in fake["reason"].iloc[0] and "too large" in fake["reason"].iloc[1]
    assert "too small" in fake["reason"].iloc[2] and "background" in fake["reason"].iloc[3]
    assert np.all(true["fp_corr_s0"] > 0.99) and np.all(true["shift_px_s0"] < 1e-6)
