"""Concatenation into aligned.zarr: frames warped through the maps, order, attrs, errors."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from califlow.align import align_options, align_sessions, apply_map, concatenate, save_alignment
from califlow.align.maps import identity_map
from califlow.align.pipeline import Alignment
from califlow.align.score import random_smooth_field
from califlow.cnmfe.data import AlignedStore
from califlow.errors import InputError
from califlow.io.store import create_movie, open_group


def _write_enhanced(path, movie, fps=20.0):
    root = open_group(path, mode="w")
    arr = create_movie(root, "movie", movie.shape)
    arr[...] = movie
    if fps is not None:
        root.attrs["fps"] = fps
    root.attrs["source"] = f"raw/{path.name}"
    return path


def _alignment(shapes, seed=0, names=None):
    """A hand-made alignment: common grid 40x44, smooth maps into each session frame."""
    rng = np.random.default_rng(seed)
    maps = []
    for i in range(len(shapes)):
        m = identity_map((40, 44), (2 + 0.5 * i, 3 - 0.25 * i)) + random_smooth_field((40, 44), 15.0, 1.5, rng)
        maps.append(m)
    names = names or [f"s{i}" for i in range(len(shapes))]
    return Alignment(names=names, maps=np.stack(maps).astype(np.float32), session_shapes=list(shapes), path="BV",
                     bv_score=5.0, fallback=False, translations=np.zeros((len(shapes), 2)),
                     offsets=np.zeros((len(shapes), 2)), box=(0, 40, 0, 44), fov={"loss": 0.0}, metrics={})


@pytest.fixture
def sessions(tmp_path):
    rng = np.random.default_rng(1)
    shapes = [(46, 50), (47, 49), (45, 50)]
    lengths = [130, 75, 101]                  # not multiples of the 100-frame chunk
    movies = [rng.standard_normal((n,) + sh).astype(np.float32) + 20 for n, sh in zip(lengths, shapes)]
    paths = [_write_enhanced(tmp_path / f"s{i}.zarr", m) for i, m in enumerate(movies)]
    return shapes, movies, paths


def test_concatenate_warps_every_frame(sessions, tmp_path):
    shapes, movies, paths = sessions
    al = _alignment(shapes)
    projections = [{"mean": m.mean(0), "bv": m.std(0), "cn": m.max(0), "pnr": m.min(0)} for m in movies]
    out = tmp_path / "aligned.zarr"
    summary = concatenate(paths, al, out, projections=projections, params={"x": 1})
    root = zarr.open_group(str(out), mode="r")
    movie = root["movie"]
    assert movie.shape == (306, 40, 44) and movie.dtype == np.float32
    assert movie.chunks == (100, 40, 44)
    sess = root.attrs["sessions"]
    assert [(s["name"], s["start"], s["stop"], s["fps"]) for s in sess] == [
        ("s0", 0, 130, 20.0), ("s1", 130, 205, 20.0), ("s2", 205, 306, 20.0)]
    assert sess[1]["original_source"] == "raw/s1.zarr" and sess[1]["source"].endswith("s1.zarr")
    assert summary["n_frames"] == 306 and root.attrs["params"] == {"x": 1}
    data = movie[...]
    for i, (s, m) in enumerate(zip(sess, movies)):
        expect = apply_map(m, al.maps[i])
        got = data[s["start"]:s["stop"]]
        ok = np.isfinite(expect)
        assert ok.all()
        assert np.abs(got - expect).max() < 1e-4
    assert root["cn"].shape == (3, 40, 44)
    assert np.allclose(root["mean"][1], apply_map(movies[1].mean(0), al.maps[1]), atol=1e-4)
    assert root["valid"][...].all()


def test_pad_policy_fills_zeros(sessions, tmp_path):
    shapes, movies, paths = sessions
    al = _alignment(shapes)
    al.maps[2][:, :, :5] = np.nan                 # session 2 does not cover the left columns
    concatenate(paths, al, tmp_path / "a.zarr")
    m = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["movie"]
    assert (m[205:306, :, :5] == 0).all() and (m[205:306, :, 5:] != 0).all() and (m[0:205, :, :5] != 0).all()


def test_mismatched_inputs_are_refused_without_output(sessions, tmp_path):
    shapes, movies, paths = sessions
    out = tmp_path / "aligned.zarr"
    wrong = _alignment([(46, 50), (40, 40), (45, 50)])
    with pytest.raises(InputError, match="s1.zarr: frames are 47x49 but session 's1' was aligned "
                                         "with projections of 40x40"):
        concatenate(paths, wrong, out)
    slow = _write_enhanced(tmp_path / "slow.zarr", movies[1], fps=10.0)
    with pytest.raises(InputError, match="different frame rates .*s1: 10 fps"):
        concatenate([paths[0], slow, paths[2]], _alignment(shapes), out)
    bad = movies[2].copy()
    bad[57, 3, 3] = np.nan
    nanpath = _write_enhanced(tmp_path / "nan.zarr", bad)
    with pytest.raises(InputError, match="nan.zarr: frame 57 of session 's2' has NaN"):
        concatenate([paths[0], paths[1], nanpath], _alignment(shapes), out)
    with pytest.raises(InputError, match="missing.zarr is not a califlow Zarr store"):
        concatenate([paths[0], paths[1], tmp_path / "missing.zarr"], _alignment(shapes), out)
    nofps = _write_enhanced(tmp_path / "nofps.zarr", movies[0], fps=None)
    with pytest.raises(InputError, match="no 'fps' attribute"):
        concatenate([nofps, paths[1], paths[2]], _alignment(shapes), out)
    with pytest.raises(InputError, match="3 enhanced movies but 2 session names"):
        concatenate(paths, _alignment(shapes), out, names=["s0", "s1"])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".aligned.zarr")]   # no temporary left


def test_dropped_session_is_skipped(sessions, tmp_path):
    shapes, movies, paths = sessions
    al = _alignment([shapes[0], shapes[2]], names=["s0", "s2"])
    al.dropped = ["s1"]
    save_alignment(al, tmp_path / "alignment.zarr")
    concatenate(paths, tmp_path / "alignment.zarr", tmp_path / "a.zarr", names=["s0", "s1", "s2"])
    root = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert [s["name"] for s in root.attrs["sessions"]] == ["s0", "s2"]
    assert root["movie"].shape[0] == 130 + 101 and root.attrs["dropped"] == ["s1"]


def test_end_to_end_with_real_alignment(tmp_path):
    """Sessions cut from one textured scene at known offsets come out registered."""
    import cv2

    rng = np.random.default_rng(3)
    scene = cv2.GaussianBlur(rng.standard_normal((160, 160)).astype(np.float32), (0, 0), 2.0)
    offsets = [(30, 30), (36.5, 25.0), (24.0, 33.5)]
    projections, paths = [], []
    for i, (oy, ox) in enumerate(offsets):
        m = identity_map((96, 100), (oy, ox))
        img = apply_map(scene, m)
        projections.append({"bv": img, "cn": img, "mean": img, "pnr": img})
        frames = np.stack([img * (1 + 0.1 * k) for k in range(12)])
        paths.append(_write_enhanced(tmp_path / f"e{i}.zarr", frames))
    al = align_sessions(projections, None, align_options(projections="neuron", gSig=2.0))
    out = tmp_path / "aligned.zarr"
    concatenate(paths, al, out, projections=projections)
    root = zarr.open_group(str(out), mode="r")
    movie = root["movie"][...]
    first = [movie[s["start"]] for s in root.attrs["sessions"]]
    inner = (slice(8, -8), slice(8, -8))
    for f in first[1:]:
        assert np.corrcoef(f[inner].ravel(), first[0][inner].ravel())[0, 1] > 0.99


def test_vessel_pulsation_is_regressed_out_of_the_concatenated_movie(sessions, tmp_path):
    """A session whose projections.zarr holds vessel_beta and vessel_course: movie - course * beta."""
    from califlow.io.store import create_image

    shapes, movies, paths = sessions
    al = _alignment(shapes)
    rng = np.random.default_rng(2)
    proj_paths, pulses = [], []
    for i, (m, sh) in enumerate(zip(movies, shapes)):
        p = tmp_path / f"p{i}.zarr"
        g = open_group(p, mode="w")
        for key in ("mean", "bv", "cn", "pnr"):
            create_image(g, key, m.mean(0))
        if i == 1:  # only this session had vessels
            beta = rng.random(sh).astype(np.float32)
            course = rng.standard_normal(len(m)).astype(np.float32)
            create_image(g, "vessel_beta", beta)
            create_image(g, "vessel_course", course)
            pulses.append(course[:, None, None] * beta[None])
        else:
            pulses.append(np.zeros_like(m))
        proj_paths.append(p)
    concatenate(paths, al, tmp_path / "with.zarr", projections=proj_paths)
    concatenate(paths, al, tmp_path / "without.zarr")
    a = zarr.open_group(str(tmp_path / "with.zarr"), mode="r")["movie"][...]
    b = zarr.open_group(str(tmp_path / "without.zarr"), mode="r")["movie"][...]
    start = 0
    for k, (m, pulse) in enumerate(zip(movies, pulses)):
        n = len(m)
        expected = apply_map(pulse, al.maps[k], to="aligned", fill=0.0)
        np.testing.assert_allclose(b[start:start + n] - a[start:start + n], expected, atol=1e-4)
        start += n


@pytest.mark.parametrize("dtype, itemsize", [("float16", 2), ("uint16-scaled", 2)])
def test_half_size_dtypes_store_the_movie_within_their_stated_error(sessions, tmp_path, dtype, itemsize):
    shapes, movies, paths = sessions
    al = _alignment(shapes)
    al.maps[2][:, :, :5] = np.nan                 # padded pixels must stay exactly 0
    projections = [{"mean": m.mean(0), "bv": m.std(0), "cn": m.max(0), "pnr": m.min(0)} for m in movies]
    concatenate(paths, al, tmp_path / "f32.zarr")
    concatenate(paths, al, tmp_path / "half.zarr", dtype=dtype, projections=projections)
    ref = zarr.open_group(str(tmp_path / "f32.zarr"), mode="r")["movie"][...]
    raw = zarr.open_group(str(tmp_path / "half.zarr"), mode="r")["movie"]
    assert raw.dtype.itemsize == itemsize and raw.attrs["califlow_encoding"]["name"] == dtype
    store = AlignedStore(tmp_path / "half.zarr")  # what CNMF-E and cell QC read
    got = store.read(0, ref.shape[0])
    assert got.dtype == np.float32 and got.shape == ref.shape
    err = np.abs(got - ref)
    if dtype == "float16":
        assert (err <= np.abs(ref) * 2.0 ** -11 + 1e-7).all()
    else:
        step = store.encoding.scale
        assert 0 < step <= max(m.max() for m in movies) / 65534 * 1.0001   # the range of the sessions and 0
        assert err.max() <= step / 2 + 2 * np.spacing(np.float32(ref.max()))   # + float32 rounding
        assert err.max() > step / 10              # really quantised (not float32 in disguise)
    assert (got[205:306, :, :5] == 0).all()


def test_float16_refuses_values_it_cannot_hold(sessions, tmp_path):
    shapes, movies, paths = sessions
    big = movies[1].copy()
    big[42, 10, 10] = 7e4
    bigpath = _write_enhanced(tmp_path / "big.zarr", big)
    out = tmp_path / "aligned.zarr"
    with pytest.raises(InputError, match="big.zarr: frame 42 of session 's1' holds a value of magnitude 70000.*"
                                         "float16.*use float32"):
        concatenate([paths[0], bigpath, paths[2]], _alignment(shapes), out, dtype="float16")
    assert not out.exists()
    concatenate([paths[0], bigpath, paths[2]], _alignment(shapes), out, dtype="uint16-scaled")
    assert zarr.open_group(str(out), mode="r")["movie"][...].max() > 0   # the range pass covers it
