"""Motion correction: warping, vesselness, rigid registration against simulated ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from sim_cases import moving_animal

from califlow.errors import InputError
from califlow.motion.options import motion_options
from califlow.motion.rigid import estimate_rigid_motion, repair_outliers
from califlow.motion.session import check_crop
from califlow.motion.vessels import bv_image, vesselness
from califlow.motion.warp import largest_valid_rectangle, translate_stack, valid_box
from califlow.simulate import preset, simulate_animal
from califlow.simulate.scores import motion_error

SIZE = 128
FRAMES = 400


@pytest.fixture(scope="module")
def jumpy_session():
    """Default preset with the benchmark's motion: AR(1) std 2 px plus jumps up to 10 px."""
    animal = moving_animal(SIZE, FRAMES, jump_max=10.0, n_jumps=3, seed=11)
    return animal.session_frames(0).astype(np.float32), animal.ground_truth


def test_translate_stack_subpixel_accuracy():
    yy, xx = np.mgrid[0:64, 0:80].astype(np.float64)

    def scene(dy, dx):
        return (np.sin((yy + dy) / 5.0) * np.cos((xx + dx) / 7.0) + 0.3 * np.sin((xx + dx) / 3.0)).astype(np.float32)

    shifts = np.array([[0.0, 0.0], [0.37, -1.81], [-2.5, 3.25]])
    movie = np.stack([scene(-d[0], -d[1]) for d in shifts])  # raw_t(q) = S(q - d_t)
    out = translate_stack(movie, shifts, order=3)
    ref = scene(0.0, 0.0)
    inner = (slice(4, -4), slice(4, -4))
    for k in range(3):
        assert np.nanmax(np.abs(out[k][inner] - ref[inner])) < 0.02
    # samples outside the frame are NaN, inside are finite
    assert np.all(np.isnan(out[2, :3])) and np.all(np.isnan(out[2, :, -4:]))
    assert np.all(np.isfinite(out[2, 3:, :-4]))


def test_valid_box_and_largest_rectangle():
    box = valid_box(np.array([[1.2, -3.0], [-2.0, 0.5]]), (50, 60))
    assert box == (2, 48, 3, 59)
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((9, 11)) > 0.15
        y0, y1, x0, x1 = largest_valid_rectangle(mask)
        assert mask[y0:y1, x0:x1].all()
        best = max((b - a) * (d - c) for a in range(9) for b in range(a + 1, 10) for c in range(11)
                   for d in range(c + 1, 12) if mask[a:b, c:d].all()) if mask.any() else 0
        assert (y1 - y0) * (x1 - x0) == best


def test_vesselness_responds_to_dark_ridges_only():
    img = np.full((60, 60), 100.0, np.float32)
    img[:, 29:32] -= 40  # dark vessel
    img[10:13, :] += 40  # bright ridge
    v = vesselness(img, [1.5, 2.0])
    assert v[40, 30] > 0.5 * v.max()
    assert v[11, 45] < 0.05 * v.max()


def test_bv_image_matches_ground_truth_vessels(jumpy_session):
    _, gt = jumpy_session
    bv = bv_image(gt.baseline_session[0], (1.5, 2.25))
    r = np.corrcoef(bv.ravel(), gt.vessels_session[0].ravel())[0, 1]
    assert bv.min() >= 0 and bv.max() == pytest.approx(1.0)
    assert r >= 0.7


def test_rigid_bv_accuracy_on_jumpy_motion(jumpy_session):
    movie, gt = jumpy_session
    res = estimate_rigid_motion(movie, motion_options(reference="BV", bv_size=(1.5, 2.25), max_shift=20))
    rmse, worst = motion_error(res.shifts, gt.motion[0].astype(np.float64))
    assert rmse <= 0.1
    assert worst <= 0.5
    assert not res.outliers.any()
    np.testing.assert_allclose(np.median(res.shifts, axis=0), 0, atol=1e-9)


def test_rigid_neuron_reference_on_vessel_poor_fov():
    cfg = preset("vessel_poor", height=SIZE, width=SIZE, n_sessions=2, frames_per_session=300,
                 motion_std=2.0, jump_max=10.0, n_jumps=2)
    animal = simulate_animal(cfg, seed=12)
    movie = animal.session_frames(0).astype(np.float32)
    res = estimate_rigid_motion(movie, motion_options(reference="neuron", gsig=2.5, max_shift=20))
    rmse, worst = motion_error(res.shifts, animal.ground_truth.motion[0].astype(np.float64))
    assert rmse <= 0.15
    assert worst <= 0.6


def test_blank_and_noise_frames_do_not_jump(jumpy_session):
    movie, gt = jumpy_session
    movie = movie[:200].copy()
    rng = np.random.default_rng(5)
    bad = [50, 51, 120, 199]
    movie[50] = 0.0                                    # dropped frame
    movie[51] = movie[51].mean()                        # blank frame
    movie[120] = rng.normal(movie.mean(), 20, movie.shape[1:])  # pure noise
    movie[199] = 255.0                                  # saturated frame
    res = estimate_rigid_motion(movie, motion_options(reference="BV", max_shift=20))
    assert set(bad) <= set(np.nonzero(res.outliers)[0])
    true = gt.motion[0][:200].astype(np.float64)
    err = (res.shifts - res.shifts.mean(0)) - (true - true.mean(0))
    e = np.sqrt((err ** 2).sum(1))
    assert e[bad].max() < 1.5        # interpolated from the neighbours, no 40-px jump
    good = np.setdiff1d(np.arange(200), bad)
    assert e[good].max() < 0.5
    assert np.abs(res.shifts).max() <= 20


def test_repair_outliers_interpolates():
    shifts = np.array([[0.0, 0.0], [1.0, 2.0], [30.0, -30.0], [3.0, 4.0]])
    q = np.array([0.9, 0.9, 0.1, 0.9])
    fixed, bad = repair_outliers(shifts, q, np.zeros(4, bool), 0.5)
    assert bad.tolist() == [False, False, True, False]
    np.testing.assert_allclose(fixed[2], [2.0, 3.0])


def test_featureless_movie_is_refused():
    movie = np.full((20, 48, 48), 7.0, np.float32)
    with pytest.raises(InputError, match="no frame matched"):
        estimate_rigid_motion(movie, name="blank.zarr")


def test_nan_frames_are_refused_listing_all_of_them():
    movie = np.random.default_rng(0).random((300, 40, 40)).astype(np.float32)
    bad = [17] + list(range(40, 52)) + [299]  # 14 frames, more than one chunk
    movie[bad, 3, 3] = np.nan
    with pytest.raises(InputError, match=r"bad\.zarr: 14 frame\(s\) contain NaN or infinite values "
                                         r"\(0-based\): 17, 40-51, 299$"):
        estimate_rigid_motion(movie, motion_options(template_frames=5, chunk_frames=100), name="bad.zarr")


def test_crop_guard_names_the_frames():
    shifts = np.zeros((100, 2))
    shifts[42] = [35.0, 0.0]
    box = valid_box(shifts, (100, 100))
    with pytest.raises(InputError, match=r"s1/ingest.zarr.*max_crop_fraction=0\.3.*frame 42 \(dy=\+35\.0"):
        check_crop(box, shifts, (100, 100), 0.3, "s1/ingest.zarr")
    assert check_crop(valid_box(shifts[:10], (100, 100)), shifts[:10], (100, 100), 0.3, "x") == 0.0


def test_motion_beyond_the_search_bound_is_kept_when_it_matches():
    shifts = np.zeros((6, 2))
    q = np.array([0.95, 0.96, 0.96, 0.97, 0.2, 0.96])
    bound = np.array([False, False, True, True, True, False])
    shifts[2:5] = [[20.4, 0], [20.6, 0], [20.0, 0]]
    fixed, bad = repair_outliers(shifts, q, bound, 0.5)
    assert bad.tolist() == [False, False, False, False, True, False]
    assert fixed[3, 0] == 20.6
