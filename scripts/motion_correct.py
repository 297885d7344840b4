"""Snakemake script of rule ``motion_correct``: ingest.zarr -> motion.csv + motion.zarr.

Reads ``snakemake.input.ingest``, ``snakemake.input.neuron_size`` (gSig follows it) and
``snakemake.params.config`` (config groups general,
downsampling, preprocessing, motion_correction); writes ``snakemake.output.table``
(frame,dy,dx) and ``snakemake.output.store`` (exact shifts, quality, outliers, crop box,
non-rigid fields); logs progress (frames done, rate, ETA) to ``snakemake.log[0]``.
"""

from califlow.job import workflow_job
from califlow.motion.session import correct_motion, use_threads
from califlow.neuron_size_step import job_config


def main(smk) -> None:
    use_threads(smk.threads)
    name = f"{smk.wildcards.animal}/{smk.wildcards.session}"
    config = job_config(smk.params.config, smk.input.neuron_size)
    correct_motion(smk.input.ingest, smk.output.table, smk.output.store, config, name=name)


with workflow_job(snakemake):  # noqa: F821 - injected by Snakemake
    main(snakemake)  # noqa: F821
