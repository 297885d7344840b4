"""Per-session stage: accuracy against simulated ground truth, throughput and memory.

Usage::

    python benchmarks/bench_session.py accuracy [--size 256] [--frames 1000]
    python benchmarks/bench_session.py throughput [--frames 3000] [--work DIR]
    python benchmarks/bench_session.py memory [--frames 3000 12000] [--work DIR]

``accuracy`` (``califlow.simulate`` presets at ``--size`` px, one session):

* rigid motion with the BV reference on the ``default`` preset with AR(1) motion of std
  2 px plus 3 jumps up to 10 px: RMSE and worst frame of the shift error (global offset
  removed; targets <= 0.1 px and <= 0.5 px);
* the same with the ``neuron`` reference on the ``vessel_poor`` preset;
* non-rigid against rigid: RMS of the frame-varying displacement error over the output
  pixels, on the ``wobble`` preset and on the rigid ``default`` preset;
* the BV projection against the ground-truth vessel map (Pearson r, target >= 0.7);
* seeding: local maxima of Cn * PNR (window round(gSig), default min_corr / min_pnr; a
  plateau counts once) within 5 px of an active neuron (recall over the neurons whose
  centroid is inside the crop, target >= 95 %) and farther than 5 px from every active
  neuron, including those whose centroid lies just outside the crop (spurious share, target
  <= 10 %), on ``default`` (with and without the simulator's vessel pulse), ``dense_lowsnr``
  and ``vessel_poor``, each with ``preprocessing.remove_vessel_pulse`` on and off
  (``--seeds`` repeats the table for several simulations).

``throughput``: one ``benchmark_608`` session of ``--frames`` frames written as a Miniscope
V4 FFV1 folder, then decode only, ``ingest`` (spatial_ds=2), ``correct_motion`` and
``enhance_session``, with a per-stage table and end-to-end raw frames/s (target >= 60).

``memory``: peak RSS of ingest, motion and enhance, each in a fresh subprocess, on folders
of ``--frames`` frames (1000-frame FFV1 chunks repeated; target <= 2 GiB and flat).
Simulated data are cached under ``--work`` (default ``/tmp/califlow_bench_session``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from califlow.motion.options import motion_options
from califlow.simulate.pipeline import write_ingest_store
from califlow.simulate.scores import motion_error, nonrigid_vs_rigid

WORK = Path(os.environ.get("CALIFLOW_BENCH_DIR", "/tmp/califlow_bench_session"))


# ------------------------------------------------------------------------------ helpers
def seeding_scores(gt, out: Path, summary: dict, gsig=2.5, min_corr=0.1, min_pnr=6.0, radius=5.0):
    from califlow.io.store import open_group
    from califlow.motion.session import read_motion_csv
    from califlow.params import round_half_up

    p = open_group(out / "projections.zarr")
    cn, pnr = p["cn"][:], p["pnr"][:]
    box = summary["crop_box"]
    est = read_motion_csv(out / "motion.csv")
    c = (gt.motion[0].astype(np.float64) - est).mean(0)
    fp = gt.footprints[0]
    yy, xx = np.mgrid[0:fp.shape[1], 0:fp.shape[2]]
    mass = fp.sum(axis=(1, 2))
    centres = np.stack([(fp * yy).sum((1, 2)) / mass, (fp * xx).sum((1, 2)) / mass], 1)
    centres = centres - np.array([box[0], box[2]]) + c
    inside = np.all((centres >= 0) & (centres < np.array(cn.shape)), axis=1)
    fired = gt.C[:, gt.session_slice(0)].max(axis=1) > 0
    active = centres[inside & gt.active[:, 0] & fired]
    # a maximum on an active neuron whose centroid lies just outside the crop is not spurious
    active_any = centres[gt.active[:, 0] & fired]
    v = cn * pnr
    k = max(1, round_half_up(gsig))
    peaks = (v == ndimage.maximum_filter(v, size=k, mode="constant")) & (cn >= min_corr) & (pnr >= min_pnr) & (v > 0)
    labels, n = ndimage.label(peaks)
    seeds = np.array(ndimage.center_of_mass(peaks, labels, range(1, n + 1))).reshape(-1, 2)
    dist, idx = cKDTree(active).query(seeds)
    hit = np.zeros(len(active), bool)
    hit[idx[dist <= radius]] = True
    dist, _ = cKDTree(active_any).query(seeds)
    vessels = gt.vessels_session[0]
    from califlow.motion.warp import translate_stack

    ves = translate_stack(vessels[None], [-c], tuple(box))[0]
    spurious = dist > radius
    on_vessel = ves[tuple(np.round(seeds[spurious]).astype(int).T)] > 0.5 if spurious.any() else np.zeros(0, bool)
    bv_r = float(np.corrcoef(p["bv"][:].ravel(), ves.ravel())[0, 1])
    return {"active": int(len(active)), "maxima": int(n), "recall": float(hit.mean()),
            "spurious": float(spurious.mean()) if n else 0.0,
            "spurious_on_vessels": float(on_vessel.mean()) if on_vessel.size else 0.0, "bv_r": bv_r}


# ----------------------------------------------------------------------------- accuracy
def accuracy(size: int, frames: int, work: Path, seeds=(9,)) -> None:
    from califlow.motion.rigid import estimate_rigid_motion
    from califlow.motion.session import run_session
    from califlow.simulate import preset, simulate_animal

    print(f"# accuracy: {size}x{size} px, {frames} frames per session")
    jumpy = dict(motion_std=2.0, jump_max=10.0, n_jumps=3)
    rows = []
    for label, name, ref, extra in (("BV reference, default", "default", "BV", jumpy),
                                    ("neuron reference, vessel_poor", "vessel_poor", "neuron", jumpy),
                                    ("BV reference, vessel_poor", "vessel_poor", "BV", jumpy)):
        animal = simulate_animal(preset(name, height=size, width=size, n_sessions=2,
                                        frames_per_session=frames, **extra), seed=7)
        movie = animal.session_frames(0).astype(np.float32)
        t0 = time.perf_counter()
        res = estimate_rigid_motion(movie, motion_options(reference=ref, max_shift=20))
        dt = time.perf_counter() - t0
        rmse, worst = motion_error(res.shifts, animal.ground_truth.motion[0].astype(np.float64))
        rows.append((label, rmse, worst, int(res.outliers.sum()), frames / dt))
    print("| rigid motion | RMSE (px) | worst frame (px) | outliers | frames/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]} | {r[4]:.0f} |")

    print("\n| non-rigid vs rigid | rigid residual (px) | non-rigid residual (px) | batches with a field |")
    print("|---|---|---|---|")
    for name in ("wobble", "default"):
        animal = simulate_animal(preset(name, height=size, width=size, n_sessions=2, frames_per_session=frames), seed=8)
        res = nonrigid_vs_rigid(animal)
        r0, r1, nr = res["r_rigid"], res["r_nonrigid"], res["nonrigid"]
        print(f"| {name} | {r0:.3f} | {r1:.3f} | {int(nr.accepted.sum())}/{len(nr.accepted)} |")

    print("\n| session chain (seed) | remove_vessel_pulse | BV r | active neurons | maxima | recall | spurious "
          "| spurious on vessels |")
    print("|---|---|---|---|---|---|---|---|")
    cases = [("default", {}, True), ("default", {}, False), ("default, vessel_pulse = 0", {"vessel_pulse": 0.0}, True),
             ("default, vessel_pulse = 0", {"vessel_pulse": 0.0}, False), ("dense_lowsnr", {}, True),
             ("dense_lowsnr", {}, False), ("vessel_poor", {}, True), ("vessel_poor", {}, False)]
    for label, extra, remove in cases:
        name = label.split(",")[0]
        for seed in seeds:
            animal = simulate_animal(preset(name, height=size, width=size, n_sessions=2, frames_per_session=frames,
                                            **jumpy, **extra), seed=seed)
            d = work / "acc_session"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            write_ingest_store(d / "ingest.zarr", animal.session_frames(0), animal.ground_truth.fps)
            summary = run_session(d / "ingest.zarr", d, {"general": {"gSig": 2.5},
                                                         "preprocessing": {"remove_vessel_pulse": remove}})
            s = seeding_scores(animal.ground_truth, d, summary)
            print(f"| {label} ({seed}) | {remove} | {s['bv_r']:.3f} | {s['active']} | {s['maxima']} | "
                  f"{100 * s['recall']:.1f} % | {100 * s['spurious']:.1f} % | {100 * s['spurious_on_vessels']:.0f} % |",
                  flush=True)


# --------------------------------------------------------------------------- throughput
def simulated_folder(work: Path, frames: int) -> tuple[Path, object]:
    from califlow.simulate import preset, simulate_animal, write_animal

    animal = simulate_animal(preset("benchmark_608", n_sessions=1, frames_per_session=frames), seed=0)
    root = work / f"benchmark_608_{frames}"
    done = root / "done"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        write_animal(animal, root)
        done.write_text("ok")
        print(f"  simulated and wrote {frames} frames in {time.perf_counter() - t0:.0f} s")
    folder = next(p for p in sorted(root.iterdir()) if p.is_dir())
    return folder, animal


def repeated_folder(work: Path, frames: int) -> Path:
    """A folder of ``frames`` frames: the 1000-frame chunk 0.avi of the 3000-frame simulation repeated."""
    src, _ = simulated_folder(work, 3000)
    root = work / f"repeated_{frames}"
    if not (root / "metaData.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        for k in range(frames // 1000):
            shutil.copy(src / "0.avi", root / f"{k}.avi")
        shutil.copy(src / "metaData.json", root / "metaData.json")
        lines = ["Frame Number,Time Stamp (ms),Buffer Index"] + [f"{i},{i * 50},0" for i in range(frames)]
        (root / "timeStamps.csv").write_text("\n".join(lines) + "\n")
    return root


def decode_rate(folder: Path) -> tuple[int, float]:
    from califlow.io.readers import open_movie

    src = open_movie(folder)
    t0 = time.perf_counter()
    n = sum(len(chunk) for _, chunk in src.iter_chunks(500))
    return n, n / (time.perf_counter() - t0)


def run_stage(stage: str, folder: Path, out: Path) -> dict:
    """One stage in this process; returns its wall time."""
    from califlow.io.ingest import ingest
    from califlow.motion.session import correct_motion, enhance_session

    params = {"downsampling": {"spatial_ds": 2}, "general": {"gSig": 2.5}}
    t0 = time.perf_counter()
    c0 = time.process_time()
    info = {}
    if stage == "ingest":
        ingest(folder, out / "ingest.zarr", spatial_ds=2)
    elif stage == "motion":
        info = correct_motion(out / "ingest.zarr", out / "motion.csv", out / "motion.zarr", params)
    elif stage == "enhance":
        info = enhance_session(out / "ingest.zarr", out / "motion.zarr", out / "enhanced.zarr",
                               out / "projections.zarr", params)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "timings": info.get("timings", {})}


def throughput(frames: int, work: Path) -> None:
    from califlow.motion.session import read_motion_csv

    folder, animal = simulated_folder(work, frames)
    out = work / f"run_{frames}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    c0 = time.process_time()
    n, rate = decode_rate(folder)
    decode_cpu = time.process_time() - c0
    print(f"# throughput: benchmark_608 session, {n} frames of 608x608 (FFV1), spatial_ds=2, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    res = {s: run_stage(s, folder, out) for s in ("ingest", "motion", "enhance")}
    total = sum(r["wall"] for r in res.values())
    cpu = sum(r["cpu"] for r in res.values())
    print("| stage | wall s | raw frames/s | CPU s (all threads) |")
    print("|---|---|---|---|")
    print(f"| decode only (open_movie.iter_chunks) | {n / rate:.1f} | {rate:.0f} | {decode_cpu:.1f} |")
    for s, r in res.items():
        print(f"| {s} | {r['wall']:.1f} | {n / r['wall']:.0f} | {r['cpu']:.1f} |")
        for k, v in r["timings"].items():
            if k != "total":
                print(f"|   {s}: {k} | {v:.1f} | {n / max(v, 1e-9):.0f} | |")
    print(f"| **end to end (ingest + motion + enhance)** | {total:.1f} | **{n / total:.0f}** | {cpu:.1f} |")
    print(f"CPU-bound rate on 2 free cores (2 x frames / CPU s): {2 * n / cpu:.0f} raw frames/s; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    est = read_motion_csv(out / "motion.csv")
    true = animal.ground_truth.motion[0].astype(np.float64) / 2.0  # raw px -> downsampled px
    rmse, worst = motion_error(est, true)
    print(f"motion error on this session (downsampled px): RMSE {rmse:.3f}, worst frame {worst:.3f}")


# ------------------------------------------------------------------------------- memory
def memory(frames_list: list[int], work: Path) -> None:
    print("# peak RSS (MiB) per stage, each in a fresh process; 608x608 FFV1, spatial_ds=2")
    print("| frames | ingest | motion | enhance |")
    print("|---|---|---|---|")
    for frames in frames_list:
        folder = repeated_folder(work, frames)
        out = work / f"mem_{frames}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        peaks = []
        for stage in ("ingest", "motion", "enhance"):
            cmd = [sys.executable, __file__, "_stage", stage, str(folder), str(out)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            peaks.append(json.loads(r.stdout.strip().splitlines()[-1])["maxrss_mib"])
        print(f"| {frames} | {peaks[0]:.0f} | {peaks[1]:.0f} | {peaks[2]:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["accuracy", "throughput", "memory", "_stage"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, nargs="+", default=None)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--seeds", type=int, nargs="+", default=[9], help="simulation seeds of the seeding table")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.part == "accuracy":
        accuracy(a.size, (a.frames or [1000])[0], a.work, tuple(a.seeds))
    elif a.part == "throughput":
        throughput((a.frames or [3000])[0], a.work)
    elif a.part == "memory":
        memory(a.frames or [3000, 12000], a.work)
    else:
        stage, folder, out = a.args
        run_stage(stage, Path(folder), Path(out))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(json.dumps({"maxrss_mib": rss}))


if __name__ == "__main__":
    main()
