"""Snakemake script of rule ``enhance``: ingest.zarr + motion.zarr -> enhanced.zarr + projections.zarr.

Reads ``snakemake.input.ingest``, ``snakemake.input.motion`` and ``snakemake.params.config``
(config groups general, downsampling, preprocessing); writes ``snakemake.output.enhanced``
(motion-corrected, detrended, noise-scaled, MIN1PIPE-enhanced movie) and
``snakemake.output.projections`` (mean, bv, cn, pnr); logs progress to ``snakemake.log[0]``.
"""

from califlow.motion.session import enhance_session, use_threads
from califlow.progress import script_logging


def main(smk) -> None:
    use_threads(smk.threads)
    name = f"{smk.wildcards.animal}/{smk.wildcards.session}"
    enhance_session(smk.input.ingest, smk.input.motion, smk.output.enhanced, smk.output.projections,
                    smk.params.config, name=name)


with script_logging(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    main(snakemake)  # noqa: F821
