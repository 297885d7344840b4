"""Inter-session alignment and concatenation: accuracy, method choice, scaling, throughput, memory.

Run (about 5 minutes on 2 cores)::

    python benchmarks/bench_align.py                 # everything
    python benchmarks/bench_align.py accuracy engines scaling concat real   # any subset

Sections
--------
accuracy  Simulated animals (304x304, 4 sessions, translations up to 20 px, smooth non-rigid
          deformation of 7 px): residual misalignment of ground-truth neuron centres across
          sessions per stage (none / translation / non-rigid / final_neurons), for a default
          field (BV path) and a vessel-poor field whose BV image is noise (neuron fallback).
          Residuals are reported against the simulator's ground-truth positions and against
          the centroids of the footprints it renders (they differ when the simulator's
          deformation field is not smooth; see the report).
engines   The pairwise registration engine, measured: our multi-channel demons versus
          OpenCV's Farneback and DIS optical flow on the same session pairs.
scaling   Alignment time for 4, 10 and 20 sessions of 304x304 (linear in sessions).
concat    Concatenation throughput (frames/s) and peak RSS for two movie lengths (flat).
real      The two real Inscopix templates (msr_1, msr_2): recovered offset, correlation
          before/after, and the CaImAn footprints of cells seen in both sessions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from califlow.align import align_options, align_sessions, map_points, residual_misalignment
from califlow.align.simulated import footprint_centroids, projections_from_ground_truth
from califlow.simulate import preset, simulate_animal

SIZE = 304
SIM = dict(height=SIZE, width=SIZE, frames_per_session=20, translation=20.0, deformation=7.0, n_neurons=180)


def animal(name, seed, n_sessions=4, **over):
    gt = simulate_animal(preset(name, n_sessions=n_sessions, **{**SIM, **over}), seed=seed).ground_truth
    return gt


def accuracy() -> None:
    print("\n## Accuracy per stage (residual of GT neuron centres across sessions, px)")
    print("python benchmarks/bench_align.py accuracy")
    cases = [("default", dict(), dict()),
             ("vessel_poor (BV = noise)", dict(texture=0.0), dict(mean_noise=10.0))]
    for label, sim_over, proj_over in cases:
        name = label.split()[0]
        print(f"\n### {label}: preset {name!r} {SIM} {sim_over}, projections {proj_over or 'default'}")
        print("| seed | stage | GT median | GT p95 | footprints median | footprints p95 | neurons | path "
              "| BV score | s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for seed in (0, 1, 2):
            gt = animal(name, seed, **sim_over)
            proj, origins = projections_from_ground_truth(gt, seed=seed, crop_jitter=3, **proj_over)
            t0 = time.perf_counter()
            al = align_sessions(proj, None, align_options(final_neurons=True, max_fov_loss=0.5))
            el = time.perf_counter() - t0
            truth = gt.centers_session() - origins[:, None, :]
            seen = footprint_centroids(gt, origins)
            for stage, maps in al.stage_maps.items():
                a = residual_misalignment(truth, maps)
                b = residual_misalignment(seen, maps)
                print(f"| {seed} | {stage} | {a['median']:.3f} | {a['p95']:.3f} | {b['median']:.3f} | {b['p95']:.3f} "
                      f"| {a['n_points']} | {al.path}{' (fallback)' if al.fallback else ''} | "
                      f"{al.bv_score:.2f} | {el:.1f} |")
            floor = np.hypot(*(seen - truth).transpose(2, 0, 1))
            print(f"|  | simulator: footprint centroid vs GT position | {np.nanmedian(floor[1:]):.3f} | "
                  f"{np.nanpercentile(floor[1:], 95):.3f} |  |  |  |  |  |  |")


def engines() -> None:
    """Pairwise engines on the same translated session pairs (session s registered to session 0)."""
    import cv2

    from califlow.align.demons import demons_register, pyramid_for
    from califlow.align.features import neuron_image, normalise01, registration_channels
    from califlow.align.groupwise import compose_map, warp_channels
    from califlow.align.maps import identity_map
    from califlow.align.translation import groupwise_translation

    print("\n## Pairwise registration engine (session s onto session 0 after translation; residual px)")
    print("python benchmarks/bench_align.py engines")
    print("| engine | median | p95 | ms per pair |")
    print("|---|---|---|---|")
    results: dict[str, list] = {}
    for seed in (0, 1):
        gt = animal("default", seed)
        proj, origins = projections_from_ground_truth(gt, seed=seed)
        truth = gt.centers_session() - origins[:, None, :]
        chans, masks = zip(*[registration_channels(p, sigma=10.0) for p in proj])
        t, _ = groupwise_translation([np.stack([c["bv"], c["neuron"]]) for c in chans], masks)
        maps = [identity_map((SIZE, SIZE), tuple(tt)) for tt in t]
        warped = [warp_channels(c, m, mp) for c, m, mp in zip(chans, masks, maps)]
        u8 = [np.clip(255 * normalise01(np.maximum(normalise01(p["bv"]), neuron_image(p))), 0, 255).astype(np.uint8)
              for p in proj]
        u8w = [cv2.remap(u, mp[1], mp[0], cv2.INTER_LINEAR) for u, mp in zip(u8, maps)]
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

        def run(name, fn):
            for s in range(1, len(proj)):
                t0 = time.perf_counter()
                u = fn(s)
                ms = 1000 * (time.perf_counter() - t0)
                pair = [maps[0], compose_map(maps[s], u)]
                r = residual_misalignment(truth[[0, s]], pair)
                results.setdefault(name, []).append((r["distances"], ms))

        levels = pyramid_for("BV+neuron")
        run("demons (ours, BV+neuron pyramid)",
            lambda s: demons_register(warped[0][0], warped[s][0], warped[0][1], warped[s][1], levels))
        run("Farneback (OpenCV, fused image)", lambda s: np.moveaxis(cv2.calcOpticalFlowFarneback(
            u8w[0], u8w[s], None, 0.5, 4, 31, 5, 7, 1.5, cv2.OPTFLOW_FARNEBACK_GAUSSIAN), 2, 0)[::-1].copy())
        run("DIS (OpenCV medium, fused image)",
            lambda s: np.moveaxis(dis.calc(u8w[0], u8w[s], None), 2, 0)[::-1].copy())
    for name, rows in results.items():
        d = np.concatenate([r[0].ravel() for r in rows])
        print(f"| {name} | {np.median(d):.3f} | {np.percentile(d, 95):.3f} | {np.mean([r[1] for r in rows]):.0f} |")
    print("B-splines: no B-spline registration library is installed (SimpleITK absent); not measured.")


def scaling() -> None:
    print("\n## Scaling: alignment time vs number of sessions (304x304, default preset)")
    print("python benchmarks/bench_align.py scaling")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| sessions | total s | s per session | demons registrations (ours) | CaliAli pairwise registrations |")
    print("|---|---|---|---|---|")
    for n in (4, 10, 20):
        gt = animal("default", 5, n_sessions=n, translation=12.0)
        proj, _ = projections_from_ground_truth(gt, seed=0, crop_jitter=3)
        t0 = time.perf_counter()
        al = align_sessions(proj, None, align_options(max_fov_loss=0.6))
        el = time.perf_counter() - t0
        rounds = len(al.info.get("non-rigid_bv+neuron", al.info.get("non-rigid_neuron", {})).get("rounds", []))
        print(f"| {n} | {el:.1f} | {el / n:.2f} | {n * rounds} ({rounds} rounds) | {n * (n - 1)} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


_CONCAT_CHILD = r"""
import resource, sys, time, numpy as np
from califlow.align import concatenate, load_alignment
t0 = time.perf_counter()
summary = concatenate(sys.argv[1:-2], sys.argv[-2], sys.argv[-1])
el = time.perf_counter() - t0
print(summary["n_frames"], el, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def concat() -> None:
    from califlow.align import save_alignment
    from califlow.io.store import create_movie, open_group

    print("\n## Concatenation throughput and peak memory (304x304 float32 frames)")
    print("python benchmarks/bench_align.py concat")
    print("| sessions x frames | total frames | s | frames/s | MB/s written | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    gt = animal("default", 2, n_sessions=2, translation=12.0)
    proj, _ = projections_from_ground_truth(gt, seed=0, crop_jitter=3)
    al = align_sessions(proj, ["a", "b"])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_alignment(al, tmp / "alignment.zarr")
        for n_frames in (500, 2000):
            paths = []
            for i, p in enumerate(proj):
                path = tmp / f"{n_frames}_{i}.zarr"
                root = open_group(path, mode="w")
                arr = create_movie(root, "movie", (n_frames,) + p["cn"].shape)
                for start in range(0, n_frames, 100):
                    n = min(100, n_frames - start)
                    noise = rng.standard_normal((n,) + p["cn"].shape)
                    arr[start:start + n] = (p["cn"][None] * 10 + 20 + noise).astype(np.float32)
                root.attrs["fps"] = 20.0
                paths.append(str(path))
            out = tmp / f"aligned_{n_frames}.zarr"
            res = subprocess.run([sys.executable, "-c", _CONCAT_CHILD, *paths, str(tmp / "alignment.zarr"), str(out)],
                                 capture_output=True, text=True, check=True)
            total, el, rss = res.stdout.split()
            total, el, rss = int(total), float(el), float(rss)
            mb = total * al.shape[0] * al.shape[1] * 4 / 2 ** 20
            print(f"| 2 x {n_frames} | {total} | {el:.1f} | {total / el:.0f} | {mb / el:.0f} | {rss:.0f} |")


def real() -> None:
    import tifffile
    from scipy.optimize import linear_sum_assignment

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_align import _caiman_centroids

    d = Path(os.environ.get("CALIFLOW_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    d = d / "inscopix_ideas_toolbox_caiman"
    if not d.is_dir():
        print(f"\n## Real templates: {d} not available")
        return
    print("\n## Real Inscopix templates msr_1 / msr_2 (400x640)")
    print("python benchmarks/bench_align.py real")
    imgs = [tifffile.imread(d / f"sample_template_image_msr_{i}.tif").astype(np.float32) for i in (1, 2)]
    t0 = time.perf_counter()
    al = align_sessions([{"bv": im, "cn": im, "mean": im} for im in imgs], ["msr_1", "msr_2"],
                        align_options(projections="neuron", gSig=3.0))
    el = time.perf_counter() - t0
    off = al.translations[1] - al.translations[0]
    cents = [_caiman_centroids(d / f"sample_cellset_msr_{i}.hdf5") for i in (1, 2)]
    dist = np.linalg.norm(cents[0][:, None] - cents[1][None], axis=2)
    r, c = linear_sum_assignment(dist)
    same = dist[r, c] < 15
    p1, p2 = cents[0][r[same]], cents[1][c[same]]
    after = np.linalg.norm(map_points(p2, al.maps[1], to="aligned") - map_points(p1, al.maps[0], to="aligned"), axis=1)
    from califlow.align.maps import apply_map
    a1, a2 = (apply_map(im, m) for im, m in zip(imgs, al.maps))
    ok = np.isfinite(a1) & np.isfinite(a2)
    r_before = np.corrcoef(imgs[0].ravel(), imgs[1].ravel())[0, 1]
    r_after = np.corrcoef(a1[ok], a2[ok])[0, 1]
    print(f"recovered offset of msr_2 relative to msr_1 (y, x): ({off[0]:+.2f}, {off[1]:+.2f}) px; "
          f"CaImAn footprints of the {same.sum()} cells in both sessions: "
          f"({np.median(p2 - p1, axis=0)[0]:+.2f}, {np.median(p2 - p1, axis=0)[1]:+.2f}) px")
    print(f"those cells' distance between sessions: before {np.round(np.linalg.norm(p2 - p1, axis=1), 2)} px, "
          f"after {np.round(after, 2)} px")
    print(f"Pearson r of the two templates: before {r_before:.3f}, after {r_after:.3f}; "
          f"corr with mean: {al.metrics['none']['neuron']['mean_corr']:.3f} -> "
          f"{al.metrics['translation']['neuron']['mean_corr']:.3f} (translation) -> "
          f"{al.metrics['non-rigid']['neuron']['mean_corr']:.3f} (non-rigid); {el:.1f} s")


SECTIONS = {"accuracy": accuracy, "engines": engines, "scaling": scaling, "concat": concat, "real": real}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(SECTIONS):
        SECTIONS[name]()
