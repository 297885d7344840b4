"""``califlow simulate``: write a simulated cohort with its ground truth and sessions sheet."""

from __future__ import annotations

import argparse

__all__ = ["add_cli", "run"]


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register the ``simulate`` sub-command on an argparse ``subparsers`` object."""
    from califlow.simulate.config import PRESETS

    p = subparsers.add_parser(
        "simulate", help="simulate a ground-truth cohort (Miniscope V4 folders or TIFF)",
        description="Simulate animals with known neurons, activity, motion and inter-session deformation. "
                    "Writes OUT_DIR/<animal>/<session>/ (or .tif), OUT_DIR/<animal>/ground_truth.zarr "
                    "and OUT_DIR/sessions.tsv.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="simulator preset (default: demo)")
    p.add_argument("--animals", type=int, default=1, help="number of animals (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed; animal seeds derive from it (default: 0)")
    p.add_argument("--format", default="miniscope", choices=["miniscope", "tiff"],
                   help="miniscope: V4 folders of 8-bit FFV1 AVIs; tiff: multi-page TIFF per session")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a SimulationConfig field, e.g. --set n_neurons=50 (repeatable)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``califlow simulate`` with parsed arguments."""
    from califlow.simulate.config import parse_override, preset
    from califlow.simulate.writers import write_cohort

    overrides = dict(parse_override(text) for text in args.overrides)
    config = preset(args.preset)
    if args.format == "tiff" and "dtype" not in overrides:
        config = config.as_uint16()               # Inscopix-like 16-bit intensities
    sheet = write_cohort(args.out_dir, config, args.animals, args.seed, format=args.format,
                         overrides=overrides)
    print(f"wrote {sheet}")
    return 0
