"""Snakemake script of rule ``cnmfe_patches``: one scatter job of the patched CNMF-E.

Runs the patches ``job, job + n_jobs, ...`` of ``snakemake.input.aligned`` with the measured
``snakemake.input.neuron_size`` and
``snakemake.params.config`` (``cnmfe`` and ``general`` groups) and writes their components to
``snakemake.output[0]`` (.npz, read by ``cnmfe_gather``); logs to ``snakemake.log[0]``.
"""

from califlow.cnmfe import run_patch_job
from califlow.host import with_memory_budget
from califlow.job import workflow_job
from califlow.neuron_size_step import job_config


def main(smk) -> None:
    with workflow_job(smk) as log:
        # memory_size_to_use: null is this job's memory (resources.mem_mb, cgroup), not the host's
        config = with_memory_budget(job_config(smk.params.config, smk.input.neuron_size),
                                    getattr(smk.resources, "mem_mb", None))
        done = run_patch_job(smk.input.aligned, smk.output[0], config, int(smk.params.job), int(smk.params.n_jobs))
        log.info("patches %s done", done)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
