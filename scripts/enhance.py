"""Snakemake script of rule ``enhance``: ingest.zarr + motion.zarr -> enhanced.zarr + projections.zarr.

Reads ``snakemake.input.ingest``, ``snakemake.input.motion``, ``snakemake.input.neuron_size``
(gSig follows it) and ``snakemake.params.config``
(config groups general, downsampling, preprocessing); writes ``snakemake.output.enhanced``
(motion-corrected, detrended, noise-scaled, MIN1PIPE-enhanced movie) and
``snakemake.output.projections`` (mean, bv, cn, pnr); logs progress to ``snakemake.log[0]``.
"""

from califlow.job import workflow_job
from califlow.motion.session import enhance_session, use_threads
from califlow.neuron_size_step import job_config


def main(smk) -> None:
    use_threads(smk.threads)
    name = f"{smk.wildcards.animal}/{smk.wildcards.session}"
    config = job_config(smk.params.config, smk.input.neuron_size)
    enhance_session(smk.input.ingest, smk.input.motion, smk.output.enhanced, smk.output.projections,
                    config, name=name)


with workflow_job(snakemake):  # noqa: F821 - injected by Snakemake
    main(snakemake)  # noqa: F821
