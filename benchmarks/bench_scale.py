"""How CNMF-E's cost per frame grows with the length of the concatenation, and where the time goes.

Run::

    python benchmarks/bench_scale.py                                   # T = 4000 15000, 4 GB cap
    python benchmarks/bench_scale.py --frames 4000 15000 60000 120000  # the issue's table (hours on 2 cores)
    python benchmarks/bench_scale.py --frames 15000 --dtype uint16-scaled float32   # storage vs speed

The movie is the ``default`` preset's 256x256x4000 aligned store (``califlow.simulate``, 80
neurons, seed 0, written by :func:`califlow.cnmfe.simulated.write_aligned_store`) repeated in
time to T frames as 4 equal sessions, stored as ``--dtype`` (``concatenation.dtype``).  Each
run is a fresh process running :func:`califlow.cnmfe.run_cnmfe` with the full default loop
(residual search, every iteration, the global refinement) and ``memory_size_to_use`` =
``--budget``, under cProfile.  Printed per run: wall time, frames/s, its ratio to the first
T of the list, peak RSS (and the interpreter's RSS with the libraries imported, the fixed
overhead), neurons, and the wall time of each stage (cumulative cProfile time of the
pipeline's functions): plan, patch phase, gather (all that follows the patches but the
writing), stitch, the fit updates (background, spatial, temporal, clean; marked * because
they sum the patch phase's calls and the global refinement's), per-session footprints, final
deconvolution and post-processing, writing.
Runs of several dtypes at one T are interleaved, in the order given.

``--patch-jobs N`` runs instead the N scatter jobs of ``cnmfe.patch_jobs: N`` one by one,
each in a fresh process given the memory the workflow asks for it (``cnmfe_patch_mem_mb``,
``memory_size_to_use: null``), and prints the planned need, the request and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cnmfe import build_store  # noqa: E402

#: Stages reported: label -> qualified name of the function (as cProfile names it: file, name).
STAGES = {
    "plan": ("pipeline.py", "plan"),
    "patches": ("pipeline.py", "run_patch_group"),
    "gather": ("pipeline.py", "gather"),
    "stitch": ("pipeline.py", "stitch"),
    "background*": ("fit.py", "update_background"),
    "spatial*": ("fit.py", "update_spatial"),
    "temporal*": ("fit.py", "update_temporal"),
    "clean*": ("fit.py", "clean"),
    "session_footprints": ("pipeline.py", "_session_footprints"),
    "finish": ("pipeline.py", "_finish"),
    "write": ("pipeline.py", "write_outputs"),
}

_CHILD = r"""
import cProfile, json, pstats, sys, time
import califlow.cnmfe, califlow.deconv, numba, zarr
def vm(key):  # this process's memory (MiB) from /proc (ru_maxrss would carry the parent's peak over exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
base = vm("VmRSS")
from califlow.cnmfe import run_cnmfe
stages = json.loads(sys.argv[4])
cfg = {"cnmfe": {"memory_size_to_use": float(sys.argv[3])}}
prof = cProfile.Profile()
t = time.perf_counter()
prof.enable()
ex = run_cnmfe(sys.argv[1], sys.argv[2], cfg)
prof.disable()
wall = time.perf_counter() - t
peak = vm("VmHWM")
st = pstats.Stats(prof).stats
times = {}
for label, (fname, func) in stages.items():
    times[label] = round(sum(v[3] for (f, _, n), v in st.items() if n == func and f.endswith(fname)), 1)
print(json.dumps({"baseline_mib": round(base), "peak_mib": round(peak), "wall_s": round(wall, 1),
                  "neurons": int(ex.C.shape[0]), "stages": times}))
"""


_PATCH_CHILD = r"""
import json, sys, time
from califlow.cnmfe import run_patch_job
from califlow.host import with_memory_budget
from califlow.params import resolve_config
def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
cfg = with_memory_budget(resolve_config({"cnmfe": {"memory_size_to_use": None}}), float(sys.argv[5]))
t = time.perf_counter()
run_patch_job(sys.argv[1], sys.argv[2], cfg, int(sys.argv[3]), int(sys.argv[4]))
print(json.dumps({"peak_mib": round(vm("VmHWM")), "wall_s": round(time.perf_counter() - t, 1)}))
"""


def run_patch_jobs(path: Path, workdir: Path, n_frames: int, n_jobs: int) -> None:
    """Each scatter job in a fresh process, given the memory the workflow asks for it
    (``cnmfe_patch_mem_mb`` with ``memory_size_to_use: null``): its request against its peak RSS."""
    from califlow.cnmfe.pipeline import patch_job_memory_bytes

    for job in range(n_jobs):
        need = patch_job_memory_bytes(path, {}, job, n_jobs)
        mem_mb = -(-need // 10**6) + 1000  # cnmfe_patch_mem_mb, attempt 1 (below the cluster's 4000 cap or not)
        r = run_child(_PATCH_CHILD, path, workdir / f"job{job}.npz", job, n_jobs, mem_mb)
        print(f"| {n_frames} | {job}/{n_jobs} | {need / 2**20:.0f} | {mem_mb} | {r['peak_mib']} | "
              f"{r['peak_mib'] * 2**20 / 1e6 / mem_mb:.2f} | {r['wall_s']:.0f} |", flush=True)


def long_store(workdir: Path, base: Path, n_frames: int, dtype: str) -> Path:
    """The base movie repeated in time to ``n_frames`` frames, as 4 equal sessions, stored as ``dtype``."""
    import zarr

    from califlow.io.encoding import ATTR, MovieEncoding
    from califlow.io.store import atomic_output, create_image, create_movie, open_group

    path = workdir / f"aligned_long_{n_frames}_{dtype}.zarr"
    if path.exists():
        return path
    src = zarr.open_group(str(base), mode="r")
    mov = src["movie"]
    T0, h, w = mov.shape
    whole = np.asarray(mov[...], np.float32)
    enc = MovieEncoding.for_range(dtype, float(whole.min()), float(whole.max()))
    per = n_frames // 4
    with atomic_output(path) as tmp:
        g = open_group(tmp, "w")
        out = create_movie(g, "movie", (4 * per, h, w), stored_dtype=enc.dtype)
        out.attrs[ATTR] = enc.attrs()
        for a in range(0, 4 * per, 1000):
            b = min(4 * per, a + 1000)
            out[a:b] = enc.encode(whole[np.arange(a, b) % T0])
        for key in ("cn", "pnr", "bv"):
            if key in src:
                create_image(g, key, np.repeat(src[key][...].max(axis=0, keepdims=True), 4, axis=0))
        fps = src.attrs["sessions"][0]["fps"]
        g.attrs["sessions"] = [{"name": f"session{s}", "start": s * per, "stop": (s + 1) * per, "fps": fps,
                                "source": "repeated"} for s in range(4)]
    return path


def run_child(code: str, *argv) -> dict:
    """Run ``code`` in a fresh interpreter with ``argv``; its last stdout line, parsed as JSON."""
    res = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True)
    if res.returncode:
        print(res.stderr[-3000:])
        raise SystemExit(res.returncode)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[4000, 15000])
    ap.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float16", "uint16-scaled"])
    ap.add_argument("--budget", type=float, default=4.0, help="cnmfe.memory_size_to_use (GB)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--patch-jobs", type=int, default=0,
                    help="instead: run the scatter jobs of N patch jobs, each given its planned request")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    base, _ = build_store(workdir, "default", 0)
    if args.patch_jobs:
        print("| T | job | planned need MiB | request mem_mb | peak RSS MiB | peak / request | wall s |")
        print("|---|---|---|---|---|---|---|")
        for n in args.frames:
            run_patch_jobs(long_store(workdir, base, n, args.dtype[0]), workdir, n, args.patch_jobs)
        return
    print(f"# 256x256, default preset repeated, memory_size_to_use {args.budget} GB, full default loop; "
          f"work {workdir}")
    print("| T | dtype | wall s | frames/s | ratio to first | peak RSS MiB | baseline MiB | neurons | "
          + " | ".join(STAGES) + " |")
    print("|" + "---|" * (8 + len(STAGES)))
    first = {}
    for n in args.frames:
        for dtype in args.dtype:
            path = long_store(workdir, base, n, dtype)
            r = run_child(_CHILD, path, workdir / f"cnmfe_{n}_{dtype}.zarr", args.budget, json.dumps(STAGES))
            fps = n / r["wall_s"]
            first.setdefault(dtype, fps)
            print(f"| {n} | {dtype} | {r['wall_s']:.0f} | {fps:.1f} | {fps / first[dtype]:.2f} | {r['peak_mib']} "
                  f"| {r['baseline_mib']} | {r['neurons']} | " + " | ".join(f"{r['stages'][k]:.0f}" for k in STAGES)
                  + " |", flush=True)


if __name__ == "__main__":
    main()
