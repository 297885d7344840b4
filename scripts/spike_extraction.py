"""Snakemake script of rule ``spike_extraction``: results/{animal}/cnmfe.zarr -> results/{animal}/spikes/.

Reads ``snakemake.input[0]`` (the CNMF-E store; ``C_raw`` is deconvolved session by session)
and ``snakemake.params.spike_extraction`` (the config group); writes the output folder
atomically (nothing is left under its name if the job fails); logs to ``snakemake.log[0]``,
with one summary line per session there and on the console.
"""

from califlow.deconv.tool import run_spike_extraction
from califlow.io.store import atomic_output
from califlow.job import workflow_job


def main(smk) -> None:
    # run_spike_extraction logs each session's summary once: in the log and on the console
    with workflow_job(smk), atomic_output(smk.output[0]) as tmp:
        run_spike_extraction([smk.input[0]], tmp, dict(smk.params.spike_extraction), n_threads=smk.threads)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
