"""Silent sessions: the per-session activity test, and C / S / events of inactive sessions."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import zarr

from califlow.cnmfe import run_cnmfe
from califlow.cnmfe.postprocess import largest_transients, session_activity, silence_inactive
from califlow.cnmfe.simulated import write_aligned_store
from califlow.export import events_table, export_session, load_extraction
from califlow.params import default_config
from califlow.preprocess.temporal import running_median
from califlow.simulate import preset, simulate_animal

CONFIG = {"cnmfe": {"patch_dims": [40, 40], "w_overlap": 16, "memory_size_to_use": 2}}
TEST = default_config()["cnmfe"]["session_activity"]
T = 400
SESSIONS = [{"start": 0, "stop": T}, {"start": T, "stop": 2 * T}]


def transient(peak: float, at: int = 150, n: int = 2 * T) -> np.ndarray:
    """A calcium transient (rise 2 frames, decay 16 frames) of the given peak."""
    t = np.arange(n) - at
    x = np.where(t >= 0, np.exp(-t / 16.0) - np.exp(-t / 2.0), 0.0)
    return peak * x / x.max()


def test_noise_test_false_positive_rate_is_pvalue():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((4000, T))
    for pvalue in (0.01, 0.05):
        _, active = session_activity(noise, np.zeros_like(noise), SESSIONS[:1], pvalue=pvalue, crosstalk=0.0)
        assert active.mean() <= 1.25 * pvalue, (pvalue, active.mean())   # white noise: ~ pvalue
    amp, p = largest_transients(3.0 * noise[:10])        # the test is scale-free: same p at any noise level
    np.testing.assert_allclose(p, largest_transients(noise[:10])[1])


def test_weak_active_session_is_active_and_crosstalk_is_not():
    rng = np.random.default_rng(0)
    weak = transient(8.0, at=100) + transient(2.8, at=T + 150)    # one small event (2.8 noise levels) in session 1
    leak = transient(30.0, at=100) + transient(3.5, at=T + 150)   # silent in session 1 but for 12 % crosstalk
    traces = np.stack([weak, leak]) + rng.standard_normal((2, 2 * T))
    old = running_median(traces[:, T:].T, 5).max(axis=0) >= 3.0   # the rule before: 5-frame median >= 3
    assert old.tolist() == [False, True]
    counts, active = session_activity(traces, np.zeros_like(traces), SESSIONS, **TEST)
    assert active[0].tolist() == [True, True]
    assert active[1].tolist() == [True, False]
    assert counts.shape == (2, 2)


def test_silence_inactive_zeroes_only_inactive_sessions():
    x = np.ones((2, 2 * T), np.float32)
    out = silence_inactive(x, np.array([[True, False], [False, True]]), SESSIONS)
    assert out[0, :T].all() and not out[0, T:].any() and not out[1, :T].any() and out[1, T:].all()
    assert x.all()                                             # the input is left as it was


@pytest.fixture(scope="module")
def extraction(tmp_path_factory):
    cfg = preset("demo", height=80, width=80, n_sessions=3, frames_per_session=300, n_neurons=12, overlap=0.3,
                 n_vessels=1, n_local_sources=2, translation=0.0, deformation=0.0)
    animal = simulate_animal(cfg, seed=5)
    tmp = tmp_path_factory.mktemp("silent")
    write_aligned_store(animal, tmp / "aligned.zarr")
    ex = run_cnmfe(tmp / "aligned.zarr", tmp / "cnmfe.zarr", CONFIG, cells_path=tmp / "cells.csv")
    return animal, ex, tmp


def test_inactive_sessions_have_no_calcium_spikes_or_events(extraction):
    animal, ex, tmp = extraction
    assert (~ex.active).any() and ex.active.any()
    g = zarr.open_group(str(tmp / "cnmfe.zarr"), mode="r")
    sessions = g.attrs["sessions"]
    C, C_raw, S = g["C"][...], g["C_raw"][...], g["S"][...]
    for j, s in enumerate(sessions):
        off = ~ex.active[:, j]
        seg = slice(s["start"], s["stop"])
        assert not S[off, seg].any() and not C[off, seg].any()
        assert (C_raw[off, seg].std(axis=1) > 0.5).all()     # the raw trace stays as measured (noise units)
    with open(tmp / "cells.csv") as fh:
        rows = list(csv.DictReader(fh))
    for k, row in enumerate(rows):
        for j, s in enumerate(sessions):
            assert int(row[f"active_{s['name']}"]) == int(ex.active[k, j])
            if not ex.active[k, j]:
                assert int(row[f"events_{s['name']}"]) == 0
    ext = load_extraction(tmp / "cnmfe.zarr")
    table = events_table(ext["S"], ext["sessions"], 0.0, ext["active"])
    names = [s["name"] for s in sessions]
    for cell, session in zip(table["cell"], table["session"]):
        assert ex.active[cell, names.index(session)]


def test_export_follows_the_flags_even_for_an_unmasked_s(extraction, tmp_path):
    _, ex, tmp = extraction
    ext = load_extraction(tmp / "cnmfe.zarr")
    ext["S"] = np.ones_like(ext["S"])                          # an extraction written before the change
    j = int(np.flatnonzero((~ex.active).any(axis=0))[0])
    s = ext["sessions"][j]
    export_session(ext, s.name, tmp_path, metadata={}, formats=("csv",))
    spikes = np.loadtxt(tmp_path / "spikes.csv", delimiter=",", skiprows=1)[:, 2:]
    raw = np.loadtxt(tmp_path / "traces_raw.csv", delimiter=",", skiprows=1)[:, 2:]
    assert not spikes[:, ~ex.active[:, j]].any() and spikes[:, ex.active[:, j]].all()
    np.testing.assert_allclose(raw, ext["C_raw"][:, s.start:s.stop].T, rtol=1e-5, atol=1e-5)
    table = events_table(ext["S"], ext["sessions"], 0.0, ext["active"])
    assert len(table) == int(sum(ex.active[:, i].sum() * (x.stop - x.start) for i, x in enumerate(ext["sessions"])))
