"""Silent sessions: crosstalk, per-session activity flags and tracking F1 under turnover.

Run::

    python benchmarks/bench_silent_sessions.py                      # 4 conditions, table
    python benchmarks/bench_silent_sessions.py --fractions 0.6 --snr high --frames 300

Each condition simulates one animal (``default`` preset, 160 x 160 px, 40 neurons, 4
sessions, no motion) whose neurons are active in a fraction of the sessions (turnover:
``overlap`` chosen so that the expected active fraction is 0.6 or 0.8) at two SNRs (event
amplitude 30 DN, the default, and 15 DN), writes its aligned store
(:func:`califlow.cnmfe.simulated.write_aligned_store`) and runs
:func:`califlow.cnmfe.run_cnmfe` with the default parameters.  On the neurons matched to
the ground truth it reports

* crosstalk: median and p90, over (neuron, truly silent session), of max(C) in the silent
  session over the neuron's peak max(C) in its truly active sessions;
* flags: the per-session ``active`` flags against the truth (false = flagged active while
  silent, missed = flagged inactive while active, out of all matched neuron-sessions);
* tracking F1 (:func:`califlow.metrics.score_extraction`, pairwise links) with three
  presence definitions: everywhere (no flags), the ``active`` flags, and "any event"
  (S >= ``export.event_threshold`` somewhere in the session: what the exports' ``present``
  and events tables say).

*before* is the rule and outputs of the code before the silent-session change, recomputed
from the same run (flags: 5-frame running median of C_raw >= 3 noise levels; C and S: the
final deconvolution of C_raw, :func:`califlow.cnmfe.postprocess.final_deconvolution`, not
masked); *after* is what :func:`run_cnmfe` wrote.  Stores go under --workdir (default a
temporary folder) and are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_SESSIONS = 4
SNR_AMPLITUDE = {"high": 30.0, "low": 15.0}


def overlap_for(fraction: float, n_sessions: int = N_SESSIONS) -> float:
    """``overlap`` giving an expected active fraction ``fraction`` (own session + overlap of the rest)."""
    return float(np.clip((fraction - 1.0 / n_sessions) / (1.0 - 1.0 / n_sessions), 0.0, 1.0))


def build(workdir: Path, fraction: float, snr: str, frames: int, seed: int):
    """Simulated animal and its aligned store (reused when present)."""
    from califlow.cnmfe.simulated import write_aligned_store
    from califlow.simulate import preset, simulate_animal

    cfg = preset("default", height=160, width=160, n_neurons=40, n_sessions=N_SESSIONS, frames_per_session=frames,
                 overlap=overlap_for(fraction), amplitude=SNR_AMPLITUDE[snr], motion_std=0.0, n_jumps=0)
    animal = simulate_animal(cfg, seed=seed)
    path = workdir / f"aligned_f{fraction}_{snr}_{frames}_{seed}.zarr"
    if not path.exists():
        write_aligned_store(animal, path)
    return animal, path


def legacy_outputs(ex, sessions, batches, opts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flags, C and S as the code before the change made them from the same C_raw."""
    from califlow.cnmfe.postprocess import final_deconvolution
    from califlow.preprocess.temporal import running_median

    C, S = np.zeros_like(ex.C_raw), np.zeros_like(ex.C_raw)
    for a, b in batches:
        C[:, a:b], S[:, a:b] = final_deconvolution(ex.C_raw[:, a:b], opts.final_deconv, opts.fps)
    flags = np.stack([running_median(ex.C_raw[:, s["start"]:s["stop"]].T, 5).max(axis=0) >= 3.0
                      for s in sessions], axis=1)
    return flags, C, S


def crosstalk(gt, C: np.ndarray, match) -> tuple[float, float]:
    """Median and p90 of max(C) in truly silent sessions over the peak in truly active ones."""
    b = gt.session_bounds
    ratios = []
    for i, j in zip(match.true_idx, match.est_idx):
        peaks = np.array([C[j, b[s]:b[s + 1]].max() for s in range(len(b) - 1)])
        act = gt.active[i]
        top = peaks[act].max()
        if top > 0:
            ratios += list(np.maximum(peaks[~act], 0) / top)
    r = np.asarray(ratios)
    return (float(np.median(r)), float(np.percentile(r, 90))) if r.size else (float("nan"), float("nan"))


def flag_errors(gt, flags: np.ndarray, match) -> tuple[int, int, int]:
    """(false, missed, total) over matched neuron-sessions."""
    t, e = gt.active[match.true_idx], flags[match.est_idx]
    return int((e & ~t).sum()), int((~e & t).sum()), int(t.size)


def event_presence(S: np.ndarray, sessions, threshold: float) -> np.ndarray:
    """(K, S) any S >= threshold (> 0) in the session: the exports' ``present``."""
    from califlow.export import event_mask

    return np.stack([event_mask(S[:, s["start"]:s["stop"]], threshold).any(axis=1) for s in sessions], axis=1)


def evaluate(gt, ex, flags, C, S, sessions, threshold) -> dict:
    from califlow.metrics import score_extraction

    r = score_extraction(gt, ex.A, C, S, active_est=flags)
    med, p90 = crosstalk(gt, C, r["match"])
    false, missed, total = flag_errors(gt, flags, r["match"])
    f1 = {name: round(score_extraction(gt, ex.A, C, S, active_est=pres)["tracking"]["f1"], 3)
          for name, pres in (("everywhere", None), ("events", event_presence(S, sessions, threshold)))}
    return {"crosstalk_median": round(med, 3), "crosstalk_p90": round(p90, 3), "false": false, "missed": missed,
            "neuron_sessions": total, "f1_flags": round(r["tracking"]["f1"], 3), "f1_events": f1["events"],
            "f1_everywhere": f1["everywhere"], "detection_f1": round(r["f1"], 3),
            "spike_r": round(r["spike_r"], 3), "trace_r": round(r["trace_r"], 3)}


def run_condition(workdir: Path, fraction: float, snr: str, frames: int, seed: int) -> dict:
    from califlow.cnmfe import run_cnmfe
    from califlow.cnmfe.pipeline import plan
    from califlow.params import default_config

    animal, path = build(workdir, fraction, snr, frames, seed)
    gt = animal.ground_truth
    t = time.perf_counter()
    ex = run_cnmfe(path, workdir / f"cnmfe_f{fraction}_{snr}.zarr", {})
    wall = time.perf_counter() - t
    p = plan(path, {})
    threshold = float(default_config()["export"]["event_threshold"])
    flags0, C0, S0 = legacy_outputs(ex, p.store.sessions, p.batches, p.opts)
    return {"fraction": fraction, "snr": snr, "true_active": round(float(gt.active.mean()), 2),
            "wall_s": round(wall, 1),
            "before": evaluate(gt, ex, flags0, C0, S0, p.store.sessions, threshold),
            "after": evaluate(gt, ex, ex.active, ex.C, ex.S, p.store.sessions, threshold)}


COLUMNS = ("crosstalk_median", "crosstalk_p90", "false", "missed", "neuron_sessions", "f1_everywhere", "f1_flags",
           "f1_events", "detection_f1", "trace_r", "spike_r")


def print_table(rows: list[dict]) -> None:
    print("| fraction | SNR | true active | version | " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * (4 + len(COLUMNS)))
    for r in rows:
        for version in ("before", "after"):
            v = r[version]
            print(f"| {r['fraction']} | {r['snr']} | {r['true_active']} | {version} | "
                  + " | ".join(str(v[c]) for c in COLUMNS) + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.6, 0.8])
    ap.add_argument("--snr", nargs="+", choices=sorted(SNR_AMPLITUDE), default=["high", "low"])
    ap.add_argument("--frames", type=int, default=400, help="frames per session")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_silent_"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for fraction in args.fractions:
        for snr in args.snr:
            rows.append(run_condition(workdir, fraction, snr, args.frames, args.seed))
            print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
