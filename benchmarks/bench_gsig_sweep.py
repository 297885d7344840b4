"""Neurons found against gSig: the sweep of tests/test_robust_extraction.py, with F1, as a table.

Run::

    python benchmarks/bench_gsig_sweep.py                      # gSig 1.0 ... 5.0 by 0.1
    PYTHONPATH=/path/to/old/checkout/src python benchmarks/bench_gsig_sweep.py   # another version

The animal is the test's (128 x 128, 2 sessions x 300 frames, 40 neurons of 8 px, seed 5,
``--footprints`` gaussian or real),
rendered without motion (``califlow.cnmfe.simulated.write_aligned_store``) and enhanced
with each gSig; CNMF-E runs with that gSig and no measured floor (every size follows gSig
itself).  Only APIs that every califlow version has are used, so the same script measures
an older checkout.  Prints one row per gSig: neurons found, precision, recall, F1, the
median footprint correlation with the ground truth, the median spoke index of the footprints
(:func:`califlow.metrics.spoke_index`, 1 for round ones, > 1 for 8-ray stars), and the largest drop in the count
between neighbouring values.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def _median_spokes(A) -> str:
    try:
        from califlow.metrics import spoke_index
    except ImportError:                  # an older checkout
        return "n/a"
    return f"{np.median([spoke_index(a) for a in A]):.3f}" if len(A) else "n/a"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsig", type=float, nargs="+", default=[round(1.0 + 0.1 * i, 1) for i in range(41)])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--footprints", choices=["gaussian", "real"], default="gaussian",
                    help="footprint world of the cohort (real: CaliAli's DG bank from the shared data)")
    args = ap.parse_args(argv)
    import califlow
    from califlow.cnmfe import run_cnmfe
    from califlow.cnmfe.simulated import write_aligned_store
    from califlow.metrics import score_extraction
    from califlow.simulate import preset, simulate_animal

    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]), "| califlow from",
          Path(califlow.__file__).parent, flush=True)
    cfg = preset("default", height=128, width=128, n_sessions=2, frames_per_session=300, n_neurons=40,
                 neuron_diameter=8.0, min_spacing=8.0, n_vessels=2, n_local_sources=4, translation=0.0,
                 deformation=0.0, halo_sigma=8.0, footprint_source=args.footprints)
    animal = simulate_animal(cfg, 5)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    work.mkdir(parents=True, exist_ok=True)
    counts = []
    print("| gSig | neurons | P | R | F1 | footprint r | spoke index |\n|---|---|---|---|---|---|---|")
    for g in args.gsig:
        store = work / f"aligned_{g}.zarr"
        if not store.exists():
            write_aligned_store(animal, store, gsig=g)
        ex = run_cnmfe(store, work / f"cnmfe_{g}.zarr",
                       {"general": {"gSig": g}, "cnmfe": {"patch_dims": [64, 64], "w_overlap": 16}})
        r = score_extraction(animal.ground_truth, ex.A, ex.C, ex.S)
        counts.append(ex.C.shape[0])
        print(f"| {g:g} | {ex.C.shape[0]} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
              f"{r['footprint_r']:.3f} | {_median_spokes(ex.A)} |", flush=True)
    drops = [1 - b / max(a, 1) for a, b in zip(counts[:-1], counts[1:])]
    i = max(range(len(drops)), key=drops.__getitem__) if drops else 0
    if drops:
        print(f"largest drop {100 * drops[i]:.0f} % ({counts[i]} -> {counts[i + 1]} at gSig {args.gsig[i + 1]:g}); "
              f"the test allows 20 %; fewest neurons {min(counts)} of {animal.ground_truth.n_neurons}")


if __name__ == "__main__":
    main()
