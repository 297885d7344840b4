"""Rule qc_session: a session's projections and motion trace as one PNG for the report."""

import json
from pathlib import Path

import numpy as np

from califlow import qc
from califlow.io.store import open_group
from califlow.job import workflow_job
from califlow.motion.session import read_motion_csv

with workflow_job(snakemake):  # noqa: F821 - injected by Snakemake
    smk = snakemake  # noqa: F821
    proj = open_group(smk.input.projections)
    images = {n: np.asarray(proj[n][...]) for n in ("mean", "bv", "cn", "pnr") if n in proj}
    summary = json.loads(Path(smk.input.summary).read_text())
    fps = summary.get("fps") or 1.0
    unusable = len(summary.get("nonfinite_frames") or []) + len(summary.get("blank_frames") or [])
    counts = (f"{len(summary.get('dropped_frames') or [])} dropped, {len(summary.get('damaged_frames') or [])} "
              f"damaged and {unusable} blank/NaN frames interpolated")
    qc.session_figure(images, read_motion_csv(smk.input.motion), float(fps),
                      f"{smk.wildcards.animal} / {smk.wildcards.session}: {counts}", smk.output[0])
