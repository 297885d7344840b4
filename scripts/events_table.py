"""Rule events_table: cnmfe.zarr + cells.csv -> events.csv (cell, session, frame, time_s, amplitude, status)."""

import pandas as pd

from califlow.export import cell_statuses, load_extraction, write_events_csv
from califlow.job import workflow_job

with workflow_job(snakemake):  # noqa: F821 - injected by Snakemake
    ext = load_extraction(snakemake.input.cnmfe)  # noqa: F821
    cells = pd.read_csv(snakemake.input.cells, keep_default_na=False)  # noqa: F821
    write_events_csv(ext["S"], ext["sessions"], snakemake.output[0],  # noqa: F821
                     threshold=snakemake.params.threshold, active=ext.get("active"),  # noqa: F821
                     statuses=cell_statuses(cells, ext["A"].shape[0]))
