"""Snakemake script of rule ``spike_extraction``: results/{animal}/cnmfe.zarr -> results/{animal}/spikes/.

Reads ``snakemake.input[0]`` (the CNMF-E store; ``C_raw`` is deconvolved session by session)
and ``snakemake.params.spike_extraction`` (the config group); writes the output folder
atomically (nothing is left under its name if the job fails); logs to ``snakemake.log[0]``.
"""

from califlow.deconv.tool import run_spike_extraction
from califlow.io.store import atomic_output
from califlow.job import workflow_job


def main(smk) -> None:
    with workflow_job(smk) as log:
        with atomic_output(smk.output[0]) as tmp:
            records = run_spike_extraction([smk.input[0]], tmp, dict(smk.params.spike_extraction),
                                           n_threads=smk.threads)
        for r in records:
            log.info("session %s: %d cells (%d failed), %d events", r["name"], r["cells"], r["failed"],
                     r["events"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
