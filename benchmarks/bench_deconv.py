"""Benchmarks of califlow.deconv: agreement with oasis-deconv, speed, accuracy, the whole tool.

    python benchmarks/bench_deconv.py                 # everything (about 1-2 min on 2 cores)
    python benchmarks/bench_deconv.py --only agree speed accuracy cnmfe tool real

Prints:
  agree     max relative difference of c (max|c - c_ref| / max|c_ref|) against oasis-deconv for
            given (g, sn): constrained AR(1) with b = 0, and fixed-penalty AR(1)/AR(2) OASIS
            (with the penalised objective compared where they differ);
  speed     constrained AR(1) on T = 100,000 (given g, sn; with and without baseline), best of 5,
            califlow vs oasis-deconv in the same run, and the speed ratio (> 1: califlow faster);
  accuracy  simulated traces, 3 noise levels, p = 1 and p = 2, everything estimated: binned
            (5 frames) spike correlation, calcium correlation and the bias of the decay factor;
  cnmfe     deconvolve_cnmfe_batch with CaliAli's in-loop and final options, CPU ms per trace;
  tool      the spike-extraction tool (NPY in and out, events and parameter tables, sn and g estimated) on 1000 cells x
            20,000 frames with 2 threads: wall time and peak RSS;
  real      round trip of the real Inscopix cell sets of ../shared/data (read back by isx when
            installed).
The reference package oasis-deconv is GPL and used here only as a cross-check.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from califlow.deconv import constrained_oasis_ar1, deconvolve, impulse_response, oasis_ar1, oasis_ar2

SHARED = Path(os.environ.get("CALIFLOW_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def simulate(T, g=(0.95,), sn=0.3, rate=0.02, b=1.0, seed=0):
    rng = np.random.default_rng(seed)
    s = (rng.random(T) < rate) * rng.uniform(0.5, 1.5, T)
    c = np.convolve(s, impulse_response(g, T))[:T]
    return b + c + sn * rng.standard_normal(T), c, s


def rel(a, ref):
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def best_of(fn, n=5):
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def binned_corr(a, b, width=5):
    n = len(a) // width * width
    return float(np.corrcoef(a[:n].reshape(-1, width).sum(1), b[:n].reshape(-1, width).sum(1))[0, 1])


def _objective(y, c, g, lam):
    s = c - g[0] * np.r_[0.0, c[:-1]] - (g[1] * np.r_[0.0, 0.0, c[:-2]] if len(g) > 1 else 0.0)
    return 0.5 * float(np.sum((c - y) ** 2)) + lam * float(s.sum())


def bench_agree():
    import oasis.oasis_methods as om

    worst = {"c": 0.0, "l1": 0.0, "l1_tail": 0.0, "l2": 0.0, "l2_tail": 0.0}
    lower_obj = [0, 0, 0]
    for seed in range(10):
        y, _, _ = simulate(5000, b=0.0, seed=seed)
        c = constrained_oasis_ar1(y, 0.95, 0.3)[0]
        worst["c"] = max(worst["c"], rel(c, om.constrained_oasisAR1(y, 0.95, 0.3)[0]))
        a, r = oasis_ar1(y, 0.95, 0.4, 0.1)[0], om.oasisAR1(y, 0.95, 0.4, 0.1)[0]
        worst["l1"] = max(worst["l1"], rel(a, r))
        worst["l1_tail"] = max(worst["l1_tail"], rel(a[100:], r[100:]))
        lower_obj[0] += _objective(y, a, (0.95,), 0.4) <= _objective(y, r, (0.95,), 0.4) + 1e-9
        y2, _, _ = simulate(5000, g=(1.7, -0.712), b=0.0, seed=seed)
        a, r = oasis_ar2(y2, 1.7, -0.712, 1.0)[0], om.oasisAR2(y2, 1.7, -0.712, 1.0)[0]
        worst["l2"] = max(worst["l2"], rel(a, r))
        worst["l2_tail"] = max(worst["l2_tail"], rel(a[100:], r[100:]))
        lower_obj[1] += _objective(y2, a, (1.7, -0.712), 1.0) <= _objective(y2, r, (1.7, -0.712), 1.0) + 1e-9
    print("agree: max rel diff of c vs oasis-deconv (max|c - c_ref| / max|c_ref|), 10 traces T=5000:")
    print(f"  constrained AR(1), g=0.95 sn=0.3   {worst['c']:.2e}   (target <= 1e-5)")
    print(f"  AR(1) lam=0.4 s_min=0.1            {worst['l1']:.2e}   after frame 100: {worst['l1_tail']:.2e}; "
          f"objective <= reference in {lower_obj[0]}/10")
    print(f"  AR(2) lam=1 g=(1.7, -0.712)        {worst['l2']:.2e}   after frame 100: {worst['l2_tail']:.2e}; "
          f"objective <= reference in {lower_obj[1]}/10")
    print("  (AR(1): differences sit in the first pool, where califlow keeps c_0 >= 0 while merging;"
          " AR(2): califlow refines the greedy pooling to the exact L1 optimum, the reference is greedy)")


def bench_speed():
    import oasis.oasis_methods as om

    y, _, _ = simulate(100_000, b=0.0, seed=1)
    yb = y + 2.0
    rows = [
        ("constrained AR(1), b = 0", lambda: constrained_oasis_ar1(y, 0.95, 0.3),
         lambda: om.constrained_oasisAR1(y, 0.95, 0.3)),
        ("constrained AR(1), b optimised", lambda: constrained_oasis_ar1(yb, 0.95, 0.3, optimize_b=True),
         lambda: om.constrained_oasisAR1(yb, 0.95, 0.3, optimize_b=True)),
        ("AR(1) fixed lam = 0", lambda: oasis_ar1(y, 0.95), lambda: om.oasisAR1(y, 0.95)),
        ("AR(2) fixed lam = 0", lambda: oasis_ar2(y, 1.7, -0.712), lambda: om.oasisAR2(y, 1.7, -0.712)),
    ]
    print("speed: T = 100,000, best of 5 (same run)")
    for name, ours, ref in rows:
        t_ours, t_ref = best_of(ours), best_of(ref)
        print(f"  {name:32s} califlow {t_ours * 1e3:7.2f} ms   oasis-deconv {t_ref * 1e3:7.2f} ms   "
              f"ratio {t_ref / t_ours:5.2f}x")


def bench_accuracy():
    print("accuracy: T = 10,000, rate 0.02/frame, amplitudes U(0.5, 1.5), 10 traces each; "
          "sn and g estimated (lags 5, fudge 0.96)")
    print("  p  model g            sn    spike corr (5-frame bins)   calcium corr   decay bias "
          "(plain / optimize_g=10)")
    for p, g in ((1, (0.95,)), (2, (1.7, -0.712))):
        d_true = impulse_response(g, 3)[1] if p == 1 else (g[0] + np.sqrt(g[0] ** 2 + 4 * g[1])) / 2
        for sn in (0.1, 0.3, 0.5):
            sc, cc, bias, bias_opt = [], [], [], []
            for seed in range(10):
                y, c, s = simulate(10_000, g=g, sn=sn, seed=100 + seed)
                res = deconvolve(y, p=p)
                opt = deconvolve(y, p=p, optimize_g=10)
                sc.append(binned_corr(res.s, s))
                cc.append(np.corrcoef(res.calcium(), c)[0, 1])
                for out, r in ((bias, res), (bias_opt, opt)):
                    d = r.g[0] if p == 1 else (r.g[0] + np.sqrt(max(r.g[0] ** 2 + 4 * r.g[1], 0))) / 2
                    out.append(d - d_true)
            print(f"  {p}  {str(g):13s}  {sn:4.1f}   {np.mean(sc):.3f} (min {np.min(sc):.3f})"
                  f"          {np.mean(cc):.3f}        {np.mean(bias):+.4f} / {np.mean(bias_opt):+.4f}")


def bench_tool():
    from califlow.deconv.tool import run_spike_extraction

    K, T = 1000, 20_000
    rng = np.random.default_rng(5)
    S = (rng.random((K, T)) < 0.02) * rng.uniform(0.5, 1.5, (K, T))
    h = impulse_response((0.95,), 200)
    from scipy.signal import lfilter

    C = lfilter([1.0], [1.0, -0.95], S, axis=1)
    Y = (1.0 + C + 0.3 * rng.standard_normal((K, T))).astype(np.float32)
    del S, C, h
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "traces.npy"
        np.save(src, Y)
        del Y
        t0, c0 = time.perf_counter(), time.process_time()
        run_spike_extraction([src], Path(tmp) / "out", {}, fps=20.0, n_threads=2)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tool: {K} cells x {T} frames, sn+g estimated, p=1, 2 threads: wall {wall:.1f} s "
          f"(target <= 10 s), CPU {cpu:.1f} s (CPU/2 = wall on 2 idle cores), peak RSS {peak:.0f} MB, "
          f"load average at the end {os.getloadavg()[0]:.1f}")


def bench_cnmfe():
    from califlow.deconv import deconvolve_cnmfe_batch

    K, T = 100, 20_000
    Y = np.stack([simulate(T, sn=1.0, rate=0.01, seed=k)[0] * 1.0 for k in range(K)])
    Y += np.stack([simulate(T, sn=0.0, rate=0.01, seed=500 + k)[1] * 8.0 for k in range(K)])
    print(f"cnmfe: deconvolve_cnmfe_batch on {K} traces x {T} frames (spikes 4-12 sigma), 1 thread, "
          "CPU per trace")
    for name, opts in (("in-loop ar1 foopsi smin -5 optimize_pars max_tau 100",
                        dict(type="ar1", method="foopsi", smin=-5, optimize_pars=True, optimize_b=True,
                             max_tau=100)),
                       ("final ar2 foopsi smin -5 optimize_pars", dict(type="ar2", method="foopsi", smin=-5,
                                                                      optimize_pars=True)),
                       ("ar1 constrained", dict(type="ar1", method="constrained"))):
        deconvolve_cnmfe_batch(Y[:2], opts, n_threads=1)
        c0 = time.process_time()
        deconvolve_cnmfe_batch(Y, opts, n_threads=1)
        print(f"  {name:52s} {(time.process_time() - c0) / K * 1e3:6.1f} ms")


def bench_real():
    from califlow.deconv.tool import run_spike_extraction
    from califlow.io.isxd import read_cellset, read_eventset

    folder = SHARED / "inscopix_ideas_toolbox_caiman"
    files = sorted(folder.glob("cellset_series_part*.isxd"))
    if not files:
        print(f"real: skipped, {folder} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        records = run_spike_extraction(files, tmp, {})
        for f, r in zip(files, records):
            src, den = read_cellset(f), read_cellset(Path(tmp) / f"{f.stem}.denoised.isxd")
            ev = read_eventset(Path(tmp) / f"{f.stem}.events.isxd")
            same = den.names == src.names and den.statuses == src.statuses and den.timing == src.timing
            line = (f"real: {f.name}: {r['cells']} cells, {r['failed']} failed, {r['events']} events; "
                    f"names/statuses/timing kept: {same}; events read back: {sum(map(len, ev.offsets_us))}")
            try:
                import isx

                cs = isx.CellSet.read(str(Path(tmp) / f"{f.stem}.denoised.isxd"))
                es = isx.EventSet.read(str(Path(tmp) / f"{f.stem}.events.isxd"))
                n_isx = sum(len(es.get_cell_data(k)[0]) for k in range(es.num_cells))
                diff = max(float(np.nanmax(np.abs(cs.get_cell_trace_data(k) - den.traces[k])))
                           for k in range(cs.num_cells))
                line += f"; isx reads {cs.num_cells} cells (max trace diff {diff:.1e}), {n_isx} events"
            except ImportError:
                line += "; isx not installed"
            print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["agree", "speed", "accuracy", "cnmfe", "tool", "real"])
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    for name in args.only:
        globals()[f"bench_{name}"]()


if __name__ == "__main__":
    main()
