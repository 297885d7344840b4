"""Automatic curation (cells.csv status) against the simulator's ground truth.

Run::

    python benchmarks/bench_curation.py                          # every preset below (~15 min on 2 cores)
    python benchmarks/bench_curation.py --presets dense_lowsnr --sessions 2 --frames 400

For every preset an animal is simulated (``califlow.simulate``), run through the workflow's
library chain with ``gSig: auto`` (:func:`califlow.simulate.pipeline.run_chain`, sessions
rendered aligned with ``--aligned``), and curated by :func:`califlow.cells_step.write_cells_csv`
with the schema's ``curation`` defaults.  Detection is scored with
:func:`califlow.metrics.score_extraction` (neurons cut by the crop left out) once for all
cells (one-to-one assignment); precision and recall are then counted for the accepted cells
and for the ones not rejected, and each rule's rejections are split into true cells (matched
to a simulated neuron in that assignment) and false positives (unmatched, duplicates
included).  The rules' thresholds are the schema's, set from what each metric means
(docs/cells.md), not fitted to these presets.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRESETS = ("default", "dense_lowsnr", "vessel_rich", "pnr3", "small_neurons", "large_neurons", "inscopix",
           "defocused", "defocused_dense")


def curated_run(name: str, work: Path, sessions: int, frames: int, aligned: bool, seed: int,
                overrides: dict | None = None) -> dict:
    """Simulate, extract, curate and score one preset."""
    import pandas as pd

    from califlow.cells_step import write_cells_csv
    from califlow.metrics import score_extraction
    from califlow.params import apply_neuron_size, resolve_config
    from califlow.simulate import preset, simulate_animal
    from califlow.simulate.pipeline import run_chain

    cfg = preset(name)
    if name == "inscopix":
        cfg = cfg.replace(height=240, width=384, n_neurons=80)  # the camera and levels, a smaller field
    animal = simulate_animal(cfg.replace(n_sessions=sessions, frames_per_session=frames, **(overrides or {})),
                             seed=seed)
    t = time.perf_counter()
    res = run_chain(animal, work, {"general": {"gSig": "auto"}}, aligned=aligned)
    config = resolve_config(apply_neuron_size({"general": {"gSig": "auto"}}, res["neuron_size"]["measured"]))
    table = write_cells_csv(res["cnmfe"], res["aligned"], work / "cells.csv", config)
    wall = time.perf_counter() - t
    ex, gt = res["extraction"], animal.ground_truth
    status = table["status"].to_numpy()

    # one assignment of all cells to the true neurons: a rejected duplicate is a false positive
    # even when it would match a neuron on its own
    full = score_extraction(gt, res["A_reference"], ex.C, valid=res["valid_reference"])
    scored = np.zeros(len(table), bool)
    scored[full["scored_est"]] = True
    true = np.zeros(len(table), bool)
    true[full["matched_est"]] = True

    def score(mask):
        n_est, n_tp = int((mask & scored).sum()), int((mask & true).sum())
        return (n_tp / n_est if n_est else float("nan")), n_tp / full["n_true"], n_est, n_tp

    out = {"preset": name, "wall_s": round(wall, 1), "n_cells": len(table)}
    for label, mask in (("all", np.ones(len(table), bool)), ("accepted", status == "accepted"),
                        ("not_rejected", status != "rejected"), ("rejected", status == "rejected")):
        out[label] = score(mask)
    rules = {}
    for reason in sorted({r for rs in table["reason"] for r in str(rs).split("; ") if r}):
        mask = np.array([reason in str(rs).split("; ") for rs in table["reason"]])
        _, _, n, tp = score(mask)
        rules[reason] = (int(mask.sum()), int(tp), int(n) - int(tp))
    out["rules"] = rules
    out["snr_cut"] = score(table["snr"].to_numpy(float) >= 1.0)
    out["blob_fp"] = _blob_false_positives(table, gt, scored & ~true, status)
    out["counts"] = pd.Series(status).value_counts().to_dict()
    return out


def _blob_false_positives(table, gt, false_pos: np.ndarray, status: np.ndarray) -> tuple[int, int]:
    """False positives whose centroid lies within 1.5 sigma of an out-of-focus cell: (all, accepted)."""
    centers = np.asarray(gt.extra.get("defocused_centers", []), float).reshape(-1, 2)
    if not len(centers):
        return 0, 0
    sigma = np.asarray(gt.extra["defocused_sigma"], float)
    yx = table[["centroid_y", "centroid_x"]].to_numpy(float)
    d = np.linalg.norm(yx[:, None] - centers[None], axis=2) / sigma[None]
    on_blob = false_pos & (d.min(axis=1) <= 1.5)
    return int(on_blob.sum()), int((on_blob & (status == "accepted")).sum())


def print_row(r: dict) -> None:
    (p0, r0, n0, _), (p1, r1, n1, _) = r["all"], r["accepted"]
    p2, r2, _, _ = r["not_rejected"]
    _, _, nrej, tprej = r["rejected"]
    print(f"| {r['preset']} | {n0} | {p0:.3f} | {r0:.3f} | {n1} | {p1:.3f} | {r1:.3f} | {r1 - r0:+.3f} | "
          f"{p2:.3f} | {r2:.3f} | {nrej} ({nrej - tprej} FP, {tprej} true) | {r['blob_fp'][0]} / "
          f"{r['blob_fp'][1]} | {r['snr_cut'][0]:.3f} / {r['snr_cut'][1]:.3f} | {r['wall_s']} |", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--aligned", action="store_true", help="render sessions aligned; skip motion and alignment")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="simulator overrides for every preset")
    args = ap.parse_args(argv)
    from califlow.simulate.config import parse_override

    overrides = dict(parse_override(t) for t in args.set)
    logging.basicConfig(level=logging.WARNING)
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]), flush=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_curation_"))
    print("| preset | cells | P all | R all | accepted | P acc | R acc | recall cost | P not rejected | "
          "R not rejected | rejected | FP on blobs (all / accepted) | snr >= 1 cut: P / R | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for name in args.presets:
        r = curated_run(name, work / name, args.sessions, args.frames, args.aligned, args.seed, overrides)
        rows.append(r)
        print_row(r)
    print("\nrejections per rule (cells, true cells among them, false positives among them):")
    for r in rows:
        print(f"  {r['preset']}: " + ", ".join(f"{k} {v[0]} ({v[1]} true, {v[2]} FP)" for k, v in r["rules"].items()))


if __name__ == "__main__":
    main()
