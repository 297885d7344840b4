"""Choosing ``min_corr`` / ``min_pnr`` without a GUI: the seeding figure and ``califlow seeds``.

CaliAli sets the seeding thresholds in a GUI; here one figure shows what they do on an
animal's aligned movie:

- the global correlation (Cn) and peak-to-noise (PNR) images with the seeds accepted at
  the configured thresholds;
- the seeds a looser and a stricter setting would accept (``min_corr`` -/+ 0.05 and
  ``min_pnr`` x 0.75 / x 1.33), on the Cn x PNR image;
- every candidate seed (a local maximum of Cn x PNR) in the (Cn, PNR)
  plane, with the three settings' threshold lines; candidates that pass the thresholds but
  fail the contrast test (``min_contrast``) are marked apart.

The same figure is a report figure (rule ``qc_seeds``) and the output of
``califlow seeds RESULTS_DIR/ANIMAL``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SeedCandidates", "seed_candidates", "neighbour_settings", "seeding_figure", "add_cli"]


@dataclass
class SeedCandidates:
    """Local maxima of Cn x PNR off the vessels, with their values and test results."""

    yx: np.ndarray          # (N, 2) int
    cn: np.ndarray          # (N,)
    pnr: np.ndarray         # (N,)
    contrast_ok: np.ndarray  # (N,) bool: passes the min_contrast test

    def accepted(self, min_corr: float, min_pnr: float) -> np.ndarray:
        """Which candidates a setting accepts (thresholds and contrast test)."""
        return (self.cn >= min_corr) & (self.pnr >= min_pnr) & self.contrast_ok


def seed_candidates(cn: np.ndarray, pnr: np.ndarray, vessels: np.ndarray | None, opts) -> SeedCandidates:
    """Every seed candidate of the seeding (:func:`califlow.cnmfe.seeds.candidates`), off the vessels."""
    from califlow.cnmfe.seeds import candidates

    mask = None if vessels is None else ~np.asarray(vessels, bool)
    yx, c, p, ok = candidates(cn, pnr, radius=opts.local_max_radius, mask=mask, min_contrast=opts.min_contrast,
                              background_pnr=opts.min_pnr,
                              contrast_window=opts.contrast_window)
    return SeedCandidates(yx, c, p, ok)


def neighbour_settings(min_corr: float, min_pnr: float) -> list[tuple[str, float, float]]:
    """(label, min_corr, min_pnr) of the looser, the configured and the stricter setting."""
    return [("looser", max(0.0, min_corr - 0.05), 0.75 * min_pnr), ("configured", min_corr, min_pnr),
            ("stricter", min(1.0, min_corr + 0.05), min_pnr / 0.75)]


def _image(ax, img, title, points=None, cmap="gray"):
    finite = img[np.isfinite(img)]
    hi = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    ax.imshow(img, cmap=cmap, vmin=0, vmax=hi if hi > 0 else 1.0, interpolation="nearest")
    if points is not None and len(points):
        ax.plot(points[:, 1], points[:, 0], "o", ms=3.5, mfc="none", mec="#ff3b30", mew=0.9)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def seeding_figure(cn: np.ndarray, pnr: np.ndarray, vessels: np.ndarray | None, opts, path, title: str = ""
                   ) -> list[dict]:
    """Write the seeding figure (PNG) and return the count of seeds per setting.

    Parameters
    ----------
    cn, pnr : ndarray (H, W)
        Global seeding images (:meth:`califlow.cnmfe.data.AlignedStore.global_projections`).
    vessels : ndarray (H, W) bool or None
        Where no seed may lie (None: anywhere, as CNMF-E seeds).
    opts : CnmfeOptions
    path : output PNG path.
    title : figure title.
    """
    from califlow.qc import _plt, _save

    plt = _plt()
    cand = seed_candidates(cn, pnr, vessels, opts)
    settings = neighbour_settings(opts.min_corr, opts.min_pnr)
    counts = [{"setting": lab, "min_corr": round(c, 4), "min_pnr": round(p, 4),
               "seeds": int(cand.accepted(c, p).sum())} for lab, c, p in settings]
    fig, ax = plt.subplots(2, 3, figsize=(15, 9.6))
    conf = cand.yx[cand.accepted(opts.min_corr, opts.min_pnr)]
    _image(ax[0, 0], cn, f"Cn, {len(conf)} seeds at min_corr {opts.min_corr:g} / min_pnr {opts.min_pnr:g}", conf)
    _image(ax[0, 1], pnr, "PNR (noise units), same seeds", conf, cmap="magma")
    _scatter(ax[0, 2], cand, settings)
    v = np.nan_to_num(cn) * np.nan_to_num(pnr)
    for j, (lab, c, p) in enumerate(settings):
        pts = cand.yx[cand.accepted(c, p)]
        _image(ax[1, j], v, f"{lab}: min_corr {c:.2f}, min_pnr {p:.1f} -> {len(pts)} seeds", pts, cmap="viridis")
    fig.suptitle(title or "seeding", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    return counts


def _scatter(ax, cand: SeedCandidates, settings) -> None:
    ok = cand.contrast_ok
    pnr = np.maximum(cand.pnr, 1e-2)  # log axis
    ax.scatter(cand.cn[ok], pnr[ok], s=5, c="#1f77b4", alpha=0.6, label="candidates")
    ax.scatter(cand.cn[~ok], pnr[~ok], s=5, c="#aaaaaa", alpha=0.6, label="fail the contrast test")
    styles = {"looser": ":", "configured": "-", "stricter": "--"}
    for lab, c, p in settings:
        ax.axvline(c, color="#d62728", ls=styles[lab], lw=1)
        ax.axhline(p, color="#d62728", ls=styles[lab], lw=1, label=f"{lab} ({c:.2f}, {p:.1f})")
    ax.set_yscale("log")
    ax.set_xlabel("Cn at the candidate (CaliAli scale, min_corr)")
    ax.set_ylabel("PNR at the candidate (min_pnr)")
    ax.set_title(f"{len(cand.cn)} candidate seeds (local maxima of Cn x PNR)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def seeding_from_results(animal_dir: str | Path, config: dict | None, out: str | Path | None = None,
                         min_corr: float | None = None, min_pnr: float | None = None) -> tuple[Path, list[dict]]:
    """The seeding figure of ``RESULTS_DIR/ANIMAL`` (aligned.zarr; gSig from neuron_size.json)."""
    from califlow.cnmfe.data import AlignedStore
    from califlow.cnmfe.options import options_from_config
    from califlow.neuron_size_step import job_config

    d = Path(animal_dir)
    size = d / "neuron_size.json"
    cfg = job_config(config or {}, size if size.exists() else None)
    for key, value in (("min_corr", min_corr), ("min_pnr", min_pnr)):
        if value is not None:
            cfg["cnmfe"][key] = float(value)
    store = AlignedStore(d / "aligned.zarr")
    opts = options_from_config(cfg, fps=store.fps)
    cn, pnr = store.global_projections()
    path = Path(out) if out else d / "qc" / "seeds.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = seeding_figure(cn, pnr, None, opts, path, title=f"{d.name}: seeding (gSig {opts.gSig:g})")
    return path, counts


def _cmd_seeds(args) -> int:
    from califlow.params import load_config

    config = load_config(args.config) if args.config else {}
    path, counts = seeding_from_results(args.animal_dir, config, args.out, args.min_corr, args.min_pnr)
    for c in counts:
        print(f"{c['setting']:>10}: min_corr {c['min_corr']:.3f}  min_pnr {c['min_pnr']:.2f}  -> {c['seeds']} seeds")
    print(f"wrote {path}")
    return 0


def add_cli(subparsers) -> None:
    """Register ``seeds``."""
    p = subparsers.add_parser("seeds", help="show the seeds min_corr / min_pnr accept (figure and counts)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("animal_dir", help="an animal's results folder (RESULTS_DIR/ANIMAL, holding aligned.zarr)")
    p.add_argument("--config", help="configuration file (default: the defaults)")
    p.add_argument("--min-corr", type=float, help="try this min_corr instead of the configured one")
    p.add_argument("--min-pnr", type=float, help="try this min_pnr instead of the configured one")
    p.add_argument("-o", "--out", help="PNG to write (default: ANIMAL_DIR/qc/seeds.png)")
    p.set_defaults(func=_cmd_seeds)
