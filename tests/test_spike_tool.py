"""The spike-extraction tool: inputs (isxd, NWB, CSV, NPY, cnmfe.zarr), outputs, CLI, errors."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from califlow.cli import main as cli_main
from califlow.deconv import deconvolve, impulse_response
from califlow.deconv.estimate import ar_roots
from califlow.deconv.tool import read_inputs, run_spike_extraction
from califlow.errors import ConfigError, InputError
from califlow.io.isxd import CellSet, Timing, read_cellset, read_eventset, write_cellset

IDEAS = "inscopix_ideas_toolbox_caiman"


def sim_traces(K=5, T=1500, g=0.95, sn=0.3, rate=0.02, seed=0):
    rng = np.random.default_rng(seed)
    S = (rng.random((K, T)) < rate) * rng.uniform(0.5, 1.5, (K, T))
    h = impulse_response((g,), T)
    C = np.stack([np.convolve(s, h)[:T] for s in S])
    Y = 1.0 + C + sn * rng.standard_normal((K, T))
    return Y, C, S


def binned_corr(a, b, width=5):
    n = len(a) // width * width
    return float(np.corrcoef(a[:n].reshape(-1, width).sum(1), b[:n].reshape(-1, width).sum(1))[0, 1])


# ------------------------------------------------------------------ real Inscopix cell sets
def test_real_isxd_series_round_trip(shared_data, tmp_path):
    files = [shared_data / IDEAS / f"cellset_series_part{i}.isxd" for i in (1, 2)]
    records = run_spike_extraction(files, tmp_path, {})
    assert [r["name"] for r in records] == ["cellset_series_part1", "cellset_series_part2"]
    for f in files:
        src = read_cellset(f)
        den = read_cellset(tmp_path / f"{f.stem}.denoised.isxd")
        assert den.names == src.names and den.statuses == src.statuses
        assert den.timing == src.timing and den.spacing == src.spacing
        np.testing.assert_array_equal(den.images, src.images)
        assert den.extra_properties == src.extra_properties
        ref = deconvolve(src.traces[2].astype(np.float64))
        np.testing.assert_allclose(den.traces[2], ref.calcium(), rtol=1e-5, atol=1e-6)
        ev = read_eventset(tmp_path / f"{f.stem}.events.isxd")
        assert ev.names == src.names
        table = pd.read_csv(tmp_path / f"{f.stem}.events.csv")
        mine = table[table.cell == src.names[2]]
        frames = np.flatnonzero(ref.s > 0)
        np.testing.assert_array_equal(mine.frame.to_numpy(), frames)
        np.testing.assert_array_equal(ev.offsets_us[2], np.rint(frames * src.timing.period_s * 1e6))
        np.testing.assert_allclose(ev.amplitudes[2], ref.s[frames], rtol=1e-6)
        params = pd.read_csv(tmp_path / f"{f.stem}.params.csv")
        assert params.ok.all() and params.g1.between(0, 1).all() and (params.sn > 0).all()


def test_real_isxd_outputs_read_by_isx(shared_data, tmp_path):
    isx = pytest.importorskip("isx")
    f = shared_data / IDEAS / "cellset_series_part2.isxd"
    run_spike_extraction([f], tmp_path, {"p": 2})
    cs = isx.CellSet.read(str(tmp_path / f"{f.stem}.denoised.isxd"))
    ours = read_cellset(tmp_path / f"{f.stem}.denoised.isxd")
    assert cs.num_cells == 6 and cs.get_cell_name(0) == ours.names[0]
    np.testing.assert_allclose(cs.get_cell_trace_data(3), ours.traces[3])
    es = isx.EventSet.read(str(tmp_path / f"{f.stem}.events.isxd"))
    offsets, amps = es.get_cell_data(1)
    ev = read_eventset(tmp_path / f"{f.stem}.events.isxd")
    assert np.all(np.abs(offsets.astype(np.int64) - ev.offsets_us[1].astype(np.int64)) <= 1)
    np.testing.assert_allclose(amps, ev.amplitudes[1])


# ------------------------------------------------------------------ simulated cell set
def test_isxd_dropped_frames_and_bad_cells(tmp_path, caplog):
    Y, C, S = sim_traces(K=4, T=2000)
    Y = np.vstack([Y, np.full((1, 2000), 3.0)]).astype(np.float32)  # a constant (rejected) cell
    dropped = [100, 101, 900]
    Y[:, dropped] = np.nan
    cs = CellSet(images=np.random.default_rng(1).random((5, 8, 9)).astype(np.float32), traces=Y,
                 names=[f"cell{k}" for k in range(5)],
                 statuses=["accepted", "accepted", "undecided", "accepted", "rejected"],
                 timing=Timing(num_samples=2000, period_s=0.05, start_s=100.0, dropped=dropped),
                 spacing=(8, 9), extra_properties={"x": 1})
    src = tmp_path / "sim.isxd"
    write_cellset(src, cs)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        run_spike_extraction([src], out, {})
    assert "cell4 (rejected) not deconvolved" in caplog.text
    den = read_cellset(out / "sim.denoised.isxd")
    assert den.statuses == cs.statuses and den.timing == cs.timing
    assert np.isnan(den.traces[:4, dropped]).all()
    assert np.isfinite(np.delete(den.traces[:4], dropped, axis=1)).all()
    assert np.isnan(den.traces[4]).all()
    params = pd.read_csv(out / "sim.params.csv")
    assert params.ok.tolist() == [True] * 4 + [False]
    assert "constant" in params.error[4]
    events = pd.read_csv(out / "sim.events.csv")
    assert set(events.cell) <= {f"cell{k}" for k in range(4)}
    for k in range(4):
        s_hat = np.zeros(2000)
        ev = events[events.cell == f"cell{k}"]
        s_hat[ev.frame.to_numpy()] = ev.amplitude.to_numpy()
        assert binned_corr(s_hat, S[k]) > 0.8
        np.testing.assert_allclose(ev.time_s.to_numpy(), ev.frame.to_numpy() * 0.05)


# ------------------------------------------------------------------ CSV, NPY, CLI
def test_csv_input_with_time_and_status_rows_via_cli(tmp_path, capsys):
    Y, C, S = sim_traces(K=3, T=1200, seed=2)
    t = 5.0 + np.arange(1200) / 20.0
    lines = ["Time(s)/Cell Status,C0,C1,C2", ",accepted,rejected,undecided"]
    lines += [f"{ti:.3f}," + ",".join(f"{v:.6f}" for v in row) for ti, row in zip(t, Y.T)]
    src = tmp_path / "traces.csv"
    src.write_text("\n".join(lines) + "\n")
    rc = cli_main(["deconvolve", str(src), "--out", str(tmp_path / "o"), "--g", "0.95", "--sn", "0.3",
                   "--s_min", "-2", "--bas_nonneg", "false"])
    assert rc == 0
    assert "traces: 3 cells (0 failed)" in capsys.readouterr().out
    params = pd.read_csv(tmp_path / "o" / "traces.params.csv")
    assert params.status.tolist() == ["accepted", "rejected", "undecided"]
    assert np.allclose(params.g1, 0.95) and np.allclose(params.sn, 0.3)
    assert np.allclose(params.s_min, 2 * 0.3 * np.sqrt(0.05))
    den = pd.read_csv(tmp_path / "o" / "traces.denoised.csv")
    assert list(den.columns) == ["time_s", "C0", "C1", "C2"]
    np.testing.assert_allclose(den.time_s, np.arange(1200) / 20.0, atol=1e-6)
    ref = deconvolve(Y[1].round(6), g=[0.95], sn=0.3, s_min=-2, bas_nonneg=False)
    np.testing.assert_allclose(den.C1, ref.calcium(), rtol=1e-4, atol=1e-5)


def test_npy_input_and_p2(tmp_path):
    Y, C, S = sim_traces(K=3, T=1500, seed=3)
    np.save(tmp_path / "y.npy", Y)
    rc = cli_main(["deconvolve", str(tmp_path / "y.npy"), "--out", str(tmp_path / "o"), "--fps", "10",
                   "--p", "2", "--g", "1.7,-0.712", "--threads", "1"])
    assert rc == 0
    params = pd.read_csv(tmp_path / "o" / "y.params.csv")
    assert np.allclose(params.g1, 1.7) and np.allclose(params.g2, -0.712)
    events = pd.read_csv(tmp_path / "o" / "y.events.csv")
    np.testing.assert_allclose(events.time_s, events.frame / 10.0)
    den = np.load(tmp_path / "o" / "y.denoised.npy")
    spk = np.load(tmp_path / "o" / "y.spikes.npy")
    assert den.shape == spk.shape == (3, 1500) and den.dtype == np.float32
    ref = deconvolve(Y[1], p=2, g=[1.7, -0.712])
    np.testing.assert_allclose(den[1], ref.calcium(), rtol=1e-5, atol=1e-6)
    sel = events[events.cell == "C001"]
    np.testing.assert_allclose(spk[1, sel.frame], sel.amplitude, rtol=1e-6)


def test_config_file_and_parameter_errors(tmp_path, capsys):
    Y, _, _ = sim_traces(K=2, T=800, seed=4)
    np.save(tmp_path / "y.npy", Y)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("spike_extraction:\n  p: 2\n  noise_method: mean\n")
    assert cli_main(["deconvolve", str(tmp_path / "y.npy"), "--out", str(tmp_path / "o"),
                     "--config", str(cfg)]) == 0
    assert "g2" in pd.read_csv(tmp_path / "o" / "y.params.csv").columns
    assert cli_main(["deconvolve", str(tmp_path / "y.npy"), "--out", str(tmp_path / "o"),
                     "--p", "3"]) == 1
    assert "spike_extraction.p" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="p = 2 needs 2"):
        run_spike_extraction([tmp_path / "y.npy"], tmp_path / "o", {"p": 2, "g": "0.9"})
    with pytest.raises(ConfigError, match="noise_range"):
        run_spike_extraction([tmp_path / "y.npy"], tmp_path / "o", {"noise_range": [0.4, 0.3]})
    with pytest.raises(ConfigError, match="optimize_g"):
        run_spike_extraction([tmp_path / "y.npy"], tmp_path / "o",
                             {"optimize_g": 3, "method_deconvolution": "cvxpy"})


def test_spike_params_resolution():
    from califlow.deconv.tool import spike_params

    se = spike_params({"g": "1.7,-0.71", "sn": "0.5", "optimize_g": True, "s_min": None})
    assert se["g"] == [1.7, -0.71] and se["sn"] == 0.5 and se["bl"] is None
    assert se["optimize_g"] == 10 and se["fudge_factor"] == 0.96
    assert spike_params({"optimize_g": 4})["optimize_g"] == 4
    assert spike_params(se)["g"] == [1.7, -0.71]  # already resolved groups are accepted
    with pytest.raises(ConfigError, match="spike_extraction.g"):
        spike_params({"g": "fast"})


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(InputError, match="missing.isxd: input does not exist"):
        read_inputs([tmp_path / "missing.isxd"])
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(InputError, match="unsupported input"):
        read_inputs([tmp_path / "x.txt"])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(InputError, match="'oops' in data row 2, column 'b'"):
        read_inputs([tmp_path / "bad.csv"])
    (tmp_path / "fake.isxd").write_bytes(b"not an isxd file at all")
    with pytest.raises(InputError, match="fake.isxd"):
        read_inputs([tmp_path / "fake.isxd"])
    (tmp_path / "fake.nwb").write_bytes(b"nope")
    with pytest.raises(InputError, match="fake.nwb: not a readable NWB"):
        read_inputs([tmp_path / "fake.nwb"])


# ------------------------------------------------------------------ cnmfe.zarr
def test_cnmfe_zarr_per_session_outputs(tmp_path):
    import zarr

    Y, C, S = sim_traces(K=3, T=2400, seed=5)
    store = tmp_path / "cnmfe.zarr"
    grp = zarr.open_group(str(store), mode="w")
    grp.create_array("C_raw", data=Y.astype(np.float32))
    grp.create_array("A", data=np.zeros((3, 4, 4), np.float32))
    grp.attrs["sessions"] = [{"name": "day1", "start": 0, "stop": 1000, "fps": 20.0},
                             {"name": "day2", "start": 1000, "stop": 2400, "fps": 10.0}]
    records = run_spike_extraction([store], tmp_path / "spikes", {})
    assert [r["name"] for r in records] == ["day1", "day2"]
    d2 = zarr.open_group(str(tmp_path / "spikes" / "day2.deconv.zarr"), mode="r")
    assert d2["C"].shape == d2["S"].shape == (3, 1400)
    assert d2.attrs["fps"] == 10.0 and d2.attrs["start_frame"] == 1000
    assert d2.attrs["cell_names"] == ["C000", "C001", "C002"]
    ref = deconvolve(Y[2, 1000:].astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(d2["C"][2], ref.calcium(), rtol=1e-5, atol=1e-6)
    ev = pd.read_csv(tmp_path / "spikes" / "day2.events.csv")
    assert (ev.session == "day2").all() and ev.frame.max() < 1400
    s_hat = np.zeros(1400)
    sel = ev[ev.cell == "C001"]
    s_hat[sel.frame.to_numpy()] = sel.amplitude.to_numpy()
    assert binned_corr(s_hat, S[1, 1000:]) > 0.8


# ------------------------------------------------------------------ NWB
def _write_nwb(path: Path, Y: np.ndarray, rate: float = 20.0) -> None:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries

    nwb = NWBFile(session_description="test", identifier="t",
                  session_start_time=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    dev = nwb.create_device(name="scope")
    plane = nwb.create_imaging_plane(name="plane", optical_channel=OpticalChannel(
        name="ch", description="g", emission_lambda=525.0), description="p", device=dev,
        excitation_lambda=470.0, indicator="GCaMP", location="CA1", imaging_rate=rate)
    module = nwb.create_processing_module("ophys", "ophys")
    seg = ImageSegmentation(name="ImageSegmentation")
    module.add(seg)
    ps = seg.create_plane_segmentation(name="PlaneSegmentation", description="rois", imaging_plane=plane)
    for k in range(Y.shape[0]):
        mask = np.zeros((6, 6), np.float32)
        mask[k, k] = 1.0
        ps.add_roi(image_mask=mask, id=10 + k)
    fl = Fluorescence()
    module.add(fl)
    region = ps.create_roi_table_region(region=list(range(Y.shape[0])), description="all")
    fl.add_roi_response_series(RoiResponseSeries(name="RoiResponseSeries", data=Y.T.astype(np.float32),
                                                 rois=region, unit="a.u.", rate=rate))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_nwb_input_gets_deconvolution_added(tmp_path):
    pytest.importorskip("pynwb")
    from pynwb import NWBHDF5IO

    Y, C, S = sim_traces(K=3, T=1200, seed=6)
    src = tmp_path / "rec.nwb"
    _write_nwb(src, Y)
    run_spike_extraction([src], tmp_path / "o", {})
    with NWBHDF5IO(str(tmp_path / "o" / "rec.denoised.nwb"), "r") as io:
        nwb = io.read()
        cont = nwb.processing["ophys"]["CaliflowDeconvolution"]
        den = np.asarray(cont["Denoised"].data[:])
        dec = np.asarray(cont["Deconvolved"].data[:])
        assert den.shape == (1200, 3) and cont["Denoised"].rate == 20.0
        assert list(cont["Denoised"].rois.data[:]) == [0, 1, 2]
    ref = deconvolve(Y[0].astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(den[:, 0], ref.calcium(), rtol=1e-4, atol=1e-5)
    assert binned_corr(dec[:, 2], S[2]) > 0.8
    params = pd.read_csv(tmp_path / "o" / "rec.params.csv")
    assert params.cell.tolist() == ["roi10", "roi11", "roi12"]
    # the input is untouched
    with NWBHDF5IO(str(src), "r") as io:
        assert "CaliflowDeconvolution" not in io.read().processing["ophys"].data_interfaces


# ------------------------------------------------------------------ frame rate
def _fps_case(fps: float, snr: float = 8.0, n: int = 8, duration_s: float = 120.0, seed: int = 3):
    """Simulator calcium (rise 0.15 s, decay 0.8 s) + noise + baseline, as CNMF-E's C_raw."""
    from califlow.cnmfe.postprocess import remove_baseline, scale_to_noise
    from califlow.simulate.activity import calcium_traces, spike_trains

    rng = np.random.default_rng(seed)
    T = int(duration_s * fps)
    amp = 30.0 * np.exp(0.3 * rng.standard_normal(n))
    S = spike_trains(n, T, fps, rate_hz=np.full(n, 0.3), amplitude=amp, event_jitter=0.25,
                     correlation=0.0, rng=rng)
    C = calcium_traces(S, np.full(n, 0.15), np.full(n, 0.8), fps).astype(np.float64)
    Y = 110.0 + C + (amp / snr)[:, None] * rng.standard_normal((n, T))
    return remove_baseline(scale_to_noise(Y, None), fps).astype(np.float64), C, S


@pytest.mark.parametrize("fps", [20.0, 30.0])
def test_high_frame_rates_warn_and_ar2_matches_cnmfe(tmp_path, fps, caplog):
    """At 20-30 fps the calcium rise spans frames: with the IDEAS defaults (p 1, fudge_factor
    0.96) the tool says so; with p 2, fudge_factor 1.0 it scores as CNMF-E's final
    deconvolution of the same C_raw does."""
    from califlow.cnmfe.postprocess import final_deconvolution
    from califlow.params import default_config

    raw, C, S = _fps_case(fps)
    np.save(tmp_path / "raw.npy", raw.astype(np.float32))
    with caplog.at_level("WARNING", logger="califlow"):
        run_spike_extraction([tmp_path / "raw.npy"], tmp_path / "ideas", {}, fps=fps, n_threads=1)
    assert "spike_extraction.p = 1 at" in caplog.text and "set p: 2" in caplog.text
    S_ideas = np.load(tmp_path / "ideas" / "raw.spikes.npy").astype(np.float64)
    run_spike_extraction([tmp_path / "raw.npy"], tmp_path / "ar2", {"p": 2, "fudge_factor": 1.0}, fps=fps,
                         n_threads=1)
    S_tool = np.load(tmp_path / "ar2" / "raw.spikes.npy").astype(np.float64)
    C_tool = np.load(tmp_path / "ar2" / "raw.denoised.npy").astype(np.float64)
    C_ref, S_ref = final_deconvolution(raw.astype(np.float32),
                                       dict(default_config()["cnmfe"]["final_deconv_options"]), fps)

    def median_r(est, truth, fn):
        return float(np.median([fn(est[k], truth[k]) for k in range(len(truth))]))

    r_tool, r_ref, r_ideas = (median_r(x, S, binned_corr) for x in (S_tool, S_ref, S_ideas))
    assert r_tool >= r_ref - 0.02 and r_tool > 0.85 and r_tool > r_ideas + 0.1, (r_tool, r_ref, r_ideas)

    def corr(a, b):
        return np.corrcoef(a, b)[0, 1]

    assert median_r(C_tool, C, corr) > median_r(C_ref, C, corr) - 0.01
    g = pd.read_csv(tmp_path / "ar2" / "raw.params.csv")[["g1", "g2"]].to_numpy()
    tau = -1.0 / (fps * np.log(ar_roots(g).max(axis=1)))
    assert abs(np.median(tau) / 0.8 - 1) < 0.35  # the decay time (s) is kept
