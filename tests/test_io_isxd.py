"""califlow.io.isxd: cell sets, event sets and movies, round trips, real files, and the isx cross-check."""

from __future__ import annotations

import numpy as np
import pytest

from califlow.errors import InputError
from califlow.io import open_movie
from califlow.io.isxd import (
    CellSet,
    EventSet,
    Timing,
    read_cellset,
    read_eventset,
    read_footer,
    write_cellset,
    write_eventset,
    write_isxd_movie,
)


def _isx():
    try:
        import isx
    except ImportError:
        pytest.skip("isx (Inscopix, CC BY-NC) not installed: cross-check skipped")
    return isx


def make_cellset(k=3, h=6, w=5, t=12, dropped=(4,)):
    rng = np.random.default_rng(7)
    images = rng.random((k, h, w), dtype=np.float32)
    traces = rng.normal(size=(k, t)).astype(np.float32)
    traces[:, list(dropped)] = np.nan
    timing = Timing(num_samples=t, period_s=0.05, start_s=1724666920.278, dropped=list(dropped))
    return CellSet(images=images, traces=traces, names=[f"C{i:03d}" for i in range(k)],
                   statuses=["accepted", "rejected", "undecided"][:k], timing=timing, spacing=(h, w),
                   extra_properties={"idps": {"cellset": {"method": "cnmfe"}}})


def make_eventset():
    timing = Timing(num_samples=200, period_s=0.05, start_s=100.5)
    offsets = [np.array([0, 50000, 1250000], np.uint64), np.array([], np.uint64), np.array([9950000], np.uint64)]
    amps = [np.array([1.5, 0.25, 3.0], np.float32), np.array([], np.float32), np.array([7.0], np.float32)]
    return EventSet(names=["C000", "C001", "C002"], offsets_us=offsets, amplitudes=amps, timing=timing,
                    extra_properties={"source": "test"})


def test_cellset_round_trip(tmp_path):
    cs = make_cellset()
    back = read_cellset(write_cellset(tmp_path / "cs.isxd", cs))
    assert np.array_equal(back.images, cs.images)
    assert np.array_equal(back.traces, cs.traces, equal_nan=True)
    assert back.names == cs.names and back.statuses == cs.statuses
    assert back.timing.num_samples == 12 and back.timing.dropped == [4]
    assert back.timing.period_s == pytest.approx(0.05) and back.timing.start_s == pytest.approx(1724666920.278)
    assert back.spacing == (6, 5) and back.extra_properties == cs.extra_properties


def test_eventset_round_trip(tmp_path):
    es = make_eventset()
    back = read_eventset(write_eventset(tmp_path / "es.isxd", es))
    assert back.names == es.names
    for a, b in zip(back.offsets_us, es.offsets_us):
        assert a.dtype == np.uint64 and np.array_equal(a, b)
    for a, b in zip(back.amplitudes, es.amplitudes):
        assert np.array_equal(a, b)
    assert back.timing.num_samples == 200 and back.timing.period_s == pytest.approx(0.05)
    assert back.timing.start_s == pytest.approx(100.5)


def test_type_and_damage_errors(tmp_path):
    path = write_cellset(tmp_path / "cs.isxd", make_cellset())
    with pytest.raises(InputError, match=r"cs\.isxd: is an isxd file of type 1, not a movie"):
        open_movie(path)
    with pytest.raises(InputError, match="not a event set"):
        read_eventset(path)
    data = path.read_bytes()
    n = int.from_bytes(data[-8:], "little")
    (tmp_path / "short.isxd").write_bytes(data[:40] + data[len(data) - 9 - n:])
    with pytest.raises(InputError, match=r"short\.isxd: the cell-set payload holds 40 bytes"):
        read_cellset(tmp_path / "short.isxd")
    (tmp_path / "junk.isxd").write_bytes(b"x" * 50)
    with pytest.raises(InputError, match="no isxd footer"):
        read_footer(tmp_path / "junk.isxd")


def test_isx_reads_our_files_exactly(tmp_path):
    isx = _isx()
    cs = make_cellset()
    ours = isx.CellSet.read(str(write_cellset(tmp_path / "cs.isxd", cs)))
    assert ours.num_cells == 3 and ours.timing.num_samples == 12
    for k in range(3):
        assert np.array_equal(ours.get_cell_image_data(k), cs.images[k])
        assert np.array_equal(ours.get_cell_trace_data(k), cs.traces[k], equal_nan=True)
        assert ours.get_cell_name(k) == cs.names[k] and ours.get_cell_status(k) == cs.statuses[k]
    es = make_eventset()
    ev = isx.EventSet.read(str(write_eventset(tmp_path / "es.isxd", es)))
    assert ev.num_cells == 3
    for k in range(3):
        off, amp = ev.get_cell_data(k)
        assert np.abs(off.astype(np.int64) - es.offsets_us[k].astype(np.int64)).max(initial=0) <= 1  # isx: ±1 µs
        assert np.array_equal(amp, es.amplitudes[k])
    movie = np.arange(8 * 5 * 4, dtype=np.uint16).reshape(8, 5, 4)
    mv = isx.Movie.read(str(write_isxd_movie(tmp_path / "m.isxd", movie, period_s=0.05, dropped=[2])))
    assert mv.timing.num_samples == 8 and list(mv.timing.dropped) == [2]
    for t in (0, 1, 3, 7):
        assert np.array_equal(mv.get_frame_data(t), movie[t])


def test_we_read_isx_files_exactly(tmp_path):
    isx = _isx()
    t, h, w = 10, 6, 5
    timing = isx.Timing(num_samples=t, period=isx.Duration.from_msecs(50), dropped=[3, 7])
    spacing = isx.Spacing(num_pixels=(h, w))
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 60000, size=(t, h, w), dtype=np.uint16)
    m = isx.Movie.write(str(tmp_path / "m.isxd"), timing, spacing, np.uint16)
    for i in range(t):
        if i not in (3, 7):
            m.set_frame_data(i, frames[i])
    m.flush()
    out = np.concatenate([c for _, c in open_movie(tmp_path / "m.isxd").iter_chunks(4)])
    keep = [i for i in range(t) if i not in (3, 7)]
    assert np.isnan(out[[3, 7]]).all() and np.array_equal(out[keep], frames[keep])
    cs = isx.CellSet.write(str(tmp_path / "cs.isxd"), timing, spacing)
    images = rng.random((2, h, w), dtype=np.float32)
    traces = rng.random((2, t), dtype=np.float32)
    for k in range(2):
        cs.set_cell_data(k, images[k], traces[k], f"C{k}")
    cs.set_cell_status(1, "accepted")
    cs.flush()
    back = read_cellset(tmp_path / "cs.isxd")
    assert np.array_equal(back.images, images) and back.statuses == ["undecided", "accepted"]
    assert np.array_equal(back.traces[:, [0, 1, 2, 4]], traces[:, [0, 1, 2, 4]])


def test_real_cellset_and_eventset(shared_data, tmp_path):
    d = shared_data / "inscopix_ideas_toolbox_caiman"
    cs = read_cellset(d / "cellset_series_part1.isxd")
    assert cs.images.shape == (6, 21, 21) and cs.traces.shape == (6, 100)
    assert cs.names == ["C0", "C1", "C2", "C3", "C4", "C5"] and set(cs.statuses) == {"undecided"}
    assert cs.extra_properties["idps"]["cellset"]["method"] == "cnmfe"
    es = read_eventset(d / "sample_eventset_msr_1.isxd")
    assert es.names == ["C001", "C014", "C030", "C114", "C175"]
    assert [a.size for a in es.offsets_us] == [2072, 2984, 2141, 3544, 2763]
    assert es.timing.num_samples == 12075
    assert all(np.all(np.diff(o.astype(np.int64)) > 0) for o in es.offsets_us)
    try:
        import isx
    except ImportError:
        return
    ref = isx.CellSet.read(str(d / "cellset_series_part1.isxd"))
    for k in range(6):
        assert np.array_equal(cs.images[k], ref.get_cell_image_data(k))
        assert np.array_equal(cs.traces[k], ref.get_cell_trace_data(k), equal_nan=True)
    ev = isx.EventSet.read(str(d / "sample_eventset_msr_1.isxd"))
    for k in range(5):
        off, amp = ev.get_cell_data(k)
        assert np.abs(off.astype(np.int64) - es.offsets_us[k].astype(np.int64)).max() <= 1
        assert np.array_equal(amp, es.amplitudes[k])
    # a real cell set written back by us is read identically by isx
    rt = isx.CellSet.read(str(write_cellset(tmp_path / "copy.isxd", cs)))
    assert rt.num_cells == 6 and np.array_equal(rt.get_cell_image_data(3), cs.images[3])
