"""Patched CNMF-E: accuracy on simulated animals, speed, and peak memory.

Run::

    python benchmarks/bench_cnmfe.py accuracy            # default preset (4 x 1000 frames, 256x256, 80 neurons)
    python benchmarks/bench_cnmfe.py accuracy --preset dense_lowsnr
    python benchmarks/bench_cnmfe.py spikes --preset dense_lowsnr   # where spike accuracy is lost
    python benchmarks/bench_cnmfe.py iterations          # max_iter 2 (the loop before its fix) vs 4
    python benchmarks/bench_cnmfe.py speed               # 256x256x4000, 120 neurons, frames/s end to end

Sections
--------
accuracy  Simulate an animal (``califlow.simulate``), render its sessions in the reference
          frame, enhance them and compute the projections (``califlow.cnmfe.simulated``),
          run :func:`califlow.cnmfe.run_cnmfe` with the default parameters and score it with
          :func:`califlow.metrics.score_extraction`: precision, recall and F1 of the
          detection, median per-session trace r, median spike r (5-frame bins) and the
          pairwise tracking F1 (presence per session = any deconvolved event).
spikes    On the accuracy run's C_raw: median spike r (5-frame bins) and trace r of the final
          deconvolution as written, with other AR-root estimates (fudge factor 0.96 / 1, no
          refit) and with each neuron's true AR(2) roots (the oracle bound of the estimate).
iterations  The accuracy run with max_iter 2 (what the refinement loop ran before its
          convergence test compared the traces with a copy of the previous ones) and 4 (the
          default), interleaved twice in one process: wall time, iterations run per patch, scores.
speed     The same on a 256x256x4000 movie with 120 neurons: wall time, CPU time and
          frames/s of ``run_cnmfe`` (store already written), in this process.

Peak memory and speed on long movies (the 4000-frame movie repeated in time) are measured by
``benchmarks/bench_scale.py``.

Every run prints the exact command and its figures; stores are written under --workdir
(default: a temporary folder) and reused when present.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _log_setup(verbose: bool) -> None:
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    for name in ("numba", "zarr", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def build_store(workdir: Path, preset_name: str, seed: int, **overrides) -> tuple[Path, object]:
    """Simulate an animal and write its aligned store (reused when present)."""
    from califlow.cnmfe.simulated import write_aligned_store
    from califlow.simulate import preset, simulate_animal

    tag = "_".join([preset_name, str(seed)] + [f"{k}{v}" for k, v in sorted(overrides.items())])
    path = workdir / f"aligned_{tag}.zarr"
    animal = simulate_animal(preset(preset_name, **overrides), seed=seed)
    if not path.exists():
        t = time.perf_counter()
        write_aligned_store(animal, path)
        print(f"  wrote {path} in {time.perf_counter() - t:.0f} s")
    return path, animal


def score(animal, ex) -> dict:
    from califlow.metrics import score_extraction

    r = score_extraction(animal.ground_truth, ex.A, ex.C, ex.S, active_est=ex.active)
    return {"n_true": r["n_true"], "n_est": r["n_est"], "precision": round(r["precision"], 3),
            "recall": round(r["recall"], 3), "f1": round(r["f1"], 3), "trace_r": round(r["trace_r"], 3),
            "spike_r": round(r["spike_r"], 3), "tracking_f1": round(r["tracking"]["f1"], 3),
            "tracking_precision": round(r["tracking"]["precision"], 3),
            "tracking_recall": round(r["tracking"]["recall"], 3)}


def run_accuracy(args, workdir: Path) -> None:
    from califlow.cnmfe import run_cnmfe

    path, animal = build_store(workdir, args.preset, args.seed)
    t, c = time.perf_counter(), time.process_time()
    ex = run_cnmfe(path, workdir / f"cnmfe_{args.preset}.zarr", {"cnmfe": {"n_processes": args.processes}})
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    out = score(animal, ex)
    out.update(wall_s=round(wall, 1), cpu_s=round(cpu, 1))
    print(f"accuracy preset={args.preset} seed={args.seed}: {json.dumps(out)}")


def run_spikes(args, workdir: Path) -> None:
    """Where spike accuracy is lost: the final deconvolution of the same C_raw with variants."""
    import zarr

    from califlow.cnmfe import run_cnmfe
    from califlow.cnmfe.postprocess import final_deconvolution
    from califlow.deconv import deconvolve
    from califlow.metrics import match_neurons, spike_correlation, trace_correlation

    path, animal = build_store(workdir, args.preset, args.seed)
    out = workdir / f"cnmfe_{args.preset}.zarr"
    if not out.exists():
        run_cnmfe(path, out, {"cnmfe": {"n_processes": args.processes}})
    gt = animal.ground_truth
    g = zarr.open_group(str(out), mode="r")
    raw, fps, batches = g["C_raw"][...], float(g.attrs["fps"]), g.attrs["batches"]
    opts = dict(g.attrs["cnmfe_options"]["final_deconv"])
    m = match_neurons(gt.footprints_ref, g["A"][...], register=True)
    act = gt.active[m.true_idx]

    def med(x):
        return round(float(np.nanmedian(np.where(act, x, np.nan))), 3)

    def scores(C, S):
        return {"spike_r": med(spike_correlation(gt.S, S, m, 5, gt.session_bounds)),
                "trace_r": med(trace_correlation(gt.C, C, m, gt.session_bounds))}

    def final(**extra):
        C, S = np.zeros_like(raw), np.zeros_like(raw)
        for s0, s1 in batches:
            C[:, s0:s1], S[:, s0:s1] = final_deconvolution(raw[:, s0:s1], {**opts, **extra}, fps)
        return scores(C, S)

    print(f"spikes preset={args.preset}: final deconvolution {opts}")
    print(f"  as written:                            {scores(g['C'][...], g['S'][...])}")
    for label, extra in (("fudge_factor 0.96 (CaImAn)", {"fudge_factor": 0.96}),
                         ("fudge_factor 1.0", {"fudge_factor": 1.0}),
                         ("no refit of g (optimize_pars false)", {"optimize_pars": False}),
                         ("AR(1)", {"type": "ar1"}),
                         ("thresholded (L0)", {"method": "thresholded"}),
                         ("thresholded, smin -1 (1 sn)", {"method": "thresholded", "smin": -1}),
                         ("foopsi, smin -2 (2 sn)", {"method": "foopsi", "smin": -2}),
                         ("foopsi, smin -3 (3 sn)", {"method": "foopsi", "smin": -3})):
        print(f"  {label:38s} {final(**extra)}")
    # oracle: each matched neuron deconvolved with its true AR(2) roots (from tau_rise, tau_decay)
    C, S = np.zeros_like(raw), np.zeros_like(raw)
    for t, e in zip(m.true_idx, m.est_idx):
        d, r = np.exp(-1 / (fps * gt.tau_decay[t])), np.exp(-1 / (fps * gt.tau_rise[t]))
        for s0, s1 in batches:
            y = raw[e, s0:s1] - np.median(raw[e, s0:s1])
            res = deconvolve(y, p=2, g=[d + r, -d * r], sn=1.0)
            C[e, s0:s1], S[e, s0:s1] = res.calcium(), res.s
    print(f"  {'true AR(2) roots (oracle)':38s} {scores(C, S)}")


def run_iterations(args, workdir: Path) -> None:
    """max_iter 2 (what the loop ran before its convergence test was fixed) against 4, interleaved."""
    import logging
    import re

    from califlow.cnmfe import run_cnmfe

    path, animal = build_store(workdir, args.preset, args.seed)
    ran: list[int] = []

    class Count(logging.Handler):
        def emit(self, record):
            m = re.search(r"(\d+) of max_iter \d+ iterations run", record.getMessage())
            if m:
                ran.append(int(m.group(1)))

    handler = Count(level=logging.INFO)
    logger = logging.getLogger("califlow.cnmfe")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for rep in range(2):
        for max_iter in (2, 4):
            ran.clear()
            t = time.perf_counter()
            ex = run_cnmfe(path, workdir / f"cnmfe_iter{max_iter}.zarr",
                           {"cnmfe": {"max_iter": max_iter, "n_processes": args.processes}})
            wall = time.perf_counter() - t
            print(f"iterations preset={args.preset} max_iter={max_iter} (round {rep + 1}): wall {wall:.1f} s, "
                  f"iterations run per patch: mean {np.mean(ran):.2f}, max {max(ran)}; {json.dumps(score(animal, ex))}",
                  flush=True)
    logger.removeHandler(handler)


def run_speed(args, workdir: Path) -> None:
    from califlow.cnmfe import run_cnmfe

    path, animal = build_store(workdir, "default", args.seed, n_neurons=120)
    T = animal.ground_truth.C.shape[1]
    load0 = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    ex = run_cnmfe(path, workdir / "cnmfe_speed.zarr", {"cnmfe": {"n_processes": args.processes}})
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += child.ru_utime + child.ru_stime  # pool workers
    out = score(animal, ex)
    print(f"speed 256x256x{T}, 120 neurons, n_processes={args.processes}: wall {wall:.1f} s, "
          f"cpu {cpu:.1f} s (all processes), {T / wall:.1f} frames/s (wall), {T / cpu:.1f} frames/cpu-s; "
          f"load average before/after {load0:.1f}/{os.getloadavg()[0]:.1f}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; scores {json.dumps(out)}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("section", choices=["accuracy", "spikes", "iterations", "speed"])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    _log_setup(args.verbose)
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_cnmfe_"))
    workdir.mkdir(parents=True, exist_ok=True)
    sections = {"accuracy": run_accuracy, "spikes": run_spikes, "iterations": run_iterations, "speed": run_speed}
    sections[args.section](args, workdir)


if __name__ == "__main__":
    main()
