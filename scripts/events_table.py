"""Rule events_table: cnmfe.zarr -> events.csv (cell, session, frame, time_s, amplitude)."""

from califlow.export import load_extraction, write_events_csv
from califlow.job import workflow_job

with workflow_job(snakemake):  # noqa: F821 - injected by Snakemake
    ext = load_extraction(snakemake.input[0])  # noqa: F821
    write_events_csv(ext["S"], ext["sessions"], snakemake.output[0],  # noqa: F821
                     threshold=snakemake.params.threshold, active=ext.get("active"))  # noqa: F821
