"""Which true neurons does CNMF-E miss, and where are they lost? (one robustness-grid row)

Run::

    python benchmarks/bench_missed_neurons.py                         # dense_lowsnr, 5 px, gSig 1.5
    python benchmarks/bench_missed_neurons.py --condition default --diameter 8 --gsig 2.5
    python benchmarks/bench_missed_neurons.py --cnmfe min_contrast=0    # a cnmfe option changed

The animal of one grid row of ``bench_robustness.py`` (same configuration and seed) runs
through the library chain with the sessions rendered aligned (motion and alignment
skipped, so every loss is CNMF-E's). The true neurons are split into matched and missed
(:func:`califlow.metrics.match_neurons`), and for each group this prints:

- the median peak of the true calcium trace and the number of true spikes;
- the distance to the nearest other true neuron and to the nearest estimate (a missed
  neuron next to an estimate was merged or absorbed; one far from every estimate was
  never found);
- the global PNR and correlation images at the neuron's centre (3x3 maximum) against
  ``min_pnr`` and ``min_corr``: a missed neuron that passes both was lost after seeding
  (initialisation, refinement or merging), one that fails them is below the thresholds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_robustness import animal_config  # noqa: E402


def _centres(F: np.ndarray) -> np.ndarray:
    """(K, 2) centres of mass (y, x) of (K, H, W) footprints."""
    total = np.maximum(F.sum(axis=(1, 2)), 1e-12)
    ys = (F.sum(axis=2) * np.arange(F.shape[1])).sum(axis=1) / total
    xs = (F.sum(axis=1) * np.arange(F.shape[2])).sum(axis=1) / total
    return np.stack([ys, xs], axis=1)


def _at(img: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """3x3 maximum of ``img`` around each (y, x)."""
    pad = np.pad(img, 1, mode="edge")
    y = np.clip(np.rint(yx[:, 0]).astype(int), 0, img.shape[0] - 1) + 1
    x = np.clip(np.rint(yx[:, 1]).astype(int), 0, img.shape[1] - 1) + 1
    return np.max([pad[y + dy, x + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def _nearest(yx: np.ndarray, others: np.ndarray, same: bool) -> np.ndarray:
    if others.shape[0] == 0:
        return np.full(yx.shape[0], np.inf)
    d = np.hypot(yx[:, None, 0] - others[None, :, 0], yx[:, None, 1] - others[None, :, 1])
    if same:
        d[d == 0] = np.inf
    return d.min(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--condition", default="dense_lowsnr", choices=["default", "dense_lowsnr"])
    ap.add_argument("--diameter", type=float, default=5.0)
    ap.add_argument("--gsig", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--cnmfe", nargs="*", default=[], metavar="KEY=VALUE", help="cnmfe options (numbers)")
    args = ap.parse_args()
    cnmfe = {k: float(v) for k, v in (kv.split("=", 1) for kv in args.cnmfe)}
    print("command: python " + " ".join(sys.argv))

    import zarr

    from califlow.metrics import match_neurons
    from califlow.simulate import simulate_animal
    from califlow.simulate.pipeline import measure_neuron_size, run_chain

    animal = simulate_animal(animal_config(args.condition, args.diameter, 3, 500, 384), seed=args.seed)
    gt = animal.ground_truth
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_missed_"))
    t = time.perf_counter()
    size = measure_neuron_size(animal, {"general": {"gSig": "auto"}})
    res = run_chain(animal, work, {"general": {"gSig": args.gsig}, "cnmfe": cnmfe}, aligned=True, neuron_size=size)
    opts = zarr.open_group(str(work / "cnmfe.zarr"), mode="r").attrs["cnmfe_options"]
    print(f"chain {time.perf_counter() - t:.0f} s, gSig used {res['gsig']}, min_pnr {opts['min_pnr']}, "
          f"min_corr {opts['min_corr']}")
    A, F = np.asarray(res["A_reference"]), gt.footprints_ref
    matched = set(match_neurons(F, A).true_idx.tolist())
    true_yx, est_yx = _centres(F), _centres(A)
    store = zarr.open_group(str(work / "aligned.zarr"), mode="r")
    pnr, cn = (np.asarray(store[k][...]) for k in ("pnr", "cn"))
    pnr, cn = (im.max(axis=0) if im.ndim == 3 else im for im in (pnr, cn))
    n_spikes = (gt.S > 0).sum(axis=1)
    print(f"true {F.shape[0]}, estimated {A.shape[0]}, matched {len(matched)}, missed {F.shape[0] - len(matched)}")
    for name, sel in (("matched", sorted(matched)), ("missed", sorted(set(range(F.shape[0])) - matched))):
        sel = np.asarray(sel, int)
        if sel.size == 0:
            continue
        P, Cn = _at(pnr, true_yx[sel]), _at(cn, true_yx[sel])
        passes = (opts["min_pnr"] <= P) & (Cn >= opts["min_corr"])
        print(f"  {name:7s} n={sel.size:4d}  peak C {np.median(gt.C[sel].max(axis=1)):6.1f}  "
              f"spikes {np.median(n_spikes[sel]):5.1f}  "
              f"nearest true {np.median(_nearest(true_yx[sel], true_yx, True)):4.1f} px  "
              f"nearest estimate {np.median(_nearest(true_yx[sel], est_yx, False)):4.1f} px  "
              f"PNR {np.median(P):5.1f}  Cn {np.median(Cn):4.2f}  pass both thresholds {passes.sum()}/{sel.size}")


if __name__ == "__main__":
    main()
