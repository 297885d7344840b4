"""Reader and ingest speed / memory on 608x608 Miniscope V4 folders.

Usage::

    python benchmarks/bench_readers.py [--frames 3000 12000] [--out DIR] [--keep]

1000 frames of the ``benchmark_608`` simulation (``califlow.simulate``; realistic synthetic
frames if it is unavailable) are written once as an FFV1 ``0.avi``; the N-frame folders
repeat that file as ``0.avi..{N/1000-1}.avi`` with a 20 fps ``timeStamps.csv`` (decoding
cost is the same as for distinct content). Prints:

* frames/s of ``open_movie(folder).iter_chunks`` against a bare ``cv2.VideoCapture`` loop
  over the same files, best of two interleaved passes each (target: ratio >= 0.9);
* block-mean downsampling (numba) against ``cv2.resize(INTER_AREA)`` per frame: speed and
  largest difference for integer factors;
* peak RSS of a full ``ingest`` run in a fresh subprocess per folder size (should be flat
  in the number of frames), next to the RSS of the imports alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

H = W = 608
FPS = 20.0


def simulated_frames(n: int) -> tuple[np.ndarray, str]:
    try:
        from califlow.simulate import preset, simulate_animal

        animal = simulate_animal(preset("benchmark_608", n_sessions=1, frames_per_session=n), seed=0)
        frames = np.concatenate([f for _, f in animal.iter_session(0, 100)])
        return frames.astype(np.uint8), "califlow.simulate benchmark_608"
    except Exception as exc:  # the simulator is optional for this benchmark
        print(f"  (califlow.simulate unavailable: {exc!r}; using synthetic frames)")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    base = 60 + 50 * np.exp(-((yy - 300) ** 2 + (xx - 290) ** 2) / (2 * 220.0 ** 2))
    vessels = 25 * (np.abs(np.sin(xx / 37.0 + yy / 91.0)) < 0.05)
    frames = np.empty((n, H, W), np.uint8)
    for t in range(n):
        frames[t] = np.clip(base - vessels + rng.normal(0, 6, (H, W)), 0, 255)
    return frames, "synthetic"


def write_template(folder: Path) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    frames, origin = simulated_frames(1000)
    path = folder / "template.avi"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 60.0, (W, H), isColor=False)
    for f in frames:
        writer.write(f)
    writer.release()
    return path, origin


def make_folder(template: Path, folder: Path, n_frames: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_frames // 1000):
        shutil.copyfile(template, folder / f"{i}.avi")
    (folder / "metaData.json").write_text(json.dumps({"deviceType": "Miniscope_V4_BNO", "framesPerFile": 1000,
                                                      "frameRate": "20FPS", "compression": "FFV1"}))
    t = np.rint(np.arange(n_frames) * 1000.0 / FPS).astype(np.int64)
    rows = ["Frame Number,Time Stamp (ms),Buffer Index"] + [f"{i},{v},0" for i, v in enumerate(t)]
    (folder / "timeStamps.csv").write_text("\n".join(rows) + "\n")
    return folder


def bare_cv2(folder: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    for path in sorted(folder.glob("*.avi"), key=lambda p: int(p.stem)):
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_CONVERT_RGB, 0])
        while True:
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
        cap.release()
    return n, time.perf_counter() - t0


def califlow_reader(folder: Path) -> tuple[int, float]:
    from califlow.io import open_movie

    t0 = time.perf_counter()
    n = 0
    for _, chunk in open_movie(folder).iter_chunks(200):
        n += chunk.shape[0]
    return n, time.perf_counter() - t0


def bench_downsample() -> None:
    from califlow.preprocess.downsample import downsample_spatial

    rng = np.random.default_rng(1)
    chunk = rng.integers(0, 255, size=(200, H, W), dtype=np.uint8)
    downsample_spatial(chunk[:2], 2)  # compile
    for s in (2, 4):
        t0 = time.perf_counter()
        ours = downsample_spatial(chunk, s)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        area = np.stack([cv2.resize(f.astype(np.float32), (W // s, H // s), interpolation=cv2.INTER_AREA)
                         for f in chunk])
        t_cv = time.perf_counter() - t0
        exact = chunk.reshape(200, H // s, s, W // s, s).mean(axis=(2, 4))
        print(f"  spatial_ds={s}: numba block mean {200 / t_ours:7.0f} frames/s (max |err| vs float64 "
              f"{np.abs(ours - exact).max():.1e}); cv2 INTER_AREA on float32 {200 / t_cv:7.0f} frames/s "
              f"(max |err| {np.abs(area - exact).max():.1e})")


RSS_CODE = """
import sys, time
def hwm_mib():  # peak resident set of this process (VmHWM is reset by exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from califlow.io.ingest import ingest
import califlow.io, califlow.preprocess.downsample, zarr, numba, cv2
base = hwm_mib()
t0 = time.perf_counter()
a = ingest(sys.argv[1], sys.argv[2], spatial_ds=int(sys.argv[3]))
dt = time.perf_counter() - t0
print(f"{base:.0f} {hwm_mib():.0f} {a['n_frames']} {dt:.2f} {a['chunk_frames']}")
"""


def ingest_rss(folder: Path, out: Path, spatial_ds: int) -> tuple[float, float, int, float, int]:
    res = subprocess.run([sys.executable, "-c", RSS_CODE, str(folder), str(out), str(spatial_ds)],
                         capture_output=True, text=True, check=True)
    base, peak, n, dt, chunk = res.stdout.split()
    return float(base), float(peak), int(n), float(dt), int(chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[3000, 12000])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_readers_"))
    try:
        t0 = time.perf_counter()
        template, origin = write_template(root)
        print(f"template: 1000 frames {H}x{W} FFV1 ({origin}), {template.stat().st_size / 2**20:.0f} MiB, "
              f"made in {time.perf_counter() - t0:.1f} s")
        folders = {n: make_folder(template, root / f"miniscope_{n}", n) for n in args.frames}
        first = folders[args.frames[0]]
        runs = [(bare_cv2(first), califlow_reader(first)) for _ in range(2)]  # ABAB: load drifts on shared machines
        n1, t1 = min((r[0] for r in runs), key=lambda x: x[1])
        n2, t2 = min((r[1] for r in runs), key=lambda x: x[1])
        print(f"decode {n1} frames (best of 2, interleaved): bare cv2 loop {n1 / t1:.0f} frames/s; "
              f"open_movie.iter_chunks(200) {n2 / t2:.0f} frames/s; ratio {(n2 / t2) / (n1 / t1):.2f}")
        bench_downsample()
        for n, folder in folders.items():
            for s in (1, 2):
                base, peak, n_out, dt, chunk = ingest_rss(folder, root / f"ingest_{n}_{s}.zarr", s)
                print(f"ingest {n} frames spatial_ds={s}: {dt:.1f} s ({n / dt:.0f} frames/s), chunk {chunk} frames, "
                      f"peak RSS {peak:.0f} MiB (imports alone {base:.0f} MiB), {n_out} frames written")
                shutil.rmtree(root / f"ingest_{n}_{s}.zarr", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
