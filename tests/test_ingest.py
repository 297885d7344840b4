"""Downsampling (califlow.preprocess.downsample) and ingest to ingest.zarr against direct numpy references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
import zarr
from test_io_helpers import gapped_times_ms, movie_u8, write_avi, write_miniscope_v4

from califlow import __version__
from califlow.errors import ConfigError, InputError
from califlow.io.ingest import ingest
from califlow.io.isxd import write_isxd_movie
from califlow.preprocess.downsample import downsample_spatial, downsample_temporal


def ref_spatial(frames, s):
    n, h, w = frames.shape
    hh, ww = h // s, w // s
    x = frames[:, :hh * s, :ww * s].astype(np.float64)
    return x.reshape(n, hh, s, ww, s).mean(axis=(2, 4))


def ref_temporal(frames, k, valid):
    out = []
    for a in range(0, frames.shape[0], k):
        v = valid[a:a + k]
        out.append(frames[a:a + k][v].mean(axis=0) if v.any() else np.full(frames.shape[1:], np.nan))
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_spatial_block_mean(dtype, s):
    rng = np.random.default_rng(s)
    frames = (rng.random((5, 17, 23)) * 1000).astype(dtype)
    out = downsample_spatial(frames, s)
    assert out.dtype == np.float32 and out.shape == (5, 17 // s, 23 // s)
    np.testing.assert_allclose(out, ref_spatial(frames, s), rtol=1e-6, atol=1e-4)


def test_spatial_matches_inter_area_for_divisible_sizes():
    rng = np.random.default_rng(0)
    frames = rng.random((3, 24, 36)).astype(np.float32) * 255
    out = downsample_spatial(frames, 3)
    area = np.stack([cv2.resize(f, (12, 8), interpolation=cv2.INTER_AREA) for f in frames])
    np.testing.assert_allclose(out, area, atol=1e-3)


def test_spatial_rejects_bad_factor():
    with pytest.raises(ValueError, match="spatial_ds"):
        downsample_spatial(np.zeros((1, 4, 4)), 0)
    with pytest.raises(ValueError, match="larger than"):
        downsample_spatial(np.zeros((1, 4, 4)), 5)


def test_temporal_blocks_trailing_and_dropped():
    rng = np.random.default_rng(1)
    frames = rng.random((11, 4, 5)).astype(np.float32)
    t = np.arange(11) * 0.1
    out, ts = downsample_temporal(frames, 3, timestamps=t)
    assert out.shape == (4, 4, 5)
    np.testing.assert_allclose(out, ref_temporal(frames, 3, np.ones(11, bool)), rtol=1e-6)
    np.testing.assert_allclose(ts, [0.1, 0.4, 0.7, 0.95])  # last block: frames 9 and 10
    valid = np.ones(11, bool)
    valid[[3, 4, 5, 7]] = False
    frames[~valid] = np.nan
    out, _ = downsample_temporal(frames, 3, valid=valid)
    ref = ref_temporal(frames, 3, valid)
    assert np.isnan(out[1]).all()
    np.testing.assert_allclose(out[[0, 2, 3]], ref[[0, 2, 3]], rtol=1e-6)


def test_ingest_miniscope_with_gap_against_reference(tmp_path):
    frames = movie_u8(25, 18, 26)  # not multiples of 4: the last 2 rows and columns are cropped
    times = gapped_times_ms(25, 30.0, {11: 4}, jitter_ms=1.0)  # grid frames 12..15 dropped
    folder = write_miniscope_v4(tmp_path / "Miniscope", frames, times, frames_per_file=10)
    out = tmp_path / "ingest.zarr"
    attrs = ingest(folder, out, spatial_ds=4, temporal_ds=3, chunk_frames=5, params={"downsampling": {"x": 1}})
    # reference on the 29-frame grid
    grid = np.full((29, 18, 26), np.nan)
    keep = np.r_[0:12, 16:29]
    grid[keep] = frames
    valid = np.zeros(29, bool)
    valid[keep] = True
    ref = ref_temporal(ref_spatial(np.nan_to_num(grid), 4), 3, valid)
    assert np.isnan(ref[4]).all()  # block 12..14 fully dropped; block 15..17 partly
    ref[4] = ref[3] + (ref[5] - ref[3]) / 2  # linear interpolation in time
    g = zarr.open_group(str(out), mode="r")
    movie = g["movie"][:]
    assert movie.shape == (10, 4, 6) and movie.dtype == np.float32
    np.testing.assert_allclose(movie, ref, rtol=1e-5, atol=1e-4)
    assert attrs["n_frames"] == 10 and attrs["interpolated_frames"] == [4]
    assert attrs["dropped_frames"] == [12, 13, 14, 15]
    assert attrs["frames_per_file"] == [10, 10, 5] and attrs["file_order"] == ["0.avi", "1.avi", "2.avi"]
    assert attrs["raw_shape"] == [29, 18, 26] and attrs["raw_dtype"] == "uint8"
    assert attrs["crop"] == {"rows_dropped": 2, "cols_dropped": 2}
    assert attrs["fps"] == pytest.approx(10.0, rel=0.03) and attrs["spatial_ds"] == 4 and attrs["temporal_ds"] == 3
    ts = g["timestamps"][:]
    grid_t = np.interp(np.arange(29), keep, (np.round(times) - np.round(times[0])) / 1e3)
    np.testing.assert_allclose(ts, [grid_t[a:a + 3].mean() for a in range(0, 29, 3)], atol=1e-9)
    assert g.attrs["califlow_version"] == __version__ and g.attrs["params"] == {"downsampling": {"x": 1}}
    # chunking does not change the result
    attrs2 = ingest(folder, tmp_path / "big.zarr", spatial_ds=4, temporal_ds=3, chunk_frames=300)
    assert np.array_equal(zarr.open_group(str(tmp_path / "big.zarr"), mode="r")["movie"][:], movie)
    assert attrs2["n_frames"] == 10


def test_ingest_isxd_exact_and_leading_trailing_drops(tmp_path):
    rng = np.random.default_rng(5)
    movie = rng.integers(0, 60000, size=(9, 6, 8), dtype=np.uint16)
    path = write_isxd_movie(tmp_path / "m.isxd", movie, period_s=0.1, dropped=[0, 8])
    attrs = ingest(path, tmp_path / "i.zarr")
    out = zarr.open_group(str(tmp_path / "i.zarr"), mode="r")["movie"][:]
    assert np.array_equal(out[1:8], movie[1:8].astype(np.float32))
    odd = ingest(path, tmp_path / "odd.zarr", spatial_ds=4)  # 6x8 -> 1x2, rows 4-5 cropped
    small = zarr.open_group(str(tmp_path / "odd.zarr"), mode="r")["movie"][:]
    np.testing.assert_allclose(small[1:8], ref_spatial(movie[1:8], 4), rtol=1e-6)
    assert odd["crop"] == {"rows_dropped": 2, "cols_dropped": 0}
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[8], out[7])  # held at the ends
    assert attrs["interpolated_frames"] == [0, 8] and attrs["fps"] == pytest.approx(10.0)


def test_ingest_errors_leave_nothing(tmp_path):
    frames = movie_u8(30, 16, 16)
    good = write_avi(tmp_path / "good.avi", frames, "GREY", fps=20.0)
    out = tmp_path / "ingest.zarr"
    ingest(good, out)
    before = zarr.open_group(str(out), mode="r")["movie"][:]
    bad = tmp_path / "bad.avi"
    data = good.read_bytes()
    bad.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(InputError, match=r"bad\.avi: the file is truncated"):
        ingest(bad, out)
    assert np.array_equal(zarr.open_group(str(out), mode="r")["movie"][:], before)  # previous store intact
    with pytest.raises(InputError, match="truncated"):
        ingest(bad, tmp_path / "new.zarr")
    assert not (tmp_path / "new.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.avi", "good.avi", "ingest.zarr"]
    with pytest.raises(ConfigError, match="downsampling.spatial_ds must be an integer >= 1"):
        ingest(good, tmp_path / "x.zarr", spatial_ds=0)
    with pytest.raises(ConfigError, match="downsampling.temporal_ds"):
        ingest(good, tmp_path / "x.zarr", temporal_ds=1.5)
    assert not (tmp_path / "x.zarr").exists()


def test_ingest_fps_fallbacks(tmp_path):
    movie = np.arange(12 * 8 * 8, dtype=np.uint16).reshape(12, 8, 8)
    tifffile.imwrite(tmp_path / "m.tif", movie)
    a = ingest(tmp_path / "m.tif", tmp_path / "a.zarr", temporal_ds=2, params={"general": {"sf": 15.0}})
    assert a["fps"] == pytest.approx(7.5) and a["fps_from"] == "default (general.sf)"
    b = ingest(tmp_path / "m.tif", tmp_path / "b.zarr", fps=30.0)
    assert b["fps"] == 30.0 and b["fps_from"] == "argument"
    out = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")
    assert np.array_equal(out["movie"][:], movie.astype(np.float32)) and "timestamps" not in out


def test_ingest_simulated_miniscope_session_is_exact(tmp_path):
    simulate = pytest.importorskip("califlow.simulate")
    config = simulate.preset("demo", n_sessions=1, frames_per_session=120, frames_per_file=50)
    animal = simulate.simulate_animal(config, seed=3)
    folder = simulate.write_animal(animal, tmp_path / "animal")[0]
    attrs = ingest(folder, tmp_path / "ingest.zarr", spatial_ds=2, temporal_ds=2)
    truth = animal.session_frames(0, 0, 120)
    expected, _ = downsample_temporal(ref_spatial(truth, 2).astype(np.float32), 2)
    movie = zarr.open_group(str(tmp_path / "ingest.zarr"), mode="r")["movie"][:]
    np.testing.assert_allclose(movie, expected, rtol=1e-6, atol=1e-4)
    assert attrs["fps"] == pytest.approx(config.fps / 2) and attrs["frames_per_file"] == [50, 50, 20]
    assert attrs["dropped_frames"] == [] and attrs["reader"] == "miniscope_v4"


def _video(path, codec: str, frames, color: bool = False):
    import cv2

    fourcc = {"ffv1": "FFV1", "mjpeg": "MJPG", "raw": "Y800"}[codec]
    h, w = frames.shape[1:]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 20, (w, h), isColor=color)
    assert vw.isOpened(), f"OpenCV cannot write {codec}"
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if color else f)
    vw.release()
    return path


def _chunks(data: bytes) -> list[tuple[int, int]]:
    """(payload offset, size) of each frame chunk (``00dc``/``00db``) of an AVI's movi list."""
    pos, out = data.find(b"movi") + 4, []
    while pos + 8 <= len(data) and data[pos + 2:pos + 4] in (b"dc", b"db"):
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        out.append((pos + 8, size))
        pos += 8 + size + (size & 1)
    return out


def _overwrite(path, frame: int, n: int = 32):
    """Overwrite ``n`` bytes in the middle of the payload of ``frame``'s chunk."""
    data = bytearray(path.read_bytes())
    off, size = _chunks(bytes(data))[frame]
    start = off + size // 2 - n // 2
    data[start:start + n] = b"\x55" * n
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def smooth_frames():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:48, :64]
    base = 80 + 40 * np.sin(yy / 7.0) * np.cos(xx / 9.0)
    return np.stack([np.clip(base + rng.normal(0, 3, base.shape), 0, 255) for _ in range(60)]).astype(np.uint8)


@pytest.mark.parametrize("codec", ["ffv1", "mjpeg"])
def test_damaged_frames_are_flagged_dropped_and_listed(tmp_path, smooth_frames, codec):
    """Bytes overwritten mid-file: every frame that decodes wrong is flagged, interpolated and listed."""
    import cv2

    from califlow.io.ingest import ingest

    clean = _video(tmp_path / "clean.avi", codec, smooth_frames, color=codec == "mjpeg")
    bad = tmp_path / "0.avi"
    bad.write_bytes(clean.read_bytes())
    _overwrite(bad, 30)
    def decode(p):  # OpenCV goes on after a packet that fails; that frame counts as all wrong
        cap = cv2.VideoCapture(str(p))
        out = []
        for _ in range(int(cap.get(cv2.CAP_PROP_FRAME_COUNT))):
            ok, f = cap.read()
            out.append(np.full((48, 64), -999) if not ok else cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) if f.ndim == 3
                       else f)
        return np.stack(out).astype(np.int16)
    wrong = set(np.flatnonzero(np.abs(decode(bad) - decode(clean)).max(axis=(1, 2)) > 0).tolist())
    assert wrong, "the overwrite should damage some frames"
    attrs = ingest(bad, tmp_path / "ingest.zarr", fps=20.0)
    flagged = {d["frame"] for d in attrs["damaged_frames"]}
    assert wrong <= flagged and len(flagged) <= len(wrong) + 1, (sorted(wrong), sorted(flagged))
    assert all(d["file"] == str(bad) and d["message"] for d in attrs["damaged_frames"])
    assert set(attrs["interpolated_frames"]) == flagged and attrs["dropped_frames"] == []
    movie = zarr.open_group(str(tmp_path / "ingest.zarr"), mode="r")["movie"][:]
    good = sorted(set(range(60)) - flagged)
    ref = decode(clean).astype(np.float32)
    # interpolated frames are close to the clean ones; measured frames are untouched
    np.testing.assert_array_equal(movie[good], ref[good])
    assert np.abs(movie[sorted(flagged)] - ref[sorted(flagged)]).mean() < 6.0

    with pytest.raises(InputError, match=r"0\.avi: frame\(s\) \d+.*downsampling.on_damaged_frames: drop"):
        ingest(bad, tmp_path / "fail.zarr", fps=20.0, on_damaged_frames="fail")
    assert not list(tmp_path.glob("*fail*"))
    assert ingest(clean, tmp_path / "ok.zarr", fps=20.0)["damaged_frames"] == []


def test_raw_avi_short_packet_is_flagged_and_payload_damage_is_not_visible(tmp_path, smooth_frames):
    """Raw frames carry no checksum: overwritten pixels cannot be seen; a cut packet can."""
    from califlow.io.damage import scan_video

    raw = _video(tmp_path / "raw.avi", "raw", smooth_frames)
    payload = tmp_path / "payload.avi"
    payload.write_bytes(raw.read_bytes())
    _overwrite(payload, 30, 16)
    assert scan_video(payload)[0] == []  # documented limit
    data = bytearray(raw.read_bytes())
    off, size = _chunks(bytes(data))[1]
    data[off - 4:off] = (size // 2).to_bytes(4, "little")  # frame 1's packet claims half a frame
    short = tmp_path / "short.avi"
    short.write_bytes(bytes(data))
    damaged, _ = scan_video(short)
    assert 1 in {d.frame for d in damaged}


def _float_tiff(path, nan_frames=(), blank_frames=(), t=60):
    frames = movie_u8(t, 24, 24, seed=4).astype(np.float32) + 10
    for i in nan_frames:
        frames[i, 3, 5] = np.nan
    for i in blank_frames:
        frames[i] = 0.0
    tifffile.imwrite(path, frames, photometric="minisblack")
    return frames


def test_nan_and_blank_frames_are_counted_ranged_and_interpolated(tmp_path):
    """Every unusable frame is listed (not the first 10), as a count plus ranges; none reaches the movie."""
    nan = list(range(3, 17)) + [30]          # 15 frames with a NaN pixel
    blank = [40, 41, 55]                     # black frames (every pixel 0)
    frames = _float_tiff(tmp_path / "s.tif", nan, blank)
    attrs = ingest(tmp_path / "s.tif", tmp_path / "ingest.zarr")
    assert attrs["nonfinite_frames"] == nan and attrs["blank_frames"] == blank
    assert attrs["interpolated_frames"] == sorted(nan + blank)
    movie = zarr.open_group(str(tmp_path / "ingest.zarr"), mode="r")["movie"][...]
    assert np.isfinite(movie).all()
    # linear in time between the nearest usable frames (2 and 17)
    w = (np.arange(1, 15) / 15.0)[:, None, None]
    np.testing.assert_allclose(movie[3:17], frames[2] + w * (frames[17] - frames[2]), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(movie[18:30], frames[18:30])


def test_unusable_frames_fail_with_all_ranges_under_fail(tmp_path):
    _float_tiff(tmp_path / "s.tif", nan_frames=list(range(0, 24, 2)), blank_frames=[50])
    with pytest.raises(InputError) as err:
        ingest(tmp_path / "s.tif", tmp_path / "ingest.zarr", on_damaged_frames="fail")
    msg = str(err.value)
    assert "s.tif" in msg
    assert "12 frame(s) with NaN or infinite pixels (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22)" in msg
    assert "1 blank frame(s) (every pixel equal: 50)" in msg
    assert not (tmp_path / "ingest.zarr").exists() and list(tmp_path.iterdir()) == [tmp_path / "s.tif"]


@pytest.mark.parametrize("value", [0.0, 117.0, np.nan])
def test_black_constant_or_nan_session_is_refused_naming_the_file(tmp_path, value):
    tifffile.imwrite(tmp_path / "flat.tif", np.full((20, 16, 16), value, np.float32), photometric="minisblack")
    with pytest.raises(InputError, match=r"flat\.tif: no usable frame: all 20 recorded frames are unusable"):
        ingest(tmp_path / "flat.tif", tmp_path / "ingest.zarr")
    assert list(tmp_path.iterdir()) == [tmp_path / "flat.tif"]
