"""The ``califlow config``, ``califlow init`` and ``califlow run`` sub-commands."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["add_cli", "workflow_root"]


def workflow_root() -> Path:
    """Folder holding the workflow's ``Snakefile`` (this repository)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "Snakefile").is_file() and (parent / "workflow").is_dir():
            return parent
    raise FileNotFoundError("the califlow workflow (Snakefile) was not found next to the package; "
                            "install califlow from a clone of its repository (pip install -e .)")


def _cmd_config(args) -> int:
    from califlow.params import config_template, load_config

    if args.check:
        load_config(args.check)
        print(f"{args.check}: valid")
        return 0
    text = config_template()
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


#: What ``califlow init`` writes for gSig in a new cohort's config (instead of the seeds' 2.5).
INIT_GSIG = ("  # califlow init chose 'auto': the neuron size is measured from these recordings\n"
             "  # (results/ANIMAL/neuron_size.json), because gSig 2.5 suits only 7-8 px neurons;\n"
             "  # put a number here to choose it yourself (the default of the seed table is 2.5).\n"
             "  gSig: auto\n")


def _cmd_init(args) -> int:
    from califlow.cohort_setup import discover_sessions
    from califlow.params import config_template
    from califlow.sessions import validate_sessions, write_sessions

    found = discover_sessions(args.data_dir, layout=args.layout)
    sheet = validate_sessions(found.sheet, source=f"sessions found in {args.data_dir}")
    out_dir = Path(args.out)
    sheet_path = write_sessions(sheet, out_dir / "sessions.tsv")
    config_path = out_dir / "config.yaml"
    text = config_template()
    if config_path.exists() and not args.force:
        print(f"kept the existing {config_path} (use --force to overwrite); point its `sessions:` "
              f"at {sheet_path}")
    else:
        text = text.replace("sessions: config/sessions.tsv", f"sessions: {sheet_path}", 1)
        text = text.replace("  enabled: true", "  enabled: false", 1)
        text = text.replace("\n  gSig: 2.5\n", "\n" + INIT_GSIG, 1)
        config_path.write_text(text)
        print(f"wrote {config_path}")
    print(f"wrote {sheet_path}")
    print(found.summary())
    return 0


def _cmd_run(args, extra: list[str]) -> int:
    root = workflow_root()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile"),
           "--cores", str(args.cores)]
    if args.configfile:
        cmd += ["--configfile", str(Path(args.configfile).resolve())]
    cmd += extra
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=os.getcwd())


_INIT_HELP = """Find animals and sessions in DATA_DIR and write config/sessions.tsv and config/config.yaml.

DATA_DIR is a cohort folder (its sub-folders are animals, each holding sessions) or one
animal's folder (date-named sub-folders such as 2026_01_05, 2026-01-05 or 20260105, Miniscope
DAQ date/time trees, or session recordings directly inside; the animal is named after the
folder). init decides from the structure and prints which it took and why; --layout forces it.
Sessions: chunk folders (0.avi..., msCam1.avi..., TIFF chunks), Miniscope DAQ
<date>/<time>/<device>/ trees, single files (.isxd, .tif, .h5, .nwb, .avi, .mp4). A long name
such as 2026_01_05_recording_20260105_101500 is shortened to the date (and time where several
recordings share the date); the sheet keeps the full path. It prints what it found and what
it skipped (behaviour cameras, non-recordings)."""


def add_cli(subparsers) -> None:
    """Register ``config``, ``init`` and ``run``."""
    p = subparsers.add_parser("config", help="print or write the default configuration, or check one",
                              description="Print the default configuration (every parameter, commented).")
    p.add_argument("-o", "--output", help="write to this file instead of printing")
    p.add_argument("--check", metavar="CONFIG", help="validate CONFIG and exit")
    p.set_defaults(func=_cmd_config)

    p = subparsers.add_parser("init", help="find animals and sessions in a data folder; write a sheet and a config",
                              description=_INIT_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", help="a cohort folder (sub-folders are animals) or one animal's folder")
    p.add_argument("--out", default="config", help="folder for sessions.tsv and config.yaml (default: config)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.yaml")
    p.add_argument("--layout", choices=("auto", "cohort", "animal"), default="auto",
                   help="take DATA_DIR as a cohort folder (sub-folders are animals) or one animal's folder; "
                        "default auto: decide from the structure")
    p.set_defaults(func=_cmd_init)

    p = subparsers.add_parser("run", help="run the workflow (snakemake) in the current folder",
                              description="Run the califlow Snakemake workflow; extra arguments go to snakemake.")
    p.add_argument("--cores", default="all", help="cores to use (default: all)")
    p.add_argument("--configfile", help="configuration file (default: config/config.yaml)")
    p.set_defaults(func=None, run_workflow=True)
