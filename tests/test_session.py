"""The per-session chain end to end: ingest.zarr -> motion.csv, enhanced.zarr, projections.zarr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree
from sim_cases import moving_animal

from califlow.errors import InputError
from califlow.io.store import open_group
from califlow.motion.session import read_motion_csv, run_session
from califlow.motion.warp import translate_stack
from califlow.params import round_half_up
from califlow.simulate.pipeline import write_ingest_store

SIZE = 128
FRAMES = 500


@pytest.fixture(scope="module")
def animal():
    return moving_animal(SIZE, FRAMES, jump_max=8.0, n_jumps=2, seed=21)


@pytest.fixture(scope="module")
def ingest_store(animal, tmp_path_factory):
    d = tmp_path_factory.mktemp("session")
    return write_ingest_store(d / "ingest.zarr", animal.session_frames(0), animal.ground_truth.fps)


@pytest.fixture(scope="module")
def result(ingest_store):
    out = ingest_store.parent / "out"
    summary = run_session(ingest_store, out, {"general": {"gSig": 2.5}}, name="animal/s0")
    return out, summary


def _offset(true: np.ndarray, est: np.ndarray) -> np.ndarray:
    return (true - est).mean(axis=0)


def test_motion_table_matches_ground_truth(result, animal):
    out, summary = result
    lines = (out / "motion.csv").read_text().splitlines()
    assert lines[0] == "frame,dy,dx" and len(lines) == FRAMES + 1
    est = read_motion_csv(out / "motion.csv")
    true = animal.ground_truth.motion[0].astype(np.float64)
    err = (est - est.mean(0)) - (true - true.mean(0))
    e = np.sqrt((err ** 2).sum(1))
    assert np.sqrt(np.mean(e ** 2)) <= 0.1 and e.max() <= 0.5
    y0, y1, x0, x1 = summary["crop_box"]
    assert y0 >= np.ceil(-est[:, 0].min() - 1e-6) and y1 <= SIZE - np.ceil(est[:, 0].max() - 1e-6)
    assert 0 < summary["cropped_fraction"] < 0.3


def test_enhanced_movie_is_noise_scaled_and_cropped(result):
    out, summary = result
    g = open_group(out / "enhanced.zarr")
    y0, y1, x0, x1 = summary["crop_box"]
    movie = g["movie"]
    assert movie.shape == (FRAMES, y1 - y0, x1 - x0) and movie.dtype == np.float32
    assert g.attrs["crop_box"] == [y0, y1, x0, x1] and g.attrs["fps"] == pytest.approx(20.0)
    assert "califlow_version" in g.attrs and "params" in g.attrs
    data = movie[:]
    assert np.all(np.isfinite(data)) and data.min() >= 0
    # noise-sigma units: the high-frequency noise of a typical pixel is about 1
    from califlow.preprocess.noise import get_sn
    sn = get_sn(data[:200])
    assert 0.7 < float(np.median(sn)) < 1.4


def test_projections_against_ground_truth(result, animal):
    out, summary = result
    gt = animal.ground_truth
    p = open_group(out / "projections.zarr")
    y0, y1, x0, x1 = summary["crop_box"]
    shape = (y1 - y0, x1 - x0)
    imgs = {k: p[k][:] for k in ("mean", "bv", "cn", "pnr")}
    for k, v in imgs.items():
        assert v.shape == shape and v.dtype == np.float32, k
    assert p.attrs["crop_box"] == [y0, y1, x0, x1]
    assert len(p.attrs["template_offset"]) == 2
    est = read_motion_csv(out / "motion.csv")
    c = _offset(gt.motion[0].astype(np.float64), est)
    box = tuple(summary["crop_box"])
    # output pixel p shows the session's motion-free frame at p + box0 - c
    vessels = translate_stack(gt.vessels_session[0][None], [-c], box)[0]
    assert np.corrcoef(imgs["bv"].ravel(), vessels.ravel())[0, 1] >= 0.7
    assert imgs["bv"].max() == pytest.approx(1.0) and imgs["cn"].max() == pytest.approx(1.0)
    assert imgs["pnr"].min() >= 0
    mean_true = translate_stack(gt.baseline_session[0][None], [-c], box)[0]
    assert np.corrcoef(imgs["mean"].ravel(), mean_true.ravel())[0, 1] > 0.9

    # seeding: local maxima of Cn * PNR above the default thresholds find the active neurons,
    # and few maxima lie elsewhere (pulsing vessels are regressed out)
    seeding = _seeding(out, summary, animal)
    assert seeding["recall"] >= 0.9
    assert seeding["spurious"] <= 0.12 and seeding["on_vessels"] <= 2


def _seeding(out: Path, summary: dict, animal, radius: float = 5.0) -> dict:
    """Recall of active neurons by the Cn * PNR maxima, the share of maxima on no active
    neuron (spurious) and how many of those lie on a vessel."""
    gt = animal.ground_truth
    p = open_group(out / "projections.zarr")
    cn, pnr = p["cn"][:], p["pnr"][:]
    est = read_motion_csv(out / "motion.csv")
    c = _offset(gt.motion[0].astype(np.float64), est)
    box = tuple(summary["crop_box"])
    fp = gt.footprints[0]
    yy, xx = np.mgrid[0:fp.shape[1], 0:fp.shape[2]]
    mass = fp.sum(axis=(1, 2))
    centres = np.stack([(fp * yy).sum((1, 2)) / mass, (fp * xx).sum((1, 2)) / mass], 1)
    centres = centres - np.array([box[0], box[2]]) + c
    inside = np.all((centres >= 3) & (centres < np.array(cn.shape) - 3), axis=1)
    fired = gt.C[:, gt.session_slice(0)].max(axis=1) > 0
    active = gt.active[:, 0] & fired
    v = cn * pnr
    k = max(1, round_half_up(2.5))
    peaks = (v == ndimage.maximum_filter(v, size=k, mode="constant")) & (cn >= 0.1) & (pnr >= 6) & (v > 0)
    labels, n = ndimage.label(peaks)
    seeds = np.array(ndimage.center_of_mass(peaks, labels, range(1, n + 1)))
    dist, idx = cKDTree(centres[active & inside]).query(seeds)
    hit = np.zeros(int((active & inside).sum()), bool)
    hit[idx[dist <= radius]] = True
    # a maximum on an active neuron cut by the crop is not spurious
    spurious = cKDTree(centres[active]).query(seeds)[0] > radius
    vessels = translate_stack(gt.vessels_session[0][None], [-c], box)[0]
    on_vessel = vessels[tuple(np.round(seeds[spurious]).astype(int).T)] > 0.5
    return {"recall": float(hit.mean()), "spurious": float(spurious.mean()), "on_vessels": int(on_vessel.sum()),
            "maxima": int(n)}


def test_vessel_pulse_regression_removes_vessel_seeds(ingest_store, result, animal):
    out, summary = result
    assert summary["vessel_pulse_removed"] and 0.02 < summary["vessel_mask_fraction"] < 0.4
    plain = ingest_store.parent / "out_pulse"
    summary_off = run_session(ingest_store, plain, {"general": {"gSig": 2.5},
                                                    "preprocessing": {"remove_vessel_pulse": False}})
    assert not summary_off["vessel_pulse_removed"]
    on, off = _seeding(out, summary, animal), _seeding(plain, summary_off, animal)
    # the pulsing vessels give many maxima without the regression, (almost) none with it
    assert off["on_vessels"] >= 8 and on["on_vessels"] <= off["on_vessels"] // 4
    assert on["spurious"] < off["spurious"] - 0.1 and on["recall"] >= off["recall"] - 0.02
    # the enhanced movie itself is not changed by the switch
    np.testing.assert_array_equal(open_group(out / "enhanced.zarr")["movie"][:50],
                                  open_group(plain / "enhanced.zarr")["movie"][:50])


def test_chunking_and_reruns_give_identical_outputs(ingest_store, result):
    out, _ = result
    other = ingest_store.parent / "out_chunked"
    run_session(ingest_store, other, {"general": {"gSig": 2.5}, "preprocessing": {"chunk_frames": 130}})
    a = open_group(out / "enhanced.zarr")["movie"][:]
    b = open_group(other / "enhanced.zarr")["movie"][:]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    pa, pb = open_group(out / "projections.zarr"), open_group(other / "projections.zarr")
    for k in ("mean", "bv", "cn", "pnr"):
        np.testing.assert_allclose(pa[k][:], pb[k][:], rtol=1e-4, atol=1e-4, err_msg=k)
    assert (out / "motion.csv").read_text() == (other / "motion.csv").read_text()


def test_switches_and_neuron_reference(ingest_store):
    out = ingest_store.parent / "out_plain"
    params = {"general": {"gSig": 2.5},
              "preprocessing": {"detrend": 0, "noise_scale": False, "neuron_enhance": False},
              "motion_correction": {"reference_projection_rigid": "neuron"}}
    summary = run_session(ingest_store, out, params)
    g = open_group(out / "enhanced.zarr")
    raw = open_group(ingest_store)["movie"]
    y0, y1, x0, x1 = summary["crop_box"]
    # nothing switched on: the output is the motion-corrected raw movie
    shifts = read_motion_csv(out / "motion.csv")
    ref = translate_stack(raw[:20], shifts[:20], (y0, y1, x0, x1))
    np.testing.assert_allclose(g["movie"][:20], ref, rtol=1e-4, atol=0.01)  # motion.csv has 4 decimals
    assert summary["reference"] == "neuron"


def test_bad_inputs_leave_no_outputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        run_session(tmp_path / "missing.zarr", tmp_path / "o1")
    rng = np.random.default_rng(0)
    short = write_ingest_store(tmp_path / "short.zarr", rng.random((3, 32, 32)), 10.0)
    with pytest.raises(InputError, match="short.zarr: 3 frame"):
        run_session(short, tmp_path / "o2")
    movie = rng.random((60, 48, 48)).astype(np.float32) * 100
    movie[33, 5, 5] = np.inf
    bad = write_ingest_store(tmp_path / "inf.zarr", movie, 10.0)
    with pytest.raises(InputError, match=r"inf\.zarr: 1 frame\(s\) contain NaN or infinite values \(0-based\): 33$"):
        run_session(bad, tmp_path / "o3")
    with pytest.raises(Exception, match="max_shift"):
        run_session(bad, tmp_path / "o4", {"motion_correction": {"max_shift": -1}})
    for d in ("o2", "o3", "o4"):
        assert not any((tmp_path / d).glob("*")) if (tmp_path / d).exists() else True
