"""The disk estimate printed before any job: what it counts, and the warning when it cannot fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tifffile

from califlow import disk_budget
from califlow.cohort_check import SessionProbe, check_animals
from califlow.disk_budget import animal_budget, budget_lines
from califlow.params import resolve_config


def _probe(n_frames, shape=(100, 120)):
    return SessionProbe(20.0, "test", shape, "uint8", n_frames)


def test_an_animal_counts_its_frames_on_the_common_field_of_view():
    b = animal_budget({"s1": _probe(300, (100, 120)), "s2": _probe(200, (96, 124))})
    assert b.n_frames == 500 and b.shape == (96, 120) and b.sessions == 2
    assert b.aligned == 500 * 96 * 120 * 4  # float32 frames
    # ingest (compressed: its padding compresses away) + enhanced (uncompressed: 64-px and
    # 100-frame chunks stored whole, as zarr writes edge chunks)
    ingest = 300 * 100 * 120 + 200 * 96 * 124
    enhanced = 300 * 128 * 128 + 200 * 128 * 128
    assert b.intermediates == 4 * (ingest + enhanced)
    # per neuron: A and A_sessions (3 images) and C, C_raw, S in cnmfe.zarr; per session 3 footprints
    # (two cell sets, NWB), 5 float32 traces and 3 CSV columns of text
    cnmfe = (3 * 96 * 120 + 3 * 500) * 4
    exports = (3 * 100 * 120 + 5 * 300) * 4 + 3 * 300 * 10 + (3 * 96 * 124 + 5 * 200) * 4 + 3 * 200 * 10
    assert b.per_100_neurons == 100 * (cnmfe + exports)
    for dtype in ("float16", "uint16-scaled"):  # concatenation.dtype: 2 bytes a value, nothing else changes
        half = animal_budget({"s1": _probe(300, (100, 120)), "s2": _probe(200, (96, 124))}, dtype)
        assert half.aligned == 500 * 96 * 120 * 2 and half.intermediates == b.intermediates


def test_the_probe_counts_frames_after_temporal_downsampling_and_resampling(tmp_path):
    rows = []
    for s, n in (("s1", 41), ("s2", 40)):
        path = tmp_path / f"{s}.tif"
        tifffile.imwrite(path, np.zeros((n, 32, 36), np.uint16) + 7)
        rows.append({"animal": "m1", "session": s, "path": str(path), "fps": 30.0})
    sheet = pd.DataFrame(rows)
    cfg = resolve_config({"downsampling": {"temporal_ds": 2, "spatial_ds": 2}})
    probes = check_animals(sheet, cfg)
    assert [p.n_frames for p in probes["m1"].values()] == [21, 20]  # ceil(n / 2)
    assert probes["m1"]["s1"].shape == (16, 18)
    cfg = resolve_config({"downsampling": {"temporal_ds": 1, "target_fps": 20.0}})
    assert check_animals(sheet, cfg)["m1"]["s2"].n_frames == 27  # 40 frames at 30 fps span 39/30 s


def test_a_single_session_animal_is_estimated_too(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((12, 20, 20), np.uint8))
    probes = check_animals(pd.DataFrame([{"animal": "m9", "session": "s1", "path": str(path), "fps": 10.0}]),
                           resolve_config({}))
    assert probes["m9"]["s1"].n_frames == 12


def test_the_lines_name_every_animal_and_warn_when_the_disk_is_too_small(monkeypatch, tmp_path):
    probes = {"m1": {"s1": _probe(1000), "s2": _probe(1000)}}
    lines, warning = budget_lines(probes, ["m1", "m2"], keep_intermediates=False, results=str(tmp_path / "results"))
    text = "\n".join(lines)
    assert "m1: 2 session(s), 2000 frames of 100x120 px: aligned.zarr 91.6 MiB" in text
    assert "intermediates 216.6 MiB (deleted after concatenation)" in text and "kept 91.6 MiB" in text
    assert "m2: recordings not there yet" in text and "at most 308.1 MiB of movies at once" in text
    assert warning is None
    monkeypatch.setattr(disk_budget, "free_bytes", lambda folder: 10 * 2**20)
    lines, warning = budget_lines(probes, ["m1"], keep_intermediates=True, results="out")
    assert "kept 308.1 MiB" in "\n".join(lines)
    assert warning.startswith("the run may need up to 308.1 MiB of movies on the disk of out/, which has 10.0 MiB free")
