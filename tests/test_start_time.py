"""True metadata: the session start comes from the recording, and a guess is logged as one."""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import pytest

from califlow.io.start_time import parse_start, recording_start

UTC = dt.UTC


def _daq_session(root, local: dt.datetime, utc: dt.datetime | None):
    """A Miniscope DAQ tree ``root/YYYY_MM_DD/HH_MM_SS/Miniscope`` with a session metaData.json."""
    session = root / local.strftime("%Y_%m_%d") / local.strftime("%H_%M_%S")
    device = session / "Miniscope"
    device.mkdir(parents=True)
    (device / "metaData.json").write_text(json.dumps({"deviceType": "Miniscope_V4_BNO", "framesPerFile": 1000}))
    (device / "0.avi").write_bytes(b"\0")
    if utc is not None:
        rst = {"year": local.year, "month": local.month, "day": local.day, "hour": local.hour,
               "minute": local.minute, "second": local.second, "msec": local.microsecond // 1000,
               "msecSinceEpoch": int(round(utc.timestamp() * 1000))}
        (session / "metaData.json").write_text(json.dumps({"animalName": "m1", "recordingStartTime": rst}))
    return device


def test_miniscope_session_metadata_gives_time_and_zone(tmp_path):
    local = dt.datetime(2024, 3, 7, 14, 5, 9, 123000)
    device = _daq_session(tmp_path, local, utc=dt.datetime(2024, 3, 7, 13, 5, 9, 123000, tzinfo=UTC))
    found = recording_start({"reader": "miniscope_v4", "folder": str(device)}, [device / "0.avi"], "s1")
    assert found["start_time"] == "2024-03-07T14:05:09.123+01:00"
    assert found["start_time_from"].endswith("14_05_09/metaData.json recordingStartTime")
    assert found["start_time_guessed"] is False
    assert parse_start(found["start_time"]) == dt.datetime(2024, 3, 7, 13, 5, 9, 123000, tzinfo=UTC)


def test_daq_folder_names_when_no_metadata_time(tmp_path):
    device = _daq_session(tmp_path, dt.datetime(2023, 11, 30, 9, 41, 2), utc=None)
    found = recording_start({"reader": "miniscope_v4", "folder": str(device)}, [device / "0.avi"], "s1")
    assert found["start_time"] == "2023-11-30T09:41:02.000"
    assert found["start_time_from"] == "DAQ folder names 2023_11_30/09_41_02 (local time, zone unknown)"
    assert not found["start_time_guessed"]


def test_tiff_datetime_tag(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "rec.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint16), photometric="minisblack",
                     datetime=dt.datetime(2022, 6, 1, 8, 30, 0))
    found = recording_start({"reader": "tiff"}, [path], "rec")
    assert found["start_time"] == "2022-06-01T08:30:00.000" and "DateTime tag" in found["start_time_from"]


def test_isxd_footer_start(tmp_path):
    from califlow.io import open_movie
    from califlow.io.isxd import write_isxd_movie

    path = tmp_path / "rec.isxd"
    write_isxd_movie(path, np.zeros((4, 6, 6), np.uint16), period_s=0.05, start_s=1724666920.278)
    src = open_movie(path)
    found = recording_start(src.metadata, list(src.files), "rec")
    assert parse_start(found["start_time"]) == dt.datetime(2024, 8, 26, 10, 8, 40, 278000, tzinfo=UTC)
    assert "isxd footer" in found["start_time_from"]


def test_file_time_is_a_logged_guess(tmp_path, caplog):
    path = tmp_path / "0.avi"
    path.write_bytes(b"\0")
    stamp = dt.datetime(2021, 2, 3, 4, 5, 6, tzinfo=UTC).timestamp()
    import os

    os.utime(path, (stamp, stamp))
    with caplog.at_level(logging.WARNING):
        found = recording_start({"reader": "folder_avi", "folder": str(tmp_path)}, [path], "s9")
    assert found["start_time_guessed"] is True and "a guess" in found["start_time_from"]
    assert parse_start(found["start_time"]) == dt.datetime(2021, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert "s9: nothing in the recording says when it started" in caplog.text


def test_start_time_reaches_ingest_nwb_and_isxd(tmp_path):
    """Simulated Miniscope session -> ingest.zarr attrs -> NWB session_start_time and isxd start."""
    pynwb = pytest.importorskip("pynwb")
    from califlow import export
    from califlow.io.ingest import ingest
    from califlow.io.isxd import read_cellset
    from califlow.simulate import preset, simulate_animal
    from califlow.simulate.writers import SIMULATED_START, write_animal

    animal = simulate_animal(preset("default", height=32, width=32, n_sessions=2, frames_per_session=20,
                                    n_neurons=3), seed=3)
    folders = write_animal(animal, tmp_path / "raw")
    attrs = ingest(folders[1], tmp_path / "ingest.zarr")
    expected = SIMULATED_START + dt.timedelta(days=1)
    assert parse_start(attrs["start_time"]) == expected and not attrs["start_time_guessed"]
    assert "metaData.json recordingStartTime" in attrs["start_time_from"]

    from test_export import _fake_extraction

    ext, _ = _fake_extraction(tmp_path)
    files = export.export_session(ext, "b", tmp_path / "out", metadata={}, formats=("nwb", "isxd"),
                                  start_time=attrs["start_time"])
    nwb_path = next(f for f in files if f.suffix == ".nwb")
    assert nwb_path.name == "sub-m1_ses-b_ophys.nwb"
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        assert io.read().session_start_time == expected
    cs = read_cellset(tmp_path / "out" / "cellset_raw.isxd")
    assert cs.timing.start_s == pytest.approx(expected.timestamp(), abs=1e-3)
