"""Speed and memory of simulate + write (Miniscope V4 folders) for a preset.

Usage::

    python benchmarks/bench_simulate.py --preset default [--frames N] [--sessions S] [--out DIR]

Prints: ground-truth build time, frames/s of rendering alone and of render + FFV1 write
for one session, and the peak resident memory (RSS) after a short and a long session, to
show that memory does not grow with the number of frames.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from califlow.simulate import preset, simulate_animal, write_animal


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--frames", type=int, default=None, help="frames per session (default: preset's)")
    ap.add_argument("--sessions", type=int, default=1, help="sessions to simulate (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default: a temporary one, removed)")
    args = ap.parse_args()

    over = {"n_sessions": args.sessions}
    if args.frames:
        over["frames_per_session"] = args.frames
    cfg = preset(args.preset, **over)
    t0 = time.perf_counter()
    animal = simulate_animal(cfg, args.seed)
    t_gt = time.perf_counter() - t0
    n = animal.n_frames(0)
    print(f"preset {args.preset}: {cfg.height}x{cfg.width}, {cfg.n_neurons} neurons, {cfg.n_sessions} session(s) "
          f"x {n} frames, footprints {animal.ground_truth.footprint_source}")
    print(f"ground truth (anatomy, activity, maps, per-session footprints): {t_gt:.2f} s; "
          f"peak RSS {_peak_rss_mib():.0f} MiB")

    t0 = time.perf_counter()
    count = 0
    for _start, frames in animal.iter_session(0, cfg.chunk_frames):
        count += len(frames)
    t_render = time.perf_counter() - t0
    print(f"render only: {count / t_render:.1f} frames/s ({t_render:.2f} s for {count} frames)")

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_sim_"))
    try:
        t0 = time.perf_counter()
        write_animal(animal, out, format="miniscope", sessions=[0])
        t_write = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"render + FFV1 write: {n / t_write:.1f} frames/s ({t_write:.2f} s, {size / 2**20:.1f} MiB on disk)")
        print(f"peak RSS after writing {n} frames: {_peak_rss_mib():.0f} MiB")
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
