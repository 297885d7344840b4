"""Rule qc_animal: footprints on Cn, traces across sessions, raster, presence per session."""

import numpy as np

from califlow import qc
from califlow.export import load_extraction
from califlow.job import workflow_job

with workflow_job(snakemake):  # noqa: F821 - injected by Snakemake
    smk = snakemake  # noqa: F821
    ext = load_extraction(smk.input.cnmfe)
    animal = smk.wildcards.animal
    cn = ext.get("Cn")
    if cn is None:
        cn = ext["A"].max(axis=0)
    qc.footprints_figure(ext["A"], np.asarray(cn), smk.output.footprints,
                         title=f"{animal}: {len(ext['A'])} cells on the correlation image (numbers = SNR rank)")
    qc.traces_figure(ext["C"], ext["sessions"], smk.output.traces,
                     title=f"{animal}: strongest cells across sessions")
    thr = float(smk.params.threshold)
    qc.raster_figure(ext["S"], ext["sessions"], smk.output.raster, threshold=thr,
                     title=f"{animal}: events (>= {thr:g} noise SD) per session")
    qc.presence_figure(ext["S"], ext["sessions"], smk.output.presence, threshold=thr)
