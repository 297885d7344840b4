"""``califlow init`` on a cohort folder and on one animal's folder, for each acquisition layout.

The layouts are written by the simulator (tiny movies) and rearranged the way acquisition
software stores them: Miniscope V4 session folders, Miniscope DAQ ``date/time/Miniscope``
trees, and one TIFF per session in date folders (``2026_01_05/recording_20260105_100000.tif``).
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from califlow.cli import main
from califlow.cohort_setup import discover_sessions, is_date_name, session_names
from califlow.errors import InputError
from califlow.simulate.writers import write_cohort

TINY = {"height": 32, "width": 32, "n_sessions": 3, "frames_per_session": 4, "frames_per_file": 4,
        "n_neurons": 3, "n_local_sources": 1, "n_vessels": 1}
ANIMALS = ["animal01", "animal02"]
DATES = ["2026_01_05", "2026_01_06", "2026_01_07"]
DAQ_SESSIONS = [f"{d}_10_00_00" for d in DATES]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Two tiny simulated animals of three sessions, as Miniscope V4 folders and as TIFF files."""
    root = tmp_path_factory.mktemp("simulated")
    for fmt in ("miniscope", "tiff"):
        write_cohort(root / fmt, "demo", n_animals=2, seed=0, format=fmt, overrides=TINY)
    return root


def _miniscope_cohort(simulated: Path, out: Path) -> Path:
    """``out/<animal>/sessionNN/0.avi…`` as the simulator writes it (with sessions.tsv, ground_truth.zarr)."""
    shutil.copytree(simulated / "miniscope", out)
    return out


def _daq_cohort(simulated: Path, out: Path) -> Path:
    """Miniscope DAQ trees ``out/<animal>/<date>/10_00_00/{Miniscope,BehavCam_1}/``."""
    for animal in ANIMALS:
        for s, date in enumerate(DATES):
            session = out / animal / date / "10_00_00"
            shutil.copytree(simulated / "miniscope" / animal / f"session{s + 1:02d}", session / "Miniscope")
            shutil.copytree(session / "Miniscope", session / "BehavCam_1")
    return out


def _tiff_cohort(simulated: Path, out: Path) -> Path:
    """One TIFF per session in date folders: ``out/<animal>/<date>/recording_<YYYYMMDD>_100000.tif``."""
    for animal in ANIMALS:
        for s, date in enumerate(DATES):
            (out / animal / date).mkdir(parents=True)
            target = out / animal / date / f"recording_{date.replace('_', '')}_100000.tif"
            shutil.copy(simulated / "tiff" / animal / f"session{s + 1:02d}.tif", target)
    return out


LAYOUTS = {"miniscope": (_miniscope_cohort, ["session01", "session02", "session03"]),
           "daq": (_daq_cohort, DAQ_SESSIONS),
           "tiff_in_date_folders": (_tiff_cohort, DATES)}


def _init(data: Path, out: Path, capsys, *extra: str) -> tuple[pd.DataFrame, str]:
    """Run ``califlow init``; the sheet it wrote and what it printed."""
    assert main(["init", str(data), "--out", str(out), *extra]) == 0
    return pd.read_csv(out / "sessions.tsv", sep="\t"), capsys.readouterr().out


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cohort_folder_gives_every_animal_and_its_sessions(layout, simulated, tmp_path, capsys):
    build, sessions = LAYOUTS[layout]
    data = build(simulated, tmp_path / "data")
    sheet, printed = _init(data, tmp_path / "cfg", capsys)
    assert list(sheet.animal) == [a for a in ANIMALS for _ in sessions]
    assert list(sheet.session) == sessions * 2
    assert all(Path(p).exists() and str(data) in p for p in sheet.path)
    assert f"{data} looks like a cohort folder" in printed
    assert "2 animals, 6 sessions" in printed


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_animal_folder_gives_one_animal_named_after_it(layout, simulated, tmp_path, capsys):
    build, sessions = LAYOUTS[layout]
    animal_dir = build(simulated, tmp_path / "data") / "animal02"
    sheet, printed = _init(animal_dir, tmp_path / "cfg", capsys)
    assert list(sheet.animal) == ["animal02"] * 3
    assert list(sheet.session) == sessions
    assert all(Path(p).is_relative_to(animal_dir) for p in sheet.path)
    assert f"{animal_dir} looks like one animal's folder" in printed
    assert "animal 'animal02', 3 sessions" in printed
    reason = "3 session folders of chunk files directly inside" if layout == "miniscope" else \
        "3 date folders with recordings"
    assert f"({reason})" in printed


def test_daq_tree_skips_behaviour_cameras_and_ground_truth(simulated, tmp_path):
    data = _daq_cohort(simulated, tmp_path / "data")
    shutil.copytree(simulated / "miniscope" / "animal01" / "ground_truth.zarr", data / "animal01" / "ground_truth.zarr")
    found = discover_sessions(data / "animal01")
    assert all("Miniscope" in p for p in found.sheet.path)
    reasons = dict(found.skipped)
    assert reasons[str(data / "animal01" / "ground_truth.zarr")] == "data store, not a recording"
    assert not any("ground_truth.zarr/" in p for p in reasons)   # not one line per chunk of the store
    assert sum(why == "behaviour camera folder" for why in reasons.values()) == 3


def test_tiff_full_path_is_kept_and_shared_dates_get_the_time(simulated, tmp_path):
    animal_dir = _tiff_cohort(simulated, tmp_path / "data") / "animal01"
    second = animal_dir / DATES[0] / f"recording_{DATES[0].replace('_', '')}_143000.tif"
    shutil.copy(next((animal_dir / DATES[0]).glob("*.tif")), second)
    sheet = discover_sessions(animal_dir).sheet
    assert list(sheet.session) == ["2026_01_05_10_00_00", "2026_01_05_14_30_00", "2026_01_06", "2026_01_07"]
    assert sheet.path.iloc[1] == str(second)


def test_date_folder_pointed_at_names_the_animal_after_its_parent(simulated, tmp_path):
    date_dir = _daq_cohort(simulated, tmp_path / "data") / "animal01" / DATES[1]
    found = discover_sessions(date_dir)
    assert list(found.sheet.animal) == ["animal01"] and list(found.sheet.session) == [DAQ_SESSIONS[1]]
    assert found.layout == "animal"
    assert f"animal 'animal01' (named after {date_dir.parent}, the folder above the date folder)" in found.headline


@pytest.mark.parametrize("names, expected", [
    (["2026_01_05/recording_20260105_101500.tif", "2026_01_06/recording_20260106_090000.tif"],
     ["2026_01_05", "2026_01_06"]),
    (["2026-01-05/rec_a.tif", "2026-01-05/rec_b.tif"], ["2026-01-05_rec_a", "2026-01-05_rec_b"]),
    (["recording_20260105_101500.isxd", "recording_20260105T141500.isxd", "recording_20260106_080000.isxd"],
     ["2026_01_05_10_15_00", "2026_01_05_14_15_00", "2026_01_06"]),
    (["20260105/x_10-15-00.tif", "20260105/x_10-15-00-2.tif"], ["20260105_x_10-15-00", "20260105_x_10-15-00-2"]),
    (["2024_01_02/10_00_00/Miniscope", "2024_01_03/09_00_00/Miniscope"],
     ["2024_01_02_10_00_00", "2024_01_03_09_00_00"]),
    (["baseline_20260105.tif", "day1", "day1.tif"], ["baseline_20260105", "day1", "day1_1"]),
])
def test_session_names_are_short_and_unique(names, expected):
    assert session_names([Path(n) for n in names]) == expected


@pytest.mark.parametrize("name, dated", [
    ("2026_01_05", True), ("2026-01-05", True), ("20260105", True), ("01_05_2026", True),
    ("2026_01_05_m12", True), ("10_15_00", True), ("m12", False), ("20261305", False),
    ("session01", False), ("123456789", False),
])
def test_date_names(name, dated):
    assert is_date_name(name) is dated


def _single_file_folders(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "movie.isxd").write_bytes(b"\0")
    return root


def test_ambiguous_folder_says_so_and_layout_forces_it(tmp_path, capsys):
    data = _single_file_folders(tmp_path / "m7", ["baseline", "test"])
    sheet, printed = _init(data, tmp_path / "cfg", capsys)
    assert list(sheet.animal) == ["baseline", "test"]
    assert "looks like a cohort folder" in printed and "ambiguous:" in printed and "--layout animal" in printed
    sheet, printed = _init(data, tmp_path / "cfg2", capsys, "--layout", "animal")
    assert list(sheet.animal) == ["m7", "m7"] and list(sheet.session) == ["baseline_movie", "test_movie"]
    assert f"{data} taken as one animal's folder (--layout animal; it looks like a cohort folder" in printed
    assert "\nambiguous:" not in printed


def test_mixed_date_and_other_folders_is_ambiguous(tmp_path):
    data = _single_file_folders(tmp_path / "m7", ["2026_01_05", "2026_01_06", "habituation"])
    found = discover_sessions(data)
    assert found.layout == "animal" and list(found.sheet.animal) == ["m7"] * 3
    assert "ambiguous: 2 of its 3 folders with recordings are date-named" in found.headline
    forced = discover_sessions(data, layout="cohort")
    assert list(forced.sheet.animal) == ["2026_01_05", "2026_01_06", "habituation"]


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(InputError, match="layout 'animals' must be one of auto, cohort, animal"):
        discover_sessions(tmp_path, layout="animals")
    with pytest.raises(SystemExit):
        main(["init", str(tmp_path), "--layout", "animals"])


@pytest.mark.parametrize("panels", [("mean", "bv", "cn", "pnr"), ("mean", "bv"), ("cn",)])
def test_session_figure_title_with_a_long_session_name_fits(panels, tmp_path, monkeypatch):
    from califlow import qc

    figures = []
    monkeypatch.setattr(qc, "_save", lambda fig, path: figures.append(fig) or Path(path))
    session = "2026_01_05_recording_20260105_101500_" + "x" * 23
    assert len(session) == 60
    title = f"m12 / {session}: 0 dropped, 0 damaged and 0 blank/NaN frames interpolated"
    rng = np.random.default_rng(0)
    qc.session_figure({n: rng.random((40, 40)) for n in panels}, np.zeros((20, 2)), 10.0, title, tmp_path / "q.png")
    fig = figures[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig._suptitle.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
    assert "".join(fig._suptitle.get_text().split()) == "".join(title.split())   # wrapped, nothing cut
    for ax in fig.axes:
        if ax.get_title():
            assert ax.title.get_window_extent(renderer).y1 <= box.y0   # below the wrapped title
