"""Per-session exports: events table, trace tables, NWB (read back + nwbinspector), isxd."""

import numpy as np
import pandas as pd
import pytest
import zarr

from califlow import export
from califlow.io.store import create_image


def _fake_extraction(tmp_path, K=4, H=30, W=40, lengths=(50, 70), fps=(20.0, 10.0)):
    rng = np.random.default_rng(1)
    T = sum(lengths)
    A = rng.random((K, H, W)).astype(np.float32)
    C = rng.random((K, T)).astype(np.float32)
    S = np.zeros((K, T), np.float32)
    if K:
        S[0, 3] = 2.0          # session a, frame 3
        S[2, 50 + 7] = 1.5     # session b, frame 7
        S[3, 60] = 0.5         # session b, frame 10
    g = zarr.open_group(str(tmp_path / "cnmfe.zarr"), mode="w")
    for name, arr in (("A", A), ("C", C), ("C_raw", C + 0.1), ("S", S)):
        create_image(g, name, arr)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    g.attrs["sessions"] = [{"name": n, "start": int(a), "stop": int(b), "fps": f}
                           for n, a, b, f in zip(("a", "b"), starts[:-1], starts[1:], fps)]
    g.attrs["animal"] = "m1"
    return export.load_extraction(tmp_path / "cnmfe.zarr"), (A, C, S)


def test_events_and_traces(tmp_path):
    ext, (A, C, S) = _fake_extraction(tmp_path)
    path = export.write_events_csv(ext["S"], ext["sessions"], tmp_path / "events.csv")
    ev = pd.read_csv(path)
    assert list(ev.columns) == ["cell", "session", "frame", "time_s", "amplitude"]
    assert ev.values.tolist() == [[0, "a", 3, 0.15, 2.0], [2, "b", 7, 0.7, 1.5], [3, "b", 10, 1.0, 0.5]]
    tb = export.trace_table(C, ext["sessions"][1])
    assert tb.shape == (70, 2 + 4) and list(tb.columns[:3]) == ["frame", "time_s", "C000"]
    np.testing.assert_allclose(tb["C002"].to_numpy(), C[2, 50:120])


def test_session_nwb_roundtrip_and_inspector(tmp_path):
    pynwb = pytest.importorskip("pynwb")
    nwbinspector = pytest.importorskip("nwbinspector")
    ext, (A, C, S) = _fake_extraction(tmp_path)
    src = tmp_path / "raw"
    src.mkdir()
    for i in range(2):
        (src / f"{i}.avi").write_bytes(b"\0")
    meta = {"experimenter": ["Doe, Jane"], "institution": "Uni", "lab": "Lab", "age": "P90D"}
    files = export.export_session(ext, "b", tmp_path / "out" / "b", metadata=meta, formats=("csv", "nwb"),
                                  images={"cn": A[0]}, source_files=[str(src / "0.avi"), str(src / "1.avi")],
                                  frames_per_file=[70, 70], raw_fps=20.0)
    nwb_path = [f for f in files if f.suffix == ".nwb"][0]
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        f = io.read()
        fl = f.processing["ophys"]["Fluorescence"]
        np.testing.assert_allclose(fl["Denoised"].data[:], C[:, 50:120].T, rtol=1e-6)
        ps = f.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert list(ps["global_roi_id"][:]) == [0, 1, 2, 3]
        assert list(ps["present"][:]) == [False, False, True, True]
        ev = f.processing["ophys"]["SpikeEvents"]
        assert list(ev["event_times"][2]) == [0.7]
        assert f.acquisition["OnePhotonSeries"].starting_frame[:].tolist() == [0, 70]
    msgs = list(nwbinspector.inspect_nwbfile(nwbfile_path=str(nwb_path), config=nwbinspector.load_config("dandi")))
    assert msgs == [], [m.message for m in msgs]


def test_isxd_export_readable(tmp_path):
    isxd = pytest.importorskip("califlow.io.isxd")
    ext, (A, C, S) = _fake_extraction(tmp_path)
    files = export.export_session(ext, "a", tmp_path / "out", metadata={}, formats=("isxd",))
    names = sorted(f.name for f in files)
    assert names == ["cellset_denoised.isxd", "cellset_raw.isxd", "neural_events.isxd"]
    cs = isxd.read_cellset(tmp_path / "out" / "cellset_denoised.isxd")
    np.testing.assert_allclose(cs.traces, C[:, :50], rtol=1e-6)
    assert list(cs.names) == ["C000", "C001", "C002", "C003"]
    es = isxd.read_eventset(tmp_path / "out" / "neural_events.isxd")
    assert np.rint(np.asarray(es.offsets_us[0], float) / 5e4).tolist() == [3]


def test_isxd_export_read_by_isx(tmp_path):
    isx = pytest.importorskip("isx")
    pytest.importorskip("califlow.io.isxd")
    ext, (A, C, S) = _fake_extraction(tmp_path)
    export.export_session(ext, "b", tmp_path / "out", metadata={}, formats=("isxd",))
    cs = isx.CellSet.read(str(tmp_path / "out" / "cellset_raw.isxd"))
    assert cs.num_cells == 4 and cs.get_cell_name(2) == "C002"
    np.testing.assert_allclose(cs.get_cell_trace_data(1), C[1, 50:120] + 0.1, rtol=1e-6)
    np.testing.assert_allclose(cs.get_cell_image_data(3), A[3], rtol=1e-6)
    es = isx.EventSet.read(str(tmp_path / "out" / "neural_events.isxd"))
    offsets, amps = es.get_cell_data(2)
    assert np.rint(np.asarray(offsets, float) / 1e5).tolist() == [7] and np.allclose(amps, [1.5])


def test_event_threshold(tmp_path):
    ext, (A, C, S) = _fake_extraction(tmp_path)
    ev = export.events_table(ext["S"], ext["sessions"], threshold=1.0)
    assert ev[["cell", "session", "frame"]].values.tolist() == [[0, "a", 3], [2, "b", 7]]


def test_an_animal_without_neurons_exports_valid_empty_files(tmp_path):
    """K = 0 (an extraction that found nothing): CSV, NWB and isxd are written, empty, and pass
    nwbinspector's DANDI checks (none fails or crashes) and Inscopix's own reader."""
    pynwb = pytest.importorskip("pynwb")
    nwbinspector = pytest.importorskip("nwbinspector")
    isx = pytest.importorskip("isx")
    ext, _ = _fake_extraction(tmp_path, K=0)
    meta = {"experimenter": ["Doe, Jane"], "institution": "Uni", "lab": "Lab", "age": "P90D"}
    files = export.export_session(ext, "b", tmp_path / "out", metadata=meta, formats=("csv", "nwb", "isxd"),
                                  start_time="2024-03-07T14:05:09.123+01:00")
    nwb_path = [f for f in files if f.suffix == ".nwb"][0]
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        f = io.read()
        assert "ImageSegmentation" not in f.processing["ophys"].data_interfaces  # no cell, no table
    msgs = list(nwbinspector.inspect_nwbfile(nwbfile_path=str(nwb_path), config=nwbinspector.load_config("dandi")))
    assert [(m.importance.name, m.check_function_name, m.message) for m in msgs] == []
    for name, kind in (("cellset_raw", isx.CellSet), ("cellset_denoised", isx.CellSet),
                       ("neural_events", isx.EventSet)):
        obj = kind.read(str(tmp_path / "out" / f"{name}.isxd"))
        assert obj.num_cells == 0, name
    traces = [f for f in files if f.name == "traces.csv"][0]
    assert pd.read_csv(traces).shape == (70, 2)
