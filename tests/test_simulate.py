"""Tests of califlow.simulate: determinism, ground-truth conventions, noise, turnover, files."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from scipy import ndimage

from califlow.errors import ConfigError
from califlow.simulate import (
    PRESETS,
    load_ground_truth,
    preset,
    save_ground_truth,
    simulate_animal,
    write_animal,
    write_cohort,
)
from califlow.simulate.activity import calcium_kernel_coefficients

TINY = dict(height=96, width=96, n_sessions=2, frames_per_session=70, n_neurons=12, n_local_sources=4,
            n_vessels=3, translation=6.0, deformation=2.0)

# everything static and unshaded: the frame is the tissue image moved by the motion
STATIC = dict(vignetting=0.0, global_fluct=0.0, local_amp=0.0, vessel_pulse=0.0, amplitude=1e-4,
              halo_weight=0.0, session_baseline_change=0.0, session_vessel_change=0.0)


def tiny_config(*groups, **kw):
    """The demo preset shrunk by TINY, then each dict of ``groups``, then ``kw`` (later wins)."""
    merged = dict(TINY)
    for g in groups:
        merged.update(g)
    merged.update(kw)
    return preset("demo", **merged)


@pytest.fixture(scope="module")
def tiny():
    return simulate_animal(tiny_config(), seed=3)


def test_same_seed_identical_and_other_seed_differs(tiny):
    again = simulate_animal(tiny_config(), seed=3)
    a, b = tiny.ground_truth, again.ground_truth
    for name in ("C", "S", "active", "motion_concat", "maps", "vessels", "centers_ref", "baseline_session"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.footprints_sparse != b.footprints_sparse).nnz == 0
    np.testing.assert_array_equal(tiny.session_frames(1, 10, 50), again.session_frames(1, 10, 50))
    other = simulate_animal(tiny_config(), seed=4)
    assert not np.array_equal(other.ground_truth.C, a.C)
    assert not np.array_equal(other.session_frames(0, 0, 5), tiny.session_frames(0, 0, 5))


def test_frames_independent_of_chunking(tiny):
    whole = tiny.session_frames(0)
    assert whole.shape == (70, 96, 96) and whole.dtype == np.uint8
    pieces = np.concatenate([f for _, f in tiny.iter_session(0, 7)])
    np.testing.assert_array_equal(whole, pieces)
    odd = np.concatenate([tiny.session_frames(0, 0, 33), tiny.session_frames(0, 33, 70)])
    np.testing.assert_array_equal(whole, odd)
    np.testing.assert_array_equal(tiny.aligned_frames(1, 5, 40), tiny.aligned_frames(1)[5:40])


def test_motion_convention_frame_shifted_back_matches_static():
    animal = simulate_animal(tiny_config(STATIC, motion_std=2.5, jump_max=5.0), seed=5)
    gt = animal.ground_truth
    d = gt.motion[1]
    frames = animal.session_frames(1, noise=False) - animal.config.offset
    static = gt.baseline_session[1]
    t = int(np.argmax(np.abs(d).sum(axis=1)))            # the frame with the largest motion
    assert np.abs(d[t]).max() > 1.5
    yy, xx = np.mgrid[:96, :96].astype(np.float32)
    inner = (slice(15, -15), slice(15, -15))

    def back(sign):                                       # est(p) = raw_t(p + sign * d_t)
        return cv2.remap(frames[t], xx + sign * d[t, 1], yy + sign * d[t, 0], cv2.INTER_CUBIC)

    err = np.abs(back(1) - static)[inner].mean() / static[inner].mean()
    wrong = np.abs(back(-1) - static)[inner].mean() / static[inner].mean()
    assert err < 0.004, err
    assert wrong > 5 * err


def _centroid_errors(cfg, seed):
    gt = simulate_animal(cfg, seed=seed).ground_truth
    pos = gt.centers_session()
    errs = []
    for s in range(1, gt.n_sessions):
        cen = np.array([ndimage.center_of_mass(f) for f in gt.session_footprints(s)])
        inside = np.all((pos[s] > 12) & (pos[s] < 96 - 12), axis=1)
        errs.append(np.sqrt(((cen - pos[s]) ** 2).sum(axis=1))[inside])
    return gt, np.concatenate(errs)


def test_maps_send_reference_centres_to_session_centroids():
    # pure translation: exact up to interpolation
    gt, errs = _centroid_errors(tiny_config(STATIC, vessels=0.0, translation=15.0, deformation=0.0), 11)
    assert np.abs(gt.translations[1]).max() > 5 and len(errs) >= 5
    assert errs.max() < 0.02, errs
    # with a smooth deformation (4 px, sigma 50 px) the centroid of a deformed footprint moves
    # slightly off the image of the centre (second-order effect); a sign error would give ~8 px
    gt, errs = _centroid_errors(tiny_config(STATIC, vessels=0.0, translation=15.0, deformation=4.0,
                                            deformation_scale=50.0, n_sessions=3), 11)
    assert len(errs) >= 10
    assert errs.max() < 0.5 and np.median(errs) < 0.3, errs


def test_aligned_frames_of_static_tissue_agree_across_sessions():
    cfg = tiny_config(STATIC, translation=12.0, deformation=4.0)
    animal = simulate_animal(cfg, seed=2)
    ref = animal.aligned_frames(0, 0, 1, noise=False)[0]
    other = animal.aligned_frames(1, 0, 1, noise=False)[0]
    raw = animal.session_frames(1, 0, 1, noise=False)[0]
    inner = (slice(20, -20), slice(20, -20))
    err = np.abs(other - ref)[inner].mean() / ref[inner].mean()
    unaligned = np.abs(raw - ref)[inner].mean() / ref[inner].mean()
    assert err < 0.01, err
    assert unaligned > 5 * err


def test_wobble_follows_documented_field():
    animal = simulate_animal(tiny_config(STATIC, wobble=2.5, wobble_scale=30.0, motion_std=1.0), seed=6)
    gt = animal.ground_truth
    assert gt.wobble_basis.shape == (2, 3, 2, 96, 96)
    s, t = 1, 40
    frame = animal.session_frames(s, t, t + 1, noise=False)[0] - animal.config.offset
    d = gt.motion[s][t]
    wob = np.tensordot(gt.wobble_coef[gt.session_slice(s)][t], gt.wobble_basis[s], axes=1)
    assert np.abs(wob).max() > 0.5
    yy, xx = np.mgrid[:96, :96].astype(np.float32)
    static = gt.baseline_session[s]
    inner = (slice(15, -15), slice(15, -15))

    def model(with_wobble):
        my = yy - d[0] - (wob[0] if with_wobble else 0)
        mx = xx - d[1] - (wob[1] if with_wobble else 0)
        return cv2.remap(static, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_CUBIC)

    err = np.abs(frame - model(True))[inner].mean() / static[inner].mean()
    rigid_only = np.abs(frame - model(False))[inner].mean() / static[inner].mean()
    assert err < 0.004, err
    assert rigid_only > 3 * err


@pytest.mark.parametrize("name", ["dense_lowsnr", "vessel_poor", "wobble", "benchmark_608"])
def test_every_preset_renders(name):
    small = dict(height=80, width=80, frames_per_session=40, n_sessions=2,
                 n_neurons=min(PRESETS[name].n_neurons, 15))
    animal = simulate_animal(preset(name, **small), seed=0)
    f = animal.session_frames(1, 0, 40)
    assert f.shape == (40, 80, 80) and f.std() > 1
    assert np.isfinite(animal.ground_truth.maps).all()


def test_noise_variance_follows_poisson_gaussian_model():
    gain, read = 0.5, 2.0
    cfg = tiny_config(STATIC, motion_std=0.0, n_jumps=0, dtype="uint16", offset=100.0,
                 gain=gain, read_noise=read, frames_per_session=400)
    animal = simulate_animal(cfg, seed=7)
    y = animal.session_frames(0).astype(np.float64)
    mean = animal.session_frames(0, 0, 1, noise=False)[0].astype(np.float64) - cfg.offset
    var = y.var(axis=0, ddof=1)
    slope, intercept = np.polyfit(mean.ravel(), var.ravel(), 1)
    assert abs(slope - gain) < 0.05 * gain, slope
    assert abs(intercept - (read ** 2 + 1 / 12)) < 0.25 * read ** 2 + 2.0, intercept
    np.testing.assert_allclose(y.mean(axis=0).mean() - cfg.offset, mean.mean(), rtol=0.01)


def test_turnover_flags_match_silent_traces():
    cfg = tiny_config(n_sessions=4, overlap=0.3, n_neurons=40, height=128, width=128)
    gt = simulate_animal(cfg, seed=9).ground_truth
    for s in range(gt.n_sessions):
        c = gt.C[:, gt.session_slice(s)]
        assert np.all(c[~gt.active[:, s]] == 0)
        assert np.all(c[gt.active[:, s]].max(axis=1) > 0)
    assert gt.active.any(axis=1).all()
    frac = gt.active.mean()
    assert 0.3 < frac < 0.65, frac                       # own session + 30 % of the other three


def test_calcium_is_spikes_through_unit_peak_kernel(tiny):
    gt = tiny.ground_truth
    b, a = calcium_kernel_coefficients(0.15, 0.8, 20.0)
    from scipy.signal import lfilter

    h = lfilter(b, a, np.r_[1.0, np.zeros(200)])
    assert abs(h.max() - 1) < 1e-9 and h[0] > 0
    k = int(np.argmax(gt.S.sum(axis=1)))
    bk, ak = calcium_kernel_coefficients(float(gt.tau_rise[k]), float(gt.tau_decay[k]), gt.fps)
    sl = gt.session_slice(0)
    np.testing.assert_allclose(gt.C[k, sl], lfilter(bk, ak, gt.S[k, sl].astype(np.float64)), rtol=1e-4, atol=1e-3)
    rates = (gt.S > 0).sum(axis=1) / (gt.C.shape[1] / gt.fps)
    assert 0.02 < np.median(rates) < 1.0


def test_gaussian_footprints_have_the_requested_size():
    cfg = tiny_config(footprint_source="gaussian", neuron_diameter=8.0, dendrite_weight=0.0,
                 size_jitter=0.0, n_neurons=10)
    gt = simulate_animal(cfg, seed=1).ground_truth
    assert gt.footprint_source == "gaussian"
    a = gt.footprints_ref
    diam = 2 * np.sqrt((a >= 0.5 * a.max(axis=(1, 2), keepdims=True)).sum(axis=(1, 2)) / np.pi)
    assert abs(np.median(diam) - 8.0) < 1.0, diam


def test_real_footprints_used_when_present(shared_data):
    if not (shared_data / "caliali_sim_footprints" / "A.mat").is_file():
        pytest.skip("footprint bank absent")
    gt = simulate_animal(tiny_config(footprint_source="real"), seed=1).ground_truth
    assert gt.footprint_source == "real"
    a = gt.footprints_ref
    diam = 2 * np.sqrt((a >= 0.5 * a.max(axis=(1, 2), keepdims=True)).sum(axis=(1, 2)) / np.pi)
    assert abs(np.median(diam) - PRESETS["demo"].neuron_diameter) < 2.0


def _read_movie(path, n):
    try:
        from califlow.io import open_movie
    except ImportError:
        open_movie = None
    if open_movie is not None:
        return open_movie(path).read(0, n)
    if path.suffix == ".tif":
        import tifffile

        return tifffile.imread(path)
    frames = []
    for f in sorted(path.glob("*.avi"), key=lambda p: int(p.stem)):
        cap = cv2.VideoCapture(str(f))
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(img[..., 0])
    return np.stack(frames)


def test_miniscope_folder_round_trip(tiny, tmp_path):
    animal = simulate_animal(tiny_config(frames_per_file=32), seed=3)
    paths = write_animal(animal, tmp_path / "a", format="miniscope")
    assert [p.name for p in paths] == ["session01", "session02"]
    assert sorted(p.name for p in paths[0].iterdir()) == ["0.avi", "1.avi", "2.avi", "metaData.json",
                                                          "timeStamps.csv"]
    np.testing.assert_array_equal(_read_movie(paths[0], 70), animal.session_frames(0))
    with open(paths[0] / "timeStamps.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Frame Number", "Time Stamp (ms)", "Buffer Index"] and len(rows) == 71
    assert rows[2][1] == "50"                             # 20 fps
    assert not list(tmp_path.glob("a/.*"))               # no temporary leftovers


def test_tiff_round_trip_uint16(tmp_path):
    animal = simulate_animal(tiny_config().as_uint16(), seed=3)
    paths = write_animal(animal, tmp_path, format="tiff")
    frames = _read_movie(paths[1], 70)
    assert frames.dtype == np.uint16
    np.testing.assert_array_equal(frames, animal.session_frames(1))
    assert frames.mean() > 500                           # 16-bit intensities, not 8-bit ones


def test_ground_truth_store_round_trip(tiny, tmp_path):
    gt = tiny.ground_truth
    path = save_ground_truth(gt, tmp_path / "gt.zarr")
    back = load_ground_truth(path)
    for name in ("C", "S", "active", "session_bounds", "maps", "vessels_session", "centers_ref", "motion_concat"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gt, name), err_msg=name)
    np.testing.assert_array_equal(back.footprints, gt.footprints)
    assert back.config == gt.config and back.shape == gt.shape and back.fps == gt.fps
    assert [m.shape for m in back.motion] == [(70, 2), (70, 2)]
    from califlow.errors import InputError

    with pytest.raises(InputError, match="not a ground-truth store"):
        load_ground_truth(tmp_path)


def test_write_cohort_sheet_and_distinct_animals(tmp_path):
    sheet = write_cohort(tmp_path / "c", tiny_config(n_sessions=1, frames_per_session=20), 2, seed=1)
    with open(sheet) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [(r["animal"], r["session"]) for r in rows] == [("animal01", "session01"), ("animal02", "session01")]
    assert all(r["fps"] == "20" for r in rows)
    g1 = load_ground_truth(tmp_path / "c" / "animal01" / "ground_truth.zarr")
    g2 = load_ground_truth(tmp_path / "c" / "animal02" / "ground_truth.zarr")
    assert g1.seed != g2.seed and not np.array_equal(g1.centers_ref, g2.centers_ref)


def test_cli_simulate(tmp_path):
    from califlow.cli import main

    rc = main(["simulate", str(tmp_path / "o"), "--set", "frames_per_session=20", "--set", "n_sessions=1",
               "--set", "height=64", "--set", "width=64", "--set", "n_neurons=5"])
    assert rc == 0 and (tmp_path / "o" / "sessions.tsv").is_file()
    assert main(["simulate", str(tmp_path / "p"), "--set", "overlap=3"]) == 1
    assert not (tmp_path / "p" / "sessions.tsv").exists()


def test_presets_and_bad_parameters():
    for name, cfg in PRESETS.items():
        assert cfg.n_sessions >= 1, name
    assert PRESETS["benchmark_608"].height == 608 and PRESETS["benchmark_608"].dtype == "uint8"
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset("nope")
    with pytest.raises(ConfigError, match="tau_rise"):
        preset("demo", tau_rise=2.0)
    with pytest.raises(ConfigError, match="unknown parameter 'neurons'"):
        preset("demo", neurons=3)
    with pytest.raises(ConfigError, match="format"):
        write_animal(simulate_animal(tiny_config(), 0), "/nonexistent", format="mp4")
    with pytest.raises(ConfigError, match="8-bit"):
        write_animal(simulate_animal(tiny_config(), 0), "/nonexistent", dtype="uint16")
    with pytest.raises(IndexError, match="session 5"):
        simulate_animal(tiny_config(), 0).session_frames(5, 0, 1)


def test_out_of_focus_cells_add_blobs_with_transients_and_nothing_else():
    from califlow.simulate import preset, simulate_animal

    cfg = preset("default", height=64, width=64, n_sessions=2, frames_per_session=120, n_neurons=8,
                 translation=0.0, deformation=0.0, motion_std=0.0, n_jumps=0)
    plain = simulate_animal(cfg, seed=3)
    blobs = simulate_animal(cfg.replace(n_defocused=3, defocus_amplitude=1.0), seed=3)
    np.testing.assert_array_equal(plain.ground_truth.C, blobs.ground_truth.C)    # neurons untouched
    extra = blobs.session_frames(1, noise=False) - plain.session_frames(1, noise=False)
    assert extra.min() > -1e-3
    centres = np.asarray(blobs.ground_truth.extra["defocused_centers"])
    sigma = np.asarray(blobs.ground_truth.extra["defocused_sigma"])
    assert centres.shape == (3, 2) and np.all(sigma > 0.8 * cfg.neuron_diameter)
    yy, xx = np.mgrid[:64, :64]
    near = np.zeros((64, 64), bool)
    for (cy, cx), s in zip(centres, sigma):
        near |= (yy - cy) ** 2 + (xx - cx) ** 2 < (4 * s) ** 2
        if 0 <= cy < 64 and 0 <= cx < 64:
            course = extra[:, int(cy), int(cx)]
            assert course.max() > 0.3 * cfg.amplitude and np.median(course) < 0.5 * course.max()  # transients
    assert np.abs(extra[:, ~near]).max() < 0.05 * cfg.amplitude if (~near).any() else True
