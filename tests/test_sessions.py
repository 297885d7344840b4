"""Sessions sheet validation and cohort discovery (califlow init)."""

import pandas as pd
import pytest

from califlow.cohort_setup import discover_sessions, natural_key
from califlow.errors import InputError
from califlow.sessions import read_sessions, validate_sessions


def _sheet(tmp_path, text):
    p = tmp_path / "sessions.tsv"
    p.write_text(text)
    return p


def test_valid_sheet_sorted_by_order(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    p = _sheet(tmp_path, "animal\tsession\tpath\tfps\torder\n"
                         f"m1\tday2\t{tmp_path}/b\t20\t1\nm1\tday1\t{tmp_path}/a\t\t0\nm2\tx\t{tmp_path}/c\t\t\n")
    sheet = read_sessions(p)
    assert list(sheet.loc["m1"]["session"]) == ["day1", "day2"]
    assert sheet.loc[("m1", "day2"), "fps"] == 20
    assert pd.isna(sheet.loc[("m1", "day1"), "fps"])


@pytest.mark.parametrize("text, fragment", [
    ("animal\tsesion\tpath\nm1\ts1\tx\n", "missing column(s) 'session'; unknown column(s) 'sesion'"),
    ("animal\tsession\tpath\nm1\ts1\t{d}\nm1\ts1\t{d}\n", "duplicate session name(s) m1/s1 (rows 2, 3)"),
    ("animal\tsession\tpath\nm1\ts1\t{d}/missing.avi\n", "path '{d}/missing.avi' does not exist"),
    ("animal\tsession\tpath\tfps\nm1\ts1\t{d}\t-5\n", "fps '-5' is not allowed"),
    ("animal\tsession\tpath\nm 1\ts1\t{d}\n", "animal 'm 1' is not allowed"),
    ("animal\tsession\tpath\nm1\t\t{d}\n", "column 'session' is empty"),
    ("animal\tsession\tpath\n", "no sessions"),
])
def test_bad_sheets_name_the_culprit(tmp_path, text, fragment):
    p = _sheet(tmp_path, text.format(d=tmp_path))
    with pytest.raises(InputError) as err:
        read_sessions(p)
    assert fragment.format(d=tmp_path) in str(err.value)
    assert str(p) in str(err.value)


def test_missing_sheet_and_demo_exemption(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_sessions(tmp_path / "nope.tsv")
    table = pd.DataFrame({"animal": ["d1"], "session": ["s1"], "path": [str(tmp_path / "demo" / "d1" / "s1")]})
    out = validate_sessions(table, may_be_missing=[tmp_path / "demo"])
    assert len(out) == 1


def test_natural_key_orders_numbers():
    names = ["10.avi", "2.avi", "1.avi", "msCam10.avi", "msCam9.avi"]
    assert sorted(names, key=natural_key) == ["1.avi", "2.avi", "10.avi", "msCam9.avi", "msCam10.avi"]


def test_discover_layouts(tmp_path):
    d = tmp_path / "data"
    for folder, files in {
        "m1/day10": ["0.avi", "1.avi"], "m1/day2": ["0.avi"],
        "m2/2024_01_02/10_00_00/Miniscope": ["0.avi", "1.avi"],
        "m2/2024_01_02/10_00_00/BehavCam_1": ["0.avi"],
        "m2/2024_01_03/09_00_00/Miniscope": ["0.avi"],
        "m3": ["rec1.isxd", "rec2.isxd", "notes.pdf"],
    }.items():
        (d / folder).mkdir(parents=True, exist_ok=True)
        for f in files:
            (d / folder / f).write_bytes(b"")
    found = discover_sessions(d)
    sheet = found.sheet
    assert list(sheet[sheet.animal == "m1"].session) == ["day2", "day10"]
    assert list(sheet[sheet.animal == "m2"].session) == ["2024_01_02_10_00_00", "2024_01_03_09_00_00"]
    assert list(sheet[sheet.animal == "m3"].session) == ["rec1", "rec2"]
    skipped = dict(found.skipped)
    assert any("BehavCam_1" in p for p in skipped)
    assert any("notes.pdf" in p for p in skipped)
    with pytest.raises(InputError, match="no recording found"):
        (tmp_path / "empty").mkdir()
        discover_sessions(tmp_path / "empty")


def test_init_writes_gsig_auto_with_a_reason(tmp_path):
    import yaml

    from califlow.cli import main
    from califlow.params import validate_config

    for s in ("day1", "day2"):
        (tmp_path / "data" / "m1" / s).mkdir(parents=True)
        (tmp_path / "data" / "m1" / s / "0.avi").write_bytes(b"")
    assert main(["init", str(tmp_path / "data"), "--out", str(tmp_path / "cfg")]) == 0
    text = (tmp_path / "cfg" / "config.yaml").read_text()
    assert "gSig: auto" in text and "measured from these recordings" in text
    cfg = validate_config(yaml.safe_load(text))
    assert cfg["general"]["gSig"] == "auto" and cfg["demo"]["enabled"] is False


def test_subject_columns_are_checked_and_reach_nwb(tmp_path):
    """Optional sheet columns subject_id, species, sex, age, genotype: one subject per animal, into NWB Subject."""
    pynwb = pytest.importorskip("pynwb")
    import pandas as pd

    from califlow import export
    from califlow.errors import InputError
    from califlow.sessions import subject_of, validate_sessions

    for i in range(2):
        (tmp_path / f"{i}.avi").write_bytes(b"\0")
    sheet = pd.DataFrame({"animal": ["m1", "m1"], "session": ["a", "b"],
                          "path": [str(tmp_path / "0.avi"), str(tmp_path / "1.avi")],
                          "sex": ["F", None], "age": ["P90D", "P90D"], "genotype": ["Ai148 x Cre", ""]})
    table = validate_sessions(sheet)
    subject = subject_of(table, "m1")
    assert subject == {"sex": "F", "age": "P90D", "genotype": "Ai148 x Cre"}
    with pytest.raises(InputError, match=r"row 2 .*sex 'female' is not allowed"):
        validate_sessions(sheet.assign(sex=["female", None]))
    with pytest.raises(InputError, match=r"animal 'm1': column 'age' differs between its rows \(P90D, P97D\)"):
        validate_sessions(sheet.assign(age=["P90D", "P97D"]))

    from test_export import _fake_extraction

    ext, _ = _fake_extraction(tmp_path)
    files = export.export_session(ext, "a", tmp_path / "out", metadata={"species": "Mus musculus", **subject},
                                  formats=("nwb",))
    with pynwb.NWBHDF5IO(str(files[0]), "r") as io:
        s = io.read().subject
        assert (s.subject_id, s.sex, s.age, s.genotype) == ("m1", "F", "P90D", "Ai148 x Cre")
