"""Where is each missed true neuron lost inside CNMF-E? (fate table of one robustness-grid row)

Run::

    python benchmarks/bench_seed_fate.py                                  # dense_lowsnr, 5 px, gSig 1.5
    python benchmarks/bench_seed_fate.py --condition default --diameter 8 --gsig 1.6
    python benchmarks/bench_seed_fate.py --gsig auto --diameter 6

The animal of one grid row of ``bench_robustness.py`` (same configuration and seed) is
rendered aligned (:func:`califlow.cnmfe.simulated.write_aligned_store`; no motion, so every
loss is CNMF-E's) and :func:`califlow.cnmfe.run_cnmfe` runs in this process with
instrumented steps (the wrappers only record; results are those of a plain run):

- the global seeds (:func:`califlow.cnmfe.seeds.find_seeds`) and every local maximum of
  ``Cn * PNR`` before the thresholds (:func:`califlow.cnmfe.seeds.candidates`);
- every initialisation of a seed in the patch that owns it, with the test that rejected
  it (:func:`califlow.cnmfe.initialize.init_seed_reason`), batch by batch;
- every component removed by :func:`califlow.cnmfe.merge.remove_false_positives` (empty or
  small footprint, silent trace, vessel shape) or merged away by
  :func:`califlow.cnmfe.merge.merge_components` (and into which component), in the
  patches and in the global refinement.

A seed or candidate is *on* a true neuron when that neuron's footprint is the largest at
the seed pixel and reaches 30 % of its peak there.  Each true neuron whose centre lies in
the field of view gets one fate, the furthest its best seed got: matched; an estimate
exists but matches another neuron or none; merged into another component; removed (by
which test, in a patch or globally); rejected at initialisation in every batch (by which
test); or never seeded (no local maximum of ``Cn * PNR`` on it, or its maxima are below
``min_corr`` / ``min_pnr``, or fail the contrast test).

Finding (dense_lowsnr, d = 5 px, gSig 1.5, seed 1; blob dilation fixed at 3 px): 392 true
neurons, 268 matched, 124 missed: 57 never seeded (45 below min_corr / min_pnr, 6 without a
local maximum, 6 failing the contrast test), 55 rejected at initialisation in every batch
(45 by the peeled PNR test, 10 by the weak seed trace test: their brighter neighbour's
3-px-dilated blob had peeled them off), 7 removed as vessel-shaped, 6 with an estimate
that matches another neuron or none; no missed neuron was merged away.  Initialising the
patches alone with a 3 / 2 / 1 px dilation gives 276 / 301 / 312 distinct true neurons
with an accepted seed (of 339 seeded) and 55 / 54 / 50 accepted seeds off every neuron.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_robustness import animal_config, gsig_value  # noqa: E402

#: A seed is on a true neuron whose footprint reaches this fraction of its peak at the seed.
ON_NEURON = 0.3


class Recorder:
    """Wraps the CNMF-E steps (module attributes) and records what happens to every seed."""

    def __init__(self):
        self.stage = "init"
        self.patch = None
        self.seeds = np.zeros((0, 2), np.int64)
        self.local_ids: dict[tuple[int, int], int] = {}
        self.origin = (0, 0)
        self.init = defaultdict(list)      # id -> [reason or None per batch] in the owner patch
        self.residual_pos: dict[int, tuple[int, int]] = {}  # residual id -> global (y, x)
        self.removed: dict[int, tuple[str, str]] = {}       # id -> (stage, reason)
        self.merged: dict[int, tuple[str, int]] = {}        # id -> (stage, id it went into)
        self._saved = []

    def owned(self, sid: int) -> bool:
        from califlow.cnmfe.patches import RESIDUAL_ID_BASE

        if self.stage == "gather" or sid >= RESIDUAL_ID_BASE:
            return True
        cy0, cy1, cx0, cx1 = self.patch.core
        y, x = self.seeds[sid]
        return cy0 <= y < cy1 and cx0 <= x < cx1

    def _set(self, module, name, value):
        self._saved.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    def install(self):
        import califlow.cnmfe.fit as fit_mod
        import califlow.cnmfe.initialize as ini
        import califlow.cnmfe.patches as pat
        import califlow.cnmfe.pipeline as pl
        from califlow.cnmfe.model import footprint_areas
        from califlow.cnmfe.patches import RESIDUAL_ID_BASE

        rec = self
        run_patch0, initialize0, stitch0 = pl.run_patch, pat.initialize, pl.stitch
        rfp0, merge0 = fit_mod.remove_false_positives, fit_mod.merge_components

        def run_patch(store, patch, seeds, batches, opts, **kw):
            rec.stage, rec.patch, rec.seeds = "patch", patch, np.asarray(seeds)
            rec.origin = (patch.block[0], patch.block[2])
            return run_patch0(store, patch, seeds, batches, opts, **kw)

        def initialize(source, seeds, ids, opts):
            rec.local_ids = {(int(y), int(x)): int(i) for (y, x), i in zip(seeds, ids)}
            for (y, x), i in zip(seeds, ids):
                if int(i) >= RESIDUAL_ID_BASE:
                    rec.residual_pos[int(i)] = (int(y) + rec.origin[0], int(x) + rec.origin[1])
            return initialize0(source, seeds, ids, opts)

        def init_seed(HY, shape, y, x, radius, deconv_flag, options, min_pnr=0.0):
            res, reason = ini.init_seed_reason(HY, shape, y, x, radius, deconv_flag, options, min_pnr)
            sid = rec.local_ids[(int(y), int(x))]
            if rec.owned(sid):
                rec.init[sid].append(reason)
            return res

        def stitch(p, results):
            rec.stage = "gather"
            return stitch0(p, results)

        def remove_false_positives(model, min_pixel, vessels=None):
            from califlow.cnmfe.merge import vessel_shaped

            ids = model.ids.copy()
            area = footprint_areas(model.A)
            silent = ~np.any(model.C > 0, axis=1)
            vessel = vessel_shaped(model.A, model.shape, vessels) if vessels is not None and model.K else \
                np.zeros(model.K, bool)
            bad = rfp0(model, min_pixel, vessels)
            for k in np.flatnonzero(bad):
                sid = int(ids[k])
                if not rec.owned(sid):
                    continue
                why = ("empty footprint" if area[k] == 0 else "small footprint" if area[k] < min_pixel else
                       "silent trace" if silent[k] else "vessel shape" if vessel[k] else "?")
                rec.removed[sid] = (rec.stage, why)
            return bad

        def merge_components(model, opts, deconvolve=None):
            import scipy.sparse as sp

            ids, A0 = model.ids.copy(), sp.csc_matrix(model.A, copy=True)
            n = merge0(model, opts, deconvolve=deconvolve)
            if n:
                left = set(int(i) for i in model.ids)
                gone = [k for k, i in enumerate(ids) if int(i) not in left]
                ov = np.asarray((sp.csc_matrix(model.A).T @ A0[:, gone]).toarray())  # (K_after, n_gone)
                for j, k in enumerate(gone):
                    sid = int(ids[k])
                    if rec.owned(sid):
                        rec.merged[sid] = (rec.stage, int(model.ids[int(np.argmax(ov[:, j]))]) if model.K else -1)
            return n

        self._set(pl, "run_patch", run_patch)
        self._set(pl, "stitch", stitch)
        self._set(pat, "initialize", initialize)
        self._set(ini, "init_seed", init_seed)
        self._set(fit_mod, "remove_false_positives", remove_false_positives)
        self._set(fit_mod, "merge_components", merge_components)

    def uninstall(self):
        for module, name, value in reversed(self._saved):
            setattr(module, name, value)
        self._saved.clear()


def on_neuron(F: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """Index of the true neuron each (y, x) lies on (-1: none), see ``ON_NEURON``."""
    if len(yx) == 0:
        return np.zeros(0, np.int64)
    vals = F[:, yx[:, 0], yx[:, 1]]  # (N, n)
    k = np.argmax(vals, axis=0)
    peak = F.max(axis=(1, 2))
    ok = vals[k, np.arange(len(k))] >= ON_NEURON * peak[k]
    return np.where(ok, k, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--condition", default="dense_lowsnr", choices=["default", "dense_lowsnr"])
    ap.add_argument("--diameter", type=float, default=5.0)
    ap.add_argument("--gsig", default="1.5", help="px, 'd/5' (of --diameter) or 'auto'")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--examples", type=int, default=0, help="print this many missed neurons one by one")
    args = ap.parse_args()
    print("command: python " + " ".join(sys.argv))

    from califlow.cnmfe import run_cnmfe
    from califlow.cnmfe.patches import RESIDUAL_ID_BASE
    from califlow.cnmfe.pipeline import plan
    from califlow.cnmfe.seeds import candidates
    from califlow.cnmfe.simulated import write_aligned_store
    from califlow.metrics import _inside, match_neurons, score_extraction
    from califlow.params import apply_neuron_size
    from califlow.simulate import simulate_animal
    from califlow.simulate.pipeline import measure_neuron_size

    gsig = args.gsig if args.gsig in ("auto",) or args.gsig.startswith("d/") else float(args.gsig)
    if isinstance(gsig, str) and gsig.startswith("d/"):
        gsig = gsig_value(gsig, args.diameter)
    animal = simulate_animal(animal_config(args.condition, args.diameter, args.sessions, args.frames, 384),
                             seed=args.seed)
    gt = animal.ground_truth
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_fate_"))
    t = time.perf_counter()
    size = measure_neuron_size(animal, {"general": {"gSig": gsig}})
    cfg = apply_neuron_size({"general": {"gSig": gsig}}, size["measured"])
    store = work / "aligned.zarr"
    if not store.exists():
        write_aligned_store(animal, store, gsig=float(cfg["general"]["gSig"]))
    p = plan(store, cfg)
    opts = p.opts
    rec = Recorder()
    rec.install()
    try:
        ex = run_cnmfe(store, work / "cnmfe.zarr", cfg, n_processes=1)
    finally:
        rec.uninstall()
    print(f"{args.condition} d={args.diameter:g}: gSig {opts.gSig:g} (asked {gsig}), min_pnr {opts.min_pnr}, "
          f"min_corr {opts.min_corr}, min_pixel {opts.min_pixel}, box radius {opts.box_radius}, "
          f"local max radius {opts.local_max_radius:g}, dmin {opts.dmin}; {time.perf_counter() - t:.0f} s")
    r = score_extraction(gt, ex.A, ex.C, ex.S, active_est=ex.active, valid=np.ones(animal.shape, bool))
    print(f"precision {r['precision']:.3f}  recall {r['recall']:.3f}  F1 {r['f1']:.3f}  "
          f"(true {r['n_true']}, estimated {r['n_est']})")

    F = gt.footprints_ref
    counted = _inside(np.ones(animal.shape, bool), gt.centers_ref)
    m = match_neurons(F, ex.A)
    est_of = dict(zip(m.true_idx.tolist(), m.est_idx.tolist()))
    true_of_est = dict(zip(m.est_idx.tolist(), m.true_idx.tolist()))
    final_ids = {int(i): k for k, i in enumerate(ex.ids)}

    seeds_on = defaultdict(list)
    for sid, k in enumerate(on_neuron(F, p.seeds)):
        if k >= 0:
            seeds_on[int(k)].append(sid)
    res_on = defaultdict(list)
    if rec.residual_pos:
        rids = list(rec.residual_pos)
        for rid, k in zip(rids, on_neuron(F, np.array([rec.residual_pos[i] for i in rids]))):
            if k >= 0:
                res_on[int(k)].append(rid)
    yx, cn_c, pnr_c, contrast = candidates(p.Cn, p.PNR, radius=opts.local_max_radius,
                                           min_contrast=opts.min_contrast, contrast_window=opts.contrast_window,
                                           background_pnr=opts.min_pnr)
    cand_on = defaultdict(list)
    for c, k in enumerate(on_neuron(F, yx)):
        if k >= 0:
            cand_on[int(k)].append(c)

    def seed_fate(sid: int) -> tuple[int, str]:
        """(rank, fate) of one component id: a higher rank got further."""
        if sid in final_ids:
            k = final_ids[sid]
            other = true_of_est.get(k)
            return 5, "estimate matches another neuron" if other is not None else "estimate matches nothing"
        if sid in rec.merged:
            stage, into = rec.merged[sid]
            return 4, f"merged away ({stage})"
        if sid in rec.removed:
            stage, why = rec.removed[sid]
            return 3, f"removed ({stage}): {why}"
        reasons = rec.init.get(sid, [])
        if reasons and all(x is not None for x in reasons):
            return 2, f"rejected at init: {Counter(reasons).most_common(1)[0][0]}"
        if not reasons:
            return 2, "never initialised"
        return 1, "?"

    def fate(j: int) -> str:
        if j in est_of:
            return "matched"
        ids = seeds_on.get(j, []) + res_on.get(j, [])
        if ids:
            return max(seed_fate(s) for s in ids)[1]
        cs = cand_on.get(j, [])
        if not cs:
            return "not seeded: no local maximum of Cn*PNR on it"
        ok = (cn_c[cs] >= opts.min_corr) & (pnr_c[cs] >= opts.min_pnr)
        if not ok.any():
            return "not seeded: below min_corr / min_pnr"
        return "not seeded: contrast test" if not np.any(ok & contrast[cs]) else "not seeded: ?"

    fates = {j: fate(j) for j in np.flatnonzero(counted)}
    table = Counter(fates.values())
    missed = [j for j, f in fates.items() if f != "matched"]
    print(f"\n{len(fates)} true neurons in the field of view, {table['matched']} matched, {len(missed)} missed")
    print("| fate of the missed neuron | count |\n|---|---|")
    for f, n in sorted(table.items(), key=lambda kv: -kv[1]):
        if f != "matched":
            print(f"| {f} | {n} |")

    # seeded components of all true neurons: where do they go (matched neurons included)
    stage_tab = Counter()
    for j in fates:
        for s in seeds_on.get(j, []):
            stage_tab[("matched" if fates[j] == "matched" else "missed", seed_fate(s)[1]
                       if s not in final_ids else "in the final estimate")] += 1
    print("\n| true neuron | fate of each seed on it | seeds |\n|---|---|---|")
    for (grp, f), n in sorted(stage_tab.items(), key=lambda kv: (kv[0][0], -kv[1])):
        print(f"| {grp} | {f} | {n} |")
    n_res = sum(1 for i in rec.residual_pos)
    n_res_final = sum(1 for i in final_ids if i >= RESIDUAL_ID_BASE)
    print(f"\nglobal seeds {len(p.seeds)}, residual seeds {n_res} ({n_res_final} in the final estimate)")

    peak_c = gt.C.max(axis=1)
    for j in missed[:args.examples]:
        cy, cx = gt.centers_ref[j]
        print(f"  neuron {j} at ({cy:.0f}, {cx:.0f}) peak C {peak_c[j]:.1f}: {fates[j]}; seeds "
              f"{[(s, rec.init.get(s), rec.removed.get(s), rec.merged.get(s)) for s in seeds_on.get(j, [])]}")


if __name__ == "__main__":
    main()
