"""Rule export_session: one session's traces (CSV), NWB file and Inscopix cell/event sets."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from califlow.export import export_session, load_extraction
from califlow.io.store import open_group
from califlow.job import workflow_job


def main(smk):
    session = smk.wildcards.session
    ext = load_extraction(smk.input.cnmfe)
    ext["attrs"]["animal"] = smk.wildcards.animal
    names = [s.name for s in ext["sessions"]]
    i = names.index(session)
    aligned = open_group(smk.input.aligned)
    images = {name: np.asarray(aligned[name][i]) for name in ("mean", "cn", "pnr") if name in aligned}
    summary = json.loads(Path(smk.input.summary).read_text())
    cfg = smk.params.export
    formats = ["csv"] + (["nwb"] if cfg["nwb"] else []) + (["isxd"] if cfg["isxd"] else [])
    cells = pd.read_csv(smk.input.cells, keep_default_na=False, na_values=[""])
    metadata = {**cfg, **dict(smk.params.subject)}  # the sheet's Subject columns win over the config
    export_session(ext, session, smk.output[0], metadata=metadata, images=images,
                   source_files=summary.get("source_files") or [],
                   frames_per_file=summary.get("frames_per_file") or [],
                   raw_fps=summary.get("fps_raw"), formats=formats,
                   cells=cells, event_threshold=float(cfg["event_threshold"]), start_time=summary.get("start_time"))


with workflow_job(snakemake):  # noqa: F821 - injected by Snakemake
    main(snakemake)  # noqa: F821
