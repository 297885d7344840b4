"""The spike-extraction tool against CNMF-E's final deconvolution across frame rates.

    python benchmarks/bench_spike_fps.py                      # tool vs CNMF-E, fps 5/10/20/30, 2 SNRs
    python benchmarks/bench_spike_fps.py --diagnose           # + estimated tau/sn vs truth and variants
    python benchmarks/bench_spike_fps.py --set p=1 fudge_factor=0.96   # the IDEAS defaults
    python benchmarks/bench_spike_fps.py --fps 20 --snr 3 --neurons 12 --duration 120   # smaller

Traces are simulated with the animal simulator's activity model (``califlow.simulate.activity``:
Poisson events with log-normal amplitudes, double-exponential calcium with tau_rise 0.15 s and
tau_decay 0.8 s, 10 % per-neuron jitter), plus white noise of standard deviation
``amplitude / snr`` and a baseline (110 DN and a slow drift). Every trace then goes through
what CNMF-E writes as ``C_raw`` (noise units, slow baseline removed:
``remove_baseline(scale_to_noise(Y))``), and on that same ``C_raw``:

  tool    ``califlow deconvolve`` with its default parameters (an NPY input with ``--fps``),
  cnmfe   CNMF-E's final deconvolution (``final_deconvolution`` with the default
          ``final_deconv_options``).

Printed per fps and SNR: the median over neurons of the binned spike r (5-frame bins, and
0.5 s bins so that rates are comparable) and of the trace r (calcium). ``--diagnose`` adds the
estimated decay time (s, the largest AR root) over the true one, the estimated noise over the
true one, and the spike r of variants of the tool's estimate (p, lags, fudge_factor,
noise_range, optimize_g, and each neuron's true AR(1) decay).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import yaml

from califlow.cnmfe.postprocess import final_deconvolution, remove_baseline, scale_to_noise
from califlow.deconv import get_noise
from califlow.deconv.estimate import ar_roots
from califlow.deconv.foopsi import deconvolve_batch
from califlow.deconv.tool import _deconv_kwargs, run_spike_extraction, spike_params
from califlow.metrics import pearson_rows
from califlow.params import default_config
from califlow.simulate.activity import calcium_traces, spike_trains

SNRS = {"low": 3.0, "high": 8.0}


def simulate(fps: float, snr: float, n: int = 24, duration_s: float = 300.0, seed: int = 0,
             drift: float = 0.25) -> dict:
    """Raw traces (baseline + calcium + noise) of ``n`` neurons and their ground truth."""
    rng = np.random.default_rng(seed)
    T = int(round(duration_s * fps))
    rate = np.clip(0.2 * np.exp(0.6 * rng.standard_normal(n)), 0.05, 0.5)
    amp = 30.0 * np.exp(0.3 * rng.standard_normal(n))
    S = spike_trains(n, T, fps, rate_hz=rate, amplitude=amp, event_jitter=0.25, correlation=0.0, rng=rng)
    tau_rise = 0.15 * (1 + 0.1 * rng.standard_normal(n))
    tau_decay = 0.8 * (1 + 0.1 * rng.standard_normal(n))
    C = calcium_traces(S, tau_rise, tau_decay, fps).astype(np.float64)
    sn = amp / snr
    t = np.arange(T) / fps
    slow = drift * amp[:, None] * np.sin(2 * np.pi * t / 120.0 + rng.uniform(0, 2 * np.pi, (n, 1)))
    Y = 110.0 + slow + C + sn[:, None] * rng.standard_normal((n, T))
    scale = np.asarray(get_noise(Y), np.float64)
    raw = remove_baseline(scale_to_noise(Y, None), fps).astype(np.float64)
    return {"raw": raw, "C": C, "S": S.astype(np.float64), "tau_decay": tau_decay, "tau_rise": tau_rise,
            "sn": sn / scale, "fps": fps}


def binned(S: np.ndarray, edges_frames: np.ndarray) -> np.ndarray:
    """Sum of S (K, T) over the frames of each bin [edges[i], edges[i+1])."""
    return np.add.reduceat(S[:, :edges_frames[-1]], edges_frames[:-1], axis=1)


def scores(sim: dict, C: np.ndarray, S: np.ndarray) -> dict:
    """Median binned spike r (5 frames; 0.5 s) and trace r over the neurons."""
    T = S.shape[1]
    e5 = np.arange(0, T // 5 * 5 + 1, 5)
    fps = sim["fps"]
    e_half = np.unique(np.floor(np.arange(0, int(T / fps / 0.5) + 1) * 0.5 * fps).astype(int))
    return {"r5": float(np.nanmedian(pearson_rows(binned(sim["S"], e5), binned(S, e5)))),
            "r05s": float(np.nanmedian(pearson_rows(binned(sim["S"], e_half), binned(S, e_half)))),
            "trace": float(np.nanmedian(pearson_rows(sim["C"], C)))}


def run_tool(sim: dict, params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The tool as a user runs it: an NPY input, ``--fps``, the given (default) parameters."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "traces.npy"
        np.save(src, sim["raw"].astype(np.float32))
        run_spike_extraction([src], Path(tmp) / "out", params or {}, fps=sim["fps"], n_threads=2)
        C = np.load(Path(tmp) / "out" / "traces.denoised.npy").astype(np.float64)
        S = np.load(Path(tmp) / "out" / "traces.spikes.npy").astype(np.float64)
    return np.nan_to_num(C), np.nan_to_num(S)


def run_cnmfe(sim: dict) -> tuple[np.ndarray, np.ndarray]:
    """CNMF-E's final deconvolution of the same C_raw (default final_deconv_options)."""
    opts = dict(default_config()["cnmfe"]["final_deconv_options"])
    C, S = final_deconvolution(sim["raw"].astype(np.float32), opts, sim["fps"])
    return C.astype(np.float64), S.astype(np.float64)


def decay_tau_s(g: np.ndarray, fps: float) -> np.ndarray:
    """Decay time constant (s) of AR coefficients (K, p): the largest root."""
    d = ar_roots(g).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -1.0 / (fps * np.log(d))


def _variant(sim: dict, **over) -> dict:
    """The tool's estimate and solve with some parameters overridden (deconvolve_batch)."""
    kw = _deconv_kwargs(spike_params({}))
    kw.update(over)
    res = deconvolve_batch(sim["raw"], n_threads=2, **kw)
    out = scores(sim, res.C, res.S)
    if res.g.shape[1]:
        out["tau"] = float(np.nanmedian(decay_tau_s(res.g, sim["fps"]) / sim["tau_decay"]))
    out["sn"] = float(np.nanmedian(res.sn / sim["sn"]))
    return out


def diagnose(sim: dict) -> None:
    """Estimated decay time and noise against the truth, and spike r of estimate variants."""
    fps = sim["fps"]
    d_true = np.exp(-1.0 / (fps * sim["tau_decay"]))
    kw = _deconv_kwargs(spike_params({}))
    variants = {
        "default (tool estimate)": {},
        "fudge_factor 1": {"fudge_factor": 1.0},
        f"lags {int(round(fps))} (1 s)": {"lags": int(round(fps))},
        f"lags {int(round(fps))}, fudge 1": {"lags": int(round(fps)), "fudge_factor": 1.0},
        "p 2, fudge 1": {"p": 2, "fudge_factor": 1.0},
        "noise_range [0.1, 0.5]": {"noise_range": (0.1, 0.5)},
        "optimize_g 10": {"optimize_g": 10},
        "true AR(1) decay g": {"g": d_true[:, None]},
    }
    for label, over in variants.items():
        if kw["p"] != 1 and "g" in over:
            continue
        r = _variant(sim, **over)
        extra = f" tau_est/true {r['tau']:.2f}" if "tau" in r else ""
        print(f"      {label:28s} r5 {r['r5']:.3f} r0.5s {r['r05s']:.3f} trace {r['trace']:.3f}"
              f"{extra} sn_est/true {r['sn']:.3f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fps", type=float, nargs="+", default=[5, 10, 20, 30])
    ap.add_argument("--snr", nargs="+", default=list(SNRS), help="low (3) | high (8) | a number")
    ap.add_argument("--neurons", type=int, default=24)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds per trace")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--diagnose", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="tool parameters instead of the defaults, e.g. p=1 fudge_factor=0.96 (IDEAS)")
    args = ap.parse_args(argv)
    params = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    print(f"tool parameters: {params or 'defaults'}")
    print(f"{'fps':>4} {'snr':>5} | {'tool r5':>7} {'cnmfe r5':>8} | {'tool r.5s':>9} {'cnmfe r.5s':>10} "
          f"| {'tool trace':>10} {'cnmfe trace':>11}")
    for snr_name in args.snr:
        snr = SNRS.get(snr_name) or float(snr_name)
        for fps in args.fps:
            sim = simulate(fps, snr, args.neurons, args.duration, args.seed)
            a, b = scores(sim, *run_tool(sim, params)), scores(sim, *run_cnmfe(sim))
            print(f"{fps:4g} {snr:5g} | {a['r5']:7.3f} {b['r5']:8.3f} | {a['r05s']:9.3f} {b['r05s']:10.3f} "
                  f"| {a['trace']:10.3f} {b['trace']:11.3f}", flush=True)
            if args.diagnose:
                diagnose(sim)


if __name__ == "__main__":
    main()
