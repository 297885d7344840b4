"""Snakemake script of rules ``cnmfe`` and ``cnmfe_gather``: aligned.zarr -> cnmfe.zarr.

Reads ``snakemake.input.aligned``, ``snakemake.input.neuron_size`` (gSig follows it) and, for
``cnmfe_gather``, ``snakemake.input.patches`` (the scatter jobs' results);
``snakemake.params.config`` holds the ``cnmfe`` and ``general`` groups. Writes
``snakemake.output.cnmfe``; logs to ``snakemake.log[0]`` (``cells.csv`` is rule ``cell_qc``'s).
"""

from califlow.cnmfe import run_cnmfe
from califlow.host import with_memory_budget
from califlow.job import workflow_job
from califlow.neuron_size_step import job_config


def main(smk) -> None:
    with workflow_job(smk):
        # memory_size_to_use: null is this job's memory (resources.mem_mb, cgroup), not the host's
        config = with_memory_budget(job_config(smk.params.config, smk.input.neuron_size),
                                    getattr(smk.resources, "mem_mb", None))
        # `"patches" in smk.input` would look at the values of the Namedlist, not its names
        patches = list(smk.input.patches) if "patches" in smk.input.keys() else None  # noqa: SIM118
        run_cnmfe(smk.input.aligned, smk.output.cnmfe, config, patch_files=patches,
                  n_processes=max(1, int(smk.threads)))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 - injected by Snakemake
