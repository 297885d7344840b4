"""What ``concatenation.dtype`` costs: disk, time and accuracy against the ground truth.

Run::

    python benchmarks/bench_concat_dtype.py                          # default and dense_lowsnr presets
    python benchmarks/bench_concat_dtype.py --presets default --sessions 3 --frames 1000

For each preset one animal is simulated (``califlow.simulate``, seed ``--seed``) and run
through the workflow's library chain (:func:`califlow.simulate.pipeline.run_chain`: motion
correction and enhancement per session, alignment, concatenation, CNMF-E) once per dtype
(float32, float16, uint16-scaled), the recordings shared.  Printed per preset and dtype:

- bytes per frame of ``aligned.zarr``'s movie (compressed, as written) and its ratio to float32;
- the largest and the RMS error of the stored movie against the float32 one, over the
  movie's noise (the median over pixels of the standard deviation of frame differences / sqrt 2);
- concatenation and CNMF-E wall time (s);
- detection precision, recall, F1, median trace r, median spike r (5-frame bins) and median
  footprint r (:func:`califlow.metrics.score_extraction`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DTYPES = ("float32", "float16", "uint16-scaled")


def movie_bytes(aligned: Path) -> int:
    from califlow.io.store import bytes_in

    return bytes_in(aligned / "movie")


def stored_error(aligned: Path, reference: Path) -> tuple[float, float, float]:
    """(largest |error|, RMS error, noise level) of the decoded movie against the float32 one."""
    from califlow.cnmfe.data import AlignedStore

    a, b = AlignedStore(aligned), AlignedStore(reference)
    T = a.shape[0]
    worst, sq, n = 0.0, 0.0, 0
    for t0 in range(0, T, 500):
        x, y = a.read(t0, min(T, t0 + 500)), b.read(t0, min(T, t0 + 500))
        d = (x - y).astype(np.float64)
        worst, sq, n = max(worst, float(np.abs(d).max())), sq + float((d * d).sum()), n + d.size
    first = b.read(0, min(T, 500))
    noise = float(np.median(np.std(np.diff(first, axis=0), axis=0)) / np.sqrt(2))
    return worst, float(np.sqrt(sq / n)), noise


def run_one(animal, work: Path, ingest: Path, dtype: str, size: dict) -> dict:
    from califlow.metrics import score_extraction
    from califlow.simulate.pipeline import run_chain

    res = run_chain(animal, work, {"concatenation": {"dtype": dtype}}, ingest_dir=ingest, neuron_size=size)
    ex = res["extraction"]
    r = score_extraction(animal.ground_truth, res["A_reference"], ex.C, ex.S, active_est=ex.active,
                         valid=res["valid_reference"])
    return {"precision": r["precision"], "recall": r["recall"], "f1": r["f1"], "trace_r": r["trace_r"],
            "spike_r": r["spike_r"], "footprint_r": r["footprint_r"],
            "align_s": res["timings"]["align_s"], "cnmfe_s": res["timings"]["cnmfe_s"],
            "bytes": movie_bytes(res["aligned"]), "frames": ex.C.shape[1], "aligned": res["aligned"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["default", "dense_lowsnr"])
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from califlow.simulate import preset, simulate_animal
    from califlow.simulate.pipeline import measure_neuron_size

    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_concat_dtype_"))
    print(f"# {args.sessions} sessions x {args.frames} frames, seed {args.seed}, work {root}")
    print("| preset | dtype | bytes/frame | vs float32 | max err / noise | RMS err / noise | concat+align s "
          "| CNMF-E s | P | R | F1 | trace r | spike r | footprint r |")
    print("|" + "---|" * 14)
    for name in args.presets:
        cfg = preset(name).replace(n_sessions=args.sessions, frames_per_session=args.frames)
        animal = simulate_animal(cfg, seed=args.seed)
        size = measure_neuron_size(animal, {})
        ref = None
        for dtype in DTYPES:
            t = time.perf_counter()
            out = run_one(animal, root / name / dtype, root / name / "ingest", dtype, size)
            ref = ref or out
            worst, rms, noise = stored_error(out["aligned"], ref["aligned"])
            print(f"| {name} | {dtype} | {out['bytes'] / out['frames']:.0f} | {out['bytes'] / ref['bytes']:.3f} "
                  f"| {worst / noise:.4f} | {rms / noise:.5f} | {out['align_s']:.1f} | {out['cnmfe_s']:.1f} "
                  f"| {out['precision']:.3f} | {out['recall']:.3f} | {out['f1']:.3f} | {out['trace_r']:.3f} "
                  f"| {out['spike_r']:.3f} | {out['footprint_r']:.3f} |", flush=True)
            logging.getLogger("bench").info("%s %s took %.0f s", name, dtype, time.perf_counter() - t)


if __name__ == "__main__":
    main()
