"""califlow.io.open_movie: every format, frame order, timing, dropped frames and bad input."""

from __future__ import annotations

import json
import shutil
from datetime import UTC

import cv2
import h5py
import numpy as np
import pytest
import tifffile
from test_io_helpers import gapped_times_ms, movie_u8, write_avi, write_avi16, write_miniscope_v4

from califlow.errors import InputError
from califlow.io import open_movie
from califlow.io.isxd import write_isxd_movie


def read_all(source, n=7):
    chunks = list(source.iter_chunks(n))
    starts = [s for s, _ in chunks]
    assert starts == list(range(0, n * len(chunks), n))[:len(chunks)]
    return np.concatenate([c for _, c in chunks])


# --------------------------------------------------------------------------- single videos
@pytest.mark.parametrize("fourcc", ["FFV1", "GREY"])
def test_lossless_avi_exact(tmp_path, fourcc):
    frames = movie_u8(23, 24, 32)
    src = open_movie(write_avi(tmp_path / "m.avi", frames, fourcc, fps=20.0))
    assert src.shape == (23, 24, 32) and src.dtype == np.uint8
    assert src.fps == 20.0
    out = read_all(src)
    assert out.dtype == np.uint8 and np.array_equal(out, frames)
    assert src.frames_per_file == [23]
    assert np.array_equal(src.read(5, 12), frames[5:12])


def test_mjpeg_gray_and_colour(tmp_path):
    frames = movie_u8(12, 32, 48)
    out = read_all(open_movie(write_avi(tmp_path / "g.avi", frames, "MJPG")))
    assert out.shape == frames.shape and out.dtype == np.uint8
    slope, offset = np.polyfit(frames.ravel().astype(float), out.ravel().astype(float), 1)
    assert abs(slope - 1) < 0.03 and abs(offset) < 4  # lossy, but full-range gray (the raw Y plane has slope 0.86)
    colour = np.stack([frames, frames // 2, 255 - frames], axis=-1)
    path = write_avi(tmp_path / "c.avi", colour, "MJPG")
    out = read_all(open_movie(path))
    cap = cv2.VideoCapture(str(path))
    ref = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        ref.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    assert out.ndim == 3 and np.array_equal(out, np.array(ref))


def test_16bit_ffv1_stays_uint16(tmp_path):
    pytest.importorskip("av")
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 65535, size=(9, 20, 28), dtype=np.uint16)
    src = open_movie(write_avi16(tmp_path / "m16.avi", frames))
    out = read_all(src, 4)
    assert src.dtype == np.uint16 and np.array_equal(out, frames)


def test_truncated_avi_names_file_and_frame(tmp_path):
    frames = movie_u8(40, 32, 32)
    path = write_avi(tmp_path / "t.avi", frames, "GREY")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    src = open_movie(path)
    with pytest.raises(InputError, match=r"t\.avi: the file is truncated.*stopped after frame \d+"):
        read_all(src)


def test_zero_frame_and_empty_files(tmp_path):
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_movie(empty)
    zero = write_avi(tmp_path / "zero.avi", np.zeros((0, 16, 16), np.uint8))
    with pytest.raises(InputError, match="zero.avi"):
        open_movie(zero)


# --------------------------------------------------------------------------- folders
def test_folder_natural_order_and_behaviour_files_ignored(tmp_path):
    frames = movie_u8(36, 16, 20)
    for i in range(12):
        write_avi(tmp_path / f"rec_{i}.avi", frames[3 * i:3 * i + 3], fps=25.0)
    write_avi(tmp_path / "behavCam1.avi", movie_u8(3, 16, 20, seed=9))
    src = open_movie(tmp_path)
    assert src.metadata["file_order"] == [f"rec_{i}.avi" for i in range(12)]
    assert src.metadata["skipped_files"] == ["behavCam1.avi"]
    out = read_all(src, 5)
    assert np.array_equal(out, frames)
    assert src.frames_per_file == [3] * 12 and src.fps == 25.0


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no \\*.avi chunk files"):
        open_movie(tmp_path)
    write_avi(tmp_path / "0.avi", movie_u8(3, 16, 20))
    write_avi(tmp_path / "1.avi", movie_u8(3, 16, 24))
    with pytest.raises(InputError, match=r"1\.avi: frame size 16x24 differs from 16x20"):
        open_movie(tmp_path)
    tif = tmp_path / "tifs"
    tif.mkdir()
    tifffile.imwrite(tif / "a1.tif", np.zeros((2, 8, 8), np.uint8))
    tifffile.imwrite(tif / "a2.tif", np.zeros((2, 8, 8), np.uint16))
    with pytest.raises(InputError, match=r"a2\.tif: pixel type uint16 differs from uint8"):
        open_movie(tif, file_extension="tif")


def test_miniscope_v4_timestamps_fps_and_gap(tmp_path):
    frames = movie_u8(25, 16, 24)
    times = gapped_times_ms(25, 30.0, {11: 2})  # 2 frames lost after recorded frame 11
    folder = write_miniscope_v4(tmp_path / "Miniscope", frames, times, frames_per_file=10)
    src = open_movie(folder)
    assert src.metadata["reader"] == "miniscope_v4"
    assert src.fps == pytest.approx(30.0, rel=0.02)  # not the AVI header's 60
    assert src.dropped.tolist() == [12, 13]
    assert src.shape == (27, 16, 24) and src.dtype == np.float32
    out = read_all(src, 6)
    assert out.shape == (27, 16, 24)
    assert np.isnan(out[[12, 13]]).all()
    recorded = np.delete(out, [12, 13], axis=0)
    assert np.array_equal(recorded, frames.astype(np.float32))  # later frames not shifted
    assert src.frames_per_file == [10, 10, 5]
    assert src.timestamps.shape == (27,)
    assert src.timestamps[14] == pytest.approx((np.round(times[12]) - np.round(times[0])) / 1e3)  # csv holds whole ms
    assert src.metadata["gaps"][0]["after_frame"] == 11 and src.metadata["gaps"][0]["missing"] == 2
    np.testing.assert_array_equal(src.read(10, 16), out[10:16])


def test_miniscope_v4_daq_counter_and_session_folder(tmp_path):
    frames = movie_u8(20, 16, 16)
    daq = np.arange(20) + 100
    daq[15:] += 1  # one frame lost between DAQ and PC before recorded frame 15
    times = gapped_times_ms(20, 20.0, {14: 1}, jitter_ms=0.0)
    session = tmp_path / "12_00_00"
    write_miniscope_v4(session / "Miniscope", frames, times, daq_frames=daq)
    write_miniscope_v4(session / "BehavCam_1", movie_u8(20, 16, 16, seed=5), times)
    (session / "metaData.json").write_text(json.dumps({"animalName": "m1"}))
    src = open_movie(session)
    assert src.files[0].parent.name == "Miniscope"
    assert src.metadata["dropped_from"] == "DAQ Frame Number"
    assert src.dropped.tolist() == [15]
    assert src.fps == pytest.approx(20.0, rel=1e-6)


def test_miniscope_v4_errors(tmp_path):
    frames = movie_u8(25, 16, 16)
    times = gapped_times_ms(25, 30.0, {})
    good = write_miniscope_v4(tmp_path / "good", frames, times)
    # timestamp rows != decoded frames
    extra = tmp_path / "extra"
    shutil.copytree(good, extra)
    with open(extra / "timeStamps.csv", "a") as fh:
        fh.write(f"25,{int(times[-1] + 33)},0\n")
    with pytest.raises(InputError, match="decode to 25 frames but 26 are expected from the timestamps in"):
        read_all(open_movie(extra))
    fewer = tmp_path / "fewer"
    shutil.copytree(good, fewer)
    lines = (fewer / "timeStamps.csv").read_text().splitlines()
    (fewer / "timeStamps.csv").write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(InputError, match=r"2\.avi: frame 2 of this file is frame 22 of the movie, but only 22 "
                                         r"frames are expected from the timestamps"):
        read_all(open_movie(fewer))
    # non-monotonic timestamps
    back = tmp_path / "back"
    shutil.copytree(good, back)
    lines = (back / "timeStamps.csv").read_text().splitlines()
    lines[8] = f"7,{int(times[3])},0"
    (back / "timeStamps.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="timestamps are not monotonic: frame 7"):
        open_movie(back)
    # a missing chunk file
    hole = tmp_path / "hole"
    shutil.copytree(good, hole)
    (hole / "1.avi").unlink()
    with pytest.raises(InputError, match=r"missing \[1\]"):
        open_movie(hole)
    # a truncated middle chunk
    cut = tmp_path / "cut"
    shutil.copytree(good, cut)
    data = (cut / "1.avi").read_bytes()
    (cut / "1.avi").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"1\.avi: .*the file is truncated"):
        read_all(open_movie(cut))
    # a middle chunk shorter than framesPerFile (e.g. re-encoded or partly copied)
    short = tmp_path / "short"
    shutil.copytree(good, short)
    write_avi(short / "1.avi", frames[10:17])
    with pytest.raises(InputError, match=r"1\.avi: decoded 7 frames but 10 were expected \(framesPerFile in .*"
                                         r"metaData.json\); the file breaks after frame 6 \(movie frame 16\)"):
        read_all(open_movie(short))
    # a bad timestamps file
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "timeStamps.csv").write_text("Frame,Time\n0,1\n")
    with pytest.raises(InputError, match="no 'Time Stamp \\(ms\\)' column"):
        open_movie(bad)


def test_miniscope_v3_camnum_and_first_timestamp(tmp_path):
    frames = movie_u8(24, 16, 20)
    for i in range(12):
        write_avi(tmp_path / f"msCam{i + 1}.avi", frames[2 * i:2 * i + 2])
    write_avi(tmp_path / "behavCam1.avi", movie_u8(5, 16, 20))
    rows = ["camNum\tframeNum\tsysClock\tbuffer"]
    for i in range(24):
        rows.append(f"1\t{i + 1}\t{(987654 if i == 0 else 1000 + 50 * i)}\t1")  # 20 fps, bogus first value
    for i in range(5):
        rows.append(f"0\t{i + 1}\t{1000 + 33 * i}\t1")
    (tmp_path / "timestamp.dat").write_text("\n".join(rows) + "\n")
    src = open_movie(tmp_path)
    assert src.metadata["reader"] == "miniscope_v3" and src.metadata["cam_num"] == 1
    assert src.metadata["file_order"][:3] == ["msCam1.avi", "msCam2.avi", "msCam3.avi"]
    assert src.fps == pytest.approx(20.0)
    assert src.dropped.size == 0 and src.dtype == np.uint8
    assert np.array_equal(read_all(src), frames)


# --------------------------------------------------------------------------- TIFF
def test_tiff_stack_pages_and_chunks(tmp_path):
    rng = np.random.default_rng(0)
    movie = rng.integers(0, 4000, size=(15, 12, 10), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", movie, imagej=True, metadata={"axes": "TYX", "finterval": 0.05})
    src = open_movie(tmp_path / "stack.tif")
    assert src.fps == pytest.approx(20.0) and src.dtype == np.uint16
    tifffile.imwrite(tmp_path / "shaped.tif", movie, metadata={"fps": 12.0})
    assert open_movie(tmp_path / "shaped.tif").fps == 12.0
    assert np.array_equal(read_all(src, 4), movie)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tw:
        for f in movie:
            tw.write(f, compression="zlib", contiguous=False)
    assert np.array_equal(read_all(open_movie(tmp_path / "pages.tif"), 4), movie)
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    for i in range(11):
        tifffile.imwrite(chunks / f"part{i + 1}.tiff", movie[i:i + 1] if i < 10 else movie[10:])
    src = open_movie(chunks, file_extension="tiff")
    assert src.metadata["file_order"][:3] == ["part1.tiff", "part2.tiff", "part3.tiff"]
    assert np.array_equal(read_all(src, 4), movie)


def test_truncated_tiffs(tmp_path):
    movie = np.arange(20 * 30 * 40, dtype=np.uint16).reshape(20, 30, 40)
    tifffile.imwrite(tmp_path / "s.tif", movie)
    with tifffile.TiffWriter(tmp_path / "p.tif") as tw:
        for f in movie:
            tw.write(f, compression="zlib", contiguous=False)
    for name in ("s.tif", "p.tif"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InputError, match=r"cut_s\.tif: the TIFF is truncated: frame 12"):
        open_movie(tmp_path / "cut_s.tif")
    with pytest.raises(InputError, match=r"cut_p\.tif: the TIFF is truncated"):
        open_movie(tmp_path / "cut_p.tif")


# --------------------------------------------------------------------------- isxd / h5 / NWB
def test_isxd_dropped_frames_are_nan_and_not_shifted(tmp_path):
    rng = np.random.default_rng(2)
    movie = rng.integers(0, 60000, size=(12, 7, 9), dtype=np.uint16)
    path = write_isxd_movie(tmp_path / "m.isxd", movie, period_s=0.05, dropped=[3, 4, 11])
    src = open_movie(path)
    assert src.shape == (12, 7, 9) and src.dtype == np.float32 and src.fps == pytest.approx(20.0)
    assert src.dropped.tolist() == [3, 4, 11]
    out = read_all(src, 5)
    keep = [i for i in range(12) if i not in (3, 4, 11)]
    assert np.isnan(out[[3, 4, 11]]).all()
    assert np.array_equal(out[keep], movie[keep].astype(np.float32))
    np.testing.assert_array_equal(src.read(2, 7), out[2:7])
    assert src.timestamps[5] == pytest.approx(0.25)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_isxd_dtypes(tmp_path, dtype):
    movie = (np.arange(5 * 4 * 6) % 250).reshape(5, 4, 6).astype(dtype)
    src = open_movie(write_isxd_movie(tmp_path / "m.isxd", movie, period_s=0.1))
    assert src.dtype == dtype and np.array_equal(read_all(src), movie)


def test_isxd_frame_header_footer_stripped(tmp_path):
    movie = np.arange(6 * 5 * 4, dtype=np.uint16).reshape(6, 5, 4)
    hf = np.full((4, 4), 65535, np.uint16)
    src = open_movie(write_isxd_movie(tmp_path / "raw.isxd", movie, period_s=0.05, frame_header_footer=hf))
    assert src.shape == (6, 5, 4) and np.array_equal(read_all(src), movie)


def test_isxd_errors(tmp_path):
    movie = np.ones((6, 5, 4), np.uint16)
    path = write_isxd_movie(tmp_path / "m.isxd", movie, period_s=0.05)
    data = path.read_bytes()
    (tmp_path / "cut.isxd").write_bytes(data[:100])
    with pytest.raises(InputError, match=r"cut\.isxd: no isxd footer"):
        open_movie(tmp_path / "cut.isxd")
    footer_len = int.from_bytes(data[-8:], "little")
    payload, tail = data[: len(data) - 9 - footer_len], data[len(data) - 9 - footer_len:]
    (tmp_path / "short.isxd").write_bytes(payload[: 3 * 40 + 7] + tail)
    with pytest.raises(InputError, match=r"short\.isxd: .*truncated at recorded frame 3"):
        open_movie(tmp_path / "short.isxd")


def test_inscopix_h5_object(tmp_path):
    rng = np.random.default_rng(4)
    movie = rng.integers(0, 4000, size=(11, 6, 9), dtype=np.uint16)
    with h5py.File(tmp_path / "rec.h5", "w") as f:
        f.create_dataset("Object", data=movie, chunks=(1, 6, 9))
    src = open_movie(tmp_path / "rec.h5", fps=15.0)
    assert src.shape == (11, 6, 9) and src.fps == 15.0 and src.metadata["dataset"] == "/Object"
    assert np.array_equal(read_all(src, 4), movie)
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("a", data=movie)
        f.create_dataset("b", data=movie)
    with pytest.raises(InputError, match="no /Object dataset"):
        open_movie(tmp_path / "bad.h5")


def _nwb(path, data, **timing):
    pynwb = pytest.importorskip("pynwb")
    from datetime import datetime

    from pynwb.ophys import OnePhotonSeries, OpticalChannel

    nwb = pynwb.NWBFile(session_description="t", identifier="x", session_start_time=datetime.now(UTC))
    dev = nwb.create_device(name="scope")
    plane = nwb.create_imaging_plane(name="plane", optical_channel=OpticalChannel(name="ch", description="c",
                                                                                  emission_lambda=520.0),
                                     imaging_rate=20.0, description="p", device=dev, excitation_lambda=470.0,
                                     indicator="GCaMP", location="CA1")
    nwb.add_acquisition(OnePhotonSeries(name="OnePhotonSeries", data=data, imaging_plane=plane, unit="n.a.",
                                        **timing))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_nwb_rate_and_timestamps(tmp_path):
    movie = (np.arange(10 * 6 * 5) % 3000).reshape(10, 6, 5).astype(np.uint16)
    _nwb(tmp_path / "rate.nwb", movie, rate=12.5)
    src = open_movie(tmp_path / "rate.nwb")
    assert src.fps == 12.5 and src.dtype == np.uint16
    assert np.array_equal(read_all(src, 3), movie)
    ts = np.arange(10) / 20.0
    ts[6:] += 0.05  # one frame missing before recorded frame 6
    _nwb(tmp_path / "ts.nwb", movie, timestamps=ts)
    src = open_movie(tmp_path / "ts.nwb")
    assert src.fps == pytest.approx(20.0) and src.dropped.tolist() == [6]
    out = read_all(src, 4)
    assert np.isnan(out[6]).all() and np.array_equal(out[7:], movie[6:].astype(np.float32))


# --------------------------------------------------------------------------- misc bad input
def test_bad_paths_and_arguments(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        open_movie(tmp_path / "nothing.avi")
    (tmp_path / "x.xyz").write_bytes(b"abc")
    with pytest.raises(InputError, match="unsupported file type '.xyz'"):
        open_movie(tmp_path / "x.xyz")
    (tmp_path / "x.isxc").write_bytes(b"abc")
    with pytest.raises(InputError, match="decompress"):
        open_movie(tmp_path / "x.isxc")
    write_avi(tmp_path / "ok.avi", movie_u8(3, 8, 8))
    with pytest.raises(InputError, match="fps must be a positive number"):
        open_movie(tmp_path / "ok.avi", fps=-1)
    (tmp_path / "junk.avi").write_bytes(b"RIFF" + b"\x00" * 100)
    with pytest.raises(InputError, match=r"junk\.avi: cannot be opened as a video"):
        open_movie(tmp_path / "junk.avi")


# --------------------------------------------------------------------------- real recordings
def test_real_inscopix_isxd_matches_tiff(shared_data):
    d = shared_data / "inscopix_ideas_toolbox_caiman"
    src = open_movie(d / "movie_part2_108x123x63.isxd")
    ref = tifffile.imread(d / "movie_part2_108x123x63.tiff")
    assert src.fps == pytest.approx(10.0) and src.shape == (63, 123, 108)
    assert np.array_equal(read_all(src, 16), ref)
    part3 = read_all(open_movie(d / "movie_part3.isxd"), 16)
    assert part3.shape == (34, 128, 128)
    assert part3.min() == pytest.approx(689.0, abs=0.01) and part3.max() == pytest.approx(1383.0, abs=0.01)
    try:
        import isx
    except ImportError:
        return
    movie = isx.Movie.read(str(d / "movie_part3.isxd"))
    ref3 = np.stack([movie.get_frame_data(i) for i in range(movie.timing.num_samples)])
    assert np.array_equal(part3, ref3)


def test_real_avis_decode_count_not_header(shared_data):
    src = open_movie(shared_data / "inscopix_ideas_toolbox_caiman" / "movie_part1_108x122x200.avi")
    assert src.shape[0] == 200  # the header's claim
    out = read_all(src, 32)
    assert out.shape == (100, 122, 108) and src.frames_per_file == [100]  # what decodes (packed bitstream)
    mjpeg = read_all(open_movie(shared_data / "cnmfe_elife_striatum" / "example_microendoscopic_data.avi"), 10)
    assert mjpeg.shape == (25, 420, 560) and mjpeg.dtype == np.uint8


def test_real_nwb_onephotonseries(shared_data):
    path = shared_data / "inscopix_ideas_toolbox_suite2p" / "dandi_compliant_movie.nwb"
    src = open_movie(path)
    with h5py.File(path, "r") as f:
        ref = f["acquisition/OnePhotonSeries/data"][()]
    assert src.fps == pytest.approx(5.56) and src.dtype == np.uint16
    out = read_all(src, 64)
    assert np.array_equal(out, ref) and out.min() == 2019 and out.max() == 3216
